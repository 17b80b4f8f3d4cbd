"""One table from a tensor type to the functions that make its blocks, and `quantize`, one lookup.

As gguf-py's quants.py registers one class per type behind one `quantize(data, qtype)`. Each type
has the function llama-quantize runs without an importance matrix and, for the types that take one,
the function it runs with one (`--imatrix`). Where gguf-py already writes a type's bytes exactly as
llama.cpp does (BF16, Q8_0, the legacy Q4/Q5 types), it is used; the K-quants (kquants.py),
IQ4_NL/IQ4_XS (iq4.py) and everything weighted by an importance matrix (weighted.py) are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from qwen3repro.convert import iq4, kquants, weighted
from qwen3repro.convert.blocks import CHUNK_BLOCKS, F32, QK_K, map_chunks
from qwen3repro.gguf_file import tensor_nbytes

# A whole tensor (row last) with its importance (one weight per column, or None) on `threads`
# threads -> its bytes, uint8 with the last dimension in bytes (or the array itself for F32/F16).
Encode = Callable[[np.ndarray, "np.ndarray | None", "int | None"], np.ndarray]


@dataclass(frozen=True)
class Quantizer:
    plain: Encode  # llama-quantize without an importance matrix
    weighted: Encode | None = None  # with one; None where the type ignores it (Q8_0, F16, ...)
    family: str = "plain"  # plain, legacy, k or iq4: how fast it encodes (pipeline/time_limits.py)


def _as_is(dtype) -> Encode:
    return lambda data, importance, threads: data if data.dtype == dtype else data.astype(dtype)


def _gguf_py(qtype: T) -> Encode:
    """gguf-py's own quantizer, row chunks on threads."""

    def encode(data, importance, threads):
        rows = data.reshape(-1, data.shape[-1])
        out = np.empty((rows.shape[0], tensor_nbytes(rows.shape, qtype) // rows.shape[0]), np.uint8)
        chunk = max(1, (1 << 18) // rows.shape[1])
        map_chunks(lambda r: gguf.quants.quantize(r, qtype), rows, out, chunk, threads)
        return out.reshape(*data.shape[:-1], out.shape[-1])

    return encode


def _by_rows(qtype: T, block: int, fn: Callable) -> Encode:
    """`fn(rows (r, n), importance (n,) or None) -> (r, bytes)` over the tensor, row chunks on threads."""

    def encode(data, importance, threads):
        rows = np.ascontiguousarray(data, dtype=F32).reshape(-1, data.shape[-1])
        n = rows.shape[1]
        if n % block:
            raise ValueError(f"{qtype.name} needs rows of a multiple of {block} values, got {n}")
        if importance is not None and importance.shape != (n,):
            raise ValueError(f"{qtype.name}: {importance.size} importance weights for rows of {n}")
        qw = None if importance is None else np.ascontiguousarray(importance, dtype=F32)
        out = np.empty((rows.shape[0], tensor_nbytes((1, n), qtype)), np.uint8)
        map_chunks(lambda chunk: fn(chunk, qw), rows, out, max(1, CHUNK_BLOCKS * QK_K // n), threads)
        return out.reshape(*data.shape[:-1], out.shape[-1])

    return encode


def _by_superblocks(qtype: T, fn: Callable) -> Encode:
    """`fn(blocks (nb, 256), importance (nb, 256) or None) -> (nb, bytes)` over the tensor's 256-value
    super-blocks, each block given its columns' importance."""

    def rows_of(chunk: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
        tiled = None if qw is None else np.tile(qw.reshape(-1, QK_K), (chunk.shape[0], 1))
        return fn(chunk.reshape(-1, QK_K), tiled).reshape(chunk.shape[0], -1)

    return _by_rows(qtype, QK_K, rows_of)


def _k_quant(qtype: T, reference: Callable, with_importance: Callable) -> Quantizer:
    """A K-quant: its reference quantizer (`quantize_row_q*_K_ref`, which takes no importance) and
    its importance-weighted one."""
    return Quantizer(
        _by_superblocks(qtype, lambda blocks, qw: reference(blocks)), _by_superblocks(qtype, with_importance), "k"
    )


def _legacy(qtype: T, with_importance: Callable) -> Quantizer:
    return Quantizer(_gguf_py(qtype), _by_rows(qtype, 32, with_importance), "legacy")


def _same_with_or_without(encode: Encode) -> Quantizer:
    """llama.cpp's IQ4 quantizers weigh by x^2 where no importance matrix is given: one function serves both."""
    return Quantizer(encode, encode, "iq4")


QUANTIZERS: dict[T, Quantizer] = {
    T.F32: Quantizer(_as_is(np.float32)),
    T.F16: Quantizer(_as_is(np.float16)),
    T.BF16: Quantizer(_gguf_py(T.BF16)),
    T.Q8_0: Quantizer(_gguf_py(T.Q8_0)),
    T.Q4_0: _legacy(T.Q4_0, weighted.quantize_q4_0),
    T.Q4_1: _legacy(T.Q4_1, weighted.quantize_q4_1),
    T.Q5_0: _legacy(T.Q5_0, weighted.quantize_q5_0),
    T.Q5_1: _legacy(T.Q5_1, weighted.quantize_q5_1),
    T.Q2_K: _k_quant(T.Q2_K, kquants.quantize_q2_k, weighted.quantize_q2_k),
    T.Q3_K: _k_quant(T.Q3_K, kquants.quantize_q3_k, weighted.quantize_q3_k),
    T.Q4_K: _k_quant(T.Q4_K, kquants.quantize_q4_k, weighted.quantize_q4_k),
    T.Q5_K: _k_quant(T.Q5_K, kquants.quantize_q5_k, weighted.quantize_q5_k),
    T.Q6_K: _k_quant(T.Q6_K, kquants.quantize_q6_k, kquants.quantize_q6_k),  # the importance as weights
    T.IQ4_NL: _same_with_or_without(_by_rows(T.IQ4_NL, 32, weighted.quantize_iq4_nl)),
    T.IQ4_XS: _same_with_or_without(_by_superblocks(T.IQ4_XS, iq4.quantize_iq4_xs)),
}

# the types whose blocks an importance matrix changes
TAKES_IMATRIX = frozenset(qtype for qtype, q in QUANTIZERS.items() if q.weighted is not None)


def quantize(
    data: np.ndarray, qtype: T, importance: np.ndarray | None = None, threads: int | None = None
) -> np.ndarray:
    """`data` (row last) as `qtype`'s bytes; `importance` (one weight per column) is the tensor's
    importance matrix entry, used by the types that take one."""
    if qtype not in QUANTIZERS:
        raise ValueError(f"no quantizer for {qtype.name}")
    quantizer = QUANTIZERS[qtype]
    if importance is not None and quantizer.weighted is not None:
        return quantizer.weighted(data, importance, threads)
    return quantizer.plain(data, None, threads)
