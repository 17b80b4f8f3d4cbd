"""The Qwen3 model the engine runs: weights from a GGUF file, a KV cache, and the fast forward pass.

`forward_reference` is modeling.forward, the textbook pass; `forward` is the same arithmetic
arranged for speed, and the tests hold the two equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qwen3repro.convert.reader import GGUFFile
from qwen3repro.engine import modeling
from qwen3repro.engine.logprobs import softmax
from qwen3repro.engine.modeling import apply_rope, causal_mask, rms_norm, rope_cos_sin
from qwen3repro.engine.weights import load_weights
from qwen3repro.errors import UserError

F32 = np.float32


class Qwen3:
    """A Qwen3 model from a GGUF file, with a preallocated KV cache of `n_ctx` positions."""

    def __init__(self, path: Path | str, n_ctx: int = 4096):
        self.file = GGUFFile(path)
        self.weights = w = load_weights(self.file)
        self.config = c = w.config
        if n_ctx < 1:
            raise UserError(f"n_ctx must be at least 1, not {n_ctx}")
        self.n_ctx = min(n_ctx, c.context_length)
        # np.zeros maps untouched pages lazily: memory grows with the positions actually used
        kv_shape = (c.num_hidden_layers, self.n_ctx, c.num_key_value_heads, c.head_dim)
        self.k_cache = np.zeros(kv_shape, F32)
        self.v_cache = np.zeros(kv_shape, F32)
        self.rope_cos, self.rope_sin = rope_cos_sin(np.arange(self.n_ctx), c.head_dim, c.rope_theta)
        # q_norm for every query head and k_norm for every key head, so one rms_norm covers both
        self.qk_norms = [
            np.concatenate(
                [np.tile(layer.q_norm, (c.num_attention_heads, 1)), np.tile(layer.k_norm, (c.num_key_value_heads, 1))]
            )
            for layer in w.layers
        ]

    def _check(self, tokens, start: int) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if len(tokens) == 0:
            raise UserError("forward needs at least one token")
        if start < 0 or start + len(tokens) > self.n_ctx:
            raise UserError(f"{start + len(tokens)} tokens do not fit the context of {self.n_ctx}")
        if tokens.min() < 0 or tokens.max() >= self.config.vocab_size:
            raise UserError(f"token ids must be in 0..{self.config.vocab_size - 1}")
        return tokens

    def forward_reference(self, tokens, start: int = 0) -> np.ndarray:
        """Logits [len(tokens), vocab] for tokens at positions start.., given the cache holds 0..start-1."""
        return modeling.forward(self.weights, self.k_cache, self.v_cache, self._check(tokens, start), start)

    def forward(
        self, tokens, start: int = 0, last_only: bool = False, logits_from: int = 0, observe=None
    ) -> np.ndarray:
        """forward_reference, faster: one product for q/k/v and one for gate/up, q_norm/k_norm and
        RoPE applied to all query and key heads at once from precomputed tables, in-place SwiGLU,
        and with `last_only` the logits of the last position only ([1, vocab]), all that
        generation needs; the output matrix is a quarter of the prefill work otherwise. With
        `logits_from` the logits of positions logits_from.. only (perplexity scores the second half).
        `observe(layer, kind, x)`, if given, sees the input [n, width] of each block's matrix products
        (kind attn_qkv, attn_output, ffn_gate_up, ffn_down): what an importance matrix is made of."""
        seen = observe or (lambda layer, kind, x: None)
        c, w = self.config, self.weights
        tokens = self._check(tokens, start)
        n, end = len(tokens), start + len(tokens)
        n_heads, n_kv, hd, eps = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.rms_norm_eps
        q_dim, kv_dim, ffn = n_heads * hd, n_kv * hd, c.intermediate_size
        cos, sin = self.rope_cos[start:end], self.rope_sin[start:end]
        group = n_heads // n_kv
        scale = F32(1 / np.sqrt(hd))
        mask = causal_mask(start, end) if n > 1 else None  # one new token sees every cached key

        x = w.embed_tokens[tokens]
        for i, layer in enumerate(w.layers):
            h = rms_norm(x, layer.input_layernorm, eps)
            seen(i, "attn_qkv", h)
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
            attn = (softmax(scores) @ values[:, None]).transpose(2, 0, 1, 3).reshape(n, q_dim)
            seen(i, "attn_output", attn)
            x += attn @ layer.o_proj.T
            h = rms_norm(x, layer.post_attention_layernorm, eps)
            seen(i, "ffn_gate_up", h)
            gate_up = h @ layer.gate_up_proj.T
            gate = gate_up[:, :ffn]
            act = np.negative(gate)  # silu(gate) * up, in one buffer
            np.exp(act, out=act)
            act += F32(1)
            np.divide(gate, act, out=act)
            act *= gate_up[:, ffn:]
            seen(i, "ffn_down", act)
            x += act @ layer.down_proj.T
        x = x[-1:] if last_only else x[logits_from:]
        return rms_norm(x, w.norm, eps) @ w.lm_head.T
