"""The offline multiple-choice task: which line comes next in a play the model never trained on.

Built deterministically from the held-out works (the perplexity corpus): a few lines of a speech as
the context, the true next line, and three distractor lines of similar length drawn from far away in
the same text, in a seeded order, written in llama-perplexity's HellaSwag format so that
`llama-perplexity --hellaswag` scores the very same file. Chance is 25%.
"""

from __future__ import annotations

import re

import numpy as np

from qwen3repro.accuracy.tasks import ENDINGS, Task

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
