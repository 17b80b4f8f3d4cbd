"""Text generation on the engine: prompt in, tokens out, with timings and KV-cache reuse across turns.

The generator remembers which tokens the KV cache holds. A new prompt that starts with the same
tokens (the next turn of a conversation, the same system prompt) is prefilled only from where it
differs, which is how llama.cpp's server and qwen3.c's multi-turn mode avoid re-reading history.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from qwen3repro.engine import chat_template
from qwen3repro.engine.qwen3 import Qwen3
from qwen3repro.engine.sampler import Observer, Sampler, SamplingParams
from qwen3repro.engine.tokenizer import Tokenizer
from qwen3repro.errors import UserError

PREFILL_CHUNK = 512  # attention scores of a chunk are [heads, chunk, context]: this bounds their memory
# llama.cpp ends generation on these texts too when the GGUF names no end-of-turn token
END_OF_GENERATION = ("<|im_end|>", "<|endoftext|>")


@dataclass
class Result:
    tokens: list[int]  # generated, the stop token included
    text: str  # the generated text, control tokens left out
    stop_reason: str  # "eos", "max_new_tokens" or "context"
    prompt_tokens: int
    reused_tokens: int  # prompt tokens whose K/V came from the cache
    prefill_s: float
    ttft_s: float  # from the call to the first token sampled
    decode_tokens: int  # one-token forward passes after the prompt
    decode_s: float
    params: dict = field(default_factory=dict)

    @property
    def prefill_tokens_per_s(self) -> float:
        n = self.prompt_tokens - self.reused_tokens
        return n / self.prefill_s if self.prefill_s > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else float("nan")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["prefill_tokens_per_s"] = self.prefill_tokens_per_s
        d["decode_tokens_per_s"] = self.decode_tokens_per_s
        return d

    def summary(self) -> str:
        return (
            f"[prompt {self.prompt_tokens} tok ({self.reused_tokens} reused), "
            f"prefill {self.prefill_tokens_per_s:.1f} tok/s, first token {self.ttft_s:.2f} s, "
            f"decode {self.decode_tokens} tok at {self.decode_tokens_per_s:.1f} tok/s, "
            f"stop: {self.stop_reason}]"
        )


class Generator:
    def __init__(self, model: Qwen3, tokenizer: Tokenizer, template: str | None):
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.cached: list[int] = []  # the tokens whose keys and values the cache holds, in order
        self.stop_ids = {tokenizer.eos_id} | {tokenizer.vocab[t] for t in END_OF_GENERATION if t in tokenizer.vocab}
        eot = model.file.fields.get("tokenizer.ggml.eot_token_id")
        if isinstance(eot, int) and 0 <= eot < len(tokenizer.tokens):
            self.stop_ids.add(eot)

    @classmethod
    def from_gguf(cls, path: Path | str, n_ctx: int = 4096) -> "Generator":
        model = Qwen3(path, n_ctx=n_ctx)
        return cls(model, Tokenizer.from_gguf(model.file), model.file.fields.get("tokenizer.chat_template"))

    # ------------------------------------------------------------------ prompts
    def chat_prompt(self, messages: list[dict], thinking: bool = True, add_generation_prompt: bool = True) -> list[int]:
        if not self.template:
            raise UserError(f"{self.model.file.path}: no tokenizer.chat_template in the metadata")
        text = chat_template.render(
            self.template,
            messages,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=thinking,
            special_tokens=chat_template.special_tokens(self.model.file.fields, self.tokenizer.tokens),
        )
        return self.tokenizer.encode(text)

    def thinking_ban(self, thinking: bool) -> list[int]:
        """Thinking off: the template closes an empty think block, and <think> may not reopen it."""
        think = self.tokenizer.vocab.get("<think>")
        return [] if thinking or think is None else [think]

    # ------------------------------------------------------------------ running
    def prefill(self, prompt: list[int]) -> tuple[np.ndarray, int]:
        """Logits after the prompt, computing only what the cache does not already hold; returns
        them and the number of prompt tokens reused."""
        if not prompt:
            raise UserError("the prompt is empty")
        if len(prompt) >= self.model.n_ctx:
            raise UserError(f"the prompt has {len(prompt)} tokens; the context holds {self.model.n_ctx}")
        reused = 0
        for a, b in zip(self.cached, prompt[:-1]):  # the last token always runs: its logits are needed
            if a != b:
                break
            reused += 1
        self.cached = self.cached[:reused]
        logits = None
        for start in range(reused, len(prompt), PREFILL_CHUNK):
            chunk = prompt[start : start + PREFILL_CHUNK]
            logits = self.model.forward(chunk, start=start, last_only=True)[0]
            self.cached.extend(chunk)
        return logits, reused

    def generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        max_new_tokens: int = 256,
        on_token: Callable[[int, str], None] | None = None,
        observe: Observer | None = None,
        banned: Iterable[int] = (),
        forced: list[int] | None = None,
    ) -> Result:
        """Sample up to max_new_tokens after the prompt. `observe` sees every step's distribution
        (see Sampler); `banned` token ids get no probability at all; `forced` tokens are taken
        instead of the draws (another model's text, to compare distributions on one context)."""
        if max_new_tokens < 1:
            raise UserError(f"max new tokens must be at least 1, not {max_new_tokens}")
        sampler = Sampler(params, observe=observe, banned=banned)
        stream = self.tokenizer.stream(skip_control=True)
        started = time.perf_counter()
        logits, reused = self.prefill(list(prompt))
        prefill_s = time.perf_counter() - started
        generated: list[int] = []
        ttft = decode_s = 0.0
        stop_reason = "max_new_tokens"
        decode_started = None
        while True:
            force = forced[len(generated)] if forced is not None else None
            token = sampler.sample(logits, self.cached, generated, force=force)
            generated.append(token)
            if len(generated) == 1:
                ttft = time.perf_counter() - started
                decode_started = time.perf_counter()
            if on_token is not None:
                on_token(token, stream.push(token))
            if token in self.stop_ids:
                stop_reason = "eos"
                break
            if len(generated) >= (max_new_tokens if forced is None else min(max_new_tokens, len(forced))):
                break
            if len(self.cached) >= self.model.n_ctx:
                stop_reason = "context"
                break
            logits = self.model.forward([token], start=len(self.cached), last_only=True)[0]
            self.cached.append(token)
        decode_s = time.perf_counter() - decode_started
        tail = stream.flush()
        if tail and on_token is not None:
            on_token(-1, tail)
        return Result(
            tokens=generated,
            text=self.tokenizer.decode(generated, skip_control=True),
            stop_reason=stop_reason,
            prompt_tokens=len(prompt),
            reused_tokens=reused,
            prefill_s=prefill_s,
            ttft_s=ttft,
            decode_tokens=len(generated) - 1,
            decode_s=decode_s,
            params=params.as_dict(),
        )
