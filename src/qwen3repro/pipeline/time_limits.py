"""Each pipeline job's time limit in minutes, from the model's and the files' sizes and the stage's
own measure of its work: a generous bound on its wall time (a file not written yet counts as a
placeholder; the rules are evaluated again once their inputs exist). Memory: resources.py.
"""

from __future__ import annotations

import math
from pathlib import Path

from qwen3repro.pipeline.resources import n_weights_of_gguf, n_weights_of_model, n_weights_of_spec

# --- time limits ---------------------------------------------------------------------------------
#
# A scheduler kills a job at its time limit, so each limit is the job's work at speeds well below
# this project's 2-core machine (about a quarter of what its jobs reach: a slow or shared node still
# finishes) times MARGIN, plus START_SECONDS for Python, imports and opening files. The work is
# counted in what bounds each stage: multiply-adds for prefill and training, bytes of float32
# weights read per decoded token, weights quantized or loaded per second.

FLOPS_PER_THREAD = 1.5e10  # multiply-adds x 2 per second one thread sustains in BLAS
BYTES_PER_SECOND = 5e9  # weight bytes per second a decoding job streams from memory
LOAD_RATE = 2e7  # weights per second read from a file and dequantized to float32
START_SECONDS = 120
MARGIN = 2
MIN_MINUTES = 3

# weights per second one thread quantizes, by the converter's path for the type
QUANTIZE_RATE = {"plain": 5e6, "legacy": 3e6, "k": 1.5e6, "iq4": 5e5}


def minutes(seconds: float) -> int:
    """A job's time limit in minutes for `seconds` of work at the speeds above."""
    return max(MIN_MINUTES, math.ceil((START_SECONDS + MARGIN * seconds) / 60))


def prefill_seconds(n_weights: int, tokens: int, threads: int) -> float:
    return 2 * n_weights * tokens / (FLOPS_PER_THREAD * threads)


def decode_seconds(n_weights: int, tokens: int) -> float:
    """The engine decodes on float32 weights: every token reads them all."""
    return 4 * n_weights * tokens / BYTES_PER_SECOND


def load_seconds(n_weights: int) -> float:
    """Reading a file and dequantizing it to float32 (or building transformers' model)."""
    return n_weights / LOAD_RATE


def quantize_seconds(n_weights: int, file_type: str, threads: int) -> float:
    from qwen3repro.convert.quants import QUANTIZERS
    from qwen3repro.convert.tensor_plan import file_type as tensor_types
    from qwen3repro.convert.tensor_plan import split_variant

    base, imatrix = split_variant(file_type)
    rate = QUANTIZE_RATE[QUANTIZERS[tensor_types(base)[1]].family] / (2 if imatrix else 1)
    return n_weights / (rate * threads)


def model_minutes(spec: dict, threads: int) -> int:
    """Building random weights, or training: 6 multiply-adds x 2 per weight and token (forward and
    backward), with the held-out evaluations. A download's time depends on the network: a limit of
    hours, and the rule is kept on the submitting host by default (cluster.localrules)."""
    n = n_weights_of_spec(spec)
    if n is None:
        return 8 * 60
    if spec["source"] == "synthetic":
        return minutes(2 * load_seconds(n))
    from qwen3repro.model.train import workload

    tokens = workload(spec["training"])
    return minutes(
        3 * prefill_seconds(n, tokens["trained"], threads) + prefill_seconds(n, tokens["evaluated"], threads)
    )


def convert_minutes(model_dir: Path | str, file_type: str, threads: int) -> int:
    n = n_weights_of_model(model_dir)
    return minutes(load_seconds(n) + quantize_seconds(n, file_type, threads))


def imatrix_minutes(gguf: Path | str, settings: dict, threads: int) -> int:
    """Pinned (qwen3repro.numerics), the products run on one thread whatever the job has."""
    n = n_weights_of_gguf(gguf)
    return minutes(load_seconds(n) + prefill_seconds(n, settings["n_ctx"] * settings["chunks"], 1))


def check_minutes(gguf: Path | str, file_type: str, settings: dict, threads: int) -> int:
    """The engine and transformers each prefill every prompt and decode its greedy continuation;
    then every tensor is hashed (read twice: the file's and the source's), or quantized again."""
    from qwen3repro.accuracy.check import workload

    n, work = n_weights_of_gguf(gguf), workload(settings)
    prefill = prefill_seconds(n, work["prompt_tokens"], threads)
    decode = decode_seconds(n, work["greedy_tokens"])
    proof = quantize_seconds(n, file_type, threads) if work["reencode"] else 2 * load_seconds(n)
    return minutes(3 * load_seconds(n) + 2 * (prefill + decode) + proof)


def corpus_tokens(corpus: Path | str) -> int:
    """At most one token per two bytes of text (Qwen3's tokenizer averages about four)."""
    return Path(corpus).stat().st_size // 2 if Path(corpus).exists() else 0


def perplexity_minutes(
    ggufs: list[Path | str], corpus: Path | str, settings: dict, threads: int, low_memory: bool = False
) -> int:
    """A part job: F32 and then every file type score the part's chunks in one runtime, each loaded
    once per group of chunks; in low-memory mode the engine reads and dequantizes the weights again
    for every chunk."""
    from qwen3repro.accuracy.perplexity import chunk_count
    from qwen3repro.accuracy.perplexity_parts import GROUP, largest_part

    found = [g for g in ggufs if Path(g).exists()]
    if not found:
        return MIN_MINUTES
    n = max(n_weights_of_gguf(g) for g in found)
    if Path(corpus).exists():
        chunks = chunk_count(corpus_tokens(corpus), settings["n_ctx"], settings["chunks"])
    else:
        chunks = settings["chunks"] or 1
    mine = largest_part(max(chunks, 1), settings["parts"])
    passes = len(ggufs) + 1
    loads = passes * (mine if low_memory else -(-mine // GROUP))
    return minutes(loads * load_seconds(n) + passes * prefill_seconds(n, mine * settings["n_ctx"], threads))


def bench_seconds(n_weights: int, settings: dict, threads: int) -> float:
    """One runtime: loading, then a warm-up and `repetitions` of every pp test (prefill) and tg test (decode)."""
    runs = settings["repetitions"] + 1
    prefill = prefill_seconds(n_weights, sum(settings["n_prompt"]), threads)
    return load_seconds(n_weights) + runs * (prefill + decode_seconds(n_weights, sum(settings["n_gen"])))


def bench_gguf_minutes(gguf: Path | str, settings: dict, threads: int, file_type: str = "") -> int:
    """numpy and llama.cpp on the file, one after the other; then numpy-low-memory's own tests, where
    every pass (a prompt, or a single decoded token) reads and dequantizes the whole file again."""
    from qwen3repro.bench.measure import low_memory_tests
    from qwen3repro.bench.runtimes import GGUF_ENGINES

    n = n_weights_of_gguf(gguf)
    engines = [e for e in settings["engines"] if e in GGUF_ENGINES]
    seconds = len(engines) * bench_seconds(n, settings, threads)
    own = low_memory_tests(settings, engines, file_type)
    if own is not None:
        passes = len([p for p in own["n_prompt"] if p]) + sum(own["n_gen"])
        prefill = prefill_seconds(n, sum(own["n_prompt"]), threads)
        seconds += (own["repetitions"] + 1) * (passes * load_seconds(n) + prefill)
    return minutes(seconds)


def bench_hf_minutes(model_dir: Path | str, settings: dict, threads: int) -> int:
    return minutes(bench_seconds(n_weights_of_model(model_dir), settings, threads))


def samples_minutes(gguf: Path | str, settings: dict, trained: bool) -> int:
    """Each prompt greedy and sampled, from the file and, for a trained model, an untrained twin."""
    n, models = n_weights_of_gguf(gguf), 2 if trained else 1
    generations = 2 * len(settings["prompts"]) * models
    return minutes(models * load_seconds(n) + decode_seconds(n, generations * settings["max_new_tokens"]))


def sweep_minutes(gguf: Path | str, settings: dict) -> int:
    """Every generation decodes max_new_tokens; prompts of chat length are prefilled at decode speed."""
    from qwen3repro.sweep.grid import generations

    n = n_weights_of_gguf(gguf)
    return minutes(load_seconds(n) + decode_seconds(n, 2 * generations(settings) * settings["max_new_tokens"]))


def traces_minutes(gguf: Path | str, settings: dict) -> int:
    """Each traced generation, and once more along the first type's tokens."""
    from qwen3repro.sweep.grid import trace_plan

    n = n_weights_of_gguf(gguf)
    traces = len(trace_plan(settings))
    return minutes(load_seconds(n) + decode_seconds(n, 2 * 2 * traces * settings["max_new_tokens"]))


def tasks_minutes(ggufs: list[Path | str], sets: list[str], settings: dict, threads: int) -> int:
    """F32 and every file type read every ending of the part's tasks whole, in one runtime: a token
    for about every four bytes of the task files (context repeated per ending counted once more)."""
    found = [g for g in ggufs if Path(g).exists()]
    if not found:
        return MIN_MINUTES
    n = max(n_weights_of_gguf(g) for g in found)
    tokens = sum(Path(s).stat().st_size for s in sets if Path(s).exists()) // 4 * 4 // settings["parts"]
    passes = len(ggufs) + 1
    return minutes(passes * (load_seconds(n) + prefill_seconds(n, tokens, threads)))


def generations_minutes(gguf: Path | str, settings: dict) -> int:
    """Each prompt with thinking on and off, each conversation's turns."""
    from qwen3repro.accuracy.generated import count

    n = n_weights_of_gguf(gguf)
    return minutes(load_seconds(n) + decode_seconds(n, count(settings) * settings["max_new_tokens"]))
