"""The page's answer to its title, one row per question, each naming the model and file it comes from."""

from __future__ import annotations

import math

from qwen3repro.report.inputs import ModelSection
from qwen3repro.report.tables import NOISY, fmt, has, has_runtime_kld, speed_cell

HEADER = ["question", "answer", "measured on"]


def answer_table(sections: list[ModelSection], max_kld: float) -> tuple[list[str], list[list[str]]]:
    return HEADER, quality_answers(sections, max_kld) + speed_answers(sections) + sampling_answers(sections)


def quality_answers(sections: list[ModelSection], max_kld: float) -> list[list[str]]:
    """The smallest file within `max_kld` of F32, and its size at true scale where a model of another
    size converted the same type."""
    rows = []
    for s in sections:
        if not has(s, "kld_mean"):
            continue
        kld = s.types[["kld_mean", "llama.cpp kld_mean"]].max(axis=1) if has_runtime_kld(s) else s.types["kld_mean"]
        within = s.types[kld <= max_kld].sort_values("size_mib")
        if within.empty:
            rows.append([f"smallest file within mean KLD {max_kld:g} of F32", "none", s.name])
            continue
        best = within.iloc[0]
        answer = (
            f"{best['type']}: {fmt(best['size_mib'], 1)} MiB, {fmt(best['bits_per_weight'], 2)} bits/weight, "
            f"KLD {fmt(kld[best.name], 3, sig=True)}"
        )
        for other in sections:
            same = other.types[other.types["type"] == best["type"]]
            if other is not s and not same.empty:
                o = same.iloc[0]
                answer += (
                    f"; at {other.name}'s size {fmt(o['size_mib'], 1)} MiB, {fmt(o['bits_per_weight'], 2)} bits/weight"
                )
        both = " (the larger of NumPy's and llama.cpp's)" if has_runtime_kld(s) else ""
        rows.append([f"smallest file within mean KLD {max_kld:g} of F32{both}", answer, s.name])
    return rows


def speed_answers(sections: list[ModelSection]) -> list[list[str]]:
    """The fastest decode per runtime among steady rows, naming the faster rows too noisy to rank."""
    rows = []
    for s in sections:
        if s.bench.empty:
            continue
        for engine, e in s.bench[s.bench["test"].str.startswith("tg")].groupby("engine", sort=False):
            steady = e[e["stddev_ts"] < NOISY * e["avg_ts"]]
            question = f"fastest decode, {engine}"
            if steady.empty:
                rows.append([question, f"no row steady enough to say (spread ≥ {NOISY:.0%} of the mean)", s.name])
                continue
            r = steady.loc[steady["avg_ts"].idxmax()]
            noisy = e[(e["stddev_ts"] >= NOISY * e["avg_ts"]) & (e["avg_ts"] > r["avg_ts"])]
            roofline = (
                ""
                if r["ceiling_share"] is None or math.isnan(r["ceiling_share"])
                else (f", {fmt(r['ceiling_share'], 0, percent=True)} of the bandwidth roofline")
            )
            answer = f"{r['model_type']}: {speed_cell(r['avg_ts'], r['stddev_ts'])} t/s ({r['test']}){roofline}"
            if not noisy.empty:
                faster = ", ".join(
                    f"{t} {fmt(avg, 1)} ± {fmt(sd, 1)}"
                    for t, avg, sd in noisy[["model_type", "avg_ts", "stddev_ts"]].to_numpy()
                )
                answer += f"; measured faster but too noisy to rank: {faster}"
            rows.append([question, answer, s.name])
    return rows


def sampling_answers(sections: list[ModelSection]) -> list[list[str]]:
    """What the sampling presets do, thinking on, on the first swept file."""
    rows = []
    for s in sections:
        for file_type, frame in list(s.sweeps.items())[:1]:
            presets = frame[(frame["grid"] == "presets-x-thinking") & frame["thinking"].eq(True)]
            parts = []
            for preset, r in presets.groupby("preset", sort=False):
                first = r.iloc[0]
                parts.append(
                    f"{preset} (T {first['temperature']:g}, top-p {first['top_p']:g}, top-k {int(first['top_k'])}): "
                    f"distinct-2 {fmt(r['distinct_2'].mean(), 2)}, entropy {fmt(r['mean_entropy'].mean(), 2)} nats, "
                    f"p(chosen) {fmt(r['mean_chosen_prob'].mean(), 2)}"
                )
            if parts:
                rows.append(["the sampling presets, thinking on", "; ".join(parts), f"{s.name} {file_type}"])
    return rows
