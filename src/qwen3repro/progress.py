"""Progress bars for the long loops (perplexity chunks, check prompts, sweep cells), silent under CI."""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress_bar(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    if os.environ.get("CI") or os.environ.get("QWEN3REPRO_QUIET"):
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, total=total, leave=False, mininterval=1.0)
