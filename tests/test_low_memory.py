"""Low-memory mode: weights streamed from the file layer by layer give bitwise the resident logits."""

import tracemalloc

import numpy as np
import pytest

from qwen3repro.convert.converter import convert
from qwen3repro.engine.qwen3 import Qwen3
from qwen3repro.engine.weights import StreamedLayers, StreamedMatrix
from qwen3repro.errors import UserError


@pytest.fixture(scope="module")
def files(tiny_model, tiny_f32, tmp_path_factory):
    """The CI model as F32, a legacy quant and a K-quant mix (Q6_K output rows among Q4_K)."""
    out = {"F32": tiny_f32}
    for qtype in ("Q8_0", "Q4_K_M"):
        out[qtype] = tmp_path_factory.mktemp("low-memory") / f"qwen3-tiny-{qtype}.gguf"
        convert(tiny_model, qtype, out[qtype], name="qwen3-tiny")
    return out


def tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 151669, n)


@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_K_M"])
def test_low_memory_logits_are_bitwise_the_resident_ones(files, qtype):
    resident = Qwen3(files[qtype], n_ctx=256)
    streamed = Qwen3(files[qtype], n_ctx=256, low_memory=True)
    assert isinstance(streamed.weights.layers, StreamedLayers)
    assert isinstance(streamed.weights.lm_head, StreamedMatrix)
    prompt = tokens(150, seed=1)
    # a prefill (gemm), one position's logits (gemv), and the rest decoded token by token on the cache
    assert np.array_equal(streamed.forward(prompt[:120]), resident.forward(prompt[:120]))
    assert np.array_equal(
        streamed.forward(prompt[120:130], start=120, last_only=True),
        resident.forward(prompt[120:130], start=120, last_only=True),
    )
    for pos in range(130, 140):
        assert np.array_equal(
            streamed.forward(prompt[pos : pos + 1], start=pos), resident.forward(prompt[pos : pos + 1], start=pos)
        )


def test_low_memory_batched_decode_is_bitwise_the_resident_one(files):
    resident = Qwen3(files["Q4_K_M"], n_ctx=64, lanes=3)
    streamed = Qwen3(files["Q4_K_M"], n_ctx=64, lanes=3, low_memory=True)
    for model in (resident, streamed):
        for lane in range(3):
            model.forward(tokens(5 + lane, seed=lane), lane=lane)
    step = dict(tokens=[11, 2222, 33333], lanes=[0, 1, 2], positions=[5, 6, 7])
    assert np.array_equal(streamed.decode(**step), resident.decode(**step))


def test_low_memory_holds_a_fraction_of_the_resident_weights(files):
    """Traced allocations while loading and running a 64-token prefill: the resident model holds
    every weight in float32, the streamed one a layer, an output slice and the activations."""

    def peak(low_memory: bool) -> int:
        tracemalloc.start()
        model = Qwen3(files["Q4_K_M"], n_ctx=64, low_memory=low_memory)
        model.forward(tokens(64), last_only=True)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    resident, streamed = peak(False), peak(True)
    assert streamed < resident / 4, (streamed, resident)


def test_low_memory_refuses_the_textbook_pass_and_checks_the_file_up_front(files, tmp_path):
    with pytest.raises(UserError, match="without low_memory"):
        Qwen3(files["F32"], n_ctx=16, low_memory=True).forward_reference([1, 2, 3])
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(files["Q8_0"].read_bytes()[:-4096])
    with pytest.raises(UserError, match="outside the file"):
        Qwen3(truncated, low_memory=True)
