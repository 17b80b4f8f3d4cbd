"""The Snakemake workflow: lint-clean, a DAG that dry-runs, and a real offline run of the default config."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import BIN, quick_training_config


def snakemake(repo: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "snakemake"), "-s", str(repo / "Snakefile"), "-d", str(workdir), "--cores", "2", *args],
        capture_output=True, text=True, timeout=900,
    )


def test_lint_is_clean(repo):
    proc = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


@pytest.mark.parametrize("config", ["config.yaml", "qwen3-tiny.yaml", "qwen3-0.6b.yaml", "qwen3-0.6b-shape.yaml"])
def test_dry_run_lists_the_dag(repo, tmp_path, config):
    proc = snakemake(repo, tmp_path, "-n", "--configfile", str(repo / "config" / config))
    assert proc.returncode == 0, proc.stderr
    model = {"config.yaml": "qwen3-shakespeare"}.get(config, config.removesuffix(".yaml"))
    assert f"results/models/{model}" in proc.stdout
    assert "get_model" in proc.stdout
    # --configfile replaces the default config instead of being merged into it
    assert config == "config.yaml" or "qwen3-shakespeare" not in proc.stdout


def test_bad_config_stops_snakemake_with_one_line(repo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m:\n    source: synthetik\n    preset: qwen3-tiny\n")
    proc = snakemake(repo, tmp_path, "-n", "--configfile", str(bad))
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert lines == ["qwen3repro: error: config: models.m.source: 'synthetik' is not one of "
                     "['hub', 'local', 'synthetic', 'trained']"]


def test_default_pipeline_runs_offline_and_a_second_run_does_nothing(repo, tmp_path):
    """The default config as it is, but for a training budget of 4 steps."""
    config = quick_training_config(tmp_path / "config.yaml")
    proc = snakemake(repo, tmp_path, "--configfile", str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = tmp_path / "results" / "models" / "qwen3-shakespeare"
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["source"] == "trained" and "model.safetensors" in manifest["files"]
    assert manifest["steps_done"] == 4 and (model / "training_curve.csv").is_file()
    assert len(list((tmp_path / "results" / "gguf" / "qwen3-shakespeare").glob("*.gguf"))) == 17
    samples = json.loads((tmp_path / "results" / "samples" / "qwen3-shakespeare.json").read_text())
    assert set(samples["samples"]) == {"model", "untrained"} and len(samples["samples"]["model"]) == 4
    assert {s["kind"] for s in samples["samples"]["untrained"]} == {"greedy", "sampled"}
    bench = pd.read_csv(tmp_path / "results" / "bench" / "qwen3-shakespeare.csv")
    engines = ["numpy", "llama.cpp", "transformers-f32", "transformers-bf16"]
    assert sorted(set(bench["engine"])) == sorted(engines) and set(bench["test"]) == {"pp16", "tg8"}
    assert set(bench["model_type"]) == {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K_M", "float32", "bfloat16"}
    assert len(bench) == (6 * 2 + 2) * 2 and bench["avg_ts"].gt(0).all() and bench["stddev_ts"].ge(0).all()
    assert bench.loc[bench["n_gen"] > 0, "ceiling_share"].between(0, 2).all()
    assert (tmp_path / "results" / "logs" / "get_model" / "qwen3-shakespeare.log").is_file()
    assert (tmp_path / "results" / "benchmarks" / "get_model" / "qwen3-shakespeare.tsv").is_file()
    again = snakemake(repo, tmp_path, "--configfile", str(config))
    assert again.returncode == 0 and "Nothing to be done" in again.stderr + again.stdout
