"""The tokenizer read from GGUF metadata: the same ids as Hugging Face `tokenizers`, streaming decode."""

from pathlib import Path

import pytest
from test_tokenizer import TEXTS, fuzz_texts, shakespeare_sample
from tokenizers import Tokenizer as HFTokenizer

import qwen3repro
from qwen3repro.engine.tokenizer import Tokenizer
from qwen3repro.errors import UserError
from qwen3repro.gguf_file import GGUFFile

CHINESE = (
    "子曰：学而时习之，不亦说乎？有朋自远方来，不亦乐乎？人不知而不愠，不亦君子乎？\n"
    "深度学习模型的量化可以显著减少内存占用，同时保持较高的精度。我们在中央处理器上运行推理。\n"
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
)
CODE = "".join(p.read_text("utf-8") for p in sorted(Path(qwen3repro.__file__).parent.rglob("*.py")))
SPECIALS = (
    "<|im_start|>user\nplease <think>reason</think> then<|im_end|><|endoftext|><tool_call>{}</tool_call>"
    " <|fim_prefix|>a<|fim_suffix|>b<|fim_middle|> [PAD151700] <|im_start <|im_end|>|> <<|im_end|>>"
)


@pytest.fixture(scope="module")
def ours(tiny_f32) -> Tokenizer:
    with GGUFFile(tiny_f32) as f:
        return Tokenizer.from_gguf(f)


@pytest.fixture(scope="module")
def reference(tiny_model) -> HFTokenizer:
    return HFTokenizer.from_file(str(tiny_model / "tokenizer.json"))


def corpus() -> str:
    """Several MB: Shakespeare, Chinese, code, emoji, whitespace runs and special-token strings."""
    parts = [
        shakespeare_sample(4_000_000),
        CHINESE * 200,
        CODE * 20,
        SPECIALS * 50,
        *TEXTS * 20,
        *fuzz_texts(2000, seed=5),
    ]
    return "\n".join(parts)


def test_ids_equal_hugging_face_tokenizers_on_a_several_mb_corpus(ours, reference):
    text = corpus()
    assert len(text.encode("utf-8")) > 4_000_000
    # in pieces, so a mismatch points at its text
    for start in range(0, len(text), 200_000):
        piece = text[start : start + 200_000]
        assert ours.encode(piece) == reference.encode(piece, add_special_tokens=False).ids, piece[:200]


@pytest.mark.parametrize("text", TEXTS + [CHINESE, SPECIALS] + fuzz_texts(100, seed=9))
def test_ids_equal_hugging_face_tokenizers_on_edge_cases(ours, reference, text):
    assert ours.encode(text) == reference.encode(text, add_special_tokens=False).ids
    assert ours.decode(ours.encode(text)) == reference.decode(
        reference.encode(text, add_special_tokens=False).ids, skip_special_tokens=False
    )


def test_known_ids_and_special_tokens_inside_text(ours):
    assert ours.encode("Hello") == [9707]
    assert ours.encode("<|im_start|>user\n") == [151644, 872, 198]
    assert ours.encode("<think>") == [151667]
    assert ours.encode("<|im_end|>", parse_special=False) != [151645]
    assert 151700 not in ours.encode("[PAD151700]")  # unused padding entries are never special


def test_streaming_decode_never_splits_a_character(ours):
    text = "Emoji 😀🎉👍🏽 👨‍👩‍👧‍👦, 中文字符 and ∑∫√ — done"
    ids = ours.encode(text)
    assert any(not ours.token_bytes(i).decode("utf-8", errors="ignore") for i in ids)  # some token is half a character
    stream = ours.stream()
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_control_tokens_are_left_out_when_asked(ours):
    ids = ours.encode("<|im_start|>assistant\n<think>\n\n</think>\n\nHi<|im_end|>")
    assert ours.decode(ids, skip_control=True) == "assistant\n<think>\n\n</think>\n\nHi"


def test_a_gguf_without_a_qwen_tokenizer_is_refused(tiny_f32, tmp_path):
    data = bytearray(tiny_f32.read_bytes())
    at = data.index(b"qwen2", data.index(b"tokenizer.ggml.pre"))
    data[at : at + 5] = b"llama"  # same length: every offset stays valid
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    with GGUFFile(bad) as f, pytest.raises(UserError, match="tokenizer 'gpt2'/'llama'"):
        Tokenizer.from_gguf(f)
