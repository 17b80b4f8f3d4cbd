"""The perplexity stage as the pipeline runs it: the F32 file's logits computed once per runtime and
chunk, and every file type compared with them.

llama-perplexity --kl-divergence saves the base's log-probabilities once (--kl-divergence-base) and
reads them back for each quantized file; the NumPy engine's exact base is float64, 1.2 MB a
position at Qwen3's vocabulary, too much to keep for a whole text. So the text's chunks are split
into `parts` contiguous ranges, one job per runtime and range (a cluster runs them side by side):
each job evaluates F32 on a few chunks at a time, prepares its distributions once
(divergence.BaseDistribution), runs every file type on the same chunks, and keeps per scored token
only what llama-perplexity's statistics are made of (NLL, the base's NLL, KLD, same top token).
The gather replays those tokens chunk by chunk, in the text's order, into `Perplexity` and
`Divergence`: the figures are bit for bit those of one job scoring the whole text
(`perplexity.perplexity_and_kld`, which the CLI runs).
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import numpy as np

from qwen3repro.accuracy.divergence import BaseDistribution, Divergence, Positions, report
from qwen3repro.accuracy.perplexity import (
    Perplexity,
    chunks,
    engine_logits,
    llama_cpp_logits,
    llama_cpp_model,
)
from qwen3repro.errors import UserError
from qwen3repro.fsutil import staged_file, write_json_atomic

log = logging.getLogger(__name__)

# Chunks whose base distributions are held at once: at Qwen3's vocabulary a chunk of 512 is 155 MB
# of float32 logits and 620 MB of float64 log-probabilities and probabilities. Each file type is
# loaded once per group.
GROUP = 4
KEPT = ("nll", "nll_base", "kld", "same_top")  # what Perplexity and Divergence read of a position


def part_range(n: int, part: int, parts: int) -> range:
    """The chunks (or items) of part `part` of `parts`: contiguous, sizes differing by at most one."""
    if not 0 <= part < parts:
        raise UserError(f"part {part} of {parts}: parts are numbered 0 to {parts - 1}")
    return range(part * n // parts, (part + 1) * n // parts)


def largest_part(n: int, parts: int) -> int:
    """The most chunks (or items) one part job gets."""
    return max(len(part_range(n, k, parts)) for k in range(parts))


def open_logits(gguf: Path | str, runtime: str, n_ctx: int, threads: int, low_memory: bool):
    """One file's logits in one runtime, as `perplexity_and_kld` computes them."""
    if runtime == "numpy":
        from qwen3repro.engine.qwen3 import Qwen3

        return engine_logits(Qwen3(gguf, n_ctx=n_ctx, low_memory=low_memory))
    return llama_cpp_logits(llama_cpp_model(gguf, n_ctx, threads))


def corpus_tokens(base_gguf: Path | str, text: str) -> np.ndarray:
    """The text tokenized by the F32 file's tokenizer (every type of a model has the same one)."""
    from qwen3repro.engine.tokenizer import Tokenizer
    from qwen3repro.gguf_file import GGUFFile

    return np.array(Tokenizer.from_gguf(GGUFFile(base_gguf)).encode(text, parse_special=False), dtype=np.int64)


def score_part(
    ggufs: dict[str, Path | str],
    base_gguf: Path | str,
    text: str,
    settings: dict,
    runtime: str,
    part: int,
    parts: int,
    threads: int = 1,
    low_memory: bool = False,
) -> dict[str, np.ndarray]:
    """Per file type (`ggufs`: type -> file) and chunk of this part, the scored positions' NLL, the
    base's NLL, KLD and same-top flag, as arrays named "<type>/<chunk>/<what>"; and the text's size."""
    n_ctx, first = settings["n_ctx"], settings["n_ctx"] // 2
    base_mode = "llama-perplexity" if runtime == "llama.cpp" else "exact"
    tokens = corpus_tokens(base_gguf, text)
    every = list(chunks(tokens, n_ctx, settings["chunks"]))
    mine = list(part_range(len(every), part, parts))
    log.info("%s, part %d of %d: chunks %s of %d", runtime, part + 1, parts, _span(mine), len(every))
    out = {"n_tokens": np.array(len(tokens)), "n_chunks": np.array(len(every))}
    for start in range(0, len(mine), GROUP):
        group = mine[start : start + GROUP]
        base_of = open_logits(base_gguf, runtime, n_ctx, threads, low_memory)
        base_logits = [base_of(every[i], first)[:-1] for i in group]
        del base_of
        prepared = [BaseDistribution(b, base_mode) for b in base_logits]
        for file_type, gguf in ggufs.items():
            same = Path(gguf).resolve() == Path(base_gguf).resolve()
            logits_of = None if same else open_logits(gguf, runtime, n_ctx, threads, low_memory)
            for i, logits_base, base in zip(group, base_logits, prepared):
                logits = logits_base if same else logits_of(every[i], first)[:-1]
                positions = base.compare(logits, every[i][first + 1 :], dlogits=False)
                out |= {f"{file_type}/{i}/{k}": getattr(positions, k) for k in KEPT}
            log.info("%s: chunks %s scored", file_type, _span(group))
            del logits_of
            gc.collect()
        del base_logits, prepared
    return out


def _span(indices: list[int]) -> str:
    return f"{indices[0] + 1}-{indices[-1] + 1}" if indices else "none"


def write_part(out: Path | str, arrays: dict[str, np.ndarray]) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with staged_file(out, force=True) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def replay(part_files: list[Path | str], file_type: str, n_ctx: int) -> tuple[dict, Perplexity, Divergence]:
    """One type's positions from a runtime's parts, in the text's order, through the same sums."""
    ppl, kld, sizes = Perplexity(n_ctx), Divergence(), {}
    for path in part_files:
        with np.load(path) as part:
            sizes = {"n_tokens": int(part["n_tokens"]), "n_chunks": int(part["n_chunks"])}
            scored = [k.split("/") for k in part.files if "/" in k]
            if scored and file_type not in {t for t, _, _ in scored}:
                raise UserError(f"{path}: no positions of {file_type}; the part was made for other file types")
            chunk_ids = sorted({int(i) for t, i, _ in scored if t == file_type})
            for i in chunk_ids:
                kept = {k: part[f"{file_type}/{i}/{k}"] for k in KEPT}
                unkept = np.zeros(len(kept["kld"]))  # |Δlogit|: not in the statistics
                ppl.add_nll(kept["nll"])
                kld.add(Positions(max_abs_dlogit=unkept, sum_abs_dlogit=unkept, **kept))
                log.info("chunk %d: PPL %.4f", i + 1, ppl.chunk_ppl[-1])
    return sizes, ppl, kld


def gather_perplexity(
    parts: dict[str, list[Path | str]],
    out: Path | str,
    settings: dict,
    model: str,
    file_type: str,
    gguf: Path | str,
    base_gguf: Path | str,
    low_memory: bool = False,
) -> dict:
    """One file type's results from the parts (`parts`: runtime -> its part files in order), in the
    form the CLI's `perplexity_and_kld` returns, with the file's names."""
    sizes, ppl, kld = replay(parts["numpy"], file_type, settings["n_ctx"])
    if kld.count == 0:
        raise UserError(f"{file_type}: the parts scored no chunk")
    result = {"model": model, "type": file_type, "gguf": str(gguf), "base": str(base_gguf)}
    result |= {"n_tokens": sizes["n_tokens"], "perplexity": ppl.as_dict(), "kld": kld.summary()}
    if "llama.cpp" in parts:
        _, ppl_cpp, kld_cpp = replay(parts["llama.cpp"], file_type, settings["n_ctx"])
        result["llama_cpp"] = {"perplexity": ppl_cpp.as_dict(), "kld": kld_cpp.summary()}
    result["low_memory"] = low_memory
    for name, r in (("numpy", result), ("llama.cpp", result.get("llama_cpp"))):
        if r is not None:
            p = r["perplexity"]
            log.info(
                "%s %s, %s: PPL %.4f ± %.4f\n%s", model, file_type, name, p["ppl"], p["ppl_error"], report(r["kld"])
            )
    write_json_atomic(out, result)
    return result
