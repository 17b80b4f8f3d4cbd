"""The report's plots, drawn with matplotlib from the stage outputs' tables, as PNG bytes.

Each function takes data frames already read from results/ and returns the PNG of one figure,
or None when the data for it is not there (a plot is left out, never drawn from made-up values).
"""

from __future__ import annotations

import io

import numpy as np

from qwen3repro.sweep import traces


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; the same bytes on every machine
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "font.size": 9,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "svg.hashsalt": "qwen3repro",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    pyplot().close(fig)
    return buffer.getvalue()


# half the side of the square a scatter marker (matplotlib's default size) covers, in pixels at the report's dpi
MARKER_PX = 4


def label_points(axis, points, avoid=()) -> list:
    """One label per distinct point, the names of points that coincide (to the plot's resolution)
    joined; a label that would cover a point (these and `avoid`, other markers in data coordinates),
    the title or a label already placed moves up or down in steps of its height until it does not,
    with a leader line back to its point. Returns the labels' texts."""
    from matplotlib.transforms import Bbox

    merged: dict[tuple, list] = {}
    for x, y, name in points:
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        key = (round(float(x), 2), float(f"{float(y):.3g}"))
        merged.setdefault(key, [float(x), float(y), []])[2].append(str(name))
    axis.figure.canvas.draw()  # the axes' limits and scales settle only when drawn
    renderer = axis.figure.canvas.get_renderer()
    spots = [(x, y) for x, y, _ in merged.values()] + [(float(x), float(y)) for x, y in avoid]
    pixels = axis.transData.transform(spots) if spots else np.empty((0, 2))
    markers = [
        Bbox.from_bounds(px - MARKER_PX, py - MARKER_PX, 2 * MARKER_PX, 2 * MARKER_PX)
        for px, py in pixels
        if np.isfinite(px) and np.isfinite(py)
    ]
    placed, texts = [axis.title.get_window_extent(renderer), *markers], []
    for x, y, names in sorted(merged.values(), key=lambda p: (p[0], p[1])):
        label = ", ".join(names)
        text = axis.annotate(label, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
        height = text.get_window_extent(renderer).height * 72 / axis.figure.dpi + 1
        for step in range(1, 200):
            if not any(text.get_window_extent(renderer).overlaps(other) for other in placed):
                break
            text.set_position((4, 3 + (step + 1) // 2 * height * (1 if step % 2 else -1)))
        if text.get_position() != (4, 3):  # moved: drawn again with a leader line back to its point
            offset = text.get_position()
            text.remove()
            leader = {"arrowstyle": "-", "color": "0.6", "lw": 0.5}
            text = axis.annotate(
                label, (x, y), xytext=offset, textcoords="offset points", fontsize=7, arrowprops=leader
            )
        placed.append(text.get_window_extent(renderer))
        texts.append(text)
    return texts


def quality_vs_bits(types) -> bytes | None:
    """The quantization loss paired with the F32 file on the same tokens (ln PPL(Q)/PPL(F32) with
    its paired error, as llama-perplexity reports it) and the mean KLD, against the bits per weight
    of the layers' matrices (the part the mixes change), one labelled point per file type."""
    if "ln_ppl_ratio" not in types:
        return None
    rows = types[types["type"] != "F32"].dropna(subset=["ln_ppl_ratio"])
    if rows.empty:
        return None
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 5.4))
    x = rows["layer_bits_per_weight"]
    a.errorbar(x, 100 * rows["ln_ppl_ratio"], yerr=100 * rows["ln_ppl_ratio_error"], fmt="o", capsize=3)
    a.axhline(0, color="0.5", lw=0.8)
    a.set(
        xlabel="bits per weight of the layers' matrices",
        ylabel="100 × ln(PPL(Q) / PPL(F32))  (≈ % more perplexity)",
        title="Perplexity, paired with F32 on the same tokens (± paired error)",
    )
    label_points(a, zip(x, 100 * rows["ln_ppl_ratio"], rows["type"]))
    kld = rows[rows["kld_mean"] > 0]
    runtime = None
    b.scatter(kld["layer_bits_per_weight"], kld["kld_mean"], color="C3", label="weights (NumPy engine, float32)")
    if "llama.cpp kld_mean" in rows and rows["llama.cpp kld_mean"].notna().any():
        runtime = rows[rows["llama.cpp kld_mean"] > 0]
        b.scatter(
            runtime["layer_bits_per_weight"],
            runtime["llama.cpp kld_mean"],
            marker="x",
            color="C0",
            label="llama.cpp (quantized activations too)",
        )
        b.legend(fontsize=7, loc="lower left")
    if not kld.empty:
        b.set_yscale("log")
    b.set(
        xlabel="bits per weight of the layers' matrices", ylabel="mean KL(F32 || type)", title="KL divergence from F32"
    )
    others = list(zip(runtime["layer_bits_per_weight"], runtime["llama.cpp kld_mean"])) if runtime is not None else []
    label_points(b, zip(kld["layer_bits_per_weight"], kld["kld_mean"], kld["type"]), avoid=others)
    return to_png(fig)


def size_vs_bits(types) -> bytes | None:
    """File size and the weights' relative RMS error (each tensor's, pooled by size) against bits per
    weight: what a file type costs and what it keeps, whatever the weights learned."""
    if types is None or types.empty:
        return None
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.scatter(types["bits_per_weight"], types["size_mib"], color="C0")
    a.set(xlabel="bits per weight (whole file)", ylabel="MiB", title="File size")
    a.set_yscale("log")
    a.yaxis.set_major_formatter(plain_ticks())
    a.yaxis.set_minor_formatter(plain_ticks(minor=True))
    for axis in (a, b):
        _bits_axis(axis, types["bits_per_weight"])
    label_points(a, zip(types["bits_per_weight"], types["size_mib"], types["type"]))
    lossy = types[types["weight_error"] > 0]
    b.scatter(lossy["bits_per_weight"], lossy["weight_error"], color="C3")
    b.set(xlabel="bits per weight (whole file)", ylabel="relative RMS error", title="The weights' quantization error")
    if not lossy.empty:
        b.set_yscale("log")
    label_points(b, zip(lossy["bits_per_weight"], lossy["weight_error"], lossy["type"]))
    return to_png(fig)


def _bits_axis(axis, bits) -> None:
    from matplotlib.ticker import NullLocator

    """A logarithmic bits-per-weight axis ticked at the widths people quote."""
    axis.set_xscale("log", base=2)
    low, high = float(min(bits)) / 1.15, float(max(bits)) * 1.15
    axis.set_xlim(low, high)
    axis.set_xticks([t for t in (2, 3, 4, 5, 6, 8, 12, 16, 24, 32) if low <= t <= high])
    axis.xaxis.set_major_formatter(plain_ticks())
    axis.xaxis.set_minor_locator(NullLocator())


def plain_ticks(minor: bool = False):
    """Tick labels as plain numbers (2000, 0.5), not powers of ten; on minor ticks only 2 and 5 of
    each decade, so that a log axis stays legible."""
    from matplotlib.ticker import FuncFormatter

    def label(value, _):
        if minor and f"{value:.0e}"[0] not in "25":
            return ""
        return f"{value:g}"

    return FuncFormatter(label)


def sampling_heatmaps(grid) -> bytes | None:
    """distinct-2 and entropy over temperature x top-p (means over prompts and seeds)."""
    if grid is None or grid.empty:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, column, title in (
        (axes[0], "distinct_2", "distinct-2 of the text"),
        (axes[1], "mean_entropy", "entropy after temperature (nats)"),
    ):
        table = grid.pivot_table(index="temperature", columns="top_p", values=column, aggfunc="mean")
        image = axis.imshow(table.values, cmap="viridis", aspect="auto", origin="lower")
        axis.set_xticks(range(len(table.columns)), [f"{v:g}" for v in table.columns])
        axis.set_yticks(range(len(table.index)), [f"{v:g}" for v in table.index])
        axis.set(xlabel="top-p", ylabel="temperature", title=title)
        axis.grid(False)
        for (i, j), value in np.ndenumerate(table.values):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(image, ax=axis)
    return to_png(fig)


def thinking(rows) -> bytes | None:
    """Thinking on vs off per preset: tokens generated, tokens inside <think>, decode time."""
    if rows is None or rows.empty:
        return None
    plt = pyplot()
    means = rows.groupby(["preset", "thinking"])[["n_tokens", "think_tokens", "decode_s"]].mean()
    labels = [f"{p}\nthinking {'on' if t else 'off'}" for p, t in means.index]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    x = np.arange(len(labels))
    a.bar(x - 0.2, means["n_tokens"], 0.4, label="tokens generated")
    a.bar(x + 0.2, means["think_tokens"], 0.4, label="inside <think>")
    a.set_xticks(x, labels, fontsize=7)
    a.set(ylabel="tokens", title="Tokens")
    a.legend(fontsize=7)
    b.bar(x, means["decode_s"], 0.5, color="C2")
    b.set_xticks(x, labels, fontsize=7)
    b.set(ylabel="seconds", title="Decode time")
    return to_png(fig)


def multi_turn(rows) -> bytes | None:
    """Per turn of the conversations with multi-turn on: context tokens, and the time to the first
    token with the cached prefix reused vs the whole context prefilled again."""
    if rows is None or rows.empty:
        return None
    plt = pyplot()
    means = rows.groupby("turn")[["context_tokens", "reused_tokens", "ttft_s", "ttft_full_prefill_s"]].mean()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    turns = means.index.to_numpy() + 1
    a.bar(turns - 0.2, means["context_tokens"], 0.4, label="context tokens")
    a.bar(turns + 0.2, means["reused_tokens"], 0.4, label="reused from the cache")
    a.set(xlabel="turn", ylabel="tokens", title="Context")
    a.legend(fontsize=7)
    b.plot(turns, 1000 * means["ttft_s"], "o-", label="prefix reused")
    b.plot(turns, 1000 * means["ttft_full_prefill_s"], "s--", label="full re-prefill")
    b.set(xlabel="turn", ylabel="ms", title="Time to first token")
    b.legend(fontsize=7)
    for axis in (a, b):
        axis.set_xticks(turns)
    return to_png(fig)


def _label(piece: str, width: int = 12) -> str:
    """A token's text for an axis label: whitespace and characters beyond the plot font's Latin
    range written as escapes (a CJK or emoji piece would otherwise be an empty box)."""
    out = "".join(
        "␣" if c == " " else c if 0x20 < ord(c) < 0x250 else c.encode("unicode_escape").decode() for c in piece
    )
    return out[:width] if out else "''"


def token_trace(trace: dict, steps: int = 6, top: int = 10) -> bytes | None:
    """The first steps of one trace at its recorded settings: the top tokens' probabilities before
    the filters (after temperature; narrow bars) and after them (renormalised over what the
    filters kept; wide pale bars), the drawn token in red."""
    if not trace or not trace.get("steps"):
        return None
    plt = pyplot()
    shown = trace["steps"][:steps]
    temperature = trace["params"]["temperature"] or 1.0
    fig, axes = plt.subplots(1, len(shown), figsize=(2.3 * len(shown), 3.2), squeeze=False)
    for i, (axis, step) in enumerate(zip(axes[0], shown)):
        before, _ = traces.probabilities(step, temperature)
        kept = step["kept"]  # past the stored candidates, the nucleus' mass is not known here: no bars
        after = np.where(np.arange(len(before)) < kept, before / before[:kept].sum(), 0.0) * (kept <= len(before))
        ids = step["ids"][:top][::-1]
        y = np.arange(len(ids))
        chosen = ["C3" if t == step["token"] else "C0" for t in ids]
        axis.barh(y, after[:top][::-1], height=0.8, color=chosen, alpha=0.3, label="after filters")
        axis.barh(y, before[:top][::-1], height=0.35, color=chosen, label="before filters")
        axis.set_yticks(y, [_label(trace["pieces"][str(t)]) for t in ids], fontsize=7)
        axis.set_title(f"step {i + 1}: {_label(trace['pieces'][str(step['token'])])}", fontsize=8)
        axis.tick_params(axis="x", labelsize=7)
    axes[0][0].legend(fontsize=6, loc="lower right")
    thinking = "on" if trace["thinking"] else "off"
    fig.suptitle(f"{trace['prompt']}, preset {trace['preset']}, thinking {thinking}", fontsize=9)
    return to_png(fig)


def training_curve(curve) -> bytes | None:
    """The held-out losses along both phases: the held-out works' text, and (with a chat phase) the
    assistant tokens of held-out conversations; the chat phase shaded."""
    if curve is None or curve.empty:
        return None
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(6, 3.4))
    axis.plot(curve["step"], curve["held_out_loss"], "o-", label="held-out works' text")
    if "chat_held_out_loss" in curve:
        axis.plot(curve["step"], curve["chat_held_out_loss"], "s-", label="held-out conversations' replies")
    if "phase" in curve and (curve["phase"] != "pretraining").any():
        start = curve.loc[curve["phase"] == "pretraining", "step"].max()
        axis.axvspan(start, curve["step"].max(), color="0.92", label="chat tuning")
    axis.set(
        xlabel="optimizer step", ylabel="cross-entropy (nats / token)", title="From random weights to a chat model"
    )
    axis.legend(fontsize=7)
    return to_png(fig)
