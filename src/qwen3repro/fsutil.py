"""Writing outputs so that a failure never leaves a half-written file or directory behind."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from qwen3repro.errors import UserError


def check_writable_target(out: Path, force: bool) -> None:
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: output directory does not exist")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; remove it or pass --force to replace it")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove what a killed writer of `out` left beside it (`.<name>.<pid>.*.tmp` of a process that no
    longer runs): SIGKILL, a power cut or the OOM killer skip every cleanup, and a rerun must not
    leave the litter there forever."""
    removed = []
    prefix = f".{out.name}."
    for path in out.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = path.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _temporary_prefix(out: Path) -> str:
    return f".{out.name}.{os.getpid()}."


@contextmanager
def staged_file(out: Path | str, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `out` to write; it is renamed over `out` only if the block succeeds."""
    out = Path(out)
    check_writable_target(out, force)
    remove_stale_temporaries(out)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(out), suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(out: Path, text: str, force: bool = False) -> None:
    """Write `text` to a temporary file beside `out`, then rename it over `out`."""
    with staged_file(out, force) as tmp:
        tmp.write_text(text, "utf-8")


@contextmanager
def staged_dir(out: Path | str, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside `out`; it becomes `out` only if the block succeeds."""
    out = Path(out)
    check_writable_target(out, force)
    remove_stale_temporaries(out)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(out), suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        _default_permissions(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():  # --force: swap, so that `out` is never missing a moment before it is whole
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        os.rename(tmp, out)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
    else:
        os.rename(tmp, out)


def _default_permissions(root: Path) -> None:
    """mkdtemp (and some writers) create owner-only entries; give the result the umask's modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for path in root.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(out: Path | str, data, force: bool = True) -> None:
    import json

    write_text_atomic(Path(out), json.dumps(data, indent=2, ensure_ascii=False) + "\n", force=force)


def write_csv_atomic(out: Path | str, frame, force: bool = True) -> None:
    """A pandas DataFrame as CSV, without its index."""
    write_text_atomic(Path(out), frame.to_csv(index=False), force=force)


def write_table(rows: list[dict], out: Path | str) -> str:
    """Rows as a CSV table at `out`; returns the table as text for logs and terminals."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    write_csv_atomic(out, frame)
    return frame.to_string(index=False)
