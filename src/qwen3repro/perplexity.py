"""Perplexity computed exactly as llama.cpp's llama-perplexity computes it, so the numbers compare.

The whole text is tokenized once and cut into non-overlapping chunks of n_ctx tokens (a remainder
shorter than n_ctx is dropped). Each chunk is evaluated from an empty cache, and only its second
half is scored: the logits at positions n_ctx/2 .. n_ctx-2 predict the tokens after them, so
every scored token has at least n_ctx/2 tokens of context. Qwen's tokenizer adds no BOS, so none
is put in front. PPL = exp(mean NLL), with llama.cpp's standard error
PPL * sqrt((mean(NLL^2) - mean(NLL)^2) / (count - 1)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .errors import UserError


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] per row, in float64."""
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
    return log_z - logits[np.arange(len(targets)), targets]


def chunks(tokens: np.ndarray, n_ctx: int) -> Iterator[np.ndarray]:
    if n_ctx < 4:
        raise UserError(f"n_ctx must be at least 4, not {n_ctx}")
    if len(tokens) < 2 * n_ctx:
        raise UserError(f"the text has {len(tokens)} tokens; perplexity with a context of {n_ctx} needs at least "
                        f"{2 * n_ctx}")
    for start in range(0, len(tokens) - n_ctx + 1, n_ctx):
        yield tokens[start : start + n_ctx]


@dataclass
class Perplexity:
    n_ctx: int
    nll_sum: float = 0.0
    nll2_sum: float = 0.0
    count: int = 0
    chunk_ppl: list[float] = field(default_factory=list)  # running estimate after each chunk, as printed

    def add_chunk(self, logits: np.ndarray, chunk: np.ndarray) -> np.ndarray:
        """Score one chunk from its [n_ctx, vocab] logits; returns the NLL of its scored tokens."""
        first = self.n_ctx // 2
        nll = token_nll(logits[first : self.n_ctx - 1], chunk[first + 1 :])
        self.nll_sum += float(nll.sum())
        self.nll2_sum += float((nll * nll).sum())
        self.count += len(nll)
        self.chunk_ppl.append(math.exp(self.nll_sum / self.count))
        return nll

    @property
    def ppl(self) -> float:
        return math.exp(self.nll_sum / self.count)

    @property
    def ppl_error(self) -> float:
        mean = self.nll_sum / self.count
        variance = self.nll2_sum / self.count - mean * mean
        return self.ppl * math.sqrt(variance / (self.count - 1)) if variance > 0 and self.count > 1 else 0.0

    def as_dict(self) -> dict:
        return {"n_ctx": self.n_ctx, "n_chunks": len(self.chunk_ppl), "n_scored_tokens": self.count,
                "mean_nll": self.nll_sum / self.count, "ppl": self.ppl, "ppl_error": self.ppl_error,
                "chunk_ppl": self.chunk_ppl}


def perplexity(logits_of: Callable[[np.ndarray], np.ndarray], tokens: np.ndarray, n_ctx: int = 512,
               progress: Callable[[int, int], None] | None = None) -> Perplexity:
    """llama-perplexity's PPL of `tokens`; `logits_of(chunk)` returns [n_ctx, vocab] logits from an empty cache."""
    tokens = np.asarray(tokens, dtype=np.int64)
    result = Perplexity(n_ctx)
    all_chunks = list(chunks(tokens, n_ctx))
    for i, chunk in enumerate(all_chunks):
        result.add_chunk(logits_of(chunk), chunk)
        if progress:
            progress(i + 1, len(all_chunks))
    return result


def engine_logits(model) -> Callable[[np.ndarray], np.ndarray]:
    """The NumPy engine's logits for a chunk, from position 0 (the cache is simply overwritten)."""
    return lambda chunk: model.forward(chunk, start=0)


def llama_cpp_logits(llm) -> Callable[[np.ndarray], np.ndarray]:
    """llama.cpp's logits for a chunk (a llama_cpp.Llama made with logits_all=True)."""
    def logits_of(chunk: np.ndarray) -> np.ndarray:
        llm.reset()
        llm.eval(chunk.tolist())
        return np.array(llm.scores[: len(chunk)], dtype=np.float32)

    return logits_of
