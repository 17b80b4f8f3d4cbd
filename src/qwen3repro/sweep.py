"""The sampling sweep: what each lever (temperature, top-p, top-k, min-p, presence penalty,
thinking, multi-turn) does to the probability vector and to the text, measured.

The config names grids: each starts from one of Qwen3's presets and takes the product of a few
axes, so that e.g. temperature x top-p makes a heatmap without multiplying every other lever in.
Every cell runs every prompt with every seed (grids over multi_turn run the conversations
instead), records the text, tokens and per-step statistics of the distribution, and the same
command twice gives the same rows but for the timings.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import UserError
from .fsutil import write_json_atomic, write_text_atomic
from .progress import progress_bar
from .sampler import PRESETS, Filtered

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SAMPLING_AXES = ("temperature", "top_p", "top_k", "min_p", "presence_penalty")
AXES = SAMPLING_AXES + ("thinking", "multi_turn")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


# ------------------------------------------------------------------ the grid
def cells(settings: dict) -> list[dict]:
    """Every cell of every grid: its name, sampling parameters, thinking and multi-turn flags.
    A value out of range is a one-line error naming the cell."""
    grids = settings.get("grids") or []
    if not grids:
        raise UserError("sweep: the grid is empty (sweep.grids)")
    out = []
    for grid in grids:
        name = grid["name"]
        axes = grid.get("axes") or {}
        for axis, values in axes.items():
            if axis not in AXES:
                raise UserError(f"sweep grid {name!r}: unknown axis {axis!r} (axes: {', '.join(AXES)})")
            if not values:
                raise UserError(f"sweep grid {name!r}: axis {axis} has no values")
        presets = grid["preset"] if isinstance(grid["preset"], list) else [grid["preset"]]
        for preset_name in presets:
            if preset_name not in PRESETS:
                raise UserError(f"sweep grid {name!r}: unknown preset {preset_name!r} ({', '.join(PRESETS)})")
            for combo in itertools.product(*axes.values()):
                values = dict(zip(axes, combo))
                label = ", ".join([f"preset={preset_name}"] + [f"{k}={v}" for k, v in values.items()])
                cell = f"{name}: {label}"
                try:
                    params = replace(PRESETS[preset_name], **{k: v for k, v in values.items() if k in SAMPLING_AXES})
                except (UserError, TypeError) as e:
                    raise UserError(f"sweep cell {cell!r}: {e}") from None
                thinking = values.get("thinking", preset_name != "non-thinking")
                out.append({"grid": name, "cell": cell, "preset": preset_name, "params": params,
                            "thinking": bool(thinking), "multi_turn": values.get("multi_turn")})
    return out


def check_conversations(conversations: list[dict]) -> None:
    for conv in conversations:
        messages = conv.get("messages") or []
        if not messages:
            raise UserError(f"sweep conversation {conv.get('name')!r}: no messages")
        if messages[-1]["role"] != "user":
            raise UserError(f"sweep conversation {conv.get('name')!r}: its last message is from the "
                            f"{messages[-1]['role']}; it must end with a user turn")


def check_settings(settings: dict) -> list[dict]:
    """Everything the sweep can refuse, refused before any model is loaded."""
    all_cells = cells(settings)
    if any(c["multi_turn"] is None for c in all_cells) and not settings.get("prompts"):
        raise UserError("sweep: cells that are not multi-turn need sweep.prompts")
    if any(c["multi_turn"] is not None for c in all_cells):
        if not settings.get("conversations"):
            raise UserError("sweep: multi_turn cells need sweep.conversations")
    check_conversations(settings.get("prompts", []) + settings.get("conversations", []))
    if not settings.get("seeds"):
        raise UserError("sweep: no seeds")
    names = {p["name"] for p in settings.get("prompts", [])}
    for name in settings.get("traces", {}).get("prompts", []):
        if name not in names:
            raise UserError(f"sweep.traces: no prompt named {name!r} in sweep.prompts")
    return all_cells


# ------------------------------------------------------------------ statistics of one generation
def think_tokens(tokens: list[int], open_id: int | None, close_id: int | None) -> int:
    """Generated tokens strictly inside <think> ... </think> (to the end when it never closes)."""
    inside, count = False, 0
    for t in tokens:
        if t == open_id:
            inside = True
        elif t == close_id:
            inside = False
        elif inside:
            count += 1
    return count


def distinct_n(tokens: list[int], n: int) -> float:
    """Distinct n-grams over all n-grams (Li et al. 2016): 1.0 when nothing repeats."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repeated_ngram_rate(tokens: list[int], n: int = 4) -> float:
    """Share of n-grams that already occurred earlier in the same text."""
    seen, repeats, total = set(), 0, 0
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        repeats += gram in seen
        seen.add(gram)
        total += 1
    return repeats / total if total else float("nan")


def entropy(probs: np.ndarray) -> float:
    p = probs[probs > 0]
    return float(-(p * np.log(p)).sum())


class StepStats:
    """Per-step statistics of the distributions a generation drew from."""

    def __init__(self, trace_top: int = 0, tokenizer=None):
        self.entropy, self.chosen_prob = [], []
        self.after_top_k, self.after_top_p, self.after_min_p = [], [], []
        self.trace_top, self.tokenizer, self.trace = trace_top, tokenizer, []

    def __call__(self, token: int, logits: np.ndarray, dist: Filtered | None) -> None:
        if dist is None:  # temperature 0: all the mass on the argmax
            self.entropy.append(0.0)
            self.chosen_prob.append(1.0)
            for counts in (self.after_top_k, self.after_top_p, self.after_min_p):
                counts.append(1)
        else:
            self.entropy.append(entropy(dist.probs_before))
            self.chosen_prob.append(float(dist.probs_before[token]))
            self.after_top_k.append(dist.after_top_k)
            self.after_top_p.append(dist.after_top_p)
            self.after_min_p.append(dist.after_min_p)
        if self.trace_top:
            self.trace.append(self._trace_step(token, logits, dist))

    def _trace_step(self, token: int, logits: np.ndarray, dist: Filtered | None) -> dict:
        """The top tokens before filtering (after temperature) and their share after it."""
        if dist is None:
            shifted = np.exp(logits.astype(np.float64) - logits.max())
            before = shifted / shifted.sum()
            after = {token: 1.0}
        else:
            before = dist.probs_before
            after = dict(zip(dist.ids.tolist(), dist.probs.tolist()))
        top = np.argsort(-before, kind="stable")[: self.trace_top]
        piece = lambda i: self.tokenizer.decode([int(i)])  # noqa: E731
        return {"chosen": {"id": token, "piece": piece(token), "p_before": float(before[token]),
                           "p_after": after.get(token, 0.0)},
                "top": [{"id": int(i), "piece": piece(i), "p_before": float(before[i]), "p_after": after.get(int(i), 0.0)}
                        for i in top],
                "kept": len(after)}

    def summary(self) -> dict:
        mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
        return {"mean_entropy": mean(self.entropy), "mean_chosen_prob": mean(self.chosen_prob),
                "mean_after_top_k": mean(self.after_top_k), "mean_after_top_p": mean(self.after_top_p),
                "mean_after_min_p": mean(self.after_min_p)}


# ------------------------------------------------------------------ running
class Runner:
    """Runs cells on one GGUF file."""

    def __init__(self, gguf: Path | str, settings: dict):
        from .generate import Generator

        self.settings = settings
        self.max_new_tokens = settings["max_new_tokens"]
        n_ctx = settings.get("n_ctx", 2048)
        self.generator = Generator.from_gguf(gguf, n_ctx=n_ctx)
        vocab = self.generator.tokenizer.vocab
        self.think_open, self.think_close = vocab.get(THINK_OPEN), vocab.get(THINK_CLOSE)

    def generate(self, messages: list[dict], cell: dict, seed: int, trace_top: int = 0, fresh: bool = True):
        g = self.generator
        if fresh:
            g.cached = []  # every single-turn run starts from an empty cache, so timings compare
        prompt = g.chat_prompt(messages, thinking=cell["thinking"])
        stats = StepStats(trace_top, g.tokenizer)
        result = g.generate(prompt, replace(cell["params"], seed=seed), self.max_new_tokens, observe=stats,
                            banned=g.thinking_ban(cell["thinking"]))
        return prompt, result, stats

    def row(self, cell: dict, name: str, seed: int, prompt: list[int], result, stats: StepStats, turn: int | None = None) -> dict:
        tokens = result.tokens
        return {
            "grid": cell["grid"], "cell": cell["cell"], "preset": cell["preset"],
            **{k: getattr(cell["params"], k) for k in SAMPLING_AXES},
            "thinking": cell["thinking"], "multi_turn": cell["multi_turn"], "prompt": name, "turn": turn, "seed": seed,
            "context_tokens": len(prompt), "reused_tokens": result.reused_tokens,
            "n_tokens": len(tokens), "stop_reason": result.stop_reason,
            "think_tokens": think_tokens(tokens, self.think_open, self.think_close),
            "distinct_1": distinct_n(tokens, 1), "distinct_2": distinct_n(tokens, 2),
            "repeated_4gram_rate": repeated_ngram_rate(tokens, 4), **stats.summary(),
            "prefill_s": result.prefill_s, "ttft_s": result.ttft_s, "decode_s": result.decode_s,
            "decode_tokens_per_s": result.decode_tokens_per_s,
        }

    def conversation(self, conv: dict, cell: dict, seed: int) -> tuple[list[dict], list[dict]]:
        """Play the user turns in order. Multi-turn on: the history (with the model's own answers
        where the script has none) is kept and the cache reused; then every turn's prompt is
        prefilled again from an empty cache, the time without reuse. Off: each turn on its own."""
        g = self.generator
        system = [m for m in conv["messages"][:1] if m["role"] == "system"]
        history: list[dict] = []
        rows, generations = [], []
        prompts = []
        g.cached = []
        messages = conv["messages"]
        for i, m in enumerate(messages):
            if m["role"] != "user":
                history.append(m)
                continue
            turn_messages = history + [m] if cell["multi_turn"] else system + [m]
            prompt, result, stats = self.generate(turn_messages, cell, seed, fresh=not cell["multi_turn"])
            row = self.row(cell, conv["name"], seed, prompt, result, stats, turn=len(prompts))
            prompts.append(prompt)
            rows.append(row)
            generations.append({**_generation(row, result), "messages": turn_messages})
            history.append(m)
            if i + 1 == len(messages) or messages[i + 1]["role"] != "assistant":
                history.append({"role": "assistant", "content": result.text})
        if cell["multi_turn"]:
            for row, prompt in zip(rows, prompts):
                row["ttft_full_prefill_s"] = self.full_prefill_seconds(prompt, cell, seed)
        return rows, generations

    def full_prefill_seconds(self, prompt: list[int], cell: dict, seed: int) -> float:
        """Time to the first token when nothing is cached, sampled as in the run it is compared with."""
        g = self.generator
        g.cached = []
        result = g.generate(prompt, replace(cell["params"], seed=seed), 1, observe=StepStats(),
                            banned=g.thinking_ban(cell["thinking"]))
        return result.ttft_s


def _generation(row: dict, result) -> dict:
    return {k: row[k] for k in ("cell", "prompt", "turn", "seed")} | {
        "tokens": result.tokens, "text": result.text, "stop_reason": result.stop_reason}


def run_sweep(gguf: Path | str, settings: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """(rows, generations, traces) for every cell, prompt and seed on one file."""
    all_cells = check_settings(settings)
    runner = Runner(gguf, settings)
    rows, generations = [], []
    jobs = [(cell, seed) for cell in all_cells for seed in settings["seeds"]]
    for cell, seed in progress_bar(jobs, "sweep cells"):
        if cell["multi_turn"] is None:
            for p in settings["prompts"]:
                prompt, result, stats = runner.generate(p["messages"], cell, seed)
                row = runner.row(cell, p["name"], seed, prompt, result, stats)
                rows.append(row)
                generations.append({**_generation(row, result), "messages": p["messages"]})
        else:
            for conv in settings["conversations"]:
                conv_rows, conv_generations = runner.conversation(conv, cell, seed)
                rows += conv_rows
                generations += conv_generations
    traces = []
    t = settings.get("traces", {})
    for name in t.get("prompts", []):
        p = next(p for p in settings["prompts"] if p["name"] == name)
        for preset_name in t.get("presets", ["thinking", "non-thinking"]):
            cell = {"grid": "trace", "cell": f"trace: preset={preset_name}", "preset": preset_name,
                    "params": PRESETS[preset_name], "thinking": preset_name != "non-thinking", "multi_turn": None}
            _, result, stats = runner.generate(p["messages"], cell, seed=t.get("seed", 0), trace_top=t.get("top", 20))
            traces.append({"prompt": name, "preset": preset_name, "params": PRESETS[preset_name].as_dict(),
                           "thinking": cell["thinking"], "text": result.text, "steps": stats.trace})
    return rows, generations, traces


TIMING_COLUMNS = ["prefill_s", "ttft_s", "decode_s", "decode_tokens_per_s", "ttft_full_prefill_s"]


def write_sweep(gguf: Path | str, settings: dict, out_table: Path | str, out_generations: Path | str,
                out_traces: Path | str, model: str, file_type: str) -> pd.DataFrame:
    import pandas as pd

    rows, generations, traces = run_sweep(gguf, settings)
    frame = pd.DataFrame(rows)
    frame.insert(0, "type", file_type)
    frame.insert(0, "model", model)
    out_table = Path(out_table)
    tmp = out_table.with_name(f".{out_table.name}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        tmp.replace(out_table)
    finally:
        tmp.unlink(missing_ok=True)
    write_text_atomic(Path(out_generations), "".join(json.dumps({"model": model, "type": file_type, **g},
                                                                ensure_ascii=False) + "\n" for g in generations), force=True)
    write_json_atomic(out_traces, {"model": model, "type": file_type, "traces": traces})
    return frame


def summary_table(frame) -> str:
    """Mean of the main statistics per cell, for logs and terminals."""
    columns = ["n_tokens", "think_tokens", "distinct_2", "repeated_4gram_rate", "mean_entropy", "mean_chosen_prob",
               "mean_after_top_p", "ttft_s"]
    return frame.groupby("cell", sort=False)[columns].mean().round(3).to_string()
