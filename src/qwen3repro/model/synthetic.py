"""Builds a random-weight Qwen3ForCausalLM as a Hugging Face directory, with the real Qwen3 tokenizer."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from qwen3repro.model import architecture, tokenizer_files


def random_weights(arch: dict, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """Seeded float32 weights, each tensor drawn from its own stream so that no tensor depends on
    the order or the shapes of the others.

    Matrices follow transformers' init (normal, std = initializer_range 0.02). Norm weights are
    1 + N(0, 0.1) rather than transformers' exact ones: an engine that forgot to multiply by a
    norm weight would otherwise agree with the reference.
    """
    for name, shape in architecture.tensor_shapes(arch).items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        w = rng.standard_normal(shape, dtype=np.float32)
        if len(shape) == 1:
            w = (w * np.float32(0.1)) + np.float32(1.0)
        else:
            w *= np.float32(0.02)
        yield name, w


def save_safetensors(weights: Iterable[tuple[str, np.ndarray]], path: Path, dtype: str) -> None:
    """Cast tensor by tensor as they are drawn, so that float32 copies never pile up."""
    import torch
    from safetensors.torch import save_file

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    tensors = {name: torch.from_numpy(w).to(torch_dtype).contiguous() for name, w in weights}
    save_file(tensors, str(path), metadata={"format": "pt"})


def write_configs(out_dir: Path, arch: dict, dtype: str) -> None:
    """config.json and generation_config.json with the Hub's own keys."""
    write_json(Path(out_dir) / "config.json", architecture.config_json(arch, torch_dtype=dtype))
    write_json(Path(out_dir) / "generation_config.json", architecture.generation_config_json())


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", "utf-8")


def build(
    out_dir: Path, preset: str, architecture_overrides: dict | None = None, seed: int = 0, dtype: str = "bfloat16"
) -> dict:
    """Write a complete HF model directory into out_dir; returns the recipe for the manifest."""
    arch = architecture.resolve(preset, architecture_overrides)
    out_dir = Path(out_dir)
    write_configs(out_dir, arch, dtype)
    tokenizer_files.write_tokenizer_files(out_dir)
    save_safetensors(random_weights(arch, seed), out_dir / "model.safetensors", dtype)
    return {
        "preset": preset,
        "architecture": arch,
        "seed": seed,
        "dtype": dtype,
        "n_parameters": architecture.n_parameters(arch),
    }
