"""The accuracy gate: the engine on GGUF files against transformers on the same weights, one tight
bound for every file type, and a gate that trips on a file that is not what the converter made."""

import shutil

import numpy as np
import pytest

from qwen3repro.accuracy.check import check_file, first_divergence, gate, greedy_agreement, prompt_tokens, write_check
from qwen3repro.config import validate_config
from qwen3repro.errors import UserError
from qwen3repro.gguf_file import GGUFFile

PROMPTS = [
    {
        "name": "chat",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, who are you?"}],
    },
    {"name": "chat-no-thinking", "thinking": False, "messages": [{"role": "user", "content": "你好！"}]},
    {"name": "plain", "text": "The quick brown fox jumps over the lazy dog. Der Fuchs springt."},
    {"name": "corpus", "corpus_tokens": 200},
]
CORPUS = "ROMEO. But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n" * 40


@pytest.fixture(scope="module")
def settings():
    """The config's check settings, with the default bound, and shorter greedy runs."""
    config = validate_config({"models": {"m": {"source": "synthetic", "preset": "qwen3-tiny"}}})
    return {**config["check"], "prompts": PROMPTS, "greedy_tokens": 16}


def corrupt(src, dst, tensor="blk.1.ffn_down.weight", scale=1.01):
    """A copy of an F32 GGUF with one tensor scaled: a file that loads, with slightly wrong weights."""
    shutil.copy(src, dst)
    with GGUFFile(dst) as f:
        info = f.tensors[tensor]
        offset, count = info.offset, info.nbytes // 4
    with open(dst, "r+b") as fh:
        fh.seek(offset)
        values = np.frombuffer(fh.read(count * 4), np.float32) * np.float32(scale)
        fh.seek(offset)
        fh.write(values.tobytes())
    return dst


def test_f32_matches_transformers_within_the_strict_bound(tiny_model, tiny_f32, settings, tmp_path):
    out = tmp_path / "F32.json"
    result = write_check(tiny_model, tiny_f32, None, out, {**settings, "prompts": PROMPTS[:3]}, "qwen3-tiny", "F32")
    m = result["metrics"]
    assert m["max_abs_dlogit"] <= 1e-4 and m["top1_agreement"] == 1.0 and m["greedy_match"] == 16
    assert m["kl_max"] < 1e-9 and m["rms_dp"] < 1e-9
    assert m["tensors_differing"] == 0 and m["tensors_checked"] == len(GGUFFile(tiny_f32).tensors)
    assert out.is_file() and result["thresholds"] == settings["bound"] == {
        "max_abs_dlogit": 1e-4,
        "greedy_agreement": 1.0,
        "tensors_differing": 0,
    }


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_K_M", "Q2_K"])
def test_a_quantized_file_is_held_to_the_same_bound_as_f32(tiny_model, settings, tmp_path, type_name):
    """transformers computes the file's own (dequantized) weights: only float32 rounding is left."""
    from qwen3repro.convert.converter import convert

    gguf = tmp_path / f"qwen3-tiny-{type_name}.gguf"
    convert(tiny_model, type_name, gguf, name="qwen3-tiny")
    out = tmp_path / f"{type_name}.json"
    result = write_check(tiny_model, gguf, None, out, {**settings, "prompts": PROMPTS[:3]}, "qwen3-tiny", type_name)
    m = result["metrics"]
    assert m["max_abs_dlogit"] <= 1e-4 and m["greedy_agreement"] == 1.0 and m["tensors_differing"] == 0
    assert out.is_file()


def test_the_gate_trips_on_a_corrupted_gguf_and_writes_nothing(tiny_model, tiny_f32, settings, tmp_path):
    bad = corrupt(tiny_f32, tmp_path / "qwen3-tiny-F32.gguf")
    out = tmp_path / "F32.json"
    with pytest.raises(UserError) as e:
        write_check(tiny_model, bad, None, out, {**settings, "prompts": PROMPTS[2:3]}, "qwen3-tiny", "F32")
    message = str(e.value)
    assert "\n" not in message
    assert message == (
        "qwen3-tiny F32: accuracy check failed: tensors_differing 1 above the maximum 0 (blk.1.ffn_down.weight)"
    )
    assert not out.exists()


def test_a_quantized_file_is_measured_by_every_metric(tiny_model, tmp_path):
    from qwen3repro.convert.converter import convert

    q8 = tmp_path / "qwen3-tiny-Q8_0.gguf"
    convert(tiny_model, "Q8_0", q8, name="qwen3-tiny")
    result = check_file(tiny_model, q8, PROMPTS[2:4], CORPUS, max_tokens=64, greedy_tokens=8)
    m = result["metrics"]
    assert 0 < m["max_abs_dlogit"] <= 1e-4 and 0 < m["mean_abs_dlogit"] < m["max_abs_dlogit"]
    assert 0 <= m["kl_mean"] <= m["kl_p99"] <= m["kl_max"] < 1e-9
    assert (
        m["positions"] == sum(p["n_tokens"] - 1 for p in result["prompts"]) and result["prompts"][1]["n_tokens"] == 64
    )
    assert 0 <= m["greedy_match"] <= 8


def test_gate_names_each_broken_metric_and_respects_direction():
    metrics = {"max_abs_dlogit": 0.5, "kl_mean": 0.01, "top1_agreement": 0.9, "greedy_match": 3, "greedy_tokens": 64}
    assert gate(metrics, {"max_abs_dlogit": 1.0, "top1_agreement": 0.5}, "m Q4_0") == []
    with pytest.raises(UserError, match=r"^m Q4_0: accuracy check failed: top1_agreement 0.9 below the minimum 0.95$"):
        gate(metrics, {"top1_agreement": 0.95}, "m Q4_0")
    with pytest.raises(UserError, match=r"kl_mean 0.01 above the maximum 0.001 \(and 1 more: greedy_match 3 below"):
        gate(metrics, {"kl_mean": 0.001, "greedy_match": 64}, "m Q4_0")
    with pytest.raises(UserError, match="no metric 'kl_median'"):
        gate(metrics, {"kl_median": 1.0}, "m Q4_0")


def test_greedy_continuations_agree_to_the_end_or_to_a_reference_near_tie_only():
    margins = [3.0, 1e-5, 0.5, 2.0]
    assert greedy_agreement([1, 2, 3, 4], [1, 2, 3, 4], margins, 2e-4) == (4, None, True)
    assert greedy_agreement([1, 2, 3, 4], [1, 7, 8, 9], margins, 2e-4) == (1, 1e-5, True)  # a near-tie: either
    assert greedy_agreement([1, 2, 3, 4], [1, 2, 5, 4], margins, 2e-4) == (2, 0.5, False)  # a clear choice missed
    assert greedy_agreement([1, 2, 3, 4], [9, 2, 3, 4], margins, 2e-4) == (0, 3.0, False)


def test_first_divergence_is_the_first_differing_index_or_the_length():
    assert first_divergence([1, 2, 3], [1, 2, 3]) == 3
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([7], [8]) == 0


def test_bad_prompt_sets_are_one_line_errors(tiny_f32):
    from qwen3repro.engine.generate import Generator

    g = Generator.from_gguf(tiny_f32, n_ctx=64)
    with pytest.raises(UserError, match="^check: the prompt set is empty$"):
        prompt_tokens(g, [], None, 512)
    with pytest.raises(UserError, match="'c' takes its tokens from the corpus, and there is none"):
        prompt_tokens(g, [{"name": "c", "corpus_tokens": 10}], None, 512)
    with pytest.raises(UserError, match="'x' has 1 token"):
        prompt_tokens(g, [{"name": "x", "text": "a"}], None, 512)


def test_config_refuses_an_empty_prompt_set_and_unknown_bounds():
    base = {"models": {"m": {"source": "synthetic", "preset": "qwen3-tiny"}}}
    with pytest.raises(UserError, match=r"^config: check.prompts: \[\] should be non-empty$"):
        validate_config({**base, "check": {"prompts": []}})
    with pytest.raises(UserError, match="check.bound"):
        validate_config({**base, "check": {"bound": {"kl_median": 1}}})
    with pytest.raises(UserError, match="check.bound.max_abs_dlogit"):
        validate_config({**base, "check": {"bound": {"max_abs_dlogit": 0}}})
    with pytest.raises(
        UserError, match=r"check: Additional properties are not allowed \(.thresholds. was unexpected\)"
    ):
        validate_config({**base, "check": {"thresholds": {"Q4_0": {"kl_max": 1}}}})


def test_an_untied_output_matrix_is_converted_and_read_as_its_own(settings, tmp_path):
    """Qwen3-8B and larger keep lm_head.weight apart from the embedding: GGUF output.weight."""
    from qwen3repro.convert.converter import convert
    from qwen3repro.model import synthetic

    model = tmp_path / "untied"
    model.mkdir()
    synthetic.build(
        model, "qwen3-tiny", {"tie_word_embeddings": False, "num_hidden_layers": 2}, seed=1, dtype="float32"
    )
    type_name = "Q4_K_M"
    gguf = tmp_path / f"untied-{type_name}.gguf"
    manifest = convert(model, type_name, gguf, name="untied")
    with GGUFFile(gguf) as f:
        assert f.tensors["output.weight"].shape == f.tensors["token_embd.weight"].shape
    # llama.cpp's mix: the output matrix at Q6_K in Q4_K_M, the embedding at Q4_K
    types = {t["name"]: t["type"] for t in manifest["tensors"]}
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"
    result = write_check(
        model, gguf, None, tmp_path / "check.json", {**settings, "prompts": PROMPTS[:2]}, "untied", type_name
    )
    m = result["metrics"]
    assert m["max_abs_dlogit"] <= 1e-4 and m["greedy_agreement"] == 1.0 and m["tensors_differing"] == 0


def test_the_conversion_record_proves_the_file_without_encoding_it_again(tiny_model, tiny_f32, tmp_path):
    """The converter records each tensor's digest as written and of its source; the check reads
    them (no encoding) and finds what re-encoding finds: a changed tensor, other source weights, a
    file quantized with another importance matrix; without a record it encodes again."""
    import json

    from qwen3repro.accuracy.check import differing_tensors
    from qwen3repro.convert.calibrate import write_imatrix
    from qwen3repro.convert.converter import convert

    record = json.loads(tiny_f32.with_suffix(".json").read_text())
    assert all(len(t["sha256"]) == len(t["source_sha256"]) == 64 for t in record["tensors"])
    n = len(record["tensors"])
    for reencode in (False, True):
        assert differing_tensors(tiny_model, tiny_f32, "F32", reencode=reencode) == (n, [])
    # a tensor changed after conversion, the record copied along with the file
    bad = corrupt(tiny_f32, tmp_path / "qwen3-tiny-F32.gguf")
    shutil.copy(tiny_f32.with_suffix(".json"), bad.with_suffix(".json"))
    for reencode in (False, True):
        assert differing_tensors(tiny_model, bad, "F32", reencode=reencode) == (n, ["blk.1.ffn_down.weight"])
    bad.with_suffix(".json").unlink()  # no record: encoded again, with the same answer
    assert differing_tensors(tiny_model, bad, "F32") == (n, ["blk.1.ffn_down.weight"])
    # the file and its record intact, the source weights not the ones it was made of
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model, other)
    from safetensors.numpy import load_file, save_file

    weights = load_file(other / "model.safetensors")
    name = next(k for k in weights if k.endswith("layers.0.mlp.up_proj.weight"))
    weights[name] = weights[name] * np.float32(2)
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    assert differing_tensors(other, tiny_f32, "F32") == (n, ["blk.0.ffn_up.weight"])
    # quantized with one importance matrix, checked against another
    matrices = []
    for i, text in enumerate((CORPUS, CORPUS[::-1])):
        (tmp_path / f"calibration-{i}.txt").write_text(text)
        matrices.append(tmp_path / f"imatrix-{i}.gguf")
        write_imatrix(tiny_f32, tmp_path / f"calibration-{i}.txt", matrices[-1], n_ctx=64, chunks=2, threads=1)
    q2 = tmp_path / "qwen3-tiny-Q2_K-imat.gguf"
    convert(tiny_model, "Q2_K", q2, name="qwen3-tiny", imatrix=matrices[0])
    assert differing_tensors(tiny_model, q2, "Q2_K", matrices[0]) == (n, [])
    by_record = differing_tensors(tiny_model, q2, "Q2_K", matrices[1])
    assert by_record[1] and by_record == differing_tensors(tiny_model, q2, "Q2_K", matrices[1], reencode=True)
