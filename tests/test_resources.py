"""What the jobs ask a scheduler for (memory, time limits) and the check of it against what they used."""

import pytest

from qwen3repro.config import validate_config
from qwen3repro.model.architecture import FAMILY
from qwen3repro.pipeline import resources, time_limits
from qwen3repro.pipeline.usage import problems, usage_table

SHAPES = ["qwen3-0.6b-shape"] + [f"{name}-shape" for name in FAMILY]


def test_memory_and_time_grow_with_the_model_through_the_family():
    specs = [{"source": "synthetic", "preset": p, "dtype": "bfloat16"} for p in SHAPES]
    mem = [resources.model_mb(s) for s in specs]
    minutes = [time_limits.model_minutes(s, threads=1) for s in specs]
    assert mem == sorted(mem) and len(set(mem)) == len(mem)
    assert minutes == sorted(minutes) and minutes[-1] > minutes[0]


def test_time_limits_count_the_work_of_the_job(tiny_f32, tmp_path):
    config = validate_config({"models": {"m": {"source": "synthetic", "preset": "qwen3-tiny"}}})
    check = config["check"]
    assert time_limits.check_minutes(tiny_f32, "F32", {**check, "greedy_tokens": 4096}, 1) > time_limits.check_minutes(
        tiny_f32, "F32", check, 1
    )
    ppl = {**config["perplexity"], "chunks": 2}
    assert time_limits.perplexity_minutes([tiny_f32], tmp_path / "none", {**ppl, "chunks": 5000}, 1) > (
        time_limits.perplexity_minutes([tiny_f32], tmp_path / "none", ppl, 1)
    )
    # a part's share of the chunks: more parts, less each; every file type scored in each part
    assert time_limits.perplexity_minutes([tiny_f32], tmp_path / "none", {**ppl, "chunks": 5000, "parts": 8}, 1) < (
        time_limits.perplexity_minutes([tiny_f32], tmp_path / "none", {**ppl, "chunks": 5000}, 1)
    )
    assert time_limits.perplexity_minutes([tiny_f32] * 9, tmp_path / "none", {**ppl, "chunks": 5000}, 1) > (
        time_limits.perplexity_minutes([tiny_f32], tmp_path / "none", {**ppl, "chunks": 5000}, 1)
    )
    # more threads, less time, for the compute-bound stages; the IQ types and importance weights cost more
    n = resources.n_weights_of_gguf(tiny_f32)
    assert time_limits.quantize_seconds(n, "Q4_K_M", 1) > time_limits.quantize_seconds(n, "Q4_K_M", 8)
    assert time_limits.quantize_seconds(n, "IQ4_XS", 1) > time_limits.quantize_seconds(n, "Q4_K_M-imat", 1)
    assert time_limits.quantize_seconds(n, "Q4_K_M-imat", 1) > time_limits.quantize_seconds(n, "Q4_K_M", 1)
    assert all(
        m >= time_limits.MIN_MINUTES
        for m in [time_limits.minutes(0), time_limits.sweep_minutes(tiny_f32, config["sweep"])]
    )


def test_a_file_not_written_yet_gets_a_placeholder_as_in_a_dry_run(tmp_path):
    missing = tmp_path / "not-yet.gguf"
    assert resources.check_mb(missing, 512) == resources.gguf_mb(missing) == resources.PLACEHOLDER_MB
    assert resources.perplexity_mb(missing) == resources.PLACEHOLDER_MB
    check = validate_config({"models": {"m": {"source": "synthetic", "preset": "qwen3-tiny"}}})["check"]
    assert time_limits.check_minutes(missing, "Q8_0", check, 1) == time_limits.minutes(0)


def test_a_perplexity_job_over_the_memory_budget_streams_its_weights_and_asks_for_less(tiny_f32):
    settings = {"n_ctx": 512, "runtimes": ["numpy"]}
    resident = resources.perplexity_mb(tiny_f32, 512, llama_cpp=False)
    streamed = resources.perplexity_mb(tiny_f32, 512, low_memory=True, llama_cpp=False)
    assert streamed < resident
    assert not resources.perplexity_low_memory(tiny_f32, settings, budget_mb=resident)
    assert resources.perplexity_low_memory(tiny_f32, settings, budget_mb=resident - 1)
    assert not resources.perplexity_low_memory(tiny_f32, settings, budget_mb=None)  # this machine's
    # llama.cpp maps the file beside the engine's streamed layers
    with_llama = resources.perplexity_mb(tiny_f32, 512, low_memory=True, llama_cpp=True)
    assert with_llama >= streamed and with_llama >= tiny_f32.stat().st_size // resources.MiB
    ppl = {**settings, "chunks": 4, "parts": 1}
    assert time_limits.perplexity_minutes([tiny_f32], tiny_f32, ppl, 1, low_memory=True) >= (
        time_limits.perplexity_minutes([tiny_f32], tiny_f32, ppl, 1)
    )


def write_job(results, rule, job, declared, max_rss, seconds):
    (results / "logs" / rule).mkdir(parents=True, exist_ok=True)
    (results / "benchmarks" / rule).mkdir(parents=True, exist_ok=True)
    line = '2026-12-01 08:00:00,000 INFO declared {"rule": "%s", "threads": %d, "mem_mb": %d, "runtime": %d}\n'
    (results / "logs" / rule / f"{job}.log").write_text(line % (rule, *declared) + "more\n")
    (results / "benchmarks" / rule / f"{job}.tsv").write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        f"{seconds}\t0:00:01\t{max_rss}\t1\t1\t1\t0\t0\t0\t1\n"
    )


def test_usage_flags_jobs_over_their_declaration_and_big_jobs_asking_three_times_what_they_used(tmp_path):
    write_job(tmp_path, "convert", "ok", (2, 4000, 10), 2000, 60)
    write_job(tmp_path, "check", "small", (1, 4000, 10), 500, 60)  # 8x, but under 1 GiB: not flagged
    write_job(tmp_path, "check", "greedy", (1, 8000, 10), 2000, 60)
    write_job(tmp_path, "perplexity", "oom", (1, 2000, 10), 2500, 60)
    write_job(tmp_path, "sweep", "slow", (1, 4000, 2), 2000, 180)
    table = usage_table(tmp_path)
    assert len(table) == 5
    found = problems(table)
    assert len(found) == 3
    assert any("greedy (check) declared 8000 MB, 4.0x the 2000" in line for line in found)
    assert any("oom (perplexity) used 2500 MB, over the 2000" in line for line in found)
    assert any("slow (sweep) ran 3.0 min, over the 2" in line for line in found)


def test_usage_takes_the_kernels_peak_from_the_log_where_the_sampled_one_missed_it(tmp_path):
    write_job(tmp_path, "get_model", "short", (1, 5000, 10), 1600, 40)  # sampled: 3.1x, flagged
    log = tmp_path / "logs" / "get_model" / "short.log"
    log.write_text(log.read_text() + '2026-12-01 08:00:40,000 INFO peak {"self_mb": 3824.0, "children_mb": 12.0}\n')
    table = usage_table(tmp_path)
    assert table.loc[0, "max_rss_mb"] == 3824.0
    assert problems(table) == []


def test_a_rule_log_ends_with_the_jobs_peak_memory(tmp_path):
    from types import SimpleNamespace

    from qwen3repro.pipeline.rulelog import rule_log
    from qwen3repro.pipeline.usage import peak_of

    job = SimpleNamespace(
        log=[str(tmp_path / "job.log")], rule="convert", threads=1, resources={"mem_mb": 1000, "runtime": 5}
    )
    with rule_log(job):
        held = bytearray(64 * 2**20)  # 64 MiB resident
        held[::4096] = b"x" * len(held[::4096])
    assert peak_of(tmp_path / "job.log") >= 64


def test_usage_needs_logs_that_record_what_was_declared(tmp_path):
    from qwen3repro.errors import UserError

    with pytest.raises(UserError, match="no job has both"):
        usage_table(tmp_path)
