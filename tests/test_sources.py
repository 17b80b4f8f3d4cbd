"""Model sources and config validation: hub, local, synthetic, and the one-line errors for bad input."""

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_cli

from qwen3repro.config import load_config, validate_config
from qwen3repro.errors import UserError
from qwen3repro.model import synthetic
from qwen3repro.model.sources import materialize


def write_config(path: Path, model: dict, name: str = "m") -> Path:
    path.write_text(json.dumps({"models": {name: model}}))  # JSON is YAML
    return path


@pytest.mark.parametrize(
    "model, needles",
    [
        ({"source": "synthetik", "preset": "qwen3-tiny"}, ["models.m.source", "synthetik"]),
        ({"source": "synthetic", "preset": "qwen3-tiny", "sed": 1}, ["models.m", "'sed' was unexpected"]),
        ({"source": "synthetic", "preset": "qwen3-tiny", "seed": -1}, ["models.m.seed", "-1"]),
        ({"source": "synthetic", "preset": "qwen3-huge"}, ["models.m.preset", "qwen3-huge"]),
        ({"source": "synthetic"}, ["models.m", "'preset' is a required property"]),
        ({"source": "hub", "repo_id": "Qwen/Qwen3-0.6B"}, ["models.m", "'revision' is a required property"]),
        ({"source": "hub", "repo_id": "Qwen/Qwen3-0.6B", "revision": "a b"}, ["models.m.revision", "'a b'"]),
        ({"source": "local"}, ["models.m", "'path' is a required property"]),
        (
            {"source": "synthetic", "preset": "qwen3-tiny", "architecture": {"hidden": 8}},
            ["models.m.architecture", "'hidden' was unexpected"],
        ),
    ],
)
def test_schema_violation_is_a_one_line_error_naming_the_key(tmp_path, model, needles):
    proc = run_cli("check-config", str(write_config(tmp_path / "c.yaml", model)))
    assert proc.returncode == 2
    assert_one_line_error(proc, *needles)


def test_unknown_top_level_key_and_empty_models(tmp_path):
    (tmp_path / "c.yaml").write_text("modelz: {}\n")
    assert_one_line_error(run_cli("check-config", str(tmp_path / "c.yaml")), "'modelz' was unexpected")
    (tmp_path / "c.yaml").write_text("models: {}\n")
    assert_one_line_error(run_cli("check-config", str(tmp_path / "c.yaml")), "models")


def test_defaults_are_filled_in():
    config = validate_config({"models": {"m": {"source": "synthetic", "preset": "qwen3-tiny"}}})
    assert config["models"]["m"]["seed"] == 0 and config["models"]["m"]["dtype"] == "bfloat16"


def test_shipped_configs_are_valid(repo):
    for path in sorted((repo / "config").glob("*.yaml")):
        load_config(path)


def test_missing_local_directory_is_a_one_line_error_naming_the_path(tmp_path):
    config = write_config(tmp_path / "c.yaml", {"source": "local", "path": str(tmp_path / "nowhere")})
    proc = run_cli("get-model", "--config", str(config), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "models.m.path", str(tmp_path / "nowhere"))
    assert not (tmp_path / "out").exists()


def test_local_source_links_the_model_and_writes_a_manifest(tmp_path, tiny_model):
    out = materialize("copy", {"source": "local", "path": str(tiny_model)}, tmp_path / "copy")
    manifest = json.loads((out / "manifest.json").read_text())
    original = json.loads((tiny_model / "manifest.json").read_text())
    assert manifest["source"] == "local" and manifest["path"] == str(tiny_model.resolve())
    assert manifest["files"] == original["files"]


def test_local_source_of_another_architecture_is_refused(tmp_path, tiny_model):
    src = tmp_path / "llama"
    shutil.copytree(tiny_model, src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(
        json.dumps({**config, "model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    with pytest.raises(UserError, match="model_type 'llama'"):
        materialize("m", {"source": "local", "path": str(src)}, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama"]


def test_pickled_weights_are_never_loaded(tmp_path, tiny_model):
    src = tmp_path / "pickled"
    src.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, src / name)
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UserError, match="pytorch_model.bin: pickled weights are not loaded"):
        materialize("m", {"source": "local", "path": str(src)}, tmp_path / "out")


def test_hub_without_network_names_the_offline_config_and_writes_nothing(tmp_path, repo):
    out_parent = tmp_path / "models"
    out_parent.mkdir()
    proc = run_cli(
        "get-model",
        "--config",
        str(repo / "config" / "qwen3-0.6b.yaml"),
        "--out",
        str(out_parent / "qwen3-0.6b"),
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2
    assert_one_line_error(proc, "Qwen/Qwen3-0.6B@c1899de289a04d12100db370d81485cdf75e47ca", "config/config.yaml")
    assert list(out_parent.iterdir()) == []


def test_existing_output_is_not_overwritten_without_force(tmp_path, repo):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    config = str(repo / "config" / "config.yaml")
    proc = run_cli("get-model", "--config", config, "--model", "qwen3-shakespeare", "--out", str(out))
    assert_one_line_error(proc, str(out), "--force")
    assert (out / "precious.txt").read_text() == "user data"


def test_output_in_a_missing_directory_is_a_one_line_error(tmp_path, repo):
    proc = run_cli("get-model", "--model", "qwen3-shakespeare", "--out", str(tmp_path / "no" / "such" / "dir"))
    assert_one_line_error(proc, str(tmp_path / "no" / "such"), "does not exist")


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "save_safetensors", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        materialize(
            "m", {"source": "synthetic", "preset": "qwen3-tiny", "seed": 0, "dtype": "bfloat16"}, tmp_path / "m"
        )
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_an_existing_model(tmp_path, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    materialize("m", {"source": "local", "path": str(tiny_model)}, out, force=True)
    assert not (out / "stale.txt").exists() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's owner-only mode


def test_a_config_layers_shared_blocks_beneath_its_own_keys(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "corpus.yaml").write_text(
        "perplexity:\n  n_ctx: 64\n  chunks: 3\nmodels:\n  m:\n    source: synthetic\n    preset: qwen3-tiny\n"
    )
    top = tmp_path / "run.yaml"
    top.write_text("layers: [shared/corpus.yaml]\nperplexity:\n  chunks: 5\nmodels:\n  m:\n    seed: 7\n")
    config = load_config(top)
    assert "layers" not in config
    assert config["perplexity"]["n_ctx"] == 64 and config["perplexity"]["chunks"] == 5
    assert config["models"]["m"]["source"] == "synthetic" and config["models"]["m"]["seed"] == 7


def test_a_missing_or_circular_layer_is_a_one_line_error(tmp_path):
    missing = tmp_path / "missing.yaml"
    missing.write_text("layers: [nowhere.yaml]\n")
    with pytest.raises(UserError, match="layers: nowhere.yaml does not exist"):
        load_config(missing)
    (tmp_path / "a.yaml").write_text("layers: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("layers: [a.yaml]\n")
    with pytest.raises(UserError, match="layers itself"):
        load_config(tmp_path / "a.yaml")
