"""What each pipeline job asks the scheduler for: memory estimates from the model's and the files' sizes.

Every estimate is a generous bound on the job's peak resident memory in MiB. A GGUF file that does
not exist yet (a dry run plans before the converter has written it) counts as a placeholder; the
rules are evaluated again once their inputs exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qwen3repro.model import architecture

PLACEHOLDER_MB = 1024


def safetensors_bytes(model_dir: Path | str) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))


def model_mb(spec: dict) -> int:
    """Putting a model in place: building, training or downloading it."""
    if spec.get("source") == "synthetic":
        n = architecture.n_parameters(architecture.resolve(spec["preset"], spec.get("architecture")))
        return 1024 + 6 * n // 2**20  # the saved weights, at most float32, and serialisation headroom
    if spec.get("source") == "trained":
        n = architecture.n_parameters(architecture.resolve(spec["preset"], spec.get("architecture")))
        # weights, gradients and two AdamW moments in float32, activations, and the logits buffer
        return 2048 + 24 * n // 2**20
    return 1024


def convert_mb(model_dir: Path | str) -> int:
    """Tensors are converted one at a time; twice the weights' size bounds the largest in float32."""
    return 1024 + 2 * safetensors_bytes(model_dir) // 2**20


def gguf_mb(gguf: Path | str) -> int:
    """The engine on a GGUF file holds its weights in float32; llama.cpp maps the file beside it."""
    from qwen3repro.convert.reader import GGUFFile

    if not Path(gguf).exists():
        return PLACEHOLDER_MB
    with GGUFFile(gguf) as f:
        n_weights = sum(int(np.prod(t.shape)) for t in f.tensors.values())
    return 1024 + (4 * n_weights + Path(gguf).stat().st_size) // 2**20


def samples_mb(gguf: Path | str) -> int:
    """The F32 file is mapped once; an untrained twin of the same size may be built beside it."""
    return 1024 + 3 * Path(gguf).stat().st_size // 2**20


def bench_hf_mb(model_dir: Path | str) -> int:
    """transformers loads the weights and keeps one float32 copy."""
    return 2048 + 3 * safetensors_bytes(model_dir) // 2**20


def check_mb(model_dir: Path | str, gguf: Path | str) -> int:
    """The engine holds the weights in float32 and transformers a float32 copy of its own."""
    return 2048 + 2 * gguf_mb(gguf) + 3 * safetensors_bytes(model_dir) // 2**20


def perplexity_mb(gguf: Path | str, base: Path | str, n_ctx: int = 512, llama_cpp: bool = True) -> int:
    """Two engines (the file and the F32 base) and a chunk's logits from each in float32; then
    llama.cpp maps both files (page cache) and keeps every position's logits of a chunk, twice."""
    engines = gguf_mb(gguf) + gguf_mb(base)
    if not llama_cpp or not Path(base).exists():
        return 2048 + engines
    from qwen3repro.convert.reader import GGUFFile

    with GGUFFile(base) as f:
        vocab = int(max(f.tensors["token_embd.weight"].shape))
    return 2048 + engines + 2 * n_ctx * vocab * 4 // 2**20
