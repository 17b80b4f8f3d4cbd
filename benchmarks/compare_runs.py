"""Whether two runs' results are the same, timings aside: for a change meant to alter no output.

    python benchmarks/compare_runs.py BEFORE/results AFTER/results

Compares what both runs made (a file type only one of them converted is listed, not compared):
every GGUF file's sha256, the check, perplexity and task tables, the sweep tables and the report's
tables, each less the columns and rows that measure time. Prints one line per part and
IDENTICAL or DIFFERENT at the end; exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from qwen3repro.fsutil import sha256_file

# columns that measure time, or that a run stamps with its own time or commit
TIMED = re.compile(r"(^|_)(s|seconds|ttft|tokens_per_s|prefill_s|decode_s)$|_s$|per_s")
# report rows and columns that depend on the clock: speeds, rooflines, load times, peak memory
# a GGUF file's type from its name: <model>-<TYPE>[-imat].gguf
TYPE_OF_FILE = r"^.*?-([A-Z0-9_]+(?:-imat)?)$"
TIMED_TEXT = re.compile(
    r"t/s|decode|prefill|roofline|load|peak|RSS|fits in memory|MiB/s|GB/s|seconds|Made at commit", re.I
)


def common(before: Path, after: Path, pattern: str) -> tuple[list[str], list[str]]:
    """Relative paths matching `pattern` in both runs, and those in one run only."""
    a = {str(p.relative_to(before)) for p in before.glob(pattern)}
    b = {str(p.relative_to(after)) for p in after.glob(pattern)}
    return sorted(a & b), sorted(a ^ b)


def compare_gguf(before: Path, after: Path) -> list[str]:
    both, only = common(before, after, "gguf/*/*.gguf")
    differing = [p for p in both if sha256_file(before / p) != sha256_file(after / p)]
    print(f"gguf: {len(both) - len(differing)}/{len(both)} same sha256; one run only: {only or 'none'}")
    return differing


def untimed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if not TIMED.search(c)]]


def compare_tables(before: Path, after: Path, pattern: str) -> list[str]:
    both, only = common(before, after, pattern)
    differing = []
    for p in both:
        read = pd.read_parquet if p.endswith(".parquet") else pd.read_csv
        a, b = untimed(read(before / p)), untimed(read(after / p))
        # rows of a file type only one run made are left out; the rest must match cell for cell
        shared = set(a["type"]) & set(b["type"])
        a = a[a["type"].isin(shared)].reset_index(drop=True)
        b = b[b["type"].isin(shared)].reset_index(drop=True)
        if not a.equals(b):
            differing.append(p)
    print(
        f"{pattern}: {len(both) - len(differing)}/{len(both)} identical (timings aside); one run only: {only or 'none'}"
    )
    return differing


def report_rows(path: Path, types: set[str]) -> list[str]:
    """The summary's table rows, less the columns and rows that depend on the clock (speeds, load
    times, peak memory), for the file types both runs made."""
    rows, timed_columns = [], set()
    for line in path.read_text("utf-8").splitlines():
        if not line.startswith("| ") or line.startswith("| ---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("type", "question", "matrix", "key"):  # a table's header
            timed_columns = {i for i, c in enumerate(cells) if TIMED_TEXT.search(c)}
        elif TIMED_TEXT.search(cells[0]) or (re.fullmatch(r"[A-Z0-9_]+(-imat)?", cells[0]) and cells[0] not in types):
            continue
        rows.append(" | ".join(c for i, c in enumerate(cells) if i not in timed_columns))
    return rows


def compare_report(before: Path, after: Path, types: set[str]) -> list[str]:
    """Every table row of the before run's summary is in the after run's (as often); rows the after
    run adds (a new table) are counted, not differences."""
    from collections import Counter

    a = Counter(report_rows(before / "report" / "summary.md", types))
    b = Counter(report_rows(after / "report" / "summary.md", types))
    missing, added = a - b, b - a
    kept = sum(a.values()) - sum(missing.values())
    print(
        f"report: {kept}/{sum(a.values())} table rows of the first run in the second (speed, memory and time rows "
        f"aside); {sum(added.values())} rows only in the second"
    )
    return [f"report row only in the first run: {row!r}" for row in missing.elements()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    types = {re.sub(TYPE_OF_FILE, r"\1", p.stem) for p in (args.before / "gguf").glob("*/*.gguf")}
    types &= {re.sub(TYPE_OF_FILE, r"\1", p.stem) for p in (args.after / "gguf").glob("*/*.gguf")}
    differing = compare_gguf(args.before, args.after)
    for pattern in ("check/*.csv", "perplexity/*.csv", "tasks/*.csv", "sweep/*/*.parquet"):
        differing += compare_tables(args.before, args.after, pattern)
    differing += compare_report(args.before, args.after, types)
    for d in differing:
        print(f"  differs: {d}")
    print("DIFFERENT" if differing else "IDENTICAL")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
