"""Measures prefill and decode speed of engines side by side, as llama-bench does, for the CLI and the bench stage.

Tests as llama-bench names them: pp<N> processes an N-token prompt in one batch from an empty
cache and times it; tg<N> generates N tokens one forward pass at a time from an empty cache.
Every test runs once to warm up, then `repetitions` times; tokens per second are averaged over
the repetitions with their standard deviation. Token ids are fixed and sampling is left out, so
only the model runs. Engines take turns repetition by repetition, so a machine that slows down
mid-run slows all of them alike.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from qwen3repro.bench.roofline import weight_bytes_per_token
from qwen3repro.bench.runtimes import ENGINES, GGUF_ENGINES
from qwen3repro.bench.worker import Worker, measure_bandwidth
from qwen3repro.errors import UserError


@dataclass
class Row:
    """One engine x test, with llama-bench's field names where it has them."""

    engine: str
    model_filename: str
    model_type: str  # the GGUF file type, or the dtype transformers computes in
    model_size: int  # bytes of the file(s) the engine reads
    bytes_per_token: int  # weight bytes one decode step reads
    n_prompt: int
    n_gen: int
    n_depth: int  # tokens already in the context when the timed work starts (llama-bench -d)
    n_threads: int
    kv_cache_bytes: int  # the engine's KV cache for the positions the test ends with
    samples_ns: list[int]
    avg_ts: float
    stddev_ts: float
    load_s: float
    peak_rss_bytes: int
    bandwidth_probes: list[float]  # the machine's bandwidth (bytes/s) just before and just after the runs

    @property
    def test(self) -> str:
        return test_name(self.n_prompt, self.n_gen, self.n_depth)


Test = tuple[int, int, int]  # n_prompt, n_gen, n_depth


def test_name(n_prompt: int, n_gen: int, n_depth: int = 0) -> str:
    """llama-bench's names: pp512, tg128, pp512+tg128 (-pg), with " @ d2048" at a depth (-d)."""
    name = "+".join(f"{kind}{n}" for kind, n in (("pp", n_prompt), ("tg", n_gen)) if n)
    return f"{name} @ d{n_depth}" if n_depth else name


def model_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.glob("*.safetensors"))
    return path.stat().st_size


def describe(engine: str, path: Path) -> tuple[str, int]:
    """(model_type, bytes_per_token) of what an engine runs."""
    if engine.startswith("transformers"):
        dtype = "float32" if engine.endswith("f32") else "bfloat16"
        config = json.loads((path / "config.json").read_text("utf-8"))
        stored = {"float32": 4, "bfloat16": 2, "float16": 2}.get(config.get("torch_dtype") or config.get("dtype"), 4)
        return dtype, model_size(path) * {"float32": 4, "bfloat16": 2}[dtype] // stored
    from qwen3repro.convert.tensor_plan import FILE_TYPES
    from qwen3repro.gguf_file import GGUFFile

    with GGUFFile(path) as f:
        file_type = f.fields.get("general.file_type")
        # the NumPy engine dequantizes every file type to float32 at load and reads those per token
        per_token = weight_bytes_per_token(f, 4 if engine == "numpy" else None)
    names = {int(ftype): name for name, (ftype, _) in FILE_TYPES.items()}
    return names.get(file_type, f"file_type {file_type}"), per_token


# bytes of one cached key or value element: the NumPy engine keeps float32, llama.cpp f16 (its default
# cache type), transformers the dtype it computes in
KV_ELEMENT_BYTES = {"numpy": 4, "numpy-low-memory": 4, "llama.cpp": 2, "transformers-f32": 4, "transformers-bf16": 2}


def kv_cache_bytes(engine: str, path: Path, positions: int) -> int:
    """The KV cache an engine holds for `positions`: a key and a value per layer, KV head and position."""
    if path.is_dir():
        config = json.loads((path / "config.json").read_text("utf-8"))
        layers, kv_heads = config["num_hidden_layers"], config["num_key_value_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    else:
        from qwen3repro.gguf_file import GGUFFile

        with GGUFFile(path) as f:
            field = f.fields.get
            layers, kv_heads = field("qwen3.block_count"), field("qwen3.attention.head_count_kv")
            head_dim = field("qwen3.attention.key_length") or field("qwen3.embedding_length") // field(
                "qwen3.attention.head_count"
            )
    return 2 * layers * kv_heads * head_dim * positions * KV_ELEMENT_BYTES[engine]


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def engine_paths(engines: list[str], gguf: str | None, hf: str | None) -> dict[str, str]:
    """Engine name -> what it runs: the GGUF file for numpy and llama.cpp, the HF directory for transformers."""
    paths = {}
    for engine in engines:
        if engine not in ENGINES:
            raise UserError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
        wants_dir = engine.startswith("transformers")
        if (hf if wants_dir else gguf) is None:
            raise UserError(f"engine {engine} needs {'--hf' if wants_dir else '--gguf'}")
        paths[engine] = hf if wants_dir else gguf
    return paths


def context_length(gguf: Path | str) -> int | None:
    """The model's context length, from the GGUF metadata."""
    from qwen3repro.gguf_file import GGUFFile

    with GGUFFile(gguf) as f:
        return f.fields.get("qwen3.context_length")


def tests_to_run(
    engines: dict[str, Path | str],
    n_prompt: list[int],
    n_gen: list[int],
    repetitions: int,
    threads: int,
    context_length: int | None,
    n_depth: list[int] = (0,),
    pg: list[tuple[int, int]] = (),
) -> list[Test]:
    """The (n_prompt, n_gen, n_depth) tests, llama-bench's: each prompt and each generation length
    alone and each -pg pair, at each depth; after every argument is checked: one-line errors before
    any load."""
    for engine, path in engines.items():
        if engine not in ENGINES:
            raise UserError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
        wants_dir = engine.startswith("transformers")
        if not Path(path).exists() or Path(path).is_dir() != wants_dir:
            kind = "a Hugging Face model directory" if wants_dir else "a GGUF file"
            raise UserError(f"{path}: {kind} does not exist")
    if repetitions < 1 or threads < 1:
        raise UserError("repetitions and threads must be at least 1")
    if any(n < 0 for n in [*n_prompt, *n_gen, *n_depth, *(n for pair in pg for n in pair)]):
        raise UserError("prompt, generation and depth lengths must be positive (0 skips a test, as in llama-bench)")
    shapes = [(p, 0) for p in n_prompt if p] + [(0, g) for g in n_gen if g] + [(p, g) for p, g in pg if p and g]
    tests = [(p, g, d) for d in dict.fromkeys(n_depth) for p, g in shapes]
    if not tests:
        raise UserError("no test to run: every prompt and generation length is 0")
    n_ctx = max(p + g + d for p, g, d in tests)
    if context_length is not None and n_ctx > context_length:
        raise UserError(f"a test needs {n_ctx} positions; the model's context is {context_length}")
    return tests


def bench(
    engines: dict[str, Path | str],
    n_prompt: list[int],
    n_gen: list[int],
    repetitions: int = 3,
    threads: int = 2,
    context_length: int | None = None,
    progress=None,
    n_depth: list[int] = (0,),
    pg: list[tuple[int, int]] = (),
) -> list[Row]:
    """Run every test on every engine (name -> model path), interleaved: each repetition runs
    the engines one after another, so a machine that slows down mid-run slows all of them alike.
    A test at a depth first fills the context with that many tokens, untimed, as llama-bench -d."""
    tests = tests_to_run(engines, n_prompt, n_gen, repetitions, threads, context_length, n_depth, pg)
    n_ctx = max(p + g + d for p, g, d in tests)
    workers = {}
    samples: dict[tuple[str, int, int, int], list[int]] = {}
    try:
        for engine, path in engines.items():  # one at a time: loads do not compete for the cores
            workers[engine] = Worker(engine, Path(path), n_ctx + 1, threads)
        # the roofline's bandwidth, measured beside the runs (before and after) so both share the
        # machine's conditions: a probe run at another time can make a speed look above its ceiling
        probes = [measure_bandwidth(threads)]
        for test in tests:
            for engine, w in workers.items():
                w.run(*test)  # warm-up, as llama-bench does
        for rep in range(repetitions):
            for test in tests:
                for engine, w in workers.items():
                    reply = w.run(*test)
                    samples.setdefault((engine, *test), []).append(reply["ns"])
                    w.peak_rss_bytes = reply["peak_rss_bytes"]
            if progress:
                progress(f"repetition {rep + 1} of {repetitions} done")
        probes.append(measure_bandwidth(threads))
    finally:
        for w in workers.values():
            w.close()
    return [
        _row(engine, Path(path), test, samples[(engine, *test)], workers[engine], threads, probes)
        for engine, path in engines.items()
        for test in tests
    ]


def _row(engine: str, path: Path, test: Test, ns: list[int], worker: Worker, threads: int, probes: list[float]) -> Row:
    n_p, n_g, n_d = test
    model_type, per_token = describe(engine, path)
    speeds = [(n_p + n_g) / (t / 1e9) for t in ns]
    return Row(
        engine=engine,
        model_filename=path.name,
        model_type=model_type,
        model_size=model_size(path),
        bytes_per_token=per_token,
        n_prompt=n_p,
        n_gen=n_g,
        n_depth=n_d,
        n_threads=threads,
        kv_cache_bytes=kv_cache_bytes(engine, path, n_d + n_p + n_g),
        samples_ns=ns,
        avg_ts=statistics.mean(speeds),
        stddev_ts=statistics.stdev(speeds) if len(speeds) > 1 else 0.0,
        load_s=worker.load_s,
        peak_rss_bytes=worker.peak_rss_bytes,
        bandwidth_probes=probes,
    )


def as_records(rows: list[Row]) -> list[dict]:
    """Rows as dicts, with the test name and, for prompt tests, the time to the first token
    (the first token is sampled from the prompt's logits)."""
    records = []
    for r in rows:
        record = {**asdict(r), "test": r.test}
        record["ttft_ms"] = statistics.mean(r.samples_ns) / 1e6 if r.n_prompt else None
        records.append(record)
    return records


def low_memory_tests(settings: dict, engines: list[str], file_type: str) -> dict | None:
    """The settings numpy-low-memory's own short tests run with on `file_type` (bench.low_memory's, at
    an empty context), or None where bench.low_memory does not name the type or `engines` already
    runs the engine with the main tests."""
    low_memory = settings["low_memory"]
    if "numpy-low-memory" in engines or file_type not in low_memory["types"]:
        return None
    return {**settings, **{k: v for k, v in low_memory.items() if k != "types"}, "n_depth": [0]}


def bench_gguf(gguf: Path | str, engines: list[str], settings: dict, threads: int, file_type: str = "") -> list[dict]:
    """The GGUF engines of `engines` on one file, then numpy-low-memory with its own short tests
    where bench.low_memory names `file_type`; llama.cpp's rows are left out, with a log line, when
    the peers extra is not installed."""
    import logging

    chosen = [e for e in engines if e in GGUF_ENGINES]
    if "llama.cpp" in chosen and not llama_cpp_available():
        logging.getLogger(__name__).warning(
            "llama.cpp rows left out: llama-cpp-python (the peers extra) is not installed"
        )
        chosen.remove("llama.cpp")
    runs = [({e: gguf for e in chosen}, settings)] if chosen else []
    own = low_memory_tests(settings, chosen, file_type)
    if own is not None:
        runs.append(({"numpy-low-memory": gguf}, own))
    context = context_length(gguf) if runs else None
    rows = []
    for paths, s in runs:
        rows += bench(paths, s["n_prompt"], s["n_gen"], s["repetitions"], threads, context, n_depth=s["n_depth"])
    return as_records(rows)


def bench_hf(model_dir: Path | str, engine: str, settings: dict, threads: int) -> list[dict]:
    config = json.loads((Path(model_dir) / "config.json").read_text("utf-8"))
    rows = bench(
        {engine: model_dir},
        settings["n_prompt"],
        settings["n_gen"],
        settings["repetitions"],
        threads,
        config.get("max_position_embeddings"),
        n_depth=settings["n_depth"],
    )
    return as_records(rows)
