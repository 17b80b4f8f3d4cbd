"""The perplexity corpus: held-out Shakespeare offline, a pinned Hub dataset file, or a local text."""

import json

import pytest

from qwen3repro.accuracy.eval_text import text_of, write_corpus
from qwen3repro.config import validate_config
from qwen3repro.errors import UserError
from qwen3repro.model import shakespeare

WIKITEXT = {
    "source": "hub",
    "repo_id": "Salesforce/wikitext",
    "revision": "b08601e04326c79dfdd32d625aee71d232d685c3",
    "filename": "wikitext-2-raw-v1/test-00000-of-00001.parquet",
}


def test_offline_corpus_is_the_held_out_works_the_trained_model_never_saw():
    train, held_out = shakespeare.split(10)
    text = text_of({"source": "shakespeare", "held_out_every": 10})
    assert text == shakespeare.joined(held_out)
    assert not any(t[:2000] in text for t in train.values())


def test_hub_parquet_rows_are_joined_back_into_the_raw_text(monkeypatch, tmp_path):
    import huggingface_hub
    import pandas as pd

    rows = ["", " = Robert Boulter = \n", "", " Robert Boulter is an English actor . \n"]
    path = tmp_path / "test.parquet"
    pd.DataFrame({"text": rows}).to_parquet(path)
    asked = {}

    def fake_download(**kwargs):
        asked.update(kwargs)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert text_of(WIKITEXT) == "".join(rows)
    assert asked["revision"] == WIKITEXT["revision"] and asked["repo_type"] == "dataset"


def test_a_failed_download_is_one_line_pointing_at_the_offline_corpus(monkeypatch):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("We couldn't connect to the Hub.\nmore detail")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(
        UserError,
        match=r"^cannot download Salesforce/wikitext/.*\(We couldn't connect to the Hub.\); "
        r"offline, use the Shakespeare corpus",
    ):
        text_of(WIKITEXT)


def test_local_corpus_is_written_with_its_manifest_and_bad_files_are_refused(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Some text.\n")
    manifest = write_corpus({"source": "local", "path": str(good)}, tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text() == "Some text.\n"
    assert json.loads((tmp_path / "out.json").read_text()) == manifest and len(manifest["sha256"]) == 64
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(UserError, match="the local corpus is empty"):
        write_corpus({"source": "local", "path": str(tmp_path / "empty.txt")}, tmp_path / "e.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8 text"):
        text_of({"source": "local", "path": str(tmp_path / "latin1.txt")})
    with pytest.raises(UserError, match="corpus file does not exist"):
        text_of({"source": "local", "path": str(tmp_path / "none.txt")})


def test_config_refuses_a_corpus_split_other_than_the_trained_models():
    config = {"models": {"m": {"source": "trained", "preset": "qwen3-shakespeare", "training": {"held_out_every": 5}}}}
    with pytest.raises(UserError, match="held_out_every is 10 but model m holds out every 5th work"):
        validate_config(config)
    validate_config({**config, "perplexity": {"corpus": {"source": "shakespeare", "held_out_every": 5}}})
