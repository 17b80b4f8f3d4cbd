"""GGUF conversion: llama-quantize's tensor plan, llama.cpp's exact bytes, manifests, and bad input."""

import json
import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import yaml
from gguf import GGMLQuantizationType as T
from helpers import assert_one_line_error, run_cli

from qwen3repro.convert import quants, tensor_plan
from qwen3repro.convert.converter import convert
from qwen3repro.convert.hf_weights import SafetensorsSource
from qwen3repro.convert.tensor_plan import FILE_TYPES
from qwen3repro.fsutil import sha256_file
from qwen3repro.gguf_file import GGUFFile
from qwen3repro.model import architecture

K_FILE_TYPES = ["Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K"]


def peers():
    """llama.cpp for the comparison tests; in CI its absence is a failure, not a skip."""
    try:
        from qwen3repro import llamacpp

        llamacpp.llama_cpp()
        return llamacpp
    except Exception:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python (the peers extra) must be installed in CI")
        pytest.skip("llama-cpp-python (pip install -e '.[peers]') not installed")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model, tmp_path_factory):
    """GGUF files of the tiny model, converted once per session and file type."""
    out_dir = tmp_path_factory.mktemp("gguf")
    made = {}

    def get(type_name: str) -> Path:
        if type_name not in made:
            made[type_name] = out_dir / f"qwen3-tiny-{type_name}.gguf"
            convert(tiny_model, type_name, made[type_name], name="qwen3-tiny")
        return made[type_name]

    return get


def planned_types(preset: str, type_name: str, has_imatrix: bool = False) -> dict[str, T]:
    arch = architecture.PRESETS[preset]
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, arch["num_hidden_layers"])
    shapes = {name_map.get_name(n, try_suffixes=(".weight",)): s for n, s in architecture.tensor_shapes(arch).items()}
    n_gqa = arch["num_attention_heads"] // arch["num_key_value_heads"]
    plan = tensor_plan.TensorPlan(type_name, arch["num_hidden_layers"], n_gqa, True, has_imatrix=has_imatrix)
    return {n: plan.choose(n, shapes[n]) for n in tensor_plan.loader_order(shapes)}


def test_file_types_are_one_table_that_the_schema_the_engine_and_the_cost_model_follow():
    """tensor_plan.FILE_TYPES names the file types; the quantizer registry covers every tensor type a
    plan can choose (each type's own and the fallbacks), the engine reads exactly those, and the
    schema's enums are the table's names: adding a type is one row there and its quantizer."""
    from qwen3repro.config import schema as config_schema
    from qwen3repro.engine.weights import SUPPORTED
    from qwen3repro.pipeline.time_limits import quantize_seconds

    chosen = {t for _, t in FILE_TYPES.values()} | set(tensor_plan.FALLBACK.values())
    assert chosen == set(quants.QUANTIZERS) == SUPPORTED
    schema = config_schema()
    assert schema["$defs"]["file_type"]["enum"] == list(FILE_TYPES)
    assert schema["properties"]["convert"]["properties"]["types"]["default"] == list(FILE_TYPES)
    takes = [name for name, (_, t) in FILE_TYPES.items() if t in quants.TAKES_IMATRIX]
    assert sorted(schema["$defs"]["imatrix_type"]["enum"]) == sorted(takes)
    assert all(quantize_seconds(10**6, name, 1) > 0 for name in FILE_TYPES)


def test_q4_k_m_of_the_0_6b_shape_has_llama_quantizes_tensor_mix():
    types = planned_types("qwen3-0.6b-shape", "Q4_K_M")
    counts = {t: list(types.values()).count(t) for t in set(types.values())}
    assert counts == {T.Q4_K: 168, T.Q6_K: 29, T.F32: 113}
    more_bits = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27}
    assert {i for i in range(28) if types[f"blk.{i}.attn_v.weight"] == T.Q6_K} == more_bits
    assert {i for i in range(28) if types[f"blk.{i}.ffn_down.weight"] == T.Q6_K} == more_bits
    assert types["token_embd.weight"] == T.Q6_K  # tied: the output matrix's type


@pytest.mark.parametrize("type_name", list(FILE_TYPES))
def test_norms_and_1d_tensors_stay_f32(type_name):
    types = planned_types("qwen3-0.6b-shape", type_name)
    assert all(t == T.F32 for n, t in types.items() if "norm" in n)


def test_rows_a_k_quant_cannot_hold_fall_back_like_llama_cpp():
    plan = tensor_plan.TensorPlan("Q4_K_S", 1, 2, True)
    assert plan.choose("blk.0.ffn_up.weight", (96, 160)) == T.Q5_0  # 160 % 256 != 0, 160 % 32 == 0
    assert plan.choose("blk.0.ffn_gate.weight", (96, 100)) == T.F16  # not even a multiple of 32
    assert plan.choose("token_embd.weight", (1000, 160)) == T.Q8_0  # the output matrix rule


def test_unknown_file_type_lists_the_supported_ones(tiny_model, tmp_path):
    proc = run_cli("convert", "--model", str(tiny_model), "--type", "Q7_K", "--out", str(tmp_path / "x.gguf"))
    assert_one_line_error(proc, "unknown file type 'Q7_K'", "Q4_K_M", "Q8_0", "BF16")
    assert list(tmp_path.iterdir()) == []


def test_output_in_a_missing_directory(tiny_model, tmp_path):
    proc = run_cli("convert", "--model", str(tiny_model), "--type", "F32", "--out", str(tmp_path / "no" / "x.gguf"))
    assert_one_line_error(proc, str(tmp_path / "no"), "does not exist")


def test_another_architecture_is_refused(tiny_model, tmp_path):
    src = tmp_path / "llama"
    shutil.copytree(tiny_model, src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(
        json.dumps({**config, "model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    proc = run_cli("convert", "--model", str(src), "--type", "F32", "--out", str(tmp_path / "x.gguf"))
    assert_one_line_error(proc, "model_type 'llama'", "qwen3")
    assert not (tmp_path / "x.gguf").exists()


def rewrite_weights(src: Path, dst: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(src / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})


def test_missing_tensor(tiny_model, tmp_path):
    rewrite_weights(tiny_model, tmp_path / "m", lambda t: t.pop("model.layers.2.mlp.up_proj.weight"))
    proc = run_cli("convert", "--model", str(tmp_path / "m"), "--type", "Q8_0", "--out", str(tmp_path / "x.gguf"))
    assert_one_line_error(proc, "missing tensor model.layers.2.mlp.up_proj.weight")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_mis_shaped_tensor(tiny_model, tmp_path):
    def shrink(t):
        t["model.layers.1.self_attn.k_proj.weight"] = t["model.layers.1.self_attn.k_proj.weight"][:128].clone()

    rewrite_weights(tiny_model, tmp_path / "m", shrink)
    proc = run_cli("convert", "--model", str(tmp_path / "m"), "--type", "Q4_K_M", "--out", str(tmp_path / "x.gguf"))
    assert_one_line_error(proc, "model.layers.1.self_attn.k_proj.weight", "[128, 256]", "[256, 256]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_existing_output_needs_force(tiny_gguf, tiny_model, tmp_path):
    out = tmp_path / "x.gguf"
    out.write_bytes(b"mine")
    proc = run_cli("convert", "--model", str(tiny_model), "--type", "F32", "--out", str(out))
    assert_one_line_error(proc, "already exists", "--force")
    assert out.read_bytes() == b"mine"


def test_manifest_records_file_and_tensors(tiny_gguf):
    path = tiny_gguf("Q4_K_M")
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["size"] == path.stat().st_size and len(manifest["sha256"]) == 64
    assert manifest["type_counts"] == {"F32": 17, "Q4_K": 24, "Q6_K": 5}
    assert 6.0 < manifest["bits_per_weight"] < 7.0
    by_name = {t["name"]: t for t in manifest["tensors"]}
    assert by_name["blk.0.attn_norm.weight"]["relative_rms_error"] == 0
    assert 0.05 < by_name["blk.0.ffn_up.weight"]["relative_rms_error"] < 0.1  # Q4_K on Gaussian weights


def test_dequantizing_our_blocks_reproduces_the_manifest_errors(tiny_model, tiny_gguf):
    path = tiny_gguf("Q3_K_M")
    manifest = {t["name"]: t for t in json.loads(path.with_suffix(".json").read_text())["tensors"]}
    source = SafetensorsSource(tiny_model)
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, 4)
    hf_names = {name_map.get_name(n, try_suffixes=(".weight",)): n for n in source.files}
    with GGUFFile(path) as f:
        for name, info in f.tensors.items():
            original = source.load(hf_names[name]).astype(np.float64)
            raw = f.raw(name).reshape(*info.shape[:-1], -1)
            decoded = raw.view(np.float32) if info.type == T.F32 else gguf.quants.dequantize(raw, info.type)
            error = np.linalg.norm(decoded.reshape(original.shape) - original) / np.linalg.norm(original)
            assert error == pytest.approx(manifest[name]["relative_rms_error"], rel=1e-5, abs=1e-12)


def test_gguf_metadata_as_llama_cpp_writes_it_for_qwen3(tiny_gguf):
    with GGUFFile(tiny_gguf("Q8_0")) as f:
        value = f.fields
    assert value["general.architecture"] == "qwen3" and value["general.file_type"] == 7
    assert value["general.quantization_version"] == 2
    assert value["qwen3.block_count"] == 4 and value["qwen3.embedding_length"] == 256
    assert value["qwen3.attention.head_count"] == 4 and value["qwen3.attention.head_count_kv"] == 2
    assert value["qwen3.attention.key_length"] == 128 and value["qwen3.rope.freq_base"] == 1e6
    assert value["tokenizer.ggml.model"] == "gpt2" and value["tokenizer.ggml.pre"] == "qwen2"
    assert value["tokenizer.ggml.bos_token_id"] == 151643 and value["tokenizer.ggml.eos_token_id"] == 151645
    assert value["tokenizer.ggml.padding_token_id"] == 151643 and value["tokenizer.ggml.add_bos_token"] is False
    tokens, types = value["tokenizer.ggml.tokens"], value["tokenizer.ggml.token_type"]
    assert len(tokens) == 151936 and tokens[9707] == "Hello" and tokens[151935] == "[PAD151935]"
    assert len(value["tokenizer.ggml.merges"]) == 151387 and value["tokenizer.ggml.merges"][0] == "Ġ Ġ"
    control, user = gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED
    assert [types[i] for i in (151643, 151644, 151659, 151664)] == [control] * 4  # <|fim_prefix|> looks special
    assert [types[i] for i in (151657, 151665, 151667, 151668)] == [user] * 4  # <tool_call>, <think>, ...
    assert types[151700] == gguf.TokenType.UNUSED and types[0] == gguf.TokenType.NORMAL


@pytest.mark.peers
@pytest.mark.parametrize("type_name", [t for t in FILE_TYPES if t != "F32"])
def test_llama_quantize_of_our_f32_gives_our_file(tiny_gguf, tmp_path, type_name):
    lib = peers()
    theirs = tmp_path / "llama.gguf"
    lib.quantize(tiny_gguf("F32"), theirs, type_name)
    assert lib.compare_tensors(tiny_gguf(type_name), theirs) == {
        "only_ours": [],
        "only_theirs": [],
        "type": [],
        "bytes": [],
    }


@pytest.mark.parametrize("type_name", list(FILE_TYPES))
def test_every_file_type_is_the_committed_references_bytes(repo, tiny_gguf, type_name):
    """config/reference/qwen3-tiny.yaml, which the pipeline's verify stage holds a run to."""
    exact = yaml.safe_load((repo / "config" / "reference" / "qwen3-tiny.yaml").read_text())["exact"]
    assert sha256_file(tiny_gguf(type_name)) == exact[f"gguf/qwen3-tiny-{type_name}.gguf"]


@pytest.mark.peers
@pytest.mark.parametrize("type_name", list(FILE_TYPES))
def test_llama_cpp_loads_every_file_type_and_evaluates_a_prompt(tiny_gguf, type_name):
    llm = peers().load(tiny_gguf(type_name), n_ctx=64)
    prompt = [151644, 872, 198, 9707, 1879, 151645, 198, 151644, 77091, 198]
    llm.eval(prompt)
    logits = np.asarray(llm.scores[: len(prompt)])
    assert logits.shape == (len(prompt), 151936) and np.isfinite(logits).all()


@pytest.mark.peers
def test_llama_cpp_f32_logits_match_transformers(tiny_model, tiny_gguf):
    """The F32 file means the same model: tensor names, RoPE style and norms all read as intended."""
    import torch
    from transformers import AutoModelForCausalLM

    prompt = [151644, 872, 198, 9707, 1879, 0, 11, 1246, 525, 498, 30, 151645, 198]
    reference = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        expected = reference(torch.tensor([prompt])).logits[0].numpy()
    llm = peers().load(tiny_gguf("F32"), n_ctx=64)
    llm.eval(prompt)
    got = np.asarray(llm.scores[: len(prompt)])
    assert np.abs(got - expected).max() < 2e-3  # llama.cpp keeps its KV cache in F16


def edge_case_weights(seed: int = 0) -> np.ndarray:
    """Rows of 256 (one super-block) that exercise every branch of the K-quant fits. The largest stay
    well below 65504: Q4_1 and Q5_1 store the block minimum in fp16, and llama.cpp refuses an inf."""
    rng = np.random.default_rng(seed)
    rows = [
        np.zeros(256),
        np.full(256, 0.5),
        np.full(256, -0.25),
        np.full(256, 3e-8),
        rng.standard_normal(256) * 1e-30,
        rng.standard_normal(256) * 1e-6,
        rng.standard_normal(256) * 1e3,
        rng.standard_normal(256) * 1e4,
        np.where(rng.random(256) < 0.95, 0, rng.standard_normal(256)),
        np.concatenate([np.zeros(128), rng.standard_normal(128)]),
        np.concatenate([rng.standard_normal(16), np.zeros(240)]),
        np.arange(256) / 64 - 2,
        (np.arange(256) % 8 - 3.5) * 0.5,
        np.abs(rng.standard_normal(256)),
        -np.abs(rng.standard_normal(256)),
        np.sign(rng.standard_normal(256)),
    ]
    outliers = rng.standard_normal((32, 256)) * 0.02
    outliers[np.arange(32), rng.integers(0, 256, 32)] = rng.choice([-1, 1], 32) * rng.uniform(0.5, 20, 32)
    rows = np.concatenate([np.stack(rows), outliers, rng.standard_normal((208, 256)) * 0.02])
    return rows.astype(np.float32)  # 256 x 256: the shape of the tiny model's k_proj


@pytest.mark.peers
@pytest.mark.parametrize(
    "type_name, qtype",
    [
        ("Q2_K", T.Q2_K),
        ("Q3_K_S", T.Q3_K),
        ("Q4_K_S", T.Q4_K),
        ("Q5_K_S", T.Q5_K),
        ("Q6_K", T.Q6_K),
        ("Q8_0", T.Q8_0),
        ("Q4_0", T.Q4_0),
        ("Q4_1", T.Q4_1),
        ("Q5_0", T.Q5_0),
        ("Q5_1", T.Q5_1),
    ],
)
def test_block_quantizers_match_llama_cpp_on_edge_cases(tiny_model, tmp_path_factory, type_name, qtype):
    """Zero, constant, tiny, huge, sparse and outlier blocks, quantized by llama.cpp with every tensor
    forced to one type (`pure`), against our quantizer on the same values."""
    lib = peers()
    base = tmp_path_factory.getbasetemp() / "edge-f32.gguf"
    edges = edge_case_weights()
    if not base.exists():

        def inject(tensors):
            import torch

            for i in range(4):
                key = f"model.layers.{i}.self_attn.k_proj.weight"  # [256, 256]
                tensors[key] = torch.from_numpy(np.roll(edges, i * 7, axis=0).copy())

        model = tmp_path_factory.getbasetemp() / "edge-model"
        rewrite_weights(tiny_model, model, inject)
        convert(model, "F32", base)
    theirs = tmp_path_factory.mktemp("edge") / f"{type_name}.gguf"
    lib.quantize(base, theirs, type_name, pure=True)
    got = lib.gguf_tensors(theirs)
    for i in range(4):
        name, values = f"blk.{i}.attn_k.weight", np.roll(edges, i * 7, axis=0)
        ours = quants.quantize(values, qtype)
        assert got[name][0] == qtype.name
        assert ours.tobytes() == got[name][1], f"{name}: rows differ: {differing_rows(ours, got[name][1])}"


def differing_rows(ours: np.ndarray, theirs: bytes) -> list[int]:
    theirs = np.frombuffer(theirs, np.uint8).reshape(ours.shape)
    return [int(i) for i in np.nonzero((ours != theirs).any(axis=1))[0]]


def test_k_quants_decode_zero_and_constant_blocks_exactly():
    x = np.zeros((3, 256), np.float32)
    x[1] = 0.5
    x[2] = -0.25
    for qtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
        decoded = gguf.quants.dequantize(quants.quantize(x, qtype), qtype)
        assert np.array_equal(decoded[0], np.zeros(256)), qtype
        assert np.abs(decoded[1:] - x[1:]).max() < 2e-3, qtype


def test_k_quant_rows_must_hold_whole_blocks():
    with pytest.raises(ValueError, match="multiple of 256"):
        quants.quantize(np.zeros((2, 128), np.float32), T.Q4_K)
