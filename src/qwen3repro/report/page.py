"""Writes the report: the HTML page (a jinja2 template, figures embedded), the Markdown summary, the PNGs."""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2
import markupsafe

from qwen3repro.fsutil import staged_dir, write_text_atomic
from qwen3repro.report import figures, speed_figures, task_report
from qwen3repro.report.answers import answer_table
from qwen3repro.report.inputs import ModelSection, collect, environment
from qwen3repro.report.tables import (
    has,
    has_runtime_kld,
    imatrix_table,
    main_table,
    markdown_table,
    mix_table,
    model_card,
    sweep_table,
    tensor_error_table,
    transformers_rows,
    weight_error_table,
)
from qwen3repro.report.trajectory_table import trajectory_table
from qwen3repro.sweep.traces import TAIL_EDGES


def figure_set(section: ModelSection) -> dict[str, bytes | None]:
    """name -> PNG of every plot of one model (the same files back Snakemake's own report)."""
    sweep_type = next(iter(section.sweeps), None)
    sweep = section.sweeps.get(sweep_type)
    pick = lambda grid: None if sweep is None else sweep[sweep["grid"] == grid]  # noqa: E731
    multi = None if sweep is None else sweep[sweep["multi_turn"].eq(True)]
    traces = section.traces.get(sweep_type) or []
    out = {
        "quality-vs-bits": figures.quality_vs_bits(section.types),
        "size-vs-bits": figures.size_vs_bits(section.types),
        "speed": speed_figures.speed(section.bench),
        "roofline": speed_figures.roofline(section.bench),
        "sampling-heatmaps": figures.sampling_heatmaps(pick("temperature-x-top-p")),
        "thinking": figures.thinking(pick("presets-x-thinking")),
        "multi-turn": figures.multi_turn(multi),
        "flips-vs-bits": task_report.flips_vs_bits(section),
    }
    for i, trace in enumerate(traces):
        out[f"trace-{i + 1}"] = figures.token_trace(trace)
    if section.curve is not None:
        out["training-curve"] = figures.training_curve(section.curve)
    return {f"{section.name}-{k}": v for k, v in out.items()}


CAPTIONS = {
    "quality-vs-bits": "The quantization loss against the bits per weight of the layers' matrices: perplexity paired "
    "with the F32 file on the same tokens (as llama-perplexity's ln(PPL(Q)/PPL(base)), ± its paired error), and the "
    "mean KL divergence: the weights' loss (NumPy engine, float32) and, where measured, llama.cpp's (its kernels also "
    "quantize the activations)",
    "size-vs-bits": "File size and the weights' relative RMS error (every tensor's, pooled by its size) against bits "
    "per weight, both axes logarithmic",
    "speed": "Prefill (pp) and decode (tg) tokens per second per engine and file type, mean ± sd of the repetitions; "
    "a measurement whose sd is 10% of its mean or more is marked noisy instead of drawn",
    "roofline": "Decode speed against the bytes read per token, under the memory-bandwidth ceiling measured on the "
    "same machine (steady measurements only)",
    "sampling-heatmaps": "Sampling: distinct-2 and entropy over temperature × top-p",
    "thinking": "Thinking on vs off, per Qwen3 preset",
    "multi-turn": "Multi-turn: context, cache reuse and time to first token per turn",
    "training-curve": "Held-out loss along training",
    "flips-vs-bits": "Flips: the share of task items whose chosen answer differs from the F32 file's in the same "
    "runtime, against the bits per weight of the layers' matrices, with its Wilson 95% interval; a series per task set "
    "and runtime",
}


KLD_NOTE = (
    "Mean KLD against the F32 file, on the same chunks, twice: the NumPy engine computes in float32 on the "
    "dequantized weights (the loss in the weights alone); llama.cpp also rounds the activations to 8 bits in its "
    "quantized dot products (the loss a llama.cpp user gets, as its own tables quote it)."
)


def caption(name: str, model: str) -> str:
    key = name.removeprefix(f"{model}-")
    return CAPTIONS.get(
        key,
        f"Token trace {key.removeprefix('trace-')}: the top tokens' probabilities before the filters "
        "(narrow bars) and after them (wide pale bars), the chosen token in red",
    )


def _figure(figs: dict[str, bytes | None], name: str, model: str) -> dict:
    png = figs[name]
    src = None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()
    return {"src": src, "caption": caption(name, model)}


def explorer_data(s: ModelSection) -> dict | None:
    """What the sampling explorer reads: every recorded generation, by file type, on one list."""
    generations: dict[str, dict] = {}
    pieces: dict[str, str] = {}
    types: list[str] = []
    for file_type, traces in s.traces.items():
        for trace in traces:
            key = f"{trace['prompt']} · preset {trace['preset']} · thinking {'on' if trace['thinking'] else 'off'}"
            # a type traced along another's tokens: its distributions on that type's context
            label = f"{file_type} on {trace['along']}'s tokens" if trace.get("along") else file_type
            entry = generations.setdefault(key, {"key": key, "params": trace["params"], "by_type": {}})
            entry["by_type"][label] = {"tokens": trace["tokens"], "steps": trace["steps"]}
            pieces.update(trace["pieces"])
            types += [label] if label not in types else []
    if not generations:
        return None
    top = max(len(step["ids"]) for g in generations.values() for t in g["by_type"].values() for step in t["steps"][:1])
    return {
        "types": types,
        "top": top,
        "edges": TAIL_EDGES.tolist(),
        "traces": list(generations.values()),
        "pieces": pieces,
    }


def page_section(s: ModelSection, figs: dict[str, bytes | None]) -> dict:
    """What the template shows of one model, every value already text."""
    sampling = sorted(
        k
        for k in figs
        if k.startswith(f"{s.name}-")
        and k.removeprefix(f"{s.name}-").startswith(("sampling", "thinking", "multi-turn", "trace"))
        and figs[k] is not None
    )
    return {
        "name": s.name,
        "verdict": s.verify,
        "card": model_card(s),
        "main": main_table(s),
        "imatrix": imatrix_table(s),
        "tensor_errors": tensor_error_table(s),
        "mixes": mix_table(s),
        "runtime_kld": has_runtime_kld(s),
        "has_ppl": has(s, "ppl"),
        "has_check": has(s, "top1_agreement"),
        "has_bench": not s.bench.empty,
        "transformers": transformers_rows(s),
        "sweep": sweep_table(s),
        "explorer": explorer_data(s),
        "weight_errors": weight_error_table(s),
        "tasks": task_report.task_table(s),
        "task_chance": task_report.chance_lines(s),
        "generated": task_report.generated_table(s),
        "task_figure": _figure(figs, f"{s.name}-flips-vs-bits", s.name) if figs[f"{s.name}-flips-vs-bits"] else None,
        "accuracy_figures": [
            _figure(figs, f"{s.name}-{k}", s.name)
            for k in ("quality-vs-bits", "size-vs-bits", "speed", "roofline")
            if figs[f"{s.name}-{k}"] is not None
        ],
        "sampling_figures": [_figure(figs, k, s.name) for k in sampling],
        "training_figure": _figure(figs, f"{s.name}-training-curve", s.name) if s.curve is not None else None,
        "trajectory": trajectory_table(s),
        "trajectory_prompt": s.trajectory.get("prompt", []),
        "samples": [
            {"source": source, **item} for source, items in s.samples.get("samples", {}).items() for item in items
        ],
    }


def render_html(
    sections: list[ModelSection], env: dict, figs: dict[str, bytes | None], max_kld: float, max_flips: float = 0.05
) -> str:
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("qwen3repro.report"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    script = (Path(__file__).parent / "templates" / "explorer.js").read_text("utf-8")
    return templates.get_template("report.html.j2").render(
        sections=[page_section(s, figs) for s in sections],
        answers=answer_table(sections, max_kld, max_flips),
        environment=[[k, str(v)] for k, v in env.items()],
        explorer_js=markupsafe.Markup(script),  # the page's own script, inline: no file beside the page
    )


def render_markdown(sections: list[ModelSection], env: dict, max_kld: float, max_flips: float = 0.05) -> str:
    lines = ["# qwen3repro summary", ""]
    lines += [f"- **{s.verify['verdict']}**: {s.verify['summary']}" for s in sections] + [""]
    header, rows = answer_table(sections, max_kld, max_flips)
    lines += [markdown_table(header, rows), ""] if rows else []
    for s in sections:
        header, rows = main_table(s)
        lines += [f"## {s.name}", "", markdown_table(header, rows), ""]
        header, rows = imatrix_table(s)
        if rows:
            lines += ["With and without the importance matrix:", "", markdown_table(header, rows), ""]
        header, rows = task_report.task_table(s)
        if rows:
            lines += ["Tasks, scored as llama-perplexity scores them, and flips against F32:", ""]
            lines += [markdown_table(header, rows), "", *task_report.chance_lines(s), ""]
        header, rows = task_report.generated_table(s)
        if rows:
            lines += ["KL divergence from F32 along the F32 file's own generations:", ""]
            lines += [markdown_table(header, rows), ""]
    if any(has_runtime_kld(s) for s in sections):
        lines += [KLD_NOTE, ""]
    lines += [
        f"Made at commit {env['git commit']} with config sha256 {env['config sha256'][:16]}; "
        f"{env['CPU']}, {env['cores']} cores.",
        "",
    ]
    return "\n".join(lines)


def write_report(
    config: dict,
    out_html: Path | str,
    out_md: Path | str,
    figures_dir: Path | str | None = None,
    root: Path | str = ".",
) -> list[str]:
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
    max_kld, max_flips = config["report"]["max_kld"], config["report"]["max_flips"]
    write_text_atomic(Path(out_md), render_markdown(sections, env, max_kld, max_flips), force=True)
    write_text_atomic(Path(out_html), render_html(sections, env, figs, max_kld, max_flips), force=True)
    return [name for name, png in figs.items() if png is not None]
