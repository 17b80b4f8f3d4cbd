"""Runs a Snakemake rule's script body with logging to the rule's log file and one-line user errors.

The log's first line records what the job was given (threads, mem_mb, runtime), and its last the
job's peak resident memory as the kernel counts it: the declared-versus-measured table
(qwen3repro.pipeline.usage) reads both beside the job's benchmark.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from contextlib import contextmanager
from typing import Iterator

from qwen3repro.errors import UserError

DECLARED = "declared "
PEAK = "peak "


def declared(job) -> dict:
    """What a Snakemake job asked for: its threads, memory (MiB) and time limit (minutes)."""
    resources = job.resources
    return {
        "rule": job.rule,
        "threads": int(job.threads),
        "mem_mb": int(resources.get("mem_mb", 0)),
        "runtime": int(resources.get("runtime", 0)),
    }


def peak_rss() -> dict:
    """The high-water marks of resident memory (MiB) of this process and of the largest child it
    waited for (llama.cpp's tools, benchmark workers). Snakemake's benchmark samples memory now and
    then and can miss a short job's peak; the kernel's count cannot."""
    kib = 1024  # ru_maxrss is in KiB on Linux
    return {
        "self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib, 1),
        "children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib, 1),
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
        root.info("%s%s", PEAK, json.dumps(peak_rss()))
    except UserError as e:
        root.error("%s", e)
        print(f"qwen3repro: error: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        ours.removeHandler(terminal)
        root.removeHandler(handler)
        handler.close()
