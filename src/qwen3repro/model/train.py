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
import logging
import math
import time
from pathlib import Path

import numpy as np

from qwen3repro.errors import UserError
from qwen3repro.model import architecture, shakespeare, synthetic, tokenizer_files
from qwen3repro.model.train_ops import Vocabulary, clip_gradients, fused_loss, output_cross_entropy, pin_linears
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


def _step(model, optimizer, loss_of, batch, lr: float) -> float:
    """One optimizer step on a batch of windows of rows [batch, seq_len + 1]; returns the training loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    hidden = model.model(batch[:, :-1]).last_hidden_state
    loss = loss_of(hidden.reshape(-1, hidden.shape[-1]), model.lm_head.weight, batch[:, 1:].reshape(-1).numpy())
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

    loss_of = fused_loss(vocab.log_multiplicity())
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
        train_loss = _step(model, optimizer, loss_of, batch, lr)
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
    full = ("model.embed_tokens.weight", "lm_head.weight")  # the rows of the compact vocabulary
    synthetic.save_safetensors(
        (
            (name, vocab.expand(state[name]) if name in full else state[name])
            for name in architecture.tensor_shapes(arch)
        ),
        out_dir / "model.safetensors",
        dtype,
    )
