"""Progress for the terminal: bars for the long loops (perplexity chunks, check prompts, sweep cells), status lines."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress_bar(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    if os.environ.get("CI") or os.environ.get("QWEN3REPRO_QUIET"):
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, total=total, leave=False, mininterval=1.0)


def status(message: str) -> None:
    """One line on the terminal for a long job's milestones (training steps), unless quiet; a rule's
    log file gets the same line through logging."""
    if not os.environ.get("QWEN3REPRO_QUIET"):
        print(message, file=sys.stderr, flush=True)
