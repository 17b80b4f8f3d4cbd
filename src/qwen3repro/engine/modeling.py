"""The Qwen3 forward pass, written to be read beside transformers' modeling_qwen3.py.

One function per module there, in the same order and with the same names: `rms_norm`
(Qwen3RMSNorm), `rope_cos_sin` and `apply_rope` (Qwen3RotaryEmbedding, apply_rotary_pos_emb),
`attention` (Qwen3Attention), `mlp` (Qwen3MLP), `decoder_layer` (Qwen3DecoderLayer) and `forward`
(Qwen3ForCausalLM). Shapes are in the comments: n is the number of new tokens, `end` the number of
positions the cache holds after them. Loading is elsewhere (weights.py); the faster arrangement of
the same arithmetic is qwen3.Qwen3.forward, and the tests hold the two equal.
"""

from __future__ import annotations

import numpy as np

from qwen3repro.engine.logprobs import softmax
from qwen3repro.engine.weights import Qwen3Config, Qwen3Layer, Qwen3Weights

F32 = np.float32


# ----------------------------------------------------------------------------- building blocks
def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""
    variance = np.mean(x * x, axis=-1, keepdims=True)  # [..., d] -> [..., 1]
    return (x / np.sqrt(variance + F32(eps))) * weight  # [..., d]


def silu(x: np.ndarray) -> np.ndarray:
    return x / (F32(1) + np.exp(-x))


def rope_cos_sin(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin for rotate-half RoPE, [len(positions), head_dim], in float32 like transformers."""
    exponents = np.arange(0, head_dim, 2).astype(F32) / F32(head_dim)  # [head_dim/2], float32 as torch has them
    # theta ** exponent rounded once to float32, as torch computes it: numpy's float32 power is off by
    # an ulp on some exponents, which position 4000 turns into 2e-4 of cos and sin
    inv_freq = F32(1) / np.power(np.float64(theta), exponents.astype(np.float64)).astype(F32)  # [head_dim/2]
    freqs = positions.astype(F32)[:, None] * inv_freq[None, :]  # [n, head_dim/2]
    angles = np.concatenate([freqs, freqs], axis=-1)  # [n, head_dim]
    return np.cos(angles), np.sin(angles)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x: [n, heads, head_dim]; rotate_half pairs dimension i with i + head_dim/2 (NeoX style)."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # [n, heads, head_dim]
    return x * cos[:, None, :] + rotated * sin[:, None, :]  # [n, heads, head_dim]


def causal_mask(start: int, end: int) -> np.ndarray:
    """[n, end]: query i (at position start + i) sees keys 0 .. start + i."""
    return np.where(np.arange(end)[None, :] <= np.arange(start, end)[:, None], F32(0), F32(-np.inf))


# ----------------------------------------------------------------------------- Qwen3Attention
def attention(
    h: np.ndarray,
    layer: Qwen3Layer,
    c: Qwen3Config,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    start: int,
    cos: np.ndarray,
    sin: np.ndarray,
) -> np.ndarray:
    """Grouped-query self-attention of n new tokens; writes their keys and values into the cache
    ([n_ctx, kv_heads, head_dim] each) at start .. start + n - 1."""
    n, end = h.shape[0], start + h.shape[0]
    group = c.num_attention_heads // c.num_key_value_heads
    q = (h @ layer.q_proj.T).reshape(n, c.num_attention_heads, c.head_dim)  # [n, hidden] -> [n, heads, head_dim]
    k = (h @ layer.k_proj.T).reshape(n, c.num_key_value_heads, c.head_dim)  # [n, kv_heads, head_dim]
    v = (h @ layer.v_proj.T).reshape(n, c.num_key_value_heads, c.head_dim)  # [n, kv_heads, head_dim]
    q = apply_rope(rms_norm(q, layer.q_norm, c.rms_norm_eps), cos, sin)  # q_norm per head, then RoPE
    k = apply_rope(rms_norm(k, layer.k_norm, c.rms_norm_eps), cos, sin)
    k_cache[start:end] = k
    v_cache[start:end] = v
    keys = k_cache[:end].transpose(1, 2, 0)  # [kv_heads, head_dim, end]
    values = v_cache[:end].transpose(1, 0, 2)  # [kv_heads, end, head_dim]
    # query heads kv*group .. kv*group + group - 1 share key/value head kv
    q = q.reshape(n, c.num_key_value_heads, group, c.head_dim).transpose(1, 2, 0, 3)  # [kv_heads, group, n, head_dim]
    scores = (q @ keys[:, None]) * F32(1 / np.sqrt(c.head_dim)) + causal_mask(start, end)  # [kv_heads, group, n, end]
    attn = softmax(scores) @ values[:, None]  # [kv_heads, group, n, head_dim]
    attn = attn.transpose(2, 0, 1, 3).reshape(n, c.num_attention_heads * c.head_dim)  # [n, heads * head_dim]
    return attn @ layer.o_proj.T  # [n, hidden]


# ----------------------------------------------------------------------------- Qwen3MLP
def mlp(h: np.ndarray, layer: Qwen3Layer) -> np.ndarray:
    """SwiGLU: down(silu(gate(h)) * up(h))."""
    gate = silu(h @ layer.gate_proj.T)  # [n, hidden] -> [n, intermediate]
    up = h @ layer.up_proj.T  # [n, intermediate]
    return (gate * up) @ layer.down_proj.T  # [n, hidden]


# ----------------------------------------------------------------------------- Qwen3DecoderLayer
def decoder_layer(
    x: np.ndarray,
    layer: Qwen3Layer,
    c: Qwen3Config,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    start: int,
    cos: np.ndarray,
    sin: np.ndarray,
) -> np.ndarray:
    """Pre-norm residual blocks: x + attention(norm(x)), then x + mlp(norm(x))."""
    h = rms_norm(x, layer.input_layernorm, c.rms_norm_eps)  # [n, hidden]
    x = x + attention(h, layer, c, k_cache, v_cache, start, cos, sin)  # [n, hidden]
    h = rms_norm(x, layer.post_attention_layernorm, c.rms_norm_eps)  # [n, hidden]
    return x + mlp(h, layer)  # [n, hidden]


# ----------------------------------------------------------------------------- Qwen3ForCausalLM
def forward(w: Qwen3Weights, k_cache: np.ndarray, v_cache: np.ndarray, tokens: np.ndarray, start: int) -> np.ndarray:
    """Logits [n, vocab] for tokens at positions start.., given the caches ([layers, n_ctx,
    kv_heads, head_dim]) hold positions 0 .. start - 1."""
    c = w.config
    cos, sin = rope_cos_sin(np.arange(start, start + len(tokens)), c.head_dim, c.rope_theta)  # [n, head_dim]
    x = w.embed_tokens[tokens].astype(F32)  # [n] -> [n, hidden]
    for i, layer in enumerate(w.layers):
        x = decoder_layer(x, layer, c, k_cache[i], v_cache[i], start, cos, sin)  # [n, hidden]
    x = rms_norm(x, w.norm, c.rms_norm_eps)  # [n, hidden]
    return x @ w.lm_head.T  # [n, vocab]
