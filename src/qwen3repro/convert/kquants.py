"""K-quant block quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) in NumPy, byte for byte as llama.cpp's.

gguf-py can dequantize K-quants but not produce them; llama.cpp's reference quantizers
(`quantize_row_q*_K_ref` in ggml-quants.c, used by llama-quantize without an importance matrix)
are reproduced here, with the float32 primitives of blocks.py (C's order of operations).
Vectorisation is across sub-blocks: arrays are laid out element-major, shape
(elements_per_subblock, n_subblocks), so each element step is one contiguous NumPy op.
"""

from __future__ import annotations

import numpy as np

from qwen3repro.convert.blocks import (
    F32,
    GROUP_MAX_EPS,
    QK_K,
    first_absmax,
    fp16_round,
    max_from_zero,
    nearest_int,
    round_clip,
    seqsum,
    subblocks,
)


def _err(diff: np.ndarray, use_mad: bool) -> np.ndarray:
    return np.abs(diff) if use_mad else diff * diff


def make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep, use_mad):
    """Asymmetric (scale, min) fit of sub-blocks; x, w: (n, B). Returns scale (B,), the_min (B,), L (n, B)."""
    nmax_f = F32(nmax)
    sum_w = seqsum(w)
    sum_x = seqsum(w * x)
    mn = np.minimum(x.min(axis=0), F32(0))
    mx = x.max(axis=0)
    flat = mx == mn
    rng = mx - mn
    iscale = nmax_f / rng
    scale = F32(1) / iscale
    L = round_clip(iscale * (x - mn), 0, nmax)
    best = seqsum(w * _err(scale * L + mn - x, use_mad))
    for step in range(nstep + 1):
        iscale = (F32(rmin) + F32(rdelta) * F32(step) + nmax_f) / (mx - mn)
        laux = round_clip(iscale * (x - mn), 0, nmax)
        wl = w * laux
        sum_l, sum_l2, sum_xl = seqsum(wl), seqsum(wl * laux), seqsum(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        clamp = this_min > 0
        this_min = np.where(clamp, F32(0), this_min)
        this_scale = np.where(clamp, sum_xl / sum_l2, this_scale)
        cur = seqsum(w * _err(this_scale * laux + this_min - x, use_mad))
        better = (D > 0) & (cur < best)
        L = np.where(better, laux, L)
        best = np.where(better, cur, best)
        scale = np.where(better, this_scale, scale)
        mn = np.where(better, this_min, mn)
    scale = np.where(flat, F32(0), scale)
    L = np.where(flat, F32(0), L)
    return scale, -mn, L


def make_qx_quants(x, nmax, w=None):
    """Symmetric scale fit (make_qx_quants, rmse_type 1) with weights `w`, x^2 when there is no
    importance matrix. L in 0..2*nmax-1."""
    xmax = first_absmax(x)
    zero = np.abs(xmax) < GROUP_MAX_EPS
    w = x * x if w is None else w
    wx = w * x

    def fit(iscale):
        l = round_clip(iscale * x, -nmax, nmax - 1)
        return l, seqsum(wx * l), seqsum(w * l * l)

    l, sumlx, suml2 = fit(F32(-nmax) / xmax)
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
    best = scale * sumlx
    L = l + F32(nmax)
    for step in range(-9, 10):
        if step == 0:
            continue
        l, sumlx, suml2 = fit(-(F32(nmax) + F32(0.1) * F32(step)) / xmax)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = np.where(better, l + F32(nmax), L)
        scale = np.where(better, sumlx / suml2, scale)
        best = np.where(better, scale * sumlx, best)
    return np.where(zero, F32(0), scale), np.where(zero, F32(0), L)


def make_q3_quants_rmse(x, nmax):
    """Q3_K's symmetric fit with coordinate-descent refinement (make_q3_quants, do_rmse). L in 0..2*nmax-1."""
    xmax = first_absmax(x)
    zero = np.abs(xmax) < GROUP_MAX_EPS
    iscale = F32(-nmax) / xmax
    w = x * x
    wx = w * x
    L = round_clip(iscale * x, -nmax, nmax - 1)
    sumlx, suml2 = seqsum(wx * L), seqsum(w * L * L)
    # A block whose pass changed nothing would change nothing on the next pass either, so running
    # all five passes for every block equals C's per-block early exit.
    for _ in range(5):
        for i in range(x.shape[0]):
            xi, wi, wxi, li = x[i], w[i], wx[i], L[i]
            slx = sumlx - wxi * li
            sl2 = suml2 - wi * li * li
            new_l = round_clip(xi * sl2 / slx, -nmax, nmax - 1)
            slx2 = slx + wxi * new_l
            sl2_2 = sl2 + wi * new_l * new_l
            take = (slx > 0) & (new_l != li) & (sl2_2 > 0) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl2_2)
            L[i] = np.where(take, new_l, li)
            sumlx = np.where(take, slx2, sumlx)
            suml2 = np.where(take, sl2_2, suml2)
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(zero, F32(0), scale), np.where(zero, F32(0), L + F32(nmax))


def _to_blocks(L: np.ndarray, nb: int) -> np.ndarray:
    """Inverse of subblocks for the integer levels: (n, nb * 256/n) -> (nb, 256)."""
    return L.T.reshape(nb, QK_K)


def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """(nb, 256) levels 0..3 -> (nb, 64): four 32-element quarters of each 128 share a byte."""
    q = L.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins per block, (nb, 8) each, into the 12 bytes of Q4_K/Q5_K."""
    out = np.zeros((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return out


def _unpack_scale_min_k4(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """get_scale_min_k4 for all eight sub-blocks: the 6-bit values as stored."""
    sc = np.empty((packed.shape[0], 8), np.uint8)
    m = np.empty_like(sc)
    sc[:, 0:4] = packed[:, 0:4] & 63
    m[:, 0:4] = packed[:, 4:8] & 63
    sc[:, 4:8] = (packed[:, 8:12] & 0xF) | ((packed[:, 0:4] >> 6) << 4)
    m[:, 4:8] = (packed[:, 8:12] >> 4) | ((packed[:, 4:8] >> 6) << 4)
    return sc, m


def _requantize(x, L, d, dm, lo, hi):
    """Final levels from the stored (fp16-rounded) scales; sub-blocks whose d is 0 keep their fit."""
    with np.errstate(divide="ignore", invalid="ignore"):
        new = round_clip((x + dm) / d, lo, hi)
    return np.where(d != 0, new, L)


def _requantize_symmetric(x, L, dsub, nmax, nb):
    """Q3_K/Q6_K levels l + nmax, l in -nmax..nmax-1, from the stored scales; L holds the fit's levels
    (already offset by nmax), kept where d is 0."""
    return _to_blocks(_requantize(x, L - F32(nmax), dsub, F32(0), -nmax, nmax - 1) + F32(nmax), nb)


def _qkx_block(blocks: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """Shared first half of Q4_K and Q5_K: levels, d, dmin and packed scales per block."""
    nb = blocks.shape[0]
    x = subblocks(blocks, 32)
    av_x = np.sqrt(seqsum(x * x) / F32(32))
    w = av_x + np.abs(x)
    scales, mins, L = make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep, use_mad=False)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale, max_min = max_from_zero(scales), max_from_zero(mins)
    inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
    inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
    ls = np.minimum(nearest_int(inv_scale[:, None] * scales) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(nearest_int(inv_min[:, None] * mins) & 0xFF, 63).astype(np.uint8)
    return finish_k4(x, L, ls, lm, max_scale / F32(63), max_min / F32(63), nmax)


def finish_k4(x, L, ls, lm, d, dmin, nmax):
    """Q4_K/Q5_K's second half: pack the 6-bit scales and mins (nb, 8) and the super-block scales
    d, dmin (nb,), round those to fp16, and redo the levels from what is stored."""
    nb = d.shape[0]
    packed = _pack_scale_min_k4(ls, lm)
    d, dmin = fp16_round(d), fp16_round(dmin)
    sc, m = _unpack_scale_min_k4(packed)
    dsub = (d.astype(F32)[:, None] * sc.astype(F32)).reshape(-1)
    dmsub = (dmin.astype(F32)[:, None] * m.astype(F32)).reshape(-1)
    L = _to_blocks(_requantize(x, L, dsub, dmsub, 0, nmax), nb).astype(np.uint8)
    return L, d, dmin, packed


def quantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    return pack_q4_k(*_qkx_block(blocks, 15, -1.0, 0.1, 20))


def pack_q4_k(L, d, dmin, packed) -> np.ndarray:
    q = L.reshape(-1, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), packed, qs], axis=1)


def quantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    return pack_q5_k(*_qkx_block(blocks, 31, -0.5, 0.1, 15))


def pack_q5_k(L, d, dmin, packed) -> np.ndarray:
    q = L.reshape(-1, 4, 2, 32)
    qs = ((q[:, :, 0] & 0xF) | ((q[:, :, 1] & 0xF) << 4)).reshape(-1, 128)
    high = (q >> 4).astype(np.uint8)  # (nb, 4 pairs, 2, 32): bit 2k for the first half, 2k+1 for the second
    shifts = (2 * np.arange(4, dtype=np.uint8))[None, :, None]
    qh = ((high[:, :, 0] << shifts) | (high[:, :, 1] << (shifts + 1))).astype(np.uint8)
    qh = np.bitwise_or.reduce(qh, axis=1)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), packed, qh, qs], axis=1)


def quantize_q2_k(blocks: np.ndarray) -> np.ndarray:
    nb = blocks.shape[0]
    x = subblocks(blocks, 16)
    scales, mins, L = make_qkx2_quants(x, np.abs(x), 3, -0.5, 0.1, 15, use_mad=True)
    scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
    max_scale, max_min = max_from_zero(scales), max_from_zero(mins)
    with np.errstate(divide="ignore"):
        ls = np.where(max_scale[:, None] > 0, nearest_int((F32(15) / max_scale)[:, None] * scales), 0)
        lm = np.where(max_min[:, None] > 0, nearest_int((F32(15) / max_min)[:, None] * mins), 0)
    packed = ((ls & 0xFF) | (lm << 4)).astype(np.int64) & 0xFF
    d = fp16_round(np.where(max_scale > 0, max_scale / F32(15), F32(0)))
    dmin = fp16_round(np.where(max_min > 0, max_min / F32(15), F32(0)))
    return pack_q2_k(x, L, packed, d, dmin)


def pack_q2_k(x, L, packed, d, dmin) -> np.ndarray:
    """Q2_K's bytes from the sub-blocks `x` (16, nb*16), the fit's levels, the packed 4-bit scales
    and mins (nb, 16) and the fp16 super-block scales; levels are redone from what is stored."""
    nb = d.shape[0]
    dsub = (d.astype(F32)[:, None] * (packed & 0xF).astype(F32)).reshape(-1)
    dmsub = (dmin.astype(F32)[:, None] * (packed >> 4).astype(F32)).reshape(-1)
    L = _to_blocks(_requantize(x, L, dsub, dmsub, 0, 3), nb)
    return np.concatenate(
        [packed.astype(np.uint8), _pack_2bit(L), d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2)],
        axis=1,
    )


def quantize_q3_k(blocks: np.ndarray) -> np.ndarray:
    nb = blocks.shape[0]
    x = subblocks(blocks, 16)
    scales, L = make_q3_quants_rmse(x, 4)
    scales = scales.reshape(nb, 16)
    max_scale = first_absmax(scales.T)
    nonzero = max_scale != 0
    with np.errstate(divide="ignore"):
        iscale = F32(-32) / max_scale
    l = np.clip(nearest_int(iscale[:, None] * scales).astype(np.int8), -32, 31).astype(np.int64) + 32
    l = np.where(nonzero[:, None], l, 0)
    d = fp16_round(np.where(nonzero, F32(1) / iscale, F32(0)))
    return pack_q3_k(x, L, l, d)


def pack_q3_k(x: np.ndarray, L: np.ndarray, l: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Q3_K's bytes from the sub-blocks `x` (16, nb*16), the fit's levels L (offset by 4), the 6-bit
    scales l (nb, 16, offset by 32) and the fp16 super-block scale d; levels are redone from the
    stored scales."""
    nb = d.shape[0]
    packed = np.zeros((nb, 12), np.int64)
    packed[:, 0:8] = (l[:, 0:8] & 0xF) | ((l[:, 8:16] & 0xF) << 4)
    high = l >> 4  # 2 bits per sub-block, four sub-blocks j, j+4, j+8, j+12 share byte 8 + j
    packed[:, 8:12] = high[:, 0:4] | (high[:, 4:8] << 2) | (high[:, 8:12] << 4) | (high[:, 12:16] << 6)
    packed = packed.astype(np.uint8)
    sc = (l - 32).astype(F32)  # the 6-bit values read back, as C does, equal l - 32
    dsub = (d.astype(F32)[:, None] * sc).reshape(-1)
    L = _requantize_symmetric(x, L, dsub, 4, nb).astype(np.int64)
    high_bit = (L > 3).reshape(nb, 8, 32)  # element 32*k + m sets bit k of hmask[m]
    hmask = np.bitwise_or.reduce(high_bit.astype(np.uint8) << np.arange(8, dtype=np.uint8)[None, :, None], axis=1)
    L = np.where(L > 3, L - 4, L)
    return np.concatenate([hmask.astype(np.uint8), _pack_2bit(L), packed, d.view(np.uint8).reshape(-1, 2)], axis=1)


def quantize_q6_k(blocks: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    """Q6_K; with `qw` (blocks' importance, same shape) as quantize_row_q6_K_impl, which takes the
    importance as the fit's weights as they are."""
    nb = blocks.shape[0]
    x = subblocks(blocks, 16)
    scales, L = make_qx_quants(x, 32, None if qw is None else subblocks(qw, 16))
    scales = scales.reshape(nb, 16)
    max_scale = first_absmax(scales.T)
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = F32(-128) / max_scale
        q_scales = np.minimum(nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
    d = fp16_round(F32(1) / iscale)
    dsub = (d.astype(F32)[:, None] * q_scales.astype(F32)).reshape(-1)
    L = _requantize_symmetric(x, L, dsub, 32, nb).astype(np.uint8).reshape(nb, 2, 4, 32)
    lo, hi = L & 0xF, L >> 4
    ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2).reshape(nb, 128)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(nb, 64)
    out = np.concatenate([ql, qh, q_scales.view(np.uint8), d.view(np.uint8).reshape(-1, 2)], axis=1)
    out[zero] = 0
    return out
