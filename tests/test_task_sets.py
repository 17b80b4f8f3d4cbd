"""The five Hub task sets of the real-model configs, for real, offline: their repositories, commits and
files as config/layers/tasks-hub.yaml pins them, served with fixture rows of each dataset's schema by
the local Hub (tests/hub_server.py), built into llama-perplexity's formats and scored."""

import json

import pandas as pd
import pytest
from helpers import REPO, assert_one_line_error, run_cli
from hub_server import HubServer, Repo, parquet_of

from qwen3repro.accuracy.task_formats import read_tasks
from qwen3repro.config import load_config

# a few rows of each dataset, in its own columns and types
HELLASWAG = pd.DataFrame(
    {
        "activity_label": ["Removing ice from car", "Baking cookies"],
        "ctx_a": ["Then, the man writes over the snow covering the window of a car.", "A woman mixes flour."],
        "ctx_b": ["a woman wearing winter clothes", "then she"],
        "endings": [
            ["stands behind him.", "sits down [title] Step two.", "runs away.", "laughs."],
            ["bakes.", "eats it.", "pours milk.", "sings."],
        ],
        "label": ["3", "0"],
    }
)
WINOGRANDE = pd.DataFrame(
    {
        "sentence": [
            "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
            "The cup fit in the box because _ was small.",
        ],
        "option1": ["Sarah", "the cup"],
        "option2": ["Maria", "the box"],
        "answer": ["2", "1"],
    }
)
ARC = pd.DataFrame(
    {
        "id": ["a", "b"],
        "question": ["Which is a liquid?", "What gives plants energy?"],
        "choices": [
            {"text": ["ice", "water", "stone"], "label": ["A", "B", "C"]},
            {"text": ["sun", "rock", "sand", "glass"], "label": ["1", "2", "3", "4"]},
        ],
        "answerKey": ["B", "1"],
    }
)
MMLU = pd.DataFrame(
    {
        "question": ["2 + 2 = ?", "The capital of France?"],
        "subject": ["elementary_mathematics", "geography"],
        "choices": [["3", "4", "5", "6"], ["Rome", "Paris", "Berlin", "Madrid"]],
        "answer": [1, 1],
    }
)
ROWS = {"hellaswag": HELLASWAG, "winogrande": WINOGRANDE, "arc": ARC, "mmlu": MMLU}
CONFIG = REPO / "config" / "qwen3-0.6b.yaml"


@pytest.fixture(scope="module")
def hub():
    """Every Hub set of the config, at its repository, commit and file name."""
    files: dict[tuple[str, str], dict] = {}
    commits = {}
    for spec in load_config(CONFIG)["tasks"]["sets"].values():
        files.setdefault(spec["repo_id"], {})[spec["filename"]] = parquet_of(ROWS[spec["dataset"]])
        commits[spec["repo_id"]] = spec["revision"]
    repos = []
    for repo_id, contents in files.items():
        repo = Repo(repo_id, contents, kind="dataset")
        repo.commit = commits[repo_id]  # the pinned commit, as the real Hub would answer it
        repos.append(repo)
    with HubServer(repos) as server:
        yield server


def env(hub, tmp_path) -> dict:
    return {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@pytest.mark.parametrize("name", ["hellaswag", "winogrande", "arc-easy", "arc-challenge", "mmlu"])
def test_each_hub_set_is_built_from_its_pinned_dataset_and_scored(hub, tmp_path, tiny_f32, name):
    spec = load_config(CONFIG)["tasks"]["sets"][name]
    out = tmp_path / f"{name}.task"
    proc = run_cli("task-set", "--config", str(CONFIG), "--set", name, "--out", str(out), env=env(hub, tmp_path))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(out.with_suffix(".json").read_text())
    tasks = read_tasks(out, manifest["format"])
    assert manifest["spec"]["revision"] == spec["revision"] and len(tasks) == 2
    gold = [t.endings[t.gold] for t in tasks]
    assert (
        gold
        == {
            "hellaswag": ["laughs.", "bakes."],
            "winogrande": ["Maria", "the cup"],
            "arc": ["water", "sun"],
            "mmlu": ["4", "Paris"],
        }[spec["dataset"]]
    )
    if spec["dataset"] == "hellaswag":  # the dataset's markup cleaned as lm-evaluation-harness does
        assert (
            tasks[0].context.startswith("Removing ice from car: Then, the man")
            and "A woman wearing" in tasks[0].context
        )
        assert tasks[0].endings[1] == "sits down. Step two."
    proc = run_cli("tasks", "--model", str(tiny_f32), f"--{manifest['format']}", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("numpy: ") and "/2 right" in proc.stdout


def test_a_dataset_commit_the_hub_does_not_have_is_a_one_line_error(hub, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"layers: [{CONFIG}]\ntasks:\n  sets:\n    mmlu: {{revision: '{'0' * 40}'}}\n"
        "    hellaswag: false\n    winogrande: false\n    arc-easy: false\n    arc-challenge: false\n"
    )
    proc = run_cli(
        "task-set", "--config", str(config), "--set", "mmlu", "--out", str(tmp_path / "m.bin"), env=env(hub, tmp_path)
    )
    assert_one_line_error(proc, f"cannot download cais/mmlu/all/test-00000-of-00001.parquet@{'0' * 40}")
    assert not (tmp_path / "m.bin").exists()
