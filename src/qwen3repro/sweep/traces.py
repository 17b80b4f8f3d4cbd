"""Token traces a page can re-filter: per step, the top-N logits exactly and a histogram of the rest.

A trace keeps, at every generated token, the logits the sampler saw (after penalties and bans)
for the N most likely tokens, and for the other ~151,900 a histogram of their gaps below the
step's largest logit: per bin the count and the mean gap. From that the page recomputes the
distribution at any temperature and re-applies top-k, top-p and min-p, so a learner can ask
"what if top-p were 0.5 here?" without the full vocabulary in the page.

The tail's mass at temperature T, the sum over tail tokens of exp(-gap / T), is bracketed per bin
from its count, mean and variance: below by Jensen and by a second-order expansion about the mean
with the curvature at the bin's far end, above by the chord between the bin's ends and by the same
expansion with the curvature at its near end. The midpoint is the estimate and half the bracket
its error, so every probability the page shows carries a bound it computed: under 1e-4 of the
probability from temperature 0.05 to 2 on the models here, and on flat or peaked random logits
(tests/test_sweep.py).
"""

from __future__ import annotations

import math

import numpy as np

from qwen3repro.engine.sampler import most_likely
from qwen3repro.errors import UserError


def _edges() -> np.ndarray:
    """Bin edges over gaps below the largest logit: fine near the top, where the mass is at low
    temperatures, coarser further down, one wide bin at the bottom (beyond 64 nats a token's
    weight is below e^-32 even at temperature 2)."""
    parts = [(0, 2, 200), (2, 8, 120), (8, 32, 240), (32, 64, 64)]  # (from, to, bins)
    edges = np.concatenate([np.linspace(a, b, n, endpoint=False) for a, b, n in parts] + [np.array([64.0, 128.0])])
    return np.round(edges, 6)


TAIL_EDGES = _edges()
MEAN_STEPS = 10_000  # a bin's mean gap is stored as its position in the bin, in these steps
GAP_DECIMALS = 6  # the top candidates' gaps, rounded: a relative error under 5e-7 / T in their weight


def record_step(token: int, logits: np.ndarray, top: int, kept: int) -> dict:
    """One step of a trace: the token drawn, the top candidates' gaps below the largest logit,
    the histogram of the other tokens' gaps, how many tokens were banned (-inf) and how many the
    filters kept at the recorded settings."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    finite = np.isfinite(z)
    z_max = float(z[finite].max())
    ids = most_likely(z, int(min(top, finite.sum())))
    rest = finite.copy()
    rest[ids] = False
    gaps = np.minimum(z_max - z[rest], TAIL_EDGES[-1] - 1e-9)
    bins = np.searchsorted(TAIL_EDGES, gaps, side="right") - 1
    offset = gaps - TAIL_EDGES[bins]  # from the bin's lower edge: no cancellation in the variance
    counts = np.bincount(bins, minlength=len(TAIL_EDGES) - 1)
    used = np.nonzero(counts)[0]
    n = counts[used]
    mean = np.bincount(bins, weights=offset, minlength=len(counts))[used] / n
    variance = np.maximum(np.bincount(bins, weights=offset**2, minlength=len(counts))[used] / n - mean**2, 0)
    width = np.diff(TAIL_EDGES)[used]
    means = np.clip(np.rint(mean / width * MEAN_STEPS), 0, MEAN_STEPS)
    spreads = np.clip(np.rint(variance / (width**2 / 4) * MEAN_STEPS), 0, MEAN_STEPS)  # at most w^2 / 4
    return {
        "token": int(token),
        "max_logit": round(z_max, GAP_DECIMALS),
        "ids": ids.tolist(),
        "gaps": np.round(z_max - z[ids], GAP_DECIMALS).tolist(),
        "tail": {
            "bins": used.tolist(),
            "counts": n.tolist(),
            "means": means.astype(int).tolist(),
            "spreads": spreads.astype(int).tolist(),
        },
        "banned": int((~finite).sum()),
        "kept": int(kept),
    }


class TraceRecorder:
    """An observer (see engine.sampler.Observer) that records every step of one generation."""

    def __init__(self, top: int):
        self.top, self.steps = top, []

    def __call__(self, token: int, logits: np.ndarray, dist) -> None:
        self.steps.append(record_step(token, logits, self.top, 1 if dist is None else len(dist.ids)))


def tail_mass(step: dict, temperature: float) -> tuple[float, float]:
    """The tail's weight at this temperature, relative to the top token's (which weighs 1), and a
    bound on the estimate's error: the midpoint and half-width of a bracket per bin."""
    t, T = step["tail"], temperature
    bins = np.asarray(t["bins"], dtype=np.int64)
    n = np.asarray(t["counts"], dtype=np.float64)
    edge, hi = TAIL_EDGES[bins], TAIL_EDGES[bins + 1]
    w = hi - edge
    lo = np.maximum(edge, step["gaps"][-1] - 0.5 * 10.0**-GAP_DECIMALS)  # no tail token lies above the last stored one
    m = np.clip(edge + w * np.asarray(t["means"], dtype=np.float64) / MEAN_STEPS, lo, hi)
    v = w**2 / 4 * np.asarray(t["spreads"], dtype=np.float64) / MEAN_STEPS
    mu, delta = w / (2 * MEAN_STEPS), w**2 / 4 / (2 * MEAN_STEPS)  # the stored mean's and variance's rounding
    f = n * np.exp(-m / T)
    # second order about the mean, the curvature exp(-g/T)/T^2 taken at the bin's ends
    taylor_lo = f * (1 - mu / T + np.maximum(v - delta, 0) * np.exp(-(hi - m) / T) / (2 * T**2))
    taylor_hi = f * (1 + mu / T + (v + delta + mu**2) * np.exp((m - lo) / T) / (2 * T**2))
    # convexity: Jensen below, the chord between the bin's ends above
    jensen = f * np.exp(-mu / T)
    span = np.maximum(hi - lo, 1e-12)
    chord = n * ((hi - m) * np.exp(-lo / T) + (m - lo) * np.exp(-hi / T) + mu * (np.exp(-lo / T) - np.exp(-hi / T)))
    chord = chord / span
    lower, upper = np.maximum(taylor_lo, jensen), np.minimum(taylor_hi, chord)
    return float((lower + upper).sum() / 2), float((upper - lower).sum() / 2)


def probabilities(step: dict, temperature: float) -> tuple[np.ndarray, float]:
    """The top candidates' probabilities at this temperature (before any filter) and a bound on
    each one's relative error."""
    weights = np.exp(-np.asarray(step["gaps"], dtype=np.float64) / temperature)
    tail, tail_error = tail_mass(step, temperature)
    total = weights.sum() + tail
    return weights / total, tail_error / total + 2 * math.expm1(0.5 * 10.0**-GAP_DECIMALS / temperature)


def check_traces(data, path) -> list[dict]:
    """The traces of a -traces.json file, or a one-line error naming the file and what is wrong."""

    def fail(what: str):
        raise UserError(f"{path}: malformed trace file ({what})")

    if not isinstance(data, dict) or not isinstance(data.get("traces"), list):
        fail("no list of traces")
    if data.get("tail_edges") is not None and not np.allclose(data["tail_edges"], TAIL_EDGES):
        fail("tail_edges differ from this version's bins")
    n_bins = len(TAIL_EDGES) - 1
    for i, trace in enumerate(data["traces"]):
        where = f"trace {i + 1}"
        if not isinstance(trace, dict) or not {"prompt", "preset", "thinking", "params", "steps"} <= set(trace):
            fail(f"{where}: needs prompt, preset, thinking, params and steps")
        for j, step in enumerate(trace["steps"]):
            at = f"{where}, step {j + 1}"
            try:
                ids, gaps, tail = step["ids"], step["gaps"], step["tail"]
                bins, counts, means = tail["bins"], tail["counts"], tail["means"]
                spreads = tail["spreads"]
                ok = (
                    len(ids) == len(gaps) > 0
                    and gaps[0] == 0
                    and all(0 <= a <= b for a, b in zip(gaps, gaps[1:]))
                    and len(bins) == len(counts) == len(means) == len(spreads)
                    and all(0 <= b < n_bins for b in bins)
                    and all(c > 0 for c in counts)
                    and all(0 <= m <= MEAN_STEPS for m in means + spreads)
                    and isinstance(step["token"], int)
                )
            except (KeyError, TypeError):
                fail(f"{at}: needs token, ids, gaps and tail bins, counts and means")
            if not ok:
                fail(f"{at}: ids and gaps must be equal-length, gaps ascending from 0, tail bins in range")
    return data["traces"]
