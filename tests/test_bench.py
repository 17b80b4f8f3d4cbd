"""`qwen3repro bench`: llama-bench style rows for each engine, side by side; bad input refused."""

import json

import pytest
from helpers import assert_one_line_error, run_cli

from qwen3repro.bench.measure import bench, bench_gguf, llama_cpp_available
from qwen3repro.bench.tables import TIMING_FIELDS, summary_table
from qwen3repro.bench.worker import token_ids


def test_rows_have_llama_bench_fields_for_every_engine_and_test(tiny_f32, tiny_model):
    pytest.importorskip("llama_cpp", reason="the peers extra (llama-cpp-python) is not installed")
    rows = bench(
        {"numpy": tiny_f32, "llama.cpp": tiny_f32, "transformers-f32": tiny_model}, [16], [4], repetitions=2, threads=1
    )
    assert [(r.engine, r.test) for r in rows] == [
        (e, t) for e in ("numpy", "llama.cpp", "transformers-f32") for t in ("pp16", "tg4")
    ]
    for r in rows:
        assert len(r.samples_ns) == 2 and r.avg_ts > 0 and r.stddev_ts >= 0 and r.n_threads == 1
        assert r.load_s > 0 and r.peak_rss_bytes > 50 * 2**20 and r.model_size > 0


def test_bench_command_prints_the_table_and_ratios_and_writes_json(tiny_f32, tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli(
        "bench", "--gguf", str(tiny_f32), "--engines", "numpy", "-p", "8", "-n", "2", "-r", "1", "--json", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert "| numpy" in proc.stdout and "pp8" in proc.stdout and "tg2" in proc.stdout
    records = json.loads(out.read_text())
    assert {r["test"] for r in records} == {"pp8", "tg2"} and all(r["model_filename"] == tiny_f32.name for r in records)
    again = run_cli(
        "bench", "--gguf", str(tiny_f32), "--engines", "numpy", "-p", "8", "-n", "0", "-r", "1", "--json", str(out)
    )
    assert_one_line_error(again, "already exists")


def test_the_same_token_ids_for_every_engine():
    assert token_ids(32) == token_ids(32) and all(1000 <= t < 150000 for t in token_ids(32))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engines", "vllm"], "unknown engine 'vllm'"),
        (["--engines", "transformers-f32"], "needs --hf"),
        (["--engines", "numpy", "-p", "50000"], "the model's context is 40960"),
        (["--engines", "numpy", "-p", "-1"], "must be positive"),
        (["--engines", "numpy", "-p", "0", "-n", "0"], "no test to run"),
    ],
)
def test_bad_input_is_a_one_line_error(tiny_f32, args, message):
    proc = run_cli("bench", "--gguf", str(tiny_f32), *args)
    assert_one_line_error(proc, message)


def test_a_missing_gguf_is_named(tmp_path):
    proc = run_cli("bench", "--gguf", str(tmp_path / "none.gguf"), "--engines", "numpy")
    assert_one_line_error(proc, "none.gguf")


def test_a_second_run_reproduces_every_non_timing_field(tiny_f32):
    settings = {"n_prompt": [8], "n_gen": [4], "repetitions": 1}
    first, second = (bench_gguf(tiny_f32, ["numpy", "llama.cpp"], settings, threads=1) for _ in range(2))
    strip = lambda records: [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]  # noqa: E731
    assert strip(first) == strip(second) and len(first) == (4 if llama_cpp_available() else 2)
    assert {r["model_type"] for r in first} == {"F32"} and all(r["bytes_per_token"] > 150e6 for r in first)


def test_roofline_is_bandwidth_over_bytes_per_token_for_decode_rows():
    rows = [
        dict(
            engine="numpy",
            model_filename="m.gguf",
            model_type="F32",
            model_size=10,
            bytes_per_token=1e9,
            n_prompt=0,
            n_gen=128,
            n_threads=2,
            samples_ns=[1],
            avg_ts=10.0,
            stddev_ts=0.1,
            load_s=0.1,
            peak_rss_bytes=1,
            test="tg128",
            ttft_ms=None,
        ),
        dict(
            engine="numpy",
            model_filename="m.gguf",
            model_type="F32",
            model_size=10,
            bytes_per_token=1e9,
            n_prompt=128,
            n_gen=0,
            n_threads=2,
            samples_ns=[1],
            avg_ts=100.0,
            stddev_ts=1.0,
            load_s=0.1,
            peak_rss_bytes=1,
            test="pp128",
            ttft_ms=1280.0,
        ),
    ]
    table = summary_table(rows, bandwidth=20e9).set_index("test")
    assert table.loc["tg128", "ceiling_ts"] == 20.0 and table.loc["tg128", "ceiling_share"] == 0.5
    assert table.loc["pp128"].isna()["ceiling_share"]


def test_bench_types_must_be_converted_ones():
    from qwen3repro.config import validate_config
    from qwen3repro.errors import UserError

    config = {"models": {"m": {"source": "synthetic", "preset": "qwen3-tiny"}}, "convert": {"types": ["F32", "Q8_0"]}}
    with pytest.raises(UserError, match="bench.types: F16, BF16, Q4_0, Q4_K_M not in convert.types"):
        validate_config(config)
    with pytest.raises(UserError, match="bench.engines.0: 'vllm' is not one of"):
        validate_config({**config, "bench": {"types": ["F32"], "engines": ["vllm"]}})
