"""The Qwen3 model the engine runs: weights from a GGUF file, KV caches, and the fast forward pass.

`forward_reference` is modeling.forward, the textbook pass; `forward` is the same arithmetic
arranged for speed, and the tests hold the two equal. `decode` advances several sequences (lanes,
each with its own cache) by a token in one pass, each bitwise as `forward` would alone. With
`low_memory` the weights stay in the file and each layer is dequantized as the pass reaches it
(weights.py): the same logits, bitwise, in about one layer's float32 memory.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from qwen3repro.engine import modeling
from qwen3repro.engine.logprobs import softmax
from qwen3repro.engine.modeling import apply_rope, causal_mask, rms_norm, rope_cos_sin
from qwen3repro.engine.weights import load_weights
from qwen3repro.errors import UserError
from qwen3repro.gguf_file import GGUFFile

F32 = np.float32
QUERY_BLOCK = 64  # a prefill's queries per block of attention
# Rows each thread must get before an element-wise pass is split among threads: handing work to a
# thread and back has a fixed cost, and BLAS's threads still spin for a while after each product,
# so a light pass (a norm) pays only at many rows and a heavier one (q_norm/k_norm with RoPE,
# SwiGLU) at fewer. The figures behind these: docs/engine.md.
ROWS_EACH = {"norm": 512, "norm_and_rope": 64, "swiglu": 64}


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

    if n_slices:
        split_among_threads(product, n_slices, min_each=2)
    if whole < w.shape[0]:  # the rows of w after the last whole slice
        for b in range(n_rows):
            out[b, whole:] = x[b : b + 1] @ w[whole:].T
    return out


def split_among_threads(work, n: int, min_each: int = 1) -> None:
    """work(first, last) over 0..n split into as many contiguous parts as BLAS may use threads,
    run side by side with BLAS held to one thread each (NumPy releases the GIL in its loops).
    Each part computes what it would in one call, bitwise: only rows or heads are split, never
    a sum. One call where there is one thread or fewer than `min_each` items a thread."""
    blas = _blas_libraries()
    threads = min((lib.get_num_threads() for lib in blas), default=1)
    if threads < 2 or n < threads * min_each:
        work(0, n)
        return
    bounds = np.linspace(0, n, threads + 1).astype(int)
    for lib in blas:
        lib.set_num_threads(1)
    try:
        list(_workers(threads).map(work, bounds[:-1], bounds[1:]))
    finally:
        for lib in blas:
            lib.set_num_threads(threads)


@functools.cache
def _blas_libraries() -> list:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas").lib_controllers


@functools.cache
def _workers(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="qwen3-engine")


def norm_and_rope(qk: np.ndarray, qk_norm: np.ndarray, eps: float, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """q_norm and k_norm ([heads + kv_heads, head_dim] together), then RoPE, on qk [n, heads + kv_heads, head_dim]."""
    return apply_rope(rms_norm(qk, qk_norm, eps), cos, sin)


def rowwise(fn, x: np.ndarray, weight: np.ndarray, eps: float, *per_row: np.ndarray, min_each: int) -> np.ndarray:
    """fn(x, weight, eps, *per_row) computed a block of rows per thread once each thread has
    `min_each` rows: the norms and RoPE work along each row alone, so the split leaves every value
    as it was."""
    out = np.empty(x.shape, F32)

    def rows(first: int, last: int) -> None:
        out[first:last] = fn(x[first:last], weight, eps, *(a[first:last] for a in per_row))

    split_among_threads(rows, len(x), min_each=min_each)
    return out


def swiglu(gate_up: np.ndarray, ffn: int) -> np.ndarray:
    """silu(gate) * up for gate_up [n, 2 ffn] (gate, then up): [n, ffn], in one buffer and, for a
    prefill's many rows, on every thread."""
    out = np.empty((len(gate_up), ffn), F32)

    def rows(first: int, last: int) -> None:
        gate, act = gate_up[first:last, :ffn], out[first:last]
        np.negative(gate, out=act)
        np.exp(act, out=act)
        act += F32(1)
        np.divide(gate, act, out=act)
        act *= gate_up[first:last, ffn:]

    split_among_threads(rows, len(gate_up), min_each=ROWS_EACH["swiglu"])
    return out


class Qwen3:
    """A Qwen3 model from a GGUF file, with `lanes` preallocated KV caches of `n_ctx` positions;
    `low_memory` streams the weights from the file instead of holding them (see weights.py)."""

    def __init__(self, path: Path | str, n_ctx: int = 4096, lanes: int = 1, low_memory: bool = False):
        self.file = GGUFFile(path)
        self.low_memory = low_memory
        self.weights = w = load_weights(self.file, low_memory)
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

    @property
    def lanes(self) -> int:
        return len(self.k_caches)

    @property
    def k_cache(self) -> np.ndarray:
        return self.k_caches[0]

    @property
    def v_cache(self) -> np.ndarray:
        return self.v_caches[0]

    def cache(self, lane: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The keys and values of the lane's first n positions, [layers, n, kv_heads, head_dim] each (views)."""
        return self.k_caches[lane][:, :n], self.v_caches[lane][:, :n]

    def set_cache(self, lane: int, keys: np.ndarray, values: np.ndarray) -> None:
        """Put keys and values (as `cache` gives them) at the lane's first positions."""
        self.k_caches[lane][:, : keys.shape[1]] = keys
        self.v_caches[lane][:, : values.shape[1]] = values

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
        if self.low_memory:
            raise UserError("the textbook pass holds every weight: open the model without low_memory")
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
        return self._logits(rms_norm(x, self.weights.norm, self.config.rms_norm_eps), times_transposed)

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
        return self._logits(rms_norm(x, self.weights.norm, self.config.rms_norm_eps), rows_times_transposed)

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
        for i, layer in enumerate(w.layers):  # low_memory: each layer read from the file here
            h = rowwise(rms_norm, x, layer.input_layernorm, eps, min_each=ROWS_EACH["norm"])
            seen(i, "attn_qkv", h)
            qkv = product(h, layer.qkv_proj)  # [n, q_dim + 2 kv_dim]
            qk = qkv[:, : q_dim + kv_dim].reshape(n, n_heads + n_kv, hd)
            # q_norm and k_norm, then RoPE
            qk = rowwise(norm_and_rope, qk, layer.qk_norm, eps, cos, sin, min_each=ROWS_EACH["norm_and_rope"])
            attn = attend(i, qk, qkv[:, q_dim + kv_dim :].reshape(n, n_kv, hd))  # [n, q_dim]
            seen(i, "attn_output", attn)
            x += product(attn, layer.o_proj)
            h = rowwise(rms_norm, x, layer.post_attention_layernorm, eps, min_each=ROWS_EACH["norm"])
            seen(i, "ffn_gate_up", h)
            act = swiglu(product(h, layer.gate_up_proj), ffn)  # [n, 2 intermediate] -> [n, intermediate]
            seen(i, "ffn_down", act)
            x += product(act, layer.down_proj)
            del layer  # low_memory: this layer's float32 copy goes before the next one is read
        return x

    def _logits(self, h: np.ndarray, product) -> np.ndarray:
        """h [n, hidden] (after the final norm) times the output matrix: [n, vocab]. In low-memory
        mode the matrix comes a slice at a time; each slice's columns are bitwise the whole's."""
        lm_head = self.weights.lm_head
        if isinstance(lm_head, np.ndarray):
            return product(h, lm_head)
        out = np.empty((len(h), lm_head.shape[0]), F32)
        for first, rows in lm_head.slices():
            out[:, first : first + len(rows)] = product(h, rows)
        return out

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
        out = np.empty((n, n_kv, n_heads // n_kv, hd), F32)

        def heads(first: int, last: int) -> None:  # key/value heads first..last-1 and their query heads
            # QUERY_BLOCK queries at a time, each block against only the keys its last query may
            # see: a prefill's causal mask hides half the scores, which are then never computed
            for a in range(0, n, QUERY_BLOCK):
                b = min(n, a + QUERY_BLOCK)
                visible = start + b
                scores = q[first:last, :, a:b] @ keys[first:last, None, :, :visible]  # [kv, group, b - a, visible]
                scores *= F32(1 / np.sqrt(hd))
                if mask is not None:
                    scores += mask[a:b, :visible]
                out[a:b, first:last] = (softmax(scores) @ values[first:last, None, :visible]).transpose(2, 0, 1, 3)

        if n > 1:  # a prefill's heads side by side: its softmax is as much work as its products
            split_among_threads(heads, n_kv)
        else:
            heads(0, n_kv)
        return out.reshape(n, n_heads * hd)
