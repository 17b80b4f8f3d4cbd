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
    qkv_proj: np.ndarray  # q_proj, k_proj and v_proj stacked: one matrix product per layer
    q_proj: np.ndarray  # [num_attention_heads * head_dim, hidden_size], rows of qkv_proj
    k_proj: np.ndarray  # [num_key_value_heads * head_dim, hidden_size]
    v_proj: np.ndarray
    o_proj: np.ndarray  # [hidden_size, num_attention_heads * head_dim]
    q_norm: np.ndarray  # [head_dim], applied per head before RoPE
    k_norm: np.ndarray
    ffn_norm: np.ndarray  # post_attention_layernorm
    gate_up_proj: np.ndarray  # gate_proj and up_proj stacked
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
    """A Qwen3 model from a GGUF file, with a preallocated KV cache of `n_ctx` positions.

    `forward_reference` is the textbook forward pass; `forward` is the same computation arranged for
    speed (stacked projections, RoPE tables computed once, logits of the last position only when
    that is all a caller needs). Tests hold the two equal.
    """

    SUPPORTED = {T.F32, T.F16, T.BF16, T.Q8_0, T.Q5_1, T.Q5_0, T.Q4_1, T.Q4_0,
                 T.Q6_K, T.Q5_K, T.Q4_K, T.Q3_K, T.Q2_K}

    def __init__(self, path: Path | str, n_ctx: int = 4096):
        self.file = GGUFFile(path)
        self.config = c = Qwen3Config.from_gguf(self.file)
        if n_ctx < 1:
            raise UserError(f"n_ctx must be at least 1, not {n_ctx}")
        self.n_ctx = min(n_ctx, c.context_length)
        self.token_embd = self.weights(["token_embd.weight"], c.hidden_size)
        self.layers = [self.layer(i) for i in range(c.num_hidden_layers)]
        self.output_norm = self.weights(["output_norm.weight"])
        tied = "output.weight" not in self.file.tensors
        self.output = self.token_embd if tied else self.weights(["output.weight"], c.hidden_size)
        if self.output.shape[0] != c.vocab_size:
            raise UserError(f"{self.file.path}: output.weight has {self.output.shape[0]} rows, expected {c.vocab_size}")
        # np.zeros maps untouched pages lazily: memory grows with the positions actually used
        kv_shape = (c.num_hidden_layers, self.n_ctx, c.num_key_value_heads, c.head_dim)
        self.k_cache = np.zeros(kv_shape, F32)
        self.v_cache = np.zeros(kv_shape, F32)
        self.rope_cos, self.rope_sin = rope_cos_sin(np.arange(self.n_ctx), c.head_dim, c.rope_theta)
        # q_norm for every query head and k_norm for every key head, so one rms_norm covers both
        self.qk_norms = [np.concatenate([np.tile(layer.q_norm, (c.num_attention_heads, 1)),
                                         np.tile(layer.k_norm, (c.num_key_value_heads, 1))]) for layer in self.layers]

    # ------------------------------------------------------------------ loading
    def weights(self, names: list[str], row: int | None = None) -> np.ndarray:
        """The named tensors stacked row-wise as one float32 matrix (a vector for 1-D tensors).

        F32 tensors that lie back to back in the file are one view of the mapping, no copy. Other
        types are read in slices and dequantized with gguf-py into the result, so the file's pages
        never join this process's memory next to their float32 copy.
        """
        infos = []
        for name in names:
            info = self.file.tensors.get(name)
            if info is None:
                raise UserError(f"{self.file.path}: missing tensor {name}")
            if info.type not in self.SUPPORTED:
                raise UserError(f"{self.file.path}: tensor {name} has unsupported type {info.type.name}")
            if len(info.shape) != (1 if row is None else 2) or (row is not None and info.shape[1] != row):
                raise UserError(f"{self.file.path}: tensor {name} has shape {list(info.shape)}")
            infos.append(info)
        n_rows = sum(i.shape[0] for i in infos) if row is not None else None
        shape = (n_rows, row) if row is not None else infos[0].shape
        contiguous = all(b.offset == a.offset + a.nbytes for a, b in zip(infos, infos[1:]))
        if all(i.type == T.F32 for i in infos) and contiguous:
            return np.frombuffer(self.file.mapping, F32, int(np.prod(shape)), infos[0].offset).reshape(shape)
        out = np.empty(shape, F32)
        first = 0
        for info in infos:
            rows = info.shape[0] if row is not None else 1
            step = max(1, ((1 << 22) * rows) // info.nbytes)  # about 4 MB of file at a time
            for r in range(0, rows, step):
                part = self.file.read_rows(info.name, r, min(rows, r + step))
                target = out[first + r : first + r + len(part)] if row is not None else out
                target[...] = self.decode(part, info.type).reshape(target.shape)
            first += rows
        return out

    @staticmethod
    def decode(part: np.ndarray, qtype: T) -> np.ndarray:
        """Rows of raw bytes as float32: the float types by a cast, block quants by gguf-py."""
        if qtype == T.F32:
            return part.view(F32)
        if qtype == T.F16:
            return part.view(np.float16).astype(F32)
        if qtype == T.BF16:  # bfloat16 is the top half of a float32
            return (part.view(np.uint16).astype(np.uint32) << 16).view(F32)
        return gguf.quants.dequantize(part, qtype)

    def layer(self, i: int) -> Qwen3Layer:
        c = self.config
        d, q_dim, kv_dim = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        b = f"blk.{i}."
        qkv = self.weights([b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"], d)
        gate_up = self.weights([b + "ffn_gate.weight", b + "ffn_up.weight"], d)
        o_proj = self.weights([b + "attn_output.weight"], q_dim)
        down = self.weights([b + "ffn_down.weight"], c.intermediate_size)
        if qkv.shape[0] != q_dim + 2 * kv_dim or gate_up.shape[0] != 2 * c.intermediate_size or o_proj.shape[0] != d or down.shape[0] != d:
            raise UserError(f"{self.file.path}: block {i} has tensor shapes that do not match the metadata")
        norms = {n: self.weights([f"{b}{n}.weight"]) for n in ("attn_norm", "attn_q_norm", "attn_k_norm", "ffn_norm")}
        for n, v in norms.items():
            if v.shape != ((c.head_dim,) if n in ("attn_q_norm", "attn_k_norm") else (d,)):
                raise UserError(f"{self.file.path}: tensor {b}{n}.weight has shape {list(v.shape)}")
        return Qwen3Layer(
            attn_norm=norms["attn_norm"], qkv_proj=qkv, q_proj=qkv[:q_dim], k_proj=qkv[q_dim : q_dim + kv_dim],
            v_proj=qkv[q_dim + kv_dim :], o_proj=o_proj, q_norm=norms["attn_q_norm"], k_norm=norms["attn_k_norm"],
            ffn_norm=norms["ffn_norm"], gate_up_proj=gate_up, gate_proj=gate_up[: c.intermediate_size],
            up_proj=gate_up[c.intermediate_size :], down_proj=down,
        )

    def _check(self, tokens, start: int) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if len(tokens) == 0:
            raise UserError("forward needs at least one token")
        if start < 0 or start + len(tokens) > self.n_ctx:
            raise UserError(f"{start + len(tokens)} tokens do not fit the context of {self.n_ctx}")
        if tokens.min() < 0 or tokens.max() >= self.config.vocab_size:
            raise UserError(f"token ids must be in 0..{self.config.vocab_size - 1}")
        return tokens

    # ------------------------------------------------------------------ the forward pass
    def forward_reference(self, tokens, start: int = 0) -> np.ndarray:
        """Logits [len(tokens), vocab] for tokens at positions start.., given the cache holds 0..start-1."""
        c = self.config
        tokens = self._check(tokens, start)
        n = len(tokens)
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

    def forward(self, tokens, start: int = 0, last_only: bool = False, logits_from: int = 0) -> np.ndarray:
        """forward_reference, faster: one product for q/k/v and one for gate/up, q_norm/k_norm and
        RoPE applied to all query and key heads at once from precomputed tables, in-place SwiGLU,
        and with `last_only` the logits of the last position only ([1, vocab]), all that
        generation needs; the output matrix is a quarter of the prefill work otherwise. With
        `logits_from` the logits of positions logits_from.. only (perplexity scores the second half)."""
        c = self.config
        tokens = self._check(tokens, start)
        n, end = len(tokens), start + len(tokens)
        n_heads, n_kv, hd, eps = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.rms_norm_eps
        q_dim, kv_dim, ffn = n_heads * hd, n_kv * hd, c.intermediate_size
        cos, sin = self.rope_cos[start:end], self.rope_sin[start:end]
        group = n_heads // n_kv
        scale = F32(1 / np.sqrt(hd))
        mask = None
        if n > 1:
            mask = np.where(np.arange(end)[None, :] <= np.arange(start, end)[:, None], F32(0), F32(-np.inf))

        x = self.token_embd[tokens]
        for i, layer in enumerate(self.layers):
            h = rms_norm(x, layer.attn_norm, eps)
            qkv = h @ layer.qkv_proj.T
            qk = qkv[:, : q_dim + kv_dim].reshape(n, n_heads + n_kv, hd)
            qk = apply_rope(rms_norm(qk, self.qk_norms[i], eps), cos, sin)
            self.k_cache[i, start:end] = qk[:, n_heads:]
            self.v_cache[i, start:end] = qkv[:, q_dim + kv_dim :].reshape(n, n_kv, hd)
            keys = self.k_cache[i, :end].transpose(1, 2, 0)
            values = self.v_cache[i, :end].transpose(1, 0, 2)
            q = qk[:, :n_heads].reshape(n, n_kv, group, hd).transpose(1, 2, 0, 3)
            scores = q @ keys[:, None]
            scores *= scale
            if mask is not None:
                scores += mask
            attn = softmax(scores) @ values[:, None]
            x += attn.transpose(2, 0, 1, 3).reshape(n, q_dim) @ layer.o_proj.T
            h = rms_norm(x, layer.ffn_norm, eps)
            gate_up = h @ layer.gate_up_proj.T
            gate = gate_up[:, :ffn]
            act = np.negative(gate)  # silu(gate) * up, in one buffer
            np.exp(act, out=act)
            act += F32(1)
            np.divide(gate, act, out=act)
            act *= gate_up[:, ffn:]
            x += act @ layer.down_proj.T
        x = x[-1:] if last_only else x[logits_from:]
        return rms_norm(x, self.output_norm, eps) @ self.output.T
