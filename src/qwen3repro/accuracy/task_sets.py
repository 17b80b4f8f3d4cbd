"""A task set's file, built once per run in llama-perplexity's format for it: offline from the
held-out works, from a Hub dataset at a pinned commit, or from a local file.

Hub datasets are the parquet files of their repositories, converted as llama.cpp's published task
files were (the prompts are the lm-evaluation-harness ones where llama.cpp took them over):
- hellaswag (Rowan/hellaswag): `activity_label: ctx_a Ctx_b` as the context, the four endings, both
  cleaned of the dataset's bracketed markup; HellaSwag's text format.
- winogrande (allenai/winogrande): the sentence split at its `_`, the two options; Winogrande's CSV.
- arc (allenai/ai2_arc, ARC-Easy or ARC-Challenge) and mmlu (cais/mmlu): "Question: ...\nAnswer:"
  and each choice's text as an answer; the binary multiple-choice format.
A set's `tasks` takes the first rows (all of them when null), as lm-eval's --limit does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from qwen3repro.accuracy.task_formats import Task, read_tasks, write_tasks
from qwen3repro.errors import UserError, first_line
from qwen3repro.fsutil import sha256_file, staged_file, write_text_atomic

FORMAT_OF_BUILD = {"next-line": "hellaswag", "blank": "winogrande"}
FORMAT_OF_DATASET = {
    "hellaswag": "hellaswag",
    "winogrande": "winogrande",
    "arc": "multiple-choice",
    "mmlu": "multiple-choice",
}
EXTENSION = {"hellaswag": "txt", "winogrande": "csv", "multiple-choice": "bin"}


def set_format(spec: dict) -> str:
    """The llama-perplexity format a set's file is written in."""
    if spec["source"] == "shakespeare":
        return FORMAT_OF_BUILD[spec["build"]]
    if spec["source"] == "hub":
        return FORMAT_OF_DATASET[spec["dataset"]]
    return spec["format"]


def set_file(name: str, spec: dict) -> str:
    return f"results/tasks/sets/{name}.{EXTENSION[set_format(spec)]}"


# ------------------------------------------------------------------ Hub datasets
def _preprocess(text: str) -> str:
    """HellaSwag's cleaning (lm-evaluation-harness): WikiHow's " [title]" ends a sentence, other
    bracketed markup goes, double spaces close up."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_task(row: dict) -> Task:
    context = _preprocess(f"{row['activity_label']}: {row['ctx_a']} {str(row['ctx_b']).capitalize()}")
    return Task(context, int(row["label"]), tuple(_preprocess(e) for e in row["endings"]))


def _winogrande_task(row: dict) -> Task:
    first, after = str(row["sentence"]).split("_", 1)
    return Task(first, int(row["answer"]) - 1, (str(row["option1"]), str(row["option2"])), after)


def _arc_task(row: dict) -> Task:
    labels = list(row["choices"]["label"])
    return Task(f"Question: {row['question']}\nAnswer:", labels.index(row["answerKey"]), tuple(row["choices"]["text"]))


def _mmlu_task(row: dict) -> Task:
    return Task(f"Question: {row['question']}\nAnswer:", int(row["answer"]), tuple(row["choices"]))


CONVERTERS = {"hellaswag": _hellaswag_task, "winogrande": _winogrande_task, "arc": _arc_task, "mmlu": _mmlu_task}


def hub_tasks(spec: dict) -> list[Task]:
    """A Hub dataset's rows (its parquet file at the pinned commit) as tasks."""
    import pandas as pd

    from qwen3repro.accuracy.eval_text import hub_dataset_file

    where = f"{spec['repo_id']}/{spec['filename']}@{spec['revision']}"
    path = hub_dataset_file(spec)
    try:
        rows = pd.read_parquet(path).to_dict("records")
    except Exception as e:  # pyarrow's errors for a file that is not parquet
        raise UserError(f"{where}: not a parquet file ({first_line(e)})") from None
    rows = rows if spec.get("tasks") is None else rows[: spec["tasks"]]
    convert = CONVERTERS[spec["dataset"]]
    tasks = []
    for i, row in enumerate(rows):
        try:
            tasks.append(convert(row))
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"{where}: row {i} is not a {spec['dataset']} row ({type(e).__name__}: {e})") from None
    return tasks


# ------------------------------------------------------------------ any set
def build_set(spec: dict, held_out_every: int = 10) -> list[Task]:
    source = spec["source"]
    if source == "shakespeare":
        from qwen3repro.accuracy.task_data import build_blanks, build_tasks
        from qwen3repro.model import shakespeare

        _, held_out = shakespeare.split(held_out_every)
        build = build_blanks if spec["build"] == "blank" else build_tasks
        return build(shakespeare.joined(held_out), spec["tasks"], spec.get("seed", 0))
    if source == "hub":
        return hub_tasks(spec)
    tasks = read_tasks(spec["path"], spec["format"])
    return tasks if spec.get("tasks") is None else tasks[: spec["tasks"]]


def write_set(name: str, spec: dict, out: Path | str, held_out_every: int = 10) -> dict:
    """The set's file in its format, and a manifest beside it (<out>.json: the spec, count, sha256)."""
    out = Path(out)
    fmt = set_format(spec)
    tasks = build_set(spec, held_out_every)
    if len(tasks) < 2:
        raise UserError(f"task set {name}: {len(tasks)} task(s); accuracy needs at least 2")
    with staged_file(out, force=True) as tmp:
        try:
            write_tasks(tasks, tmp, fmt)
        except ValueError as e:
            raise UserError(f"task set {name}: {e}") from None
    manifest = {"name": name, "format": fmt, "spec": spec, "tasks": len(tasks), "sha256": sha256_file(out)}
    write_text_atomic(out.with_suffix(".json"), json.dumps(manifest, indent=2) + "\n", force=True)
    return manifest


def active_sets(settings: dict) -> dict[str, dict]:
    """The task sets a model's tasks settings name, less those set to false."""
    return {name: spec for name, spec in settings["sets"].items() if spec is not False}
