"""Pretraining a small Qwen3ForCausalLM on the Shakespeare corpus, on the CPU, deterministically.

The office hours' trajectory (random weights -> pretraining -> base model) at a scale a laptop
runs in minutes: transformers' Qwen3ForCausalLM with the full 151,936-token vocabulary and the
real tokenizer, next-token cross-entropy over that whole vocabulary (the tokens the text never
contains share one row: `Vocabulary`), AdamW with linear warm-up and cosine decay. Batches are
random windows of the training works drawn from a seeded generator; the held-out works are scored
on fixed windows every `eval_every` steps. The result is a Hugging Face directory like a download.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from qwen3repro.errors import UserError
from qwen3repro.model import architecture, shakespeare, synthetic, tokenizer_files
from qwen3repro.pipeline.progress import status

log = logging.getLogger(__name__)

DEFAULTS = {
    "steps": 600,
    "max_minutes": None,
    "batch_size": 8,
    "seq_len": 128,
    "learning_rate": 1e-2,
    "min_lr_ratio": 0.1,
    "warmup_steps": 30,
    "weight_decay": 0.01,
    "eval_every": 50,
    "eval_windows": 64,
    "held_out_every": 10,
    "threads": None,
}


def check_settings(training: dict) -> dict:
    s = {**DEFAULTS, **(training or {})}
    if s["steps"] < 1:
        raise UserError(f"training.steps must be at least 1, not {s['steps']}")
    if s["max_minutes"] is not None and s["max_minutes"] <= 0:
        raise UserError(f"training.max_minutes must be positive, not {s['max_minutes']}")
    for key in ("batch_size", "seq_len", "eval_every", "eval_windows"):
        if s[key] < 1:
            raise UserError(f"training.{key} must be at least 1, not {s[key]}")
    if not 0 <= s["warmup_steps"] < s["steps"] + 1:
        raise UserError(f"training.warmup_steps must be in 0..steps, not {s['warmup_steps']}")
    return s


def tokenize(texts: dict[str, str], tokenizer_json: Path) -> np.ndarray:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    return np.asarray(tok.encode(shakespeare.joined(texts), add_special_tokens=False).ids, dtype=np.int64)


def learning_rate(step: int, s: dict) -> float:
    """Linear warm-up to learning_rate, then cosine decay to min_lr_ratio * learning_rate."""
    if step < s["warmup_steps"]:
        return s["learning_rate"] * (step + 1) / s["warmup_steps"]
    progress = (step - s["warmup_steps"]) / max(1, s["steps"] - s["warmup_steps"])
    floor = s["min_lr_ratio"]
    return s["learning_rate"] * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def held_out_windows(tokens: np.ndarray, seq_len: int, n: int) -> np.ndarray:
    """n non-overlapping windows of seq_len + 1 tokens, evenly spread over the held-out text."""
    span = seq_len + 1
    available = len(tokens) // span
    if available < 1:
        raise UserError(f"the held-out text has {len(tokens)} tokens, fewer than one window of {span}")
    picks = np.linspace(0, available - 1, min(n, available)).astype(np.int64)
    return np.stack([tokens[i * span : (i + 1) * span] for i in picks])


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


def _fused_loss(log_multiplicity: np.ndarray):
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


def held_out_set(model_dir: Path, training: dict) -> np.ndarray:
    """The held-out windows a training run with these settings scores, from a model directory."""
    s = check_settings(training)
    _, held_out_texts = shakespeare.split(s["held_out_every"])
    return held_out_windows(
        tokenize(held_out_texts, Path(model_dir) / "tokenizer.json"), s["seq_len"], s["eval_windows"]
    )


def evaluate(model, vocab: Vocabulary, windows: np.ndarray, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats) over the windows, over the full vocabulary."""
    import torch

    total, count = 0.0, 0
    rows = vocab.rows(windows)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = torch.from_numpy(rows[i : i + batch_size])
            hidden = model.model(batch[:, :-1]).last_hidden_state
            loss, _, _ = output_cross_entropy(
                hidden.reshape(-1, hidden.shape[-1]),
                model.lm_head.weight,
                batch[:, 1:].reshape(-1).numpy(),
                vocab.log_multiplicity(),
                gradients=False,
            )
            total += loss * batch[:, 1:].numel()
            count += batch[:, 1:].numel()
    model.train()
    return total / count


def _model_and_optimizer(arch: dict, vocab: Vocabulary, seed: int, s: dict):
    """A freshly initialised Qwen3ForCausalLM (seeded) over the vocabulary's rows, and its AdamW,
    decay on matrices only."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if s["threads"]:
        torch.set_num_threads(s["threads"])
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    compact = dict(arch, vocab_size=vocab.n_rows)
    config = architecture.config_json(compact, torch_dtype="float32")
    config.update(bos_token_id=None, eos_token_id=None)  # the compact rows are not token ids
    model = Qwen3ForCausalLM(Qwen3Config(**config))
    pin_linears(model)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s["learning_rate"],
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    return model, optimizer


def _step(model, optimizer, fused_loss, batch, lr: float) -> float:
    """One optimizer step on a batch of windows of rows [batch, seq_len + 1]; returns the training loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    hidden = model.model(batch[:, :-1]).last_hidden_state
    loss = fused_loss(hidden.reshape(-1, hidden.shape[-1]), model.lm_head.weight, batch[:, 1:].reshape(-1).numpy())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def train(
    out_dir: Path, preset: str, architecture_overrides: dict | None, seed: int, training: dict, dtype: str = "float32"
) -> dict:
    """Train and write a complete Hugging Face model directory into out_dir; returns the recipe."""

    s = check_settings(training)
    arch = architecture.resolve(preset, architecture_overrides)
    out_dir = Path(out_dir)
    tokenizer_files.write_tokenizer_files(out_dir)
    train_texts, held_out_texts = shakespeare.split(s["held_out_every"])
    train_tokens = tokenize(train_texts, out_dir / "tokenizer.json")
    held_out_tokens = tokenize(held_out_texts, out_dir / "tokenizer.json")
    if len(train_tokens) < s["batch_size"] * (s["seq_len"] + 1):
        raise UserError(
            f"the training text has {len(train_tokens)} tokens, fewer than one batch of "
            f"{s['batch_size']} x {s['seq_len'] + 1}"
        )
    vocab = Vocabulary(train_tokens, arch["vocab_size"])
    windows = held_out_windows(held_out_tokens, s["seq_len"], s["eval_windows"])
    model, optimizer = _model_and_optimizer(arch, vocab, seed, s)
    curve, seconds = _optimize(model, optimizer, vocab, vocab.rows(train_tokens), windows, seed, s)
    save(model, vocab, arch, out_dir, dtype)
    write_curve(curve, out_dir / "training_curve.csv")
    return {
        "preset": preset,
        "architecture": arch,
        "seed": seed,
        "dtype": dtype,
        "training": s,
        "n_parameters": architecture.n_parameters(arch),
        "steps_done": curve[-1]["step"],
        "train_tokens": int(len(train_tokens)),
        "distinct_train_tokens": int(len(vocab.seen)),
        "held_out_tokens": int(len(held_out_tokens)),
        "held_out_works": sorted(held_out_texts),
        "initial_held_out_loss": curve[0]["held_out_loss"],
        "final_held_out_loss": curve[-1]["held_out_loss"],
        "seconds": seconds,
    }


def _optimize(model, optimizer, vocab: Vocabulary, train_rows: np.ndarray, windows: np.ndarray, seed: int, s: dict):
    """The training loop: random windows of the training text from a seeded generator, the
    held-out loss every eval_every steps. Returns the curve and the seconds taken. A time limit
    (max_minutes) that is reached fails the run: stopping early would make the model depend on
    the machine's speed."""
    import torch

    fused_loss = _fused_loss(vocab.log_multiplicity())
    rng = np.random.default_rng(seed)
    span = s["seq_len"] + 1
    started = time.perf_counter()
    initial = evaluate(model, vocab, windows, s["batch_size"])
    curve = [
        {
            "step": 0,
            "tokens": 0,
            "learning_rate": 0.0,
            "train_loss": float("nan"),
            "held_out_loss": initial,
            "seconds": 0.0,
        }
    ]
    log.info("step 0: held-out loss %.3f", initial)
    for step in range(s["steps"]):
        if s["max_minutes"] is not None and time.perf_counter() - started > 60 * s["max_minutes"]:
            raise UserError(
                f"training.max_minutes: {s['max_minutes']} minutes reached after {step} of {s['steps']} steps; "
                "stopping there would make the model depend on this machine's speed: raise or remove the limit"
            )
        lr = learning_rate(step, s)
        starts = rng.integers(0, len(train_rows) - span, s["batch_size"])
        batch = torch.from_numpy(np.stack([train_rows[i : i + span] for i in starts]))
        train_loss = _step(model, optimizer, fused_loss, batch, lr)
        if (step + 1) % s["eval_every"] == 0 or step + 1 == s["steps"]:
            curve.append(_record(model, vocab, windows, s, step + 1, lr, train_loss, started))
    return curve, time.perf_counter() - started


def _record(
    model,
    vocab: Vocabulary,
    windows: np.ndarray,
    s: dict,
    steps_done: int,
    lr: float,
    train_loss: float,
    started: float,
) -> dict:
    """A point of the training curve: the held-out loss after `steps_done` steps."""
    held_out = evaluate(model, vocab, windows, s["batch_size"])
    seconds = time.perf_counter() - started
    left = seconds / steps_done * (s["steps"] - steps_done)
    line = (
        f"training step {steps_done}/{s['steps']}: train loss {train_loss:.3f}, held-out loss {held_out:.3f}; "
        f"{seconds / 60:.1f} min so far, about {left / 60:.1f} min left"
    )
    log.info("%s", line)
    status(line)
    return {
        "step": steps_done,
        "tokens": steps_done * s["batch_size"] * s["seq_len"],
        "learning_rate": lr,
        "train_loss": train_loss,
        "held_out_loss": held_out,
        "seconds": seconds,
    }


def write_curve(curve: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(curve[0]))
        writer.writeheader()
        writer.writerows(curve)


def save(model, vocab: Vocabulary, arch: dict, out_dir: Path, dtype: str) -> None:
    """config.json, generation_config.json and safetensors as the synthetic models have them (the
    tied output matrix stored once, under transformers' names), every token's row written out."""
    synthetic.write_configs(out_dir, arch, dtype)
    state = {name: t.detach().numpy() for name, t in model.state_dict().items()}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        state[name] = vocab.expand(state[name])
    synthetic.save_safetensors(
        ((name, state[name]) for name in architecture.tensor_shapes(arch)),
        out_dir / "model.safetensors",
        dtype,
    )
