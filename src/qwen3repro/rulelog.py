"""Runs a Snakemake rule's script body with logging to the rule's log file and one-line user errors."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from qwen3repro.errors import UserError


@contextmanager
def rule_log(path: str | Path) -> Iterator[logging.Logger]:
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # warnings (a branch resolved to a commit, a fallback taken) reach the terminal too, not only the log
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.WARNING)
    terminal.setFormatter(logging.Formatter("qwen3repro: warning: %(message)s"))
    ours = logging.getLogger("qwen3repro")
    ours.addHandler(terminal)
    try:
        yield root
    except UserError as e:
        root.error("%s", e)
        print(f"qwen3repro: error: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        ours.removeHandler(terminal)
        root.removeHandler(handler)
        handler.close()
