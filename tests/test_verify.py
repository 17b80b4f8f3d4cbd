"""The verdict: a run against its committed reference, file by file, and one line naming what differs."""

import json
import shutil

import pytest
import yaml

from qwen3repro.config import load_config
from qwen3repro.errors import UserError
from qwen3repro.verify.verdict import load_reference, recipe, write_reference, write_verdict


@pytest.fixture()
def run(tiny_model, tiny_f32, tmp_path, repo):
    """A run's layout (results/models/<model>, results/gguf/<model>/) and its reference."""
    models, gguf_dir = tmp_path / "models", tmp_path / "gguf"
    models.mkdir()
    gguf_dir.mkdir()
    shutil.copytree(tiny_model, models / "qwen3-tiny")
    shutil.copy(tiny_f32, gguf_dir / "qwen3-tiny-F32.gguf")
    spec = load_config(repo / "config" / "qwen3-tiny.yaml")["models"]["qwen3-tiny"]
    reference = tmp_path / "qwen3-tiny.yaml"
    write_reference("qwen3-tiny", spec, models / "qwen3-tiny", gguf_dir, reference)
    return spec, models / "qwen3-tiny", gguf_dir, reference


def test_a_run_reproduces_the_reference_made_from_it_file_by_file(run, tmp_path):
    spec, model_dir, gguf_dir, reference = run
    assert set(load_reference(reference)["exact"]) == {
        "model/config.json",
        "model/generation_config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "model/tokenizer_config.json",
        "gguf/qwen3-tiny-F32.gguf",
    }
    result = write_verdict("qwen3-tiny", spec, model_dir, gguf_dir, reference, tmp_path / "v.json")
    assert result["verdict"] == "reproduced" and result["summary"] == "qwen3-tiny: 6/6 files identical to the reference"
    assert json.loads((tmp_path / "v.json").read_text())["verdict"] == "reproduced"


def test_one_flipped_byte_in_a_gguf_fails_with_one_line_naming_the_file(run, tmp_path):
    spec, model_dir, gguf_dir, reference = run
    gguf = gguf_dir / "qwen3-tiny-F32.gguf"
    data = bytearray(gguf.read_bytes())
    data[-1] ^= 0x01
    gguf.write_bytes(bytes(data))
    out = tmp_path / "v.json"
    with pytest.raises(UserError) as e:
        write_verdict("qwen3-tiny", spec, model_dir, gguf_dir, reference, out)
    message = str(e.value)
    assert "\n" not in message and not out.exists()
    assert message.startswith("qwen3-tiny: does not reproduce the reference: gguf/qwen3-tiny-F32.gguf sha256 ")
    lenient = write_verdict("qwen3-tiny", spec, model_dir, gguf_dir, reference, out, strict=False)
    assert lenient["verdict"] == "differs" and lenient["summary"] == "qwen3-tiny: 5/6 files identical to the reference"


def test_a_run_of_fewer_file_types_is_compared_on_the_files_it_makes(run, tmp_path):
    spec, model_dir, gguf_dir, reference = run
    data = load_reference(reference)
    data["exact"]["gguf/qwen3-tiny-Q8_0.gguf"] = "0" * 64  # a type this run does not convert
    reference.write_text(yaml.safe_dump(data))
    result = write_verdict("qwen3-tiny", spec, model_dir, gguf_dir, reference, tmp_path / "v.json", types=["F32"])
    assert result["verdict"] == "reproduced" and result["summary"] == "qwen3-tiny: 6/6 files identical to the reference"
    with pytest.raises(UserError, match="gguf/qwen3-tiny-Q8_0.gguf missing"):
        write_verdict("qwen3-tiny", spec, model_dir, gguf_dir, reference, tmp_path / "v.json", types=["F32", "Q8_0"])


def test_a_missing_reference_or_another_recipe_is_said_not_failed(run, tmp_path):
    spec, model_dir, gguf_dir, reference = run
    none = write_verdict("qwen3-tiny", spec, model_dir, gguf_dir, tmp_path / "absent.yaml", tmp_path / "a.json")
    assert none["verdict"] == "no reference"
    other = write_verdict("qwen3-tiny", {**spec, "seed": 1}, model_dir, gguf_dir, reference, tmp_path / "b.json")
    assert other["verdict"] == "not comparable" and other["summary"].endswith("(seed)")


def test_the_committed_references_name_their_recipe(repo):
    for path in sorted((repo / "config" / "reference").glob("*.yaml")):
        reference = load_reference(path)
        assert reference["model"] == path.stem and reference["recipe"]["source"] in ("synthetic", "hub", "trained")
        # a Hub model is checked against the Hub's record even before its GGUF hashes are added
        assert reference.get("exact") or reference.get("figures") or reference["recipe"]["source"] == "hub", path
        assert all(len(sha) == 64 for sha in (reference.get("exact") or {}).values())
        assert all(f["tolerance"] > 0 for f in (reference.get("figures") or {}).values())


@pytest.mark.parametrize(
    "config, model",
    [
        ("config.yaml", "qwen3-shakespeare"),
        ("config.yaml", "qwen3-0.6b-shape"),
        ("qwen3-tiny.yaml", "qwen3-tiny"),
        ("qwen3-0.6b.yaml", "qwen3-0.6b"),
        ("qwen3-0.6b-quick.yaml", "qwen3-0.6b"),
    ],
)
def test_each_config_is_comparable_with_its_models_committed_reference(repo, config, model):
    """The schema fills in seed and dtype for every model: a Hub model's recipe is its repository and
    commit alone, or its verdict would be "not comparable" on every run."""
    spec = load_config(repo / "config" / config)["models"][model]
    assert recipe(spec) == load_reference(repo / "config" / "reference" / f"{model}.yaml")["recipe"]


def test_figures_are_held_to_their_tolerance_and_named_when_outside(tmp_path):
    """A trained model's bytes depend on the machine: its held-out loss and PPL are compared instead."""
    import yaml

    model_dir, gguf_dir, ppl_dir = tmp_path / "m", tmp_path / "gguf", tmp_path / "ppl"
    for d in (model_dir, gguf_dir, ppl_dir):
        d.mkdir()
    (model_dir / "manifest.json").write_text(json.dumps({"files": {}, "final_held_out_loss": 5.9482}))
    (ppl_dir / "F32.json").write_text(json.dumps({"perplexity": {"ppl": 380.83}}))
    spec = {"source": "trained", "preset": "qwen3-shakespeare", "seed": 0}
    figures = {"held_out_loss": {"value": 5.9482, "tolerance": 0.001}, "ppl/F32": {"value": 380.0, "tolerance": 1.0}}
    reference = tmp_path / "m.yaml"
    reference.write_text(yaml.safe_dump({"model": "m", "recipe": spec, "figures": figures}))
    result = write_verdict("m", spec, model_dir, gguf_dir, reference, tmp_path / "v.json", perplexity_dir=ppl_dir)
    assert result["verdict"] == "reproduced"
    assert result["summary"] == "m: held_out_loss 5.9482 within 0.001 of 5.9482; ppl/F32 380.8300 within 1 of 380.0000"
    (ppl_dir / "F32.json").write_text(json.dumps({"perplexity": {"ppl": 382.5}}))
    with pytest.raises(UserError, match=r"^m: does not reproduce the reference: ppl/F32 382.5, reference 380 ± 1$"):
        write_verdict("m", spec, model_dir, gguf_dir, reference, tmp_path / "v.json", perplexity_dir=ppl_dir)


def test_the_synthetic_0_6b_shape_model_is_the_one_its_committed_reference_names(shape_model, repo):
    """Seeded NumPy streams and IEEE rounding to bfloat16: the same bytes on every machine."""
    from qwen3repro.fsutil import sha256_file

    exact = load_reference(repo / "config" / "reference" / "qwen3-0.6b-shape.yaml")["exact"]
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert sha256_file(shape_model / name) == exact[f"model/{name}"], name


def test_a_run_whose_bits_cannot_be_promised_is_held_to_the_fallback_figures_and_says_why(tmp_path):
    """Another torch (or an unpinnable CPU): the exact hashes are not asked for, and the verdict says so."""
    model_dir, gguf_dir, ppl_dir = tmp_path / "m", tmp_path / "gguf", tmp_path / "ppl"
    for d in (model_dir, gguf_dir, ppl_dir):
        d.mkdir()
    pinned = {"pinned": True, "torch": "2.13.0+cpu", "mkl": "2024.2", "numpy": "2.4.6", "openblas": "0.3.31"}
    manifest = {"files": {}, "final_held_out_loss": 6.01, "numerics": {**pinned, "torch": "2.14.0+cpu"}}
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    spec = {"source": "trained", "preset": "qwen3-shakespeare", "seed": 0}
    reference = tmp_path / "m.yaml"
    reference.write_text(
        yaml.safe_dump(
            {
                "model": "m",
                "recipe": spec,
                "numerics": {k: v for k, v in pinned.items() if k != "pinned"},
                "exact": {"model/model.safetensors": "0" * 64},
                "figures": {"held_out_loss": {"value": 6.0, "tolerance": 1e-6}},
                "fallback": {"held_out_loss": {"value": 6.0, "tolerance": 0.3}},
            }
        )
    )
    result = write_verdict("m", spec, model_dir, gguf_dir, reference, tmp_path / "v.json")
    assert result["verdict"] == "within fallback bounds" and not result["bits_promised"]
    assert result["summary"] == (
        "m: bits not promised here (torch 2.14.0+cpu, the reference was made with 2.13.0+cpu), so only the "
        "fallback figures are checked; held_out_loss 6.0100 within 0.3 of 6.0000"
    )
    manifest["numerics"] = pinned  # the same versions: the exact hashes are asked for, and this one differs
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="model/model.safetensors missing"):
        write_verdict("m", spec, model_dir, gguf_dir, reference, tmp_path / "v.json")


def test_a_remade_reference_keeps_each_figures_bound_around_the_runs_own_value(run, tmp_path):
    """`qwen3repro reference --force` after a retraining: the hashes and the figures' values are the new
    run's, the bounds (from a measured spread) the old reference's, a perplexity's scaled with its value."""
    spec, model_dir, gguf_dir, reference = run
    old = load_reference(reference)
    old["figures"] = {"ppl/F32": {"value": 400.0, "tolerance": 0.01}}
    old["fallback"] = {"ppl/F32": {"value": 400.0, "tolerance": 140.0}}
    reference.write_text(yaml.safe_dump(old))
    ppl = tmp_path / "perplexity"
    ppl.mkdir()
    (ppl / "F32.json").write_text(json.dumps({"perplexity": {"ppl": 200.0}}))
    new = write_reference("qwen3-tiny", spec, model_dir, gguf_dir, reference, force=True, perplexity_dir=ppl)
    assert new["figures"] == {"ppl/F32": {"value": 200.0, "tolerance": 0.005}}
    assert new["fallback"] == {"ppl/F32": {"value": 200.0, "tolerance": 70.0}}
    assert load_reference(reference)["exact"] == old["exact"]
    (ppl / "F32.json").unlink()
    with pytest.raises(UserError, match="^the run has no ppl/F32 to make the reference's figure from$"):
        write_reference("qwen3-tiny", spec, model_dir, gguf_dir, reference, force=True, perplexity_dir=ppl)
