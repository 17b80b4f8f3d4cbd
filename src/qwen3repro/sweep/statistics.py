"""What one generation did: per-step distribution statistics, thinking length, diversity and repetition."""

from __future__ import annotations

import numpy as np

from qwen3repro.engine.logprobs import entropy
from qwen3repro.engine.sampler import Filtered


def think_tokens(tokens: list[int], open_id: int | None, close_id: int | None) -> int:
    """Generated tokens strictly inside <think> ... </think> (to the end when it never closes)."""
    inside, count = False, 0
    for t in tokens:
        if t == open_id:
            inside = True
        elif t == close_id:
            inside = False
        elif inside:
            count += 1
    return count


def distinct_n(tokens: list[int], n: int) -> float:
    """Distinct n-grams over all n-grams (Li et al. 2016): 1.0 when nothing repeats."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repeated_ngram_rate(tokens: list[int], n: int = 4) -> float:
    """Share of n-grams that already occurred earlier in the same text."""
    seen, repeats, total = set(), 0, 0
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        repeats += gram in seen
        seen.add(gram)
        total += 1
    return repeats / total if total else float("nan")


class StepStats:
    """Per-step statistics of the distributions a generation drew from."""

    def __init__(self):
        self.entropy, self.chosen_prob = [], []
        self.after_top_k, self.after_top_p, self.after_min_p = [], [], []

    def __call__(self, token: int, logits: np.ndarray, dist: Filtered | None) -> None:
        if dist is None:  # temperature 0: all the mass on the argmax
            self.entropy.append(0.0)
            self.chosen_prob.append(1.0)
            for counts in (self.after_top_k, self.after_top_p, self.after_min_p):
                counts.append(1)
        else:
            self.entropy.append(entropy(dist.probs_before))
            self.chosen_prob.append(float(dist.probs_before[token]))
            self.after_top_k.append(dist.after_top_k)
            self.after_top_p.append(dist.after_top_p)
            self.after_min_p.append(dist.after_min_p)

    def summary(self) -> dict:
        mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
        return {
            "mean_entropy": mean(self.entropy),
            "mean_chosen_prob": mean(self.chosen_prob),
            "mean_after_top_k": mean(self.after_top_k),
            "mean_after_top_p": mean(self.after_top_p),
            "mean_after_min_p": mean(self.after_min_p),
        }
