"""Loads Qwen3's hyperparameters and weights from a GGUF file into NumPy arrays, checking every shape.

F32 tensors are views of the memory-mapped file (no copy); q/k/v and gate/up, which the converter
writes side by side, come out as one stacked matrix each. Other types are read in slices and
dequantized with gguf-py, so the file's pages never join the process's memory beside the float32 copy.

With `low_memory`, nothing big is loaded up front: each decoder layer is read and dequantized when
the forward pass reaches it (StreamedLayers), the embedding's rows when a token asks for them and
the output matrix a slice at a time (StreamedMatrix). The process then holds about one layer in
float32 instead of the whole model (what that saves: docs/engine.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from qwen3repro.convert.quants import QUANTIZERS
from qwen3repro.errors import UserError
from qwen3repro.gguf_file import GGUFFile

F32 = np.float32
# every tensor type the converter writes (its quantizer registry, convert/quants.py), and no other
SUPPORTED = frozenset(QUANTIZERS)
SLICE_BYTES = 1 << 22  # about 4 MB of file dequantized at a time
# The output matrix streams in slices of a multiple of this many rows: the engine's one-row products
# split their work at such boundaries, so the slices' logits are bitwise the whole matrix's
SLICE_ROWS = 256


@dataclass(frozen=True)
class Qwen3Config:
    """The hyperparameters of config.json that the forward pass needs, under the same names."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float
    rms_norm_eps: float
    context_length: int

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "Qwen3Config":
        arch = f.fields.get("general.architecture")
        if arch != "qwen3":
            raise UserError(f"{f.path}: architecture {arch!r}, this engine runs qwen3")

        def key(name):
            try:
                return f.fields[f"qwen3.{name}"]
            except KeyError:
                raise UserError(f"{f.path}: metadata key qwen3.{name} is missing") from None

        embd = f.tensors.get("token_embd.weight")
        if embd is None:
            raise UserError(f"{f.path}: missing tensor token_embd.weight")
        n_heads = key("attention.head_count")
        return cls(
            vocab_size=embd.shape[0],
            hidden_size=key("embedding_length"),
            num_hidden_layers=key("block_count"),
            num_attention_heads=n_heads,
            num_key_value_heads=key("attention.head_count_kv"),
            head_dim=f.fields.get("qwen3.attention.key_length", key("embedding_length") // n_heads),
            intermediate_size=key("feed_forward_length"),
            rope_theta=float(key("rope.freq_base")),
            rms_norm_eps=float(key("attention.layer_norm_rms_epsilon")),
            context_length=key("context_length"),
        )


@dataclass
class Qwen3Layer:
    """One decoder layer's weights, named as in modeling_qwen3.py (GGUF's names in the comments)."""

    input_layernorm: np.ndarray  # attn_norm, [hidden]
    qkv_proj: np.ndarray  # q_proj, k_proj and v_proj stacked: one matrix product per layer in the fast pass
    q_proj: np.ndarray  # attn_q, [num_attention_heads * head_dim, hidden], rows of qkv_proj
    k_proj: np.ndarray  # attn_k, [num_key_value_heads * head_dim, hidden]
    v_proj: np.ndarray  # attn_v, [num_key_value_heads * head_dim, hidden]
    o_proj: np.ndarray  # attn_output, [hidden, num_attention_heads * head_dim]
    q_norm: np.ndarray  # attn_q_norm, [head_dim], applied per head before RoPE
    k_norm: np.ndarray  # attn_k_norm, [head_dim]
    qk_norm: np.ndarray  # q_norm for every query head, then k_norm for every key head: one rms_norm for both
    post_attention_layernorm: np.ndarray  # ffn_norm, [hidden]
    gate_up_proj: np.ndarray  # gate_proj and up_proj stacked
    gate_proj: np.ndarray  # ffn_gate, [intermediate, hidden]
    up_proj: np.ndarray  # ffn_up, [intermediate, hidden]
    down_proj: np.ndarray  # ffn_down, [hidden, intermediate]


@dataclass
class Qwen3Weights:
    config: Qwen3Config
    embed_tokens: np.ndarray | StreamedMatrix  # token_embd, [vocab, hidden]
    layers: list[Qwen3Layer] | StreamedLayers
    norm: np.ndarray  # output_norm, [hidden]
    lm_head: np.ndarray | StreamedMatrix  # output, [vocab, hidden]; the embedding itself when tied


def decode(part: np.ndarray, qtype: T) -> np.ndarray:
    """Rows of raw bytes as float32: the float types by a cast, block quants by gguf-py."""
    if qtype == T.F32:
        return part.view(F32)
    if qtype == T.F16:
        return part.view(np.float16).astype(F32)
    if qtype == T.BF16:  # bfloat16 is the top half of a float32
        return (part.view(np.uint16).astype(np.uint32) << 16).view(F32)
    return gguf.quants.dequantize(part, qtype)


def tensor_infos(f: GGUFFile, names: list[str], row: int | None = None) -> list:
    """The named tensors' directory entries, each checked: present, a supported type, and rows of
    `row` values (1-D for row None)."""
    infos = []
    for name in names:
        info = f.tensors.get(name)
        if info is None:
            raise UserError(f"{f.path}: missing tensor {name}")
        if info.type not in SUPPORTED:
            raise UserError(f"{f.path}: tensor {name} has unsupported type {info.type.name}")
        if len(info.shape) != (1 if row is None else 2) or (row is not None and info.shape[1] != row):
            raise UserError(f"{f.path}: tensor {name} has shape {list(info.shape)}")
        infos.append(info)
    return infos


def stacked(f: GGUFFile, names: list[str], row: int | None = None, in_place: bool = True) -> np.ndarray:
    """The named tensors stacked row-wise as one float32 matrix with rows of `row` values (a vector
    for 1-D tensors, row None). F32 tensors back to back in the file are one view, no copy, unless
    `in_place` is False: then they are read into memory like the other types, the mapped pages
    left out of the process's memory."""
    infos = tensor_infos(f, names, row)
    shape = (sum(i.shape[0] for i in infos), row) if row is not None else infos[0].shape
    contiguous = all(b.offset == a.offset + a.nbytes for a, b in zip(infos, infos[1:]))
    if in_place and all(i.type == T.F32 for i in infos) and contiguous:
        return np.frombuffer(f.mapping, F32, int(np.prod(shape)), infos[0].offset).reshape(shape)
    out = np.empty(shape, F32)
    first = 0
    for info in infos:
        rows = info.shape[0] if row is not None else 1
        step = max(1, (SLICE_BYTES * rows) // info.nbytes)
        for r in range(0, rows, step):
            part = f.read_rows(info.name, r, min(rows, r + step))
            target = out[first + r : first + r + len(part)] if row is not None else out
            target[...] = decode(part, info.type).reshape(target.shape)
        first += rows
    return out


class StreamedMatrix:
    """A [rows, cols] weight matrix left in the file (low-memory mode): `matrix[ids]` reads and
    dequantizes those rows (embedding lookups), `slices()` gives the whole of it a few MB at a time
    (the output matrix's product)."""

    def __init__(self, f: GGUFFile, name: str, cols: int):
        (self.info,) = tensor_infos(f, [name], cols)
        self.file = f
        self.shape = self.info.shape

    def __getitem__(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        unique, where = np.unique(ids.reshape(-1), return_inverse=True)
        raw = np.stack([self.file.read_rows(self.info.name, int(r), int(r) + 1)[0] for r in unique])
        rows = decode(raw, self.info.type).reshape(len(unique), self.shape[1])
        return rows[where].reshape(*ids.shape, self.shape[1])

    def slices(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 rows) covering the matrix in order."""
        n_rows = self.shape[0]
        step = max(SLICE_ROWS, SLICE_BYTES // (4 * self.shape[1]) // SLICE_ROWS * SLICE_ROWS)  # ~4 MB of float32
        for first in range(0, n_rows, step):
            raw = self.file.read_rows(self.info.name, first, min(n_rows, first + step))
            yield first, decode(raw, self.info.type).reshape(len(raw), self.shape[1])


class StreamedLayers:
    """The decoder layers of a file, each read and dequantized when asked for and not kept
    (low-memory mode): iterating over them holds one layer at a time in float32."""

    def __init__(self, f: GGUFFile, c: "Qwen3Config"):
        self.file, self.config = f, c

    def __len__(self) -> int:
        return self.config.num_hidden_layers

    def __getitem__(self, i: int) -> "Qwen3Layer":
        if not 0 <= i < len(self):
            raise IndexError(i)
        return load_layer(self.file, self.config, i, in_place=False)

    def __iter__(self) -> Iterator["Qwen3Layer"]:
        return (self[i] for i in range(len(self)))


MATRICES = {  # a layer's products: the file's tensors each stacks, and the width of their rows
    "qkv_proj": (("attn_q", "attn_k", "attn_v"), "hidden_size"),
    "gate_up_proj": (("ffn_gate", "ffn_up"), "hidden_size"),
    "o_proj": (("attn_output",), "q_dim"),
    "down_proj": (("ffn_down",), "intermediate_size"),
}
NORMS = ("attn_norm", "attn_q_norm", "attn_k_norm", "ffn_norm")


def row_widths(c: Qwen3Config) -> dict[str, int]:
    """The row width of each of MATRICES' names."""
    return {
        "hidden_size": c.hidden_size,
        "q_dim": c.num_attention_heads * c.head_dim,
        "intermediate_size": c.intermediate_size,
    }


def check_layer(f: GGUFFile, c: Qwen3Config, i: int) -> None:
    """Layer i's tensors are all there, of supported types and of the shapes the metadata implies."""
    d, q_dim, kv_dim, b = (
        c.hidden_size,
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
        f"blk.{i}.",
    )
    widths = row_widths(c)
    heights = {"qkv_proj": q_dim + 2 * kv_dim, "gate_up_proj": 2 * c.intermediate_size, "o_proj": d, "down_proj": d}
    for matrix, (names, width) in MATRICES.items():
        infos = tensor_infos(f, [f"{b}{n}.weight" for n in names], widths[width])
        if sum(info.shape[0] for info in infos) != heights[matrix]:
            raise UserError(f"{f.path}: block {i} has tensor shapes that do not match the metadata")
    for n in NORMS:
        (info,) = tensor_infos(f, [f"{b}{n}.weight"])
        if info.shape != ((c.head_dim,) if n in ("attn_q_norm", "attn_k_norm") else (d,)):
            raise UserError(f"{f.path}: tensor {b}{n}.weight has shape {list(info.shape)}")


def load_layer(f: GGUFFile, c: Qwen3Config, i: int, in_place: bool = True) -> Qwen3Layer:
    """Layer i's weights in float32 (F32 ones in place in the mapped file, unless in_place is False)."""
    check_layer(f, c, i)
    q_dim, kv_dim, ffn, b = (
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
        c.intermediate_size,
        f"blk.{i}.",
    )
    widths = row_widths(c)
    m = {
        matrix: stacked(f, [f"{b}{n}.weight" for n in names], widths[width], in_place)
        for matrix, (names, width) in MATRICES.items()
    }
    norms = {n: stacked(f, [f"{b}{n}.weight"]) for n in NORMS}
    qkv, gate_up = m["qkv_proj"], m["gate_up_proj"]
    return Qwen3Layer(
        input_layernorm=norms["attn_norm"],
        qkv_proj=qkv,
        q_proj=qkv[:q_dim],
        k_proj=qkv[q_dim : q_dim + kv_dim],
        v_proj=qkv[q_dim + kv_dim :],
        o_proj=m["o_proj"],
        q_norm=norms["attn_q_norm"],
        k_norm=norms["attn_k_norm"],
        qk_norm=np.concatenate(
            [
                np.tile(norms["attn_q_norm"], (c.num_attention_heads, 1)),
                np.tile(norms["attn_k_norm"], (c.num_key_value_heads, 1)),
            ]
        ),
        post_attention_layernorm=norms["ffn_norm"],
        gate_up_proj=gate_up,
        gate_proj=gate_up[:ffn],
        up_proj=gate_up[ffn:],
        down_proj=m["down_proj"],
    )


def load_weights(f: GGUFFile, low_memory: bool = False) -> Qwen3Weights:
    """Every weight of the model; an untied output matrix (output.weight) when the file has one.
    With `low_memory` the layers, the embedding and the output matrix stay in the file (streamed)."""
    c = Qwen3Config.from_gguf(f)
    tied = "output.weight" not in f.tensors
    if low_memory:
        embed_tokens = StreamedMatrix(f, "token_embd.weight", c.hidden_size)
        layers = StreamedLayers(f, c)
        lm_head = embed_tokens if tied else StreamedMatrix(f, "output.weight", c.hidden_size)
        for i in range(c.num_hidden_layers):  # every tensor's presence, type and shape, up front
            check_layer(f, c, i)
    else:
        embed_tokens = stacked(f, ["token_embd.weight"], c.hidden_size)
        layers = [load_layer(f, c, i) for i in range(c.num_hidden_layers)]
        lm_head = embed_tokens if tied else stacked(f, ["output.weight"], c.hidden_size)
    norm = stacked(f, ["output_norm.weight"])
    if lm_head.shape[0] != c.vocab_size:
        raise UserError(f"{f.path}: output.weight has {lm_head.shape[0]} rows, expected {c.vocab_size}")
    return Qwen3Weights(c, embed_tokens, layers, norm, lm_head)
