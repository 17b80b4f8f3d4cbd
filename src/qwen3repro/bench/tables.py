"""Benchmark rows as one table with the decode roofline: the same table in the terminal and in the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

from qwen3repro.bench.measure import Row
from qwen3repro.errors import UserError
from qwen3repro.fsutil import write_text_atomic


def ratios(rows: list[Row], engine: str = "numpy") -> list[str]:
    """Lines like "tg128, 2 threads: numpy / llama.cpp = 1.23x" for every test both engines ran at
    the same thread count."""
    ours = {(r.test, r.n_threads): r for r in rows if r.engine == engine}
    out = []
    for r in rows:
        mine = ours.get((r.test, r.n_threads))
        if r.engine != engine and mine is not None:
            ratio = mine.avg_ts / r.avg_ts
            out.append(
                f"{r.test}, {r.n_threads} threads: {engine} {mine.avg_ts:.2f} t/s / {r.engine} {r.avg_ts:.2f} t/s "
                f"= {ratio:.2f}x"
            )
    return out


TIMING_FIELDS = (
    "samples_ns",
    "avg_ts",
    "stddev_ts",
    "load_s",
    "peak_rss_bytes",
    "ttft_ms",
    "ceiling_ts",
    "ceiling_share",
    "ceiling_flag",
    "bandwidth_gbs",
    "bandwidth_probes",
)


# A decode speed above its roofline means the bandwidth probe and the bench did not measure the
# same machine (a load that came or went between them): flagged, and kept out of the answers.
OVER_CEILING = "above 100% of the roofline: the bandwidth probe and the bench disagree"


def summary_table(records: list[dict], bandwidth: float | None):
    """All rows as one pandas table, with the decode roofline: the ceiling of each row's weights at
    the machine's bandwidth (bytes per second) as measured beside that row's runs (the best of the
    probes before and after them), else `bandwidth` (None: not measured), and the row's share of it."""
    import pandas as pd

    fallback = float("nan") if bandwidth is None else bandwidth
    table = pd.DataFrame(records)
    beside = [max(r.get("bandwidth_probes") or [fallback]) for r in records]
    table["bandwidth_gbs"] = pd.Series(beside, index=table.index, dtype=float) / 1e9
    for field, default in (("n_depth", 0), ("kv_cache_bytes", 0)):  # rows from before depths were measured
        table[field] = table[field].fillna(default) if field in table else default
    # a decode step reads the weights and, at a depth, the KV cache so far (taken at the run's middle)
    positions = table["n_depth"] + table["n_prompt"] + table["n_gen"]
    middle = table["n_depth"] + table["n_gen"] / 2
    read = table["bytes_per_token"] + table["kv_cache_bytes"] * middle / positions.where(positions > 0, 1)
    decode = (table["n_gen"] > 0) & (table["n_prompt"] == 0)
    table["ceiling_ts"] = (table["bandwidth_gbs"] * 1e9 / read).where(decode)
    table["ceiling_share"] = (table["avg_ts"] / table["ceiling_ts"]).where(decode)
    table["ceiling_flag"] = table["ceiling_share"].map(lambda s: OVER_CEILING if s > 1.0 else "")
    columns = [
        "engine",
        "model_type",
        "model_filename",
        "test",
        "n_prompt",
        "n_gen",
        "n_depth",
        "n_threads",
        "kv_cache_bytes",
        "avg_ts",
        "stddev_ts",
        "ttft_ms",
        "load_s",
        "peak_rss_bytes",
        "model_size",
        "bytes_per_token",
        "ceiling_ts",
        "ceiling_share",
        "ceiling_flag",
        "bandwidth_gbs",
        "samples_ns",
    ]
    order = ["model_type", "engine", "n_threads", "n_gen", "n_prompt", "n_depth"]
    return table[columns].sort_values(order, kind="stable").reset_index(drop=True)


def format_summary(table) -> str:
    """summary_table as a Markdown table for terminals and logs."""
    lines = [
        f"| {'type':<8} | {'engine':<18} | {'threads':>7} | {'test':>18} | {'t/s':>21} | {'roofline':>8} "
        f"| {'KV cache':>9} | {'load s':>6} | {'peak RSS':>9} |",
        f"|{'-' * 10}|{'-' * 20}|{'-' * 9}|{'-' * 20}|{'-' * 23}|{'-' * 10}|{'-' * 11}|{'-' * 8}|{'-' * 11}|",
    ]
    for r in table.itertuples():
        share = f"{r.ceiling_share:.0%}{'!' if r.ceiling_flag else ''}" if r.ceiling_share == r.ceiling_share else ""
        lines.append(
            f"| {r.model_type:<8} | {r.engine:<18} | {r.n_threads:>7} | {r.test:>18} "
            f"| {r.avg_ts:>10.2f} ± {r.stddev_ts:<8.2f} | {share:>8} | {r.kv_cache_bytes / 2**20:>5.0f} MiB "
            f"| {r.load_s:>6.2f} | {r.peak_rss_bytes / 2**30:>5.2f} GiB |"
        )
    return "\n".join(lines)


def write_summary(parts: list[Path | str], out_csv: Path | str, out_json: Path | str) -> str:
    """Merge the per-file and per-dtype rows of a model into results/bench/<model>.csv and .json,
    each row's roofline from the bandwidth probed beside its own runs."""
    records = []
    for part in parts:
        records += json.loads(Path(part).read_text("utf-8"))
    if not records:
        raise UserError("no benchmark rows: every engine was left out")
    table = summary_table(records, None)
    write_text_atomic(Path(out_csv), table.drop(columns=["samples_ns"]).to_csv(index=False), force=True)
    write_text_atomic(Path(out_json), table.to_json(orient="records", indent=1) + "\n", force=True)
    return format_summary(table)
