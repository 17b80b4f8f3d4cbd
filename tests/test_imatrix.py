"""Importance matrices: collected as llama-imatrix collects them, read in both of its file forms, and
quantization with one (and IQ4_NL / IQ4_XS) byte for byte as llama-quantize; the bad inputs."""

import subprocess

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from helpers import assert_one_line_error, llama_tool, run_cli
from test_convert import differing_rows, edge_case_weights, peers, planned_types, rewrite_weights

from qwen3repro.convert import imatrix, quants, tensor_plan
from qwen3repro.convert.calibrate import write_imatrix
from qwen3repro.convert.converter import convert
from qwen3repro.gguf_file import GGUFFile

IMATRIX_TYPES = [t for t, (_, q) in tensor_plan.FILE_TYPES.items() if q in quants.TAKES_IMATRIX]
PURE_TYPES = {
    "Q2_K": T.Q2_K,
    "Q3_K_S": T.Q3_K,
    "Q4_K_S": T.Q4_K,
    "Q5_K_S": T.Q5_K,
    "Q6_K": T.Q6_K,
    "Q4_0": T.Q4_0,
    "Q4_1": T.Q4_1,
    "Q5_0": T.Q5_0,
    "Q5_1": T.Q5_1,
    "IQ4_NL": T.IQ4_NL,
    "IQ4_XS": T.IQ4_XS,
}


def llama_quantize(src, dst, type_name: str, matrix=None, pure: bool = False) -> None:
    args = [str(llama_tool("llama-quantize"))] + (["--pure"] if pure else [])
    args += ["--imatrix", str(matrix)] if matrix else []
    proc = subprocess.run(args + [str(src), str(dst), type_name], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def random_imatrix(gguf, seed: int = 0) -> imatrix.ImportanceMatrix:
    """An entry for every block matrix, its column weights spread over six decades with one column in
    twenty at exactly zero (a dead input), and one matrix all zero."""
    rng = np.random.default_rng(seed)
    matrix = imatrix.ImportanceMatrix(datasets=["random"], chunk_count=2, chunk_size=512)
    with GGUFFile(gguf) as f:
        for name, info in f.tensors.items():
            if name.startswith("blk.") and len(info.shape) == 2:
                n = info.shape[1]
                values = (rng.standard_normal(n) ** 2 * 10.0 ** rng.integers(-3, 3, n)).astype(np.float32)
                values[rng.random(n) < 0.05] = 0
                matrix.sums[name] = (values * 1024).reshape(1, -1)
                matrix.counts[name] = np.array([1024], np.float32)
    matrix.sums["blk.3.attn_k.weight"][:] = 0
    return matrix


@pytest.fixture(scope="module")
def edge_f32(tiny_model, tmp_path_factory):
    """The tiny model with every layer's k_proj made of edge-case rows, as F32 GGUF."""
    edges = edge_case_weights()

    def inject(tensors):
        import torch

        for i in range(4):
            tensors[f"model.layers.{i}.self_attn.k_proj.weight"] = torch.from_numpy(
                np.roll(edges, i * 7, axis=0).copy()
            )

    base = tmp_path_factory.mktemp("imatrix-edge")
    rewrite_weights(tiny_model, base / "model", inject)
    convert(base / "model", "F32", base / "edge-F32.gguf")
    return base / "edge-F32.gguf"


@pytest.fixture(scope="module")
def tiny_imatrix(tiny_f32, tmp_path_factory):
    """The tiny model's importance matrix, collected by the engine over Shakespeare's training works."""
    from qwen3repro.model import shakespeare

    base = tmp_path_factory.mktemp("imatrix")
    train, _ = shakespeare.split(10)
    (base / "calibration.txt").write_text(shakespeare.joined(train)[:60000])
    write_imatrix(tiny_f32, base / "calibration.txt", base / "tiny.imatrix.gguf", n_ctx=128, chunks=4)
    return base / "tiny.imatrix.gguf"


@pytest.mark.peers
@pytest.mark.parametrize("type_name", list(PURE_TYPES))
def test_weighted_quantizers_match_llama_quantize_on_edge_cases(edge_f32, tmp_path, type_name):
    """Zero, constant, tiny, huge, sparse and outlier rows under column weights over six decades,
    zero columns and an all-zero matrix: every tensor forced to one type (`--pure`)."""
    peers()
    matrix = random_imatrix(edge_f32)
    matrix.write(tmp_path / "random.imatrix.gguf")
    llama_quantize(edge_f32, tmp_path / "theirs.gguf", type_name, tmp_path / "random.imatrix.gguf", pure=True)
    with GGUFFile(tmp_path / "theirs.gguf") as theirs, GGUFFile(edge_f32) as source:
        for i in range(4):
            name = f"blk.{i}.attn_k.weight"
            values = source.raw(name).view(np.float32).reshape(source.tensors[name].shape)
            ours = quants.quantize(values, PURE_TYPES[type_name], matrix.importance(name))
            assert theirs.tensors[name].type == PURE_TYPES[type_name]
            assert ours.tobytes() == theirs.raw(name).tobytes(), (
                f"{name}: rows {differing_rows(ours, theirs.raw(name))}"
            )


@pytest.mark.peers
@pytest.mark.parametrize("type_name", ["IQ4_NL", "IQ4_XS"])
def test_iq4_quantizers_match_llama_quantize_on_edge_cases_without_a_matrix(edge_f32, tmp_path, type_name):
    peers()
    llama_quantize(edge_f32, tmp_path / "theirs.gguf", type_name, pure=True)
    with GGUFFile(tmp_path / "theirs.gguf") as theirs, GGUFFile(edge_f32) as source:
        for i in range(4):
            name = f"blk.{i}.attn_k.weight"
            values = source.raw(name).view(np.float32).reshape(source.tensors[name].shape)
            ours = quants.quantize(values, PURE_TYPES[type_name], None)
            assert ours.tobytes() == theirs.raw(name).tobytes(), (
                f"{name}: rows {differing_rows(ours, theirs.raw(name))}"
            )


@pytest.mark.peers
@pytest.mark.parametrize("type_name", IMATRIX_TYPES)
def test_imat_files_are_llama_quantizes_with_the_same_matrix(tiny_model, tiny_f32, tiny_imatrix, tmp_path, type_name):
    """Every type that takes a matrix, with llama-quantize's own tensor mix, from the engine's matrix."""
    lib = peers()
    manifest = convert(tiny_model, type_name, tmp_path / "ours.gguf", name="qwen3-tiny", imatrix=tiny_imatrix)
    llama_quantize(tiny_f32, tmp_path / "theirs.gguf", type_name, tiny_imatrix)
    assert lib.compare_tensors(tmp_path / "ours.gguf", tmp_path / "theirs.gguf") == {
        "only_ours": [],
        "only_theirs": [],
        "type": [],
        "bytes": [],
    }
    with GGUFFile(tmp_path / "ours.gguf") as f:
        assert f.fields["quantize.imatrix.entries_count"] == 28 and f.fields["quantize.imatrix.chunks_count"] == 4
    assert manifest["imatrix"]["entries"] == 28 and manifest["imatrix"]["missing"] == []
    assert all(t["imatrix"] == t["name"].startswith("blk.") for t in manifest["tensors"] if len(t["shape"]) == 2)


@pytest.mark.peers
def test_engines_matrix_equals_llama_imatrixs(tiny_f32, tiny_imatrix, tmp_path):
    """The same text, chunks and context through llama-imatrix (F32 KV cache, as the engine keeps it)."""
    text = tiny_imatrix.parent / "calibration.txt"
    args = ["-m", str(tiny_f32), "-f", str(text), "-o", str(tmp_path / "theirs.gguf"), "-c", "128", "--chunks", "4"]
    proc = subprocess.run(
        [str(llama_tool("llama-imatrix")), *args, "-t", "2", "-ctk", "f32", "-ctv", "f32", "-fa", "off"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours, theirs = imatrix.read(tiny_imatrix), imatrix.read(tmp_path / "theirs.gguf")
    assert sorted(ours.sums) == sorted(theirs.sums) and len(ours.sums) == 28
    assert (ours.chunk_count, ours.chunk_size) == (theirs.chunk_count, theirs.chunk_size) == (4, 128)
    assert all(ours.counts[n][0] == theirs.counts[n][0] == 512 for n in ours.sums)
    worst = max(
        float(np.max(np.abs(ours.importance(n) - theirs.importance(n)) / np.abs(theirs.importance(n))))
        for n in ours.sums
    )
    print(f"\nimportance matrix, engine vs llama-imatrix: worst relative difference {worst:.3g}")
    assert worst < 1e-4  # float32 sums of 512 squares in another order


@pytest.mark.peers
def test_the_legacy_dat_form_quantizes_as_llama_quantize_reads_it(tiny_model, tiny_f32, tiny_imatrix, tmp_path):
    lib = peers()
    imatrix.read(tiny_imatrix).write_dat(tmp_path / "tiny.imatrix.dat")
    legacy = imatrix.read(tmp_path / "tiny.imatrix.dat")
    assert legacy.legacy and legacy.chunk_count == 4 and legacy.datasets == ["calibration.txt"]
    convert(tiny_model, "Q4_K_M", tmp_path / "ours.gguf", imatrix=tmp_path / "tiny.imatrix.dat")
    llama_quantize(tiny_f32, tmp_path / "theirs.gguf", "Q4_K_M", tmp_path / "tiny.imatrix.dat")
    assert lib.compare_tensors(tmp_path / "ours.gguf", tmp_path / "theirs.gguf")["bytes"] == []


@pytest.mark.peers
def test_a_matrix_missing_tensors_leaves_them_unweighted_as_llama_quantize(
    tiny_model, tiny_f32, tiny_imatrix, tmp_path
):
    lib = peers()
    partial = imatrix.read(tiny_imatrix)
    for name in [n for n in partial.sums if n.startswith("blk.1.")]:
        del partial.sums[name], partial.counts[name]
    partial.write(tmp_path / "partial.gguf")
    proc = run_cli(
        "convert", "--model", str(tiny_model), "--type", "IQ4_XS", "--imatrix", str(tmp_path / "partial.gguf"),
        "--out", str(tmp_path / "ours.gguf"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "no entry" in line]
    assert len(warnings) == 1 and "no entry for 7 tensors" in warnings[0], proc.stderr
    llama_quantize(tiny_f32, tmp_path / "theirs.gguf", "IQ4_XS", tmp_path / "partial.gguf")
    assert lib.compare_tensors(tmp_path / "ours.gguf", tmp_path / "theirs.gguf")["bytes"] == []


def test_a_matrix_of_another_model_is_refused_in_one_line(tiny_model, tiny_imatrix, tmp_path):
    other = imatrix.read(tiny_imatrix)
    other.sums["blk.9.attn_q.weight"] = other.sums.pop("blk.0.attn_q.weight")
    other.counts["blk.9.attn_q.weight"] = other.counts.pop("blk.0.attn_q.weight")
    other.write(tmp_path / "names.gguf")
    wider = imatrix.read(tiny_imatrix)
    wider.sums["blk.2.ffn_down.weight"] = np.ones((1, 1024), np.float32)
    wider.write(tmp_path / "widths.gguf")
    for path, needle in [("names.gguf", "blk.9.attn_q.weight is not a tensor"), ("widths.gguf", "1024 columns")]:
        proc = run_cli(
            "convert", "--model", str(tiny_model), "--type", "Q4_K_M", "--imatrix", str(tmp_path / path),
            "--out", str(tmp_path / "x.gguf"),
        )  # fmt: skip
        assert_one_line_error(proc, path, needle, "another model")
        assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.json").exists()


def test_a_file_that_is_no_matrix_is_refused_in_one_line(tiny_model, tiny_f32, tmp_path):
    (tmp_path / "text.dat").write_text("just some text, not a matrix")
    for path, needle in [(tmp_path / "text.dat", "not an importance matrix"), (tiny_f32, "not an importance matrix")]:
        proc = run_cli(
            "convert", "--model", str(tiny_model), "--type", "Q4_K_M", "--imatrix", str(path),
            "--out", str(tmp_path / "x.gguf"),
        )  # fmt: skip
        assert_one_line_error(proc, str(path), needle)
        assert not (tmp_path / "x.gguf").exists()


def test_bad_calibration_text_is_refused_in_one_line(tiny_f32, tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 100)
    (tmp_path / "short.txt").write_text("To be, or not to be: that is the question.")
    cases = [
        ("empty.txt", "the calibration text is empty"),
        ("latin1.txt", "not UTF-8 text"),
        ("short.txt", "needs at least 256"),
        ("missing.txt", "does not exist"),
    ]
    for name, needle in cases:
        proc = run_cli(
            "imatrix", "--model", str(tiny_f32), "--text", str(tmp_path / name), "--n-ctx", "128",
            "--out", str(tmp_path / "m.gguf"),
        )  # fmt: skip
        assert_one_line_error(proc, name, needle)
        assert not (tmp_path / "m.gguf").exists()


def test_iq4_and_imatrix_mixes_follow_llama_quantizes_rules():
    """On 28 layers: without a matrix IQ4 gives the first 3 ffn_down Q5_K, with one it does not; with
    one Q4_0 guards the first 3 ffn_down as Q4_1 (llama_tensor_get_type)."""

    def ffn_down(type_name, has_imatrix):
        types = planned_types("qwen3-0.6b-shape", type_name, has_imatrix)
        return [types[f"blk.{i}.ffn_down.weight"] for i in range(28)]

    assert ffn_down("IQ4_XS", False) == [T.Q5_K] * 3 + [T.IQ4_XS] * 25
    assert ffn_down("IQ4_XS", True) == [T.IQ4_XS] * 28
    assert ffn_down("IQ4_NL", False) == [T.Q5_K] * 3 + [T.IQ4_NL] * 25
    assert ffn_down("Q4_0", True) == [T.Q4_1] * 3 + [T.Q4_0] * 25
    assert ffn_down("Q4_0", False) == [T.Q4_0] * 28
    assert ffn_down("Q5_0", True) == [T.Q5_1] * 3 + [T.Q5_0] * 25
    assert planned_types("qwen3-0.6b-shape", "IQ4_XS", True)["token_embd.weight"] == T.Q6_K


def test_rows_too_short_for_the_mix_are_recorded_with_what_it_asked():
    from qwen3repro.convert.converter import fallback_warning

    plan = tensor_plan.TensorPlan("Q2_K", 4, 2, True)
    shapes = {"token_embd.weight": (151936, 64), "blk.0.ffn_up.weight": (160, 64), "blk.0.attn_q.weight": (256, 256)}
    types = {n: plan.choose(n, s) for n, s in shapes.items()}
    assert types == {"token_embd.weight": T.Q8_0, "blk.0.ffn_up.weight": T.Q4_0, "blk.0.attn_q.weight": T.Q2_K}
    assert plan.requested == {"token_embd.weight": T.Q6_K, "blk.0.ffn_up.weight": T.Q2_K}
    line = fallback_warning("m-Q2_K.gguf", shapes, types, plan.requested)
    assert line.startswith("m-Q2_K.gguf: 2 of 3 tensors (99.3% of the weights) stored at another type")
    assert "token_embd.weight Q6_K->Q8_0" in line and "\n" not in line


def test_variant_names():
    assert tensor_plan.split_variant("Q4_K_M-imat") == ("Q4_K_M", True)
    assert tensor_plan.split_variant("IQ4_XS") == ("IQ4_XS", False)
    with pytest.raises(Exception, match="Q8_0 takes no importance matrix"):
        tensor_plan.split_variant("Q8_0-imat")


def test_an_untied_output_matrix_is_quantized_as_llama_quantize_does(tmp_path):
    """Qwen3-8B and larger keep output.weight apart from the embedding: each takes its own type in the
    mixes (Q6_K for the output in Q4_K_M) and the bytes are llama-quantize's."""
    from qwen3repro.model import synthetic

    lib = peers()
    model = tmp_path / "untied"
    model.mkdir()
    arch = {"tie_word_embeddings": False, "num_hidden_layers": 2}
    synthetic.build(model, "qwen3-tiny", arch, seed=1, dtype="float32")
    convert(model, "F32", tmp_path / "f32.gguf", name="untied")
    for type_name in ["Q4_K_M", "Q3_K_S"]:
        convert(model, type_name, tmp_path / "ours.gguf", name="untied", force=True)
        llama_quantize(tmp_path / "f32.gguf", tmp_path / "theirs.gguf", type_name)
        assert lib.compare_tensors(tmp_path / "ours.gguf", tmp_path / "theirs.gguf") == {
            "only_ours": [],
            "only_theirs": [],
            "type": [],
            "bytes": [],
        }, type_name
