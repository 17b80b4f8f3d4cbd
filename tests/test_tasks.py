"""Multiple-choice accuracy exactly as llama-perplexity scores it (--hellaswag, --winogrande,
--multiple-choice), flips against a base file, the offline tasks, and bad task files refused with
one line naming the place."""

import json
import re
import struct
import subprocess

import pytest
from helpers import assert_one_line_error, llama_tool, run_cli
from test_check import corrupt

from qwen3repro.accuracy.task_data import build_blanks, build_tasks
from qwen3repro.accuracy.task_formats import Task, read_tasks, write_tasks
from qwen3repro.accuracy.tasks import score_file, wilson
from qwen3repro.errors import UserError
from qwen3repro.model import shakespeare

N_TASKS = 24
N_BLANKS = 110  # the binary prints Winogrande's final line from 100 tasks on


def varied(tasks: list[Task]) -> list[Task]:
    """Two to four answers a task: the binary format's count is per task."""
    out = []
    for i, t in enumerate(tasks):
        n = 2 + i % 3
        gold = min(t.gold, n - 1)
        endings = list(t.endings[:n])
        endings[gold] = t.endings[t.gold]
        out.append(Task(t.context, gold, tuple(endings)))
    return out


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    _, held_out = shakespeare.split()
    text = shakespeare.joined(held_out)
    folder = tmp_path_factory.mktemp("tasks")
    files = {"hellaswag": folder / "next.txt", "winogrande": folder / "blank.csv", "multiple-choice": folder / "mc.bin"}
    write_tasks(build_tasks(text, N_TASKS), files["hellaswag"], "hellaswag")
    write_tasks(build_blanks(text, N_BLANKS), files["winogrande"], "winogrande")
    write_tasks(varied(build_tasks(text, N_TASKS, seed=1)), files["multiple-choice"], "multiple-choice")
    return files


@pytest.fixture(scope="module")
def task_file(task_files):
    return task_files["hellaswag"]


FINAL_LINE = {
    "hellaswag": r"^\d+\t[\d.]+%\t\[[\d.]+%, [\d.]+%\]$",
    "winogrande": r"Final Winogrande score\(\d+ tasks\): [\d.]+ \+/- [\d.]+$",
    "multiple-choice": r"Final result: [\d.]+ \+/- [\d.]+$",
}
WINOGRANDE_TASK = r"^(\d+)\t[\d.]+\t *-?[\d.]+ +-?[\d.]+ +(\d) +(\d)$"  # task, acc, scores, result, answer


def llama_perplexity(gguf, task_file, fmt) -> str:
    """What llama-perplexity prints scoring every task of the file."""
    counts = {"hellaswag": ["--hellaswag-tasks", str(N_TASKS)]}.get(fmt, [])
    proc = subprocess.run(
        [str(llama_tool("llama-perplexity")), "-m", str(gguf), "-f", str(task_file), f"--{fmt}", *counts,
         "-c", "512", "-t", "2", "-ctk", "f32", "-ctv", "f32", "-fa", "off"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout + proc.stderr


@pytest.mark.peers
@pytest.mark.parametrize("runtime", ["numpy", "llama.cpp"])
@pytest.mark.parametrize("fmt", ["hellaswag", "winogrande", "multiple-choice"])
def test_accuracy_equals_llama_perplexity_on_the_same_file(tiny_f32, task_files, fmt, runtime, tmp_path):
    theirs = llama_perplexity(tiny_f32, task_files[fmt], fmt)
    final = re.findall(FINAL_LINE[fmt], theirs, re.M)
    assert final, theirs[-2000:]
    args = ["tasks", "--model", str(tiny_f32), f"--{fmt}", str(task_files[fmt]), "--threads", "2"]
    ours = tmp_path / "ours.json"
    proc = run_cli(*args, "--json", str(ours), *(["--llama-cpp"] if runtime == "llama.cpp" else []))
    assert proc.returncode == 0, proc.stderr
    # the same count of right answers, printed to the same digits as the binary
    assert proc.stdout.splitlines()[1] == final[-1]
    if fmt == "winogrande":  # and the same option chosen, task by task (the binary keeps the file's order)
        chosen = [int(m[1]) - 1 for m in re.findall(WINOGRANDE_TASK, theirs, re.M)]
        assert chosen == json.loads(ours.read_text())["chosen"]


@pytest.mark.parametrize("runtime", ["numpy", "llama.cpp"])
def test_f32_against_itself_flips_nothing_and_a_perturbed_tensor_flips_answers(tiny_f32, task_file, runtime, tmp_path):
    if runtime == "llama.cpp":
        pytest.importorskip("llama_cpp", reason="the peers extra (llama-cpp-python) is not installed")
    few = tmp_path / "few.txt"  # each item runs both files: eight are enough to see flips
    write_tasks(read_tasks(task_file, "hellaswag")[:8], few, "hellaswag")
    same = score_file(tiny_f32, few, base_gguf=tiny_f32, runtime=runtime)
    assert same["flips"] == 0 and same["answer_kld_mean"] == 0 and same["accuracy"] == same["base_accuracy"]
    bent = corrupt(tiny_f32, tmp_path / "bent.gguf", tensor="output_norm.weight", scale=-1.0)
    changed = score_file(bent, few, base_gguf=tiny_f32, runtime=runtime)
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
    "fmt, text, message",
    [
        ("hellaswag", "a context\n0\nx\ny\nz\n", "5 lines, not a multiple of 6"),
        ("hellaswag", "a context\n4\nw\nx\ny\nz\n", "line 2: the right ending's index must be 0 to 3, got '4'"),
        ("hellaswag", "a context\n0\nsame\nsame\nsame\nsame\n", "line 3: a task needs at least two different endings"),
        ("winogrande", "i,sentence,a,b,answer\n1,no blank,x,y,2\n0,A _ here.,x,y,3\n\n", "it skips all 3 lines"),
        ("winogrande", "0,A _ here.,x,x,1\n\n", "line 1: a task needs at least two different endings"),
        ("multiple-choice", struct.pack("<II", 1, 8) + b"\x03\x00\x00", "ends inside task 1's question"),
        ("multiple-choice", struct.pack("<II", 1, 99), "task 1 starts at byte 99, past the file's end"),
    ],
)
def test_a_bad_task_file_is_a_one_line_error_naming_the_line(tmp_path, fmt, text, message):
    path = tmp_path / "bad"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError, match=re.escape(message)):
        read_tasks(path, fmt)


@pytest.mark.peers
@pytest.mark.parametrize("runtime", ["numpy", "llama.cpp"])
def test_a_winogrande_csv_with_a_header_and_bad_lines_scores_as_the_binary_scores_it(
    tiny_f32, task_files, runtime, tmp_path
):
    """A file pandas wrote (a header line) with a line of too few fields, one with no blank and one with
    an answer of 3 among the tasks: the binary skips those four lines with a message each, and so do we."""
    good = task_files["winogrande"].read_text().split("\n")[:104]  # the binary's final line needs 100
    bad = ["index,sentence,option1,option2,answer", "0,too,few", "0,no blank here,a,b,1", "0,A _ here.,a,b,3"]
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("\n".join([bad[0], *good[:40], bad[1], *good[40:80], bad[2], bad[3], *good[80:]]) + "\n\n")
    theirs = llama_perplexity(tiny_f32, mixed, "winogrande")
    final = re.findall(FINAL_LINE["winogrande"], theirs, re.M)
    assert final and "Final Winogrande score(104 tasks)" in final[-1], theirs[-2000:]
    ours = tmp_path / "ours.json"
    args = ["tasks", "--model", str(tiny_f32), "--winogrande", str(mixed), "--threads", "2", "--json", str(ours)]
    proc = run_cli(*args, *(["--llama-cpp"] if runtime == "llama.cpp" else []))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == final[-1]
    assert proc.stdout.splitlines()[0].endswith("(4 lines skipped, as the binary skips them)")
    assert json.loads(ours.read_text())["skipped_lines"] == [1, 42, 83, 84]
    assert proc.stderr.count("skipped, as llama-perplexity --winogrande skips it") == 4


def test_a_multiple_choice_task_without_exactly_one_right_answer_is_refused(tmp_path):
    path = tmp_path / "mc.bin"
    write_tasks([Task("Q?", 0, ("a", "b"))], path, "multiple-choice")
    data = bytearray(path.read_bytes())
    data[-8:-4] = struct.pack("<i", 1)  # the second label 1 too (the empty mc2 follows: 4 bytes)
    path.write_bytes(bytes(data))
    with pytest.raises(
        UserError, match=re.escape("task 1: mc1 needs exactly one answer labelled 1, got labels [1, 1]")
    ):  # noqa: E501
        read_tasks(path, "multiple-choice")


def test_every_format_reads_back_what_was_written(task_files):
    for fmt, path in task_files.items():
        tasks = read_tasks(path, fmt)
        write_tasks(tasks, path.with_suffix(".again"), fmt)
        assert path.with_suffix(".again").read_bytes() == path.read_bytes()


def test_the_blank_task_puts_the_true_word_back_into_its_line():
    _, held_out = shakespeare.split()
    text = shakespeare.joined(held_out)
    tasks = build_blanks(text, 50)
    assert tasks == build_blanks(text, 50) and {t.gold for t in tasks} == {0, 1}
    for t in tasks:
        assert t.context + t.endings[t.gold] + t.after in text and t.endings[0] != t.endings[1]


def test_make_task_writes_a_file_the_scorer_reads_and_refuses_to_overwrite(tmp_path):
    text = tmp_path / "play.txt"
    _, held_out = shakespeare.split()
    text.write_text(shakespeare.joined(held_out))
    out = tmp_path / "task.txt"
    proc = run_cli("make-task", "--text", str(text), "--tasks", "10", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    tasks = read_tasks(out, "hellaswag")
    assert len(tasks) == 10 and isinstance(tasks[0], Task)
    assert_one_line_error(run_cli("make-task", "--text", str(text), "--out", str(out)), "already exists")
