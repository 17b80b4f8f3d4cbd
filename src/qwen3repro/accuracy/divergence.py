"""How far one model's next-token distributions are from a reference's, in llama.cpp's statistics.

llama-perplexity --kl-divergence compares a quantized model (Q) with a base model over the scored
positions of the perplexity chunks. Per position it takes KL(base || Q), the probability each
model gives the actual next token (Δp = p_Q - p_base), both NLLs, and whether the two argmaxes
agree; at the end it prints means with their standard errors, percentiles, and the PPL ratio with
the correlation of the two ln PPLs. `Divergence` accumulates the same sums chunk by chunk, so
nothing but one chunk's logits is ever held, and `summary()` computes what llama.cpp prints.

llama.cpp stores the base log-probabilities as 16-bit integers (logits more than 16 below the top
clamped, the rest rounded to 65,536 levels) and drops terms with log p_base <= -16 from the KL sum.
`compare` computes both: by default both distributions are exact float64 log-softmaxes of the
float32 logits, so KL(F32 || F32) is exactly 0; with base="llama-perplexity" the base is read back
as llama-perplexity reads its --kl-divergence-base file, so that the figures are the ones it prints
(on a trained model the two differ by a few percent of the mean KLD: the terms below e^-16 and the
rounding of the stored levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qwen3repro.engine.logprobs import log_softmax

# Positions compared at a time: a few rows keep the float64 working arrays in the CPU's cache (at 64
# rows they are 78 MB each, and the comparison runs at memory speed). Every figure is per row, so
# the block size changes no bit (tests/test_divergence.py).
ROWS = 4


@dataclass
class Positions:
    """Per-position comparison of [n, vocab] logits; NLL and Δp only where a target is given."""

    kld: np.ndarray
    same_top: np.ndarray
    max_abs_dlogit: np.ndarray
    sum_abs_dlogit: np.ndarray
    nll: np.ndarray | None = None
    nll_base: np.ndarray | None = None

    @property
    def p_diff(self) -> np.ndarray:
        return np.exp(-self.nll) - np.exp(-self.nll_base)


def llama_perplexity_base(base_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The base log-probabilities as llama-perplexity writes them to its --kl-divergence-base file
    and reads them back (float32 arithmetic, as its C++), and the mask of the terms its KL sum keeps."""
    logits = base_logits.astype(np.float32)
    max_logit = logits.max(axis=-1, keepdims=True)
    min_logit = np.maximum(logits.min(axis=-1, keepdims=True), max_logit - np.float32(16))
    sum_exp = np.exp(logits - max_logit).sum(axis=-1, keepdims=True, dtype=np.float64)
    log_sum_exp = np.log(sum_exp).astype(np.float32)
    min_log_prob = min_logit - max_logit - log_sum_exp
    scale = (max_logit - min_logit) / np.float32(65535)
    with np.errstate(divide="ignore", invalid="ignore"):
        levels = np.where(logits > min_logit, np.rint((np.float32(1) / scale) * (logits - min_logit)), 0)
    stored = scale * levels.astype(np.float32) + min_log_prob
    return stored.astype(np.float64), stored > np.float32(-16)


class BaseDistribution:
    """A base model's next-token distributions over [n, vocab] logits, prepared once to compare any
    number of models with (the perplexity and task stages compare every file type with one F32
    pass). `base`: "exact", or "llama-perplexity" (as llama-perplexity stores it; the module's note).
    Held in blocks of ROWS positions: the float64 log-probabilities and probabilities, 16 bytes a
    logit, so a caller bounds how many positions it prepares at once."""

    def __init__(self, base_logits: np.ndarray, base: str = "exact"):
        self.logits, self.base, self.blocks = base_logits, base, []
        for first in range(0, len(base_logits), ROWS):
            rows = base_logits[first : first + ROWS]
            if base == "llama-perplexity":
                log_probs, kept = llama_perplexity_base(rows)
                top = log_probs.argmax(axis=-1)
            else:
                log_probs, kept, top = log_softmax(rows), None, rows.argmax(axis=-1)
            self.blocks.append((log_probs, np.exp(log_probs), kept, top))

    def compare(self, logits: np.ndarray, targets: np.ndarray | None = None, dlogits: bool = True) -> Positions:
        """KL(base || Q), argmax agreement and |Δlogit| per position (zeros where `dlogits` is false:
        llama-perplexity's statistics do not read them); with `targets` (the next token at each
        position) also both NLLs."""
        if self.logits.shape != logits.shape:
            raise ValueError(f"logits of shape {logits.shape} against base logits of shape {self.logits.shape}")
        parts = []
        for first, (base_lp, base_p, kept, base_top) in zip(range(0, len(logits), ROWS), self.blocks):
            rows = slice(first, first + ROWS)
            lp = log_softmax(logits[rows])
            terms = base_p * (base_lp - lp)
            kld = (terms if kept is None else np.where(kept, terms, 0.0)).sum(axis=-1)
            if dlogits:
                diff = np.abs(logits[rows].astype(np.float64) - self.logits[rows])
                max_abs, sum_abs = diff.max(axis=-1), diff.sum(axis=-1)
            else:
                max_abs = sum_abs = np.zeros(len(lp))
            part = {
                "kld": kld,
                "same_top": base_top == logits[rows].argmax(axis=-1),
                "max_abs_dlogit": max_abs,
                "sum_abs_dlogit": sum_abs,
            }
            if targets is not None:
                index = (np.arange(len(lp)), targets[rows])
                part["nll"], part["nll_base"] = -lp[index], -base_lp[index]
            parts.append(part)
        return Positions(**{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def compare(
    base_logits: np.ndarray, logits: np.ndarray, targets: np.ndarray | None = None, base: str = "exact"
) -> Positions:
    """KL(base || Q), argmax agreement and |Δlogit| per position; with `targets` (the next token at
    each position) also both NLLs. `base`: "exact", or "llama-perplexity" (the base distribution as
    llama-perplexity stores it, see the module's note)."""
    if base_logits.shape != logits.shape:
        raise ValueError(f"logits of shape {logits.shape} against base logits of shape {base_logits.shape}")
    return BaseDistribution(base_logits, base).compare(logits, targets)


def mean_and_error(total: float, total2: float, count: int) -> tuple[float, float]:
    """Mean and its standard error from a sum and a sum of squares, as llama.cpp computes them
    (no error below 11 values)."""
    if count < 1:
        return 0.0, 0.0
    mean = total / count
    variance = total2 / count - mean * mean
    return mean, math.sqrt(variance / (count - 1)) if variance > 0 and count > 10 else 0.0


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """llama.cpp's percentile: linear interpolation at fraction * (n - 1)."""
    if fraction <= 0:
        return float(sorted_values[0])
    if fraction >= 1:
        return float(sorted_values[-1])
    p = fraction * (len(sorted_values) - 1)
    i = int(p)
    p -= i
    return float((1 - p) * sorted_values[i] + p * sorted_values[min(i + 1, len(sorted_values) - 1)])


def median(sorted_values: np.ndarray) -> float:
    n = len(sorted_values)
    return float(0.5 * (sorted_values[n // 2] + sorted_values[n // 2 - 1]) if n % 2 == 0 else sorted_values[n // 2])


KLD_PERCENTILES = {
    "p99_9": 0.999,
    "p99": 0.99,
    "p95": 0.95,
    "p90": 0.90,
    "p10": 0.10,
    "p5": 0.05,
    "p1": 0.01,
    "p0_1": 0.001,
}
DP_PERCENTILES = {
    "p99_9": 0.999,
    "p99": 0.99,
    "p95": 0.95,
    "p90": 0.90,
    "p75": 0.75,
    "p25": 0.25,
    "p10": 0.10,
    "p5": 0.05,
    "p1": 0.01,
    "p0_1": 0.001,
}


@dataclass
class Divergence:
    """Running sums over scored positions, exactly llama.cpp's kl_divergence_result, plus the
    per-position KLD and Δp values (4 bytes each per scored token) for the percentiles."""

    sum_nll: float = 0.0
    sum_nll2: float = 0.0
    sum_nll_base: float = 0.0
    sum_nll_base2: float = 0.0
    sum_nll_nll_base: float = 0.0
    sum_kld: float = 0.0
    sum_kld2: float = 0.0
    sum_p_diff: float = 0.0
    sum_p_diff2: float = 0.0
    sum_p_diff4: float = 0.0
    n_same_top: int = 0
    count: int = 0
    kld_values: list[np.ndarray] = field(default_factory=list)
    p_diff_values: list[np.ndarray] = field(default_factory=list)

    def add(self, positions: Positions) -> None:
        nll, nll_base, kld, p_diff = positions.nll, positions.nll_base, positions.kld, positions.p_diff
        self.sum_nll += float(nll.sum())
        self.sum_nll2 += float((nll * nll).sum())
        self.sum_nll_base += float(nll_base.sum())
        self.sum_nll_base2 += float((nll_base * nll_base).sum())
        self.sum_nll_nll_base += float((nll * nll_base).sum())
        self.sum_kld += float(kld.sum())
        self.sum_kld2 += float((kld * kld).sum())
        self.sum_p_diff += float(p_diff.sum())
        self.sum_p_diff2 += float((p_diff**2).sum())
        self.sum_p_diff4 += float((p_diff**4).sum())
        self.n_same_top += int(positions.same_top.sum())
        self.count += len(kld)
        self.kld_values.append(kld.astype(np.float32))
        self.p_diff_values.append(p_diff.astype(np.float32))

    def covariance(self) -> float:
        """Covariance of the two mean NLLs (llama.cpp: none below 10 values)."""
        n = self.count
        if n < 10:
            return 0.0
        return (self.sum_nll_nll_base / n - (self.sum_nll / n) * (self.sum_nll_base / n)) / (n - 1)

    def summary(self) -> dict:
        """Everything llama-perplexity --kl-divergence prints at the end; probabilities as fractions."""
        if self.count < 2:
            raise ValueError("KL-divergence statistics need at least 2 scored positions")
        ln_ppl, ln_ppl_err = mean_and_error(self.sum_nll, self.sum_nll2, self.count)
        ln_base, ln_base_err = mean_and_error(self.sum_nll_base, self.sum_nll_base2, self.count)
        cov = self.covariance()
        ppl, ppl_base = math.exp(ln_ppl), math.exp(ln_base)
        ratio_ln = ln_ppl - ln_base
        ratio_ln_err = math.sqrt(max(ln_ppl_err**2 + ln_base_err**2 - 2 * cov, 0.0))
        ppl_err, ppl_base_err = ppl * ln_ppl_err, ppl_base * ln_base_err
        diff_err = math.sqrt(max(ppl_err**2 + ppl_base_err**2 - 2 * ppl * ppl_base * cov, 0.0))
        kld_mean, kld_err = mean_and_error(self.sum_kld, self.sum_kld2, self.count)
        dp_mean, dp_err = mean_and_error(self.sum_p_diff, self.sum_p_diff2, self.count)
        mse, mse_err = mean_and_error(self.sum_p_diff2, self.sum_p_diff4, self.count)
        rms = math.sqrt(mse)
        same = self.n_same_top / self.count
        kld = np.sort(np.concatenate(self.kld_values))
        dp = np.sort(np.concatenate(self.p_diff_values))
        return {
            "count": self.count,
            "ppl": ppl,
            "ppl_error": ppl_err,
            "ppl_base": ppl_base,
            "ppl_base_error": ppl_base_err,
            "ln_ppl_correlation": cov / (ln_ppl_err * ln_base_err) if ln_ppl_err > 0 and ln_base_err > 0 else None,
            "ln_ppl_ratio": ratio_ln,
            "ln_ppl_ratio_error": ratio_ln_err,
            "ppl_ratio": math.exp(ratio_ln),
            "ppl_ratio_error": math.exp(ratio_ln) * ratio_ln_err,
            "ppl_diff": ppl - ppl_base,
            "ppl_diff_error": diff_err,
            "kld_mean": kld_mean,
            "kld_mean_error": kld_err,
            "kld_max": float(kld[-1]),
            **{f"kld_{k}": percentile(kld, f) for k, f in KLD_PERCENTILES.items() if f > 0.5},
            "kld_median": median(kld),
            **{f"kld_{k}": percentile(kld, f) for k, f in KLD_PERCENTILES.items() if f < 0.5},
            "kld_min": float(kld[0]),
            "dp_mean": dp_mean,
            "dp_mean_error": dp_err,
            "dp_max": float(dp[-1]),
            **{f"dp_{k}": percentile(dp, f) for k, f in DP_PERCENTILES.items() if f > 0.5},
            "dp_median": median(dp),
            **{f"dp_{k}": percentile(dp, f) for k, f in DP_PERCENTILES.items() if f < 0.5},
            "dp_min": float(dp[0]),
            "rms_dp": rms,
            "rms_dp_error": 0.5 / rms * mse_err if rms > 0 else 0.0,
            "same_top_p": same,
            "same_top_p_error": math.sqrt(same * (1 - same) / (self.count - 1)),
        }


def report(s: dict) -> str:
    """The summary in llama-perplexity's layout, for logs."""
    pct = lambda v: 100.0 * v  # noqa: E731
    corr = "n/a" if s["ln_ppl_correlation"] is None else f"{pct(s['ln_ppl_correlation']):6.2f}%"
    lines = [
        "====== Perplexity statistics ======",
        f"Mean PPL(Q)                   : {s['ppl']:10.6f} ± {s['ppl_error']:10.6f}",
        f"Mean PPL(base)                : {s['ppl_base']:10.6f} ± {s['ppl_base_error']:10.6f}",
        f"Cor(ln(PPL(Q)), ln(PPL(base))): {corr}",
        f"Mean ln(PPL(Q)/PPL(base))     : {s['ln_ppl_ratio']:10.6f} ± {s['ln_ppl_ratio_error']:10.6f}",
        f"Mean PPL(Q)/PPL(base)         : {s['ppl_ratio']:10.6f} ± {s['ppl_ratio_error']:10.6f}",
        f"Mean PPL(Q)-PPL(base)         : {s['ppl_diff']:10.6f} ± {s['ppl_diff_error']:10.6f}",
        "",
        "====== KL divergence statistics ======",
        f"Mean    KLD: {s['kld_mean']:10.6f} ± {s['kld_mean_error']:10.6f}",
        f"Maximum KLD: {s['kld_max']:10.6f}",
        f"99.9%   KLD: {s['kld_p99_9']:10.6f}",
        f"99.0%   KLD: {s['kld_p99']:10.6f}",
        f"Median  KLD: {s['kld_median']:10.6f}",
        f"Minimum KLD: {s['kld_min']:10.6f}",
        "",
        "====== Token probability statistics ======",
        f"Mean    Δp: {pct(s['dp_mean']):6.3f} ± {pct(s['dp_mean_error']):5.3f} %",
        f"Maximum Δp: {pct(s['dp_max']):6.3f}%",
        f"Median  Δp: {pct(s['dp_median']):6.3f}%",
        f"Minimum Δp: {pct(s['dp_min']):6.3f}%",
        f"RMS Δp    : {pct(s['rms_dp']):6.3f} ± {pct(s['rms_dp_error']):5.3f} %",
        f"Same top p: {pct(s['same_top_p']):6.3f} ± {pct(s['same_top_p_error']):5.3f} %",
    ]
    return "\n".join(lines)
