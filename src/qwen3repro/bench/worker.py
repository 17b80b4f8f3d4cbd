"""The worker protocol: one engine per child process, driven one test at a time over JSON lines.

Each engine runs in a process of its own, so its load time and peak RSS are its own.
`python -m qwen3repro.bench.worker ENGINE PATH N_CTX THREADS` is the child's side.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from qwen3repro.bench.roofline import bandwidth_probe
from qwen3repro.bench.runtimes import make_engine
from qwen3repro.errors import UserError


def token_ids(n: int, seed: int = 0) -> list[int]:
    """Fixed ordinary token ids (below the added tokens), the same for every engine."""
    return np.random.default_rng(seed).integers(1000, 150000, n).tolist()


def worker(engine: str, path: str, n_ctx: int, threads: int) -> None:
    """Load one engine, then run tests as the driver asks: one JSON line in, one JSON line out."""
    if engine == "probe":
        print(json.dumps({"bandwidth": bandwidth_probe(threads)}), flush=True)
        return
    started = time.perf_counter()
    runner = make_engine(engine, path, n_ctx, threads)
    print(json.dumps({"load_s": time.perf_counter() - started}), flush=True)
    for line in sys.stdin:
        n_prompt, n_gen, n_depth = json.loads(line)
        runner.fill(token_ids(n_depth, seed=1))  # untimed: the context the test starts from
        prompt, generated = token_ids(n_prompt), token_ids(n_gen, seed=2)
        t0 = time.perf_counter_ns()
        if prompt:
            runner.prefill(prompt, n_depth)
        if generated:
            runner.decode(generated, n_depth + n_prompt)
        elapsed = time.perf_counter_ns() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        print(json.dumps({"ns": elapsed, "peak_rss_bytes": rss}), flush=True)


class Worker:
    """An engine in a child process, driven one test at a time."""

    def __init__(self, engine: str, path: Path, n_ctx: int, threads: int):
        self.engine = engine
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qwen3repro.bench.worker", engine, str(path), str(n_ctx), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.first_reply = self._reply()
        self.load_s = self.first_reply.get("load_s", 0.0)

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            lines = self.proc.stderr.read().strip().splitlines() or ["no output"]
            raise UserError(f"engine {self.engine} failed: {lines[-1]}")
        return json.loads(line)

    def run(self, n_prompt: int, n_gen: int, n_depth: int = 0) -> dict:
        self.proc.stdin.write(json.dumps([n_prompt, n_gen, n_depth]) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def measure_bandwidth(threads: int) -> float:
    """bandwidth_probe in a fresh process, as the engines run."""
    w = Worker("probe", Path("."), 1, threads)
    w.close()
    return w.first_reply["bandwidth"]


if __name__ == "__main__":  # a worker: engine, model path, n_ctx, threads
    _engine, _path, _n_ctx, _threads = sys.argv[1:5]
    try:
        worker(_engine, _path, int(_n_ctx), int(_threads))
    except UserError as e:
        print(f"qwen3repro: error: {e}", file=sys.stderr)
        sys.exit(2)
