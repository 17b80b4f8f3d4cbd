"""Declared versus measured: what each job of a run asked the scheduler for, beside what it used.

Every rule's log opens with the threads, mem_mb and runtime the job was given (qwen3repro.pipeline.rulelog)
and ends with the kernel's count of its peak resident memory; Snakemake's benchmark file beside it
holds the job's wall time and a sampled peak (which a short job can slip between). The larger of
the two peaks is what the job used. A
job over its declaration is killed by a scheduler (or swaps); a job asking for far more than it
uses holds back the jobs queued behind it. Both are checked: no job over what it declared, and no
job that used more than `big_mb` asking for more than `max_ratio` times what it used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from qwen3repro.errors import UserError
from qwen3repro.pipeline.rulelog import DECLARED, PEAK

BIG_MB = 1024
MAX_RATIO = 3.0


def declared_of(log: Path) -> dict | None:
    """The resources a job's log says it was given; None for a log written before they were recorded."""
    with open(log, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    at = first.find(DECLARED)
    return json.loads(first[at + len(DECLARED) :]) if at >= 0 else None


def peak_of(log: Path) -> float:
    """The largest peak (MiB) a job's log reports for itself or a child; NaN where it reports none."""
    peaks = []
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            at = line.find(PEAK)
            if at >= 0 and line[at:].startswith(PEAK + "{"):
                peaks += json.loads(line[at + len(PEAK) :]).values()
    return max(peaks, default=float("nan"))


def usage_table(results: Path | str) -> pd.DataFrame:
    """One row per job that has both a log with its declaration and a benchmark file."""
    results = Path(results)
    rows = []
    for bench in sorted((results / "benchmarks").glob("*/*.tsv")):
        log = results / "logs" / bench.parent.name / f"{bench.stem}.log"
        if not log.is_file():
            continue
        declared = declared_of(log)
        if declared is None:
            continue
        measured = pd.read_csv(bench, sep="\t").iloc[-1]
        sampled = float(measured["max_rss"]) if str(measured["max_rss"]) != "-" else float("nan")
        max_rss = float(np.fmax(sampled, peak_of(log)))  # the one that is not NaN, or the larger
        rows.append(
            {
                "rule": declared.get("rule", bench.parent.name),
                "job": bench.stem,
                "threads": declared["threads"],
                "mem_mb": declared["mem_mb"],
                "max_rss_mb": round(max_rss, 1),
                "mem_ratio": round(declared["mem_mb"] / max_rss, 2) if max_rss > 0 else float("nan"),
                "runtime_min": declared["runtime"],
                "wall_min": round(float(measured["s"]) / 60, 2),
            }
        )
    if not rows:
        raise UserError(f"{results}: no job has both a log with its declared resources and a benchmark file")
    return pd.DataFrame(rows)


def problems(table: pd.DataFrame, big_mb: float = BIG_MB, max_ratio: float = MAX_RATIO) -> list[str]:
    """Each job over its declaration, or asking for more than max_ratio x what it used above big_mb."""
    out = []
    for r in table.itertuples():
        if r.max_rss_mb > r.mem_mb:
            out.append(f"{r.job} ({r.rule}) used {r.max_rss_mb:.0f} MB, over the {r.mem_mb} it declared")
        if r.wall_min > r.runtime_min:
            out.append(f"{r.job} ({r.rule}) ran {r.wall_min:.1f} min, over the {r.runtime_min} it declared")
        if r.max_rss_mb > big_mb and r.mem_ratio > max_ratio:
            out.append(f"{r.job} ({r.rule}) declared {r.mem_mb} MB, {r.mem_ratio:.1f}x the {r.max_rss_mb:.0f} it used")
    return out


def by_rule(table: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, the declared ranges and the measured peaks, and the worst ratios."""
    g = table.groupby("rule", sort=False)
    return pd.DataFrame(
        {
            "jobs": g.size(),
            "threads": g["threads"].max(),
            "mem_mb declared": g["mem_mb"].agg(_span),
            "max RSS MB": g["max_rss_mb"].agg(_span),
            "declared / used (mem)": g["mem_ratio"].agg(lambda s: f"{s.min():.1f}–{s.max():.1f}"),
            "runtime min declared": g["runtime_min"].agg(_span),
            "wall min": g["wall_min"].agg(lambda s: f"{s.min():.2f}–{s.max():.2f}"),
            "most of limit used": (table["wall_min"] / table["runtime_min"])
            .groupby(table["rule"])
            .max()
            .map("{:.0%}".format),
        }
    ).reset_index()


def _span(s: pd.Series) -> str:
    lo, hi = s.min(), s.max()
    return f"{lo:.0f}" if lo == hi else f"{lo:.0f}–{hi:.0f}"
