"""Converts a Qwen3 Hugging Face directory to a GGUF file of any file type, as llama.cpp would write it.

Metadata follow llama.cpp's convert_hf_to_gguf.py for qwen3; tensor types follow llama-quantize
(quant_plan); blocks come from gguf-py (F16, BF16, Q8_0, Q5_x, Q4_x) or kquants (K-quants). Tensors
are read, quantized and written one at a time, so memory stays near one tensor, not one model.
"""

from __future__ import annotations

import json
import struct
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from . import architecture, hf_tokenizer, kquants, quant_plan
from .errors import UserError
from .fsutil import check_writable_target, sha256_file
from .gguf_file import tensor_nbytes
from .sources import check_model_dir

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- reading the model

def read_config(model_dir: Path) -> dict:
    check_model_dir(model_dir)
    return json.loads((model_dir / "config.json").read_text("utf-8"))


def architecture_of(config: dict) -> dict:
    missing = [k for k in architecture.ARCHITECTURE_KEYS if k not in config and k != "tie_word_embeddings"]
    if missing:
        raise UserError(f"config.json: missing {missing[0]!r}")
    arch = {k: config.get(k) for k in architecture.ARCHITECTURE_KEYS}
    arch["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", False))
    return arch


class SafetensorsSource:
    """The model's tensors by Hugging Face name, loaded one at a time as float32 NumPy arrays."""

    def __init__(self, model_dir: Path):
        from safetensors import safe_open

        self.files = {}
        for path in sorted(model_dir.glob("*.safetensors")):
            try:
                handle = safe_open(str(path), framework="pt")
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise UserError(f"{path}: not a readable safetensors file ({e})") from e
            for name in handle.keys():
                self.files[name] = handle

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.files[name].get_slice(name).get_shape())

    def load(self, name: str) -> np.ndarray:
        import torch

        return self.files[name].get_tensor(name).to(torch.float32).numpy()


def gguf_tensor_names(arch: dict, source: SafetensorsSource) -> dict[str, str]:
    """GGUF name -> HF name, after checking every tensor a Qwen3ForCausalLM needs, with its shape."""
    expected = architecture.tensor_shapes(arch)
    for name, shape in expected.items():
        if name not in source.files:
            raise UserError(f"missing tensor {name}")
        if source.shape(name) != shape:
            raise UserError(f"tensor {name} has shape {list(source.shape(name))}, expected {list(shape)}")
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, arch["num_hidden_layers"])
    names = {}
    for hf_name in expected:
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:  # pragma: no cover - gguf-py knows every Qwen3 tensor
            raise UserError(f"no GGUF name for tensor {hf_name}")
        names[gguf_name] = hf_name
    return names


# ----------------------------------------------------------------------------- metadata

def vocab_for_gguf(model_dir: Path, tokenizer: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens padded to vocab_size and their types, as convert_hf_to_gguf's get_vocab_base makes them."""
    pre = tokenizer.get("pre_tokenizer") or {}
    regexes = [p.get("pattern", {}).get("Regex") for p in pre.get("pretokenizers", []) if p.get("type") == "Split"]
    if regexes != [hf_tokenizer.PRETOKENIZER_REGEX]:
        raise UserError(f"{model_dir / 'tokenizer.json'}: not the Qwen2 pre-tokenizer (llama.cpp pre 'qwen2')")
    by_id = {i: tok for tok, i in tokenizer["model"]["vocab"].items()}
    added = {t["id"]: t for t in tokenizer.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in added:
            content = added[i]["content"]
            looks_special = content.startswith("<|") and content.endswith("|>")
            tokens.append(content)
            types.append(gguf.TokenType.CONTROL if added[i]["special"] or looks_special
                         else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    return tokens, [int(t) for t in types]


class Writer(gguf.GGUFWriter):
    """gguf-py's writer, packing long string and integer arrays (the vocabulary, 450k values) in one
    pass instead of value by value; the bytes are the same."""

    def _pack_val(self, val, vtype, add_vtype, sub_type=None):
        if vtype != gguf.GGUFValueType.ARRAY or not isinstance(val, list) or len(val) < 1024:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        ltype = sub_type if sub_type is not None else gguf.GGUFValueType.get_type(val[0])
        first = type(val[0])
        if first not in (str, int) or not all(type(v) is first for v in val):
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = super()._pack_val(val[:1], vtype, add_vtype, sub_type)[: (4 if add_vtype else 0) + 12]
        head = head[:-8] + struct.pack("<Q", len(val))
        if ltype == gguf.GGUFValueType.STRING:
            encoded = [v.encode("utf-8") for v in val]
            lengths = np.array([len(b) for b in encoded], dtype="<u8")
            body = bytearray()
            for length, b in zip(lengths.view(np.uint8).reshape(-1, 8), encoded):
                body += length.tobytes()
                body += b
            return head + bytes(body)
        fmt = {gguf.GGUFValueType.INT32: "<i4", gguf.GGUFValueType.UINT32: "<u4"}.get(ltype)
        if fmt is None or self.endianess != gguf.GGUFEndian.LITTLE:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        return head + np.asarray(val, dtype=fmt).tobytes()


def add_metadata(writer: gguf.GGUFWriter, model_dir: Path, name: str, arch: dict, ftype) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(arch["num_hidden_layers"])
    writer.add_context_length(arch["max_position_embeddings"])
    writer.add_embedding_length(arch["hidden_size"])
    writer.add_feed_forward_length(arch["intermediate_size"])
    writer.add_head_count(arch["num_attention_heads"])
    writer.add_head_count_kv(arch["num_key_value_heads"])
    writer.add_rope_freq_base(float(arch["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(arch["rms_norm_eps"]))
    writer.add_key_length(arch["head_dim"])
    writer.add_value_length(arch["head_dim"])
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text("utf-8"))
    tokens, types = vocab_for_gguf(model_dir, tokenizer, arch["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # Merges as SpecialVocab writes them ("a b"), taken from the tokenizer.json already in hand:
    # SpecialVocab's own pass over 151k merges doubles the metadata time.
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]])
    gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


# ----------------------------------------------------------------------------- tensors

def encode(data: np.ndarray, qtype: T, threads: int | None = None) -> np.ndarray:
    if qtype == T.F32:
        return data
    if qtype == T.F16:
        return data.astype(np.float16)
    if qtype in kquants.QUANTIZERS:
        return kquants.quantize(data, qtype, threads)
    rows = data.reshape(-1, data.shape[-1])
    out = np.empty((rows.shape[0], tensor_nbytes(rows.shape, qtype) // rows.shape[0]), np.uint8)
    kquants.map_chunks(lambda r: gguf.quants.quantize(r, qtype), rows, out, max(1, (1 << 18) // rows.shape[1]), threads)
    return out.reshape(*data.shape[:-1], out.shape[-1])


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


def convert(model_dir: Path | str, type_name: str, out: Path | str, force: bool = False,
            name: str | None = None, threads: int | None = None) -> dict:
    """Write `out` (GGUF) and `out` with suffix .json (manifest); returns the manifest."""
    model_dir, out = Path(model_dir), Path(out)
    ftype, _ = quant_plan.file_type(type_name)
    type_name = type_name.upper()
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: model directory does not exist")
    check_writable_target(out, force)
    manifest_path = out.with_suffix(".json")
    config = read_config(model_dir)
    arch = architecture_of(config)
    source = SafetensorsSource(model_dir)
    names = gguf_tensor_names(arch, source)
    order = quant_plan.loader_order(names)
    plan = quant_plan.TensorPlan(type_name, arch["num_hidden_layers"],
                                 arch["num_attention_heads"] // arch["num_key_value_heads"],
                                 arch["tie_word_embeddings"])
    shapes = {n: source.shape(names[n]) for n in order}
    types = {n: plan.choose(n, shapes[n]) for n in order}

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp_manifest = manifest_path.with_name(f".{manifest_path.name}.tmp-{os.getpid()}")
    started = time.perf_counter()
    tensors = []

    def encoded_tensors():
        """Load, encode and measure each tensor in file order. Runs in a thread from the start, so
        the first tensors are ready while the main thread builds and writes the metadata."""
        for n in order:
            data = source.load(names[n])
            encoded = encode(data, types[n], threads)
            error = relative_rms_error(data, encoded, types[n], threads)
            del data
            yield n, encoded, error

    try:
        with ThreadPoolExecutor(1) as worker:
            produced = prefetched(encoded_tensors(), worker)
            writer = Writer(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3])
            add_metadata(writer, model_dir, name or model_dir.name, arch, ftype)
            for n in order:
                writer.add_tensor_info(n, shapes[n], np.dtype(np.float32), tensor_nbytes(shapes[n], types[n]),
                                       raw_dtype=types[n])
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for n, encoded, error in produced:
                writer.write_tensor_data(encoded)
                tensors.append({"name": n, "type": types[n].name, "shape": list(shapes[n]),
                                "bytes": int(encoded.nbytes), "relative_rms_error": error})
                log.info("%-28s %-5s %s", n, types[n].name, shapes[n])
        writer.close()
        sha, size = sha256_file(tmp), tmp.stat().st_size
        n_weights = sum(int(np.prod(s)) for s in shapes.values())
        tensor_bytes = sum(t["bytes"] for t in tensors)
        manifest = {
            "file": out.name, "model": name or model_dir.name, "file_type": type_name, "sha256": sha, "size": size,
            "n_parameters": n_weights, "bits_per_weight": 8 * tensor_bytes / n_weights,
            "type_counts": {t: sum(1 for x in tensors if x["type"] == t) for t in sorted({x["type"] for x in tensors})},
            "seconds": round(time.perf_counter() - started, 3), "tensors": tensors,
        }
        tmp_manifest.write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
        os.replace(tmp, out)
        os.replace(tmp_manifest, manifest_path)
    except BaseException:
        for p in (tmp, tmp_manifest):
            p.unlink(missing_ok=True)
        raise
    return manifest
