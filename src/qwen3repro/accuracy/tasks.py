"""Multiple-choice accuracy as llama-perplexity scores it (--hellaswag, --winogrande,
--multiple-choice), and flips against a base file.

Every ending's text is tokenized whole (no BOS for Qwen3), the tokens an item's sequences share are
its common prefix, and the scores are mean log-probabilities, as tools/perplexity/perplexity.cpp
computes them:
- HellaSwag and multiple choice (hellaswag_score, multiple_choice_score): `context + " " + ending`;
  an ending's score is the mean log-probability of its tokens after the common prefix; the chosen
  ending is the first of the highest score. HellaSwag's accuracy comes with the Wilson 95% interval
  the binary prints, multiple choice's with sqrt(p(1-p)/(n-1)).
- Winogrande (winogrande_score): `first + option + second`. Where both sequences have more than
  three tokens after the common prefix, only the tokens after the option are scored (the partial
  score: n_base, the tokens of `first + option`, then on); the last token is left out where more
  than one is scored; option 1 wins only when strictly higher. Where the option is scored too, the
  binary takes the second sequence's first log-probability from the first sequence's last position
  (its own FIXME); so do we, or the counts would differ.
The binary draws a random order when told to score fewer tasks than the file has; over all of a
file's tasks the count of right answers does not depend on the order, so every task is scored here.
Log-probabilities are summed in float64 where the binary sums in float32: an item whose two best
scores tie to float32's precision could go the other way (none has, in the tests' files).

Against a base file (F32) on the same items, a flip is an item whose chosen ending changed: "Accuracy
is not all you need" (Dutta et al., 2024) shows flips track a quantized model's quality where
accuracy hides them (a right answer lost and a wrong one gained cancel).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np

from qwen3repro.accuracy.perplexity import RUNTIMES, engine_logits
from qwen3repro.accuracy.task_formats import Task, read_tasks
from qwen3repro.errors import UserError

log = logging.getLogger(__name__)

Z95 = 1.95996398454  # the normal quantile llama-perplexity uses
WINOGRANDE_MIN_TRAILING = 3  # k_min_trailing_ctx

# token ids -> logits (float32, one row per position) from position `first` on
LogitsOf = Callable[[list[int], int], np.ndarray]


def log_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log p per row in float32, as the binary's compute_logprobs has them (the row's maximum
    subtracted; the exponentials summed in float64 here, in float32 there), and each row's
    log-sum-exp in float64 (what was subtracted, for an exact KL divergence)."""
    logits = np.asarray(logits, dtype=np.float32)
    top = logits.max(axis=-1, keepdims=True)
    shifted = logits - top
    lse = np.log(np.exp(shifted).sum(axis=-1, dtype=np.float64, keepdims=True))
    return shifted - lse.astype(np.float32), top + lse


def common_prefix(sequences: list[list[int]]) -> int:
    n = 0
    while all(len(s) > n for s in sequences) and len({s[n] for s in sequences}) == 1:
        n += 1
    return n


def item_scores(task: Task, fmt: str, tokenize: Callable[[str], list[int]], logits_of: LogitsOf) -> dict:
    """Each ending's score, the ending chosen, and at the positions after the common prefix the
    logits and their log-sum-exps (for the answers' KLD)."""
    sequences = [tokenize(text) for text in task.sequences(fmt)]
    prefix = common_prefix(sequences)
    if prefix == 0:
        raise UserError(f"task {task.context[:40]!r}: its endings share no token with the context")
    # rows: positions prefix-1 .. len-1 of each sequence; row k predicts token prefix+k
    logits = [np.asarray(logits_of(seq, prefix - 1), dtype=np.float32) for seq in sequences]
    logps, lses = zip(*map(log_softmax, logits))
    if fmt == "winogrande":
        scores = winogrande_scores(task, sequences, prefix, logps, tokenize)
        chosen = 0 if scores[0] > scores[1] else 1
    else:
        scores = []
        for seq, logp in zip(sequences, logps):
            picked = logp[np.arange(len(seq) - prefix), seq[prefix:]].astype(np.float64)
            scores.append(float(picked.mean()) if len(picked) else -math.inf)
        chosen = int(np.argmax(scores))  # the first of the highest, as the binary's strict >
    # the positions after the prefix: their logits and log-sum-exps, for the answers' KLD
    rows = [(z[: len(seq) - prefix], lse[: len(seq) - prefix]) for seq, z, lse in zip(sequences, logits, lses)]
    return {"scores": scores, "chosen": chosen, "correct": chosen == task.gold, "rows": rows}


def winogrande_scores(task: Task, sequences, prefix: int, logps, tokenize) -> list[float]:
    """The two options' partial scores, read from the rows where winogrande_score's batch has them:
    the prefix's last position, then the first sequence's positions after the prefix, then the
    second's (an offset into that list is what the binary indexes, its FIXME included)."""
    first, second = sequences
    skip_option = all(len(s) - prefix > WINOGRANDE_MIN_TRAILING for s in sequences)

    def row(offset: int) -> np.ndarray:
        if offset <= len(first) - prefix:
            return logps[0][offset]
        return logps[1][offset - (len(first) - prefix)]

    scores = []
    for s, (seq, option) in enumerate(zip(sequences, task.endings)):
        n_base = len(tokenize(task.context + option)) if skip_option else prefix
        last = 1 if len(seq) - n_base > 1 else 0
        offset = n_base - prefix if s == 0 else len(first) - prefix + n_base - prefix
        terms = [float(row(offset + k)[seq[j + 1]]) for k, j in enumerate(range(n_base - 1, len(seq) - 1 - last))]
        count = len(seq) - n_base - last
        scores.append(float(sum(terms)) / count if count > 0 else math.nan)
    return scores


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
    """Mean KL(base || other) over every position after the prefix of every ending of one item. The
    log-ratio is taken as the logits' difference less the log-sum-exps' (float64): two files a few
    ulps apart (F16 against F32) keep a true KLD of 1e-8, which float32 log-probabilities would
    round to either sign."""
    values = []
    for (zb, lb), (zo, lo) in zip(base["rows"], other["rows"]):
        p = np.exp(zb - lb.astype(np.float32))
        values.append((p * (zb - zo)).sum(axis=-1, dtype=np.float64) - (lb - lo)[:, 0])
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


def score_tasks(
    tasks: list[Task], fmt: str, tokenize, logits_of: LogitsOf, base_logits_of: LogitsOf | None = None
) -> dict:
    """Accuracy over every task, the binary's last line and, with a base, flips and the mean KLD over
    the answers' tokens."""
    items, base_items, klds = [], [], []
    same = base_logits_of is logits_of  # the base file itself: nothing to compute twice
    for task in tasks:
        item = item_scores(task, fmt, tokenize, logits_of)
        if base_logits_of is not None:
            base_item = item if same else item_scores(task, fmt, tokenize, base_logits_of)
            klds.append(answer_kld(base_item, item))
            base_items.append({k: v for k, v in base_item.items() if k != "rows"})
        items.append({k: v for k, v in item.items() if k != "rows"})
    chances = [1 / len(t.endings) for t in tasks]
    return set_result(fmt, items, chances, base_items if base_logits_of is not None else None, klds)


def set_result(fmt: str, items: list[dict], chances: list[float], base_items: list[dict] | None, klds) -> dict:
    """A set's figures from its items' choices (`chosen`, `correct`), in the tasks' order; with the
    base's choices, the flips and the answers' mean KLD."""
    result = {"format": fmt, **accuracy(items), "chosen": [i["chosen"] for i in items]}
    result["chance"] = float(np.mean(chances))  # the accuracy of a guess
    result["line"] = result_line(fmt, result["correct"], result["tasks"])
    if base_items is not None:
        result |= flips(base_items, items)
        result["answer_kld_mean"] = float(np.mean(klds))
        result["base_accuracy"] = accuracy(base_items)["accuracy"]
    return result


def result_line(fmt: str, correct: int, n: int) -> str:
    """The result line llama-perplexity prints last for the format, in its own (float32) arithmetic."""
    if fmt == "hellaswag":
        lo, hi = wilson(correct, n)
        return f"{n}\t{correct / n * 100:3.8f}%\t[{lo * 100:3.4f}%, {hi * 100:3.4f}%]"
    p = np.float32(correct) / np.float32(n)
    sigma = np.sqrt(p * (np.float32(1) - p) / np.float32(n - 1)) if n > 1 else np.float32(0)
    if fmt == "winogrande":  # printed from 100 tasks on
        return f"Final Winogrande score({n} tasks): {float(100 * p):.4f} +/- {float(np.float32(100) * sigma):.4f}"
    return f"Final result: {float(np.float32(100) * p):.4f} +/- {float(np.float32(100) * sigma):.4f}"


def llama_cpp_logits(llm) -> LogitsOf:
    """llama.cpp's logits (a llama_cpp.Llama) from position `first` on. As the binary does, the
    tokens up to `first` (an item's common prefix) are evaluated once, with the logits of their last
    position only, and each ending continues from that cache; the next call with the same prefix
    reuses it. (llama-cpp-python's own eval would compute every position's logits, the prefix's
    once per ending: four times the work on a small model, whose cost is its output matrix.)"""
    cached: dict = {"head": None, "row": None}

    def decode(tokens: list[int], n_past: int, all_logits: bool) -> np.ndarray:
        llm._batch.set_batch(batch=tokens, n_past=n_past, logits_all=all_logits)
        llm._ctx.decode(llm._batch)
        rows = len(tokens) if all_logits else 1
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(rows, llm.n_vocab())).copy()

    def logits_of(tokens: list[int], first: int) -> np.ndarray:
        tokens = [int(t) for t in tokens]
        head, rest = tokens[: first + 1], tokens[first + 1 :]
        if head != cached["head"]:
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            cached["head"], cached["row"] = head, decode(head, 0, False)
        else:
            llm._ctx.kv_cache_seq_rm(-1, first + 1, -1)
        return np.concatenate([cached["row"], decode(rest, first + 1, True)]) if rest else cached["row"]

    return logits_of


def load_logits(gguf: Path | str, runtime: str, n_ctx: int, threads: int = 1) -> LogitsOf:
    """One file's logits in one runtime: the NumPy engine's, or llama.cpp's as the perplexity stage
    runs it (F32 KV cache, no flash attention)."""
    if runtime == "numpy":
        from qwen3repro.engine.qwen3 import Qwen3

        return engine_logits(Qwen3(gguf, n_ctx=n_ctx))
    if runtime != "llama.cpp":
        raise UserError(f"runtime {runtime!r}: {' or '.join(RUNTIMES)}")
    from qwen3repro.accuracy.perplexity import llama_cpp_model

    return llama_cpp_logits(llama_cpp_model(gguf, n_ctx, threads))


def gguf_tokenize(gguf: Path | str) -> Callable[[str], list[int]]:
    """The file's tokenizer as the binary's common_tokenize(..., add_special=true) uses it on Qwen3:
    no BOS, special tokens' text left as text."""
    from qwen3repro.engine.tokenizer import Tokenizer
    from qwen3repro.gguf_file import GGUFFile

    tokenizer = Tokenizer.from_gguf(GGUFFile(gguf))
    return lambda text: tokenizer.encode(text, parse_special=False)


def score_file(
    gguf: Path | str,
    task_file: Path | str,
    fmt: str = "hellaswag",
    base_gguf: Path | str | None = None,
    runtime: str = "numpy",
    n_ctx: int = 512,
    threads: int = 1,
) -> dict:
    """The file's accuracy on every task of `task_file` (in llama-perplexity's format `fmt`), by
    the NumPy engine or by llama.cpp, and with `base_gguf`, the flips and answer KLD against it on
    the same runtime."""
    tasks = read_tasks(task_file, fmt)
    tokenize = gguf_tokenize(gguf)
    base = load_logits(base_gguf, runtime, n_ctx, threads) if base_gguf else None
    result = score_tasks(tasks, fmt, tokenize, load_logits(gguf, runtime, n_ctx, threads), base)
    return result | {"skipped_lines": list(getattr(tasks, "skipped_lines", []))}
