"""The comparison report: one self-contained HTML page and a Markdown summary from the stage outputs.

Every number shown is read from a file under results/ that a stage wrote (the environment
section aside, which describes the machine the report was made on); a stage output that is
missing stops the report with a one-line error naming it, and a value a stage did not measure
(e.g. llama.cpp rows when llama-cpp-python is not installed) is shown as "—", never filled in.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from . import figures
from .errors import UserError
from .fsutil import staged_dir, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd

DASH = "—"


# ------------------------------------------------------------------ what the report reads
def inputs(config: dict, root: Path | str = ".") -> dict[str, dict[str, Path]]:
    """Per model, every stage output the report reads, by a short name."""
    root = Path(root)
    out = {}
    for model, spec in config["models"].items():
        files = {
            "manifest": root / f"results/models/{model}/manifest.json",
            "config": root / f"results/models/{model}/config.json",
            "gguf_f32": root / f"results/gguf/{model}/{model}-F32.gguf",
            "samples": root / f"results/samples/{model}.json",
            "bench": root / f"results/bench/{model}.json",
        }
        if spec["source"] == "trained":
            files["training_curve"] = root / f"results/models/{model}/training_curve.csv"
        for t in config["convert"]["types"]:
            files[f"gguf_manifest/{t}"] = root / f"results/gguf/{model}/{model}-{t}.json"
            files[f"check/{t}"] = root / f"results/check/{model}/{t}.json"
            files[f"perplexity/{t}"] = root / f"results/perplexity/{model}/{t}.json"
        for t in config["sweep"]["types"]:
            files[f"sweep/{t}"] = root / f"results/sweep/{model}/{t}.parquet"
            files[f"traces/{t}"] = root / f"results/sweep/{model}/{t}-traces.json"
        out[model] = files
    return out


# the stage (rule) that writes each kind of input, for the error when one is missing
STAGE_OF = {"manifest": "model", "config": "model", "training_curve": "model", "gguf_f32": "convert",
            "gguf_manifest": "convert", "samples": "samples", "bench": "bench", "check": "check",
            "perplexity": "perplexity", "sweep": "sweep", "traces": "sweep"}


def _stage(name: str) -> str:
    return STAGE_OF[name.split("/")[0]]


def _require(files: dict[str, Path], names) -> None:
    """A one-line error naming the first of these inputs that is missing."""
    for name in names:
        if not files[name].is_file():
            raise UserError(f"report: missing stage output {files[name]} (from the {_stage(name)} stage)")


def _read(files: dict[str, Path], name: str):
    path = files[name]
    _require(files, [name])
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text("utf-8"))
        if path.suffix == ".csv":
            import pandas as pd

            return pd.read_csv(path)
        if path.suffix == ".parquet":
            import pandas as pd

            return pd.read_parquet(path)
    except (ValueError, OSError) as e:
        raise UserError(f"report: {path}: cannot be read ({str(e).splitlines()[0]})") from None
    return path


# ------------------------------------------------------------------ the numbers
@dataclass
class ModelSection:
    name: str
    manifest: dict
    hf_config: dict  # the model's config.json
    n_parameters: int
    tokenizer: dict
    types: pd.DataFrame  # one row per file type
    bench: pd.DataFrame
    sweeps: dict = field(default_factory=dict)  # type -> DataFrame
    traces: dict = field(default_factory=dict)  # type -> list of traces
    samples: dict = field(default_factory=dict)
    curve: pd.DataFrame | None = None


def tokenizer_facts(gguf: Path) -> dict:
    from .gguf_file import GGUFFile

    with GGUFFile(gguf) as f:
        fields = f.fields
        tokens = fields.get("tokenizer.ggml.tokens", [])
        types = fields.get("tokenizer.ggml.token_type", [])
        template = fields.get("tokenizer.chat_template") or ""
        return {
            "model": fields.get("tokenizer.ggml.model"), "pre-tokenizer": fields.get("tokenizer.ggml.pre"),
            "tokens": len(tokens), "merges": len(fields.get("tokenizer.ggml.merges", [])),
            "control tokens": sum(1 for t in types if int(t) == 3),
            "eos": f"{fields.get('tokenizer.ggml.eos_token_id')} {tokens[int(fields['tokenizer.ggml.eos_token_id'])]!r}"
            if "tokenizer.ggml.eos_token_id" in fields else None,
            "context length": fields.get("qwen3.context_length"),
            "chat template sha256": hashlib.sha256(template.encode()).hexdigest()[:16] if template else None,
        }


def type_rows(files: dict[str, Path], types: list[str], bench: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for t in types:
        g = _read(files, f"gguf_manifest/{t}")
        c = _read(files, f"check/{t}")["metrics"]
        p = _read(files, f"perplexity/{t}")
        row = {"type": t, "size_mib": g["size"] / 2**20, "bits_per_weight": g["bits_per_weight"],
               "ppl": p["perplexity"]["ppl"], "ppl_error": p["perplexity"]["ppl_error"],
               "kld_mean": p["kld"]["kld_mean"], "same_top_p": p["kld"]["same_top_p"],
               "top1_agreement": c["top1_agreement"], "max_abs_dlogit": c["max_abs_dlogit"],
               "greedy_match": c["greedy_match"], "greedy_tokens": c["greedy_tokens"]}
        measured = bench[bench["model_type"] == t] if bench is not None and not bench.empty else None
        for engine in ("numpy", "llama.cpp"):
            e = measured[measured["engine"] == engine] if measured is not None else None
            if e is None or e.empty:
                continue
            row[f"{engine} load_s"] = float(e["load_s"].mean())
            row[f"{engine} peak_rss_mib"] = float(e["peak_rss_bytes"].max()) / 2**20
            for test, r in e.groupby("test", sort=False):
                row[f"{engine} {test}"] = float(r["avg_ts"].iloc[0])
                row[f"{engine} {test} sd"] = float(r["stddev_ts"].iloc[0])
                if test.startswith("tg") and r["ceiling_share"].notna().any():
                    row[f"{engine} roofline"] = float(r["ceiling_share"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def collect(config: dict, root: Path | str = ".") -> list[ModelSection]:
    import pandas as pd

    sections = []
    for model, files in inputs(config, root).items():
        _require(files, files)  # every input first: a missing one is named before any work is done
        bench = pd.DataFrame(_read(files, "bench"))
        section = ModelSection(
            name=model, manifest=_read(files, "manifest"), hf_config=_read(files, "config"),
            n_parameters=_read(files, "gguf_manifest/F32")["n_parameters"], tokenizer=tokenizer_facts(files["gguf_f32"]),
            types=type_rows(files, config["convert"]["types"], bench), bench=bench, samples=_read(files, "samples"),
            curve=_read(files, "training_curve") if "training_curve" in files else None)
        for t in config["sweep"]["types"]:
            section.sweeps[t] = _read(files, f"sweep/{t}")
            section.traces[t] = _read(files, f"traces/{t}")["traces"]
        sections.append(section)
    return sections


def environment(config: dict) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("numpy", "torch", "transformers", "gguf", "snakemake", "pandas", "llama_cpp_python", "qwen3repro"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).parent).stdout.strip() or "not a git checkout"
    except (OSError, subprocess.SubprocessError):
        commit = "not a git checkout"
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return {"CPU": cpu, "cores": os.cpu_count(), "Python": platform.python_version(), "platform": platform.platform(),
            **versions, "git commit": commit, "config sha256": config_hash}


# ------------------------------------------------------------------ formatting
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


def main_table(section: ModelSection) -> tuple[list[str], list[list[str]]]:
    """The per-file-type table, as header and rows of strings (shared by the HTML and Markdown)."""
    tests = list(dict.fromkeys(section.bench["test"])) if not section.bench.empty else []
    engines = [e for e in ("numpy", "llama.cpp") if not section.bench.empty and e in set(section.bench["engine"])]
    header = ["type", "size MiB", "bits/weight", "PPL ± error", "mean KLD", "same top p", "top-1 vs transformers",
              "greedy match", "load s (numpy)", "peak RSS MiB (numpy)"]
    header += [f"{test} t/s ({engine})" for engine in engines for test in tests]
    header += [f"roofline ({engine})" for engine in engines]
    rows = []
    for _, r in section.types.iterrows():
        ppl = f"{fmt(r['ppl'], 3)} ± {fmt(r['ppl_error'], 3)}"
        row = [r["type"], fmt(r["size_mib"], 1), fmt(r["bits_per_weight"], 2), ppl, fmt(r["kld_mean"], 3, sig=True),
               fmt(r["same_top_p"], 2, percent=True), fmt(r["top1_agreement"], 2, percent=True),
               f"{int(r['greedy_match'])}/{int(r['greedy_tokens'])}",
               fmt(_get(r, "numpy load_s"), 2), fmt(_get(r, "numpy peak_rss_mib"), 0)]
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
    for engine, e in section.bench[section.bench["engine"].str.startswith("transformers")].groupby("engine", sort=False):
        rows.append([engine] + [f"{test}: {fmt(float(r['avg_ts'].iloc[0]), 1)} ± {fmt(float(r['stddev_ts'].iloc[0]), 1)} t/s"
                                for test, r in e.groupby("test", sort=False)])
    return rows


def _html_table(header: list[str] | None, rows: list[list[str]], css: str = "") -> str:
    head = "" if header is None else "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<div class='scroll'><table class='{css}'>{head}<tbody>{body}</tbody></table></div>"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(lines)


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return f"<p class='note'>{html.escape(alt)}: no data for this plot in the stage outputs.</p>"
    data = base64.b64encode(png).decode()
    return f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'><figcaption>{html.escape(alt)}</figcaption></figure>"


ARCHITECTURE_KEYS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                     "intermediate_size", "vocab_size", "max_position_embeddings", "rope_theta", "rms_norm_eps",
                     "tie_word_embeddings", "torch_dtype"]


def model_card(section: ModelSection) -> list[list[str]]:
    m = section.manifest
    rows = [["source", m.get("source", DASH)]]
    if m.get("source") == "hub":
        rows.append(["Hub revision", f"{m.get('repo_id')}@{m.get('revision')}"])
    elif m.get("source") in ("synthetic", "trained"):
        rows.append(["recipe", f"preset {m.get('preset')}, seed {m.get('seed')}, {m.get('dtype')}"])
    if m.get("source") == "trained":
        t = m.get("training", {})
        rows += [["training", f"{m.get('steps_done')} steps of {t.get('batch_size')} x {t.get('seq_len')} tokens, "
                              f"lr {t.get('learning_rate')}, {fmt(m.get('seconds'), 0)} s"],
                 ["held-out loss", f"{fmt(m.get('initial_held_out_loss'), 3)} → {fmt(m.get('final_held_out_loss'), 3)} nats/token "
                                   f"on {', '.join(m.get('held_out_works', []))}"]]
    rows.append(["parameters", f"{section.n_parameters:,}"])
    rows += [[k, str(section.hf_config[k])] for k in ARCHITECTURE_KEYS if k in section.hf_config]
    rows += [[f"tokenizer: {k}", DASH if v is None else str(v)] for k, v in section.tokenizer.items()]
    return rows


def figure_set(section: ModelSection) -> dict[str, bytes | None]:
    """name -> PNG of every plot of one model (the same files back Snakemake's own report)."""
    sweep_type = next(iter(section.sweeps), None)
    sweep = section.sweeps.get(sweep_type)
    pick = lambda grid: None if sweep is None else sweep[sweep["grid"] == grid]  # noqa: E731
    multi = None if sweep is None else sweep[sweep["multi_turn"].eq(True)]
    traces = section.traces.get(sweep_type) or []
    out = {
        "quality-vs-bits": figures.quality_vs_bits(section.types),
        "speed": figures.speed(section.bench),
        "sampling-heatmaps": figures.sampling_heatmaps(pick("temperature-x-top-p")),
        "thinking": figures.thinking(pick("presets-x-thinking")),
        "multi-turn": figures.multi_turn(multi),
    }
    for i, trace in enumerate(traces):
        out[f"trace-{i + 1}"] = figures.token_trace(trace)
    if section.curve is not None:
        out["training-curve"] = figures.training_curve(section.curve)
    return {f"{section.name}-{k}": v for k, v in out.items()}


CAPTIONS = {
    "quality-vs-bits": "Perplexity and KL divergence from the F32 file against bits per weight",
    "speed": "Prefill (pp) and decode (tg) tokens per second per engine and file type, mean ± sd",
    "sampling-heatmaps": "Sampling: distinct-2 and entropy over temperature × top-p",
    "thinking": "Thinking on vs off, per Qwen3 preset",
    "multi-turn": "Multi-turn: context, cache reuse and time to first token per turn",
    "training-curve": "Training curve",
}


def caption(name: str, model: str) -> str:
    key = name.removeprefix(f"{model}-")
    return CAPTIONS.get(key, f"Token trace {key.removeprefix('trace-')}: the top tokens' probabilities before the filters "
                             "(narrow bars) and after them (wide pale bars), the chosen token in red")


def sweep_table(section: ModelSection) -> tuple[list[str], list[list[str]]]:
    header = ["type", "cell", "tokens", "inside <think>", "distinct-2", "repeated 4-grams", "entropy", "p(chosen)",
              "kept after top-p"]
    rows = []
    for t, frame in section.sweeps.items():
        presets = frame[frame["grid"] == "presets-x-thinking"]
        for cell, r in presets.groupby("cell", sort=False):
            rows.append([t, cell.split(": ", 1)[-1], fmt(r["n_tokens"].mean(), 1), fmt(r["think_tokens"].mean(), 1),
                         fmt(r["distinct_2"].mean(), 3), fmt(r["repeated_4gram_rate"].mean(), 3),
                         fmt(r["mean_entropy"].mean(), 2), fmt(r["mean_chosen_prob"].mean(), 3),
                         fmt(r["mean_after_top_p"].mean(), 1)])
    return header, rows


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; line-height: 1.4; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
.scroll { overflow-x: auto; } table.card td { text-align: left; white-space: normal; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
pre { background: #f7f7f7; padding: 0.5em; white-space: pre-wrap; overflow-wrap: anywhere; font-size: 0.85em; }
.note { color: #666; font-style: italic; }
"""


def render_html(sections: list[ModelSection], env: dict, figs: dict[str, bytes | None]) -> str:
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>qwen3repro report</title>",
             f"<style>{STYLE}</style></head><body><h1>qwen3repro: which quant, which runtime, which flags</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.name)}</h2><h3>Model card</h3>")
        parts.append(_html_table(None, model_card(s), "card"))
        header, rows = main_table(s)
        parts.append("<h3>Per file type</h3><p>PPL and KLD as llama-perplexity computes them (KLD and same top p "
                     "against the F32 file); top-1 and greedy match against transformers' Qwen3ForCausalLM in "
                     "float32; speeds as llama-bench measures them; roofline: decode speed as a share of memory "
                     "bandwidth / bytes per token.</p>")
        parts.append(_html_table(header, rows))
        hf = transformers_rows(s)
        if hf:
            parts.append("<p>transformers on the Hugging Face weights:</p>" + _html_table(None, hf, "card"))
        parts.append("<h3>Accuracy and speed</h3>")
        for key in ("quality-vs-bits", "speed"):
            parts.append(_img(figs[f"{s.name}-{key}"], caption(f"{s.name}-{key}", s.name)))
        parts.append("<h3>Sampling</h3>")
        header, rows = sweep_table(s)
        parts.append(_html_table(header, rows))
        for key in sorted(k for k in figs if k.startswith(f"{s.name}-") and
                          k.removeprefix(f"{s.name}-").startswith(("sampling", "thinking", "multi-turn", "trace"))):
            parts.append(_img(figs[key], caption(key, s.name)))
        if s.curve is not None:
            parts.append("<h3>Training</h3>" + _img(figs[f"{s.name}-training-curve"], caption("training-curve", s.name)))
        samples = s.samples.get("samples", {})
        if samples:
            parts.append("<h3>Samples</h3>")
            for source, items in samples.items():
                for item in items:
                    parts.append(f"<p><b>{html.escape(source)}, {html.escape(item['kind'])}</b></p>"
                                 f"<pre>{html.escape(item['prompt'])}<b>{html.escape(item['text'])}</b></pre>")
    parts.append("<h2>Environment</h2>" + _html_table(None, [[k, str(v)] for k, v in env.items()], "card"))
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(sections: list[ModelSection], env: dict) -> str:
    lines = ["# qwen3repro summary", ""]
    for s in sections:
        header, rows = main_table(s)
        lines += [f"## {s.name}", "", _md_table(header, rows), ""]
    lines += [f"Made at commit {env['git commit']} with config sha256 {env['config sha256'][:16]}; "
              f"{env['CPU']}, {env['cores']} cores.", ""]
    return "\n".join(lines)


def write_report(config: dict, out_html: Path | str, out_md: Path | str, figures_dir: Path | str | None = None,
                 root: Path | str = ".") -> list[str]:
    """Write the page, the Markdown summary and (for Snakemake's report) each figure as a PNG."""
    sections = collect(config, root)
    figs = {}
    for s in sections:
        figs.update(figure_set(s))
    env = environment(config)
    if figures_dir is not None:
        with staged_dir(Path(figures_dir), force=True) as tmp:
            for name, png in figs.items():
                if png is not None:
                    (tmp / f"{name}.png").write_bytes(png)
    write_text_atomic(Path(out_md), render_markdown(sections, env), force=True)
    write_text_atomic(Path(out_html), render_html(sections, env, figs), force=True)
    return [name for name, png in figs.items() if png is not None]
