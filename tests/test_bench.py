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
        # the bandwidth probed just before and just after the runs, beside them
        assert len(r.bandwidth_probes) == 2 and min(r.bandwidth_probes) > 1e8


def test_each_engine_s_roofline_counts_the_bytes_that_engine_reads_per_token(tiny_model, tiny_f32, tmp_path):
    from qwen3repro.bench.measure import describe
    from qwen3repro.convert.converter import convert
    from qwen3repro.gguf_file import GGUFFile

    q4 = convert(tiny_model, "Q4_K_M", tmp_path / "q4.gguf") and tmp_path / "q4.gguf"
    with GGUFFile(tiny_f32) as f:
        float32_bytes = sum(4 * t.n_elements for t in f.tensors.values())
    # the NumPy engine holds every file type in float32; llama.cpp reads the file's own blocks
    assert describe("numpy", q4)[1] == describe("numpy", tiny_f32)[1] == float32_bytes
    assert describe("llama.cpp", q4)[1] < float32_bytes / 4


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
    settings = {"n_prompt": [8], "n_gen": [4], "repetitions": 1, "n_depth": [0], "low_memory": {"types": []}}
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


def test_a_row_s_roofline_uses_the_bandwidth_probed_beside_it():
    row = dict(
        engine="numpy", model_filename="m.gguf", model_type="F32", model_size=10, bytes_per_token=1e9, n_prompt=0,
        n_gen=32, n_threads=2, samples_ns=[1], avg_ts=12.0, stddev_ts=0.1, load_s=0.1, peak_rss_bytes=1,
        test="tg32", ttft_ms=None, bandwidth_probes=[9e9, 10e9],
    )  # fmt: skip
    table = summary_table([row], bandwidth=50e9)  # a probe at another time: not used
    assert table.loc[0, "ceiling_ts"] == 10.0 and table.loc[0, "ceiling_share"] == 1.2
    assert "probe and the bench disagree" in table.loc[0, "ceiling_flag"]


def test_bench_types_must_be_converted_ones():
    from qwen3repro.config import validate_config
    from qwen3repro.errors import UserError

    config = {"models": {"m": {"source": "synthetic", "preset": "qwen3-tiny"}}, "convert": {"types": ["F32", "Q8_0"]}}
    with pytest.raises(UserError, match="bench.types: F16, BF16, Q4_0, Q4_K_M not in convert.types"):
        validate_config(config)
    with pytest.raises(UserError, match="bench.engines.0: 'vllm' is not one of"):
        validate_config({**config, "bench": {"types": ["F32"], "engines": ["vllm"]}})
    with pytest.raises(UserError, match="bench.low_memory.types: Q2_K not in convert.types"):
        validate_config({**config, "bench": {"types": ["F32"], "low_memory": {"types": ["Q2_K"]}}})


def test_the_low_memory_mode_runs_its_own_short_tests_on_the_types_it_names(tiny_f32):
    settings = {
        "n_prompt": [8],
        "n_gen": [4],
        "n_depth": [0, 16],
        "repetitions": 1,
        "low_memory": {"types": ["F32"], "n_prompt": [6], "n_gen": [2], "repetitions": 1},
    }
    records = bench_gguf(tiny_f32, ["numpy"], settings, threads=1, file_type="F32")
    tests = [(r["engine"], r["test"]) for r in records]
    assert tests == [
        ("numpy", "pp8"), ("numpy", "tg4"), ("numpy", "pp8 @ d16"), ("numpy", "tg4 @ d16"),
        ("numpy-low-memory", "pp6"), ("numpy-low-memory", "tg2"),
    ]  # fmt: skip
    # a type it does not name gets the main tests only; named in the engines, it runs those on every type
    assert {r["engine"] for r in bench_gguf(tiny_f32, ["numpy"], settings, threads=1, file_type="Q8_0")} == {"numpy"}
    both = bench_gguf(tiny_f32, ["numpy-low-memory"], settings | {"n_depth": [0]}, threads=1, file_type="F32")
    assert [(r["engine"], r["test"]) for r in both] == [("numpy-low-memory", "pp8"), ("numpy-low-memory", "tg4")]


def test_depths_and_prompt_generation_pairs_are_llama_bench_s_tests(tiny_f32):
    from qwen3repro.bench.measure import tests_to_run

    tests = tests_to_run({"numpy": tiny_f32}, [16], [4], 1, 1, 4096, n_depth=[0, 64], pg=[(16, 4)])
    assert tests == [(16, 0, 0), (0, 4, 0), (16, 4, 0), (16, 0, 64), (0, 4, 64), (16, 4, 64)]
    with pytest.raises(Exception, match="needs 84 positions; the model's context is 80"):
        tests_to_run({"numpy": tiny_f32}, [16], [4], 1, 1, 80, n_depth=[64], pg=[(16, 4)])


def test_bench_at_depths_and_thread_counts_prints_the_table_and_draws_the_plot(tiny_f32, tmp_path):
    out, plot = tmp_path / "bench.json", tmp_path / "depth.png"
    proc = run_cli(
        "bench", "--gguf", str(tiny_f32), "--engines", "numpy", "-p", "0", "-n", "4", "-pg", "8,2",
        "-d", "0", "32", "-t", "1", "2", "-r", "1", "--json", str(out), "--plot", str(plot),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = json.loads(out.read_text())
    assert {(r["test"], r["n_threads"]) for r in records} == {
        (test, threads) for test in ("tg4", "pp8+tg2", "tg4 @ d32", "pp8+tg2 @ d32") for threads in (1, 2)
    }
    by_test = {(r["test"], r["n_threads"]): r for r in records}
    # the KV cache grows with the positions the test ends at: float32 keys and values per layer
    assert by_test[("tg4 @ d32", 1)]["kv_cache_bytes"] == 9 * by_test[("tg4", 1)]["kv_cache_bytes"]
    assert "tg4 @ d32" in proc.stdout and "1 threads: memory bandwidth" in proc.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_ratios_compare_engines_at_the_same_test_and_thread_count():
    from qwen3repro.bench.measure import Row
    from qwen3repro.bench.tables import ratios

    def row(engine, threads, speed):
        return Row(engine, "m.gguf", "F32", 1, 1, 0, 32, 0, threads, 0, [1], speed, 0.1, 0.1, 1, [1e10, 1e10])

    rows = [row("numpy", 1, 4.0), row("numpy", 2, 8.0), row("llama.cpp", 1, 5.0), row("llama.cpp", 2, 10.0)]
    assert ratios(rows) == [
        "tg32, 1 threads: numpy 4.00 t/s / llama.cpp 5.00 t/s = 0.80x",
        "tg32, 2 threads: numpy 8.00 t/s / llama.cpp 10.00 t/s = 0.80x",
    ]
