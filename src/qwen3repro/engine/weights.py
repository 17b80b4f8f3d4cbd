"""Loads Qwen3's hyperparameters and weights from a GGUF file into NumPy arrays, checking every shape.

F32 tensors are views of the memory-mapped file (no copy); q/k/v and gate/up, which the converter
writes side by side, come out as one stacked matrix each. Other types are read in slices and
dequantized with gguf-py, so the file's pages never join the process's memory beside the float32 copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from qwen3repro.convert.reader import GGUFFile
from qwen3repro.errors import UserError

F32 = np.float32
SUPPORTED = {
    T.F32,
    T.F16,
    T.BF16,
    T.Q8_0,
    T.Q5_1,
    T.Q5_0,
    T.Q4_1,
    T.Q4_0,
    T.Q6_K,
    T.Q5_K,
    T.Q4_K,
    T.Q3_K,
    T.Q2_K,
    T.IQ4_NL,
    T.IQ4_XS,
}
SLICE_BYTES = 1 << 22  # about 4 MB of file dequantized at a time


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
    post_attention_layernorm: np.ndarray  # ffn_norm, [hidden]
    gate_up_proj: np.ndarray  # gate_proj and up_proj stacked
    gate_proj: np.ndarray  # ffn_gate, [intermediate, hidden]
    up_proj: np.ndarray  # ffn_up, [intermediate, hidden]
    down_proj: np.ndarray  # ffn_down, [hidden, intermediate]


@dataclass
class Qwen3Weights:
    config: Qwen3Config
    embed_tokens: np.ndarray  # token_embd, [vocab, hidden]
    layers: list[Qwen3Layer]
    norm: np.ndarray  # output_norm, [hidden]
    lm_head: np.ndarray  # output, [vocab, hidden]; the embedding itself when tied


def decode(part: np.ndarray, qtype: T) -> np.ndarray:
    """Rows of raw bytes as float32: the float types by a cast, block quants by gguf-py."""
    if qtype == T.F32:
        return part.view(F32)
    if qtype == T.F16:
        return part.view(np.float16).astype(F32)
    if qtype == T.BF16:  # bfloat16 is the top half of a float32
        return (part.view(np.uint16).astype(np.uint32) << 16).view(F32)
    return gguf.quants.dequantize(part, qtype)


def stacked(f: GGUFFile, names: list[str], row: int | None = None) -> np.ndarray:
    """The named tensors stacked row-wise as one float32 matrix with rows of `row` values (a vector
    for 1-D tensors, row None). F32 tensors back to back in the file are one view, no copy."""
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
    shape = (sum(i.shape[0] for i in infos), row) if row is not None else infos[0].shape
    contiguous = all(b.offset == a.offset + a.nbytes for a, b in zip(infos, infos[1:]))
    if all(i.type == T.F32 for i in infos) and contiguous:
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


def load_layer(f: GGUFFile, c: Qwen3Config, i: int) -> Qwen3Layer:
    d, q_dim, kv_dim = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    b = f"blk.{i}."
    qkv = stacked(f, [b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"], d)
    gate_up = stacked(f, [b + "ffn_gate.weight", b + "ffn_up.weight"], d)
    o_proj = stacked(f, [b + "attn_output.weight"], q_dim)
    down = stacked(f, [b + "ffn_down.weight"], c.intermediate_size)
    shapes_ok = (
        qkv.shape[0] == q_dim + 2 * kv_dim
        and gate_up.shape[0] == 2 * c.intermediate_size
        and o_proj.shape[0] == d
        and down.shape[0] == d
    )
    if not shapes_ok:
        raise UserError(f"{f.path}: block {i} has tensor shapes that do not match the metadata")
    norms = {n: stacked(f, [f"{b}{n}.weight"]) for n in ("attn_norm", "attn_q_norm", "attn_k_norm", "ffn_norm")}
    for n, v in norms.items():
        if v.shape != ((c.head_dim,) if n in ("attn_q_norm", "attn_k_norm") else (d,)):
            raise UserError(f"{f.path}: tensor {b}{n}.weight has shape {list(v.shape)}")
    return Qwen3Layer(
        input_layernorm=norms["attn_norm"],
        qkv_proj=qkv,
        q_proj=qkv[:q_dim],
        k_proj=qkv[q_dim : q_dim + kv_dim],
        v_proj=qkv[q_dim + kv_dim :],
        o_proj=o_proj,
        q_norm=norms["attn_q_norm"],
        k_norm=norms["attn_k_norm"],
        post_attention_layernorm=norms["ffn_norm"],
        gate_up_proj=gate_up,
        gate_proj=gate_up[: c.intermediate_size],
        up_proj=gate_up[c.intermediate_size :],
        down_proj=down,
    )


def load_weights(f: GGUFFile) -> Qwen3Weights:
    """Every weight of the model; an untied output matrix (output.weight) when the file has one."""
    c = Qwen3Config.from_gguf(f)
    embed_tokens = stacked(f, ["token_embd.weight"], c.hidden_size)
    layers = [load_layer(f, c, i) for i in range(c.num_hidden_layers)]
    norm = stacked(f, ["output_norm.weight"])
    tied = "output.weight" not in f.tensors
    lm_head = embed_tokens if tied else stacked(f, ["output.weight"], c.hidden_size)
    if lm_head.shape[0] != c.vocab_size:
        raise UserError(f"{f.path}: output.weight has {lm_head.shape[0]} rows, expected {c.vocab_size}")
    return Qwen3Weights(c, embed_tokens, layers, norm, lm_head)
