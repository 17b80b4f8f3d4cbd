"""Perplexity as llama-perplexity computes it: second halves of n_ctx chunks, its error estimate, llama.cpp's value."""

import math

import numpy as np
import pytest

from qwen3repro.errors import UserError
from qwen3repro.perplexity import engine_logits, llama_cpp_logits, perplexity


def test_uniform_logits_give_the_vocabulary_size_with_no_error():
    result = perplexity(lambda chunk: np.zeros((len(chunk), 50), np.float32), np.arange(40) % 50, n_ctx=8)
    assert result.ppl == pytest.approx(50.0) and result.ppl_error == 0.0
    assert len(result.chunk_ppl) == 5 and result.count == 5 * (8 - 1 - 4)  # positions 4..6 of each chunk


def test_only_the_second_half_of_each_chunk_is_scored_and_the_remainder_is_dropped():
    tokens = np.arange(21) % 7  # 2 chunks of 10, one token left over

    def certain_from(position):
        def logits_of(chunk):
            logits = np.zeros((len(chunk), 7), np.float32)
            logits[np.arange(len(chunk) - 1), chunk[1:]] = 100.0  # every next token predicted for sure
            logits[:position] = 0.0  # ... except in the first half, which must not count
            return logits
        return logits_of

    assert perplexity(certain_from(5), tokens, n_ctx=10).ppl == pytest.approx(1.0)
    assert perplexity(certain_from(6), tokens, n_ctx=10).ppl > 1.5  # position 5 counts


def test_error_is_llama_cpps_standard_error_of_the_mean_nll():
    def logits_of(chunk):
        logits = np.zeros((len(chunk), 4))
        logits[:, 0] = np.log(3.0)  # p(token 0) = 3/6, the other three tokens 1/6 each
        return logits

    tokens = np.array([5, 5, 5, 0, 5, 5, 5, 2]) % 4  # n_ctx 4: position 2 of each chunk predicts position 3
    result = perplexity(logits_of, tokens, n_ctx=4)
    nll = np.array([math.log(2), math.log(6)])  # token 0, then token 2
    assert result.count == 2 and result.ppl == pytest.approx(math.exp(nll.mean()))
    assert result.ppl_error == pytest.approx(result.ppl * math.sqrt((np.mean(nll**2) - nll.mean() ** 2) / 1))


def test_a_text_shorter_than_two_contexts_is_refused():
    with pytest.raises(UserError, match="needs at least 1024"):
        perplexity(lambda c: np.zeros((len(c), 3)), np.zeros(1000, np.int64), n_ctx=512)


def test_f32_perplexity_equals_llama_cpps_on_the_same_chunks(tiny_f32):
    pytest.importorskip("llama_cpp", reason="the peers extra (llama-cpp-python) is not installed")
    from qwen3repro import corpus, peers
    from qwen3repro.engine import Qwen3
    from qwen3repro.gguf_file import GGUFFile
    from qwen3repro.tokenizer import Tokenizer

    with GGUFFile(tiny_f32) as f:
        tokenizer = Tokenizer.from_gguf(f)
    _, held_out = corpus.split()
    tokens = np.array(tokenizer.encode(next(iter(held_out.values()))[:20_000]))[: 3 * 128]
    ours = perplexity(engine_logits(Qwen3(tiny_f32, n_ctx=128)), tokens, n_ctx=128)
    theirs = perplexity(llama_cpp_logits(peers.load(tiny_f32, n_ctx=128)), tokens, n_ctx=128)
    assert ours.count == theirs.count == 3 * 63
    assert abs(ours.ppl / theirs.ppl - 1) < 1e-3
