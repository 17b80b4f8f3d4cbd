"""The reference implementation: transformers' Qwen3ForCausalLM in float32 with eager attention."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def reference_model(model_dir: Path | str):
    """transformers' Qwen3ForCausalLM on the Hugging Face weights in float32 with eager attention:
    the reference implementation, as the engine is checked against it."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its weight-loading bar would fill the rule logs
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


class Reference:
    """transformers' Qwen3ForCausalLM, float32, eager attention: all logits of a prompt, then greedy."""

    def __init__(self, model_dir: Path | str):
        import torch

        self.torch = torch
        self.model = reference_model(model_dir)

    def run(self, prompt: list[int], n_greedy: int) -> tuple[np.ndarray, list[int]]:
        from transformers import DynamicCache

        torch = self.torch
        cache = DynamicCache()
        with torch.no_grad():
            logits = self.model(torch.tensor([prompt]), past_key_values=cache, use_cache=True).logits[0].numpy()
            greedy, last = [], logits[-1]
            for _ in range(n_greedy):
                greedy.append(int(np.argmax(last)))  # numpy's argmax on both sides: ties break the same way
                last = (
                    self.model(torch.tensor([[greedy[-1]]]), past_key_values=cache, use_cache=True)
                    .logits[0, -1]
                    .numpy()
                )
        return logits, greedy
