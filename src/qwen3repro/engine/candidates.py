"""The top candidates at every sampled token, with probabilities and the nucleus cut, as llama.cpp's
`n_probs` reports them: what chat --show-probs prints and generate --n-probs puts in its JSON."""

from __future__ import annotations

import numpy as np

from qwen3repro.engine.logprobs import softmax
from qwen3repro.engine.sampler import Filtered, most_likely


class Candidates:
    """An observer (see engine.sampler.Observer) keeping the top-n candidates of every step:
    probability after temperature (p), after the filters (p_nucleus, 0 where cut), and the
    nucleus' size, mass and cutoff. Greedy steps: probabilities at temperature 1, the argmax kept."""

    def __init__(self, n: int, decode):
        self.n, self.decode, self.steps = n, decode, []

    def __call__(self, token: int, logits: np.ndarray, dist: Filtered | None) -> None:
        if dist is None:
            probs, kept = softmax(np.asarray(logits, dtype=np.float64)), {token: 1.0}
        else:
            probs, kept = dist.probs_before, dict(zip(dist.ids.tolist(), dist.probs.tolist()))
        top = most_likely(probs, min(self.n, len(probs)))
        nucleus = np.fromiter(kept, dtype=np.int64)
        self.steps.append(
            {
                "id": token,
                "piece": self.decode([token]),
                "p": float(probs[token]),
                "nucleus": {
                    "size": len(nucleus),
                    "mass": float(probs[nucleus].sum()),
                    "cutoff": float(probs[nucleus].min()),
                },
                "top": [
                    {"id": i, "piece": self.decode([i]), "p": float(probs[i]), "p_nucleus": kept.get(i, 0.0)}
                    for i in top.tolist()
                ],
            }
        )


def format_step(step: dict) -> str:
    """One line per token: the token and its probability, the nucleus, then the candidates
    (a * marks those inside the nucleus)."""
    n = step["nucleus"]
    candidates = "  ".join(f"{c['piece']!r:>10} {c['p']:.4f}{'*' if c['p_nucleus'] > 0 else ' '}" for c in step["top"])
    return (
        f"{step['piece']!r:>12} p={step['p']:.4f} | nucleus {n['size']} tok, mass {n['mass']:.4f}, "
        f"cutoff {n['cutoff']:.4f} | {candidates}"
    )
