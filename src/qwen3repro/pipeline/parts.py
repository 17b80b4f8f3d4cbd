"""The part files a scattered stage's jobs write, named <runtime>-<part>.npz, and their order."""

from __future__ import annotations

from pathlib import Path


def part_files(directory: str, runtimes: list[str], parts: int) -> list[str]:
    """Every part of a stage: each runtime's, numbered from 0."""
    return [f"{directory}/{runtime}-{part}.npz" for runtime in runtimes for part in range(parts)]


def by_runtime(files: list[str]) -> dict[str, list[str]]:
    """runtime -> its part files in part order (the text's or the set's order)."""
    grouped: dict[str, list[tuple[int, str]]] = {}
    for f in files:
        runtime, part = Path(f).stem.rsplit("-", 1)
        grouped.setdefault(runtime, []).append((int(part), f))
    return {runtime: [f for _, f in sorted(parts)] for runtime, parts in grouped.items()}
