"""The report's training section: what the model says at checkpoints of its training, as a table."""

from __future__ import annotations

from qwen3repro.report.inputs import ModelSection
from qwen3repro.report.tables import DASH, fmt


def _shown(piece: str) -> str:
    """A token as the eye can see it: newlines and a leading space marked."""
    return piece.replace("\n", "⏎").replace(" ", "·", 1) if piece.startswith(" ") else piece.replace("\n", "⏎")


def _probability(p: float) -> str:
    """A percentage, or below 0.1% the probability itself (a random model's top tokens are 3e-05)."""
    return f"{100 * p:5.1f}%" if p >= 0.001 else f"{p:.0e}"


def trajectory_table(section: ModelSection) -> tuple[list[str], list[list[str]]]:
    """A row per checkpoint: the held-out loss there, the top next tokens for the fixed prompt, the
    mass of every other token of the vocabulary, and the greedy continuation."""
    if not section.trajectory:
        return [], []
    curve = section.curve
    vocabulary = section.tokenizer.get("tokens") or 0
    header = ["checkpoint", "step", "held-out loss", "top 10 next tokens", f"the other {vocabulary - 10:,}", "greedy"]
    rows = []
    for point in section.trajectory["checkpoints"]:
        at = curve[curve["step"] == point["step"]] if curve is not None else None
        loss = fmt(at["held_out_loss"].iloc[-1], 3) if at is not None and len(at) else DASH
        top = "\n".join(f"{_probability(t['probability'])}  {_shown(t['piece'])}" for t in point["top"])
        rows.append([point["label"], str(point["step"]), loss, top, fmt(point["rest"], 3), point["greedy"]])
    return header, rows
