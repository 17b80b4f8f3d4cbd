"""Speed and memory of three runtimes on the same model, measured the way llama-bench measures.

Tests as llama-bench names them: pp<N> processes an N-token prompt in one batch from an empty
cache and times it; tg<N> generates N tokens one forward pass at a time from an empty cache.
Every test runs once to warm up, then `repetitions` times; tokens per second are averaged over
the repetitions with their standard deviation. Token ids are fixed and sampling is left out, so
only the model runs. Each engine runs in a process of its own, so its load time and peak RSS are
its own.

Engines: `numpy` (this package, on the GGUF), `llama.cpp` (llama-cpp-python on the same GGUF,
its default settings) and `transformers` (Qwen3ForCausalLM on the Hugging Face weights, float32
or bfloat16, keeping only the last position's logits as the others do).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

ENGINES = ("numpy", "llama.cpp", "transformers-f32", "transformers-bf16")


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
    n_threads: int
    samples_ns: list[int]
    avg_ts: float
    stddev_ts: float
    load_s: float
    peak_rss_bytes: int

    @property
    def test(self) -> str:
        return f"pp{self.n_prompt}" if self.n_prompt else f"tg{self.n_gen}"


def token_ids(n: int, seed: int = 0) -> list[int]:
    """Fixed ordinary token ids (below the added tokens), the same for every engine."""
    return np.random.default_rng(seed).integers(1000, 150000, n).tolist()


# ----------------------------------------------------------------------------- engines (in the worker)

class NumpyEngine:
    def __init__(self, path: str, n_ctx: int, threads: int):
        from .engine import Qwen3
        from .threads import limit_threads

        limit_threads(threads)
        self.model = Qwen3(path, n_ctx=n_ctx)

    def prefill(self, tokens: list[int]) -> None:
        self.model.forward(tokens, start=0, last_only=True)

    def decode(self, tokens: list[int]) -> None:
        for pos, token in enumerate(tokens):
            self.model.forward([token], start=pos, last_only=True)


class LlamaCppEngine:
    def __init__(self, path: str, n_ctx: int, threads: int):
        from .peers import llama_cpp

        lib = llama_cpp()
        self.llm = lib.Llama(model_path=path, n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_ubatch=min(n_ctx, 512),
                             n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)

    def prefill(self, tokens: list[int]) -> None:
        self.llm.reset()  # eval() drops the cache from n_tokens = 0 on
        self.llm.eval(tokens)

    def decode(self, tokens: list[int]) -> None:
        self.llm.reset()
        for token in tokens:
            self.llm.eval([token])


class TransformersEngine:
    def __init__(self, path: str, n_ctx: int, threads: int, dtype: str):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), attn_implementation="sdpa")
        self.model.eval()

    def prefill(self, tokens: list[int]) -> None:
        with self.torch.inference_mode():
            self.model(self.torch.tensor([tokens]), use_cache=True, logits_to_keep=1)

    def decode(self, tokens: list[int]) -> None:
        from transformers import DynamicCache

        cache = DynamicCache()
        with self.torch.inference_mode():
            for token in tokens:
                self.model(self.torch.tensor([[token]]), past_key_values=cache, use_cache=True, logits_to_keep=1)


def bandwidth_probe(threads: int, n_bytes: int = 1 << 30, repetitions: int = 5) -> float:
    """This machine's memory bandwidth for decode-shaped work, in bytes per second: the best of
    several float32 matrix-vector products over a matrix far larger than the caches."""
    from .threads import limit_threads

    limit_threads(threads)
    matrix = np.ones((n_bytes // 4 // 4096, 4096), np.float32)
    vector = np.ones(4096, np.float32)
    best = float("inf")
    for _ in range(repetitions + 1):  # the first one warms up
        t0 = time.perf_counter()
        matrix @ vector
        best = min(best, time.perf_counter() - t0)
    return matrix.nbytes / best


def bytes_per_token(path: Path) -> int:
    """Weight bytes one decode step reads from a GGUF: every tensor once, except an untied
    model's token embedding, of which it reads one row."""
    from .gguf_file import GGUFFile

    with GGUFFile(path) as f:
        return _weight_bytes_per_token(f)


def _weight_bytes_per_token(f) -> int:
    total = sum(t.nbytes for t in f.tensors.values())
    if "output.weight" in f.tensors and "token_embd.weight" in f.tensors:
        total -= f.tensors["token_embd.weight"].nbytes
    return total


def roofline(rows: list["Row"], bandwidth: float, gguf: Path) -> list[str]:
    """The decode ceiling of the file at this bandwidth, and each engine's share of it."""
    per_token = bytes_per_token(gguf)
    ceiling = bandwidth / per_token
    lines = [f"memory bandwidth (float32 GEMV probe): {bandwidth / 1e9:.1f} GB/s; {gguf.name} reads "
             f"{per_token / 1e9:.2f} GB per token: decode ceiling {ceiling:.2f} t/s"]
    for r in rows:
        if r.n_gen and r.model_filename == gguf.name:
            lines.append(f"{r.test} {r.engine}: {r.avg_ts:.2f} t/s = {r.avg_ts / ceiling:.0%} of the ceiling")
    return lines


def make_engine(engine: str, path: str, n_ctx: int, threads: int):
    if engine == "numpy":
        return NumpyEngine(path, n_ctx, threads)
    if engine == "llama.cpp":
        return LlamaCppEngine(path, n_ctx, threads)
    return TransformersEngine(path, n_ctx, threads, "float32" if engine.endswith("f32") else "bfloat16")


def worker(engine: str, path: str, n_ctx: int, threads: int) -> None:
    """Load one engine, then run tests as the driver asks: one JSON line in, one JSON line out."""
    if engine == "probe":
        print(json.dumps({"bandwidth": bandwidth_probe(threads)}), flush=True)
        return
    started = time.perf_counter()
    runner = make_engine(engine, path, n_ctx, threads)
    print(json.dumps({"load_s": time.perf_counter() - started}), flush=True)
    for line in sys.stdin:
        n_prompt, n_gen = json.loads(line)
        work = runner.prefill if n_prompt else runner.decode
        tokens = token_ids(n_prompt or n_gen)
        t0 = time.perf_counter_ns()
        work(tokens)
        elapsed = time.perf_counter_ns() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        print(json.dumps({"ns": elapsed, "peak_rss_bytes": rss}), flush=True)


class Worker:
    """An engine in a child process, driven one test at a time."""

    def __init__(self, engine: str, path: Path, n_ctx: int, threads: int):
        self.engine = engine
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen([sys.executable, "-m", "qwen3repro.bench", engine, str(path), str(n_ctx), str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.first_reply = self._reply()
        self.load_s = self.first_reply.get("load_s", 0.0)

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            lines = self.proc.stderr.read().strip().splitlines() or ["no output"]
            raise UserError(f"engine {self.engine} failed: {lines[-1]}")
        return json.loads(line)

    def run(self, n_prompt: int, n_gen: int) -> dict:
        self.proc.stdin.write(json.dumps([n_prompt, n_gen]) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


# ----------------------------------------------------------------------------- driver

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
    from .gguf_file import GGUFFile
    from .quant_plan import FILE_TYPES

    with GGUFFile(path) as f:
        file_type = f.fields.get("general.file_type")
        per_token = _weight_bytes_per_token(f)
    names = {int(ftype): name for name, (ftype, _) in FILE_TYPES.items()}
    return names.get(file_type, f"file_type {file_type}"), per_token


def memory_mb(gguf: Path | str) -> int:
    """Memory for benchmarking a GGUF file: ours holds the weights in float32, llama.cpp maps the file."""
    from .gguf_file import GGUFFile

    with GGUFFile(gguf) as f:
        n_weights = sum(int(np.prod(t.shape)) for t in f.tensors.values())
    return 1024 + (4 * n_weights + Path(gguf).stat().st_size) // 2**20


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def bench(engines: dict[str, Path | str], n_prompt: list[int], n_gen: list[int], repetitions: int = 3,
          threads: int = 2, context_length: int | None = None, progress=None) -> list[Row]:
    """Run every test on every engine (name -> model path), interleaved: each repetition runs
    the engines one after another, so a machine that slows down mid-run slows all of them alike."""
    for engine, path in engines.items():
        if engine not in ENGINES:
            raise UserError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
        wants_dir = engine.startswith("transformers")
        if not Path(path).exists() or Path(path).is_dir() != wants_dir:
            raise UserError(f"{path}: {'a Hugging Face model directory' if wants_dir else 'a GGUF file'} does not exist")
    if repetitions < 1 or threads < 1:
        raise UserError("repetitions and threads must be at least 1")
    if any(n < 0 for n in [*n_prompt, *n_gen]):
        raise UserError("prompt and generation lengths must be positive (0 skips a test, as in llama-bench)")
    tests = [(p, 0) for p in n_prompt if p] + [(0, g) for g in n_gen if g]
    if not tests:
        raise UserError("no test to run: every prompt and generation length is 0")
    n_ctx = max(p + g for p, g in tests)
    if context_length is not None and n_ctx > context_length:
        raise UserError(f"a test needs {n_ctx} positions; the model's context is {context_length}")
    workers = {}
    samples: dict[tuple[str, int, int], list[int]] = {}
    try:
        for engine, path in engines.items():  # one at a time: loads do not compete for the cores
            workers[engine] = Worker(engine, Path(path), n_ctx + 1, threads)
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
    finally:
        for w in workers.values():
            w.close()
    rows = []
    for engine, path in engines.items():
        path = Path(path)
        model_type, per_token = describe(engine, path)
        for n_p, n_g in tests:
            ns = samples[(engine, n_p, n_g)]
            speeds = [(n_p or n_g) / (t / 1e9) for t in ns]
            rows.append(Row(engine=engine, model_filename=path.name, model_type=model_type, model_size=model_size(path),
                            bytes_per_token=per_token, n_prompt=n_p, n_gen=n_g,
                            n_threads=threads, samples_ns=ns, avg_ts=statistics.mean(speeds),
                            stddev_ts=statistics.stdev(speeds) if len(speeds) > 1 else 0.0,
                            load_s=workers[engine].load_s, peak_rss_bytes=workers[engine].peak_rss_bytes))
    return rows


def measure_bandwidth(threads: int) -> float:
    """bandwidth_probe in a fresh process, as the engines run."""
    w = Worker("probe", Path("."), 1, threads)
    w.close()
    return w.first_reply["bandwidth"]


def table(rows: list[Row]) -> str:
    lines = [f"| {'engine':<18} | {'model':<28} | {'test':>6} | {'t/s':>16} | {'load s':>6} | {'peak RSS':>9} |",
             f"|{'-' * 20}|{'-' * 30}|{'-' * 8}|{'-' * 18}|{'-' * 8}|{'-' * 11}|"]
    for r in rows:
        lines.append(f"| {r.engine:<18} | {r.model_filename[-28:]:<28} | {r.test:>6} | {r.avg_ts:>8.2f} ± {r.stddev_ts:<5.2f} "
                     f"| {r.load_s:>6.2f} | {r.peak_rss_bytes / 2**30:>5.2f} GiB |")
    return "\n".join(lines)


def ratios(rows: list[Row], engine: str = "numpy") -> list[str]:
    """Lines like "tg128: numpy / llama.cpp = 1.23x" for every test both engines ran."""
    ours = {(r.test, r.model_filename): r for r in rows if r.engine == engine}
    out = []
    for r in rows:
        if r.engine == engine:
            continue
        mine = next((o for (test, _), o in ours.items() if test == r.test), None)
        if mine is not None:
            out.append(f"{r.test}: {engine} {mine.avg_ts:.2f} t/s / {r.engine} {r.avg_ts:.2f} t/s = {mine.avg_ts / r.avg_ts:.2f}x")
    return out


def as_records(rows: list[Row]) -> list[dict]:
    """Rows as dicts, with the test name and, for prompt tests, the time to the first token
    (the first token is sampled from the prompt's logits)."""
    records = []
    for r in rows:
        record = {**asdict(r), "test": r.test}
        record["ttft_ms"] = statistics.mean(r.samples_ns) / 1e6 if r.n_prompt else None
        records.append(record)
    return records


TIMING_FIELDS = ("samples_ns", "avg_ts", "stddev_ts", "load_s", "peak_rss_bytes", "ttft_ms",
                 "ceiling_ts", "ceiling_share", "bandwidth_gbs")


def summary_table(records: list[dict], bandwidth: float):
    """All rows of a model as one pandas table, with the decode roofline: the ceiling of each
    row's weights at this machine's bandwidth, and the row's share of it."""
    import pandas as pd

    table = pd.DataFrame(records)
    table["bandwidth_gbs"] = bandwidth / 1e9
    table["ceiling_ts"] = bandwidth / table["bytes_per_token"]
    table["ceiling_share"] = (table["avg_ts"] / table["ceiling_ts"]).where(table["n_gen"] > 0)
    table["ceiling_ts"] = table["ceiling_ts"].where(table["n_gen"] > 0)
    columns = ["engine", "model_type", "model_filename", "test", "n_prompt", "n_gen", "n_threads", "avg_ts", "stddev_ts",
               "ttft_ms", "load_s", "peak_rss_bytes", "model_size", "bytes_per_token", "ceiling_ts", "ceiling_share",
               "bandwidth_gbs", "samples_ns"]
    return table[columns].sort_values(["model_type", "engine", "n_gen", "n_prompt"], kind="stable").reset_index(drop=True)


def format_summary(table) -> str:
    lines = [f"| {'type':<8} | {'engine':<18} | {'test':>6} | {'t/s':>21} | {'roofline':>8} | {'load s':>6} | {'peak RSS':>9} |",
             f"|{'-' * 10}|{'-' * 20}|{'-' * 8}|{'-' * 23}|{'-' * 10}|{'-' * 8}|{'-' * 11}|"]
    for r in table.itertuples():
        share = f"{r.ceiling_share:.0%}" if r.ceiling_share == r.ceiling_share else ""
        lines.append(f"| {r.model_type:<8} | {r.engine:<18} | {r.test:>6} | {r.avg_ts:>10.2f} ± {r.stddev_ts:<8.2f} | {share:>8} "
                     f"| {r.load_s:>6.2f} | {r.peak_rss_bytes / 2**30:>5.2f} GiB |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- pipeline stages

def bench_gguf(gguf: Path | str, engines: list[str], settings: dict, threads: int) -> list[dict]:
    """The GGUF engines of `engines` (numpy, llama.cpp) on one file; llama.cpp's rows are left
    out, with a log line, when the peers extra is not installed."""
    import logging

    from .gguf_file import GGUFFile

    chosen = [e for e in engines if e in ("numpy", "llama.cpp")]
    if "llama.cpp" in chosen and not llama_cpp_available():
        logging.getLogger(__name__).warning("llama.cpp rows left out: llama-cpp-python (the peers extra) is not installed")
        chosen.remove("llama.cpp")
    if not chosen:
        return []
    with GGUFFile(gguf) as f:
        context = f.fields.get("qwen3.context_length")
    rows = bench({e: gguf for e in chosen}, settings["n_prompt"], settings["n_gen"], settings["repetitions"], threads, context)
    return as_records(rows)


def bench_hf(model_dir: Path | str, engine: str, settings: dict, threads: int) -> list[dict]:
    config = json.loads((Path(model_dir) / "config.json").read_text("utf-8"))
    rows = bench({engine: model_dir}, settings["n_prompt"], settings["n_gen"], settings["repetitions"], threads,
                 config.get("max_position_embeddings"))
    return as_records(rows)


def write_summary(parts: list[Path | str], bandwidth_json: Path | str, out_csv: Path | str, out_json: Path | str) -> str:
    """Merge the per-file and per-dtype rows of a model into results/bench/<model>.csv and .json."""
    from .fsutil import write_text_atomic

    records = []
    for part in parts:
        records += json.loads(Path(part).read_text("utf-8"))
    bandwidth = json.loads(Path(bandwidth_json).read_text("utf-8"))["bandwidth_bytes_per_s"]
    if not records:
        raise UserError("no benchmark rows: every engine was left out")
    table = summary_table(records, bandwidth)
    write_text_atomic(Path(out_csv), table.drop(columns=["samples_ns"]).to_csv(index=False), force=True)
    write_text_atomic(Path(out_json), table.to_json(orient="records", indent=1) + "\n", force=True)
    return format_summary(table)


if __name__ == "__main__":  # a worker: engine, model path, n_ctx, threads
    _engine, _path, _n_ctx, _threads = sys.argv[1:5]
    try:
        worker(_engine, _path, int(_n_ctx), int(_threads))
    except UserError as e:
        print(f"qwen3repro: error: {e}", file=sys.stderr)
        sys.exit(2)
