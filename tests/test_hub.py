"""The Hub path, for real, offline: huggingface_hub against a Hub-compatible HTTP server on this machine
(tests/hub_server.py), with HF_ENDPOINT pointed at it, and each fault a download meets."""

import hashlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import SHORT_CHECK, assert_one_line_error, run_cli, run_snakemake
from hub_server import HubServer, Repo, serve_directory

from qwen3repro.errors import UserError
from qwen3repro.fsutil import sha256_file
from qwen3repro.verify.verdict import write_verdict

MODEL = "test/qwen3-tiny"
WIKITEXT = "test/wikitext"
WIKITEXT_FILE = "wikitext-2-raw-v1/test-00000-of-00001.parquet"
# wikitext-2-raw's shape: rows that carry their own newlines, headings between blank rows
ROWS = [
    "",
    " = Robert Boulter = \n",
    "",
    " Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring role \n",
    " on the television series The Bill in 2000 . This was followed by a starring role in the play Herons \n",
] * 40


def parquet_of(rows: list[str]) -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"text": rows}).to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.fixture
def hub(tiny_model):
    model = serve_directory(tiny_model, MODEL)
    dataset = Repo(WIKITEXT, {WIKITEXT_FILE: parquet_of(ROWS)}, kind="dataset")
    with HubServer([model, dataset]) as server:
        server.model = model
        yield server


def hub_env(hub: HubServer, home: Path) -> dict:
    return {"HF_ENDPOINT": hub.url, "HF_HOME": str(home / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def get_model(hub: HubServer, tmp_path: Path, revision: str, endpoint: str | None = None):
    config = tmp_path / "hub.yaml"
    spec = {"source": "hub", "repo_id": MODEL, "revision": revision}
    config.write_text(yaml.safe_dump({"models": {"m": spec}}))
    (tmp_path / "models").mkdir(exist_ok=True)
    env = hub_env(hub, tmp_path) | ({"HF_ENDPOINT": endpoint} if endpoint else {})
    return run_cli("get-model", "--config", str(config), "--out", str(tmp_path / "models" / "m"), env=env)


def weights_sha256(hub: HubServer) -> str:
    return hashlib.sha256(hub.model.files["model.safetensors"]).hexdigest()


def test_download_puts_the_hub_files_in_place_with_their_hub_record(hub, tmp_path, tiny_model):
    proc = get_model(hub, tmp_path, hub.model.commit)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "models" / "m"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == "hub" and manifest["sha"] == manifest["revision"] == hub.model.commit
    assert sorted(manifest["hub_files"]) == sorted(hub.model.files)
    assert manifest["hub_files"]["model.safetensors"]["sha256"] == weights_sha256(hub)
    for name in hub.model.files:
        assert sha256_file(out / name) == sha256_file(tiny_model / name), name
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m"]  # no partial directory left


def test_verify_checks_a_hub_model_against_the_hub_record_and_names_a_changed_file(hub, tmp_path):
    assert get_model(hub, tmp_path, hub.model.commit).returncode == 0
    model_dir, gguf_dir = tmp_path / "models" / "m", tmp_path / "gguf"
    gguf_dir.mkdir()
    spec = {"source": "hub", "repo_id": MODEL, "revision": hub.model.commit}
    reference = tmp_path / "m.yaml"
    reference.write_text(yaml.safe_dump({"model": "m", "recipe": spec, "exact": {}}))
    result = write_verdict("m", spec, model_dir, gguf_dir, reference, tmp_path / "v.json")
    n = len(hub.model.files)
    assert result["verdict"] == "reproduced"
    assert result["summary"].startswith(f"m: {n}/{n} files identical to the Hub's record at {hub.model.commit[:12]}")
    (model_dir / "config.json").write_text((model_dir / "config.json").read_text().replace("256", "257", 1))
    with pytest.raises(UserError, match=r"^m: does not reproduce the reference: hub/config.json differs from"):
        write_verdict("m", spec, model_dir, gguf_dir, reference, tmp_path / "v.json")


def test_a_dropped_connection_is_resumed_with_a_range_request(hub, tmp_path):
    sha, size = weights_sha256(hub), len(hub.model.files["model.safetensors"])
    hub.drop_after[sha] = size // 3
    proc = get_model(hub, tmp_path, hub.model.commit)
    assert proc.returncode == 0, proc.stderr
    first, second = hub.file_gets(sha)
    kept = size - second.bytes_sent  # what the client had written: whole chunks of what it was sent
    print(f"\nbytes served: first try {first.bytes_sent:,} of {size:,}; then {second.range}: {second.bytes_sent:,}")
    assert first.range is None and first.bytes_sent == size // 3
    assert second.range == f"bytes={kept}-" and 0 < kept <= size // 3
    assert sha256_file(tmp_path / "models" / "m" / "model.safetensors") == sha


def test_a_download_cut_off_resumes_on_the_rerun_asking_only_for_the_rest(hub, tmp_path):
    sha, size = weights_sha256(hub), len(hub.model.files["model.safetensors"])
    hub.drop_after[sha] = size // 2
    hub.down_after_drop = True  # the connection drops and the server stays down: the job fails
    first = get_model(hub, tmp_path, hub.model.commit)
    part = tmp_path / "models" / ".m.download" / "model.safetensors.part"
    kept = part.stat().st_size
    assert_one_line_error(first, f"stopped at {kept:,} of {size:,} bytes", "run again to resume")
    assert 0 < kept <= size // 2 and not (tmp_path / "models" / "m").exists()
    hub.heal()
    hub.down_after_drop = False
    again = get_model(hub, tmp_path, hub.model.commit)
    assert again.returncode == 0, again.stderr
    gets = hub.file_gets(sha)
    print(
        f"\nbytes served: first run {gets[0].bytes_sent:,} of {size:,}; rerun {gets[-1].range}: {gets[-1].bytes_sent:,}"
    )
    assert (gets[0].range, gets[0].bytes_sent) == (None, size // 2)
    assert (gets[-1].range, gets[-1].bytes_sent) == (f"bytes={kept}-", size - kept)  # only the rest
    assert sha256_file(tmp_path / "models" / "m" / "model.safetensors") == sha
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m"]


def test_bytes_that_differ_from_the_hub_sha256_are_deleted_with_one_line(hub, tmp_path):
    hub.corrupt.add(weights_sha256(hub))
    proc = get_model(hub, tmp_path, hub.model.commit)
    assert_one_line_error(proc, f"{MODEL}/model.safetensors", "differ from the Hub's sha256", "deleted")
    assert list((tmp_path / "models").iterdir()) == []


def test_an_unknown_revision_is_one_line(hub, tmp_path):
    proc = get_model(hub, tmp_path, "0" * 40)
    assert_one_line_error(proc, MODEL, f"revision '{'0' * 40}' does not exist")
    assert list((tmp_path / "models").iterdir()) == []


def test_a_branch_name_is_resolved_to_its_commit_recorded_and_warned(hub, tmp_path):
    proc = get_model(hub, tmp_path, "main")
    assert proc.returncode == 0, proc.stderr
    assert f"revision 'main' is a branch or tag, resolved to commit {hub.model.commit}" in proc.stderr
    manifest = json.loads((tmp_path / "models" / "m" / "manifest.json").read_text())
    assert (manifest["revision"], manifest["sha"]) == ("main", hub.model.commit)


def test_a_hub_that_is_down_gives_the_offline_message_and_writes_nothing(hub, tmp_path):
    proc = get_model(hub, tmp_path, hub.model.commit, endpoint="http://127.0.0.1:9")  # discard port: refused
    assert_one_line_error(proc, f"cannot download {MODEL}@{hub.model.commit}", "--configfile config/config.yaml")
    assert list((tmp_path / "models").iterdir()) == []


def pipeline_config(path: Path, model: dict, hub: HubServer) -> Path:
    """qwen3-tiny at two file types through every stage that reads the model or the corpus: conversion,
    the check against transformers, perplexity on wikitext served by the Hub."""
    config = {
        "models": {"qwen3-tiny": model},
        "convert": {"types": ["F32", "Q4_K_M"], "imatrix": {"types": []}},
        "bench": {"types": ["F32"]},
        "sweep": {"types": ["F32"]},
        "check": SHORT_CHECK,
        "perplexity": {
            "corpus": {
                "source": "hub",
                "repo_id": WIKITEXT,
                "revision": hub.repos[("dataset", WIKITEXT)].commit,
                "filename": WIKITEXT_FILE,
            },
            "n_ctx": 64,
            "chunks": 2,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.pipeline
def test_the_pipeline_on_a_hub_model_gives_the_same_outputs_as_on_the_local_files(
    hub, tmp_path, tiny_model, repo, monkeypatch
):
    for key, value in hub_env(hub, tmp_path).items():
        monkeypatch.setenv(key, value)
    outputs = {}
    for source, model in (
        ("hub", {"source": "hub", "repo_id": MODEL, "revision": hub.model.commit}),
        ("local", {"source": "local", "path": str(tiny_model)}),
    ):
        workdir = tmp_path / source
        workdir.mkdir()
        config = pipeline_config(workdir / "config.yaml", model, hub)
        targets = ["results/check/qwen3-tiny.csv", "results/perplexity/qwen3-tiny.csv"]
        proc = run_snakemake(workdir, *targets, "--configfile", str(config))
        assert proc.returncode == 0, proc.stderr[-3000:]
        results = workdir / "results"
        files = {p.relative_to(results).as_posix(): sha256_file(p) for p in sorted((results / "gguf").rglob("*.gguf"))}
        files |= {f"models/{name}": sha256_file(results / "models" / "qwen3-tiny" / name) for name in hub.model.files}
        check = pd.read_csv(results / "check" / "qwen3-tiny.csv").drop(columns=["seconds"], errors="ignore")
        ppl = pd.read_csv(results / "perplexity" / "qwen3-tiny.csv").drop(columns=["seconds"], errors="ignore")
        outputs[source] = files, check, ppl
    corpus = (tmp_path / "hub" / "results" / "corpus" / "perplexity.txt").read_text()
    assert corpus == "".join(ROWS)  # the parquet's rows joined back into the raw text
    reference = yaml.safe_load((repo / "config" / "reference" / "qwen3-tiny.yaml").read_text())["exact"]
    hub_files, hub_check, hub_ppl = outputs["hub"]
    local_files, local_check, local_ppl = outputs["local"]
    assert hub_files == local_files and len(hub_files) == 2 + len(hub.model.files)
    for name in ("gguf/qwen3-tiny/qwen3-tiny-F32.gguf", "gguf/qwen3-tiny/qwen3-tiny-Q4_K_M.gguf"):
        assert hub_files[name] == reference[name.replace("qwen3-tiny/", "", 1)]  # and the committed reference's
    pd.testing.assert_frame_equal(hub_check, local_check)
    pd.testing.assert_frame_equal(hub_ppl, local_ppl)


def test_a_files_git_blob_id_is_what_git_hash_object_prints(tmp_path):
    """The Hub records a file outside LFS by its git object id; ours is read in blocks, as git computes it."""
    import subprocess

    from qwen3repro.model.hub import _git_blob_sha1

    path = tmp_path / "config.json"
    path.write_bytes(bytes(range(256)) * 9000)  # several of the blocks it reads
    git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
    assert _git_blob_sha1(path) == git.stdout.strip()
