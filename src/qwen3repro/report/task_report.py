"""The report's task section: accuracy per file type with its interval, flips against F32 and the
answers' KLD per task set and runtime, whether the model beats chance, the loss along generated
tokens per span, the flip-rate plot, and the answer "smallest file whose flips stay under the bound"."""

from __future__ import annotations

from qwen3repro.report.figures import label_points, pyplot, to_png
from qwen3repro.report.inputs import ModelSection
from qwen3repro.report.tables import fmt

RUNTIME_NAMES = {"numpy": "NumPy", "llama.cpp": "llama.cpp"}


def _interval(row) -> str:
    lo, hi = fmt(row["accuracy_lo"], 1, percent=True), fmt(row["accuracy_hi"], 1, percent=True)
    return f"{fmt(row['accuracy'], 1, percent=True)} [{lo}, {hi}]"


def _flips(row) -> str:
    if row["flips"] == 0:
        return "0"
    ways = f"{row['right_to_wrong']}/{row['wrong_to_right']}/{row['wrong_to_wrong']}"
    return f"{row['flips']} ({fmt(row['flip_rate'], 1, percent=True)}; {ways})"


def task_table(s: ModelSection) -> tuple[list[str], list[list[str]]]:
    """A row per file type and task set: per runtime, the accuracy [95% interval], the flips against
    F32 (rate; right→wrong / wrong→right / wrong→wrong) and the mean KLD over the answers' tokens."""
    if s.tasks is None or s.tasks.empty:
        return [], []
    runtimes = list(dict.fromkeys(s.tasks["runtime"]))
    header = ["type", "bits/weight", "set"]
    for r in runtimes:
        name = RUNTIME_NAMES.get(r, r)
        header += [f"{name} accuracy [95%]", f"{name} flips vs F32", f"{name} answer KLD"]
    bits = dict(zip(s.types["type"], s.types["bits_per_weight"]))
    rows = []
    for (file_type, name), group in s.tasks.groupby(["type", "set"], sort=False):
        row = [file_type, fmt(bits.get(file_type), 2), name]
        for r in runtimes:
            found = group[group["runtime"] == r]
            if found.empty:
                row += ["", "", ""]
                continue
            x = found.iloc[0]
            row += [_interval(x), _flips(x), fmt(x["answer_kld_mean"], 3, sig=True)]
        rows.append(row)
    return header, rows


def chance_lines(s: ModelSection) -> list[str]:
    """Per task set and runtime, whether the F32 file's accuracy beats a guess, said either way."""
    if s.tasks is None or s.tasks.empty:
        return []
    lines = []
    for _, x in s.tasks[s.tasks["type"] == "F32"].iterrows():
        chance, lo, hi = x["chance"], x["accuracy_lo"], x["accuracy_hi"]
        guess = fmt(chance, 1, percent=True)
        if lo > chance:
            verdict = f"beats chance ({guess}) by {fmt(100 * (x['accuracy'] - chance), 1)} points"
        elif hi < chance:
            verdict = f"is below chance ({guess}): its answers are worse than random guesses"
        else:
            verdict = f"does not beat chance ({guess}): the 95% interval holds it"
        lines.append(
            f"{x['set']}, {RUNTIME_NAMES.get(x['runtime'], x['runtime'])}: F32 answers {x['correct']} of {x['tasks']} "
            f"({_interval(x)}) and {verdict}."
        )
    return lines


def generated_table(s: ModelSection) -> tuple[list[str], list[list[str]]]:
    """A row per file type and span: per runtime, the mean KLD ± error, its 99th percentile and how
    often the top token is F32's, along the F32 file's own generations."""
    g = s.generated
    if g is None or g.empty:
        return [], []
    runtimes = list(dict.fromkeys(g["runtime"]))
    header = ["type", "span", "tokens"]
    for r in runtimes:
        name = RUNTIME_NAMES.get(r, r)
        header += [f"{name} mean KLD", f"{name} KLD p99", f"{name} same top"]
    rows = []
    for (file_type, span), group in g.groupby(["type", "span"], sort=False):
        first = group.iloc[0]
        row = [file_type, span, fmt(first["count"], 0)]
        for r in runtimes:
            found = group[group["runtime"] == r]
            x = found.iloc[0] if not found.empty else None
            if x is None or x["kld_mean"] != x["kld_mean"]:
                row += ["", "", ""]
                continue
            mean = f"{fmt(x['kld_mean'], 3, sig=True)} ± {fmt(x['kld_mean_error'], 2, sig=True)}"
            row += [mean, fmt(x["kld_p99"], 3, sig=True), fmt(x["same_top_p"], 1, percent=True)]
        rows.append(row)
    return header, rows


def flips_vs_bits(s: ModelSection) -> bytes | None:
    """Flip rate against F32 (± its Wilson 95% interval) against the bits per weight of the layers'
    matrices (the part the mixes change; a small model's embedding would crowd every file near 8),
    a series per task set and runtime."""
    if s.tasks is None or s.tasks.empty:
        return None
    rows = s.tasks[s.tasks["type"] != "F32"].merge(s.types[["type", "layer_bits_per_weight"]], on="type")
    if rows.empty:
        return None
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(7.5, 4.6))
    markers = {"numpy": "o", "llama.cpp": "x"}
    for i, ((name, runtime), group) in enumerate(rows.groupby(["set", "runtime"], sort=False)):
        rate = 100 * group["flip_rate"]
        error = [rate - 100 * group["flip_rate_lo"], 100 * group["flip_rate_hi"] - rate]
        axis.errorbar(
            group["layer_bits_per_weight"] + 0.04 * i,  # apart, so that equal rates do not hide each other
            rate,
            yerr=error,
            fmt=markers.get(runtime, "s"),
            capsize=2,
            label=f"{name}, {RUNTIME_NAMES.get(runtime, runtime)}",
        )
    first = rows.drop_duplicates("type")
    label_points(axis, zip(first["layer_bits_per_weight"], 100 * first["flip_rate"], first["type"]))
    axis.set(
        xlabel="bits per weight of the layers' matrices",
        ylabel="items whose answer differs from F32's (%)",
        title="Flips against F32 (± Wilson 95% interval)",
    )
    axis.legend(fontsize=7)
    return to_png(fig)


def choose_flips(s: ModelSection, max_flips: float) -> dict | None:
    """The flips answer as data: the smallest file whose worst flip rate (over sets and runtimes)
    is at most `max_flips`, its size and that rate; None where no file keeps within it."""
    worst = s.tasks.groupby("type")["flip_rate"].max()
    sizes = s.types.set_index("type")["size_mib"]
    within = sorted((sizes[t], t) for t, rate in worst.items() if rate <= max_flips)
    if not within:
        return None
    size, best = within[0]
    return {"type": best, "size_mib": size, "worst_flip_rate": worst[best]}


def flip_answers(sections: list[ModelSection], max_flips: float, kld_pick: dict) -> list[list[str]]:
    """choose_flips per model, worded, and whether it is the file the KLD answer picks (`kld_pick`:
    model -> type or None)."""
    rows = []
    for s in sections:
        if s.tasks is None or s.tasks.empty:
            continue
        question = f"smallest file whose flip rate against F32 stays at most {max_flips:.0%} (every set, every runtime)"
        choice = choose_flips(s, max_flips)
        if choice is None:
            rows.append([question, "none", s.name])
            continue
        best = choice["type"]
        worst = fmt(choice["worst_flip_rate"], 1, percent=True)
        answer = f"{best}: {fmt(choice['size_mib'], 1)} MiB, worst flip rate {worst}"
        other = kld_pick.get(s.name)
        if other == best:
            answer += "; the KLD answer picks the same file"
        elif other is not None:
            answer += f"; the KLD answer picks {other}: the two answers disagree"
        rows.append([question, answer, s.name])
    return rows
