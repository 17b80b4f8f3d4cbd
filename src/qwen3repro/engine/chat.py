"""The interactive chat loop: read a user turn, stream the answer, report the speed, repeat.

With multi-turn on, the conversation grows turn by turn and is re-rendered through the template
(which drops earlier thinking); the generator reuses the cached prefix. With it off, every
question is answered on its own, after the system prompt.
"""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from qwen3repro.engine.candidates import Candidates, format_step
from qwen3repro.engine.generate import Generator
from qwen3repro.engine.sampler import SamplingParams


def run(
    generator: Generator,
    params: SamplingParams,
    system: str | None = None,
    thinking: bool = True,
    multi_turn: bool = True,
    max_new_tokens: int = 2048,
    show_probs: int = 0,
    lookup: int = 0,
    read: Callable[[], str | None] | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> list[dict]:
    """Chat until `read` returns None (end of input) or "/exit"; returns the conversation. With
    show_probs N, every answer is followed by a line per token with its top-N candidates; lookup K
    drafts up to K tokens from the conversation (prompt-lookup decoding)."""
    read = read or _read_line
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    while True:
        question = read()
        if question is None or question.strip() == "/exit":
            return history
        if not question.strip():
            continue
        turn = (history if multi_turn else history[:1] if system else []) + [{"role": "user", "content": question}]
        prompt = generator.chat_prompt(turn, thinking=thinking)

        def show(_token: int, piece: str) -> None:
            out.write(piece)
            out.flush()

        candidates = Candidates(show_probs, generator.tokenizer.decode) if show_probs else None
        result = generator.generate(
            prompt,
            params,
            max_new_tokens=max_new_tokens,
            on_token=show,
            observe=candidates,
            banned=generator.thinking_ban(thinking),
            lookup=lookup,
        )
        out.write("\n")
        for step in candidates.steps if candidates else ():
            out.write(format_step(step) + "\n")
        out.flush()
        print(result.summary(), file=err)
        if multi_turn:  # the full answer; the template itself drops the thinking from history
            history = turn + [{"role": "assistant", "content": result.text}]


def _read_line() -> str | None:
    try:
        return input("> " if sys.stdin.isatty() else "")
    except EOFError:
        return None
