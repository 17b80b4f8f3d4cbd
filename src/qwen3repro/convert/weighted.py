"""Quantization with an importance matrix, byte for byte as llama-quantize --imatrix.

With an importance matrix llama.cpp leaves its reference quantizers for `quantize_row_*_impl`
(ggml-quants.c): every fit weighs each value by its column's importance times
sqrt(sigma2 + x^2), sigma2 being the mean square of the (super-)block, or for the legacy types of
the whole row; the K-quants then fit their sub-block scales to those same weights (make_qp_quants)
instead of scaling to the largest. Q6_K takes the importance as its weights unchanged, and Q8_0
ignores it. Same float32 primitives as kquants.py (blocks.py): sums in C's order, arrays element-major.
"""

from __future__ import annotations

import numpy as np

from qwen3repro.convert import iq4
from qwen3repro.convert.blocks import (
    F32,
    GROUP_MAX_EPS,
    QK_K,
    fp16_round,
    max_from_zero,
    nearest_int,
    seqsum,
    subblocks,
)
from qwen3repro.convert.kquants import (
    finish_k4,
    make_qkx2_quants,
    make_qx_quants,
    pack_q2_k,
    pack_q3_k,
    pack_q4_k,
    pack_q5_k,
)


def make_qp_quants(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned scale fit of the sub-block scales x (n, B) with weights w: a scan of 8 scales
    around nmax/max, then coordinate descent. Returns scale (B,) and levels L (n, B) as C's uint8
    holds them (a negative level wraps, and the wrapped value is what later passes read)."""
    mx = max_from_zero(x.T)
    zero = mx < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(nmax) / mx
        L = (nearest_int(iscale * x) & 0xFF).astype(F32)
        scale = F32(1) / iscale
        diff = x - scale * L
        best = seqsum(w * diff * diff)
        for step in (-4, -3, -2, -1, 1, 2, 3, 4):
            iscale_is = (F32(0.1) * F32(step) + F32(nmax)) / mx
            l = np.minimum(nearest_int(iscale_is * x), nmax).astype(F32)
            diff = x - (F32(1) / iscale_is) * l
            mse = seqsum(w * diff * diff)
            better = mse < best
            best = np.where(better, mse, best)
            iscale = np.where(better, iscale_is, iscale)
        l = np.minimum(nearest_int(iscale * x), nmax).astype(F32)
        L = (l.astype(np.int64) & 0xFF).astype(F32)
        wx = w * x
        sumlx, suml2 = seqsum(wx * l), seqsum(w * l * l)
        # As in kquants.make_q3_quants_rmse: a pass that changes nothing would change nothing again.
        for _ in range(5):
            for i in range(x.shape[0]):
                wi, li = w[i], L[i]
                slx = sumlx - wx[i] * li
                sl2 = suml2 - wi * li * li
                ok = (slx > 0) & (sl2 > 0)
                new_l = np.minimum(nearest_int(np.where(ok, x[i] * sl2 / slx, F32(0))), nmax).astype(F32)
                slx2 = slx + wx[i] * new_l
                sl2_2 = sl2 + wi * new_l * new_l
                take = ok & (new_l != li) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl2_2)
                L[i] = np.where(take, (new_l.astype(np.int64) & 0xFF).astype(F32), li)
                sumlx = np.where(take, slx2, sumlx)
                suml2 = np.where(take, sl2_2, suml2)
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(zero, F32(0), scale), np.where(zero, F32(0), L)


def importance_weights(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """qw * sqrt(sigma2 + x^2), the weight of every value in the impl fits."""
    return qw * np.sqrt(sigma2 + x * x)


def block_sigma2(blocks: np.ndarray, factor: float) -> np.ndarray:
    """factor * sum(x^2) / 256 per super-block, summed in C's order; shape (1, nb) to broadcast
    over a block's sub-blocks once they are laid out by `subblocks`."""
    return F32(factor) * seqsum(blocks.T**2) / F32(QK_K)


def _per_subblock(sigma2: np.ndarray, n: int) -> np.ndarray:
    return np.repeat(sigma2, QK_K // n)[None, :]


def quantize_q2_k(blocks: np.ndarray, qw: np.ndarray) -> np.ndarray:
    nb = blocks.shape[0]
    x, q = subblocks(blocks, 16), subblocks(qw, 16)
    weight = importance_weights(x, q, _per_subblock(block_sigma2(blocks, 1.0), 16))
    sw = seqsum(weight).reshape(nb, 16)
    scales, mins, L = make_qkx2_quants(x, weight, 3, -0.9, 0.05, 36, use_mad=False)
    dm, ls = make_qp_quants(scales.reshape(nb, 16).T, 15, sw.T)
    mm, lm = make_qp_quants(mins.reshape(nb, 16).T, 15, sw.T)
    packed = (ls.T.astype(np.int64) | (lm.T.astype(np.int64) << 4)) & 0xFF
    return pack_q2_k(x, L, packed, fp16_round(dm), fp16_round(mm))


def quantize_q3_k(blocks: np.ndarray, qw: np.ndarray) -> np.ndarray:
    nb = blocks.shape[0]
    x, q = subblocks(blocks, 16), subblocks(qw, 16)
    weight = importance_weights(x, q, _per_subblock(block_sigma2(blocks, 2.0), 16))
    sw = seqsum(weight).reshape(nb, 16)
    scales, L = make_qx_quants(x, 4, weight)
    d_block, ls = make_qx_quants(scales.reshape(nb, 16).T, 32, sw.T)
    return pack_q3_k(x, L, ls.T.astype(np.int64), fp16_round(d_block))


def _qkx_block(blocks: np.ndarray, qw: np.ndarray, nmax: int):
    nb = blocks.shape[0]
    x, q = subblocks(blocks, 32), subblocks(qw, 32)
    weight = importance_weights(x, q, _per_subblock(block_sigma2(blocks, 2.0), 32))
    sw = seqsum(weight).reshape(nb, 8).T
    scales, mins, L = make_qkx2_quants(x, weight, nmax, -0.9, 0.05, 36, use_mad=False)
    d, ls = make_qp_quants(scales.reshape(nb, 8).T, 63, sw)
    dmin, lm = make_qp_quants(mins.reshape(nb, 8).T, 63, sw)
    ls, lm = ls.T.astype(np.uint8), lm.T.astype(np.uint8)
    if nmax == 31:  # Q5_K clamps the 6-bit values, Q4_K does not
        ls, lm = np.minimum(ls, 63), np.minimum(lm, 63)
    return finish_k4(x, L, ls, lm, d, dmin, nmax)


def quantize_q4_k(blocks: np.ndarray, qw: np.ndarray) -> np.ndarray:
    return pack_q4_k(*_qkx_block(blocks, qw, 15))


def quantize_q5_k(blocks: np.ndarray, qw: np.ndarray) -> np.ndarray:
    return pack_q5_k(*_qkx_block(blocks, qw, 31))


# ---------------------------------------------------------------------------------------------
# Legacy 32-value blocks: sigma2 is the mean square of the whole row.


def _legacy_fit(rows: np.ndarray, qw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 32-value blocks of `rows` element-major (32, n_blocks) and their weights."""
    n_per_row = rows.shape[1]
    sigma2 = seqsum(rows.T**2) / F32(n_per_row)
    x = np.ascontiguousarray(rows.reshape(-1, 32).T)
    q = np.ascontiguousarray(np.tile(qw.reshape(-1, 32), (rows.shape[0], 1)).T)
    return x, importance_weights(x, q, np.repeat(sigma2, n_per_row // 32)[None, :])


def _nibbles(L: np.ndarray) -> np.ndarray:
    """Levels (32, nb) -> (nb, 16): element j in the low nibble, j + 16 in the high one."""
    L = L.T.astype(np.uint8)
    return (L[:, :16] & 0xF) | ((L[:, 16:] & 0xF) << 4)


def _high_bits(L: np.ndarray) -> np.ndarray:
    """Q5's fifth bits (32, nb) -> (nb, 4): bit j of a little-endian uint32 is element j's."""
    bits = (L.T.astype(np.uint32) >> 4) & 1
    qh = np.bitwise_or.reduce(bits << np.arange(32, dtype=np.uint32), axis=1).astype("<u4")
    return qh.view(np.uint8).reshape(-1, 4)


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    return fp16_round(v).view(np.uint8).reshape(-1, 2)


def quantize_q4_0(rows: np.ndarray, qw: np.ndarray) -> np.ndarray:
    x, weight = _legacy_fit(rows, qw)
    d, L = make_qx_quants(x, 8, weight)
    return np.concatenate([_f16_bytes(d), _nibbles(L)], axis=1).reshape(rows.shape[0], -1)


def quantize_q5_0(rows: np.ndarray, qw: np.ndarray) -> np.ndarray:
    x, weight = _legacy_fit(rows, qw)
    d, L = make_qx_quants(x, 16, weight)
    return np.concatenate([_f16_bytes(d), _high_bits(L), _nibbles(L)], axis=1).reshape(rows.shape[0], -1)


def quantize_q4_1(rows: np.ndarray, qw: np.ndarray) -> np.ndarray:
    x, weight = _legacy_fit(rows, qw)
    d, the_min, L = make_qkx2_quants(x, weight, 15, -0.9, 0.05, 36, use_mad=False)
    return np.concatenate([_f16_bytes(d), _f16_bytes(-the_min), _nibbles(L)], axis=1).reshape(rows.shape[0], -1)


def quantize_q5_1(rows: np.ndarray, qw: np.ndarray) -> np.ndarray:
    x, weight = _legacy_fit(rows, qw)
    d, the_min, L = make_qkx2_quants(x, weight, 31, -0.9, 0.05, 36, use_mad=False)
    parts = [_f16_bytes(d), _f16_bytes(-the_min), _high_bits(L), _nibbles(L)]
    return np.concatenate(parts, axis=1).reshape(rows.shape[0], -1)


def quantize_iq4_nl(rows: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    importance = None if qw is None else np.tile(qw.reshape(-1, 32), (rows.shape[0], 1))
    return iq4.quantize_iq4_nl(rows.reshape(-1, 32), importance).reshape(rows.shape[0], -1)
