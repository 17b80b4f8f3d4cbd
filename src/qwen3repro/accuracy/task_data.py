"""The offline tasks, built from plays the model never trained on (the held-out works).

- next-line (HellaSwag's shape): a few lines of a speech as the context, the true next line, and
  three distractor lines of similar length drawn from far away in the same text, in a seeded order.
  Written in llama-perplexity's HellaSwag format, `llama-perplexity --hellaswag` scores the very
  same file (or in its multiple-choice format, `--multiple-choice`). Chance is 25%.
- blank (Winogrande's shape): a line with one word blanked, the true word and a word of similar
  length from far away in the text as the two options. Chance is 50%.
Both are the same for the same text and seed on any machine.
"""

from __future__ import annotations

import re

import numpy as np

from qwen3repro.accuracy.task_formats import HELLASWAG_ENDINGS as ENDINGS
from qwen3repro.accuracy.task_formats import Task

CONTEXT_LINES = 3
# a distractor is at least this many lines away from the true one, and within this share of its length
FAR = 200
LENGTH_SHARE = 0.25
MIN_CHARS = 20
# speaker names ("COUNTESS."), stage directions ("[Enter ...]") and headings are not speech
# and a cast list's entries ("DUKE OF AUMERLE, son of ...") are not either
NOT_SPEECH = re.compile(r"^(\[.*|[A-Z][A-Z' ,&-]+\.?|[A-Z][A-Z' -]+,.*|ACT .*|SCENE .*|.*\bby William Shakespeare)$")


def speech_lines(text: str) -> list[tuple[int, str]]:
    """(block, line) for each line of speech; a block is one speech, lines between blank lines."""
    out, block = [], 0
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line:
            block += 1
        elif not NOT_SPEECH.match(line):
            out.append((block, line))
    return out


def build_tasks(text: str, n_tasks: int, seed: int = 0) -> list[Task]:
    """`n_tasks` tasks from `text`, the same ones for the same text and seed on any machine."""
    lines = speech_lines(text)
    rng = np.random.default_rng(seed)
    candidates = [
        i
        for i in range(CONTEXT_LINES, len(lines))
        if len(lines[i][1]) >= MIN_CHARS and all(lines[j][0] == lines[i][0] for j in range(i - CONTEXT_LINES, i))
    ]
    if len(candidates) < n_tasks:
        raise ValueError(f"the text has {len(candidates)} places for a task, fewer than the {n_tasks} asked for")
    lengths = np.array([len(line) for _, line in lines])
    tasks = []
    for i in sorted(rng.choice(candidates, size=n_tasks, replace=False).tolist()):
        gold_line = lines[i][1]
        near = np.abs(lengths - len(gold_line)) <= LENGTH_SHARE * len(gold_line)
        far = np.abs(np.arange(len(lines)) - i) >= FAR
        pool = [j for j in np.flatnonzero(near & far) if lines[j][1] != gold_line]
        distractors = [lines[j][1] for j in rng.choice(pool, size=ENDINGS - 1, replace=False)]
        gold = int(rng.integers(ENDINGS))
        endings = distractors[:gold] + [gold_line] + distractors[gold:]
        context = " ".join(line for _, line in lines[i - CONTEXT_LINES : i])
        tasks.append(Task(context, gold, tuple(endings)))
    return tasks


WORD = re.compile(r"[A-Za-z]{4,}")


def build_blanks(text: str, n_tasks: int, seed: int = 0) -> list[Task]:
    """`n_tasks` fill-the-blank tasks in Winogrande's shape: the line with `_` for one of its words
    (not the first), the true word and a far-away word of similar length as the options."""
    lines = speech_lines(text)
    rng = np.random.default_rng(seed)
    words = [[m for m in WORD.finditer(line) if m.start() > 0] for _, line in lines]
    # the binary's CSV has no escape for a double quote, and the first _ is the blank
    candidates = [
        i
        for i, found in enumerate(words)
        if found and len(lines[i][1]) >= MIN_CHARS and not {'"', "_"} & set(lines[i][1])
    ]
    if len(candidates) < n_tasks:
        raise ValueError(f"the text has {len(candidates)} places for a task, fewer than the {n_tasks} asked for")
    tasks = []
    for i in sorted(rng.choice(candidates, size=n_tasks, replace=False).tolist()):
        line = lines[i][1]
        m = words[i][int(rng.integers(len(words[i])))]
        word = m.group()
        while True:  # a far line's word of about the same length, not the same word
            j = int(rng.integers(len(lines)))
            others = [w.group() for w in words[j] if abs(len(w.group()) - len(word)) <= 2 and w.group() != word]
            if abs(j - i) >= FAR and others:
                break
        other = others[int(rng.integers(len(others)))]
        gold = int(rng.integers(2))
        options = (word, other) if gold == 0 else (other, word)
        tasks.append(Task(line[: m.start()], gold, options, line[m.end() :]))
    return tasks
