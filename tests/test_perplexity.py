"""Perplexity as llama-perplexity computes it: second halves of n_ctx chunks, its error estimate, llama.cpp's value."""

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import llama_tool

from qwen3repro.accuracy.perplexity import engine_logits, llama_cpp_logits, score_chunks
from qwen3repro.errors import UserError


def perplexity(logits_of, tokens, n_ctx):
    """The pipeline's scoring loop on logits that a test makes for the whole chunk."""
    return score_chunks(lambda chunk, first: logits_of(chunk)[first:], tokens, n_ctx)[0]


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
    from qwen3repro import llamacpp
    from qwen3repro.engine.qwen3 import Qwen3
    from qwen3repro.engine.tokenizer import Tokenizer
    from qwen3repro.gguf_file import GGUFFile
    from qwen3repro.model import shakespeare

    with GGUFFile(tiny_f32) as f:
        tokenizer = Tokenizer.from_gguf(f)
    _, held_out = shakespeare.split()
    tokens = np.array(tokenizer.encode(next(iter(held_out.values()))[:20_000]))[: 3 * 128]
    ours, _ = score_chunks(engine_logits(Qwen3(tiny_f32, n_ctx=128)), tokens, n_ctx=128)
    theirs, _ = score_chunks(llama_cpp_logits(llamacpp.load(tiny_f32, n_ctx=128)), tokens, n_ctx=128)
    assert ours.count == theirs.count == 3 * 63
    assert abs(ours.ppl / theirs.ppl - 1) < 1e-3


def long_text():
    from qwen3repro.model import shakespeare

    _, held_out = shakespeare.split()
    return next(iter(held_out.values()))[:30_000]


def test_kld_of_f32_against_itself_is_zero_with_the_same_top_token_everywhere(tiny_f32):
    from qwen3repro.accuracy.perplexity import perplexity_and_kld

    result = perplexity_and_kld(tiny_f32, tiny_f32, long_text(), n_ctx=64, max_chunks=3)
    k, p = result["kld"], result["perplexity"]
    assert p["n_chunks"] == 3 and k["count"] == p["n_scored_tokens"] == 3 * (64 - 1 - 32)
    assert k["kld_mean"] == 0.0 and k["kld_max"] == 0.0 and k["same_top_p"] == 1.0 and k["rms_dp"] == 0.0
    assert k["ppl"] == pytest.approx(p["ppl"]) and k["ppl_ratio"] == 1.0


def test_a_quantized_file_has_positive_kld_and_its_own_perplexity(tiny_model, tiny_f32, tmp_path):
    from qwen3repro.accuracy.perplexity import perplexity_and_kld
    from qwen3repro.convert.converter import convert

    q4 = tmp_path / "q4.gguf"
    convert(tiny_model, "Q4_0", q4, name="qwen3-tiny")
    result = perplexity_and_kld(q4, tiny_f32, long_text(), n_ctx=64, max_chunks=3)
    k = result["kld"]
    assert 0 < k["kld_min"] <= k["kld_median"] <= k["kld_p99"] <= k["kld_max"]
    assert k["ppl"] == pytest.approx(result["perplexity"]["ppl"])  # the same NLLs feed both
    assert k["ppl_base"] != k["ppl"]
    # low-memory mode (weights streamed a layer at a time, both files) gives the same figures exactly
    assert perplexity_and_kld(q4, tiny_f32, long_text(), n_ctx=64, max_chunks=3, low_memory=True) == result


def test_missing_base_file_and_short_corpus_are_one_line_errors(tiny_f32, tmp_path):
    from qwen3repro.accuracy.perplexity import perplexity_and_kld

    with pytest.raises(UserError, match="none.gguf: cannot open"):
        perplexity_and_kld(tiny_f32, tmp_path / "none.gguf", long_text(), n_ctx=64)
    with pytest.raises(UserError, match="perplexity with a context of 512 needs at least 1024"):
        perplexity_and_kld(tiny_f32, tiny_f32, "To be, or not to be.", n_ctx=512)


def test_perplexity_command_prints_llama_perplexitys_figures_and_refuses_bad_input(tiny_f32, tmp_path):
    from helpers import assert_one_line_error, run_cli

    text = tmp_path / "text.txt"
    text.write_text(long_text())
    proc = run_cli(
        "perplexity",
        "--model",
        str(tiny_f32),
        "--base",
        str(tiny_f32),
        "-f",
        str(text),
        "-c",
        "64",
        "--chunks",
        "2",
        "--low-memory",
        "--json",
        str(tmp_path / "out.json"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Final estimate: PPL = " in proc.stdout and "Mean    KLD:   0.000000" in proc.stdout
    assert json.loads((tmp_path / "out.json").read_text())["perplexity"]["n_chunks"] == 2
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be.")
    assert_one_line_error(run_cli("perplexity", "--model", str(tiny_f32), "-f", str(short)), "needs at least 1024")
    assert_one_line_error(
        run_cli("perplexity", "--model", str(tiny_f32), "--base", str(tmp_path / "F32.gguf"), "-f", str(text)),
        "F32.gguf: cannot open",
    )
    assert_one_line_error(
        run_cli("perplexity", "--model", str(tiny_f32), "-f", str(tmp_path / "none.txt")), "none.txt: no such text file"
    )


# llama-perplexity --kl-divergence's summary lines, as it prints them
SUMMARY = {
    "ppl": r"Mean PPL\(Q\)\s+:\s+([\d.]+)\s*±\s*([\d.]+)",
    "kld_mean": r"Mean    KLD:\s+([\d.]+)\s*±\s*([\d.]+)",
    "kld_max": r"Maximum KLD:\s+([\d.]+)()",
    "kld_p99": r"99\.0%   KLD:\s+([\d.]+)()",
    "rms_dp": r"RMS Δp    :\s+([\d.]+)\s*±\s*([\d.]+) %",
    "same_top_p": r"Same top p:\s+([\d.]+)\s*±\s*([\d.]+) %",
}


def llama_perplexity_summary(output: str) -> dict[str, tuple[float, float]]:
    figures = {}
    for key, pattern in SUMMARY.items():
        value, error = re.search(pattern, output).groups()
        scale = 0.01 if key in ("rms_dp", "same_top_p") else 1.0  # printed in percent
        figures[key] = (float(value) * scale, float(error or 0) * scale)
    return figures


def sharpened(model_dir: Path, out: Path, factor: float) -> Path:
    """The model with its final norm scaled: logits `factor` times larger, next-token distributions
    as peaked as a trained model's (a random model's spread over the whole vocabulary hides how
    llama-perplexity stores its base: every log-probability stays above its -16 cut-off)."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(model_dir, out)
    tensors = load_file(out / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * np.float32(factor)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.peers
def test_the_llama_cpp_side_figures_are_llama_perplexitys_on_the_same_file_text_and_chunks(tiny_model, tmp_path):
    """The binary built from the llama.cpp tree llama-cpp-python vendors, with the same flags: F32 KV
    cache, no flash attention, one batch per chunk (and, on AMX CPUs, no repacked weights, as ours)."""
    from qwen3repro.accuracy.perplexity import perplexity_and_kld
    from qwen3repro.convert.converter import convert
    from qwen3repro.llamacpp import cpu_has_amx

    pytest.importorskip("llama_cpp", reason="the peers extra (llama-cpp-python) is not installed")
    binary = llama_tool("llama-perplexity")
    model = sharpened(tiny_model, tmp_path / "sharp", factor=12.0)
    tiny_f32, q4 = tmp_path / "f32.gguf", tmp_path / "q4_k_m.gguf"
    convert(model, "F32", tiny_f32, name="qwen3-tiny")
    convert(model, "Q4_K_M", q4, name="qwen3-tiny")
    text = tmp_path / "text.txt"
    text.write_text(long_text())
    n_ctx, chunks = 128, 6
    ours = perplexity_and_kld(q4, tiny_f32, text.read_text(), n_ctx, chunks, ("numpy", "llama.cpp"), threads=2)
    flags = ["-f", str(text), "-c", str(n_ctx), "--chunks", str(chunks), "-b", str(n_ctx), "-ub", str(n_ctx)]
    flags += ["-t", "2", "-ctk", "f32", "-ctv", "f32", "-fa", "off"] + (["-nr"] if cpu_has_amx() else [])
    base = str(tmp_path / "f32.logits")
    first = subprocess.run(
        [binary, "-m", tiny_f32, "--kl-divergence-base", base, *flags], capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr[-2000:]
    run = subprocess.run(
        [binary, "-m", q4, "--kl-divergence-base", base, "--kl-divergence", *flags], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = llama_perplexity_summary(run.stdout + run.stderr)
    mine = {"ppl": ours["llama_cpp"]["perplexity"]["ppl"]} | {
        k: ours["llama_cpp"]["kld"][k] for k in SUMMARY if k != "ppl"
    }
    weights = ours["kld"]
    print(f"\n{'':12} {'llama-perplexity':>24} {'ours, llama.cpp':>16} {'ours, NumPy':>12}")
    for key, (value, error) in theirs.items():
        numpy_side = ours["perplexity"]["ppl"] if key == "ppl" else weights[key]
        print(f"{key:12} {value:>14.6g} ± {error:<8.2g} {mine[key]:>16.6g} {numpy_side:>12.6g}")
    for key, (value, _) in theirs.items():
        # the same kernels on the same tokens: equal to the digits it prints (6 decimals; percentages 3),
        # with float32 summation order allowed for (1e-5 relative); the NumPy engine's figures are not
        half_digit = 0.5e-5 if key in ("rms_dp", "same_top_p") else 0.5e-6
        assert abs(mine[key] - value) <= half_digit + 1e-5 * abs(value), (key, mine[key], value)
