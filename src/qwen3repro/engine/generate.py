"""Text generation on the engine: prompt in, tokens out, with timings and KV-cache reuse across turns.

The generator remembers which tokens each KV cache (lane) holds. A new prompt that starts with the
same tokens (the next turn of a conversation, the same system prompt) is prefilled only from where
it differs, which is how llama.cpp's server and qwen3.c's multi-turn mode avoid re-reading history.
A prompt store (PromptStore) goes further, across lanes: a prompt prefilled from an empty cache is
kept, and the next generation of the same prompt copies its keys and values instead.
One generation in flight is a `Sequence`; `Generator.generate` runs one, with prompt-lookup drafting
if asked (lookup.py), and batch.py runs many together.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from qwen3repro.engine import chat_template
from qwen3repro.engine.lookup import propose
from qwen3repro.engine.prompt_store import PromptStore
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
    decode_tokens: int  # tokens after the first one
    decode_s: float
    params: dict = field(default_factory=dict)
    draft_tokens: int = 0  # prompt lookup: tokens proposed, and how many the model agreed with
    accepted_tokens: int = 0
    forward_passes: int = 0  # after the prompt: decode_tokens without drafting, fewer with it

    @property
    def prefill_tokens_per_s(self) -> float:
        n = self.prompt_tokens - self.reused_tokens
        return n / self.prefill_s if n > 0 and self.prefill_s > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else float("nan")

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else float("nan")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["prefill_tokens_per_s"] = self.prefill_tokens_per_s
        d["decode_tokens_per_s"] = self.decode_tokens_per_s
        d["acceptance_rate"] = self.acceptance_rate
        return d

    def summary(self) -> str:
        drafting = (
            f", lookup accepted {self.accepted_tokens}/{self.draft_tokens} drafts in {self.forward_passes} passes"
            if self.draft_tokens
            else ""
        )
        return (
            f"[prompt {self.prompt_tokens} tok ({self.reused_tokens} reused), "
            f"prefill {self.prefill_tokens_per_s:.1f} tok/s, first token {self.ttft_s:.2f} s, "
            f"decode {self.decode_tokens} tok at {self.decode_tokens_per_s:.1f} tok/s{drafting}, "
            f"stop: {self.stop_reason}]"
        )


@dataclass
class Request:
    """One generation: sample up to max_new_tokens after the prompt. `observe` sees every step's
    distribution (see Sampler); `banned` token ids get no probability at all; `forced` tokens are
    taken instead of the draws (another model's text, to compare distributions on one context);
    `fresh` prefills from an empty cache, so that timings compare, instead of reusing its prefix;
    `share` takes the prompt from the generator's prompt store where it holds it (no prefill)."""

    prompt: list[int]
    params: SamplingParams
    max_new_tokens: int = 256
    observe: Observer | None = None
    banned: Iterable[int] = ()
    forced: list[int] | None = None
    fresh: bool = False
    share: bool = False


class Sequence:
    """One generation in flight on a lane: its sampler, its tokens so far, and the logits its next
    token is drawn from. The caller runs the forward passes (one sequence, or many at once) and
    hands each its logits; the sequence draws, and says when it is done (stop_reason)."""

    def __init__(self, generator: "Generator", request: Request, lane: int = 0):
        if request.max_new_tokens < 1:
            raise UserError(f"max new tokens must be at least 1, not {request.max_new_tokens}")
        self.generator, self.request, self.lane = generator, request, lane
        self.sampler = Sampler(request.params, observe=request.observe, banned=request.banned)
        self.limit = (
            request.max_new_tokens if request.forced is None else min(request.max_new_tokens, len(request.forced))
        )
        self.generated: list[int] = []
        self.stop_reason: str | None = None
        self.logits: np.ndarray | None = None
        self.drafted = self.accepted = self.passes = 0

    @property
    def cached(self) -> list[int]:
        return self.generator.lane_tokens[self.lane]

    @property
    def position(self) -> int:
        """Where the last token drawn goes in the cache: the next forward pass starts there."""
        return len(self.cached)

    def start(self) -> None:
        """Prefill the prompt (what the lane's cache does not already hold)."""
        self.started = time.perf_counter()
        if self.request.fresh:
            self.generator.lane_tokens[self.lane] = []
        self.logits, self.reused = self.generator.prefill(list(self.request.prompt), self.lane, self.request.share)
        self.prefill_s = time.perf_counter() - self.started

    def take(self) -> int:
        """Draw the next token from the current logits; sets stop_reason when the sequence is done."""
        forced = self.request.forced
        force = forced[len(self.generated)] if forced is not None else None
        token = self.sampler.sample(self.logits, self.cached, self.generated, force=force)
        self.generated.append(token)
        if len(self.generated) == 1:
            self.ttft = time.perf_counter() - self.started
            self.decode_started = time.perf_counter()
        if token in self.generator.stop_ids:
            self.stop_reason = "eos"
        elif len(self.generated) >= self.limit:
            self.stop_reason = "max_new_tokens"
        elif self.position >= self.generator.model.n_ctx:
            self.stop_reason = "context"
        return token

    def feed(self, logits: np.ndarray) -> None:
        """The logits after the last token drawn, which the forward pass has put in the cache."""
        self.cached.append(self.generated[-1])
        self.logits = logits
        self.passes += 1

    def result(self) -> Result:
        tokenizer = self.generator.tokenizer
        return Result(
            tokens=self.generated,
            text=tokenizer.decode(self.generated, skip_control=True),
            stop_reason=self.stop_reason,
            prompt_tokens=len(self.request.prompt),
            reused_tokens=self.reused,
            prefill_s=self.prefill_s,
            ttft_s=self.ttft,
            decode_tokens=len(self.generated) - 1,
            decode_s=time.perf_counter() - self.decode_started,
            params=self.request.params.as_dict(),
            draft_tokens=self.drafted,
            accepted_tokens=self.accepted,
            forward_passes=self.passes,
        )


class Generator:
    def __init__(
        self, model: Qwen3, tokenizer: Tokenizer, template: str | None, prompt_store: PromptStore | None = None
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.prompt_store = prompt_store  # for requests that `share`
        # per lane, the tokens whose keys and values its cache holds, in order
        self.lane_tokens: list[list[int]] = [[] for _ in range(model.lanes)]
        self.stop_ids = {tokenizer.eos_id} | {tokenizer.vocab[t] for t in END_OF_GENERATION if t in tokenizer.vocab}
        eot = model.file.fields.get("tokenizer.ggml.eot_token_id")
        if isinstance(eot, int) and 0 <= eot < len(tokenizer.tokens):
            self.stop_ids.add(eot)

    @classmethod
    def from_gguf(
        cls, path: Path | str, n_ctx: int = 4096, lanes: int = 1, prompt_store: PromptStore | None = None
    ) -> "Generator":
        model = Qwen3(path, n_ctx=n_ctx, lanes=lanes)
        template = model.file.fields.get("tokenizer.chat_template")
        return cls(model, Tokenizer.from_gguf(model.file), template, prompt_store)

    @property
    def cached(self) -> list[int]:
        """The tokens lane 0's cache holds: the one that single generations and chats use."""
        return self.lane_tokens[0]

    @cached.setter
    def cached(self, tokens: list[int]) -> None:
        self.lane_tokens[0] = list(tokens)

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
    def prefill(self, prompt: list[int], lane: int = 0, share: bool = False) -> tuple[np.ndarray, int]:
        """Logits after the prompt, computing only what the lane's cache does not already hold;
        returns them and the number of prompt tokens reused. With `share`, a prompt the lane holds
        none of comes from the prompt store if it is there, and goes into it if not."""
        if not prompt:
            raise UserError("the prompt is empty")
        if len(prompt) >= self.model.n_ctx:
            raise UserError(f"the prompt has {len(prompt)} tokens; the context holds {self.model.n_ctx}")
        cached = self.lane_tokens[lane]
        reused = 0
        for a, b in zip(cached, prompt[:-1]):  # the last token always runs: its logits are needed
            if a != b:
                break
            reused += 1
        del cached[reused:]
        store = self.prompt_store if share and reused == 0 else None
        if store is not None and (stored := store.get(prompt)) is not None:
            keys, values, logits = stored
            self.model.set_cache(lane, keys, values)
            cached.extend(prompt)
            return logits.copy(), len(prompt)
        logits = None
        for start in range(reused, len(prompt), PREFILL_CHUNK):
            chunk = prompt[start : start + PREFILL_CHUNK]
            logits = self.model.forward(chunk, start=start, last_only=True, lane=lane)[0]
            cached.extend(chunk)
        if store is not None:
            store.put(prompt, *self.model.cache(lane, len(prompt)), logits)
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
        lookup: int = 0,
    ) -> Result:
        """One generation on lane 0, from what its cache holds (see Request and run)."""
        return self.run(Request(list(prompt), params, max_new_tokens, observe, banned, forced), on_token, lookup)

    def run(self, request: Request, on_token: Callable[[int, str], None] | None = None, lookup: int = 0) -> Result:
        """One generation on lane 0. With `lookup` K > 0, up to K tokens are drafted from an earlier
        match of the context's last words (prompt-lookup decoding) and checked in one forward pass:
        the same tokens as without, in fewer passes when the text repeats."""
        if lookup < 0:
            raise UserError(f"lookup must be >= 0, not {lookup}")
        seq = Sequence(self, request)
        stream = self.tokenizer.stream(skip_control=True)

        def emit(token: int) -> None:
            if on_token is not None:
                on_token(token, stream.push(token))

        seq.start()
        emit(seq.take())
        while not seq.stop_reason:
            room = self.model.n_ctx - seq.position - 1
            draft = (
                propose(seq.cached + seq.generated[-1:], min(lookup, room)) if lookup and request.forced is None else []
            )
            if draft:
                self._verify(seq, draft, emit)
            else:
                seq.feed(self.model.forward(seq.generated[-1:], start=seq.position, last_only=True)[0])
                emit(seq.take())
        tail = stream.flush()
        if tail and on_token is not None:
            on_token(-1, tail)
        return seq.result()

    def _verify(self, seq: Sequence, draft: list[int], emit: Callable[[int], None]) -> None:
        """Run the last token drawn and the draft in one pass, then draw along it: each draft token
        stands while the draw agrees with it. The first disagreeing draw is kept (it is a draw from
        the model's own distribution at that point) and ends the round.

        This is the speculative-sampling rule for a draft that proposes one token with certainty:
        accept draft token x with probability min(1, p(x) / 1) = p(x), else draw from p with x
        removed. A draw from p equals x with probability p(x), and given that it differs, it is
        distributed as p without x: the same law. Drawing is also what greedy and seeded runs need:
        the same draws, one per token kept, on the same logits (Qwen3.decode), so the output is
        plain decoding's, token for token."""
        # as consecutive decode steps of one lane: every row's logits bitwise what decoding gives
        tokens = seq.generated[-1:] + draft
        positions = range(seq.position, seq.position + len(tokens))
        rows = self.model.decode(tokens, [seq.lane] * len(tokens), positions)  # [1 + len(draft), vocab]
        seq.cached.append(seq.generated[-1])
        seq.passes += 1
        seq.drafted += len(draft)
        for j, row in enumerate(rows):
            seq.logits = row
            token = seq.take()
            emit(token)
            if seq.stop_reason or j == len(draft) or token != draft[j]:
                return
            seq.cached.append(token)  # the draft token stands: its keys and values are already cached
            seq.accepted += 1
