"""What the report reads: every stage output per model, checked present, loaded into one section per model.

Every number shown is read from a file under results/ that a stage wrote (the environment
section aside, which describes the machine the report was made on); a stage output that is
missing stops the report with a one-line error naming it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from qwen3repro.config import file_variants, model_settings
from qwen3repro.convert.tensor_plan import split_variant
from qwen3repro.errors import UserError
from qwen3repro.sweep.traces import check_traces

if TYPE_CHECKING:
    import pandas as pd


def inputs(config: dict, root: Path | str = ".") -> dict[str, dict[str, Path]]:
    """Per model, every stage output the report reads, by a short name: those of the stages the
    model goes through (its `stages`)."""
    root = Path(root)
    out = {}
    for model, spec in config["models"].items():
        settings = model_settings(config, model)
        files = {
            "manifest": root / f"results/models/{model}/manifest.json",
            "config": root / f"results/models/{model}/config.json",
            "gguf_f32": root / f"results/gguf/{model}/{model}-F32.gguf",
            "verify": root / f"results/verify/{model}.json",
        }
        if settings["samples"] is not None:
            files["samples"] = root / f"results/samples/{model}.json"
        if settings["bench"] is not None:
            files["bench"] = root / f"results/bench/{model}.json"
        if spec["source"] == "trained":
            files["training_curve"] = root / f"results/models/{model}/training_curve.csv"
            files["trajectory"] = root / f"results/models/{model}/trajectory.json"
        for t in file_variants(config, model):
            files[f"gguf_manifest/{t}"] = root / f"results/gguf/{model}/{model}-{t}.json"
            for stage in ("check", "perplexity", "tasks"):
                if settings[stage] is not None:
                    files[f"{stage}/{t}"] = root / f"results/{stage}/{model}/{t}.json"
        for t in settings["sweep"]["types"] if settings["sweep"] is not None else []:
            files[f"sweep/{t}"] = root / f"results/sweep/{model}/{t}.parquet"
            files[f"traces/{t}"] = root / f"results/sweep/{model}/{t}-traces.json"
        out[model] = files
    return out


# the stage (rule) that writes each kind of input, for the error when one is missing
STAGE_OF = {
    "manifest": "model",
    "config": "model",
    "training_curve": "model",
    "trajectory": "model",
    "gguf_f32": "convert",
    "gguf_manifest": "convert",
    "samples": "samples",
    "verify": "verify",
    "bench": "bench",
    "check": "check",
    "perplexity": "perplexity",
    "sweep": "sweep",
    "traces": "sweep",
    "tasks": "tasks",
}


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
    verify: dict = field(default_factory=dict)
    curve: pd.DataFrame | None = None
    trajectory: dict = field(default_factory=dict)  # what the model says at checkpoints of its training
    tasks: pd.DataFrame | None = None  # a row per file type, runtime and task set
    generated: pd.DataFrame | None = None  # a row per file type, runtime and span of the generations


def tokenizer_facts(gguf: Path) -> dict:
    from qwen3repro.gguf_file import GGUFFile

    with GGUFFile(gguf) as f:
        fields = f.fields
        tokens = fields.get("tokenizer.ggml.tokens", [])
        types = fields.get("tokenizer.ggml.token_type", [])
        template = fields.get("tokenizer.chat_template") or ""
        return {
            "model": fields.get("tokenizer.ggml.model"),
            "pre-tokenizer": fields.get("tokenizer.ggml.pre"),
            "tokens": len(tokens),
            "merges": len(fields.get("tokenizer.ggml.merges", [])),
            "control tokens": sum(1 for t in types if int(t) == 3),
            "eos": f"{fields.get('tokenizer.ggml.eos_token_id')} {tokens[int(fields['tokenizer.ggml.eos_token_id'])]!r}"
            if "tokenizer.ggml.eos_token_id" in fields
            else None,
            "context length": fields.get("qwen3.context_length"),
            "chat template sha256": hashlib.sha256(template.encode()).hexdigest()[:16] if template else None,
        }


def layer_bits(row: dict) -> float:
    """Bits per weight of the layers' matrices alone (blk.*): the figure comparable across model sizes,
    where the embedding's share of the weights (and the output rule's type for it) differs."""
    names = [n for n in row["tensor_bytes"] if n.startswith("blk.")]
    return 8 * sum(row["tensor_bytes"][n] for n in names) / max(1, sum(row["tensor_sizes"][n] for n in names))


def weight_error(row: dict) -> float:
    """Relative RMS error of all the weights: quantize-stats' per-tensor figure pooled, each tensor
    weighted by its size."""
    sizes, errors = row["tensor_sizes"], row["tensor_errors"]
    return math.sqrt(sum(sizes[n] * errors[n] ** 2 for n in sizes) / sum(sizes.values()))


def type_rows(files: dict[str, Path], types: list[str], bench: pd.DataFrame | None) -> pd.DataFrame:
    """One row per file type: its manifest, and what the check, perplexity and bench stages
    measured of it where the model goes through them (a stage it skips leaves its columns out)."""
    import pandas as pd

    rows = []
    for t in types:
        g = _read(files, f"gguf_manifest/{t}")
        row = {
            "type": t,
            "imatrix": split_variant(t)[1],
            "tensor_types": {x["name"]: x["type"] for x in g["tensors"]},
            "tensor_errors": {x["name"]: x["relative_rms_error"] for x in g["tensors"]},
            "tensor_sizes": {x["name"]: math.prod(x["shape"]) for x in g["tensors"]},
            "tensor_bytes": {x["name"]: x["bytes"] for x in g["tensors"]},
            "type_shares": g.get("type_shares", {}),
            "requested": {x["name"]: x["requested_type"] for x in g["tensors"] if "requested_type" in x},
            "size_mib": g["size"] / 2**20,
            "bits_per_weight": g["bits_per_weight"],
        }
        row |= {"layer_bits_per_weight": layer_bits(row), "weight_error": weight_error(row)}
        if f"perplexity/{t}" in files:
            p = _read(files, f"perplexity/{t}")
            row |= {
                "ppl": p["perplexity"]["ppl"],
                "ppl_error": p["perplexity"]["ppl_error"],
                # paired with the F32 file on the same tokens, as llama-perplexity --kl-divergence gives it
                "ln_ppl_ratio": p["kld"]["ln_ppl_ratio"],
                "ln_ppl_ratio_error": p["kld"]["ln_ppl_ratio_error"],
                "kld_mean": p["kld"]["kld_mean"],
                "kld_mean_error": p["kld"]["kld_mean_error"],
                "same_top_p": p["kld"]["same_top_p"],
                "llama.cpp kld_mean": p["llama_cpp"]["kld"]["kld_mean"] if "llama_cpp" in p else None,
                "llama.cpp same_top_p": p["llama_cpp"]["kld"]["same_top_p"] if "llama_cpp" in p else None,
            }
        if f"check/{t}" in files:
            c = _read(files, f"check/{t}")["metrics"]
            row |= {
                "top1_agreement": c["top1_agreement"],
                "max_abs_dlogit": c["max_abs_dlogit"],
                "greedy_match": c["greedy_match"],
                "greedy_tokens": c["greedy_tokens"],
            }
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
        bench = pd.DataFrame(_read(files, "bench")) if "bench" in files else pd.DataFrame()
        sweep = model_settings(config, model)["sweep"]
        section = ModelSection(
            name=model,
            manifest=_read(files, "manifest"),
            hf_config=_read(files, "config"),
            n_parameters=_read(files, "gguf_manifest/F32")["n_parameters"],
            tokenizer=tokenizer_facts(files["gguf_f32"]),
            types=type_rows(files, file_variants(config, model), bench),
            bench=bench,
            samples=_read(files, "samples") if "samples" in files else {},
            verify=_read(files, "verify"),
            curve=_read(files, "training_curve") if "training_curve" in files else None,
            trajectory=_read(files, "trajectory") if "trajectory" in files else {},
        )
        if model_settings(config, model)["tasks"] is not None:
            from qwen3repro.accuracy.task_run import task_rows

            rows, generated = task_rows([_read(files, f"tasks/{t}") for t in file_variants(config, model)])
            section.tasks, section.generated = pd.DataFrame(rows), pd.DataFrame(generated)
        for t in sweep["types"] if sweep is not None else []:
            section.sweeps[t] = _read(files, f"sweep/{t}")
            try:
                section.traces[t] = check_traces(_read(files, f"traces/{t}"), files[f"traces/{t}"])
            except UserError as e:
                raise UserError(f"report: {e}") from None
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
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent
            ).stdout.strip()
            or "not a git checkout"
        )
    except (OSError, subprocess.SubprocessError):
        commit = "not a git checkout"
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return {
        "CPU": cpu,
        "cores": os.cpu_count(),
        "Python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
        "git commit": commit,
        "config sha256": config_hash,
    }
