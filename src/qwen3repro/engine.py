"""The Qwen3 forward pass in NumPy, with weights and hyperparameters read from a GGUF file.

Meant to be read next to transformers' modeling_qwen3.py: the same steps in the same order, with
the model's own names. F32 tensors are views of the memory-mapped file (no copy); other types are
dequantized with gguf-py at load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from .errors import UserError
from .gguf_file import GGUFFile

F32 = np.float32


@dataclass(frozen=True)
class Qwen3Config:
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
    attn_norm: np.ndarray  # input_layernorm
    q_proj: np.ndarray  # [num_attention_heads * head_dim, hidden_size]
    k_proj: np.ndarray  # [num_key_value_heads * head_dim, hidden_size]
    v_proj: np.ndarray
    o_proj: np.ndarray  # [hidden_size, num_attention_heads * head_dim]
    q_norm: np.ndarray  # [head_dim], applied per head before RoPE
    k_norm: np.ndarray
    ffn_norm: np.ndarray  # post_attention_layernorm
    gate_proj: np.ndarray
    up_proj: np.ndarray
    down_proj: np.ndarray


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    variance = np.mean(x * x, axis=-1, keepdims=True)
    return (x / np.sqrt(variance + F32(eps))) * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (F32(1) + np.exp(-x))


def rope_cos_sin(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin for rotate-half RoPE, [len(positions), head_dim], in float32 like transformers."""
    inv_freq = F32(1) / (F32(theta) ** (np.arange(0, head_dim, 2).astype(F32) / F32(head_dim)))
    freqs = positions.astype(F32)[:, None] * inv_freq[None, :]
    angles = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(angles), np.sin(angles)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x: [tokens, heads, head_dim]; rotate_half pairs dimension i with i + head_dim/2 (NeoX style)."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Qwen3:
    """A Qwen3 model from a GGUF file, with a preallocated KV cache of `n_ctx` positions."""

    SUPPORTED = {T.F32, T.F16, T.BF16, T.Q8_0, T.Q5_1, T.Q5_0, T.Q4_1, T.Q4_0,
                 T.Q6_K, T.Q5_K, T.Q4_K, T.Q3_K, T.Q2_K}

    def __init__(self, path: Path | str, n_ctx: int = 4096):
        self.file = GGUFFile(path)
        self.config = c = Qwen3Config.from_gguf(self.file)
        self.n_ctx = min(n_ctx, c.context_length)
        self.token_embd = self.weight("token_embd.weight", (c.vocab_size, c.hidden_size))
        self.layers = [self.layer(i) for i in range(c.num_hidden_layers)]
        self.output_norm = self.weight("output_norm.weight", (c.hidden_size,))
        tied = "output.weight" not in self.file.tensors
        self.output = self.token_embd if tied else self.weight("output.weight", (c.vocab_size, c.hidden_size))
        kv_shape = (c.num_hidden_layers, self.n_ctx, c.num_key_value_heads, c.head_dim)
        self.k_cache = np.zeros(kv_shape, F32)
        self.v_cache = np.zeros(kv_shape, F32)

    def weight(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        info = self.file.tensors.get(name)
        if info is None:
            raise UserError(f"{self.file.path}: missing tensor {name}")
        if info.shape != shape:
            raise UserError(f"{self.file.path}: tensor {name} has shape {list(info.shape)}, expected {list(shape)}")
        if info.type not in self.SUPPORTED:
            raise UserError(f"{self.file.path}: tensor {name} has unsupported type {info.type.name}")
        raw = self.file.raw(name)
        if info.type == T.F32:
            return raw.view(F32).reshape(shape)
        return gguf.quants.dequantize(raw.reshape(*shape[:-1], -1), info.type).reshape(shape)

    def layer(self, i: int) -> Qwen3Layer:
        c = self.config
        d, q_dim, kv_dim = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        w = lambda name, *shape: self.weight(f"blk.{i}.{name}.weight", shape)  # noqa: E731
        return Qwen3Layer(
            attn_norm=w("attn_norm", d), q_proj=w("attn_q", q_dim, d), k_proj=w("attn_k", kv_dim, d),
            v_proj=w("attn_v", kv_dim, d), o_proj=w("attn_output", d, q_dim), q_norm=w("attn_q_norm", c.head_dim),
            k_norm=w("attn_k_norm", c.head_dim), ffn_norm=w("ffn_norm", d), gate_proj=w("ffn_gate", c.intermediate_size, d),
            up_proj=w("ffn_up", c.intermediate_size, d), down_proj=w("ffn_down", d, c.intermediate_size),
        )

    def forward(self, tokens, start: int = 0) -> np.ndarray:
        """Logits [len(tokens), vocab] for tokens at positions start.., given the cache holds 0..start-1."""
        c = self.config
        tokens = np.asarray(tokens, dtype=np.int64)
        n = len(tokens)
        if n == 0:
            raise UserError("forward needs at least one token")
        if start + n > self.n_ctx:
            raise UserError(f"{start + n} tokens do not fit the context of {self.n_ctx}")
        if tokens.min() < 0 or tokens.max() >= c.vocab_size:
            raise UserError(f"token ids must be in 0..{c.vocab_size - 1}")
        end = start + n
        cos, sin = rope_cos_sin(np.arange(start, end), c.head_dim, c.rope_theta)
        # query i (at position start+i) sees keys 0..start+i
        mask = np.where(np.arange(end)[None, :] <= np.arange(start, end)[:, None], F32(0), F32(-np.inf))
        group = c.num_attention_heads // c.num_key_value_heads
        scale = F32(1 / np.sqrt(c.head_dim))

        x = self.token_embd[tokens].astype(F32)
        for i, layer in enumerate(self.layers):
            # self-attention
            h = rms_norm(x, layer.attn_norm, c.rms_norm_eps)
            q = (h @ layer.q_proj.T).reshape(n, c.num_attention_heads, c.head_dim)
            k = (h @ layer.k_proj.T).reshape(n, c.num_key_value_heads, c.head_dim)
            v = (h @ layer.v_proj.T).reshape(n, c.num_key_value_heads, c.head_dim)
            q = apply_rope(rms_norm(q, layer.q_norm, c.rms_norm_eps), cos, sin)
            k = apply_rope(rms_norm(k, layer.k_norm, c.rms_norm_eps), cos, sin)
            self.k_cache[i, start:end] = k
            self.v_cache[i, start:end] = v
            keys = self.k_cache[i, :end].transpose(1, 2, 0)  # [kv_heads, head_dim, positions]
            values = self.v_cache[i, :end].transpose(1, 0, 2)  # [kv_heads, positions, head_dim]
            # grouped-query attention: query heads kv*group .. kv*group+group-1 share kv head `kv`
            q = q.reshape(n, c.num_key_value_heads, group, c.head_dim).transpose(1, 2, 0, 3)
            scores = (q @ keys[:, None]) * scale + mask  # [kv_heads, group, n, positions]
            attn = softmax(scores) @ values[:, None]  # [kv_heads, group, n, head_dim]
            attn = attn.transpose(2, 0, 1, 3).reshape(n, c.num_attention_heads * c.head_dim)
            x = x + attn @ layer.o_proj.T
            # SwiGLU MLP
            h = rms_norm(x, layer.ffn_norm, c.rms_norm_eps)
            x = x + (silu(h @ layer.gate_proj.T) * (h @ layer.up_proj.T)) @ layer.down_proj.T
        x = rms_norm(x, self.output_norm, c.rms_norm_eps)
        return x @ self.output.T
