"""Per-model stages: a model's `stages` entry turns stages off for it or changes their settings for it
alone, is checked as the top-level sections are, and decides which jobs the workflow plans."""

import copy
import subprocess

import pytest
import yaml
from helpers import BIN, REPO, default_config

from qwen3repro.config import file_variants, model_settings, runs, validate_config
from qwen3repro.errors import UserError
from qwen3repro.verify.verdict import recipe

STAND_IN = {
    "source": "synthetic",
    "preset": "qwen3-tiny",
    "stages": {
        "convert": {"types": ["F32", "Q4_K_M"], "imatrix": {"types": []}},
        "bench": {"types": ["Q4_K_M"], "n_gen": [32]},
        "check": False,
        "perplexity": False,
        "samples": False,
        "sweep": False,
    },
}


def default_with(**models) -> dict:
    config = default_config()
    config["models"] = {"trained": config["models"]["qwen3-shakespeare"], **models}
    return config


def test_a_models_stages_override_the_top_level_settings_for_it_alone():
    config = validate_config(default_with(small=copy.deepcopy(STAND_IN)))
    small, trained = model_settings(config, "small"), model_settings(config, "trained")
    assert small["bench"]["n_gen"] == [32] and small["bench"]["n_prompt"] == config["bench"]["n_prompt"]
    assert trained["bench"] is None  # the default config's trained model skips the bench
    # nested mappings merge: the calibration text stays the top-level one
    assert small["convert"]["imatrix"]["types"] == [] and small["convert"]["imatrix"]["calibration"]["source"]
    assert file_variants(config, "small") == ["F32", "Q4_K_M"]
    assert set(file_variants(config)) == set(file_variants(config, "trained")) | {"F32", "Q4_K_M"}
    assert [runs(config, "small", s) for s in ("convert", "bench", "check", "perplexity", "samples", "sweep")] == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    # what a model goes through is not what it is: its recipe (and so its reference) does not change
    assert recipe(config["models"]["small"]) == {
        "source": "synthetic",
        "preset": "qwen3-tiny",
        "seed": 0,
        "dtype": "bfloat16",
    }


@pytest.mark.parametrize(
    "stages, message",
    [
        (
            {"bench": {"types": ["Q8_0"]}},
            "models.small.stages.bench.types: Q8_0 not in models.small.stages.convert.types",
        ),
        ({"bench": {"n_prompt": "128"}}, "models.small.stages.bench.n_prompt: '128' is not of type 'array'"),
        (
            {"perplexity": {"corpus": {"source": "local", "path": "x.txt"}}},
            "models.small.stages.perplexity.corpus: shared by every model; set it at the top level",
        ),
        ({"bench": {"threads": 4}}, "models.small.stages.bench.threads: shared by every model"),
        ({"convert": False}, "models.small.stages.convert: False is not of type 'object'"),
        ({"report": False}, "models.small.stages: Additional properties are not allowed ('report' was unexpected)"),
        ({"sweep": {"grids": [{"name": "g", "preset": "hot"}]}}, "models.small.stages."),
    ],
)
def test_a_bad_stages_entry_is_a_one_line_error_naming_the_model(stages, message):
    spec = copy.deepcopy(STAND_IN)
    spec["stages"].update(stages)
    with pytest.raises(UserError) as e:
        validate_config(default_with(small=spec))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_workflow_plans_only_the_stages_each_model_goes_through(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(default_with(small=copy.deepcopy(STAND_IN))))
    proc = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-n",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "--cores",
            "2",
            "--configfile",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    planned = proc.stdout
    assert "results/bench/small/Q4_K_M.json" in planned and "results/bench/small/F32.json" not in planned
    assert "results/gguf/small/small-Q4_K_M.gguf" in planned and "results/gguf/small/small-Q8_0.gguf" not in planned
    assert "results/verify/small.json" in planned
    for skipped in (
        "results/check/small",
        "results/perplexity/small",
        "results/samples/small",
        "results/sweep/small",
        "results/imatrix/small",
        "results/bench/trained",
    ):
        assert skipped not in planned, skipped
    assert "results/check/trained/Q2_K.json" in planned and "results/sweep/trained/F32.parquet" in planned


def test_two_models_may_share_a_task_set_name_only_for_the_same_set():
    small = copy.deepcopy(STAND_IN)
    validate_config(default_with(small=copy.deepcopy(small)))  # both take the top-level sets
    small["stages"]["tasks"] = {"sets": {"blank": {"tasks": 20}}}
    with pytest.raises(UserError, match="task set blank differs between models trained and small"):
        validate_config(default_with(small=small))
    small["stages"]["tasks"] = {
        "sets": {"blank": False, "short": {"source": "shakespeare", "build": "next-line", "tasks": 20}}
    }
    validate_config(default_with(small=small))
