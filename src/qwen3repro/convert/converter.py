"""Converts a Qwen3 Hugging Face directory to a GGUF file of any file type, as llama.cpp would write it.

Metadata follow llama.cpp's convert_hf_to_gguf.py for qwen3 (metadata.py); tensor types follow
llama-quantize (tensor_plan.py); blocks come from the quantizer of each type (quants.py). Tensors are read,
quantized and written one at a time, so memory stays near one tensor, not one model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from qwen3repro.convert import imatrix as imatrix_file
from qwen3repro.convert import quants, tensor_plan
from qwen3repro.convert.hf_weights import SafetensorsSource, architecture_of, gguf_tensor_names, read_config
from qwen3repro.convert.metadata import add_metadata
from qwen3repro.errors import UserError
from qwen3repro.fsutil import check_writable_target, sha256_file, staged_file
from qwen3repro.gguf_file import tensor_nbytes

log = logging.getLogger(__name__)


def encode(data: np.ndarray, qtype: T, threads: int | None = None, importance: np.ndarray | None = None) -> np.ndarray:
    """`data` (row last) as `qtype`'s bytes (quants.QUANTIZERS); `importance` (one weight per column)
    is the tensor's importance matrix entry, used by the types that take one."""
    return quants.quantize(data, qtype, importance, threads)


def relative_rms_error(original: np.ndarray, encoded: np.ndarray, qtype: T, threads: int | None = None) -> float:
    """||dequantize(encoded) - original|| / ||original||, dequantizing with gguf-py. Each slice of
    about 1M values is a float32 BLAS dot product (relative error ~1e-6, plenty for a metric); the
    slices run in parallel and their sums are added in float64 in a fixed order."""
    if qtype == T.F32:
        return 0.0
    original = original.reshape(-1, original.shape[-1])
    encoded = encoded.reshape(original.shape[0], -1)
    step = max(1, (1 << 20) // original.shape[1])

    def sums(i: int) -> tuple[float, float]:
        part = encoded[i : i + step]
        decoded = part.astype(np.float32) if qtype == T.F16 else gguf.quants.dequantize(part, qtype)
        diff = (decoded - original[i : i + step]).ravel()
        ref = original[i : i + step].ravel()
        return float(np.dot(diff, diff)), float(np.dot(ref, ref))

    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        parts = list(pool.map(sums, range(0, original.shape[0], step)))
    err2, norm2 = sum(p[0] for p in parts), sum(p[1] for p in parts)
    return float(np.sqrt(err2 / norm2)) if norm2 else float(np.sqrt(err2))


def prefetched(items, worker: ThreadPoolExecutor):
    """Iterate `items`, computing the next one on `worker` while the caller handles the current one."""
    iterator = iter(items)
    pending = worker.submit(next, iterator, None)
    while (item := pending.result()) is not None:
        pending = worker.submit(next, iterator, None)
        yield item


def plan_tensors(
    arch: dict, source: SafetensorsSource, type_name: str, has_imatrix: bool = False
) -> tuple[dict, dict, dict, dict]:
    """GGUF name -> HF name, shape and GGML type of every tensor, in the order the file stores them,
    and the tensors stored at another type than the mix asked for (rows too short), with that type."""
    names = gguf_tensor_names(arch, source)
    plan = tensor_plan.TensorPlan(
        type_name,
        arch["num_hidden_layers"],
        arch["num_attention_heads"] // arch["num_key_value_heads"],
        arch["tie_word_embeddings"],
        has_imatrix=has_imatrix,
    )
    shapes = {n: source.shape(names[n]) for n in tensor_plan.loader_order(names)}
    return names, shapes, {n: plan.choose(n, shape) for n, shape in shapes.items()}, plan.requested


def load_imatrix(path: Path | str, shapes: dict) -> tuple[imatrix_file.ImportanceMatrix, list[str]]:
    """The importance matrix at `path`, checked against the model's tensors, and the block matrices
    it has no entry for (llama-quantize quantizes those without one, as the converter does)."""
    matrix = imatrix_file.read(path)
    return matrix, matrix.check_against(path, shapes)


def importance_of(matrix: imatrix_file.ImportanceMatrix | None, name: str) -> np.ndarray | None:
    return matrix.importance(name) if matrix is not None and name in matrix.sums else None


def fallback_warning(file: str, shapes: dict, types: dict, requested: dict) -> str | None:
    """One line: how many tensors (and what share of the weights) could not take the type the mix
    asked for, as llama-quantize's per-tensor warnings, counted."""
    if not requested:
        return None
    total = sum(int(np.prod(s)) for s in shapes.values())
    share = sum(int(np.prod(shapes[n])) for n in requested) / total
    which = ", ".join(f"{n} {requested[n].name}->{types[n].name}" for n in list(requested)[:3])
    more = f" and {len(requested) - 3} more" if len(requested) > 3 else ""
    return (
        f"{file}: {len(requested)} of {len(shapes)} tensors ({share:.1%} of the weights) stored at another type "
        f"than the mix asks, their rows not a multiple of its block: {which}{more}"
    )


@dataclass
class FilePlan:
    """Every tensor of the file to write: its source name, shape and type, in file order."""

    names: dict  # GGUF name -> HF name
    shapes: dict
    types: dict
    requested: dict  # tensors stored at another type than the mix asked for, with that type
    matrix: imatrix_file.ImportanceMatrix | None
    missing: list[str]  # block matrices the importance matrix has no entry for

    def importance(self, name: str) -> np.ndarray | None:
        return importance_of(self.matrix, name)


def plan_file(arch: dict, source: SafetensorsSource, type_name: str, imatrix: Path | str | None) -> FilePlan:
    names, shapes, types, requested = plan_tensors(arch, source, type_name, has_imatrix=imatrix is not None)
    matrix, missing = load_imatrix(imatrix, shapes) if imatrix is not None else (None, [])
    return FilePlan(names, shapes, types, requested, matrix, missing)


def warn_about(plan: FilePlan, file: str) -> None:
    """llama-quantize's warnings, counted: tensors without an importance entry, tensors at another type."""
    if plan.missing:
        log.warning(
            "%s: the importance matrix has no entry for %d tensors (%s%s); they are quantized without one, "
            "as llama-quantize does",
            file,
            len(plan.missing),
            ", ".join(plan.missing[:3]),
            " ..." if len(plan.missing) > 3 else "",
        )
    if warning := fallback_warning(file, plan.shapes, plan.types, plan.requested):
        log.warning("%s", warning)


def bytes_sha256(array: np.ndarray) -> str:
    """The sha256 of an array's bytes in memory order (a source tensor as loaded, or an encoded one)."""
    return hashlib.sha256(np.ascontiguousarray(array).reshape(-1).view(np.uint8)).hexdigest()


def write_tensors(
    writer: gguf.GGUFWriter, plan: FilePlan, source: SafetensorsSource, threads: int | None
) -> list[dict]:
    """Every tensor's info, then its data, into `writer` (its metadata already added); one manifest
    entry per tensor. Loading and encoding run a tensor ahead, in a thread, of the writing."""
    order = list(plan.shapes)

    def encoded_tensors():
        for n in order:
            data = source.load(plan.names[n])
            encoded = encode(data, plan.types[n], threads, plan.importance(n))
            error = relative_rms_error(data, encoded, plan.types[n], threads)
            digests = {"sha256": bytes_sha256(encoded), "source_sha256": bytes_sha256(data)}
            del data
            yield n, encoded, error, digests

    with ThreadPoolExecutor(1) as worker:
        tensors_ahead = prefetched(encoded_tensors(), worker)
        for n in order:
            shape, qtype = plan.shapes[n], plan.types[n]
            writer.add_tensor_info(n, shape, np.dtype(np.float32), tensor_nbytes(shape, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        tensors = []
        for n, encoded, error, digests in tensors_ahead:
            writer.write_tensor_data(encoded)
            entry = {"name": n, "type": plan.types[n].name, "shape": list(plan.shapes[n]), "bytes": int(encoded.nbytes)}
            if n in plan.requested:
                entry["requested_type"] = plan.requested[n].name
            if plan.matrix is not None:
                entry["imatrix"] = plan.importance(n) is not None and plan.types[n] in quants.TAKES_IMATRIX
            # the check proves the file is this conversion's from these digests, without encoding again
            tensors.append({**entry, "relative_rms_error": error, **digests})
            log.info("%-28s %-5s %s", n, plan.types[n].name, plan.shapes[n])
    return tensors


def convert(
    model_dir: Path | str,
    type_name: str,
    out: Path | str,
    force: bool = False,
    name: str | None = None,
    threads: int | None = None,
    imatrix: Path | str | None = None,
    imatrix_label: str | None = None,
) -> dict:
    """Write `out` (GGUF) and `out` with suffix .json (manifest); returns the manifest. With
    `imatrix` (a llama-imatrix file) the types that take one are quantized with it; the file records
    the matrix's path as `imatrix_label` (default: the path itself, as llama-quantize records it)."""
    model_dir, out = Path(model_dir), Path(out)
    ftype, _ = tensor_plan.file_type(type_name)
    type_name = type_name.upper()
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: model directory does not exist")
    check_writable_target(out, force)
    check_writable_target(out.with_suffix(".json"), force)
    arch = architecture_of(read_config(model_dir))
    source = SafetensorsSource(model_dir)
    plan = plan_file(arch, source, type_name, imatrix)
    warn_about(plan, out.name)
    started = time.perf_counter()
    with staged_file(out, force) as tmp, staged_file(out.with_suffix(".json"), force) as tmp_manifest:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3])
        add_metadata(writer, model_dir, name or model_dir.name, arch, ftype)
        if plan.matrix is not None:
            add_imatrix_metadata(writer, imatrix_label or imatrix, plan.matrix)
        tensors = write_tensors(writer, plan, source, threads)
        writer.close()
        seconds = time.perf_counter() - started
        manifest = _manifest(tmp, out.name, name or model_dir.name, type_name, plan.shapes, tensors, seconds)
        if plan.matrix is not None:
            manifest["imatrix"] = imatrix_record(imatrix, plan.matrix, plan.missing)
        tmp_manifest.write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
    return manifest


def imatrix_record(path: Path | str, matrix: imatrix_file.ImportanceMatrix, missing: list[str]) -> dict:
    """What a file's manifest says of the importance matrix it was quantized with."""
    return {
        "file": Path(path).name,
        "sha256": sha256_file(path),
        "entries": len(matrix.sums),
        "chunks": matrix.chunk_count,
        "datasets": matrix.datasets,
        "missing": missing,
    }


def add_imatrix_metadata(writer, path: Path | str, matrix) -> None:
    """The keys llama-quantize adds to a file it quantized with an importance matrix."""
    writer.add_string("quantize.imatrix.file", str(path)[:127])
    if matrix.datasets:
        writer.add_string("quantize.imatrix.dataset", matrix.datasets[0][:127])
    writer.add_uint32("quantize.imatrix.entries_count", len(matrix.sums))
    if matrix.chunk_count > 0:
        writer.add_uint32("quantize.imatrix.chunks_count", matrix.chunk_count)


def _manifest(
    path: Path, file: str, model: str, type_name: str, shapes: dict, tensors: list[dict], seconds: float
) -> dict:
    """What the .json beside a GGUF file records: its hash and size, bits per weight, every tensor."""
    n_weights = sum(int(np.prod(s)) for s in shapes.values())
    tensor_bytes = sum(t["bytes"] for t in tensors)
    return {
        "file": file,
        "model": model,
        "file_type": type_name,
        "sha256": sha256_file(path),
        "size": path.stat().st_size,
        "n_parameters": n_weights,
        "bits_per_weight": 8 * tensor_bytes / n_weights,
        "type_counts": {t: sum(1 for x in tensors if x["type"] == t) for t in sorted({x["type"] for x in tensors})},
        "type_shares": {
            t: sum(int(np.prod(x["shape"])) for x in tensors if x["type"] == t) / n_weights
            for t in sorted({x["type"] for x in tensors})
        },
        "fallbacks": sum(1 for x in tensors if "requested_type" in x),
        "seconds": round(seconds, 3),
        "tensors": tensors,
    }
