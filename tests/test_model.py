"""Synthetic Qwen3 models: loadable by transformers offline, the official chat template, exact 0.6B shape."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jinja2
import numpy as np
import pytest
from helpers import SHARED_REFERENCE

from qwen3repro.model import architecture, synthetic, tokenizer_files

CONVERSATIONS = {
    "system_user": [
        {"role": "system", "content": "You are an AI expert running orientation for new hires."},
        {"role": "user", "content": "What is attention?"},
    ],
    "user_only": [{"role": "user", "content": "Write a haiku about GGUF."}],
    "multi_turn_with_thinking": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "<think>\nAgain.\n</think>\n\n6"},
        {"role": "user", "content": "Thanks!"},
    ],
}


def test_chat_template_is_the_official_one_byte_for_byte():
    reference = SHARED_REFERENCE / "qwen3-chat-template.jinja"
    if not reference.is_file():
        pytest.skip(f"{reference} not present")
    assert tokenizer_files.chat_template().encode() == reference.read_bytes()


def test_model_dir_files(tiny_model: Path):
    names = {p.name for p in tiny_model.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
        "manifest.json",
    } <= names
    config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    assert config["chat_template"] == tokenizer_files.chat_template()
    manifest = json.loads((tiny_model / "manifest.json").read_text())
    assert manifest["source"] == "synthetic" and manifest["seed"] == 0
    assert set(manifest["files"]) == names - {"manifest.json"}


LOAD_AND_RENDER = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, convs = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
out = {"class": type(model).__name__, "n_params": sum(p.numel() for p in model.parameters()),
       "tied": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
       "eos": tok.eos_token_id, "pad": tok.pad_token_id, "len": len(tok),
       "generation_eos": model.generation_config.eos_token_id,
       "logits_shape": list(model(torch.tensor([[9707, 1879]])).logits.shape), "rendered": {}}
for name, msgs in convs.items():
    for thinking in (True, False):
        for agp in (True, False):
            out["rendered"][f"{name}/{thinking}/{agp}"] = tok.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=agp, enable_thinking=thinking)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def loaded(tiny_model: Path) -> dict:
    """Load the model and tokenizer with transformers in a fresh process that cannot reach the Hub."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_AND_RENDER, str(tiny_model), json.dumps(CONVERSATIONS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_transformers_loads_the_synthetic_model_offline(loaded):
    arch = architecture.PRESETS["qwen3-tiny"]
    assert loaded["class"] == "Qwen3ForCausalLM"
    assert loaded["n_params"] == architecture.n_parameters(arch)
    assert loaded["tied"] is True
    assert loaded["logits_shape"] == [1, 2, 151936]
    assert loaded["eos"] == 151645 and loaded["pad"] == 151643 and loaded["len"] == 151669
    assert loaded["generation_eos"] == [151645, 151643]


@pytest.mark.parametrize("name", CONVERSATIONS)
@pytest.mark.parametrize("thinking", [True, False])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_apply_chat_template_equals_jinja2_rendering_of_the_reference(loaded, name, thinking, add_generation_prompt):
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    expected = env.from_string(tokenizer_files.chat_template()).render(
        messages=CONVERSATIONS[name], add_generation_prompt=add_generation_prompt, enable_thinking=thinking
    )
    assert loaded["rendered"][f"{name}/{thinking}/{add_generation_prompt}"] == expected


def test_thinking_off_appends_an_empty_think_block(loaded):
    on = loaded["rendered"]["system_user/True/True"]
    off = loaded["rendered"]["system_user/False/True"]
    assert on.endswith("<|im_start|>assistant\n")
    assert off == on + "<think>\n\n</think>\n\n"


def test_earlier_assistant_turns_keep_only_the_text_after_think(loaded):
    rendered = loaded["rendered"]["multi_turn_with_thinking/True/True"]
    assert "Add them." not in rendered and "Again." not in rendered
    assert "<|im_start|>assistant\n4<|im_end|>" in rendered


def test_0_6b_shape_is_exactly_qwen3_0_6b():
    arch = architecture.PRESETS["qwen3-0.6b-shape"]
    assert architecture.n_parameters(arch) == 596_049_920
    config = architecture.config_json(arch)
    assert {
        k: config[k]
        for k in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "intermediate_size",
            "hidden_act",
            "rope_theta",
            "rope_scaling",
            "rms_norm_eps",
            "vocab_size",
            "tie_word_embeddings",
            "max_position_embeddings",
            "attention_bias",
            "bos_token_id",
            "eos_token_id",
            "torch_dtype",
            "model_type",
        )
    } == {
        "hidden_size": 1024,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 3072,
        "hidden_act": "silu",
        "rope_theta": 1000000,
        "rope_scaling": None,
        "rms_norm_eps": 1e-6,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "max_position_embeddings": 40960,
        "attention_bias": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "torch_dtype": "bfloat16",
        "model_type": "qwen3",
    }
    assert config["architectures"] == ["Qwen3ForCausalLM"]


def test_transformers_counts_the_same_parameters_for_the_0_6b_shape():
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**architecture.config_json(architecture.PRESETS["qwen3-0.6b-shape"]))
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == 596_049_920
    expected = architecture.tensor_shapes(architecture.PRESETS["qwen3-0.6b-shape"])
    assert {n: tuple(p.shape) for n, p in model.named_parameters()} == expected


def small_arch(**overrides):
    return architecture.resolve("qwen3-tiny", {"num_hidden_layers": 2, **overrides})


def test_same_seed_same_weights_other_seed_other_weights():
    a = dict(synthetic.random_weights(small_arch(), seed=0))
    b = dict(synthetic.random_weights(small_arch(), seed=0))
    c = dict(synthetic.random_weights(small_arch(), seed=1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(np.array_equal(a[k], c[k]) for k in a)


def test_a_tensor_does_not_depend_on_the_others():
    two = dict(synthetic.random_weights(small_arch(), seed=0))
    three = dict(synthetic.random_weights(small_arch(num_hidden_layers=3), seed=0))
    assert all(np.array_equal(two[k], three[k]) for k in two)


def test_norm_weights_are_not_all_ones():
    """An engine that skipped a norm weight must disagree with the reference."""
    weights = dict(synthetic.random_weights(small_arch(), seed=0))
    q_norm = weights["model.layers.0.self_attn.q_norm.weight"]
    assert q_norm.shape == (128,) and 0.05 < q_norm.std() < 0.2 and abs(q_norm.mean() - 1) < 0.05


@pytest.mark.slow
def test_0_6b_shape_model_builds_with_the_exact_parameter_count(shape_model):
    from safetensors import safe_open

    with safe_open(str(shape_model / "model.safetensors"), "pt") as f:
        n = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert n == 596_049_920 and dtypes == {"BF16"}
