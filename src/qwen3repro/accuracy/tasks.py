"""Multiple-choice accuracy as llama-perplexity --hellaswag scores it, and flips against a base file.

llama-perplexity's HellaSwag format is six lines per task: the context, the index of the right
ending, four endings. Each ending is scored as llama-perplexity does (tools/perplexity/perplexity.cpp,
hellaswag_score): `context + " " + ending` is tokenized as a whole (no BOS for Qwen3), the tokens the
four sequences share are the common prefix, and an ending's score is the mean log-probability of its
tokens after that prefix; the chosen ending is the first of the highest score. Its accuracy comes with
the Wilson 95% interval it prints. It scores a random order of the tasks; over all of a file's tasks
the count of right answers does not depend on the order, so every task of the file is scored here.

Against a base file (F32) on the same items, a flip is an item whose chosen ending changed: "Accuracy
is not all you need" (Dutta et al., 2024) shows flips track a quantized model's quality where
accuracy hides them (a right answer lost and a wrong one gained cancel).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from qwen3repro.errors import UserError

log = logging.getLogger(__name__)

Z95 = 1.95996398454  # the normal quantile llama-perplexity uses
ENDINGS = 4

# token ids -> logits (float32, one row per position) from position `first` on
LogitsOf = Callable[[list[int], int], np.ndarray]


@dataclass(frozen=True)
class Task:
    context: str
    gold: int
    endings: tuple[str, ...]


def read_hellaswag(path: Path | str) -> list[Task]:
    """Tasks from a file in llama-perplexity's HellaSwag format; a bad line is named in a one-line error."""
    path = Path(path)
    try:
        lines = path.read_text("utf-8").split("\n")
    except FileNotFoundError:
        raise UserError(f"{path}: task file does not exist") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if lines and lines[-1] == "":  # the newline that ends the last line (getline does not see it)
        lines.pop()
    if not lines:
        raise UserError(f"{path}: no tasks")
    if len(lines) % 6:
        raise UserError(
            f"{path}: {len(lines)} lines, not a multiple of 6 (HellaSwag's format: a context, the right "
            f"ending's index, then {ENDINGS} endings); the last task starts at line {len(lines) // 6 * 6 + 1}"
        )
    tasks = []
    for first in range(0, len(lines), 6):
        label = lines[first + 1].strip()
        if not label.isdigit() or int(label) >= ENDINGS:
            raise UserError(f"{path}: line {first + 2}: the right ending's index must be 0 to 3, got {label!r}")
        endings = tuple(lines[first + 2 : first + 6])
        if len({e for e in endings if e.strip()}) < 2:
            raise UserError(f"{path}: line {first + 3}: a task needs at least two different endings")
        tasks.append(Task(lines[first], int(label), endings))
    return tasks


def write_hellaswag(tasks: list[Task], path: Path) -> None:
    """`tasks` in llama-perplexity's HellaSwag format (one line each field: no newline inside one)."""
    out = []
    for t in tasks:
        fields = [t.context, str(t.gold), *t.endings]
        if any("\n" in f for f in fields) or len(t.endings) != ENDINGS:
            raise ValueError(f"a task's fields must be single lines and its endings {ENDINGS}: {t.context[:40]!r}")
        out += fields
    path.write_text("\n".join(out) + "\n", "utf-8")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p per row, summed in float64 after subtracting the row's maximum, as llama-perplexity does."""
    logits = np.asarray(logits, dtype=np.float32)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted.astype(np.float64) - np.log(np.exp(shifted).astype(np.float64).sum(axis=-1, keepdims=True))


def ending_scores(task: Task, tokenize: Callable[[str], list[int]], logits_of: LogitsOf) -> dict:
    """Each ending's mean log-probability after the common prefix, and the ending chosen."""
    sequences = [tokenize(task.context + " " + ending) for ending in task.endings]
    prefix = 0
    while all(len(s) > prefix for s in sequences) and len({s[prefix] for s in sequences}) == 1:
        prefix += 1
    if prefix == 0:
        raise UserError(f"task {task.context[:40]!r}: its endings share no token with the context")
    scores, answer_logprobs = [], []
    for seq in sequences:
        # positions prefix-1 .. len-2 predict the ending's tokens prefix .. len-1
        logp = log_softmax(logits_of(seq, prefix - 1)[: len(seq) - prefix])
        picked = logp[np.arange(len(seq) - prefix), seq[prefix:]]
        scores.append(float(picked.mean()) if len(picked) else -math.inf)
        answer_logprobs.append(logp)
    chosen = int(np.argmax(scores))  # the first of the highest, as llama-perplexity's strict >
    return {"scores": scores, "chosen": chosen, "correct": chosen == task.gold, "logprobs": answer_logprobs}


def wilson(correct: int, n: int) -> tuple[float, float]:
    """The Wilson score interval llama-perplexity prints beside the accuracy (95%)."""
    if n == 0:
        return math.nan, math.nan
    freq = correct / n
    z = Z95 * Z95 / n
    spread = z * math.sqrt(n * (4.0 * freq * (1 - freq) + z)) / (Z95 + Z95)
    return (freq + z * 0.5 - spread) / (1.0 + z), (freq + z * 0.5 + spread) / (1.0 + z)


def accuracy(items: list[dict]) -> dict:
    correct = sum(i["correct"] for i in items)
    lo, hi = wilson(correct, len(items))
    return {"tasks": len(items), "correct": correct, "accuracy": correct / len(items), "interval": [lo, hi]}


def answer_kld(base: dict, other: dict) -> float:
    """Mean KL(base || other) over every scored position of every ending of one item."""
    values = []
    for p, q in zip(base["logprobs"], other["logprobs"]):
        values.append((np.exp(p) * (p - q)).sum(axis=-1))
    return float(np.concatenate(values).mean()) if values else math.nan


def flips(base: list[dict], items: list[dict]) -> dict:
    """Items whose chosen ending differs from the base file's, with the rate's Wilson interval and
    which way they went: right to wrong, wrong to right, or one wrong ending to another."""
    changed = [(b, i) for b, i in zip(base, items) if b["chosen"] != i["chosen"]]
    lo, hi = wilson(len(changed), len(items))
    return {
        "flips": len(changed),
        "flip_rate": len(changed) / len(items),
        "flip_interval": [lo, hi],
        "right_to_wrong": sum(b["correct"] and not i["correct"] for b, i in changed),
        "wrong_to_right": sum(i["correct"] and not b["correct"] for b, i in changed),
        "wrong_to_wrong": sum(not b["correct"] and not i["correct"] for b, i in changed),
    }


def score_tasks(tasks: list[Task], tokenize, logits_of: LogitsOf, base_logits_of: LogitsOf | None = None) -> dict:
    """Accuracy over every task and, with a base, flips and the mean KLD over the answers' tokens."""
    items, base_items, klds = [], [], []
    for task in tasks:
        item = ending_scores(task, tokenize, logits_of)
        if base_logits_of is not None:
            base_item = ending_scores(task, tokenize, base_logits_of)
            klds.append(answer_kld(base_item, item))
            base_items.append({k: v for k, v in base_item.items() if k != "logprobs"})
        items.append({k: v for k, v in item.items() if k != "logprobs"})
    result = {**accuracy(items), "chosen": [i["chosen"] for i in items]}
    if base_logits_of is not None:
        result |= flips(base_items, items)
        result["answer_kld_mean"] = float(np.mean(klds))
        result["base_accuracy"] = accuracy(base_items)["accuracy"]
    return result


def engine_logits(model) -> LogitsOf:
    return lambda tokens, first: model.forward(np.asarray(tokens), start=0, logits_from=first)


def llama_cpp_logits(llm) -> LogitsOf:
    """llama.cpp's logits (a llama_cpp.Llama made with logits_all=True) for a whole sequence."""

    def logits_of(tokens: list[int], first: int) -> np.ndarray:
        llm.reset()
        llm.eval(list(tokens))
        return np.array(llm.scores[first : len(tokens)], dtype=np.float32)

    return logits_of


def hellaswag(
    gguf: Path | str,
    task_file: Path | str,
    base_gguf: Path | str | None = None,
    runtime: str = "numpy",
    n_ctx: int = 512,
    threads: int = 1,
) -> dict:
    """The file's accuracy on every task of `task_file`, by the NumPy engine or by llama.cpp, and
    with `base_gguf`, the flips and answer KLD against it on the same runtime."""
    from qwen3repro.engine.qwen3 import Qwen3
    from qwen3repro.engine.tokenizer import Tokenizer

    tasks = read_hellaswag(task_file)
    model = Qwen3(gguf, n_ctx=n_ctx)
    tokenizer = Tokenizer.from_gguf(model.file)
    tokenize = lambda text: tokenizer.encode(text, parse_special=False)  # noqa: E731
    if runtime == "numpy":
        base = Qwen3(base_gguf, n_ctx=n_ctx) if base_gguf else None
        return score_tasks(tasks, tokenize, engine_logits(model), base and engine_logits(base))
    if runtime != "llama.cpp":
        raise UserError(f"runtime {runtime!r}: numpy or llama.cpp")
    from qwen3repro.accuracy.perplexity import llama_cpp_model

    del model
    llm = llama_cpp_model(gguf, n_ctx, threads)
    base = llama_cpp_model(base_gguf, n_ctx, threads) if base_gguf else None
    return score_tasks(tasks, tokenize, llama_cpp_logits(llm), base and llama_cpp_logits(base))
