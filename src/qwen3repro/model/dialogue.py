"""Chat conversations from the plays' dialogue, rendered by the Qwen3 chat template as inference renders them.

A play marks each speech with its speaker's name on a line of its own ("MENENIUS.", "Ham.",
"QUINCE"). Two consecutive speeches by different speakers are an exchange: the first is the user
turn, the second the assistant's reply, and the system prompt names the character who answers
("You are MENENIUS."). Alternating runs (A, B, A, B) give multi-turn conversations. With thinking
on, the reply follows a think span saying who speaks and where ("I am MENENIUS, in Coriolanus;
FIRST CITIZEN speaks to me."), which closes; with thinking off the template's empty think block
is part of the prompt, as `enable_thinking=False` renders it. Each example is the token ids of the
prompt and of the target (what the model must generate, `<|im_end|>` included); training scores
the target alone.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

# A speaker's line: a name of up to four words, capitalised, an optional full stop, nothing else
SPEAKER = re.compile(r"^([A-Z][A-Za-z'&-]*(?: [A-Za-z'&-]+){0,3})\.?$")
HEADING = re.compile(r"^\[?(ACT|SCENE|Act|Scene)\b")
DIRECTION = re.compile(r"\[[^\]]*\]?")
ROMAN = {"i", "ii", "iii", "iv", "v", "vi", "vii", "viii"}
ABBREVIATION = 4  # "Ham." is Hamlet: a name this short is expanded to the play's most frequent longer word


@dataclass(frozen=True)
class Speech:
    speaker: str
    text: str
    scene: int  # the scene's index in the work: exchanges never cross a scene


@dataclass(frozen=True)
class Example:
    """One conversation to train on: the prompt's ids and the target's (the reply the model writes)."""

    work: str
    prompt: tuple[int, ...]
    target: tuple[int, ...]
    thinking: bool
    turns: int


def title(work: str) -> str:
    """ "henry_iv_part_1" -> "Henry IV Part 1"."""
    return " ".join(w.upper() if w in ROMAN else w.capitalize() for w in work.split("_"))


def speeches(text: str) -> list[Speech]:
    """The work's speeches in order: blocks (lines between blank lines) whose first line is a name."""
    out, scene = [], 0
    for block in re.split(r"\n\s*\n", text):
        lines = [" ".join(line.split()) for line in block.strip().splitlines()]
        if not lines or not lines[0]:
            continue
        if HEADING.match(lines[0]):
            scene += 1
            continue
        if len(lines) < 2 or len(lines[0]) > 30 or not SPEAKER.match(lines[0]):
            continue
        words = " ".join(DIRECTION.sub(" ", line) for line in lines[1:]).split()
        if words:
            out.append(Speech(lines[0].rstrip(".").upper(), " ".join(words), scene))
    return _expand_abbreviations(out, text)


def _expand_abbreviations(found: list[Speech], text: str) -> list[Speech]:
    """Speakers named by a short abbreviation ("HAM") under the longer name the text uses most ("HAMLET")."""
    words = Counter(re.findall(r"\b[A-Z][a-z]+\b", text))
    names = {}
    for speaker in {s.speaker for s in found}:
        if len(speaker) <= ABBREVIATION and " " not in speaker:
            longer = [(n, w) for w, n in words.items() if w.upper().startswith(speaker) and len(w) > len(speaker)]
            if longer and max(longer)[0] >= 10:
                names[speaker] = max(longer)[1].upper()
    return [Speech(names.get(s.speaker, s.speaker), s.text, s.scene) for s in found]


def thought(speaker: str, addressed_by: str, work: str) -> str:
    return f"I am {speaker}, in {title(work)}; {addressed_by} speaks to me."


def conversations(work: str, text: str, multi_turn_share: float, rng: np.random.Generator):
    """(system, turns, thinking-free messages) per exchange: a list of (user, assistant) pairs between
    two speakers, the last pair's reply the target; multi-turn where the run alternates."""
    found = speeches(text)
    for i in range(1, len(found)):
        a, b = found[i - 1], found[i]
        if a.scene != b.scene or a.speaker == b.speaker:
            continue
        pairs = [(a, b)]
        if i >= 3 and rng.random() < multi_turn_share:
            a0, b0 = found[i - 3], found[i - 2]
            if (a0.speaker, b0.speaker, a0.scene) == (a.speaker, b.speaker, a.scene):
                pairs = [(a0, b0), (a, b)]
        yield b.speaker, a.speaker, pairs


def render_example(template: str, tokenize, work: str, speaker: str, addressed_by: str, pairs, thinking: bool):
    """The prompt and target ids of one conversation, as inference renders and tokenizes them."""
    from qwen3repro.engine.chat_template import render

    messages = [{"role": "system", "content": f"You are {speaker}."}]
    for user, reply in pairs[:-1]:
        messages += [{"role": "user", "content": user.text}, {"role": "assistant", "content": reply.text}]
    messages.append({"role": "user", "content": pairs[-1][0].text})
    prompt = render(template, messages, add_generation_prompt=True, enable_thinking=thinking)
    think = f"<think>\n{thought(speaker, addressed_by, work)}\n</think>\n\n" if thinking else ""
    return tokenize(prompt), tokenize(think + pairs[-1][1].text + "<|im_end|>")


def build(
    works: dict[str, str],
    template: str,
    tokenize,
    max_tokens: int,
    max_reply_tokens: int,
    multi_turn_share: float = 0.25,
    seed: int = 0,
) -> list[Example]:
    """Every exchange of the works that fits in max_tokens (prompt and target) with a reply of at most
    max_reply_tokens, thinking on or off by a seeded coin; the same list for the same works and seed."""
    rng = np.random.default_rng(seed)
    out = []
    for work, text in works.items():
        for speaker, addressed_by, pairs in conversations(work, text, multi_turn_share, rng):
            thinking = bool(rng.random() < 0.5)
            prompt, target = render_example(template, tokenize, work, speaker, addressed_by, pairs, thinking)
            reply = len(target) - (len(tokenize(thought(speaker, addressed_by, work))) + 6 if thinking else 0)
            if len(prompt) + len(target) <= max_tokens and reply <= max_reply_tokens:
                out.append(Example(work, tuple(prompt), tuple(target), thinking, len(pairs)))
    return out
