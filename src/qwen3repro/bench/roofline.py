"""The decode roofline: this machine's memory bandwidth, and the weight bytes one decode step reads."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def bandwidth_probe(threads: int, n_bytes: int = 1 << 30, repetitions: int = 5) -> float:
    """This machine's memory bandwidth for decode-shaped work, in bytes per second: the best of
    several float32 matrix-vector products over a matrix far larger than the caches."""
    from qwen3repro.pipeline.threads import limit_threads

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
    from qwen3repro.gguf_file import GGUFFile

    with GGUFFile(path) as f:
        return weight_bytes_per_token(f)


def weight_bytes_per_token(f, bytes_per_weight: int | None = None) -> int:
    """bytes_per_token of an open GGUFFile: the file's own blocks, or every weight at
    `bytes_per_weight` (the NumPy engine holds every file type in float32: 4)."""

    def size(t) -> int:
        return t.nbytes if bytes_per_weight is None else t.n_elements * bytes_per_weight

    total = sum(size(t) for t in f.tensors.values())
    if "output.weight" in f.tensors and "token_embd.weight" in f.tensors:
        total -= size(f.tensors["token_embd.weight"])
    return total
