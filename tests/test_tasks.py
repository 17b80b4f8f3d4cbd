"""Multiple-choice accuracy exactly as llama-perplexity --hellaswag scores it, flips against a base file,
the offline next-line task, and bad task files refused with one line naming the place."""

import re
import subprocess

import pytest
from helpers import assert_one_line_error, llama_tool, run_cli
from test_check import corrupt

from qwen3repro.accuracy.task_data import build_tasks
from qwen3repro.accuracy.tasks import Task, hellaswag, read_hellaswag, wilson, write_hellaswag
from qwen3repro.errors import UserError
from qwen3repro.model import shakespeare

N_TASKS = 24


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    _, held_out = shakespeare.split()
    path = tmp_path_factory.mktemp("tasks") / "next-line.txt"
    write_hellaswag(build_tasks(shakespeare.joined(held_out), N_TASKS), path)
    return path


def llama_perplexity_hellaswag(gguf, task_file) -> str:
    """llama-perplexity's last result line: tasks, accuracy in percent, the interval."""
    proc = subprocess.run(
        [str(llama_tool("llama-perplexity")), "-m", str(gguf), "-f", str(task_file), "--hellaswag",
         "--hellaswag-tasks", str(N_TASKS), "-c", "512", "-t", "2", "-ctk", "f32", "-ctv", "f32", "-fa", "off"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = re.findall(r"^\d+\t[\d.]+%\t\[[\d.]+%, [\d.]+%\]$", proc.stdout + proc.stderr, re.M)
    assert lines, (proc.stdout + proc.stderr)[-2000:]
    return lines[-1]


@pytest.mark.peers
@pytest.mark.parametrize("runtime", ["numpy", "llama.cpp"])
def test_accuracy_equals_llama_perplexity_hellaswag_on_the_same_file(tiny_f32, task_file, runtime):
    theirs = llama_perplexity_hellaswag(tiny_f32, task_file)
    args = ["tasks", "--model", str(tiny_f32), "--hellaswag", str(task_file), "--threads", "2"]
    proc = run_cli(*args, *(["--llama-cpp"] if runtime == "llama.cpp" else []))
    assert proc.returncode == 0, proc.stderr
    # the same count of right answers, printed to the same digits as the binary
    assert proc.stdout.splitlines()[1] == theirs


@pytest.mark.parametrize("runtime", ["numpy", "llama.cpp"])
def test_f32_against_itself_flips_nothing_and_a_perturbed_tensor_flips_answers(tiny_f32, task_file, runtime, tmp_path):
    if runtime == "llama.cpp":
        pytest.importorskip("llama_cpp", reason="the peers extra (llama-cpp-python) is not installed")
    few = tmp_path / "few.txt"  # each item runs both files: eight are enough to see flips
    write_hellaswag(read_hellaswag(task_file)[:8], few)
    same = hellaswag(tiny_f32, few, base_gguf=tiny_f32, runtime=runtime)
    assert same["flips"] == 0 and same["answer_kld_mean"] == 0 and same["accuracy"] == same["base_accuracy"]
    bent = corrupt(tiny_f32, tmp_path / "bent.gguf", tensor="output_norm.weight", scale=-1.0)
    changed = hellaswag(bent, few, base_gguf=tiny_f32, runtime=runtime)
    assert changed["flips"] > 0 and changed["answer_kld_mean"] > 0
    assert changed["flips"] == changed["right_to_wrong"] + changed["wrong_to_right"] + changed["wrong_to_wrong"]


def test_the_offline_task_is_the_same_on_every_run_with_the_true_line_among_far_distractors():
    _, held_out = shakespeare.split()
    text = shakespeare.joined(held_out)
    tasks = build_tasks(text, 50)
    assert tasks == build_tasks(text, 50)
    assert {t.gold for t in tasks} == {0, 1, 2, 3}
    for t in tasks:
        assert len(set(t.endings)) == 4 and all("\n" not in e for e in (t.context, *t.endings))


def test_wilson_interval_is_llama_perplexity_s():
    lo, hi = wilson(47, 200)
    assert f"[{lo * 100:3.4f}%, {hi * 100:3.4f}%]" == "[18.1574%, 29.8414%]"


@pytest.mark.parametrize(
    "text, message",
    [
        ("a context\n0\nx\ny\nz\n", "5 lines, not a multiple of 6"),
        ("a context\n4\nw\nx\ny\nz\n", "line 2: the right ending's index must be 0 to 3, got '4'"),
        ("a context\n0\nsame\nsame\nsame\nsame\n", "line 3: a task needs at least two different endings"),
    ],
)
def test_a_bad_task_file_is_a_one_line_error_naming_the_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        read_hellaswag(path)


def test_make_task_writes_a_file_the_scorer_reads_and_refuses_to_overwrite(tmp_path):
    text = tmp_path / "play.txt"
    _, held_out = shakespeare.split()
    text.write_text(shakespeare.joined(held_out))
    out = tmp_path / "task.txt"
    proc = run_cli("make-task", "--text", str(text), "--tasks", "10", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    tasks = read_hellaswag(out)
    assert len(tasks) == 10 and isinstance(tasks[0], Task)
    assert_one_line_error(run_cli("make-task", "--text", str(text), "--out", str(out)), "already exists")
