"""Puts a model's Hugging Face directory in place from its configured source: hub, local, synthetic or trained."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from qwen3repro import __version__
from qwen3repro.errors import UserError
from qwen3repro.fsutil import sha256_file, staged_dir
from qwen3repro.model import hub, synthetic

SOURCES = ("hub", "local", "synthetic", "trained")
log = logging.getLogger(__name__)
# What a local model directory may contribute; pickled weights (*.bin, *.pt) are never read.
LOCAL_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "model.safetensors.index.json",
)


def check_model_dir(path: Path) -> None:
    """A directory the rest of the pipeline can use: a Qwen3ForCausalLM config, safetensors, a tokenizer."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UserError(f"{path}: no config.json, not a Hugging Face model directory")
    try:
        config = json.loads(config_path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{config_path}: not valid JSON ({e})") from e
    if config.get("model_type") != "qwen3" or "Qwen3ForCausalLM" not in config.get("architectures", []):
        raise UserError(
            f"{config_path}: model_type {config.get('model_type')!r} / architectures "
            f"{config.get('architectures')!r}; this pipeline needs a qwen3 Qwen3ForCausalLM"
        )
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        extra = f" (found {', '.join(pickles)}: pickled weights are not loaded)" if pickles else ""
        raise UserError(f"{path}: no *.safetensors weights{extra}")
    if not (path / "tokenizer.json").is_file():
        raise UserError(f"{path}: no tokenizer.json")


def copy_local(src: Path, out_dir: Path) -> dict:
    if not src.is_dir():
        raise UserError(f"{src}: local model directory does not exist")
    check_model_dir(src)
    for path in sorted(src.iterdir()):
        if path.is_file() and (path.name in LOCAL_PATTERNS or path.suffix == ".safetensors"):
            try:  # a hard link costs no space for multi-GB weights; fall back to a copy across devices
                os.link(path, out_dir / path.name)
            except OSError:
                shutil.copy2(path, out_dir / path.name)
    return {"path": str(src.resolve())}


def write_manifest(model_dir: Path, name: str, source: str, recipe: dict) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(model_dir.iterdir()) if p.is_file()
    }
    manifest = {"model": name, "source": source, **recipe, "files": files, "qwen3repro": __version__}
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")


def materialize(name: str, spec: dict, out: Path | str, force: bool = False, threads: int | None = None) -> Path:
    """Create the model directory `out` for the config entry models.<name> = spec; `threads`
    is training's thread count unless the spec's training sets one. Training runs with pinned
    arithmetic (qwen3repro.numerics), so its weights are the same bytes on every x86-64 CPU with AVX2."""
    out = Path(out)
    source = spec.get("source")
    if source not in SOURCES:
        raise UserError(f"models.{name}.source: unknown model source {source!r}; known: {', '.join(SOURCES)}")
    if source == "local":  # check before anything is created, so a typo leaves no trace
        src = Path(spec["path"])
        if not src.is_dir():
            raise UserError(f"models.{name}.path: {src}: local model directory does not exist")
    log.info("model %s: %s -> %s", name, source, out)
    with staged_dir(out, force) as tmp:
        if source == "synthetic":
            recipe = synthetic.build(tmp, spec["preset"], spec.get("architecture"), spec["seed"], spec["dtype"])
        elif source == "trained":
            from qwen3repro import numerics
            from qwen3repro.model import train

            training = train.check_settings(spec.get("training", {}))
            # pinned, the thread count changes no bit: it is the job's unless the config sets it
            training["threads"] = training["threads"] or threads or os.cpu_count() or 1
            recipe = numerics.run_pinned(
                "qwen3repro.model.train:train",
                training["threads"],
                out_dir=tmp,
                preset=spec["preset"],
                architecture_overrides=spec.get("architecture"),
                seed=spec["seed"],
                training=training,
                dtype=spec["dtype"],
            )
        elif source == "hub":
            recipe = hub.download(spec["repo_id"], spec["revision"], tmp, out.with_name(f".{out.name}.download"))
        else:
            recipe = copy_local(Path(spec["path"]), tmp)
        check_model_dir(tmp)
        write_manifest(tmp, name, source, recipe)
    return out
