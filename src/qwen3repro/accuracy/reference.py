"""The reference implementation: transformers' Qwen3ForCausalLM in float32 with eager attention.

On the Hugging Face weights, or on the weights a GGUF file holds (dequantized with gguf-py), so
that the engine on any file type can be compared with transformers computing the same weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf.quants import dequantize

from qwen3repro.errors import UserError


def reference_model(model_dir: Path | str, gguf: Path | str | None = None):
    """transformers' Qwen3ForCausalLM in float32 with eager attention, on the Hugging Face weights
    in model_dir or, given `gguf`, on that file's weights."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its weight-loading bar would fill the rule logs
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    if gguf is not None:
        load_file_weights(model, model_dir, gguf)
    return model


def load_file_weights(model, model_dir: Path | str, gguf: Path | str) -> None:
    """Overwrite every parameter of `model` with the tensor of the GGUF file that stands for it,
    dequantized to float32, one tensor at a time."""
    import torch

    from qwen3repro.convert.hf_weights import architecture_of, gguf_to_hf, read_config
    from qwen3repro.gguf_file import GGUFFile

    names = gguf_to_hf(architecture_of(read_config(Path(model_dir))))
    params = dict(model.named_parameters())  # a tied lm_head is the embedding's own parameter, listed once
    with GGUFFile(gguf) as f:
        loaded = set()
        for gguf_name, hf_name in names.items():
            if hf_name not in params:  # the tied lm_head
                continue
            if gguf_name not in f.tensors:
                raise UserError(f"{gguf}: missing tensor {gguf_name}")
            info = f.tensors[gguf_name]
            # gguf-py's dequantizers for every type, not the engine's loader: the reference stays independent
            raw = f.raw(gguf_name).reshape(int(np.prod(info.shape[:-1])), -1)
            weight = dequantize(raw, info.type).reshape(info.shape)
            if tuple(params[hf_name].shape) != weight.shape:
                raise UserError(
                    f"{gguf}: tensor {gguf_name} has shape {list(weight.shape)}, "
                    f"the model's {hf_name} {list(params[hf_name].shape)}"
                )
            with torch.no_grad():
                params[hf_name].copy_(torch.from_numpy(weight))
            loaded.add(hf_name)
    if loaded != set(params):
        raise UserError(f"{gguf}: no tensor for {sorted(set(params) - loaded)[0]}")


class Reference:
    """transformers' Qwen3ForCausalLM, float32, eager attention: all logits of a prompt, then greedy."""

    def __init__(self, model_dir: Path | str, gguf: Path | str | None = None):
        import torch

        self.torch = torch
        self.model = reference_model(model_dir, gguf)

    def run(self, prompt: list[int], n_greedy: int) -> tuple[np.ndarray, list[int], list[float]]:
        """All logits of the prompt, then `n_greedy` greedy tokens with the margin between the
        two most likely tokens at each step (how near a tie the choice was)."""
        from transformers import DynamicCache

        torch = self.torch
        cache = DynamicCache()
        with torch.no_grad():
            logits = self.model(torch.tensor([prompt]), past_key_values=cache, use_cache=True).logits[0].numpy()
            greedy, margins, last = [], [], logits[-1]
            for _ in range(n_greedy):
                second, first = np.partition(last, -2)[-2:]
                margins.append(float(first - second))
                greedy.append(int(np.argmax(last)))  # numpy's argmax on both sides: ties break the same way
                step = self.model(torch.tensor([[greedy[-1]]]), past_key_values=cache, use_cache=True)
                last = step.logits[0, -1].numpy()
        return logits, greedy, margins
