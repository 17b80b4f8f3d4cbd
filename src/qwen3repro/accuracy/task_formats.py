"""llama-perplexity's three task file formats, read and written, each as its perplexity.cpp reads it.

- HellaSwag (`--hellaswag`): text, six lines per task: the context, the right ending's index (0-3),
  four endings. An ending is scored after `context + " "`.
- Winogrande (`--winogrande`): CSV lines `index,sentence,option1,option2,answer`, the sentence with
  one `_` where an option goes (double-quoted when it holds a comma), the answer 1 or 2. The binary
  splits a line at its first four commas outside quotes and takes what follows the fourth as the
  answer. A line it cannot parse (a header, a sentence with no blank, an answer that is not 1 or 2)
  it skips with a message: so do we, with a warning naming the line, and the count goes in the
  result (`skipped_lines`); a file with no task left is an error. It reads the text `-f` gives it,
  less one final newline, line by line and stops at the end of the text, so the file's last line
  is never scored unless an empty line follows it: we read the same tasks (and say so), and write
  files that end with an empty line.
- Multiple choice (`--multiple-choice`, ARC, MMLU, TruthfulQA): binary, little-endian: the task
  count (uint32), each task's byte offset (uint32), then per task the question, then two answer
  sets (mc1: a single right answer; mc2: several, unused by the binary), each a count (uint32), the
  strings and one int32 label each. A string is its byte length (uint32) and its UTF-8 bytes.
  An answer is scored after `question + " "`.

One `Task` holds any of them: `context` and `endings`, the index of the right one, and for
Winogrande the sentence's part after the blank (`after`), which follows the chosen option.
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from qwen3repro.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("hellaswag", "winogrande", "multiple-choice")
HELLASWAG_ENDINGS = 4
MAX_ANSWERS = 100  # the binary refuses a task with more


class TaskList(list):
    """The tasks of a file, and the line numbers of those the binary skips (Winogrande)."""

    skipped_lines: list[int] = []


@dataclass(frozen=True)
class Task:
    context: str
    gold: int
    endings: tuple[str, ...]
    after: str = ""  # Winogrande: the sentence after the blank

    def sequences(self, fmt: str) -> list[str]:
        """The texts the binary tokenizes for this task, one per ending."""
        if fmt == "winogrande":
            return [self.context + choice + self.after for choice in self.endings]
        return [self.context + " " + ending for ending in self.endings]


def read_tasks(path: Path | str, fmt: str) -> list[Task]:
    """Every task of a file in one of llama-perplexity's formats; a bad one is a one-line error
    naming its line (or its task, in the binary format)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise UserError(f"task format {fmt!r}: one of {', '.join(FORMATS)}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: task file does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{path}: a directory, not a task file") from None
    if fmt == "multiple-choice":
        return _read_multiple_choice(data, path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if fmt == "winogrande":
        return _read_winogrande(text, path)
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line (getline does not see it)
        lines.pop()
    if not lines:
        raise UserError(f"{path}: no tasks")
    return _read_hellaswag(lines, path)


def write_tasks(tasks: list[Task], path: Path, fmt: str) -> None:
    """`tasks` in one of llama-perplexity's formats (in the text ones, a field may not hold a newline)."""
    for t in tasks:
        if fmt != "multiple-choice" and any("\n" in f for f in (t.context, t.after, *t.endings)):
            raise ValueError(f"a task's fields must be single lines in the {fmt} format: {t.context[:40]!r}")
    if fmt == "hellaswag":
        path.write_text("".join(_hellaswag_lines(t) for t in tasks), "utf-8")
    elif fmt == "winogrande":
        path.write_text("".join(_winogrande_line(i, t) for i, t in enumerate(tasks)) + "\n", "utf-8")
    elif fmt == "multiple-choice":
        path.write_bytes(_multiple_choice_bytes(tasks))
    else:
        raise ValueError(f"task format {fmt!r}")


# ------------------------------------------------------------------ HellaSwag
def _read_hellaswag(lines: list[str], path: Path) -> list[Task]:
    if len(lines) % 6:
        raise UserError(
            f"{path}: {len(lines)} lines, not a multiple of 6 (HellaSwag's format: a context, the right "
            f"ending's index, then {HELLASWAG_ENDINGS} endings); the last task starts at line {len(lines) // 6 * 6 + 1}"
        )
    tasks = []
    for first in range(0, len(lines), 6):
        label = lines[first + 1].strip()
        if not label.isdigit() or int(label) >= HELLASWAG_ENDINGS:
            raise UserError(f"{path}: line {first + 2}: the right ending's index must be 0 to 3, got {label!r}")
        endings = tuple(lines[first + 2 : first + 6])
        _two_endings(endings, f"{path}: line {first + 3}")
        tasks.append(Task(lines[first], int(label), endings))
    return tasks


def _hellaswag_lines(t: Task) -> str:
    if len(t.endings) != HELLASWAG_ENDINGS or t.after:
        raise ValueError(f"a HellaSwag task has {HELLASWAG_ENDINGS} endings and no blank: {t.context[:40]!r}")
    return "\n".join([t.context, str(t.gold), *t.endings]) + "\n"


def _two_endings(endings, where: str) -> None:
    if len({e for e in endings if e.strip()}) < 2:
        raise UserError(f"{where}: a task needs at least two different endings")


# ------------------------------------------------------------------ Winogrande
def _split_csv(line: str) -> list[int]:
    """The positions of the first four commas outside double quotes, as the binary finds them."""
    commas, quoted = [], False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            commas.append(i)
            if len(commas) == 4:
                break
    return commas


def _leading_int(text: str) -> int | None:
    """What C++'s `stream >> int` reads: optional blanks, a sign and digits, whatever follows them."""
    match = re.match(r"\s*([+-]?\d+)", text)
    return int(match[1]) if match else None


def _read_winogrande(text: str, path: Path) -> list[Task]:
    text = text[:-1] if text.endswith("\n") else text  # as -f reads it
    lines = text.split("\n")
    unread = lines.pop()  # getline meets the end of the text on it, and the binary stops
    if unread:
        log.warning("%s: its last line is not scored, as llama-perplexity --winogrande reads the file", path)
    tasks, skipped = TaskList(), []
    for number, line in enumerate(lines, 1):
        commas = _split_csv(line)
        a, b, c, d = commas if len(commas) == 4 else (0, 0, 0, 0)
        sentence = line[a + 2 : b - 1] if line[a + 1 : a + 2] == '"' else line[a + 1 : b]
        answer = _leading_int(line[d + 1 :])
        # the lines the binary skips, each with a message (a header, a line it cannot parse)
        if len(commas) != 4:
            why = "not index,sentence,option1,option2,answer"
        elif "_" not in sentence:
            why = "the sentence has no _ where an option goes"
        elif answer not in (1, 2):
            why = f"the answer must be 1 or 2, got {line[d + 1 :]!r}"
        else:
            options = (line[b + 1 : c], line[c + 1 : d])
            _two_endings(options, f"{path}: line {number}")
            first, after = sentence.split("_", 1)
            tasks.append(Task(first, answer - 1, options, after))
            continue
        log.warning("%s: line %d skipped, as llama-perplexity --winogrande skips it: %s", path, number, why)
        skipped.append(number)
    if not tasks:
        raise UserError(
            f"{path}: no tasks (llama-perplexity reads none past the last newline but one"
            + (f"; it skips all {len(skipped)} lines before it)" if skipped else ")")
        )
    tasks.skipped_lines = skipped
    return tasks


def _winogrande_line(index: int, t: Task) -> str:
    if len(t.endings) != 2 or any("," in o or '"' in o for o in t.endings):
        raise ValueError(f"a Winogrande task has two options without commas or quotes: {t.endings!r}")
    sentence = t.context + "_" + t.after
    if '"' in sentence:
        raise ValueError(f"the binary's CSV cannot hold a double quote in a sentence: {sentence[:40]!r}")
    if "," in sentence:
        sentence = f'"{sentence}"'
    return f"{index},{sentence},{t.endings[0]},{t.endings[1]},{t.gold + 1}\n"


# ------------------------------------------------------------------ multiple choice (binary)
class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def u32(self, what: str) -> int:
        if self.pos + 4 > len(self.data):
            raise UserError(f"{self.path}: ends inside {what} (byte {self.pos} of {len(self.data)})")
        (value,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos += 4
        return value

    def string(self, what: str) -> str:
        size = self.u32(what)
        if self.pos + size > len(self.data):
            raise UserError(f"{self.path}: {what} claims {size} bytes, past the file's end")
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{self.path}: {what} is not UTF-8") from None

    def answers(self, what: str) -> tuple[list[str], list[int]]:
        n = self.u32(what)
        if n > MAX_ANSWERS:
            raise UserError(f"{self.path}: {what}: {n} answers, more than the binary's {MAX_ANSWERS}")
        answers = [self.string(f"{what}, answer {i + 1}") for i in range(n)]
        if self.pos + 4 * n > len(self.data):
            raise UserError(f"{self.path}: ends inside {what}'s labels")
        labels = list(struct.unpack_from(f"<{n}i", self.data, self.pos))
        self.pos += 4 * n
        return answers, labels


def _read_multiple_choice(data: bytes, path: Path) -> list[Task]:
    r = _Reader(data, path)
    n = r.u32("the task count")
    if n == 0:
        raise UserError(f"{path}: no tasks")
    offsets = [r.u32("the task offsets") for _ in range(n)]
    tasks = []
    for i, offset in enumerate(offsets):
        what = f"task {i + 1}"
        if offset >= len(data):
            raise UserError(f"{path}: {what} starts at byte {offset}, past the file's end ({len(data)} bytes)")
        r.pos = offset
        question = r.string(f"{what}'s question")
        answers, labels = r.answers(f"{what}'s mc1")
        r.answers(f"{what}'s mc2")  # several right answers: the binary reads them and scores mc1 only
        if not question or not answers or any(not a for a in answers):
            raise UserError(f"{path}: {what}: an empty question or answer")
        if sorted(labels) != [0] * (len(labels) - 1) + [1]:
            raise UserError(f"{path}: {what}: mc1 needs exactly one answer labelled 1, got labels {labels}")
        _two_endings(answers, f"{path}: {what}")
        tasks.append(Task(question, labels.index(1), tuple(answers)))
    return tasks


def _multiple_choice_bytes(tasks: list[Task]) -> bytes:
    def string(s: str) -> bytes:
        raw = s.encode("utf-8")
        return struct.pack("<I", len(raw)) + raw

    def answers(items: list[str], labels: list[int]) -> bytes:
        return struct.pack("<I", len(items)) + b"".join(map(string, items)) + struct.pack(f"<{len(labels)}i", *labels)

    bodies = []
    for t in tasks:
        labels = [int(i == t.gold) for i in range(len(t.endings))]
        bodies.append(string(t.context) + answers(list(t.endings), labels) + answers([], []))
    offset = 4 + 4 * len(tasks)
    offsets = []
    for body in bodies:
        offsets.append(offset)
        offset += len(body)
    return struct.pack(f"<I{len(tasks)}I", len(tasks), *offsets) + b"".join(bodies)
