"""The tasks stage as the pipeline runs it: the F32 file read once per runtime, every file type
compared with it.

As the perplexity stage's parts (perplexity_parts): each task set's items and the F32 file's
generations are split into `parts` contiguous ranges, one job per runtime and range. A job scores a
group of items (and generations) on F32, keeps their rows of logits, then scores every file type on
the same items against them: per item the ending chosen, whether it is right and the answer's KLD;
per generated token what `Divergence` reads. The gather puts the items back in the set's order and
computes exactly what `task_run.run_tasks` computes in one job.
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path

import numpy as np

from qwen3repro.accuracy.divergence import BaseDistribution, Divergence, Positions
from qwen3repro.accuracy.generated import SPANS, read_generations
from qwen3repro.accuracy.perplexity_parts import KEPT, part_range
from qwen3repro.accuracy.task_formats import read_tasks
from qwen3repro.accuracy.task_run import context_size
from qwen3repro.accuracy.tasks import answer_kld, gguf_tokenize, item_scores, load_logits, set_result
from qwen3repro.errors import UserError
from qwen3repro.fsutil import write_json_atomic

log = logging.getLogger(__name__)

# Items (or generations) whose F32 rows of logits are held at once, each file type loaded once per
# group: an item's rows are its endings' tokens after the common prefix, 0.6 MB each at Qwen3's vocabulary.
GROUP = 20


def held_rows(set_files: list[Path | str], parts: int) -> int:
    """The most F32 rows of logits a part job holds for one group of a set's items: each item's
    endings after their common prefix, counted at a token for every 3 characters (Qwen3's tokenizer
    averages about 4); the cost model's measure of this stage."""
    from qwen3repro.accuracy.perplexity_parts import largest_part
    from qwen3repro.accuracy.task_sets import EXTENSION

    format_of = {ext: fmt for fmt, ext in EXTENSION.items()}
    most = 0
    for path in set_files:
        fmt = format_of[Path(path).suffix[1:]]
        tasks = read_tasks(path, fmt)
        per_item = []
        for task in tasks:
            texts = task.sequences(fmt)
            shared = len(os.path.commonprefix(texts))
            per_item.append(sum(len(t) - shared for t in texts) // 3 + len(texts))
        group = sorted(per_item, reverse=True)[: min(GROUP, largest_part(len(tasks), parts))]
        most = max(most, sum(group))
    return most


def _groups(indices: range) -> list[range]:
    return [indices[i : i + GROUP] for i in range(0, len(indices), GROUP)]


def run_task_part(
    ggufs: dict[str, Path | str],
    base_gguf: Path | str,
    sets: dict[str, tuple[str, str]],
    settings: dict,
    runtime: str,
    part: int,
    parts: int,
    generations: Path | str | None = None,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """This part's items of every set and its generations, scored by F32 and every file type
    (`ggufs`: type -> file) in `runtime`; arrays named "<set>/..." (the base's) and "<type>/<set>/...",
    "<type>/generated/<g>/<what>"."""
    tokenize = gguf_tokenize(base_gguf)
    along = read_generations(generations) if generations else []
    n_ctx = context_size(settings, along)
    out: dict[str, np.ndarray] = {}
    for name, (path, fmt) in sets.items():
        tasks = read_tasks(path, fmt)
        mine = part_range(len(tasks), part, parts)
        out[f"{name}/chance"] = np.array([1 / len(tasks[i].endings) for i in mine])
        _keep(out, name, [], None)  # a part with no item of this set still holds its (empty) columns
        for file_type in ggufs:
            _keep(out, f"{file_type}/{name}", [], [])
        for group in _groups(mine):
            base_of = load_logits(base_gguf, runtime, n_ctx, threads)
            base_items = [item_scores(tasks[i], fmt, tokenize, base_of) for i in group]
            del base_of
            _keep(out, name, base_items, None)
            for file_type, gguf in ggufs.items():
                same = Path(gguf).resolve() == Path(base_gguf).resolve()
                logits_of = None if same else load_logits(gguf, runtime, n_ctx, threads)
                items = base_items if same else [item_scores(tasks[i], fmt, tokenize, logits_of) for i in group]
                _keep(out, f"{file_type}/{name}", items, [answer_kld(b, i) for b, i in zip(base_items, items)])
                del logits_of, items
                gc.collect()
            log.info("%s, %s: items %d-%d scored", runtime, name, group[0] + 1, group[-1] + 1)
    for group in _groups(part_range(len(along), part, parts)):
        _generated(out, ggufs, base_gguf, [(g, along[g]) for g in group], runtime, n_ctx, threads)
    return out


def _keep(out: dict, prefix: str, items: list[dict], klds: list[float] | None) -> None:
    """Append a group's choices to the part's arrays."""
    new = {"chosen": [i["chosen"] for i in items], "correct": [i["correct"] for i in items]}
    if klds is not None:
        new["kld"] = klds
    for key, values in new.items():
        old = out.get(f"{prefix}/{key}")
        out[f"{prefix}/{key}"] = np.array(values) if old is None else np.concatenate([old, np.array(values)])


def _generated(out: dict, ggufs: dict, base_gguf, generations: list[tuple[int, dict]], runtime, n_ctx, threads):
    """As generated.divergence_along, per generation: the positions every file type reads."""
    wanted = [(g, gen) for g, gen in generations if gen["tokens"]]
    windows = []
    for g, gen in wanted:
        tokens = np.array(gen["prompt_tokens"] + gen["tokens"], dtype=np.int64)
        windows.append((g, tokens, len(gen["prompt_tokens"]) - 1, len(gen["tokens"])))
    base_of = load_logits(base_gguf, runtime, n_ctx, threads)
    base = {g: BaseDistribution(base_of(tokens, first)[:n]) for g, tokens, first, n in windows}
    del base_of
    for file_type, gguf in ggufs.items():
        same = Path(gguf).resolve() == Path(base_gguf).resolve()
        logits_of = None if same else load_logits(gguf, runtime, n_ctx, threads)
        for g, tokens, first, n in windows:
            logits = base[g].logits if same else logits_of(tokens, first)[:n]
            positions = base[g].compare(logits, tokens[first + 1 :], dlogits=False)
            out |= {f"{file_type}/generated/{g}/{k}": getattr(positions, k) for k in KEPT}
        del logits_of
        gc.collect()


def gather_tasks(
    parts: dict[str, list[Path | str]],
    sets: dict[str, tuple[str, str]],
    out: Path | str,
    model: str,
    file_type: str,
    gguf: Path | str,
    base_gguf: Path | str,
    generations: Path | str | None = None,
) -> dict:
    """One file type's task results from the parts (`parts`: runtime -> its part files in order), in
    the form of `task_run.run_tasks`' result, with the file's names."""
    along = read_generations(generations) if generations else None
    result = {"model": model, "type": file_type, "gguf": str(gguf), "base": str(base_gguf), "runtimes": {}}
    for runtime, files in parts.items():
        loaded = [np.load(f) for f in files]
        try:
            r = {"sets": {name: _set(loaded, name, fmt, file_type) for name, (_, fmt) in sets.items()}}
            for name, s in r["sets"].items():
                flips, kld = s["flips"], s["answer_kld_mean"]
                log.info("%s, %s: %s; %d flips, answer KLD %.3g", runtime, name, s["line"], flips, kld)
            if along is not None:
                r["generated"] = _along(loaded, along, file_type)
        finally:
            for part in loaded:
                part.close()
        result["runtimes"][runtime] = r
    write_json_atomic(out, result, force=True)
    return result


def _set(parts: list, name: str, fmt: str, file_type: str) -> dict:
    def column(key: str) -> np.ndarray:
        if any(key not in p.files for p in parts):
            raise UserError(f"the task parts hold no {key!r}: made for other sets or file types")
        return np.concatenate([p[key] for p in parts])

    def choices(prefix: str) -> list[dict]:
        chosen, correct = column(f"{prefix}/chosen"), column(f"{prefix}/correct")
        return [{"chosen": int(c), "correct": bool(x)} for c, x in zip(chosen, correct)]

    items, base = choices(f"{file_type}/{name}"), choices(name)
    klds = [float(k) for k in column(f"{file_type}/{name}/kld")]
    return set_result(fmt, items, [float(c) for c in column(f"{name}/chance")], base, klds)


def _along(parts: list, generations: list[dict], file_type: str) -> dict:
    """generated.divergence_along's result from the kept positions, generation by generation."""
    from qwen3repro.accuracy.generated import _select

    by_span = {span: Divergence() for span in SPANS}
    for g, gen in enumerate(generations):
        if not gen["tokens"]:
            continue
        key = f"{file_type}/generated/{g}"
        part = next((p for p in parts if f"{key}/kld" in p.files), None)
        if part is None:
            raise UserError(f"the task parts hold no positions of generation {g} for {file_type}")
        kept = {k: part[f"{key}/{k}"] for k in KEPT}
        unkept = np.zeros(len(kept["kld"]))  # |Δlogit|: not in the statistics
        positions = Positions(max_abs_dlogit=unkept, sum_abs_dlogit=unkept, **kept)
        kinds = np.array(gen["spans"])
        for span in SPANS:
            where = kinds == span
            if where.any():
                by_span[span].add(_select(positions, where))
    result = {span: d.summary() if d.count >= 2 else {"count": d.count} for span, d in by_span.items()}
    result["unclosed_thinking"] = sum(g["thinking"] and "answer" not in g["spans"] for g in generations)
    result["generations"] = len(generations)
    return result
