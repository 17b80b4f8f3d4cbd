"""Next-token cross-entropy of a model over fixed token windows, by the engine and by transformers.

The same windows, scored two independent ways: the NumPy engine on a GGUF file and transformers'
Qwen3ForCausalLM (float32, eager attention) on the Hugging Face weights. Each window is scored
from an empty cache; position i predicts token i + 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qwen3repro.accuracy.reference import reference_model
from qwen3repro.engine.logprobs import token_nll


def engine_cross_entropy(gguf_path: Path | str, windows: np.ndarray) -> float:
    """Mean cross-entropy in nats per predicted token, the NumPy engine on a GGUF file."""
    from qwen3repro.engine.qwen3 import Qwen3

    model = Qwen3(gguf_path, n_ctx=windows.shape[1])
    total = 0.0
    for window in windows:
        total += token_nll(model.forward(window[:-1]), window[1:]).sum()
    return total / (windows.shape[0] * (windows.shape[1] - 1))


def transformers_cross_entropy(model_dir: Path | str, windows: np.ndarray) -> float:
    """The same with transformers' Qwen3ForCausalLM, float32, eager attention."""
    import torch

    model = reference_model(model_dir)
    total = 0.0
    with torch.no_grad():
        for window in windows:
            logits = model(torch.from_numpy(window[None, :-1])).logits[0].numpy()
            total += token_nll(logits, window[1:]).sum()
    return total / (windows.shape[0] * (windows.shape[1] - 1))
