"""Training's arithmetic, the same bits at any thread count and on every x86-64 CPU (pinned:
qwen3repro.numerics): every product in OpenBLAS on fixed row blocks (the decoder's linears too), the
151,936-way output layer's loss and gradients in one fused pass over the rows of a `Vocabulary` (the
tokens the text holds, and one row shared by all the others), and the gradient norm in NumPy.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def output_cross_entropy(hidden, weight, targets, log_multiplicity=None, chunk: int = 256, gradients: bool = True):
    """Mean cross-entropy of softmax(hidden @ weight.T) against targets, and its gradients
    (None, None when `gradients` is off, as for evaluation).

    `log_multiplicity` (one entry per row of `weight`, or None for all zeros) is the log of how many
    vocabulary entries a row stands for: a row shared by m tokens enters the softmax's normaliser m
    times, while a target among them scores its own logit (see `Vocabulary`). The same value as
    F.cross_entropy on the logits of the expanded vocabulary, computed chunk by chunk in one reused
    [chunk, rows] buffer with the gradients worked out on the way (softmax minus one-hot). Everything
    runs in NumPy on one thread apart from the three products (matmul_in_parts): ATen's reductions
    split their sums by thread count, and the bits with them.
    """
    import torch

    n = hidden.shape[0]
    h_all = hidden.detach().contiguous().numpy()
    w = weight.detach().contiguous().numpy()
    t_all = np.asarray(targets)
    grad_hidden = np.empty_like(h_all) if gradients else None
    grad_weight = np.zeros_like(w) if gradients else None
    product = np.empty_like(w) if gradients else None
    buffer = np.empty((min(chunk, n), w.shape[0]), w.dtype)
    if log_multiplicity is not None:
        log_multiplicity = np.asarray(log_multiplicity, dtype=w.dtype)
    total = 0.0
    for i in range(0, n, chunk):
        h, t = h_all[i : i + chunk], t_all[i : i + chunk]
        rows = np.arange(len(t))
        logits = buffer[: len(t)]  # [chunk, rows]
        matmul_in_parts(h, w.T, logits)
        target_logits = logits[rows, t].astype(np.float64)  # a shared row's target scores its own logit
        if log_multiplicity is not None:
            logits += log_multiplicity  # ...while the normaliser counts the row once per token it stands for
        top = logits.max(axis=1, keepdims=True)
        logits -= top
        np.exp(logits, out=logits)
        sums = logits.sum(axis=1, keepdims=True)
        total += float(np.sum(np.log(sums[:, 0], dtype=np.float64) + top[:, 0] - target_logits))
        if not gradients:
            continue
        logits /= sums * n  # softmax / n, the mean's share
        logits[rows, t] -= logits.dtype.type(1 / n)
        matmul_in_parts(logits, w, grad_hidden[i : i + chunk])
        matmul_in_parts(logits.T, h, product)
        grad_weight += product
    if not gradients:
        return total / n, None, None
    return total / n, torch.from_numpy(grad_hidden), torch.from_numpy(grad_weight)


# Pinned (qwen3repro.numerics), OpenBLAS's AVX2 kernels give the same bits on every x86-64 CPU and
# run several times faster than MKL's one cross-vendor branch, which would triple training's time;
# but their bits follow how a product is cut among threads. So OpenBLAS runs on one thread, and
# each product is cut into a fixed number of row blocks computed side by side: the same bits
# whether one thread computes the blocks or several.
PRODUCT_PARTS = 2


def matmul_in_parts(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a @ b, as PRODUCT_PARTS products of a's row blocks, on up to that many threads."""
    import torch

    bounds = np.linspace(0, a.shape[0], PRODUCT_PARTS + 1).astype(int)
    threads = min(PRODUCT_PARTS, torch.get_num_threads())
    for _ in _product_threads(threads).map(
        lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]), bounds[:-1], bounds[1:]
    ):
        pass


@functools.cache
def _product_threads(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="qwen3-train")


def _pinned_linear():
    """y = x @ weight.T with both gradients, each product through matmul_in_parts. Pinned, torch's own
    linears run on MKL's cross-vendor branch (COMPATIBLE,STRICT), whose sgemm gave other bits at 3
    threads than at 1, 2 or 4, and is several times slower than OpenBLAS's AVX2 kernels."""
    import torch

    def flat(t):
        return t.detach().reshape(-1, t.shape[-1]).contiguous().numpy()

    class Linear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight):
            ctx.save_for_backward(x, weight)
            out = np.empty((flat(x).shape[0], weight.shape[0]), np.float32)  # [tokens, out]
            matmul_in_parts(flat(x), weight.detach().numpy().T, out)
            return torch.from_numpy(out).reshape(*x.shape[:-1], weight.shape[0])

        @staticmethod
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            g, x2 = flat(grad), flat(x)  # [tokens, out], [tokens, in]
            grad_x, grad_weight = np.empty_like(x2), np.empty(weight.shape, np.float32)
            matmul_in_parts(g, weight.detach().numpy(), grad_x)
            matmul_in_parts(g.T, x2, grad_weight)
            return torch.from_numpy(grad_x).reshape(x.shape), torch.from_numpy(grad_weight)

    return Linear.apply


def pin_linears(model) -> None:
    """Every linear of the decoder (q/k/v/o, gate/up/down) through _pinned_linear; the output layer is
    output_cross_entropy's."""
    import torch

    linear = _pinned_linear()
    for module in model.model.modules():
        if isinstance(module, torch.nn.Linear):
            if module.bias is not None:
                raise ValueError("a Qwen3 decoder linear has no bias")
            module.forward = functools.partial(lambda m, x: linear(x, m.weight), module)


class Vocabulary:
    """The tokens training gives a row of their own; every other token of the vocabulary shares one row.

    The training works use about 20,500 of Qwen3's 151,936 tokens. A token the text never contains
    gets the same gradient as every other such token, so tying them to one row loses nothing the data
    could teach, and their logits are then equal: the full softmax is the softmax over the seen rows
    plus the shared row counted (vocabulary - seen) times. The loss stays exactly the full-vocabulary
    loss of the Qwen3ForCausalLM that `expand` writes (the shared row copied into every unseen
    token's row), at a seventh of the output layer's products.
    """

    def __init__(self, seen: np.ndarray, size: int):
        self.seen = np.unique(np.asarray(seen, dtype=np.int64))
        self.size = size
        if len(self.seen) and not 0 <= self.seen[0] <= self.seen[-1] < size:
            raise ValueError(f"token ids must lie in 0..{size - 1}")
        self.shared_row = len(self.seen)
        self.n_rows = len(self.seen) + 1
        self.lookup = np.full(size, self.shared_row, dtype=np.int64)  # token id -> its row
        self.lookup[self.seen] = np.arange(len(self.seen))

    def rows(self, token_ids: np.ndarray) -> np.ndarray:
        return self.lookup[token_ids]

    def representatives(self) -> np.ndarray:
        """A token id per row: the seen tokens, then the first token the shared row stands for."""
        unseen = np.setdiff1d(np.arange(min(self.size, len(self.seen) + 1)), self.seen)
        return np.append(self.seen, unseen[:1] if len(unseen) else self.seen[:1])

    def log_multiplicity(self) -> np.ndarray:
        """Per row, the log of the tokens it stands for: 0 for a seen token, log(size - seen) for the shared row."""
        out = np.zeros(self.n_rows)
        unseen = self.size - len(self.seen)
        out[self.shared_row] = np.log(unseen) if unseen else -np.inf
        return out

    def expand(self, compact: np.ndarray) -> np.ndarray:
        """[n_rows, d] -> [size, d]: every token's row of the full vocabulary."""
        return compact[self.lookup]


def clip_gradients(parameters, max_norm: float) -> float:
    """torch.nn.utils.clip_grad_norm_, the norm summed in float64 by NumPy on one thread: ATen's sum
    over a whole tensor splits it by thread count (tensor.sum() gave one set of bits at 1 and 4
    threads, another at 2 and 3), so a norm of ATen's holds the same bits only by the luck of its shapes."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = math.sqrt(sum(float(np.sum(np.square(g.numpy(), dtype=np.float64))) for g in grads))
    coefficient = min(1.0, max_norm / (norm + 1e-6))
    for g in grads:
        g.mul_(coefficient)
    return norm


def fused_loss(log_multiplicity: np.ndarray):
    import torch

    class OutputCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets):
            loss, grad_hidden, grad_weight = output_cross_entropy(hidden, weight, targets, log_multiplicity)
            ctx.save_for_backward(grad_hidden, grad_weight)
            return hidden.new_tensor(loss)

        @staticmethod
        def backward(ctx, grad_output):
            grad_hidden, grad_weight = ctx.saved_tensors
            return grad_hidden * grad_output, grad_weight * grad_output, None

    return OutputCrossEntropy.apply
