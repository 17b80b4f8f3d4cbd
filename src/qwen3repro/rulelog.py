"""Runs a Snakemake rule's script body with logging to the rule's log file and one-line user errors.

The log's first line records what the job was given (threads, mem_mb, runtime): the
declared-versus-measured table (qwen3repro.usage) reads it beside the job's benchmark.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from typing import Iterator

from qwen3repro.errors import UserError

DECLARED = "declared "


def declared(job) -> dict:
    """What a Snakemake job asked for: its threads, memory (MiB) and time limit (minutes)."""
    resources = job.resources
    return {
        "rule": job.rule,
        "threads": int(job.threads),
        "mem_mb": int(resources.get("mem_mb", 0)),
        "runtime": int(resources.get("runtime", 0)),
    }


@contextmanager
def rule_log(job) -> Iterator[logging.Logger]:
    """`job`: the `snakemake` object of a rule's script."""
    handler = logging.FileHandler(job.log[0], mode="w", encoding="utf-8")
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
    root.info("%s%s", DECLARED, json.dumps(declared(job)))
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
