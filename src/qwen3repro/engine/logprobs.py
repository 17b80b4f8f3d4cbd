"""Softmax, log-softmax and next-token NLL: the one implementation the engine, sampler and metrics share."""

from __future__ import annotations

import numpy as np

ROWS = 64  # positions per block: a float64 block of 151,936 log-probabilities is 78 MB


def softmax(x: np.ndarray) -> np.ndarray:
    """Along the last axis, in x's own dtype (float32 in attention, float64 for sampling)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Along the last axis, in float64."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] per row, in float64, ROWS rows at a time."""
    targets = np.asarray(targets)
    out = np.empty(len(targets), np.float64)
    for first in range(0, len(targets), ROWS):
        rows = slice(first, first + ROWS)
        out[rows] = -log_softmax(logits[rows])[np.arange(len(out[rows])), targets[rows]]
    return out


def entropy(probs: np.ndarray) -> float:
    """Shannon entropy in nats of one probability vector."""
    p = probs[probs > 0]
    return float(-(p * np.log(p)).sum())
