"""One file type's accuracy on every task set and its loss along the F32 file's generations, in each
runtime against the F32 file in the same runtime, in one pass (the figures the pipeline's part jobs
must give: task_parts.py); and the stage's tables."""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

from qwen3repro.accuracy.generated import SPANS, divergence_along, read_generations
from qwen3repro.accuracy.task_formats import read_tasks
from qwen3repro.accuracy.tasks import gguf_tokenize, load_logits, score_tasks
from qwen3repro.fsutil import write_table

log = logging.getLogger(__name__)


def context_size(settings: dict, generations: list[dict] | None) -> int:
    """The task runs' context, widened to the longest generation's prompt and tokens."""
    longest = max((len(g["prompt_tokens"]) + len(g["tokens"]) for g in generations or []), default=0)
    return max(settings["n_ctx"], longest)


def run_tasks(
    gguf: Path | str,
    base_gguf: Path | str,
    sets: dict[str, tuple[str, str]],
    settings: dict,
    generations: Path | str | None = None,
    threads: int = 1,
) -> dict:
    """`sets`: name -> (task file, format). Per runtime: each set's accuracy, flips and answers' KLD
    against the base, and with `generations`, the KL-divergence along them per span."""
    tokenize = gguf_tokenize(gguf)
    tasks = {name: (read_tasks(path, fmt), fmt) for name, (path, fmt) in sets.items()}
    same = Path(gguf).resolve() == Path(base_gguf).resolve()
    along = read_generations(generations) if generations else None
    n_ctx = context_size(settings, along)
    result = {}
    for runtime in settings["runtimes"]:
        logits_of = load_logits(gguf, runtime, n_ctx, threads)
        base = logits_of if same else load_logits(base_gguf, runtime, n_ctx, threads)
        r = {"sets": {}}
        for name, (items, fmt) in tasks.items():
            r["sets"][name] = score_tasks(items, fmt, tokenize, logits_of, base)
            s = r["sets"][name]
            flips, kld = s["flips"], s["answer_kld_mean"]
            log.info("%s, %s: %s; %d flips, answer KLD %.3g", runtime, name, s["line"], flips, kld)
        if along is not None:
            r["generated"] = divergence_along(along, logits_of, base)
        result[runtime] = r
        del logits_of, base
        gc.collect()  # one runtime's models before the next one's
    return result


TASK_COLUMNS = [
    "tasks",
    "chance",
    "correct",
    "accuracy",
    "flips",
    "flip_rate",
    "right_to_wrong",
    "wrong_to_right",
    "wrong_to_wrong",
    "answer_kld_mean",
    "base_accuracy",
]
GENERATED_COLUMNS = ["count", "kld_mean", "kld_mean_error", "kld_p99", "kld_max", "same_top_p", "same_top_p_error"]


def task_rows(results: list[dict]) -> tuple[list[dict], list[dict]]:
    """Rows of the task table (file type, runtime, set) and of the generated-token table (file
    type, runtime, span) from the tasks stage's per-type results."""
    rows, generated = [], []
    for r in results:
        for runtime, per in r["runtimes"].items():
            key = {"model": r["model"], "type": r["type"], "runtime": runtime}
            for name, s in per["sets"].items():
                lo, hi = s["interval"]
                flo, fhi = s["flip_interval"]
                rows.append(
                    key
                    | {"set": name, "format": s["format"]}
                    | {c: s.get(c) for c in TASK_COLUMNS}
                    | {"accuracy_lo": lo, "accuracy_hi": hi, "flip_rate_lo": flo, "flip_rate_hi": fhi}
                )
            for span in SPANS if "generated" in per else ():
                g = per["generated"][span]
                generated.append(key | {"span": span} | {c: g.get(c) for c in GENERATED_COLUMNS})
    return rows, generated


def write_tasks_tables(parts: list[str], out: Path | str, out_generated: Path | str) -> None:
    """One model's task results, a row per file type, runtime and set; and the loss along the
    generations, a row per file type, runtime and span."""
    rows, generated = task_rows([json.loads(Path(p).read_text("utf-8")) for p in parts])
    write_table(rows, out)
    write_table(generated, out_generated)
