from pathlib import Path

import pytest
from helpers import REPO, quick_training_config, run_snakemake

# Tests that share a whole pipeline run, a cluster or a retraining are marked by the fixtures they
# use, so that `make test-quick` can leave them out (pyproject.toml's markers say what each means).
HEAVY_FIXTURES = {"pipeline_run": "pipeline", "committed_run": "pipeline", "slurm_run": "cluster", "s3": "cluster"}


# Tests of 8 s or more on a 2-core machine (pytest --durations), left out of `make test-quick` too
SLOW = (
    "test_parts.py::test_tasks_gathered_from_parts_are_one_jobs_results",
    "test_parts.py::test_perplexity_gathered_from_uneven_parts_is_one_jobs_figures_bit_for_bit",
    "test_check.py::test_the_conversion_record_proves_the_file_without_encoding_it_again",
    "test_train.py::test_the_same_seed_gives_bitwise_the_same_weights_and_curve",
    "test_train.py::test_a_zero_budget_and_a_corpus_smaller_than_a_batch_are_one_line_errors",
    "test_train.py::test_engine_and_transformers_agree_with_the_trainers_held_out_loss",
    "test_train.py::test_a_time_limit_that_is_reached_fails_training_instead_of_cutting_it_short",
    "test_check.py::test_an_untied_output_matrix_is_converted_and_read_as_its_own",
    "test_check.py::test_a_quantized_file_is_held_to_the_same_bound_as_f32",
    "test_imatrix.py::test_an_untied_output_matrix_is_quantized_as_llama_quantize_does",
    "test_low_memory.py::test_low_memory_logits_are_bitwise_the_resident_ones",
    "test_low_memory.py::test_low_memory_holds_a_fraction_of_the_resident_weights",
    "test_gguf_tokenizer.py::test_ids_equal_hugging_face_tokenizers_on_a_several_mb_corpus",
    "test_batch.py::test_prompt_lookup_accepts_a_draft_token_as_often_as_the_model_would_draw_it",
    "test_batch.py::test_sequences_in_a_batch_get_bitwise_the_logits_and_tokens_they_get_alone",
    "test_perplexity.py::test_a_quantized_file_has_positive_kld_and_its_own_perplexity",
    "test_bench.py::test_rows_have_llama_bench_fields_for_every_engine_and_test",
    "test_bench.py::test_a_second_run_reproduces_every_non_timing_field",
    "test_bench.py::test_bench_at_depths_and_thread_counts_prints_the_table_and_draws_the_plot",
    "test_tasks.py::test_f32_against_itself_flips_nothing_and_a_perturbed_tensor_flips_answers",
    "test_sweep.py::test_same_command_twice_gives_identical_non_timing_results_and_traces",
    "test_sweep.py::test_a_trace_along_another_files_tokens_takes_those_tokens_and_along_its_own_equals_its_own",
    "test_verify.py::test_the_synthetic_0_6b_shape_model_is_the_one_its_committed_reference_names",
    "test_convert.py::test_every_file_type_is_the_committed_references_bytes",
    "test_low_memory.py::test_low_memory_batched_decode_is_bitwise_the_resident_one",
)


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in HEAVY_FIXTURES.items():
            if fixture in item.fixturenames:
                item.add_marker(marker)
        if item.nodeid.split("/")[-1].split("[")[0] in SLOW:
            item.add_marker("slow")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The CI model, built once per test session as the pipeline builds it."""
    from qwen3repro.config import load_config
    from qwen3repro.model.sources import materialize

    spec = load_config(REPO / "config" / "qwen3-tiny.yaml")["models"]["qwen3-tiny"]
    return materialize("qwen3-tiny", spec, tmp_path_factory.mktemp("models") / "qwen3-tiny")


@pytest.fixture(scope="session")
def shape_model(tmp_path_factory) -> Path:
    """Qwen3-0.6B's exact shape with seeded weights (BF16, as the Hub ships it): about 20 s."""
    from qwen3repro.model import synthetic

    path = tmp_path_factory.mktemp("qwen3-0.6b-shape")
    synthetic.build(path, "qwen3-0.6b-shape", seed=0, dtype="bfloat16")
    return path


@pytest.fixture(scope="session")
def tiny_f32(tiny_model, tmp_path_factory) -> Path:
    """The CI model as an F32 GGUF."""
    from qwen3repro.convert.converter import convert

    path = tmp_path_factory.mktemp("gguf") / "qwen3-tiny-F32.gguf"
    convert(tiny_model, "F32", path, name="qwen3-tiny")
    return path


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The default config run once, offline, as `make run` runs it (but for a 40-step training
    budget and short benchmarks, perplexity runs and sweeps), then run again."""
    workdir = tmp_path_factory.mktemp("pipeline")
    config = quick_training_config(workdir / "config.yaml")
    first = run_snakemake(workdir, "--configfile", str(config))
    again = run_snakemake(workdir, "--configfile", str(config)) if first.returncode == 0 else None
    return workdir, config, first, again
