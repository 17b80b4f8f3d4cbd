"""The GGUF metadata of a Qwen3 file as llama.cpp's convert_hf_to_gguf.py writes it: hyperparameters and tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import gguf

from qwen3repro.engine.tokenizer import PRETOKENIZER_REGEX
from qwen3repro.errors import UserError


def vocab_for_gguf(model_dir: Path, tokenizer: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens padded to vocab_size and their types, as convert_hf_to_gguf's get_vocab_base makes them."""
    pre = tokenizer.get("pre_tokenizer") or {}
    regexes = [p.get("pattern", {}).get("Regex") for p in pre.get("pretokenizers", []) if p.get("type") == "Split"]
    if regexes != [PRETOKENIZER_REGEX]:
        raise UserError(f"{model_dir / 'tokenizer.json'}: not the Qwen2 pre-tokenizer (llama.cpp pre 'qwen2')")
    by_id = {i: tok for tok, i in tokenizer["model"]["vocab"].items()}
    added = {t["id"]: t for t in tokenizer.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in added:
            content = added[i]["content"]
            looks_special = content.startswith("<|") and content.endswith("|>")
            tokens.append(content)
            types.append(
                gguf.TokenType.CONTROL if added[i]["special"] or looks_special else gguf.TokenType.USER_DEFINED
            )
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    return tokens, [int(t) for t in types]


def add_metadata(writer: gguf.GGUFWriter, model_dir: Path, name: str, arch: dict, ftype) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(arch["num_hidden_layers"])
    writer.add_context_length(arch["max_position_embeddings"])
    writer.add_embedding_length(arch["hidden_size"])
    writer.add_feed_forward_length(arch["intermediate_size"])
    writer.add_head_count(arch["num_attention_heads"])
    writer.add_head_count_kv(arch["num_key_value_heads"])
    writer.add_rope_freq_base(float(arch["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(arch["rms_norm_eps"]))
    writer.add_key_length(arch["head_dim"])
    writer.add_value_length(arch["head_dim"])
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text("utf-8"))
    tokens, types = vocab_for_gguf(model_dir, tokenizer, arch["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # Merges as SpecialVocab writes them ("a b"), taken from the tokenizer.json already in hand:
    # SpecialVocab's own pass over 151k merges doubles the metadata time.
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]])
    gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
