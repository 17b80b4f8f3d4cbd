"""The Qwen3 model the engine runs: weights from a GGUF file, KV caches, and the fast forward pass.

`forward_reference` is modeling.forward, the textbook pass; `forward` is the same arithmetic
arranged for speed, and the tests hold the two equal. `decode` advances several sequences (lanes,
each with its own cache) by a token in one pass, each bitwise as `forward` would alone.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from qwen3repro.convert.reader import GGUFFile
from qwen3repro.engine import modeling
from qwen3repro.engine.logprobs import softmax
from qwen3repro.engine.modeling import apply_rope, causal_mask, rms_norm, rope_cos_sin
from qwen3repro.engine.weights import load_weights
from qwen3repro.errors import UserError

F32 = np.float32


def times_transposed(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T: x [n, K], w [N, K] (a layer's weight as stored)."""
    return x @ w.T


def rows_times_transposed(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T for B independent rows (one token of each sequence in a batch), each row bitwise
    what the one-row product x[b:b+1] @ w.T gives, while w is read from memory once for all rows.

    BLAS sums one row (gemv) in another order than a block of rows (gemm): a sequence decoded in
    a batch would drift from the same sequence decoded alone by float rounding, enough to change a
    draw from a flat distribution. So every row still goes through gemv, but over slices of w's
    rows small enough to stay in cache (about 256 KiB) while each row of x meets them in turn; the
    slices are shared out among as many threads as BLAS may use, each running one-thread gemvs."""
    n_rows, k = x.shape
    if n_rows == 1 or not w.flags.c_contiguous:
        return np.concatenate([x[b : b + 1] @ w.T for b in range(n_rows)])
    rows = int(min(256, max(8, 2 ** np.floor(np.log2(65536 / k)))))  # w's rows per slice
    n_slices, whole = w.shape[0] // rows, w.shape[0] // rows * rows
    out = np.empty((n_rows, w.shape[0]), F32)
    slices = w[:whole].reshape(n_slices, rows, k).transpose(0, 2, 1)[:, None]  # [slices, 1, K, rows]

    def product(first: int, last: int) -> None:
        # matmul's loop runs slice-major here (its output is [slices, B, 1, rows]), each a gemv
        part = np.matmul(x[None, :, None, :], slices[first:last])  # [last - first, B, 1, rows]
        out[:, first * rows : last * rows] = part[:, :, 0, :].transpose(1, 0, 2).reshape(n_rows, -1)

    blas = _blas_libraries()
    threads = min((lib.get_num_threads() for lib in blas), default=1)
    if threads > 1 and n_slices >= 2 * threads:
        bounds = np.linspace(0, n_slices, threads + 1).astype(int)
        for lib in blas:
            lib.set_num_threads(1)
        try:
            list(_workers(threads).map(product, bounds[:-1], bounds[1:]))
        finally:
            for lib in blas:
                lib.set_num_threads(threads)
    elif n_slices:
        product(0, n_slices)
    if whole < w.shape[0]:  # the rows of w after the last whole slice
        for b in range(n_rows):
            out[b, whole:] = x[b : b + 1] @ w[whole:].T
    return out


@functools.cache
def _blas_libraries() -> list:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas").lib_controllers


@functools.cache
def _workers(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="qwen3-rows")


class Qwen3:
    """A Qwen3 model from a GGUF file, with `lanes` preallocated KV caches of `n_ctx` positions."""

    def __init__(self, path: Path | str, n_ctx: int = 4096, lanes: int = 1):
        self.file = GGUFFile(path)
        self.weights = w = load_weights(self.file)
        self.config = c = w.config
        if n_ctx < 1:
            raise UserError(f"n_ctx must be at least 1, not {n_ctx}")
        if lanes < 1:
            raise UserError(f"lanes must be at least 1, not {lanes}")
        self.n_ctx = min(n_ctx, c.context_length)
        # One KV cache per lane: a sequence in flight owns a lane, so several advance together
        # (decode). np.zeros maps untouched pages lazily: memory grows with the positions used.
        kv_shape = (c.num_hidden_layers, self.n_ctx, c.num_key_value_heads, c.head_dim)
        self.k_caches = [np.zeros(kv_shape, F32) for _ in range(lanes)]
        self.v_caches = [np.zeros(kv_shape, F32) for _ in range(lanes)]
        self.rope_cos, self.rope_sin = rope_cos_sin(np.arange(self.n_ctx), c.head_dim, c.rope_theta)
        # q_norm for every query head and k_norm for every key head, so one rms_norm covers both
        self.qk_norms = [
            np.concatenate(
                [np.tile(layer.q_norm, (c.num_attention_heads, 1)), np.tile(layer.k_norm, (c.num_key_value_heads, 1))]
            )
            for layer in w.layers
        ]

    @property
    def lanes(self) -> int:
        return len(self.k_caches)

    @property
    def k_cache(self) -> np.ndarray:
        return self.k_caches[0]

    @property
    def v_cache(self) -> np.ndarray:
        return self.v_caches[0]

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
        self, tokens, start: int = 0, last_only: bool = False, logits_from: int = 0, observe=None, lane: int = 0
    ) -> np.ndarray:
        """forward_reference, faster: one product for q/k/v and one for gate/up, q_norm/k_norm and
        RoPE applied to all query and key heads at once from precomputed tables, in-place SwiGLU,
        and with `last_only` the logits of the last position only ([1, vocab]), all that
        generation needs; the output matrix is a quarter of the prefill work otherwise. With
        `logits_from` the logits of positions logits_from.. only (perplexity scores the second half).
        `observe(layer, kind, x)`, if given, sees the input [n, width] of each block's matrix products
        (kind attn_qkv, attn_output, ffn_gate_up, ffn_down): what an importance matrix is made of.
        `lane` picks the KV cache (see decode)."""
        tokens = self._check(tokens, start)
        end = start + len(tokens)
        mask = causal_mask(start, end) if len(tokens) > 1 else None  # one new token sees every cached key

        def attend(i, qk, v):
            return self._attend(i, lane, qk, v, start, mask)

        cos, sin = self.rope_cos[start:end], self.rope_sin[start:end]
        x = self._layers(tokens, cos, sin, attend, times_transposed, observe)
        x = x[-1:] if last_only else x[logits_from:]
        return rms_norm(x, self.weights.norm, self.config.rms_norm_eps) @ self.weights.lm_head.T

    def decode(self, tokens, lanes, positions) -> np.ndarray:
        """One new token for each of several sequences: token b goes to lane lanes[b] at position
        positions[b] (its cache holds 0 .. positions[b] - 1). Logits [B, vocab]. Decoding one
        sequence reads every weight per token; here the matrix products read them once for all B,
        and only attention runs sequence by sequence, each over its own cache."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        lanes, positions = list(lanes), [int(p) for p in positions]
        for t, lane, pos in zip(tokens, lanes, positions, strict=True):
            self._check([t], pos)
            if not 0 <= lane < self.lanes:
                raise UserError(f"lane {lane} does not exist (the model has {self.lanes})")

        def attend(i, qk, v):  # qk [B, heads + kv_heads, head_dim], v [B, kv_heads, head_dim]
            rows = [
                self._attend(i, lane, qk[b : b + 1], v[b : b + 1], pos, None)
                for b, (lane, pos) in enumerate(zip(lanes, positions))
            ]
            return np.concatenate(rows)  # [B, heads * head_dim]

        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        x = self._layers(tokens, cos, sin, attend, rows_times_transposed, None)
        return rows_times_transposed(rms_norm(x, self.weights.norm, self.config.rms_norm_eps), self.weights.lm_head)

    # ------------------------------------------------------------------ the pass, in two parts
    def _layers(self, tokens: np.ndarray, cos: np.ndarray, sin: np.ndarray, attend, product, observe) -> np.ndarray:
        """Every decoder layer over n tokens ([n] ids; cos and sin [n, head_dim] at their positions);
        `attend(layer, qk, v)` does attention given the normed, rotated q and k heads and v, and
        `product(x, w)` is x @ w.T. Returns the last hidden states [n, hidden], before the final norm."""
        seen = observe or (lambda layer, kind, x: None)
        c, w = self.config, self.weights
        n = len(tokens)
        n_heads, n_kv, hd, eps = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.rms_norm_eps
        q_dim, kv_dim, ffn = n_heads * hd, n_kv * hd, c.intermediate_size

        x = w.embed_tokens[tokens]  # [n, hidden]
        for i, layer in enumerate(w.layers):
            h = rms_norm(x, layer.input_layernorm, eps)
            seen(i, "attn_qkv", h)
            qkv = product(h, layer.qkv_proj)  # [n, q_dim + 2 kv_dim]
            qk = qkv[:, : q_dim + kv_dim].reshape(n, n_heads + n_kv, hd)
            qk = apply_rope(rms_norm(qk, self.qk_norms[i], eps), cos, sin)  # q_norm, k_norm, then RoPE
            attn = attend(i, qk, qkv[:, q_dim + kv_dim :].reshape(n, n_kv, hd))  # [n, q_dim]
            seen(i, "attn_output", attn)
            x += product(attn, layer.o_proj)
            h = rms_norm(x, layer.post_attention_layernorm, eps)
            seen(i, "ffn_gate_up", h)
            gate_up = product(h, layer.gate_up_proj)  # [n, 2 intermediate]
            gate = gate_up[:, :ffn]
            act = np.negative(gate)  # silu(gate) * up, in one buffer
            np.exp(act, out=act)
            act += F32(1)
            np.divide(gate, act, out=act)
            act *= gate_up[:, ffn:]
            seen(i, "ffn_down", act)
            x += product(act, layer.down_proj)
        return x

    def _attend(self, i: int, lane: int, qk: np.ndarray, v: np.ndarray, start: int, mask) -> np.ndarray:
        """Grouped-query attention of n new tokens of one sequence at positions start..: their keys
        (qk's last kv_heads) and values v go into the lane's cache at layer i; [n, heads * head_dim]."""
        c = self.config
        n, end = qk.shape[0], start + qk.shape[0]
        n_heads, n_kv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        k_cache, v_cache = self.k_caches[lane][i], self.v_caches[lane][i]
        k_cache[start:end] = qk[:, n_heads:]
        v_cache[start:end] = v
        keys = k_cache[:end].transpose(1, 2, 0)  # [kv_heads, head_dim, end]
        values = v_cache[:end].transpose(1, 0, 2)  # [kv_heads, end, head_dim]
        # query heads kv*group .. kv*group + group - 1 share key/value head kv
        q = qk[:, :n_heads].reshape(n, n_kv, n_heads // n_kv, hd).transpose(1, 2, 0, 3)  # [kv, group, n, hd]
        scores = q @ keys[:, None]  # [kv_heads, group, n, end]
        scores *= F32(1 / np.sqrt(hd))
        if mask is not None:
            scores += mask
        return (softmax(scores) @ values[:, None]).transpose(2, 0, 1, 3).reshape(n, n_heads * hd)
