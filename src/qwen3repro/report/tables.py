"""The report's tables as rows of strings, shared by the HTML page and the Markdown summary.

A value a stage did not measure (e.g. llama.cpp rows when llama-cpp-python is not installed) is
shown as "—", never filled in.
"""

from __future__ import annotations

import math

from qwen3repro.report.inputs import ModelSection

DASH = "—"


def fmt(value, digits: int = 2, percent: bool = False, sig: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if percent:
        return f"{100 * value:.{digits}f}%"
    if sig:
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _get(row, key):
    return row[key] if key in row and not (isinstance(row[key], float) and math.isnan(row[key])) else None


def has_runtime_kld(section: ModelSection) -> bool:
    """Whether the perplexity stage measured llama.cpp's KLD too (perplexity.runtimes)."""
    column = section.types.get("llama.cpp kld_mean")
    return column is not None and column.notna().any()


def main_table(section: ModelSection) -> tuple[list[str], list[list[str]]]:
    """The per-file-type table, as header and rows of strings (shared by the HTML and Markdown)."""
    tests = list(dict.fromkeys(section.bench["test"])) if not section.bench.empty else []
    engines = [e for e in ("numpy", "llama.cpp") if not section.bench.empty and e in set(section.bench["engine"])]
    runtime_kld = has_runtime_kld(section)
    header = [
        "type",
        "size MiB",
        "bits/weight",
        "PPL ± error",
        "mean KLD, weights (NumPy)",
        *(["mean KLD, llama.cpp"] if runtime_kld else []),
        "same top p, weights (NumPy)",
        "top-1 vs transformers (same weights)",
        "greedy match",
        "load s (numpy)",
        "peak RSS MiB (numpy)",
    ]
    header += [f"{test} t/s ({engine})" for engine in engines for test in tests]
    header += [f"roofline ({engine})" for engine in engines]
    rows = []
    for _, r in section.types.iterrows():
        ppl = f"{fmt(r['ppl'], 3)} ± {fmt(r['ppl_error'], 3)}"
        row = [
            r["type"],
            fmt(r["size_mib"], 1),
            fmt(r["bits_per_weight"], 2),
            ppl,
            fmt(r["kld_mean"], 3, sig=True),
            *([fmt(_get(r, "llama.cpp kld_mean"), 3, sig=True)] if runtime_kld else []),
            fmt(r["same_top_p"], 2, percent=True),
            fmt(r["top1_agreement"], 2, percent=True),
            f"{int(r['greedy_match'])}/{int(r['greedy_tokens'])}",
            fmt(_get(r, "numpy load_s"), 2),
            fmt(_get(r, "numpy peak_rss_mib"), 0),
        ]
        for engine in engines:
            for test in tests:
                avg, sd = _get(r, f"{engine} {test}"), _get(r, f"{engine} {test} sd")
                row.append(DASH if avg is None else f"{fmt(avg, 1)} ± {fmt(sd, 1)}")
        row += [fmt(_get(r, f"{engine} roofline"), 0, percent=True) for engine in engines]
        rows.append(row)
    return header, rows


def transformers_rows(section: ModelSection) -> list[list[str]]:
    if section.bench.empty:
        return []
    rows = []
    for engine, e in section.bench[section.bench["engine"].str.startswith("transformers")].groupby(
        "engine", sort=False
    ):
        rows.append(
            [engine]
            + [
                f"{test}: {fmt(float(r['avg_ts'].iloc[0]), 1)} ± {fmt(float(r['stddev_ts'].iloc[0]), 1)} t/s"
                for test, r in e.groupby("test", sort=False)
            ]
        )
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(lines)


ARCHITECTURE_KEYS = [
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "rope_theta",
    "rms_norm_eps",
    "tie_word_embeddings",
    "torch_dtype",
]


def model_card(section: ModelSection) -> list[list[str]]:
    m = section.manifest
    rows = [["source", m.get("source", DASH)]]
    if m.get("source") == "hub":
        rows.append(["Hub revision", f"{m.get('repo_id')}@{m.get('revision')}"])
    elif m.get("source") in ("synthetic", "trained"):
        rows.append(["recipe", f"preset {m.get('preset')}, seed {m.get('seed')}, {m.get('dtype')}"])
    if m.get("source") == "trained":
        t = m.get("training", {})
        rows += [
            [
                "training",
                f"{m.get('steps_done')} steps of {t.get('batch_size')} x {t.get('seq_len')} tokens, "
                f"lr {t.get('learning_rate')}, {fmt(m.get('seconds'), 0)} s",
            ],
            [
                "held-out loss",
                f"{fmt(m.get('initial_held_out_loss'), 3)} → {fmt(m.get('final_held_out_loss'), 3)} nats/token "
                f"on {', '.join(m.get('held_out_works', []))}",
            ],
        ]
    rows.append(["parameters", f"{section.n_parameters:,}"])
    rows += [[k, str(section.hf_config[k])] for k in ARCHITECTURE_KEYS if k in section.hf_config]
    rows += [[f"tokenizer: {k}", DASH if v is None else str(v)] for k, v in section.tokenizer.items()]
    return rows


def sweep_table(section: ModelSection) -> tuple[list[str], list[list[str]]]:
    header = [
        "type",
        "cell",
        "tokens",
        "inside <think>",
        "distinct-2",
        "repeated 4-grams",
        "entropy",
        "p(chosen)",
        "kept after top-p",
    ]
    rows = []
    for t, frame in section.sweeps.items():
        presets = frame[frame["grid"] == "presets-x-thinking"]
        for cell, r in presets.groupby("cell", sort=False):
            rows.append(
                [
                    t,
                    cell.split(": ", 1)[-1],
                    fmt(r["n_tokens"].mean(), 1),
                    fmt(r["think_tokens"].mean(), 1),
                    fmt(r["distinct_2"].mean(), 3),
                    fmt(r["repeated_4gram_rate"].mean(), 3),
                    fmt(r["mean_entropy"].mean(), 2),
                    fmt(r["mean_chosen_prob"].mean(), 3),
                    fmt(r["mean_after_top_p"].mean(), 1),
                ]
            )
    return header, rows
