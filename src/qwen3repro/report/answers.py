"""The page's answer to its title, one row per question, each naming the model and file it comes from."""

from __future__ import annotations

import math
from itertools import groupby

import pandas as pd

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


def choose_quality(s: ModelSection, sections: list[ModelSection], pick) -> dict | None:
    """The KLD answer as data: the file `pick` chose (kld_pick's), its figures, and the same type's
    size and bits per weight in every other model that converted it."""
    if pick is None:
        return None
    best, kld = pick
    elsewhere = [
        (other.name, same.iloc[0]["size_mib"], same.iloc[0]["bits_per_weight"])
        for other in sections
        if other is not s and not (same := other.types[other.types["type"] == best["type"]]).empty
    ]
    return {
        "type": best["type"],
        "size_mib": best["size_mib"],
        "bits_per_weight": best["bits_per_weight"],
        "kld": kld,
        "elsewhere": elsewhere,
    }


def word_quality(choice: dict | None) -> str:
    if choice is None:
        return "none"
    answer = (
        f"{choice['type']}: {fmt(choice['size_mib'], 1)} MiB, {fmt(choice['bits_per_weight'], 2)} bits/weight, "
        f"KLD {fmt(choice['kld'], 3, sig=True)}"
    )
    for model, size, bits in choice["elsewhere"]:
        answer += f"; at {model}'s size {fmt(size, 1)} MiB, {fmt(bits, 2)} bits/weight"
    return answer


def quality_answers(sections: list[ModelSection], max_kld: float, picks: dict | None = None) -> list[list[str]]:
    """The smallest file within `max_kld` of F32 (`picks`: model -> kld_pick, where already made), and
    its size at true scale where a model of another size converted the same type."""
    rows = []
    for s in sections:
        if not has(s, "kld_mean"):
            continue
        both = " (the larger of NumPy's and llama.cpp's)" if has_runtime_kld(s) else ""
        pick = picks[s.name] if picks is not None else kld_pick(s, max_kld)
        choice = choose_quality(s, sections, pick)
        rows.append([f"smallest file within mean KLD {max_kld:g} of F32{both}", word_quality(choice), s.name])
    return rows


# what each engine's roofline counts as read per token
CEILING_OF = {
    "numpy": "its float32 weights, whatever the file type",
    "numpy-low-memory": "the file's own blocks, read and dequantized again for every token",
    "llama.cpp": "the file's own blocks",
}


def choose_speed(e) -> dict | None:
    """The speed answer for one engine's decode rows, as data: the fastest steady row whose share of
    the roofline is a possible one (at most 100%), the rows within noise of it (a tie is not a
    ranking), the faster rows too noisy to rank, and the rows above the roofline left out. None where
    no row is steady."""
    over = e["ceiling_share"] > 1.0
    steady = e[(e["stddev_ts"] < NOISY * e["avg_ts"]) & ~over]
    if steady.empty:
        return None
    best = steady.loc[steady["avg_ts"].idxmax()]
    tied = steady[
        (steady.index != best.name) & (steady["avg_ts"] + steady["stddev_ts"] >= best["avg_ts"] - best["stddev_ts"])
    ]
    noisy = e[(e["stddev_ts"] >= NOISY * e["avg_ts"]) & (e["avg_ts"] > best["avg_ts"]) & ~over]
    rows = lambda frame: [tuple(r) for r in frame[["model_type", "avg_ts", "stddev_ts"]].to_numpy()]  # noqa: E731
    return {
        "type": best["model_type"],
        "avg_ts": best["avg_ts"],
        "stddev_ts": best["stddev_ts"],
        "test": best["test"],
        "ceiling_share": best["ceiling_share"],
        "tied": rows(tied),
        "noisy": rows(noisy),
        "over": [tuple(r) for r in e[over][["model_type", "ceiling_share"]].to_numpy()],
    }


def word_speed(engine: str, choice: dict | None) -> str:
    if choice is None:
        why = f"spread ≥ {NOISY:.0%} of the mean, or a share of the roofline above 100%"
        return f"no row steady enough to say ({why})"
    answer = f"{choice['type']}: {speed_cell(choice['avg_ts'], choice['stddev_ts'])} t/s ({choice['test']})"
    share = choice["ceiling_share"]
    if share is not None and not math.isnan(share):
        of = CEILING_OF.get(engine, "its weights in its compute dtype")
        answer += f", {fmt(share, 0, percent=True)} of its bandwidth roofline (bytes read: {of})"
    listed = lambda rows: ", ".join(f"{t} {fmt(avg, 1)} ± {fmt(sd, 1)}" for t, avg, sd in rows)  # noqa: E731
    if choice["tied"]:
        answer += "; within noise of it: " + listed(choice["tied"])
    if choice["noisy"]:
        answer += "; measured faster but too noisy to rank: " + listed(choice["noisy"])
    if choice["over"]:
        left_out = ", ".join(f"{t} {fmt(share, 0, percent=True)}" for t, share in choice["over"])
        answer += f"; left out, above 100% of the roofline (probe and bench disagree: measure again): {left_out}"
    return answer


def speed_answers(sections: list[ModelSection]) -> list[list[str]]:
    """The fastest decode per runtime (choose_speed), worded."""
    rows = []
    for s in sections:
        if s.bench.empty:
            continue
        for engine, e in s.bench[s.bench["test"].str.startswith("tg")].groupby("engine", sort=False):
            rows.append([f"fastest decode, {engine}", word_speed(engine, choose_speed(e)), s.name])
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
                if value is not None and not pd.isna(value) and (engine, r["type"]) not in klds:
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
            picks = choose_memory(e, engine, klds, budgets)
            depth = e["n_depth"] if "n_depth" in e else 0
            context = int((e["n_prompt"] + e["n_gen"] + depth).max())
            borrowed = sorted({measured_on[(engine, p["type"])] for p in picks if p["kld"] is not None} - {s.name})
            note = f"peak RSS up to {context} positions"
            if borrowed:
                note += f"; KLD of {', '.join(borrowed)}'s file of that type"
            # neighbouring budgets with the same pick say it once
            runs = groupby([(p["gb"], p["label"], word_memory_pick(p)) for p in picks], key=lambda p: p[2])
            answer = "; ".join(f"{_budget_span([p[:2] for p in run])}: {pick}" for pick, run in runs)
            rows.append([f"best file that fits in memory, {engine}", f"{answer} ({note})", s.name])
    return rows


def choose_memory(e, engine: str, klds: dict, budgets: list[tuple[float, str]]) -> list[dict]:
    """Per budget, as data: the file of least mean KLD whose peak RSS fits it ("fits" lists every file
    that fits where none has a KLD; none fits: the smallest's peak), with its decode speed."""
    peak = e.groupby("model_type", sort=False)["peak_rss_bytes"].max() / 1e9
    speeds = _decode_speeds(e)
    picks = []
    for gb, label in budgets:
        fits = [t for t in peak.index if peak[t] <= gb]
        scored = sorted((klds[(engine, t)], peak[t], t) for t in fits if (engine, t) in klds)
        t = scored[0][2] if scored else (peak.idxmin() if not fits else None)
        picks.append(
            {
                "gb": gb,
                "label": label,
                "type": t,
                "peak_gb": None if t is None else peak[t],
                "kld": scored[0][0] if scored else None,
                "speed": speeds.get(t),
                "fits": fits,
            }
        )
    return picks


def word_memory_pick(p: dict) -> str:
    if not p["fits"]:
        return f"none (the smallest, {p['type']}, peaks at {p['peak_gb']:.2f} GB)"
    if p["kld"] is None:
        return ", ".join(p["fits"]) + " fit (no quality figures for them)"
    speed = f", {fmt(p['speed'], 2, sig=True)} t/s decode" if p["speed"] is not None else ""
    return f"{p['type']} ({p['peak_gb']:.2f} GB, KLD {fmt(p['kld'], 3, sig=True)}{speed})"


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
            # Qwen3's two sampling presets; greedy (argmax) samples nothing
            presets = frame[
                (frame["grid"] == "presets-x-thinking") & frame["thinking"].eq(True) & frame["preset"].ne("greedy")
            ]
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
