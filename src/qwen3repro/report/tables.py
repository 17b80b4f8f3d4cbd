"""The report's tables as rows of strings, shared by the HTML page and the Markdown summary.

A value a stage did not measure (e.g. llama.cpp rows when llama-cpp-python is not installed) is
shown as "—", never filled in.
"""

from __future__ import annotations

import math

from qwen3repro.convert.tensor_plan import split_variant
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
    return has(section, "llama.cpp kld_mean")


def has(section: ModelSection, column: str) -> bool:
    """Whether a stage measured this column for the model (a stage it skips has none)."""
    return column in section.types and bool(section.types[column].notna().any())


# a speed whose spread between repetitions is this share of its mean or more is noise, not a speed
NOISY = 0.10


def speed_cell(avg, sd) -> str:
    if avg is None:
        return DASH
    text = f"{fmt(avg, 1)} ± {fmt(sd, 1)}"
    return text + " (noisy)" if sd is not None and sd >= NOISY * avg else text


def roofline_cell(share) -> str:
    """A share of the roofline; above 100% it is a measurement problem, marked so."""
    cell = fmt(share, 0, percent=True)
    return f"{cell} (above the ceiling: measure again)" if share is not None and share == share and share > 1 else cell


def main_table(section: ModelSection) -> tuple[list[str], list[list[str]]]:
    """The per-file-type table, as header and rows of strings (shared by the HTML and Markdown): the
    columns of the stages the model went through."""
    tests = list(dict.fromkeys(section.bench["test"])) if not section.bench.empty else []
    engines = [e for e in ("numpy", "llama.cpp") if not section.bench.empty and e in set(section.bench["engine"])]
    ppl, check, runtime_kld = has(section, "ppl"), has(section, "top1_agreement"), has_runtime_kld(section)
    header = ["type", "size MiB", "bits/weight", "layers' bits/weight", "weights' relative RMS error"]
    if ppl:
        header += ["PPL ± error", "PPL(Q)/PPL(F32) − 1, paired", "mean KLD, weights (NumPy)"]
        header += ["mean KLD, llama.cpp"] * runtime_kld + ["same top p, weights (NumPy)"]
    if check:
        header += ["top-1 vs transformers (same weights)", "greedy match"]
    if engines:
        header += [f"{what} ({engine})" for engine in engines for what in ("load s", "peak RSS MiB")]
    header += [f"{test} t/s ({engine})" for engine in engines for test in tests]
    header += [f"roofline ({engine})" for engine in engines]
    rows = []
    for _, r in section.types.iterrows():
        row = [r["type"], fmt(r["size_mib"], 1), fmt(r["bits_per_weight"], 2), fmt(r["layer_bits_per_weight"], 2)]
        row.append(fmt(r["weight_error"], 3, sig=True))
        if ppl:
            ratio, error = math.expm1(r["ln_ppl_ratio"]), r["ln_ppl_ratio_error"]
            row += [
                f"{fmt(r['ppl'], 3)} ± {fmt(r['ppl_error'], 3)}",
                f"{100 * ratio:+.3f}% ± {100 * error:.3f}%",
                fmt(r["kld_mean"], 3, sig=True),
                *([fmt(_get(r, "llama.cpp kld_mean"), 3, sig=True)] if runtime_kld else []),
                fmt(r["same_top_p"], 2, percent=True),
            ]
        if check:
            row += [fmt(r["top1_agreement"], 2, percent=True), f"{int(r['greedy_match'])}/{int(r['greedy_tokens'])}"]
        for engine in engines:
            row += [fmt(_get(r, f"{engine} load_s"), 2), fmt(_get(r, f"{engine} peak_rss_mib"), 0)]
        for engine in engines:
            for test in tests:
                row.append(speed_cell(_get(r, f"{engine} {test}"), _get(r, f"{engine} {test} sd")))
        row += [roofline_cell(_get(r, f"{engine} roofline")) for engine in engines]
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
                f"{test}: {speed_cell(float(r['avg_ts'].iloc[0]), float(r['stddev_ts'].iloc[0]))} t/s"
                for test, r in e.groupby("test", sort=False)
            ]
            + [
                f"load {fmt(float(e['load_s'].mean()), 2)} s",
                f"peak RSS {fmt(e['peak_rss_bytes'].max() / 2**20, 0)} MiB",
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
                f"{t.get('steps')} steps of {t.get('batch_size')} x {t.get('seq_len')} tokens, "
                f"lr {t.get('learning_rate')}, {fmt(m.get('pretraining_seconds', m.get('seconds')), 0)} s",
            ],
        ]
        chat = t.get("chat")
        if chat:
            rows.append(
                [
                    "chat tuning",
                    f"{chat['steps']} steps of {chat['batch_size']} of "
                    f"{m.get('chat_conversations', 0):,} conversations "
                    f"and {chat['text_windows']} text windows, lr {chat['learning_rate']}, "
                    f"{fmt(m.get('seconds', 0) - m.get('pretraining_seconds', 0), 0)} s",
                ]
            )
        losses = [m.get("initial_held_out_loss"), m.get("pretrained_held_out_loss"), m.get("final_held_out_loss")]
        rows.append(
            [
                "held-out loss",
                " → ".join(fmt(v, 3) for v in losses if v is not None)
                + f" nats/token on {', '.join(m.get('held_out_works', []))}",
            ]
        )
    rows.append(["parameters", f"{section.n_parameters:,}"])
    rows += embedding_rows(section)
    rows += [[k, str(section.hf_config[k])] for k in ARCHITECTURE_KEYS if k in section.hf_config]
    rows += [[f"tokenizer: {k}", DASH if v is None else str(v)] for k, v in section.tokenizer.items()]
    return rows


UNQUANTIZED = ("F32", "F16", "BF16")
# an embedding above this share of the weights (Qwen3-0.6B's is 26%) decides a file's bits per weight
EMBEDDING_HEAVY = 0.5


def embedding_rows(section: ModelSection) -> list[list[str]]:
    """The token embedding's share of the weights, the type the quantized files store it at, and
    what that does to their bits per weight (the whole file against the layers' matrices alone)."""
    f32 = section.types[section.types["type"] == "F32"]
    if f32.empty or "token_embd.weight" not in f32.iloc[0]["tensor_sizes"]:
        return []
    share = f32.iloc[0]["tensor_sizes"]["token_embd.weight"] / section.n_parameters
    tied = "tied to the output" if section.hf_config.get("tie_word_embeddings") else "the output matrix apart"
    rows = [["token embedding", f"{fmt(share, 1, percent=True)} of the weights ({tied})"]]
    quantized = [r for _, r in section.types.iterrows() if r["type"] not in UNQUANTIZED]
    if quantized:
        stored = sorted({r["tensor_types"]["token_embd.weight"] for r in quantized})
        whole = [r["bits_per_weight"] for r in quantized]
        layers = [r["layer_bits_per_weight"] for r in quantized]
        rows.append(
            [
                "bits per weight, quantized files",
                f"the embedding stored as {', '.join(stored)}: {min(whole):.2f}–{max(whole):.2f} for the whole "
                f"file, {min(layers):.2f}–{max(layers):.2f} for the layers' matrices alone",
            ]
        )
        if share > EMBEDDING_HEAVY:
            rows.append(
                [
                    "comparing with a larger model",
                    "the embedding is most of a small model's weights (about a quarter of Qwen3-0.6B's), so a whole "
                    "file's bits per weight lean to the embedding's type: the layers' bits/weight are the figure "
                    "to hold beside the same type at true scale",
                ]
            )
    return rows


def weight_error_table(section: ModelSection) -> tuple[list[str], list[list[str]]]:
    """Relative RMS error per kind of matrix (mean over layers) and file type, as quantize-stats
    reports it per tensor: which tensors a mix spends its bits on."""
    types = [r for _, r in section.types.iterrows() if r["type"] != "F32"]
    header = ["matrix"] + [r["type"] for r in types]
    rows = []
    for kind in ("token_embd",) + TENSOR_KINDS:

        def mean(errors: dict[str, float]) -> float:
            values = [
                e for n, e in errors.items() if (n.split(".")[2] if n.startswith("blk.") else n.split(".")[0]) == kind
            ]
            return sum(values) / len(values) if values else float("nan")

        rows.append([kind] + [fmt(mean(r["tensor_errors"]), 3, sig=True) for r in types])
    return header, rows


def sweep_table(section: ModelSection) -> tuple[list[str], list[list[str]]]:
    header = [
        "type",
        "cell",
        "tokens",
        "inside <think>",
        "closes </think>",
        "ends its turn",
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
                    f"{r['think_closed'].mean():.0%}" if "think_closed" in r else DASH,
                    f"{r['stop_reason'].eq('eos').mean():.0%}",
                    fmt(r["distinct_2"].mean(), 3),
                    fmt(r["repeated_4gram_rate"].mean(), 3),
                    fmt(r["mean_entropy"].mean(), 2),
                    fmt(r["mean_chosen_prob"].mean(), 3),
                    fmt(r["mean_after_top_p"].mean(), 1),
                ]
            )
    return header, rows


# ------------------------------------------------------------------ importance matrix and tensor mixes
TENSOR_KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def _block_error(errors: dict[str, float]) -> float:
    """Mean relative RMS error of the block matrices (those an importance matrix weighs)."""
    values = [e for n, e in errors.items() if n.startswith("blk.") and n.split(".")[2] in TENSOR_KINDS]
    return sum(values) / len(values) if values else float("nan")


def _pairs(section: ModelSection) -> list[tuple[object, object]]:
    """(row without, row with) an importance matrix, for every type that has a twin."""
    rows = {r["type"]: r for _, r in section.types.iterrows()}
    twins = [(split_variant(t)[0], t) for t in rows if split_variant(t)[1]]
    return [(rows[plain], rows[twin]) for plain, twin in twins if plain in rows]


def _arrow(without, with_, digits: int = 3, **kw) -> str:
    return f"{fmt(without, digits, **kw)} → {fmt(with_, digits, **kw)}"


def imatrix_table(section: ModelSection) -> tuple[list[str], list[list[str]]]:
    """Each type without and with the importance matrix: size, PPL, the paired PPL ratio, KLD, same
    top p and the block weights' error. An importance matrix lowers the error where the calibration
    text's activations are large, so the unweighted weight error may rise while the KLD falls."""
    runtime_kld = has_runtime_kld(section)
    header = [
        "type",
        "bits/weight",
        "PPL without → with",
        "PPL(with) / PPL(without)",
        "mean KLD, weights (NumPy)",
        *(["mean KLD, llama.cpp"] if runtime_kld else []),
        "same top p",
        "block weights' relative RMS error",
    ]
    rows = []
    for plain, twin in _pairs(section):
        rows.append(
            [
                plain["type"],
                _arrow(plain["bits_per_weight"], twin["bits_per_weight"], 2),
                _arrow(plain["ppl"], twin["ppl"], 3),
                fmt(twin["ppl"] / plain["ppl"], 4),
                _arrow(plain["kld_mean"], twin["kld_mean"], 3, sig=True),
                *(
                    [_arrow(_get(plain, "llama.cpp kld_mean"), _get(twin, "llama.cpp kld_mean"), 3, sig=True)]
                    if runtime_kld
                    else []
                ),
                _arrow(plain["same_top_p"], twin["same_top_p"], 2, percent=True),
                _arrow(_block_error(plain["tensor_errors"]), _block_error(twin["tensor_errors"]), 4),
            ]
        )
    return header, rows


def tensor_error_table(section: ModelSection) -> tuple[list[str], list[list[str]]]:
    """Per kind of block matrix, its relative RMS error (mean over layers) without → with the
    importance matrix, for every type that has a twin."""
    pairs = _pairs(section)
    header = ["matrix"] + [plain["type"] for plain, _ in pairs]
    rows = []
    for kind in TENSOR_KINDS:

        def mean(errors: dict[str, float]) -> float:
            values = [e for n, e in errors.items() if n.startswith("blk.") and n.split(".")[2] == kind]
            return sum(values) / len(values) if values else float("nan")

        rows.append([kind] + [_arrow(mean(p["tensor_errors"]), mean(t["tensor_errors"]), 4) for p, t in pairs])
    return header, (rows if pairs else [])


def mix_table(section: ModelSection) -> tuple[list[str], list[list[str]]]:
    """Per file, the share of the weights stored at each tensor type, the tensors whose rows could
    not take the type the mix asked for, and the other files whose tensors all have the same types."""
    rows = list(section.types.iterrows())
    header = ["type", "weights by tensor type", "stored at another type than asked", "same tensor types as"]
    out = []
    for _, r in rows:
        shares = sorted(r["type_shares"].items(), key=lambda kv: -kv[1])
        moved = ", ".join(f"{n} {want}→{r['tensor_types'][n]}" for n, want in r["requested"].items())
        same = [
            o["type"]
            for _, o in rows
            if o["type"] != r["type"] and o["imatrix"] == r["imatrix"] and o["tensor_types"] == r["tensor_types"]
        ]
        out.append(
            [
                r["type"],
                ", ".join(f"{t} {fmt(v, 1, percent=True)}" for t, v in shares),
                moved or DASH,
                ("⚠ " + ", ".join(same)) if same else DASH,
            ]
        )
    return header, out
