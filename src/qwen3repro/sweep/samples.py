"""Continuations of fixed prompts, greedy and sampled, from a model and from its untrained twin.

For a model trained in the pipeline, the same prompts also run on a model of the same
architecture with seeded random weights, so the report can show what pretraining changed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from qwen3repro.convert.converter import convert
from qwen3repro.engine.batch import generate_all
from qwen3repro.engine.generate import Generator, Request
from qwen3repro.engine.sampler import PRESETS, SamplingParams
from qwen3repro.fsutil import write_text_atomic
from qwen3repro.model import synthetic

DEFAULTS = {
    "prompts": [
        "ROMEO.\nBut soft, what light through yonder window breaks?\n\nJULIET.\n",
        "KING.\nNow is the winter of our discontent\n",
    ],
    "max_new_tokens": 60,
    "sampling": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 0},
}


def continuations(gguf: Path, settings: dict) -> list[dict]:
    """Every prompt greedy and sampled, all generated together (engine/batch.py)."""
    sampled = SamplingParams(**settings["sampling"])
    kinds = (("greedy", PRESETS["greedy"]), ("sampled", sampled))
    generator = Generator.from_gguf(gguf, n_ctx=1024, lanes=len(settings["prompts"]) * len(kinds))
    runs = [(prompt, kind, params) for prompt in settings["prompts"] for kind, params in kinds]
    requests = [Request(generator.tokenizer.encode(p), params, settings["max_new_tokens"]) for p, _, params in runs]
    return [
        {
            "prompt": prompt,
            "kind": kind,
            "params": params.as_dict(),
            "text": result.text,
            "tokens": result.tokens,
            "stop_reason": result.stop_reason,
        }
        for (prompt, kind, params), result in zip(runs, generate_all(generator, requests))
    ]


def untrained_twin(manifest: dict, work_dir: Path) -> Path:
    """An F32 GGUF in work_dir of a model with the trained model's architecture and seeded random weights."""
    twin = work_dir / "untrained"
    twin.mkdir()
    synthetic.build(twin, manifest["preset"], manifest["architecture"], seed=manifest["seed"], dtype="float32")
    convert(twin, "F32", work_dir / "untrained.gguf")
    return work_dir / "untrained.gguf"


def write_samples(model_dir: Path | str, gguf: Path | str, out: Path | str, settings: dict | None = None) -> dict:
    """Continuations of the model (its F32 GGUF) and, if it was trained here, of its untrained twin."""
    settings = {**DEFAULTS, **(settings or {})}
    manifest = json.loads((Path(model_dir) / "manifest.json").read_text("utf-8"))
    result = {
        "model": manifest["model"],
        "source": manifest["source"],
        "settings": settings,
        "samples": {"model": continuations(Path(gguf), settings)},
    }
    if manifest["source"] == "trained":
        with tempfile.TemporaryDirectory() as tmp:
            result["samples"]["untrained"] = continuations(untrained_twin(manifest, Path(tmp)), settings)
    write_text_atomic(Path(out), json.dumps(result, indent=1, ensure_ascii=False) + "\n", force=True)
    return result
