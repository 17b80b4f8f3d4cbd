"""The NumPy forward pass: equal to transformers on F32 files, KV cache equal to recompute, bad files refused."""

import random

import gguf
import numpy as np
import pytest

from qwen3repro.convert.converter import convert
from qwen3repro.engine.modeling import rope_cos_sin
from qwen3repro.engine.qwen3 import Qwen3
from qwen3repro.engine.weights import decode
from qwen3repro.errors import UserError


@pytest.fixture(scope="module")
def reference(tiny_model):
    """transformers' Qwen3ForCausalLM, float32, eager attention: logits for a token list."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="eager")

    def logits(tokens):
        with torch.no_grad():
            return model(torch.tensor(np.asarray(tokens)[None])).logits[0].numpy()

    return logits


def prompt(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 151669, n)


@pytest.mark.parametrize("n", [1, 7, 128, 512])
def test_f32_logits_equal_transformers(tiny_f32, reference, n):
    tokens = prompt(n, seed=n)
    model = Qwen3(tiny_f32, n_ctx=1024)
    expected = reference(tokens)
    for got in (model.forward_reference(tokens), model.forward(tokens)):
        assert got.shape == (n, 151936)
        assert np.abs(got - expected).max() <= 1e-4


def test_fast_forward_equals_the_readable_one(tiny_f32):
    model = Qwen3(tiny_f32, n_ctx=256)
    tokens = prompt(200, seed=3)
    plain = model.forward_reference(tokens)
    fast = Qwen3(tiny_f32, n_ctx=256)
    assert np.abs(fast.forward(tokens[:150]) - plain[:150]).max() <= 1e-5
    assert np.abs(fast.forward(tokens[150:], start=150, last_only=True) - plain[-1:]).max() <= 1e-5
    assert np.abs(fast.forward(tokens, logits_from=120) - plain[120:]).max() <= 1e-5


@pytest.mark.slow
def test_0_6b_shape_f32_equals_transformers_and_greedy_continuations_match(shape_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from qwen3repro.engine.generate import Generator
    from qwen3repro.engine.sampler import PRESETS

    path = tmp_path / "shape-F32.gguf"
    convert(shape_model, "F32", path)
    reference = AutoModelForCausalLM.from_pretrained(shape_model, dtype=torch.float32, attn_implementation="eager")
    tokens = prompt(512, seed=11)
    model = Qwen3(path, n_ctx=1024)
    with torch.no_grad():
        expected = reference(torch.tensor(tokens[None])).logits[0].numpy()
    assert np.abs(model.forward(tokens) - expected).max() <= 1e-4
    generator = Generator.from_gguf(path, n_ctx=1024)
    start = list(tokens[:32])
    ours = generator.generate(start, PRESETS["greedy"], max_new_tokens=64)
    with torch.no_grad():
        out = reference.generate(
            torch.tensor([start]),
            do_sample=False,
            max_new_tokens=64,
            min_new_tokens=64,
            eos_token_id=None,
            pad_token_id=151643,
        )
    assert ours.tokens == out[0, 32:].tolist()


def test_kv_cache_decode_equals_full_recompute(tiny_f32):
    tokens = prompt(96)
    full = Qwen3(tiny_f32, n_ctx=128).forward(tokens)
    model = Qwen3(tiny_f32, n_ctx=128)
    pieces = [model.forward(tokens[:64])] + [model.forward(tokens[i : i + 1], start=i) for i in range(64, 96)]
    assert np.abs(np.concatenate(pieces) - full).max() <= 1e-5


def test_a_prefill_on_two_threads_is_bitwise_the_one_thread_prefill(tiny_f32, monkeypatch):
    """Attention's heads and the norms', RoPE's and SwiGLU's rows go to threads side by side: a
    split, never a sum, so the logits are the same to the bit (a threaded BLAS product splits its
    output alike). Every pass is split here, whatever its rows."""
    from threadpoolctl import threadpool_limits

    from qwen3repro.engine import qwen3

    for kind in qwen3.ROWS_EACH:
        monkeypatch.setitem(qwen3.ROWS_EACH, kind, 16)

    tokens = prompt(150, seed=5)
    with threadpool_limits(1):
        one = Qwen3(tiny_f32, n_ctx=256).forward(tokens)
    with threadpool_limits(2):
        two = Qwen3(tiny_f32, n_ctx=256).forward(tokens)
    assert np.array_equal(one, two)


def test_f32_weights_are_views_of_the_file(tiny_f32):
    model = Qwen3(tiny_f32, n_ctx=16)
    w = model.weights
    assert not w.embed_tokens.flags.owndata and not w.layers[0].q_proj.flags.owndata
    # the converter writes q/k/v and gate/up side by side, so even the stacked matrices are views
    assert not w.layers[0].qkv_proj.flags.owndata and not w.layers[0].gate_up_proj.flags.owndata
    assert w.lm_head is w.embed_tokens  # tied embeddings: no output tensor in the file


def test_rope_angles_match_transformers_float32():
    import torch
    from transformers import Qwen3Config
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

    config = Qwen3Config(head_dim=128, rope_theta=1e6, hidden_size=256, num_attention_heads=4)
    rotary = Qwen3RotaryEmbedding(config)
    positions = torch.arange(0, 4096, 37)[None]
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    ours_cos, ours_sin = rope_cos_sin(positions[0].numpy(), 128, 1e6)
    assert np.abs(ours_cos - cos[0].numpy()).max() < 1e-5 and np.abs(ours_sin - sin[0].numpy()).max() < 1e-5


def test_quantized_file_runs_close_to_f32(tiny_model, tiny_f32, tmp_path):
    q8 = tmp_path / "q8.gguf"
    convert(tiny_model, "Q8_0", q8)
    tokens = prompt(32)
    f32 = Qwen3(tiny_f32, n_ctx=64).forward(tokens)
    got = Qwen3(q8, n_ctx=64).forward(tokens)
    assert np.abs(got - f32).max() < 0.05 * np.abs(f32).max()
    assert (got.argmax(-1) == f32.argmax(-1)).mean() > 0.9


def test_bad_files_and_inputs_are_one_line_errors(tiny_f32, tmp_path):
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"not a model at all, just text" * 10)
    with pytest.raises(UserError, match="not a GGUF file"):
        Qwen3(not_gguf)
    truncated = tmp_path / "t.gguf"
    truncated.write_bytes(tiny_f32.read_bytes()[:20_000_000])
    with pytest.raises(UserError, match="outside the file|truncated"):
        Qwen3(truncated)
    model = Qwen3(tiny_f32, n_ctx=8)
    with pytest.raises(UserError, match="do not fit the context of 8"):
        model.forward(prompt(9))
    with pytest.raises(UserError, match="token ids"):
        model.forward([151936])


def test_another_architecture_is_refused(tiny_f32, tmp_path):
    gguf_path = tmp_path / "m.gguf"
    data = bytearray(tiny_f32.read_bytes())
    at = data.index(b"qwen3", 0, 4096)  # general.architecture's value; same length keeps offsets valid
    data[at : at + 5] = b"llama"
    gguf_path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="architecture 'llama'"):
        Qwen3(gguf_path)


# ----------------------------------------------------------------------------- small hand-made files


def write_small_qwen3(path, order=None, types=None, arch="qwen3", seed=0, drop=()):
    """A Qwen3 GGUF of 64 tokens and width 32, in any tensor order and types, through gguf-py."""
    rng = np.random.default_rng(seed)
    d, n_heads, n_kv, hd, ffn, vocab, n_layers = 32, 4, 2, 16, 64, 64, 2
    shapes = {"token_embd.weight": (vocab, d), "output_norm.weight": (d,)}
    for i in range(n_layers):
        b = f"blk.{i}."
        shapes.update(
            {
                b + "attn_norm.weight": (d,),
                b + "attn_q.weight": (n_heads * hd, d),
                b + "attn_k.weight": (n_kv * hd, d),
                b + "attn_v.weight": (n_kv * hd, d),
                b + "attn_q_norm.weight": (hd,),
                b + "attn_k_norm.weight": (hd,),
                b + "attn_output.weight": (d, n_heads * hd),
                b + "ffn_norm.weight": (d,),
                b + "ffn_gate.weight": (ffn, d),
                b + "ffn_up.weight": (ffn, d),
                b + "ffn_down.weight": (d, ffn),
            }
        )
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(n_layers)
    writer.add_context_length(128)
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(1e6)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_key_length(hd)
    weights = {
        name: (1 + 0.1 * rng.standard_normal(s) if len(s) == 1 else 0.2 * rng.standard_normal(s)).astype(np.float32)
        for name, s in sorted(shapes.items())
    }
    for name in order or sorted(shapes):
        if name in drop:
            continue
        w = weights[name]
        qtype = (types or {}).get(name, gguf.GGMLQuantizationType.F32)
        data = w if qtype == gguf.GGMLQuantizationType.F32 else gguf.quants.quantize(w, qtype)
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


def test_any_tensor_order_loads_the_same_model(tmp_path):
    """llama.cpp's own files order tensors by name: q/k/v apart, so the engine stacks copies."""
    sorted_path, forward_path = tmp_path / "sorted.gguf", tmp_path / "forward.gguf"
    weights = write_small_qwen3(sorted_path)
    from qwen3repro.convert.tensor_plan import loader_order

    write_small_qwen3(forward_path, order=loader_order(weights))
    a, b = Qwen3(sorted_path, n_ctx=32), Qwen3(forward_path, n_ctx=32)
    assert a.weights.layers[0].qkv_proj.flags.owndata and not b.weights.layers[0].qkv_proj.flags.owndata
    assert np.array_equal(a.weights.layers[1].qkv_proj, b.weights.layers[1].qkv_proj)
    assert np.array_equal(a.weights.layers[1].up_proj, weights["blk.1.ffn_up.weight"])
    tokens = [1, 5, 9, 63]
    assert np.array_equal(a.forward(tokens), b.forward(tokens))


def test_mixed_quant_types_dequantize_into_one_stacked_matrix(tmp_path):
    path = tmp_path / "mixed.gguf"
    Q8, Q4 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0
    weights = write_small_qwen3(
        path, types={"blk.0.attn_q.weight": Q8, "blk.0.attn_v.weight": Q4, "token_embd.weight": Q8}
    )
    layer = Qwen3(path, n_ctx=8).weights.layers[0]
    expected_q = gguf.quants.dequantize(gguf.quants.quantize(weights["blk.0.attn_q.weight"], Q8), Q8)
    assert np.array_equal(layer.q_proj, expected_q)
    assert np.array_equal(layer.k_proj, weights["blk.0.attn_k.weight"])


def test_a_missing_tensor_and_an_unsupported_type_are_named(tmp_path):
    missing = tmp_path / "missing.gguf"
    write_small_qwen3(missing, drop={"blk.1.ffn_up.weight"})
    with pytest.raises(UserError, match="missing tensor blk.1.ffn_up.weight"):
        Qwen3(missing)
    iq = tmp_path / "iq.gguf"
    write_small_qwen3(iq)
    data = bytearray(iq.read_bytes())
    name = b"blk.0.attn_k.weight"
    at = data.index(name) + len(name)  # then n_dims (u32), dims (2 x u64), type (u32)
    data[at + 4 + 16 : at + 4 + 16 + 4] = int(gguf.GGMLQuantizationType.I8).to_bytes(4, "little")
    iq.write_bytes(bytes(data))
    with pytest.raises(UserError, match="blk.0.attn_k.weight.*(unsupported type I8|lies outside|overlap)"):
        Qwen3(iq)


def test_loader_fuzz_finds_only_one_line_errors(tmp_path):
    """Mutated and truncated copies of a small model: each loads (and runs) or is a UserError."""
    base = tmp_path / "base.gguf"
    write_small_qwen3(base)
    original = base.read_bytes()
    header_end = original.index(b"blk.1.ffn_up.weight") + 64  # metadata and tensor directory
    rng = random.Random(1)
    outcomes = {"loaded": 0, "refused": 0}
    target = tmp_path / "fuzz.gguf"
    for case in range(400):
        data = bytearray(original)
        if case % 10 == 0:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(header_end)
                data[at] = rng.choice([0, 1, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        target.write_bytes(bytes(data))
        try:
            model = Qwen3(target, n_ctx=16)
            model.forward([1, 2, 3])
            outcomes["loaded"] += 1
        except UserError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100 and outcomes["loaded"] > 0, outcomes


@pytest.mark.parametrize("qtype", [gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16])
def test_float_casts_equal_gguf_py_dequantize(qtype):
    values = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32) * 10
    raw = gguf.quants.quantize(values, qtype).view(np.uint8).reshape(8, -1)
    assert np.array_equal(decode(raw, qtype), gguf.quants.dequantize(raw, qtype))
