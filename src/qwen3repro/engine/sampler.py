"""Turning a logit vector into the next token: penalties, temperature, top-k, top-p, min-p, a draw.

The order is transformers' (and vLLM's): penalties on the raw logits, then temperature, then the
top-k, top-p and min-p filters on the tempered distribution, then a draw from what survives.
Temperature 0 is greedy: the argmax after penalties. Every draw comes from one seeded NumPy
generator, so the same seed and settings give the same tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable

import numpy as np

from qwen3repro.engine.logprobs import softmax
from qwen3repro.errors import UserError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.6
    top_k: int = 20  # 0: off
    top_p: float = 0.95  # 1: off
    min_p: float = 0.0  # 0: off
    presence_penalty: float = 0.0  # subtracted once from every token already generated (OpenAI / vLLM)
    repetition_penalty: float = 1.0  # CTRL's penalty on prompt and generated tokens (transformers)
    seed: int | None = 0

    def __post_init__(self):
        for name in ("temperature", "top_p", "min_p", "presence_penalty", "repetition_penalty"):
            if not np.isfinite(getattr(self, name)):
                raise UserError(f"{name.replace('_', ' ')} must be a finite number, not {getattr(self, name)}")
        checks = [
            (self.temperature >= 0, f"temperature must be >= 0, not {self.temperature}"),
            (self.top_k >= 0, f"top-k must be >= 0, not {self.top_k}"),
            (0 < self.top_p <= 1, f"top-p must be in (0, 1], not {self.top_p}"),
            (0 <= self.min_p <= 1, f"min-p must be in [0, 1], not {self.min_p}"),
            (-2 <= self.presence_penalty <= 2, f"presence penalty must be in [-2, 2], not {self.presence_penalty}"),
            (self.repetition_penalty > 0, f"repetition penalty must be > 0, not {self.repetition_penalty}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def as_dict(self) -> dict:
        return asdict(self)


# Qwen3's recommended settings (model card, generation_config.json): thinking and non-thinking.
PRESETS = {
    "thinking": SamplingParams(temperature=0.6, top_k=20, top_p=0.95, min_p=0.0),
    "non-thinking": SamplingParams(temperature=0.7, top_k=20, top_p=0.8, min_p=0.0),
    "greedy": SamplingParams(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0),
}


def preset(name: str, **overrides) -> SamplingParams:
    if name not in PRESETS:
        raise UserError(f"unknown sampling preset {name!r}; presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def apply_penalties(
    logits: np.ndarray, params: SamplingParams, context: np.ndarray, generated: np.ndarray
) -> np.ndarray:
    """Repetition penalty on every token of prompt and output (positive logits divided, negative
    multiplied); presence penalty subtracted from tokens the output already holds."""
    if params.repetition_penalty == 1.0 and params.presence_penalty == 0.0:
        return logits
    logits = logits.astype(np.float32, copy=True)
    if params.repetition_penalty != 1.0 and len(context):
        seen = np.unique(context)
        values = logits[seen]
        logits[seen] = np.where(values > 0, values / params.repetition_penalty, values * params.repetition_penalty)
    if params.presence_penalty != 0.0 and len(generated):
        logits[np.unique(generated)] -= params.presence_penalty
    return logits


@dataclass
class Filtered:
    """The distribution a token is drawn from: candidate ids and their renormalised probabilities,
    most likely first; `probs_before` is the tempered distribution before the filters."""

    ids: np.ndarray
    probs: np.ndarray
    probs_before: np.ndarray  # over the whole vocabulary
    after_top_k: int
    after_top_p: int
    after_min_p: int


def most_likely(values: np.ndarray, n: int) -> np.ndarray:
    """The indices of the n largest values, largest first, equal values lower index first: the
    first n of a stable sort of -values, from a partition and a sort of only those n."""
    if n >= len(values):
        order = np.argsort(-values)  # a quarter of the time of a stable sort
        ranked = values[order]
        tied = ranked[1:] == ranked[:-1]
        if tied.any():  # equal values (equal logits, underflowed, banned): lower index first
            rank = np.concatenate([[0], np.cumsum(~tied)])  # equal values share a rank
            bits = len(values).bit_length()
            order = np.sort((rank << bits) | order) & ((1 << bits) - 1)  # by rank, then index
        return order
    edge = values[np.argpartition(-values, n - 1)[n - 1]]  # the n-th largest value
    above = np.flatnonzero(values > edge)
    ids = np.concatenate([above, np.flatnonzero(values == edge)[: n - len(above)]])  # ties at the edge: lowest ids
    return ids[np.argsort(-values[ids], kind="stable")]


def nucleus(probs: np.ndarray, top_p: float, total: float) -> np.ndarray:
    """The smallest most-likely-first prefix whose mass reaches top_p * total (at least one id).
    It is sought among the 64 most likely first, then among as many as the mass still missing
    needs at the least (every token further down is at most as likely as the last one taken),
    twice over: a flat distribution goes to a sort of the whole vocabulary in one step."""
    n = 64
    while True:
        ids = most_likely(probs, min(n, len(probs)))
        cumulative = np.cumsum(probs[ids]) / total
        if cumulative[-1] >= top_p or len(ids) == len(probs):
            return ids[: int(np.searchsorted(cumulative, top_p, side="left")) + 1]
        least = (top_p - cumulative[-1]) * total / max(probs[ids[-1]], np.finfo(probs.dtype).tiny)
        n = max(2 * n, 2 * int(min(len(probs), len(ids) + least)))
        if n > len(probs) // 4:
            n = len(probs)


def observers(*observe: Observer | None) -> Observer | None:
    """One observer that calls each of these in turn (None where there are none)."""
    present = [o for o in observe if o is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def each(token: int, logits: np.ndarray, dist: Filtered | None) -> None:
        for o in present:
            o(token, logits, dist)

    return each


def filter_distribution(logits: np.ndarray, params: SamplingParams) -> Filtered:
    """Temperature, then top-k, top-p and min-p, as transformers' logits warpers apply them."""
    logits = np.asarray(logits, dtype=np.float64)
    t = params.temperature if params.temperature > 0 else 1.0
    probs = softmax(logits / t)
    n = len(probs)
    if 0 < params.top_k < n:
        ids = most_likely(probs, params.top_k)
        after_k = len(ids)
        if params.top_p < 1.0:
            ids = ids[nucleus(probs[ids], params.top_p, probs[ids].sum())]
        after_p = len(ids)
    elif params.top_p < 1.0:
        ids = nucleus(probs, params.top_p, probs.sum())
        after_k, after_p = n, len(ids)
    elif params.min_p > 0.0:  # min-p alone: only its survivors need sorting (the filter below keeps them)
        above = np.flatnonzero(probs >= params.min_p * probs.max())
        ids = above[most_likely(probs[above], len(above))]
        after_k = after_p = n
    else:
        ids = most_likely(probs, n)  # nothing filtered: the draw still goes most likely first
        after_k = after_p = n
    kept = probs[ids]
    if params.min_p > 0.0:
        survive = kept >= params.min_p * kept[0]
        ids, kept = ids[survive], kept[survive]
    return Filtered(ids, kept / kept.sum(), probs, after_k, after_p, len(ids))


# Sees each step: the token drawn, the logits after penalties and bans, and the filtered
# distribution it was drawn from (None when greedy: temperature 0 has no distribution to draw from).
Observer = Callable[[int, np.ndarray, "Filtered | None"], None]


class Sampler:
    """Draws tokens with one seeded generator; remembers nothing but the generator's state."""

    def __init__(self, params: SamplingParams, observe: Observer | None = None, banned: Iterable[int] = ()):
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        self.observe = observe
        self.banned = np.array(sorted(set(banned)), dtype=np.int64)

    def sample(self, logits: np.ndarray, context=(), generated=(), force: int | None = None) -> int:
        """The next token; `force` replaces the draw (teacher forcing: the observer still sees this
        model's distribution, and the generator stays on the forced text)."""
        logits = apply_penalties(
            np.asarray(logits).reshape(-1),
            self.params,
            np.asarray(context, dtype=np.int64),
            np.asarray(generated, dtype=np.int64),
        )
        if len(self.banned):
            logits = logits.astype(np.float32, copy=True)
            logits[self.banned] = -np.inf
        if self.params.temperature == 0:
            token, dist = int(np.argmax(logits)), None
        else:
            dist = filter_distribution(logits, self.params)
            token = int(dist.ids[self.draw(dist.probs)])
        if force is not None:
            token = force
        if self.observe is not None:
            self.observe(token, logits, dist)
        return token

    def draw(self, probs: np.ndarray) -> int:
        """Inverse-CDF draw with one uniform number: reproducible and independent of NumPy's choice()."""
        u = self.rng.random()
        return min(int(np.searchsorted(np.cumsum(probs), u * probs.sum(), side="right")), len(probs) - 1)
