"""The float32 primitives every block quantizer shares, each as llama.cpp's C computes it.

To match llama-quantize byte for byte, every float operation is float32 in C's order: sums run
sequentially (never NumPy's pairwise sum), `nearest_int` is llama.cpp's own bit trick, maxima scan
as C's loops do. Block quantizers lay sub-blocks out element-major (`subblocks`), so each element
step is one contiguous NumPy operation across all sub-blocks, and run chunk by chunk on threads
(`map_chunks`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gguf.constants import QK_K

__all__ = ["QK_K"]

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)
# Blocks per chunk: large enough that NumPy's per-call overhead vanishes, small enough for cache.
CHUNK_BLOCKS = 1024


def nearest_int(v: np.ndarray) -> np.ndarray:
    """llama.cpp's nearest_int: round half to even via the float32 mantissa (garbage in, same garbage out)."""
    bits = (v.astype(F32) + F32(12582912.0)).view(np.int32)
    return (bits & 0x007FFFFF) - 0x00400000


def round_clip(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """clamp(nearest_int(v), lo, hi) as float32. Below 2**22 in magnitude nearest_int is exact
    rounding (half to even), done in float; anything larger (or NaN) takes the bit-exact path."""
    if np.abs(v).max(initial=0) < F32(4194304):
        r = v + F32(12582912.0)
        r -= F32(12582912.0)
        return np.clip(r, lo, hi, out=r)
    return np.clip(nearest_int(v), lo, hi).astype(F32)


def _seqsum_loop(a: np.ndarray) -> np.ndarray:
    s = np.zeros(a.shape[1:], F32)
    for row in a:
        s = s + row
    return s


def _reduce_is_sequential() -> bool:
    """NumPy reduces a C-ordered array's leading axis row after row; check it rather than trust it."""
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((32, 257)) * 10.0 ** rng.integers(-6, 7, (32, 257))).astype(F32)
    a[:, :4] = [0.0, -0.0, 1e-30, -1e-30]
    return np.array_equal(np.add.reduce(a, axis=0, initial=F32(0)), _seqsum_loop(a), equal_nan=True) and all(
        np.signbit(np.add.reduce(a, axis=0, initial=F32(0))[:4]) == np.signbit(_seqsum_loop(a)[:4])
    )


def seqsum(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 left to right in float32, as a C loop `s += a[i]` from s = 0 does. NumPy sums
    pairwise along a contiguous axis: any layout is first made C-ordered (where axis 0 is reduced row
    after row), and a column, whose one axis is contiguous either way, is summed with accumulate,
    sequential by definition (the final + 0 gives C's +0 for an all-zero sum). Callers need not care
    how their array is laid out."""
    a = np.ascontiguousarray(a)
    if a.ndim > 1 and a[0].size > 1:
        return np.add.reduce(a, axis=0, initial=F32(0))
    return np.add.accumulate(a, axis=0)[-1] + F32(0)


if not _reduce_is_sequential():  # pragma: no cover - a NumPy that reorders reductions
    seqsum = _seqsum_loop  # noqa: F811


def first_absmax(x: np.ndarray) -> np.ndarray:
    """Over axis 0, the signed value of the first element of largest magnitude, scanned as C does
    (`if (fabsf(v) > amax)` from 0): NaNs are skipped and an all-zero column gives +0."""
    amax = np.zeros(x.shape[1:], F32)
    value = np.zeros(x.shape[1:], F32)
    for row in x:
        ax = np.abs(row)
        take = ax > amax
        amax = np.where(take, ax, amax)
        value = np.where(take, row, value)
    return value


def max_from_zero(v: np.ndarray) -> np.ndarray:
    """Over axis 1, C's `m = 0; if (v[j] > m) m = v[j];` (never -0 or NaN, unlike np.max)."""
    m = np.zeros(v.shape[0], F32)
    for j in range(v.shape[1]):
        m = np.where(v[:, j] > m, v[:, j], m)
    return m


def fp16_round(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16)


def subblocks(blocks: np.ndarray, n: int) -> np.ndarray:
    """(nb, 256) -> (n, nb * 256/n): element-major, sub-block j of block b in column b * (256/n) + j."""
    return np.ascontiguousarray(blocks.reshape(-1, n).T)


def map_chunks(fn, rows: np.ndarray, out: np.ndarray, chunk: int, threads: int | None = None) -> None:
    """out[i:i+chunk] = fn(rows[i:i+chunk]) over all chunks, on `threads` threads (default: all
    cores): NumPy releases the GIL inside each array operation, so chunks run in parallel."""

    def run(start: int) -> None:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out[start : start + chunk] = fn(rows[start : start + chunk])

    starts = range(0, rows.shape[0], chunk)
    threads = threads or os.cpu_count() or 1
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, starts))
    else:
        for start in starts:
            run(start)
