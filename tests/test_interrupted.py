"""Interrupted runs: snakemake killed in the middle of a conversion (SIGKILL to the whole process group:
a power cut, the OOM killer) and of a perplexity job (Ctrl-C); the rerun completes with the outputs of
an uninterrupted run and no partial file is left anywhere."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helpers import BIN, REPO, run_snakemake

from qwen3repro.fsutil import sha256_file

pytestmark = pytest.mark.pipeline

TARGET = "results/perplexity/qwen3-tiny/Q4_K_M.json"


def write_config(path: Path) -> Path:
    config = {
        "models": {"qwen3-tiny": {"source": "synthetic", "preset": "qwen3-tiny", "seed": 0, "dtype": "float32"}},
        "convert": {"types": ["F32", "Q4_K_M"]},
        "bench": {"types": ["F32"]},
        "sweep": {"types": ["F32"]},
        "perplexity": {"n_ctx": 128, "chunks": 16},  # 15 chunks after chunk 1: time for the Ctrl-C to land
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start(workdir: Path, config: Path) -> subprocess.Popen:
    """snakemake in a process group of its own, as a terminal runs it: a signal to the group reaches its jobs."""
    return subprocess.Popen(
        [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", TARGET]
        + ["--configfile", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "QWEN3REPRO_QUIET": "1"},
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "snakemake ended before the moment the test interrupts it"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def outputs(workdir: Path) -> dict:
    results = workdir / "results"
    hashes = {p.name: sha256_file(p) for p in sorted((results / "gguf" / "qwen3-tiny").glob("*.gguf"))}
    return {"gguf": hashes, "perplexity": json.loads((workdir / TARGET).read_text())}


def test_a_run_killed_in_a_conversion_and_in_perplexity_completes_as_an_uninterrupted_run(tmp_path):
    work = tmp_path / "interrupted"
    work.mkdir()
    config = write_config(tmp_path / "config.yaml")
    gguf_dir = work / "results" / "gguf" / "qwen3-tiny"

    proc = start(work, config)
    wait_for(lambda: any(gguf_dir.glob(".qwen3-tiny-Q4_K_M.gguf.*.tmp")), proc)
    os.killpg(proc.pid, signal.SIGKILL)  # no cleanup runs: not snakemake's, not ours
    proc.wait()
    assert not (gguf_dir / "qwen3-tiny-Q4_K_M.gguf").exists()
    litter = sorted(p.name for p in gguf_dir.glob(".qwen3-tiny-Q4_K_M.*.tmp"))
    assert litter, "the killed writer's temporary file"
    # Snakemake's lock outlives SIGKILL; it says to run --unlock, and that is all a user has to do
    locked = run_snakemake(work, TARGET, "--configfile", str(config))
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    assert run_snakemake(work, "--unlock", "--configfile", str(config)).returncode == 0

    proc = start(work, config)
    log = work / "results" / "logs" / "perplexity" / "qwen3-tiny-Q4_K_M.log"
    wait_for(lambda: log.is_file() and "chunk 1:" in log.read_text(), proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the middle of the chunks
    assert proc.wait(timeout=120) != 0
    assert not (work / TARGET).exists()

    done = run_snakemake(work, TARGET, "--configfile", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    clean = run_snakemake(tmp_path / "clean", TARGET, "--configfile", str(config))
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert outputs(work) == outputs(tmp_path / "clean")
    assert not [p for p in (work / "results").rglob(".*.tmp")], "a partial file was left"
    assert not list((work / ".snakemake" / "incomplete").rglob("*"))


def test_only_the_temporaries_of_writers_that_no_longer_run_are_removed(tmp_path):
    from qwen3repro.fsutil import staged_file

    writer = subprocess.Popen(["true"])
    writer.wait()  # a writer that has exited (and been reaped): its pid runs nothing
    dead = tmp_path / f".out.gguf.{writer.pid}.x.tmp"
    dead.write_text("partial")
    live = tmp_path / f".out.gguf.{os.getppid()}.y.tmp"  # a running process (pytest's parent) is writing it
    live.write_text("in progress")
    other = tmp_path / ".other.gguf.1.z.tmp"
    other.write_text("another output's")
    with staged_file(tmp_path / "out.gguf") as tmp:
        tmp.write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "out.gguf"])
