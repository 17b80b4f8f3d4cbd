"""Pinned arithmetic: the default recipe trains to the same bits on every x86-64 CPU, at any thread count.

The committed hash below was made on one machine; every CI run, on whatever CPU the project's machines
have that day (Intel Xeons with AMX, AMD EPYCs), trains again and compares: the cross-machine claim
of config/reference/qwen3-shakespeare.yaml, checked in minutes instead of a whole run.
"""

import hashlib
from pathlib import Path

import pytest
import yaml

from qwen3repro import numerics

# The default recipe's model, data, optimizer and loss, cut to 24 steps (warm-up 8) and 8 eval windows,
# then 6 steps of its chat tuning (the row split, the padded batches, the text windows beside them)
SHORT = {"steps": 24, "warmup_steps": 8, "eval_every": 100, "eval_windows": 8}
SHORT_CHAT = {"steps": 6, "warmup_steps": 2, "eval_every": 100, "eval_examples": 8}
SHORT_SHA256 = "9d134dfa5690adf7b2d43b9e3b1abf464e73c192764fadef75b7f7d206ef6b6d"  # AMD EPYC, 2026-12-07


def default_training(repo: Path) -> dict:
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    training = config["models"]["qwen3-shakespeare"]["training"]
    return {**training, **SHORT, "chat": {**training["chat"], **SHORT_CHAT}}


def short_training(tmp_path: Path, training: dict) -> tuple[str, dict]:
    """Train as the pipeline does (the pinned child at the recipe's thread count); the weights' sha256."""
    out = tmp_path / f"model-{training['threads']}-{training['learning_rate']}"
    out.mkdir()
    result = numerics.run_pinned(
        "qwen3repro.model.train:train",
        training["threads"],
        out_dir=out,
        preset="qwen3-shakespeare",
        architecture_overrides=None,
        seed=0,
        training=training,
    )
    return hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest(), result["numerics"]


def check_against_committed(sha: str, numerics_in_force: dict) -> None:
    """One line when the bits differ: what was trained, against what, with which kernels."""
    if sha != SHORT_SHA256:
        raise AssertionError(
            f"pinned training gave sha256 {sha[:16]}…, the committed {SHORT_SHA256[:16]}…: the recipe or the "
            f"arithmetic changed (ATen {numerics_in_force.get('aten_cpu_capability')}, MKL_CBWR "
            f"{numerics_in_force.get('mkl_cbwr')}, OpenBLAS {numerics_in_force.get('openblas_coretype')}, "
            f"CPU {numerics_in_force.get('cpu')})"
        )


@pytest.fixture(scope="module")
def committed_run(repo, tmp_path_factory):
    training = default_training(repo)
    assert training["threads"] == 2
    return short_training(tmp_path_factory.mktemp("pinned"), training)


def test_the_default_recipe_trains_to_the_committed_bits_on_this_cpu(committed_run):
    sha, in_force = committed_run
    if not in_force["pinned"]:
        pytest.skip(f"bits cannot be promised on this machine: {in_force['why_not']}")
    assert in_force["aten_cpu_capability"] == "AVX2" and in_force["openblas_coretype"] == "Haswell"
    check_against_committed(sha, in_force)


def test_one_thread_and_the_environments_own_kernel_choices_give_the_same_bits(
    committed_run, repo, tmp_path, monkeypatch
):
    """The thread count is free (MKL's STRICT branch, ATen's fixed-order sums, OpenBLAS on one thread),
    and what the user's environment asks of torch and MKL is replaced in the pinned child."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    sha, in_force = short_training(tmp_path, {**default_training(repo), "threads": 1})
    assert in_force["torch_threads"] == 1 and in_force["mkl_cbwr"] == numerics.PINNED["MKL_CBWR"]
    assert sha == committed_run[0]


def test_three_threads_give_the_same_bits(committed_run, repo, tmp_path):
    """A thread count that is no power of two: MKL's sgemm (its STRICT branch included) and ATen's
    whole-tensor sums cut their work by thread count, so training keeps its products and its
    reductions out of both (train_ops: matmul_in_parts, clip_gradients, output_cross_entropy)."""
    sha, in_force = short_training(tmp_path, {**default_training(repo), "threads": 3})
    if not in_force["pinned"]:
        pytest.skip(f"bits cannot be promised on this machine: {in_force['why_not']}")
    assert in_force["torch_threads"] == 3 and sha == committed_run[0]


def test_a_changed_learning_rate_misses_the_committed_bits_in_one_line(committed_run, repo, tmp_path):
    sha, in_force = short_training(tmp_path, {**default_training(repo), "learning_rate": 0.011})
    with pytest.raises(AssertionError) as e:
        check_against_committed(sha, in_force)
    assert "\n" not in str(e.value) and str(e.value).startswith("pinned training gave sha256 ")


def test_the_environment_a_pinned_child_gets():
    env, why_not = numerics.pinned_environment(3)
    assert env["OMP_NUM_THREADS"] == "3" and env["OPENBLAS_NUM_THREADS"] == "1"
    if why_not is None:
        assert all(env[k] == v for k, v in numerics.PINNED.items())
