"""The NumPy forward pass: equal to transformers on F32 files, KV cache equal to recompute, bad files refused."""

import numpy as np
import pytest

from qwen3repro.engine import Qwen3, rope_cos_sin
from qwen3repro.errors import UserError
from qwen3repro.gguf_convert import convert


@pytest.fixture(scope="module")
def tiny_f32(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "qwen3-tiny-F32.gguf"
    convert(tiny_model, "F32", path)
    return path


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
    got = Qwen3(tiny_f32, n_ctx=1024).forward(tokens)
    assert got.shape == (n, 151936)
    assert np.abs(got - reference(tokens)).max() <= 1e-4


def test_kv_cache_decode_equals_full_recompute(tiny_f32):
    tokens = prompt(96)
    full = Qwen3(tiny_f32, n_ctx=128).forward(tokens)
    model = Qwen3(tiny_f32, n_ctx=128)
    pieces = [model.forward(tokens[:64])] + [model.forward(tokens[i : i + 1], start=i) for i in range(64, 96)]
    assert np.abs(np.concatenate(pieces) - full).max() <= 1e-5


def test_f32_weights_are_views_of_the_file(tiny_f32):
    model = Qwen3(tiny_f32, n_ctx=16)
    assert not model.token_embd.flags.owndata and not model.layers[0].q_proj.flags.owndata
    assert model.output is model.token_embd  # tied embeddings: no output tensor in the file


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
    truncated.write_bytes(tiny_f32.read_bytes()[: 20_000_000])
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
