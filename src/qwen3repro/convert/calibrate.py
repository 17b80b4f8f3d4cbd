"""Collects an importance matrix with the engine over calibration text, as llama-imatrix does.

The text is tokenized without BOS (Qwen's tokenizer adds none) and cut into non-overlapping chunks
of n_ctx tokens; each chunk runs from an empty cache, and every token's input to every block matrix
is squared and summed per column (q, k and v share one input, as do gate and up). The output matrix
is left out, as llama-imatrix leaves it by default. The file is the GGUF form llama-quantize reads.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from qwen3repro.convert.imatrix import ImportanceMatrix
from qwen3repro.errors import UserError
from qwen3repro.fsutil import check_writable_target
from qwen3repro.pipeline.progress import progress_bar

log = logging.getLogger(__name__)

# The matrices each input of the forward pass multiplies (Qwen3.forward's `observe` kinds)
MATRICES = {
    "attn_qkv": ("attn_q", "attn_k", "attn_v"),
    "attn_output": ("attn_output",),
    "ffn_gate_up": ("ffn_gate", "ffn_up"),
    "ffn_down": ("ffn_down",),
}


def calibration_tokens(model, text: str, n_ctx: int, path: Path | str) -> np.ndarray:
    from qwen3repro.engine.tokenizer import Tokenizer

    if not text.strip():
        raise UserError(f"{path}: the calibration text is empty")
    tokens = np.array(Tokenizer.from_gguf(model.file).encode(text, parse_special=False), dtype=np.int64)
    if len(tokens) < 2 * n_ctx:
        raise UserError(
            f"{path}: the calibration text has {len(tokens)} tokens; a context of {n_ctx} needs at least {2 * n_ctx}"
        )
    return tokens


def collect(model, tokens: np.ndarray, n_ctx: int, chunks: int | None, dataset: str) -> ImportanceMatrix:
    """The importance matrix of `model` (an engine Qwen3) over the first `chunks` chunks (all if None)."""
    matrix = ImportanceMatrix(datasets=[dataset], chunk_size=n_ctx)
    n_chunks = len(tokens) // n_ctx if chunks is None else min(chunks, len(tokens) // n_ctx)

    def observe(layer: int, kind: str, x: np.ndarray) -> None:
        squares = np.einsum("ij,ij->j", x, x)
        for matrix_name in MATRICES[kind]:
            matrix.add_squares(f"blk.{layer}.{matrix_name}.weight", squares, x.shape[0])

    for i in progress_bar(range(n_chunks), "importance matrix chunks"):
        model.forward(tokens[i * n_ctx : (i + 1) * n_ctx], start=0, last_only=True, observe=observe)
        matrix.chunk_count += 1
    return matrix


def write_imatrix(
    gguf: Path | str,
    text_path: Path | str,
    out: Path | str,
    n_ctx: int = 512,
    chunks: int | None = None,
    force: bool = False,
    threads: int | None = None,
) -> dict:
    """Collect over the text at `text_path` with the GGUF model `gguf`, write `out`; returns a summary.
    The engine runs with pinned arithmetic (qwen3repro.numerics): the matrix's bytes, and so those of
    every file quantized with it, are the same on every x86-64 CPU with AVX2."""
    from qwen3repro import numerics

    check_writable_target(Path(out), force)
    return numerics.run_pinned(
        "qwen3repro.convert.calibrate:collect_into",
        threads or os.cpu_count() or 1,
        gguf=gguf,
        text_path=text_path,
        out=out,
        n_ctx=n_ctx,
        chunks=chunks,
        force=force,
    )


def collect_into(
    gguf: Path | str, text_path: Path | str, out: Path | str, n_ctx: int, chunks: int | None, force: bool
) -> dict:
    """write_imatrix's work (which has checked `out`), in whatever arithmetic this process has."""
    from qwen3repro.engine.qwen3 import Qwen3

    out = Path(out)
    try:
        text = Path(text_path).read_text("utf-8")
    except FileNotFoundError:
        raise UserError(f"{text_path}: calibration text does not exist") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{text_path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{text_path}: cannot read the calibration text ({e.strerror})") from None
    if n_ctx < 16:
        raise UserError(f"n_ctx must be at least 16 (llama-imatrix ignores batches of fewer tokens), not {n_ctx}")
    model = Qwen3(gguf, n_ctx=n_ctx)
    tokens = calibration_tokens(model, text, n_ctx, text_path)
    started = time.perf_counter()
    matrix = collect(model, tokens, n_ctx, chunks, Path(text_path).name)
    matrix.write(out, force)
    summary = {
        "entries": len(matrix.sums),
        "chunks": matrix.chunk_count,
        "n_ctx": n_ctx,
        "tokens": matrix.chunk_count * n_ctx,
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("%s: %s", out, summary)
    return summary
