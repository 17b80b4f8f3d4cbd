"""Pretraining a small Qwen3ForCausalLM on the Shakespeare corpus, on the CPU, deterministically.

The office hours' trajectory (random weights -> pretraining -> base model) at a scale a laptop
runs in minutes: transformers' Qwen3ForCausalLM with the full 151,936-token vocabulary and the
real tokenizer, next-token cross-entropy, AdamW with linear warm-up and cosine decay. Batches are
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
from qwen3repro.progress import status

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


def output_cross_entropy(hidden, weight, targets, chunk: int = 256, gradients: bool = True):
    """Mean cross-entropy of softmax(hidden @ weight.T) against targets, and its gradients
    (None, None when `gradients` is off, as for evaluation).

    The same value as F.cross_entropy on the full logits, computed chunk by chunk in one reused
    [vocab, chunk] buffer, with the gradients worked out on the way (softmax minus one-hot): the
    151,936-way output layer dominates training, and PyTorch's unfused path allocates and sweeps
    the logits tensor several times over. Its three matrix products go to NumPy's BLAS (matmul_in_parts).
    """
    import torch

    n = hidden.shape[0]
    hidden, weight = hidden.detach().contiguous(), weight.detach().contiguous()
    h_all, w = hidden.numpy(), weight.numpy()
    grad_hidden = torch.empty_like(hidden) if gradients else None
    grad_weight = torch.zeros_like(weight) if gradients else None
    buffer = hidden.new_empty(weight.shape[0], min(chunk, n))  # logits transposed: reductions run down columns
    product = np.empty(w.shape, w.dtype) if gradients else None
    total = 0.0
    for i in range(0, n, chunk):
        h, t = h_all[i : i + chunk], targets[i : i + chunk]
        logits = buffer[:, : len(t)]
        matmul_in_parts(w, h.T, logits.numpy())
        top = logits.amax(dim=0, keepdim=True)
        target_logits = logits[t, torch.arange(len(t))]
        logits.sub_(top).exp_()
        sums = logits.sum(dim=0, keepdim=True)
        total += float((sums.log() + top - target_logits).sum())
        if not gradients:
            continue
        logits.div_(sums * n)  # softmax / n, the mean's share
        logits[t, torch.arange(len(t))] -= 1 / n
        matmul_in_parts(logits.numpy().T, w, grad_hidden[i : i + chunk].numpy())
        matmul_in_parts(logits.numpy(), h, product)
        grad_weight.add_(torch.from_numpy(product))
    return total / n, grad_hidden, grad_weight


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


def _fused_loss():
    import torch

    class OutputCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets):
            loss, grad_hidden, grad_weight = output_cross_entropy(hidden.detach(), weight.detach(), targets)
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


def evaluate(model, windows: np.ndarray, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats) over the windows."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            batch = torch.from_numpy(windows[i : i + batch_size])
            hidden = model.model(batch[:, :-1]).last_hidden_state
            loss, _, _ = output_cross_entropy(
                hidden.reshape(-1, hidden.shape[-1]), model.lm_head.weight, batch[:, 1:].reshape(-1), gradients=False
            )
            total += loss * batch[:, 1:].numel()
            count += batch[:, 1:].numel()
    model.train()
    return total / count


def _model_and_optimizer(arch: dict, seed: int, s: dict):
    """A freshly initialised Qwen3ForCausalLM (seeded) and its AdamW, decay on matrices only."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if s["threads"]:
        torch.set_num_threads(s["threads"])
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    model = Qwen3ForCausalLM(Qwen3Config(**architecture.config_json(arch, torch_dtype="float32")))
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
    """One optimizer step on a batch of windows [batch, seq_len + 1]; returns the training loss."""
    import torch

    for group in optimizer.param_groups:
        group["lr"] = lr
    hidden = model.model(batch[:, :-1]).last_hidden_state
    loss = fused_loss(hidden.reshape(-1, hidden.shape[-1]), model.lm_head.weight, batch[:, 1:].reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
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
    windows = held_out_windows(held_out_tokens, s["seq_len"], s["eval_windows"])
    model, optimizer = _model_and_optimizer(arch, seed, s)
    curve, seconds = _optimize(model, optimizer, train_tokens, windows, seed, s)
    save(model, arch, out_dir, dtype)
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
        "held_out_tokens": int(len(held_out_tokens)),
        "held_out_works": sorted(held_out_texts),
        "initial_held_out_loss": curve[0]["held_out_loss"],
        "final_held_out_loss": curve[-1]["held_out_loss"],
        "seconds": seconds,
    }


def _optimize(model, optimizer, train_tokens: np.ndarray, windows: np.ndarray, seed: int, s: dict):
    """The training loop: random windows of the training text from a seeded generator, the
    held-out loss every eval_every steps. Returns the curve and the seconds taken. A time limit
    (max_minutes) that is reached fails the run: stopping early would make the model depend on
    the machine's speed."""
    import torch

    fused_loss = _fused_loss()
    rng = np.random.default_rng(seed)
    span = s["seq_len"] + 1
    started = time.perf_counter()
    initial = evaluate(model, windows, s["batch_size"])
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
        starts = rng.integers(0, len(train_tokens) - span, s["batch_size"])
        batch = torch.from_numpy(np.stack([train_tokens[i : i + span] for i in starts]))
        train_loss = _step(model, optimizer, fused_loss, batch, lr)
        if (step + 1) % s["eval_every"] == 0 or step + 1 == s["steps"]:
            curve.append(_record(model, windows, s, step + 1, lr, train_loss, started))
    return curve, time.perf_counter() - started


def _record(model, windows: np.ndarray, s: dict, steps_done: int, lr: float, train_loss: float, started: float) -> dict:
    """A point of the training curve: the held-out loss after `steps_done` steps."""
    held_out = evaluate(model, windows, s["batch_size"])
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


def save(model, arch: dict, out_dir: Path, dtype: str) -> None:
    """config.json, generation_config.json and safetensors as the synthetic models have them (the
    tied output matrix stored once, under transformers' names)."""
    synthetic.write_configs(out_dir, arch, dtype)
    state = model.state_dict()
    synthetic.save_safetensors(
        ((name, state[name].detach().numpy()) for name in architecture.tensor_shapes(arch)),
        out_dir / "model.safetensors",
        dtype,
    )
