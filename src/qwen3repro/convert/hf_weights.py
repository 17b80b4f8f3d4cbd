"""A Qwen3 Hugging Face directory as the converter reads it: its architecture, and tensors one by one."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np

from qwen3repro.errors import UserError
from qwen3repro.model import architecture
from qwen3repro.model.sources import check_model_dir


def read_config(model_dir: Path) -> dict:
    check_model_dir(model_dir)
    return json.loads((model_dir / "config.json").read_text("utf-8"))


def architecture_of(config: dict) -> dict:
    missing = [k for k in architecture.ARCHITECTURE_KEYS if k not in config and k != "tie_word_embeddings"]
    if missing:
        raise UserError(f"config.json: missing {missing[0]!r}")
    arch = {k: config.get(k) for k in architecture.ARCHITECTURE_KEYS}
    arch["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", False))
    return arch


class SafetensorsSource:
    """The model's tensors by Hugging Face name, loaded one at a time as float32 NumPy arrays."""

    def __init__(self, model_dir: Path):
        from safetensors import safe_open

        self.files = {}
        for path in sorted(model_dir.glob("*.safetensors")):
            try:
                handle = safe_open(str(path), framework="pt")
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise UserError(f"{path}: not a readable safetensors file ({e})") from e
            for name in handle.keys():
                self.files[name] = handle

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.files[name].get_slice(name).get_shape())

    def load(self, name: str) -> np.ndarray:
        import torch

        return self.files[name].get_tensor(name).to(torch.float32).numpy()


def gguf_tensor_names(arch: dict, source: SafetensorsSource) -> dict[str, str]:
    """GGUF name -> HF name, after checking every tensor a Qwen3ForCausalLM needs, with its shape."""
    expected = architecture.tensor_shapes(arch)
    for name, shape in expected.items():
        if name not in source.files:
            raise UserError(f"missing tensor {name}")
        if source.shape(name) != shape:
            raise UserError(f"tensor {name} has shape {list(source.shape(name))}, expected {list(shape)}")
    return gguf_to_hf(arch)


def gguf_to_hf(arch: dict) -> dict[str, str]:
    """GGUF tensor name -> Hugging Face tensor name for every tensor of this architecture, in HF order."""
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, arch["num_hidden_layers"])
    names = {}
    for hf_name in architecture.tensor_shapes(arch):
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:  # pragma: no cover - gguf-py knows every Qwen3 tensor
            raise UserError(f"no GGUF name for tensor {hf_name}")
        names[gguf_name] = hf_name
    return names
