"""The second training phase: supervised chat tuning on conversations from the plays' dialogue.

The pretrained model goes on training, pinned as pretraining is, on `dialogue.Example`s from the
training works: each batch is right-padded (causal attention keeps the padding out of every real
position) and the loss is the mean cross-entropy over the assistant's tokens alone (the think span,
the reply and its `<|im_end|>`), over the full vocabulary, plus the pretraining loss on a few
windows of the training text, without which the model forgets the language it learnt. The chat tokens (`<|im_start|>`,
`<think>`, ...) never occur in the plays, so pretraining left them in the shared row; `regrow`
gives every token of the conversations a row of its own, copied from the shared row, which changes
no logit. AdamW starts afresh, with its own warm-up and cosine decay.
"""

from __future__ import annotations

import numpy as np

from qwen3repro.config import schema_defaults
from qwen3repro.errors import UserError
from qwen3repro.model.train_ops import Vocabulary

DEFAULTS = schema_defaults("$defs", "training", "properties", "chat", "oneOf", 1)  # as the validated config has them


def check_settings(chat: dict | bool | None) -> dict | None:
    """The chat phase's settings with their defaults, or None when the phase is off."""
    if not chat:
        return None
    c = {**DEFAULTS, **(chat if isinstance(chat, dict) else {})}
    for key in ("steps", "batch_size", "eval_every", "eval_examples", "max_tokens", "max_reply_tokens"):
        if c[key] < 1:
            raise UserError(f"training.chat.{key} must be at least 1, not {c[key]}")
    if not 0 <= c["warmup_steps"] <= c["steps"]:
        raise UserError(f"training.chat.warmup_steps must be in 0..steps, not {c['warmup_steps']}")
    return c


def examples(works: dict[str, str], tokenizer_json, c: dict, seed: int):
    """The conversations of the works (see dialogue.build), rendered by the Qwen3 chat template."""
    from importlib.resources import files

    from tokenizers import Tokenizer

    from qwen3repro.model import dialogue

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    template = files("qwen3repro.data").joinpath("qwen3-chat-template.jinja").read_text("utf-8")
    found = dialogue.build(
        works,
        template,
        lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
        c["max_tokens"],
        c["max_reply_tokens"],
        c["multi_turn_share"],
        seed,
    )
    if not found:
        raise UserError(f"no conversation of the works fits in training.chat.max_tokens ({c['max_tokens']})")
    return found


def regrown_state(model, old: Vocabulary, new: Vocabulary) -> dict:
    """The model's weights over `new`'s rows: each row copied from the one that stood for its token
    in `old` (for a token that `new` gives a row of its own, the shared row), so every logit is unchanged."""
    import torch

    index = torch.from_numpy(old.lookup[new.representatives()])
    state = dict(model.state_dict())
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        state[name] = state[name][index].clone()
    return state


def padded(batch, vocab: Vocabulary):
    """Row ids [B, L] right-padded, and the (example, position) of each assistant token's prediction
    with the row it must predict."""
    import torch

    length = max(len(e.prompt) + len(e.target) for e in batch)
    rows = np.full((len(batch), length), vocab.shared_row, dtype=np.int64)
    where, targets = [], []
    for j, e in enumerate(batch):
        ids = np.asarray(e.prompt + e.target)
        rows[j, : len(ids)] = vocab.rows(ids)
        positions = np.arange(len(e.prompt) - 1, len(ids) - 1)  # each predicts the token after it
        where.append(np.stack([np.full(len(positions), j), positions], axis=1))
        targets.append(vocab.rows(ids[positions + 1]))
    where = np.concatenate(where)
    return torch.from_numpy(rows[:, :-1]), where, np.concatenate(targets)


def assistant_hidden(model, rows, where):
    hidden = model.model(rows).last_hidden_state  # [B, L, hidden]
    return hidden[where[:, 0], where[:, 1]]  # [assistant tokens, hidden]


def chat_loss(model, vocab: Vocabulary, held_out: list, batch_size: int) -> float:
    """Mean cross-entropy (nats) of the assistant tokens of the held-out conversations, over the full vocabulary."""
    import torch

    from qwen3repro.model.train_ops import output_cross_entropy

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(held_out), batch_size):
            rows, where, targets = padded(held_out[i : i + batch_size], vocab)
            hidden = assistant_hidden(model, rows, where)
            loss, _, _ = output_cross_entropy(
                hidden, model.lm_head.weight, targets, vocab.log_multiplicity(), gradients=False
            )
            total += loss * len(targets)
            count += len(targets)
    model.train()
    return total / count


def held_out_set(found: list, n: int) -> list:
    """n conversations spread evenly over the held-out works' list."""
    picks = np.linspace(0, len(found) - 1, min(n, len(found))).astype(np.int64)
    return [found[i] for i in picks]
