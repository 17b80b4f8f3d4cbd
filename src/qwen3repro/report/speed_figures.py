"""The report's speed plots: decode and prefill speed per engine and file type, against the
memory-bandwidth roofline, and against the context's depth."""

from __future__ import annotations

import numpy as np

from qwen3repro.report.figures import label_points, plain_ticks, pyplot, to_png
from qwen3repro.report.tables import NOISY


def engine_colours(engines) -> dict[str, str]:
    """The same colour for an engine in every plot: the GGUF engines first, then transformers."""
    order = sorted(dict.fromkeys(engines), key=lambda e: (e.startswith("transformers"), e))
    return {engine: f"C{i}" for i, engine in enumerate(order)}


def speed(bench) -> bytes | None:
    """Prefill and decode tokens per second, one bar per file type and engine, only where the
    repetitions agree to within 10% of the mean; a noisier measurement keeps its row, marked, with no bar."""
    if bench is None or bench.empty:
        return None
    from matplotlib.patches import Patch

    plt = pyplot()
    tests = list(dict.fromkeys(bench["test"]))
    colour = engine_colours(bench["engine"])
    engines = list(colour)
    keys = bench[["model_type", "engine"]].drop_duplicates()
    keys = sorted(map(tuple, keys.to_numpy()), key=lambda k: (engines.index(k[1]), k[0]))
    fig, axes = plt.subplots(1, len(tests), figsize=(5.5 * len(tests), 0.8 + 0.28 * len(keys)), squeeze=False)
    for axis, test in zip(axes[0], tests):
        rows = bench[bench["test"] == test].set_index(["model_type", "engine"])
        top = float(rows["avg_ts"].max())
        for y, key in enumerate(keys):
            if key not in rows.index:
                continue
            avg, sd = float(rows.loc[key, "avg_ts"]), float(rows.loc[key, "stddev_ts"])
            if sd < NOISY * avg:
                axis.barh(y, avg, 0.7, xerr=sd, color=colour[key[1]])
                axis.text(avg + sd + 0.01 * top, y, f"{avg:.1f}", va="center", fontsize=7)
            else:
                axis.text(0.01 * top, y, f"noisy (± {100 * sd / avg:.0f}%): not plotted", va="center", fontsize=7)
        axis.set_yticks(range(len(keys)), [f"{t} · {e}" for t, e in keys], fontsize=7)
        axis.set_ylim(len(keys) - 0.5, -0.5)
        axis.set(title=test, xlabel="tokens / s (mean ± sd)")
        # room inside the axes for the value printed after each bar
        axis.set_xlim(0, 1.3 * float((rows["avg_ts"] + rows["stddev_ts"]).max()))
    fig.subplots_adjust(wspace=0.6)
    axes[0][-1].legend(
        [Patch(color=colour[e]) for e in engines], engines, fontsize=7, loc="lower right", framealpha=0.9
    )
    return to_png(fig)


def roofline(bench) -> bytes | None:
    """Decode speed against the bytes each token reads, under the memory-bandwidth ceiling
    (bandwidth / bytes per token): how close each engine and file type comes to the machine's limit."""
    if bench is None or bench.empty or "bytes_per_token" not in bench:
        return None
    rows = bench[bench["test"].str.startswith("tg") & bench["bytes_per_token"].notna() & bench["bandwidth_gbs"].notna()]
    rows = rows[rows["stddev_ts"] < NOISY * rows["avg_ts"]]
    if rows.empty:
        return None
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(7, 4.2))
    gb = rows["bytes_per_token"] / 1e9
    span = np.geomspace(gb.min() / 1.5, gb.max() * 1.5, 50)
    bandwidth = float(rows["bandwidth_gbs"].max())  # the best probe beside any bench
    axis.plot(span, bandwidth / span, "k--", lw=1, label=f"roofline: {bandwidth:.1f} GB/s ÷ bytes per token")
    colour = engine_colours(bench["engine"])
    for engine, e in rows.groupby("engine", sort=False):
        axis.scatter(e["bytes_per_token"] / 1e9, e["avg_ts"], color=colour[engine], label=engine)
    axis.set(
        xlabel="GB read per decoded token",
        ylabel="decode tokens / s",
        xscale="log",
        yscale="log",
        title="Decode against the memory-bandwidth roofline",
    )
    for ticks in (axis.xaxis, axis.yaxis):
        ticks.set_major_formatter(plain_ticks())
        ticks.set_minor_formatter(plain_ticks(minor=True))
    axis.legend(fontsize=7)
    label_points(axis, zip(gb, rows["avg_ts"], rows["model_type"] + " " + rows["engine"]))
    return to_png(fig)


def decode_by_depth(bench) -> bytes | None:
    """Decode speed against the context depth it ran at (llama-bench -d), one line per engine, file
    type and thread count: how each engine slows as a chat grows. None below two depths."""
    if bench is None or bench.empty or "n_depth" not in bench:
        return None
    rows = bench[(bench["n_prompt"] == 0) & (bench["n_gen"] > 0)]
    if rows["n_depth"].nunique() < 2:
        return None
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(7, 4.2))
    colour = engine_colours(rows["engine"])
    styles = ["-", "--", ":", "-."]
    types = list(dict.fromkeys(rows["model_type"]))
    for (engine, file_type, threads), r in rows.groupby(["engine", "model_type", "n_threads"], sort=False):
        r = r.sort_values("n_depth")
        axis.errorbar(
            r["n_depth"],
            r["avg_ts"],
            yerr=r["stddev_ts"],
            color=colour[engine],
            linestyle=styles[types.index(file_type) % len(styles)],
            marker="o" if threads == rows["n_threads"].max() else "x",
            capsize=2,
            label=f"{engine} {file_type}, {threads} thread{'s' if threads > 1 else ''}",
        )
    axis.set(
        xlabel="context depth (tokens already in the KV cache)",
        ylabel="decode tokens / s",
        title="Decode speed as the context fills",
    )
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=7)
    return to_png(fig)
