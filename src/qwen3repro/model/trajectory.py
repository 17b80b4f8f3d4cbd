"""What the model says at a checkpoint of its training: the next-token distribution over the whole
151,936-token vocabulary for one fixed chat prompt, and a short greedy continuation.

Taken at random initialisation, mid-pretraining, after pretraining and after chat tuning, these
are the report's "From random weights to a chat model". The trainer's model is compact (one row
per token it has seen, one shared by the rest: train_ops.Vocabulary); its logits are expanded to
every token's, so the probabilities are those of the saved Qwen3ForCausalLM at that point.
"""

from __future__ import annotations

import numpy as np

PROMPT = [{"role": "system", "content": "You are HAMLET."}, {"role": "user", "content": "What news, my lord?"}]
TOP = 10
GREEDY_TOKENS = 48


def full_logits(model, vocab, token_ids: list[int]) -> np.ndarray:
    """The logits of every vocabulary token after token_ids: [vocab.size]."""
    import torch

    with torch.no_grad():
        rows = torch.from_numpy(vocab.rows(np.asarray([token_ids])))
        hidden = model.model(rows).last_hidden_state[0, -1]  # [hidden]
        compact = (model.lm_head.weight @ hidden).numpy().astype(np.float64)  # [rows]
    return compact[vocab.lookup]  # [vocab.size]


def snapshot(model, vocab, prompt_ids: list[int], decode, label: str, step: int, phase: str) -> dict:
    """The top TOP next tokens with their probabilities, the mass of all the others, and a greedy
    continuation of GREEDY_TOKENS tokens (stopping at <|im_end|>)."""
    was_training = model.training
    model.eval()
    logits = full_logits(model, vocab, prompt_ids)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    top = np.argsort(-probs, kind="stable")[:TOP]
    continuation = list(prompt_ids)
    for _ in range(GREEDY_TOKENS):
        token = int(np.argmax(full_logits(model, vocab, continuation)))
        continuation.append(token)
        if decode([token]) == "<|im_end|>":
            break
    if was_training:
        model.train()
    return {
        "label": label,
        "step": step,
        "phase": phase,
        "top": [{"token": int(t), "piece": decode([int(t)]), "probability": float(probs[t])} for t in top],
        "rest": float(1.0 - probs[top].sum()),
        "greedy": decode(continuation[len(prompt_ids) :]),
    }
