"""The three runtimes a benchmark drives, each behind fill(), prefill() and decode(): numpy, llama.cpp, transformers.

fill(tokens) starts the context afresh with `tokens` in it (none: empty), untimed; prefill and
decode then go on from position `start`, the tokens already there.

Engines: `numpy` (this package, on the GGUF; `numpy-low-memory` streaming its weights from the
file a layer at a time), `llama.cpp` (llama-cpp-python on the same GGUF, its default settings) and
`transformers` (Qwen3ForCausalLM on the Hugging Face weights, float32 or bfloat16, keeping only the
last position's logits as the others do).
"""

from __future__ import annotations

# the engines that run a GGUF file; the others run the Hugging Face directory
GGUF_ENGINES = ("numpy", "numpy-low-memory", "llama.cpp")
ENGINES = (*GGUF_ENGINES, "transformers-f32", "transformers-bf16")


class NumpyEngine:
    """The NumPy engine; with `low_memory`, its weights streamed from the file a layer at a time."""

    def __init__(self, path: str, n_ctx: int, threads: int, low_memory: bool = False):
        from qwen3repro.engine.qwen3 import Qwen3
        from qwen3repro.pipeline.threads import limit_threads

        limit_threads(threads)
        self.model = Qwen3(path, n_ctx=n_ctx, low_memory=low_memory)

    def fill(self, tokens: list[int]) -> None:
        if tokens:  # the cache past `start` is overwritten, so an empty context needs nothing
            self.model.forward(tokens, start=0, last_only=True)

    def prefill(self, tokens: list[int], start: int) -> None:
        self.model.forward(tokens, start=start, last_only=True)

    def decode(self, tokens: list[int], start: int) -> None:
        for pos, token in enumerate(tokens, start):
            self.model.forward([token], start=pos, last_only=True)


class LlamaCppEngine:
    def __init__(self, path: str, n_ctx: int, threads: int):
        from qwen3repro.llamacpp import llama

        self.llm = llama(
            model_path=path,
            n_ctx=n_ctx,
            n_batch=min(n_ctx, 512),
            n_ubatch=min(n_ctx, 512),
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=False,
            verbose=False,
        )

    def fill(self, tokens: list[int]) -> None:
        self.llm.reset()  # eval() drops the cache from n_tokens = 0 on
        if tokens:
            self.llm.eval(tokens)

    def prefill(self, tokens: list[int], start: int) -> None:
        assert self.llm.n_tokens == start
        self.llm.eval(tokens)

    def decode(self, tokens: list[int], start: int) -> None:
        assert self.llm.n_tokens == start
        for token in tokens:
            self.llm.eval([token])


class TransformersEngine:
    def __init__(self, path: str, n_ctx: int, threads: int, dtype: str):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), attn_implementation="sdpa")
        self.model.eval()

    def fill(self, tokens: list[int]) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache()
        if tokens:
            self.prefill(tokens, 0)

    def prefill(self, tokens: list[int], start: int) -> None:
        with self.torch.inference_mode():
            self.model(self.torch.tensor([tokens]), past_key_values=self.cache, use_cache=True, logits_to_keep=1)

    def decode(self, tokens: list[int], start: int) -> None:
        with self.torch.inference_mode():
            for token in tokens:
                self.model(self.torch.tensor([[token]]), past_key_values=self.cache, use_cache=True, logits_to_keep=1)


def make_engine(engine: str, path: str, n_ctx: int, threads: int):
    if engine.startswith("numpy"):
        return NumpyEngine(path, n_ctx, threads, low_memory=engine == "numpy-low-memory")
    if engine == "llama.cpp":
        return LlamaCppEngine(path, n_ctx, threads)
    return TransformersEngine(path, n_ctx, threads, "float32" if engine.endswith("f32") else "bfloat16")
