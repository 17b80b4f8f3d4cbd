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
import json
import logging
import math
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

from qwen3repro.config import schema_defaults
from qwen3repro.errors import UserError
from qwen3repro.model import architecture, chat_tuning, shakespeare, synthetic, tokenizer_files, trajectory
from qwen3repro.model.train_ops import Vocabulary, clip_gradients, fused_loss, output_cross_entropy, pin_linears
from qwen3repro.pipeline.progress import status

log = logging.getLogger(__name__)

DEFAULTS = schema_defaults("$defs", "training")  # what a caller leaves out, as the validated config has it


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


def workload(training: dict) -> dict[str, int]:
    """The positions training runs through: "trained" (forward and backward) and "evaluated"
    (forward only, the held-out scores), both phases; the cost model's measure of this stage."""
    s = check_settings(training)
    chat = chat_tuning.check_settings(s["chat"])
    evaluations = s["steps"] // s["eval_every"] + 1
    trained = s["steps"] * s["batch_size"] * s["seq_len"]
    per_evaluation = s["eval_windows"] * (s["seq_len"] + 1)
    if chat:
        evaluations += chat["steps"] // chat["eval_every"] + 1
        trained += chat["steps"] * (chat["batch_size"] * chat["max_tokens"] + chat["text_windows"] * s["seq_len"])
        per_evaluation += chat["eval_examples"] * chat["max_tokens"]
    return {"trained": trained, "evaluated": evaluations * per_evaluation}


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


def _step(model, optimizer, loss, lr: float) -> float:
    """One optimizer step on the loss a batch gives (`loss()`, a tensor); returns its value."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    value = loss()
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    clip_gradients(model.parameters(), 1.0)
    optimizer.step()
    return float(value.detach())


def _text_loss(model, loss_of, batch):
    """Next-token loss over windows of rows [batch, seq_len + 1]."""
    hidden = model.model(batch[:, :-1]).last_hidden_state
    return loss_of(hidden.reshape(-1, hidden.shape[-1]), model.lm_head.weight, batch[:, 1:].reshape(-1).numpy())


def train(
    out_dir: Path, preset: str, architecture_overrides: dict | None, seed: int, training: dict, dtype: str = "float32"
) -> dict:
    """Pretrain (then chat-tune, when training.chat is set) and write a complete Hugging Face model
    directory into out_dir, with the training curve and the trajectory; returns the recipe."""

    s = check_settings(training)
    chat = chat_tuning.check_settings(s["chat"])
    arch = architecture.resolve(preset, architecture_overrides)
    out_dir = Path(out_dir)
    tokenizer_files.write_tokenizer_files(out_dir)
    tokenizer_json = out_dir / "tokenizer.json"
    train_texts, held_out_texts = shakespeare.split(s["held_out_every"])
    train_tokens = tokenize(train_texts, tokenizer_json)
    held_out_tokens = tokenize(held_out_texts, tokenizer_json)
    if len(train_tokens) < s["batch_size"] * (s["seq_len"] + 1):
        raise UserError(
            f"the training text has {len(train_tokens)} tokens, fewer than one batch of "
            f"{s['batch_size']} x {s['seq_len'] + 1}"
        )
    vocab = Vocabulary(train_tokens, arch["vocab_size"])
    distinct_train_tokens = len(vocab.seen)  # the pretraining rows; chat tuning adds the conversations' tokens
    run = _Run(s, chat, held_out_windows(held_out_tokens, s["seq_len"], s["eval_windows"]), tokenizer_json)
    if chat:
        conversations = chat_tuning.examples(train_texts, tokenizer_json, chat, seed)
        run.held_out_chat = chat_tuning.held_out_set(
            chat_tuning.examples(held_out_texts, tokenizer_json, chat, seed), chat["eval_examples"]
        )
    model, optimizer = _model_and_optimizer(arch, vocab, seed, s)
    run.snapshot(model, vocab, 0, "pretraining", "random initialisation")
    run.record(model, vocab, 0, "pretraining", 0.0, float("nan"))
    rng = np.random.default_rng(seed)
    train_rows, span = vocab.rows(train_tokens), s["seq_len"] + 1

    def windows(loss_of):
        import torch

        starts = rng.integers(0, len(train_rows) - span, s["batch_size"])
        return _text_loss(model, loss_of, torch.from_numpy(np.stack([train_rows[i : i + span] for i in starts])))

    run.phase(model, optimizer, vocab, "pretraining", s, windows)
    pretrained = run.curve[-1]
    if chat:
        chat_vocab = Vocabulary(np.concatenate([vocab.seen, *[e.prompt + e.target for e in conversations]]), vocab.size)
        state = chat_tuning.regrown_state(model, vocab, chat_vocab)
        model, optimizer = _model_and_optimizer(arch, chat_vocab, seed, {**s, **chat})
        model.load_state_dict(state)
        vocab, chat_rng, train_rows = chat_vocab, np.random.default_rng([seed, 1]), chat_vocab.rows(train_tokens)

        def conversation_batch(loss_of):
            """The assistant tokens' loss, plus the text's on a few windows: the language it keeps."""
            import torch

            picks = chat_rng.integers(0, len(conversations), chat["batch_size"])
            rows, where, targets = chat_tuning.padded([conversations[i] for i in picks], vocab)
            loss = loss_of(chat_tuning.assistant_hidden(model, rows, where), model.lm_head.weight, targets)
            if chat["text_windows"]:
                starts = chat_rng.integers(0, len(train_rows) - span, chat["text_windows"])
                text = torch.from_numpy(np.stack([train_rows[i : i + span] for i in starts]))
                loss = loss + _text_loss(model, loss_of, text)
            return loss

        run.phase(model, optimizer, vocab, "chat tuning", chat, conversation_batch)
    save(model, vocab, arch, out_dir, dtype)
    write_curve(run.curve, out_dir / "training_curve.csv")
    snapshots = {"prompt": trajectory.PROMPT, "thinking": True, "checkpoints": run.snapshots}
    (out_dir / "trajectory.json").write_text(json.dumps(snapshots, indent=1, ensure_ascii=False) + "\n", "utf-8")
    recipe = {
        "preset": preset,
        "architecture": arch,
        "seed": seed,
        "dtype": dtype,
        "training": {**s, "chat": chat},
        "n_parameters": architecture.n_parameters(arch),
        "steps_done": run.curve[-1]["step"],
        "train_tokens": int(len(train_tokens)),
        "distinct_train_tokens": distinct_train_tokens,
        "held_out_tokens": int(len(held_out_tokens)),
        "held_out_works": sorted(held_out_texts),
        "initial_held_out_loss": run.curve[0]["held_out_loss"],
        "final_held_out_loss": run.curve[-1]["held_out_loss"],
        "seconds": run.curve[-1]["seconds"],
    }
    if chat:
        recipe.update(
            chat_conversations=len(conversations),
            pretrained_held_out_loss=pretrained["held_out_loss"],
            pretraining_seconds=pretrained["seconds"],
            initial_chat_held_out_loss=run.curve[0]["chat_held_out_loss"],
            pretrained_chat_held_out_loss=pretrained["chat_held_out_loss"],
            final_chat_held_out_loss=run.curve[-1]["chat_held_out_loss"],
        )
    return recipe


class _Run:
    """One training run's clock, curve and trajectory across its phases."""

    def __init__(self, s: dict, chat: dict | None, windows: np.ndarray, tokenizer_json: Path):
        from tokenizers import Tokenizer

        from qwen3repro.engine.chat_template import render

        self.s, self.windows, self.held_out_chat = s, windows, None
        self.curve, self.snapshots, self.started = [], [], time.perf_counter()
        self.total_steps = s["steps"] + (chat["steps"] if chat else 0)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        template = files("qwen3repro.data").joinpath("qwen3-chat-template.jinja").read_text("utf-8")
        self.prompt = self.tokenizer.encode(render(template, trajectory.PROMPT), add_special_tokens=False).ids

    def snapshot(self, model, vocab, step: int, phase: str, label: str) -> None:
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
        self.snapshots.append(trajectory.snapshot(model, vocab, self.prompt, decode, label, step, phase))

    def phase(self, model, optimizer, vocab: Vocabulary, name: str, p: dict, loss) -> None:
        """p["steps"] optimizer steps on the batches loss(loss_of) draws, with p's learning-rate
        schedule; a point of the curve every p["eval_every"] steps. A time limit (max_minutes) that
        is reached fails the run: stopping early would make the model depend on the machine's speed."""
        loss_of = fused_loss(vocab.log_multiplicity())
        first = self.curve[-1]["step"]
        for k in range(p["steps"]):
            if self.s["max_minutes"] is not None and time.perf_counter() - self.started > 60 * self.s["max_minutes"]:
                raise UserError(
                    f"training.max_minutes: {self.s['max_minutes']} minutes reached after {first + k} of "
                    f"{self.total_steps} steps; stopping there would make the model depend on this machine's "
                    "speed: raise or remove the limit"
                )
            lr = learning_rate(k, p)
            train_loss = _step(model, optimizer, lambda: loss(loss_of), lr)
            if (k + 1) % p["eval_every"] == 0 or k + 1 == p["steps"]:
                self.record(model, vocab, first + k + 1, name, lr, train_loss)
            if name == "pretraining" and k + 1 == p["steps"] // 2 and k + 1 < p["steps"]:
                self.snapshot(model, vocab, first + k + 1, name, "mid-pretraining")
        self.snapshot(model, vocab, first + p["steps"], name, "pretrained" if name == "pretraining" else "chat-tuned")

    def record(self, model, vocab: Vocabulary, step: int, phase: str, lr: float, train_loss: float) -> None:
        """A point of the curve: the held-out losses after `step` steps."""
        held_out = evaluate(model, vocab, self.windows, self.s["batch_size"])
        point = {"step": step, "phase": phase, "learning_rate": lr, "train_loss": train_loss, "held_out_loss": held_out}
        line = f"training step {step}/{self.total_steps} ({phase}): train loss {train_loss:.3f}"
        line += f", held-out loss {held_out:.3f}"
        if self.held_out_chat is not None:
            point["chat_held_out_loss"] = chat_tuning.chat_loss(model, vocab, self.held_out_chat, self.s["batch_size"])
            line += f", held-out chat loss {point['chat_held_out_loss']:.3f}"
        point["seconds"] = time.perf_counter() - self.started
        if step:
            left = point["seconds"] / step * (self.total_steps - step)
            line += f"; {point['seconds'] / 60:.1f} min so far, about {left / 60:.1f} min left"
        log.info("%s", line)
        status(line)
        self.curve.append(point)


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
