"""Qwen3's config.json: the architecture presets, the file itself, and the tensor layout it implies."""

from __future__ import annotations

from qwen3repro.errors import UserError

# The architecture values of Qwen/Qwen3-0.6B's config.json (see shared/reference/qwen3-0.6b-facts.md).
QWEN3_0_6B = {
    "hidden_size": 1024,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": True,
}

# The rest of the dense family: what differs from Qwen3-0.6B in each config.json (see
# shared/reference/qwen3-family-facts.md). From 8B up the output matrix is its own (lm_head.weight).
FAMILY = {
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16),
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32),
    "qwen3-8b": dict(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        tie_word_embeddings=False,
    ),
    "qwen3-14b": dict(
        hidden_size=5120,
        intermediate_size=17408,
        num_hidden_layers=40,
        num_attention_heads=40,
        tie_word_embeddings=False,
    ),
    "qwen3-32b": dict(
        hidden_size=5120,
        intermediate_size=25600,
        num_hidden_layers=64,
        num_attention_heads=64,
        tie_word_embeddings=False,
    ),
}

PRESETS: dict[str, dict] = {
    # Exactly Qwen3-0.6B, random weights: speed and memory at true scale.
    "qwen3-0.6b-shape": dict(QWEN3_0_6B),
    # Exactly each larger Qwen3, random weights.
    **{f"{name}-shape": dict(QWEN3_0_6B, **values) for name, values in FAMILY.items()},
    # The CI model: the real vocabulary and head_dim, everything else small. Row lengths are
    # multiples of 256 so that every K-quant block type applies instead of its fallback.
    "qwen3-tiny": dict(
        QWEN3_0_6B,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=128,
        intermediate_size=768,
    ),
    # The default model, pretrained on Shakespeare in the pipeline (source: trained): Qwen3-0.6B in
    # miniature. Every matrix's rows are a multiple of 256 (hidden_size, q_dim = 4 x 128 and
    # intermediate_size), so every K-quant, IQ and legacy block applies to every matrix with no
    # fallback, as at 0.6B; head_dim 128 with q/k norms, grouped-query attention 2:1 (0.6B: 16:8),
    # tied embeddings. Training pays for the 151,936-way output layer only over the tokens the text
    # contains (train_ops.Vocabulary).
    "qwen3-shakespeare": dict(
        QWEN3_0_6B,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=128,
        intermediate_size=768,
    ),
}

ARCHITECTURE_KEYS = tuple(QWEN3_0_6B)


def resolve(preset: str, overrides: dict | None = None) -> dict:
    """A preset's architecture values with `overrides` applied, checked for consistency."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    arch = dict(PRESETS[preset], **(overrides or {}))
    unknown = sorted(set(arch) - set(ARCHITECTURE_KEYS))
    if unknown:
        raise UserError(f"unknown architecture key {unknown[0]!r}; known: {', '.join(ARCHITECTURE_KEYS)}")
    if arch["num_attention_heads"] % arch["num_key_value_heads"]:
        raise UserError(
            "architecture.num_attention_heads must be a multiple of num_key_value_heads "
            f"({arch['num_attention_heads']} vs {arch['num_key_value_heads']})"
        )
    if arch["head_dim"] % 2:
        raise UserError(f"architecture.head_dim must be even for RoPE, got {arch['head_dim']}")
    return arch


def config_json(arch: dict, torch_dtype: str = "bfloat16") -> dict:
    """config.json as Qwen publishes it for Qwen3-0.6B, with the given architecture values.

    Written by hand rather than by Qwen3Config.save_pretrained so that the file has the Hub's keys
    whatever transformers version is installed (v5 renames torch_dtype and rope_theta).
    """
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "head_dim": arch["head_dim"],
        "hidden_act": "silu",
        "hidden_size": arch["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": arch["intermediate_size"],
        "max_position_embeddings": arch["max_position_embeddings"],
        "max_window_layers": arch["num_hidden_layers"],
        "model_type": "qwen3",
        "num_attention_heads": arch["num_attention_heads"],
        "num_hidden_layers": arch["num_hidden_layers"],
        "num_key_value_heads": arch["num_key_value_heads"],
        "rms_norm_eps": arch["rms_norm_eps"],
        "rope_scaling": None,
        "rope_theta": arch["rope_theta"],
        "sliding_window": None,
        "tie_word_embeddings": arch["tie_word_embeddings"],
        "torch_dtype": torch_dtype,
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": arch["vocab_size"],
    }


def generation_config_json() -> dict:
    """generation_config.json of Qwen3-0.6B: the thinking-mode sampling preset."""
    return {
        "bos_token_id": 151643,
        "do_sample": True,
        "eos_token_id": [151645, 151643],
        "pad_token_id": 151643,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
        "transformers_version": "4.51.0",
    }


def tensor_shapes(arch: dict) -> dict[str, tuple[int, ...]]:
    """Hugging Face tensor names and shapes ([out, in] for linears) of a Qwen3ForCausalLM."""
    d, hd, ff, vocab = arch["hidden_size"], arch["head_dim"], arch["intermediate_size"], arch["vocab_size"]
    q_dim, kv_dim = arch["num_attention_heads"] * hd, arch["num_key_value_heads"] * hd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, d)}
    for i in range(arch["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (d,),
                p + "self_attn.q_proj.weight": (q_dim, d),
                p + "self_attn.k_proj.weight": (kv_dim, d),
                p + "self_attn.v_proj.weight": (kv_dim, d),
                p + "self_attn.o_proj.weight": (d, q_dim),
                p + "self_attn.q_norm.weight": (hd,),
                p + "self_attn.k_norm.weight": (hd,),
                p + "post_attention_layernorm.weight": (d,),
                p + "mlp.gate_proj.weight": (ff, d),
                p + "mlp.up_proj.weight": (ff, d),
                p + "mlp.down_proj.weight": (d, ff),
            }
        )
    shapes["model.norm.weight"] = (d,)
    if not arch["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, d)
    return shapes


def n_parameters(arch: dict) -> int:
    n = 0
    for shape in tensor_shapes(arch).values():
        size = 1
        for s in shape:
            size *= s
        n += size
    return n
