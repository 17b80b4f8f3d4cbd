from pathlib import Path

import pytest
from helpers import REPO, quick_training_config, run_snakemake

# Tests that share a whole pipeline run, a cluster or a retraining are marked by the fixtures they
# use, so that `make test-quick` can leave them out (pyproject.toml's markers say what each means).
HEAVY_FIXTURES = {"pipeline_run": "pipeline", "committed_run": "pipeline", "slurm_run": "cluster", "s3": "cluster"}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in HEAVY_FIXTURES.items():
            if fixture in item.fixturenames:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The CI model, built once per test session as the pipeline builds it."""
    from qwen3repro.config import load_config
    from qwen3repro.model.sources import materialize

    spec = load_config(REPO / "config" / "qwen3-tiny.yaml")["models"]["qwen3-tiny"]
    return materialize("qwen3-tiny", spec, tmp_path_factory.mktemp("models") / "qwen3-tiny")


@pytest.fixture(scope="session")
def shape_model(tmp_path_factory) -> Path:
    """Qwen3-0.6B's exact shape with seeded weights (BF16, as the Hub ships it): about 20 s."""
    from qwen3repro.model import synthetic

    path = tmp_path_factory.mktemp("qwen3-0.6b-shape")
    synthetic.build(path, "qwen3-0.6b-shape", seed=0, dtype="bfloat16")
    return path


@pytest.fixture(scope="session")
def tiny_f32(tiny_model, tmp_path_factory) -> Path:
    """The CI model as an F32 GGUF."""
    from qwen3repro.convert.converter import convert

    path = tmp_path_factory.mktemp("gguf") / "qwen3-tiny-F32.gguf"
    convert(tiny_model, "F32", path, name="qwen3-tiny")
    return path


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The default config run once, offline, as `make run` runs it (but for a 4-step training
    budget and short benchmarks, perplexity runs and sweeps), then run again."""
    workdir = tmp_path_factory.mktemp("pipeline")
    config = quick_training_config(workdir / "config.yaml")
    first = run_snakemake(workdir, "--configfile", str(config))
    again = run_snakemake(workdir, "--configfile", str(config)) if first.returncode == 0 else None
    return workdir, config, first, again
