"""Perplexity computed exactly as llama.cpp's llama-perplexity computes it, so the numbers compare.

Measured by two runtimes on the same chunks, each against the F32 file in the same runtime: the NumPy
engine dequantizes the weights and computes in float32, so its KL-divergence is the loss in the
weights alone; llama.cpp also quantizes the activations inside its quantized dot products (to Q8_0
or Q8_K), so its KL-divergence is what a llama.cpp user gets, and the figure llama.cpp's published
tables quote. The difference is the kernels' own share.

The whole text is tokenized once and cut into non-overlapping chunks of n_ctx tokens (a remainder
shorter than n_ctx is dropped). Each chunk is evaluated from an empty cache, and only its second
half is scored: the logits at positions n_ctx/2 .. n_ctx-2 predict the tokens after them, so
every scored token has at least n_ctx/2 tokens of context. Qwen's tokenizer adds no BOS, so none
is put in front. PPL = exp(mean NLL), with llama.cpp's standard error
PPL * sqrt((mean(NLL^2) - mean(NLL)^2) / (count - 1)).
"""

from __future__ import annotations

import gc
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from qwen3repro.accuracy.divergence import Divergence, compare
from qwen3repro.errors import UserError
from qwen3repro.fsutil import write_table
from qwen3repro.pipeline.progress import progress_bar

log = logging.getLogger(__name__)


def chunks(tokens: np.ndarray, n_ctx: int, max_chunks: int | None = None) -> Iterator[np.ndarray]:
    """The non-overlapping n_ctx chunks llama-perplexity evaluates (its --chunks limits how many)."""
    if n_ctx < 4:
        raise UserError(f"n_ctx must be at least 4, not {n_ctx}")
    if len(tokens) < 2 * n_ctx:
        raise UserError(
            f"the text has {len(tokens)} tokens; perplexity with a context of {n_ctx} needs at least {2 * n_ctx}"
        )
    for i in range(chunk_count(len(tokens), n_ctx, max_chunks)):
        yield tokens[i * n_ctx : (i + 1) * n_ctx]


def chunk_count(n_tokens: int, n_ctx: int, max_chunks: int | None) -> int:
    """The chunks scored: the text's whole n_ctx windows, at most `max_chunks` (the stage's work,
    which the cost model reads too)."""
    return n_tokens // n_ctx if max_chunks is None else min(max_chunks, n_tokens // n_ctx)


# Logits of a chunk's scored positions: logits_of(chunk, first) -> [len(chunk) - first, vocab],
# positions first .. len(chunk) - 1 evaluated from an empty cache (the last row is not scored).
LogitsOf = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class Perplexity:
    n_ctx: int
    nll_sum: float = 0.0
    nll2_sum: float = 0.0
    count: int = 0
    chunk_ppl: list[float] = field(default_factory=list)  # running estimate after each chunk, as printed

    def add_nll(self, nll: np.ndarray) -> np.ndarray:
        """Count one chunk's scored NLLs."""
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
        return {
            "n_ctx": self.n_ctx,
            "n_chunks": len(self.chunk_ppl),
            "n_scored_tokens": self.count,
            "mean_nll": self.nll_sum / self.count,
            "ppl": self.ppl,
            "ppl_error": self.ppl_error,
            "chunk_ppl": self.chunk_ppl,
        }


def score_chunks(
    logits_of: LogitsOf,
    tokens: np.ndarray,
    n_ctx: int = 512,
    max_chunks: int | None = None,
    base_logits_of: LogitsOf | None = None,
    description: str = "perplexity chunks",
    base: str = "exact",
) -> tuple[Perplexity, Divergence]:
    """llama-perplexity's PPL of `tokens` and, in the same pass, its --kl-divergence statistics
    against `base_logits_of` (against itself when there is none). Each chunk's logits are compared
    and dropped, so only one chunk's are ever held."""
    tokens = np.asarray(tokens, dtype=np.int64)
    ppl, kld = Perplexity(n_ctx), Divergence()
    first = n_ctx // 2
    for i, chunk in enumerate(progress_bar(list(chunks(tokens, n_ctx, max_chunks)), description)):
        logits = logits_of(chunk, first)[:-1]  # positions first .. n_ctx-2 predict the tokens after them
        base_logits = logits if base_logits_of is None else base_logits_of(chunk, first)[:-1]
        positions = compare(base_logits, logits, chunk[first + 1 :], base)
        ppl.add_nll(positions.nll)
        kld.add(positions)
        log.info("chunk %d: PPL %.4f", i + 1, ppl.chunk_ppl[-1])
    return ppl, kld


def engine_logits(model) -> LogitsOf:
    """The NumPy engine's logits from position `first` on (the cache is simply overwritten)."""
    return lambda chunk, first: model.forward(np.asarray(chunk), start=0, logits_from=first)


def llama_cpp_model(gguf: Path | str, n_ctx: int, threads: int = 1):
    """llama.cpp on a GGUF as llama-perplexity runs it: one batch per chunk, all logits kept, an F32
    KV cache (the default F16 cache would add its own rounding to the loss being measured), and
    no flash attention (as `-fa off`), so that the figures are the binary's with the same flags."""
    from qwen3repro import llamacpp

    if not Path(gguf).is_file():
        raise UserError(f"{gguf}: cannot open, no such file")
    return llamacpp.llama(
        model_path=str(gguf),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=threads,
        logits_all=True,
        type_k=GGML_TYPE_F32,
        type_v=GGML_TYPE_F32,
        flash_attn=False,
        verbose=False,
    )


GGML_TYPE_F32 = 0
RUNTIMES = ("numpy", "llama.cpp")


def llama_cpp_logits(llm) -> LogitsOf:
    """llama.cpp's logits (a llama_cpp.Llama made with logits_all=True)."""

    def logits_of(chunk: np.ndarray, first: int) -> np.ndarray:
        llm.reset()
        llm.eval(chunk.tolist())
        return np.array(llm.scores[first : len(chunk)], dtype=np.float32)

    return logits_of


def perplexity_and_kld(
    gguf: Path | str,
    base_gguf: Path | str,
    text: str,
    n_ctx: int = 512,
    max_chunks: int | None = None,
    runtimes: tuple[str, ...] = ("numpy",),
    threads: int = 1,
    low_memory: bool = False,
) -> dict:
    """PPL of `text` on `gguf` and KL-divergence against `base_gguf` on the same chunks: the NumPy
    engine's (`perplexity`, `kld`) and, with "llama.cpp" in `runtimes`, llama.cpp's (`llama_cpp`).
    `low_memory` streams both files' weights a layer at a time (engine/weights.py): the same figures."""
    from qwen3repro.engine.qwen3 import Qwen3
    from qwen3repro.engine.tokenizer import Tokenizer

    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown or "numpy" not in runtimes:
        raise UserError(f"perplexity runtimes: {list(runtimes)}; numpy and optionally llama.cpp")
    model = Qwen3(gguf, n_ctx=n_ctx, low_memory=low_memory)
    same_file = Path(gguf).resolve() == Path(base_gguf).resolve()
    base = model if same_file else Qwen3(base_gguf, n_ctx=n_ctx, low_memory=low_memory)
    log.info("engine weights: %s", "streamed from the files a layer at a time" if low_memory else "held in float32")
    tokens = np.array(Tokenizer.from_gguf(model.file).encode(text, parse_special=False), dtype=np.int64)
    if base.config.vocab_size != model.config.vocab_size:
        raise UserError(
            f"{base_gguf}: vocabulary of {base.config.vocab_size} tokens, {gguf} has {model.config.vocab_size}"
        )
    log.info("%d tokens; %d chunks of %d", len(tokens), len(tokens) // n_ctx, n_ctx)
    name = Path(gguf).stem  # in the bars' labels: two jobs may draw on one terminal
    ppl, kld = score_chunks(
        engine_logits(model),
        tokens,
        n_ctx,
        max_chunks,
        None if same_file else engine_logits(base),
        f"{name}: perplexity chunks (NumPy)",
    )
    result = {"n_tokens": len(tokens), "perplexity": ppl.as_dict(), "kld": kld.summary()}
    if "llama.cpp" in runtimes:
        del model, base  # the engine's float32 weights, before llama.cpp maps the files
        gc.collect()
        llm = llama_cpp_model(gguf, n_ctx, threads)
        llm_base = llm if same_file else llama_cpp_model(base_gguf, n_ctx, threads)
        log.info("llama.cpp on the same chunks")
        ppl, kld = score_chunks(
            llama_cpp_logits(llm),
            tokens,
            n_ctx,
            max_chunks,
            None if same_file else llama_cpp_logits(llm_base),
            f"{name}: perplexity chunks (llama.cpp)",
            base="llama-perplexity",  # its figures as llama-perplexity prints them, 16-bit base and all
        )
        result["llama_cpp"] = {"perplexity": ppl.as_dict(), "kld": kld.summary()}
    return result


TABLE_KLD = [
    "kld_mean",
    "kld_mean_error",
    "kld_max",
    "kld_p99_9",
    "kld_p99",
    "kld_median",
    "dp_mean",
    "rms_dp",
    "rms_dp_error",
    "same_top_p",
    "same_top_p_error",
    "ppl_ratio",
    "ppl_ratio_error",
    "ln_ppl_correlation",
]


def write_perplexity_table(parts: list[str], out: Path | str) -> str:
    """One model's perplexity and KL-divergence results, a row per file type."""
    rows = []
    for part in parts:
        r = json.loads(Path(part).read_text("utf-8"))
        p = r["perplexity"]
        rows.append(
            {
                "model": r["model"],
                "type": r["type"],
                "ppl": p["ppl"],
                "ppl_error": p["ppl_error"],
                "n_chunks": p["n_chunks"],
                "n_ctx": p["n_ctx"],
                "n_scored_tokens": p["n_scored_tokens"],
                **{k: r["kld"][k] for k in TABLE_KLD},
                **_llama_cpp_columns(r),
            }
        )
    return write_table(rows, out)


def _llama_cpp_columns(r: dict) -> dict:
    """llama.cpp's figures beside the engine's (llama_cpp_*), and the kernels' share of the mean KLD."""
    if "llama_cpp" not in r:
        return {}
    p, k = r["llama_cpp"]["perplexity"], r["llama_cpp"]["kld"]
    columns = {"llama_cpp_ppl": p["ppl"], "llama_cpp_ppl_error": p["ppl_error"]}
    columns |= {f"llama_cpp_{key}": k[key] for key in TABLE_KLD}
    columns["kernel_kld_mean"] = k["kld_mean"] - r["kld"]["kld_mean"]
    return columns
