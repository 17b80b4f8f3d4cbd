"""The GGUF reader: same content as gguf-py's, and only one-line errors on damaged or hostile files."""

import random

import gguf
import numpy as np
import pytest

from qwen3repro.errors import UserError
from qwen3repro.gguf_file import GGUFFile


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    writer = gguf.GGUFWriter(path, "qwen3")
    writer.add_block_count(2)
    writer.add_token_list(["a", "b", "<|im_start|>", "ü"])
    writer.add_token_types([1, 1, 3, 1])
    writer.add_float32("qwen3.rope.freq_base", 1e6)
    writer.add_bool("tokenizer.ggml.add_bos_token", False)
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((4, 64)).astype(np.float32))
    writer.add_tensor(
        "blk.0.attn_q.weight",
        gguf.quants.quantize(rng.standard_normal((8, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0),
        raw_dtype=gguf.GGMLQuantizationType.Q8_0,
    )
    writer.add_tensor("output_norm.weight", np.ones(64, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_reads_what_gguf_py_reads(small_gguf):
    reader = gguf.GGUFReader(str(small_gguf))
    with GGUFFile(small_gguf) as f:
        for key, field in reader.fields.items():
            if not key.startswith("GGUF."):
                expected = field.contents()
                assert (list(f.fields[key]) if isinstance(expected, list) else f.fields[key]) == expected, key
        for t in reader.tensors:
            info = f.tensors[t.name]
            assert info.type == t.tensor_type and f.raw(t.name).tobytes() == np.asarray(t.data).tobytes()
        assert f.tensors["blk.0.attn_q.weight"].shape == (8, 64)


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(UserError, match="not a GGUF file"):
        GGUFFile(bad)


@pytest.mark.parametrize("keep", [10, 30, 200, -20])
def test_truncated_file(small_gguf, tmp_path, keep):
    data = small_gguf.read_bytes()
    bad = tmp_path / "t.gguf"
    bad.write_bytes(data[:keep])
    with pytest.raises(UserError):
        GGUFFile(bad)


def test_fuzzed_files_raise_only_one_line_errors(small_gguf, tmp_path):
    """Random byte flips, insertions and cuts anywhere in the header: a UserError or a valid read."""
    data = small_gguf.read_bytes()
    header_end = min(info.offset for info in GGUFFile(small_gguf).tensors.values())
    rng = random.Random(0)
    bad = tmp_path / "f.gguf"
    outcomes = {"error": 0, "read": 0}
    for _ in range(1500):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(header_end)
            choice = rng.random()
            if choice < 0.6:
                mutated[i] = rng.randrange(256)
            elif choice < 0.8:
                mutated[i : i + 8] = rng.randbytes(8) if rng.random() < 0.5 else b"\xff" * 8
            else:
                del mutated[i : i + rng.randint(1, 16)]
        bad.write_bytes(bytes(mutated))
        try:
            with GGUFFile(bad) as f:
                for name in f.tensors:
                    f.raw(name)
            outcomes["read"] += 1
        except UserError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
    assert outcomes["error"] > 500 and outcomes["read"] > 10
