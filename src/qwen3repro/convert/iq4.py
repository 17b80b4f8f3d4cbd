"""IQ4_NL and IQ4_XS, byte for byte as llama.cpp's quantize_iq4_nl / quantize_iq4_xs.

Both store 4-bit indices into one fixed non-linear table of 16 levels (denser near zero, where
weights are), with one fp16 scale per 32 values (IQ4_NL) or one per 256 values and a 6-bit scale per
32 (IQ4_XS: 4.25 bits per weight). Each 32-value block's scale is the best of 16 candidates by
weighted squared error; the weights are x^2, or with an importance matrix its column's importance
times sqrt(sigma2 + x^2). Float32 in C's order (blocks.py).
"""

from __future__ import annotations

import numpy as np

from qwen3repro.convert.blocks import F32, GROUP_MAX_EPS, QK_K, first_absmax, fp16_round, nearest_int, seqsum, subblocks

KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], F32)
NTRY = 7  # candidate scales either side of the first guess, as llama-quantize runs it


def best_index(v: np.ndarray) -> np.ndarray:
    """best_index_int8: the index of the table level nearest v, ties to the upper one only when
    strictly nearer, as C's binary search and comparison decide (NaN gives 15)."""
    mu = np.clip(np.searchsorted(KVALUES, v, side="right"), 1, 15)
    lower, upper = KVALUES[mu - 1], KVALUES[mu]
    idx = np.where(v - lower < upper - v, mu - 1, mu)
    idx = np.where(v <= KVALUES[0], 0, idx)
    return np.where(v >= KVALUES[15], 15, idx)


def _weighted_sums(x, w, iscale):
    q = KVALUES[best_index(iscale * x)]
    wq = w * q
    return seqsum(wq * x), seqsum(wq * q)


def fit_scales(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The scale of each 32-value block, x and w (32, B) element-major: the least-squares scale for
    the levels at max/-127 and at 15 other starting points, the best kept; 0 for an all-zero block."""
    xmax = first_absmax(x)
    zero = np.abs(xmax) < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        d = -xmax / KVALUES[0]
        sumqx, sumq2 = _weighted_sums(x, w, F32(1) / d)
        d = np.where(sumq2 > 0, sumqx / sumq2, F32(0))
        best = d * sumqx
        for itry in range(-NTRY, NTRY + 1):
            sumqx, sumq2 = _weighted_sums(x, w, F32(itry + int(KVALUES[0])) / xmax)
            better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = np.where(better, sumqx / sumq2, d)
            best = np.where(better, d * sumqx, best)
    return np.where(zero, F32(0), d)


def _weights(x: np.ndarray, qw: np.ndarray | None, sigma2: np.ndarray) -> np.ndarray:
    return x * x if qw is None else qw * np.sqrt(sigma2 + x * x)


def _indices(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Levels of x (32, B) at scale (B,) (0 where the scale is 0), packed (B, 16): j low, j+16 high."""
    with np.errstate(divide="ignore"):
        inverse = np.where(scale != 0, F32(1) / scale, F32(0))
    L = best_index(inverse * x).T.astype(np.uint8)
    return L[:, :16] | (L[:, 16:] << 4)


def quantize_iq4_nl(blocks: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    """(nb, 32) values (and importance) -> (nb, 18): fp16 scale, 16 bytes of indices."""
    x = np.ascontiguousarray(blocks.T)
    sigma2 = seqsum(x * x) * (F32(2) / F32(32))
    scales = fit_scales(x, _weights(x, None if qw is None else np.ascontiguousarray(qw.T), sigma2))
    return np.concatenate([fp16_round(scales).view(np.uint8).reshape(-1, 2), _indices(x, scales)], axis=1)


def quantize_iq4_xs(blocks: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    """(nb, 256) values (and importance) -> (nb, 136): fp16 super-block scale, the 6-bit block
    scales as 2 high bits (uint16) and 4 low bits (4 bytes), 128 bytes of indices."""
    nb = blocks.shape[0]
    x = subblocks(blocks, 32)
    sigma2 = seqsum(blocks.T**2) * (F32(2) / F32(QK_K))
    w = _weights(x, None if qw is None else subblocks(qw, 32), np.repeat(sigma2, 8)[None, :])
    scales = fit_scales(x, w).reshape(nb, 8)
    d = -first_absmax(scales.T) / F32(32)
    with np.errstate(divide="ignore"):
        inverse = np.where(d != 0, F32(1) / d, F32(0))
    l = np.clip(nearest_int(inverse[:, None] * scales), -32, 31)
    qs = _indices(x, (d[:, None] * l.astype(F32)).reshape(-1)).reshape(nb, 128)
    l = (l + 32).astype(np.uint16)
    scales_l = ((l[:, 0::2] & 0xF) | ((l[:, 1::2] & 0xF) << 4)).astype(np.uint8)
    scales_h = np.bitwise_or.reduce((l >> 4) << (2 * np.arange(8, dtype=np.uint16)), axis=1).astype("<u2")
    parts = [fp16_round(d).view(np.uint8).reshape(-1, 2), scales_h.view(np.uint8).reshape(-1, 2), scales_l, qs]
    return np.concatenate(parts, axis=1)
