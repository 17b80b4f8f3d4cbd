"""The sweep's grid: every cell of every configured grid, checked before any model is loaded.

The config names grids: each starts from one of Qwen3's presets and takes the product of a few
axes, so that e.g. temperature x top-p makes a heatmap without multiplying every other lever in.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from qwen3repro.engine.sampler import PRESETS
from qwen3repro.errors import UserError

SAMPLING_AXES = ("temperature", "top_p", "top_k", "min_p", "presence_penalty")
AXES = SAMPLING_AXES + ("thinking", "multi_turn")


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
                out.append(
                    {
                        "grid": name,
                        "cell": cell,
                        "preset": preset_name,
                        "params": params,
                        "thinking": bool(thinking),
                        "multi_turn": values.get("multi_turn"),
                    }
                )
    return out


def check_conversations(conversations: list[dict]) -> None:
    for conv in conversations:
        messages = conv.get("messages") or []
        if not messages:
            raise UserError(f"sweep conversation {conv.get('name')!r}: no messages")
        if messages[-1]["role"] != "user":
            raise UserError(
                f"sweep conversation {conv.get('name')!r}: its last message is from the "
                f"{messages[-1]['role']}; it must end with a user turn"
            )


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


# ------------------------------------------------------------------ the work a sweep does
def plan(settings: dict) -> list[tuple[dict, int, dict]]:
    """(cell, seed, prompt or conversation) for every job of the sweep, in the order it runs them: a
    single-turn cell takes every prompt, a multi-turn cell every conversation."""
    return [
        (cell, seed, item)
        for cell in cells(settings)
        for seed in settings["seeds"]
        for item in (settings["prompts"] if cell["multi_turn"] is None else settings["conversations"])
    ]


def user_turns(conversation: dict) -> int:
    return sum(m["role"] == "user" for m in conversation["messages"])


def generations(settings: dict) -> int:
    """The generations the sweep makes: one per prompt job, one per user turn of a conversation job."""
    return sum(1 if cell["multi_turn"] is None else user_turns(item) for cell, _, item in plan(settings))


def positions(settings: dict) -> int:
    """The most positions one generation of the sweep fills: its longest prompt or whole
    conversation (a token per character bounds it, with the chat template's markup per message)
    and every turn's answer."""
    longest = 0
    for conv in settings["prompts"] + settings["conversations"]:
        prompt = sum(len(m["content"]) + 16 for m in conv["messages"])
        longest = max(longest, prompt + user_turns(conv) * (settings["max_new_tokens"] + 16))
    return min(settings["n_ctx"], longest)


def trace_plan(settings: dict) -> list[tuple[dict, str, bool]]:
    """(prompt, preset, thinking) for every showcase trace (sweep.traces), in order."""
    t = settings["traces"]
    prompts = {p["name"]: p for p in settings["prompts"]}
    return [
        (prompts[name], preset, thinking)
        for name in t["prompts"]
        for preset in t["presets"]
        for thinking in t["thinking"]
    ]
