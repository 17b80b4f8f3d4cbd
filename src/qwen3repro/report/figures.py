"""The report's plots, drawn with matplotlib from the stage outputs' tables, as PNG bytes.

Each function takes data frames already read from results/ and returns the PNG of one figure,
or None when the data for it is not there (a plot is left out, never drawn from made-up values).
"""

from __future__ import annotations

import io

import numpy as np

from qwen3repro.sweep import traces


def _pyplot():
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


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return buffer.getvalue()


def quality_vs_bits(types) -> bytes | None:
    """PPL (with its error) and mean KLD against bits per weight, one point per file type."""
    rows = types.dropna(subset=["bits_per_weight", "ppl"])
    if rows.empty:
        return None
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.errorbar(rows["bits_per_weight"], rows["ppl"], yerr=rows["ppl_error"], fmt="o", capsize=3)
    a.set(xlabel="bits per weight", ylabel="perplexity", title="Perplexity (± standard error)")
    kld = rows[rows["kld_mean"] > 0]
    b.scatter(kld["bits_per_weight"], kld["kld_mean"], color="C3", label="weights (NumPy engine, float32)")
    if "llama.cpp kld_mean" in rows and rows["llama.cpp kld_mean"].notna().any():
        runtime = rows[rows["llama.cpp kld_mean"] > 0]
        b.scatter(
            runtime["bits_per_weight"],
            runtime["llama.cpp kld_mean"],
            marker="x",
            color="C0",
            label="llama.cpp (quantized activations too)",
        )
        b.legend(fontsize=7)
    if not kld.empty:
        b.set_yscale("log")
    b.set(xlabel="bits per weight", ylabel="mean KL(F32 || type)", title="KL divergence from F32")
    for axis, frame, column in ((a, rows, "ppl"), (b, kld, "kld_mean")):
        for _, r in frame.iterrows():
            axis.annotate(
                r["type"], (r["bits_per_weight"], r[column]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    return _png(fig)


def speed(bench) -> bytes | None:
    """Prefill and decode tokens per second per engine and file type (mean ± sd)."""
    if bench is None or bench.empty:
        return None
    plt = _pyplot()
    tests = [t for t in bench["test"].unique()]
    fig, axes = plt.subplots(1, len(tests), figsize=(4.2 * len(tests), 3.8), squeeze=False)
    for axis, test in zip(axes[0], tests):
        rows = bench[bench["test"] == test]
        table = rows.pivot_table(index="model_type", columns="engine", values="avg_ts", sort=False)
        errors = rows.pivot_table(index="model_type", columns="engine", values="stddev_ts", sort=False)
        table.plot.bar(ax=axis, yerr=errors, capsize=2, width=0.8, rot=45)
        axis.set(title=test, xlabel="", ylabel="tokens / s")
        axis.legend(fontsize=7)
    return _png(fig)


def sampling_heatmaps(grid) -> bytes | None:
    """distinct-2 and entropy over temperature x top-p (means over prompts and seeds)."""
    if grid is None or grid.empty:
        return None
    plt = _pyplot()
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
    return _png(fig)


def thinking(rows) -> bytes | None:
    """Thinking on vs off per preset: tokens generated, tokens inside <think>, decode time."""
    if rows is None or rows.empty:
        return None
    plt = _pyplot()
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
    return _png(fig)


def multi_turn(rows) -> bytes | None:
    """Per turn of the conversations with multi-turn on: context tokens, and the time to the first
    token with the cached prefix reused vs the whole context prefilled again."""
    if rows is None or rows.empty:
        return None
    plt = _pyplot()
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
    return _png(fig)


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
    plt = _pyplot()
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
    return _png(fig)


def training_curve(curve) -> bytes | None:
    if curve is None or curve.empty:
        return None
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6, 3.4))
    axis.plot(curve["step"], curve["train_loss"], label="training batch")
    axis.plot(curve["step"], curve["held_out_loss"], "o-", label="held-out works")
    axis.set(xlabel="optimizer step", ylabel="cross-entropy (nats / token)", title="Pretraining on Shakespeare")
    axis.legend(fontsize=7)
    return _png(fig)
