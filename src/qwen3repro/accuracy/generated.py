"""The loss along generated tokens: every file teacher-forced along the F32 file's own chat generations.

Public KL-divergence tables are measured on prefill text; people meet a quantized model in chat,
token by token, often thinking. Here the F32 file answers the sweep's chat prompts (Qwen3's
thinking preset with thinking on, its non-thinking preset with thinking off, seed 0) and plays the
sweep's conversations with the history kept (multi-turn, thinking on). Each quantized file then
reads the very same tokens (prompt and answer), and at every generated position its whole
next-token distribution is compared with F32's in the same runtime: KL(F32 || Q), whether the two
argmaxes agree, as llama-perplexity --kl-divergence does on text. Thinking on, the tokens up to and
including </think> are the thinking span and the rest the answer; thinking off, all of it is the
answer. A generation that never closes its thinking is all thinking (and is counted so).
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from qwen3repro.accuracy.divergence import Divergence, compare
from qwen3repro.fsutil import write_json_atomic

log = logging.getLogger(__name__)

SPANS = ("thinking", "answer")
PLAYS = (("thinking", True), ("non-thinking", False))  # (Qwen3 preset, thinking)


def spans(tokens: list[int], thinking: bool, close_id: int | None) -> list[str]:
    """Each generated token's span."""
    if not thinking:
        return ["answer"] * len(tokens)
    end = tokens.index(close_id) + 1 if close_id in tokens else len(tokens)
    return ["thinking"] * end + ["answer"] * (len(tokens) - end)


def count(settings: dict) -> int:
    """The generations `generate` makes: each prompt thinking on and off, each conversation's user turns."""
    from qwen3repro.sweep.grid import user_turns

    return len(PLAYS) * len(settings["prompts"]) + sum(user_turns(c) for c in settings["conversations"])


def generate(gguf: Path | str, settings: dict) -> list[dict]:
    """The F32 file's generations: each prompt with thinking on and off, each conversation's turns
    with the history kept; every one as prompt tokens, generated tokens and their spans."""
    from qwen3repro.engine.sampler import PRESETS
    from qwen3repro.sweep.runner import Runner

    runner = Runner(gguf, settings)
    out = []

    def record(name, turn, preset, thinking, prompt, tokens):
        out.append(
            {
                "prompt": name,
                "turn": turn,
                "preset": preset,
                "thinking": thinking,
                "prompt_tokens": list(map(int, prompt)),
                "tokens": list(map(int, tokens)),
                "spans": spans(tokens, thinking, runner.think_close),
            }
        )

    for p in settings["prompts"]:
        for preset, thinking in PLAYS:
            cell = {"params": PRESETS[preset], "thinking": thinking}
            prompt, result, _ = runner.generate(p["messages"], cell, seed=0)
            record(p["name"], None, preset, thinking, prompt, result.tokens)
    for conv in settings["conversations"]:
        cell = {
            "grid": "generated",
            "cell": "multi-turn",
            "preset": "thinking",
            "params": PRESETS["thinking"],
            "thinking": True,
            "multi_turn": True,
        }
        _, generations = runner.conversation(conv, cell, seed=0)
        for turn, g in enumerate(generations):
            prompt = runner.generator.chat_prompt(g["messages"], thinking=True)
            record(conv["name"], turn, "thinking", True, prompt, g["tokens"])
    return out


def write_generations(gguf: Path | str, settings: dict, out: Path | str, model: str) -> list[dict]:
    generations = generate(gguf, settings)
    write_json_atomic(out, {"model": model, "type": "F32", "generations": generations}, force=True)
    return generations


def read_generations(path: Path | str) -> list[dict]:
    return json.loads(Path(path).read_text("utf-8"))["generations"]


def divergence_along(generations: list[dict], logits_of, base_logits_of) -> dict:
    """Per span, llama-perplexity's KL-divergence statistics of a file against the base along the
    generations (mean ± error, percentiles, same top token), and the count of generations whose
    thinking never closed."""
    by_span = {span: Divergence() for span in SPANS}
    for g in generations:
        if not g["tokens"]:
            continue
        tokens = np.array(g["prompt_tokens"] + g["tokens"], dtype=np.int64)
        first = len(g["prompt_tokens"]) - 1  # positions first .. len-2 predict the generated tokens
        logits = logits_of(tokens, first)[: len(g["tokens"])]
        base = logits if base_logits_of is logits_of else base_logits_of(tokens, first)[: len(g["tokens"])]
        positions = compare(base, logits, tokens[first + 1 :])
        kinds = np.array(g["spans"])
        for span in SPANS:
            where = kinds == span
            if where.any():
                by_span[span].add(_select(positions, where))
    result = {}
    for span, d in by_span.items():
        result[span] = d.summary() if d.count >= 2 else {"count": d.count}
    result["unclosed_thinking"] = sum(g["thinking"] and "answer" not in g["spans"] for g in generations)
    result["generations"] = len(generations)
    return result


def _select(positions, where: np.ndarray):
    return replace(positions, **{f.name: getattr(positions, f.name)[where] for f in fields(positions)})
