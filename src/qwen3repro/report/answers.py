"""The page's answer to its title, one row per question, each naming the model and file it comes from."""

from __future__ import annotations

import math
from itertools import groupby

from qwen3repro.report.inputs import ModelSection
from qwen3repro.report.tables import NOISY, fmt, has, has_runtime_kld, speed_cell
from qwen3repro.report.task_report import flip_answers

HEADER = ["question", "answer", "measured on"]


def answer_table(
    sections: list[ModelSection], max_kld: float, max_flips: float = 0.05
) -> tuple[list[str], list[list[str]]]:
    picks = {s.name: kld_pick(s, max_kld) for s in sections}
    rows = quality_answers(sections, max_kld, picks)
    rows += flip_answers(sections, max_flips, {m: None if p is None else p[0]["type"] for m, p in picks.items()})
    rows += speed_answers(sections) + memory_answers(sections)
    return HEADER, rows + sampling_answers(sections)


def kld_pick(s: ModelSection, max_kld: float):
    """The smallest file within `max_kld` of F32 (the larger of the runtimes' KLDs where both are
    measured) and its KLD; None where nothing is measured or nothing is within it."""
    if not has(s, "kld_mean"):
        return None
    kld = s.types[["kld_mean", "llama.cpp kld_mean"]].max(axis=1) if has_runtime_kld(s) else s.types["kld_mean"]
    within = s.types[kld <= max_kld].sort_values("size_mib")
    return None if within.empty else (within.iloc[0], kld[within.index[0]])


def quality_answers(sections: list[ModelSection], max_kld: float, picks: dict | None = None) -> list[list[str]]:
    """The smallest file within `max_kld` of F32 (`picks`: model -> kld_pick, where already made), and
    its size at true scale where a model of another size converted the same type."""
    rows = []
    for s in sections:
        if not has(s, "kld_mean"):
            continue
        both = " (the larger of NumPy's and llama.cpp's)" if has_runtime_kld(s) else ""
        question = f"smallest file within mean KLD {max_kld:g} of F32{both}"
        pick = picks[s.name] if picks is not None else kld_pick(s, max_kld)
        if pick is None:
            rows.append([question, "none", s.name])
            continue
        best, kld = pick
        answer = (
            f"{best['type']}: {fmt(best['size_mib'], 1)} MiB, {fmt(best['bits_per_weight'], 2)} bits/weight, "
            f"KLD {fmt(kld, 3, sig=True)}"
        )
        for other in sections:
            same = other.types[other.types["type"] == best["type"]]
            if other is not s and not same.empty:
                o = same.iloc[0]
                answer += (
                    f"; at {other.name}'s size {fmt(o['size_mib'], 1)} MiB, {fmt(o['bits_per_weight'], 2)} bits/weight"
                )
        rows.append([question, answer, s.name])
    return rows


# what each engine's roofline counts as read per token
CEILING_OF = {
    "numpy": "its float32 weights, the same for every file type: it computes in float32",
    "numpy-low-memory": "the file's own blocks, read and dequantized again for every token",
    "llama.cpp": "the file's own blocks",
}


def speed_answers(sections: list[ModelSection]) -> list[list[str]]:
    """The fastest decode per runtime among steady rows whose share of the roofline is a possible one
    (at most 100%), with that share of the engine's own ceiling, the rows within noise of it (a tie is
    not a ranking), and the faster rows too noisy to rank."""
    rows = []
    for s in sections:
        if s.bench.empty:
            continue
        for engine, e in s.bench[s.bench["test"].str.startswith("tg")].groupby("engine", sort=False):
            over = e["ceiling_share"] > 1.0
            steady = e[(e["stddev_ts"] < NOISY * e["avg_ts"]) & ~over]
            question = f"fastest decode, {engine}"
            if steady.empty:
                why = f"spread ≥ {NOISY:.0%} of the mean, or a share of the roofline above 100%"
                rows.append([question, f"no row steady enough to say ({why})", s.name])
                continue
            r = steady.loc[steady["avg_ts"].idxmax()]
            answer = f"{r['model_type']}: {speed_cell(r['avg_ts'], r['stddev_ts'])} t/s ({r['test']})"
            if r["ceiling_share"] is not None and not math.isnan(r["ceiling_share"]):
                of = CEILING_OF.get(engine, "its weights in the dtype it computes in")
                answer += f", {fmt(r['ceiling_share'], 0, percent=True)} of its bandwidth roofline (bytes read: {of})"
            tied = steady[
                (steady.index != r.name) & (steady["avg_ts"] + steady["stddev_ts"] >= r["avg_ts"] - r["stddev_ts"])
            ]
            if not tied.empty:
                answer += "; within noise of it: " + ", ".join(
                    f"{t} {fmt(avg, 1)} ± {fmt(sd, 1)}"
                    for t, avg, sd in tied[["model_type", "avg_ts", "stddev_ts"]].to_numpy()
                )
            noisy = e[(e["stddev_ts"] >= NOISY * e["avg_ts"]) & (e["avg_ts"] > r["avg_ts"]) & ~over]
            if not noisy.empty:
                faster = ", ".join(
                    f"{t} {fmt(avg, 1)} ± {fmt(sd, 1)}"
                    for t, avg, sd in noisy[["model_type", "avg_ts", "stddev_ts"]].to_numpy()
                )
                answer += f"; measured faster but too noisy to rank: {faster}"
            if over.any():
                left_out = ", ".join(
                    f"{t} {fmt(share, 0, percent=True)}"
                    for t, share in e[over][["model_type", "ceiling_share"]].to_numpy()
                )
                answer += (
                    f"; left out, above 100% of the roofline (probe and bench disagree: measure again): {left_out}"
                )
            rows.append([question, answer, s.name])
    return rows


BUDGETS_GB = (1, 2, 4, 8)
# the quality figure that belongs to each engine: the weights' loss for the NumPy engine (float32
# arithmetic on the dequantized weights), llama.cpp's own for llama.cpp
KLD_OF = {"numpy": "kld_mean", "numpy-low-memory": "kld_mean", "llama.cpp": "llama.cpp kld_mean"}


def _quality(sections: list[ModelSection]) -> tuple[dict, dict]:
    """Per file type, each engine's mean KLD against F32, and the model it was measured on (the first
    model that measured it: the trained one, for the stand-in's types)."""
    klds, measured_on = {}, {}
    for s in sections:
        for _, r in s.types.iterrows() if has(s, "kld_mean") else []:
            for engine, column in KLD_OF.items():
                value = r.get(column)
                if value is not None and value == value and (engine, r["type"]) not in klds:
                    klds[(engine, r["type"])] = float(value)
                    measured_on[(engine, r["type"])] = s.name
    return klds, measured_on


def _decode_speeds(e) -> dict:
    """Per file type, an engine's decode speed (t/s) at the least depth it was measured at."""
    tg = e[e["test"].str.startswith("tg")]
    if "n_depth" in tg:
        tg = tg[tg["n_depth"] == tg.groupby("model_type")["n_depth"].transform("min")]
    return tg.groupby("model_type", sort=False)["avg_ts"].max().to_dict()


def memory_answers(sections: list[ModelSection], machine_gb: float | None = None) -> list[list[str]]:
    """For each memory budget (1, 2, 4, 8 GB and this machine's), per GGUF engine (the low-memory
    mode one of them), the file of least mean KLD whose peak RSS in the bench fits it, with its decode
    speed; a type without a KLD of its own takes the first measured one of the same type (the trained
    model's, for the stand-in), labelled so."""
    from qwen3repro.pipeline.resources import machine_mb

    klds, measured_on = _quality(sections)
    machine_gb = machine_gb if machine_gb is not None else machine_mb() * 2**20 / 1e9
    budgets = sorted([(gb, f"{gb} GB") for gb in BUDGETS_GB] + [(machine_gb, f"this machine's {machine_gb:.0f} GB")])
    rows = []
    for s in sections:
        if s.bench.empty or "peak_rss_bytes" not in s.bench:
            continue
        for engine, e in s.bench.groupby("engine", sort=False):
            if engine not in KLD_OF:
                continue
            peak = e.groupby("model_type", sort=False)["peak_rss_bytes"].max() / 1e9
            speeds = _decode_speeds(e)
            depth = e["n_depth"] if "n_depth" in e else 0
            context = int((e["n_prompt"] + e["n_gen"] + depth).max())
            picks, sources = [], set()
            for gb, label in budgets:
                fits = [t for t in peak.index if peak[t] <= gb]
                scored = sorted((klds[(engine, t)], peak[t], t) for t in fits if (engine, t) in klds)
                if not fits:
                    t = peak.idxmin()
                    pick = f"none (the smallest, {t}, peaks at {peak[t]:.2f} GB)"
                elif not scored:
                    pick = ", ".join(fits) + " fit (no quality figures for them)"
                else:
                    kld, _, t = scored[0]
                    sources.add(measured_on[(engine, t)])
                    speed = f", {fmt(speeds[t], 2, sig=True)} t/s decode" if t in speeds else ""
                    pick = f"{t} ({peak[t]:.2f} GB, KLD {fmt(kld, 3, sig=True)}{speed})"
                picks.append((gb, label, pick))
            borrowed = sorted(sources - {s.name})
            note = f"peak RSS up to {context} positions"
            if borrowed:
                note += f"; KLD of {', '.join(borrowed)}'s file of that type"
            # neighbouring budgets with the same pick say it once
            runs = groupby(picks, key=lambda p: p[2])
            answer = "; ".join(f"{_budget_span([p[:2] for p in run])}: {pick}" for pick, run in runs)
            rows.append([f"best file that fits in memory, {engine}", f"{answer} ({note})", s.name])
    return rows


def _budget_span(span: list[tuple[float, str]]) -> str:
    """'2 GB', '1–2 GB', or '4 GB to this machine's 24 GB'."""
    (low, first), (high, last) = span[0], span[-1]
    if len(span) == 1:
        return first
    if first == f"{low} GB" and last == f"{high} GB":
        return f"{low}–{high} GB"
    return f"{first} to {last}"


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
