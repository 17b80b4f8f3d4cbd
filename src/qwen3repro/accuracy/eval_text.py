"""The text perplexity and KL-divergence are measured on, written once per pipeline run; and the
calibration text an importance matrix is collected over, which must be another text.

Offline: the held-out Shakespeare works (the same deterministic split the trained model never
saw); for calibration, the works it was trained on. For Hub models: wikitext-2-raw's test split,
the text llama.cpp's perplexity numbers are quoted on, downloaded at a pinned dataset revision (the
parquet rows joined back into the raw file). Or any local UTF-8 text file.
"""

from __future__ import annotations

import json
from pathlib import Path

from qwen3repro.errors import UserError, first_line
from qwen3repro.fsutil import sha256_file, write_text_atomic
from qwen3repro.model import shakespeare


def hub_dataset_file(spec: dict, offline_hint: str = "") -> Path:
    """A dataset repository's file at its pinned commit (`repo_id`, `filename`, `revision`), through
    huggingface_hub's cache; one line when it cannot be had, with `offline_hint` after it."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                repo_id=spec["repo_id"], filename=spec["filename"], revision=spec["revision"], repo_type="dataset"
            )
        )
    except Exception as e:  # huggingface_hub raises OSError, httpx and HfHubHTTPError subclasses
        where = f"{spec['repo_id']}/{spec['filename']}@{spec['revision']}"
        raise UserError(f"cannot download {where} ({first_line(e)}){offline_hint}") from None


def _hub_text(spec: dict) -> str:
    path = hub_dataset_file(spec, "; offline, use the Shakespeare corpus (perplexity.corpus.source: shakespeare)")
    if path.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(path, columns=[spec.get("column", "text")]).iloc[:, 0]
        return "".join(rows.tolist())  # wikitext rows carry their own newlines
    return path.read_text("utf-8")


def text_of(spec: dict, part: str = "held_out") -> str:
    """The corpus text; for Shakespeare, `part` is the held-out works or the training ones."""
    source = spec["source"]
    if source == "shakespeare":
        train, held_out = shakespeare.split(spec["held_out_every"])
        return shakespeare.joined(held_out if part == "held_out" else train)
    if source == "hub":
        return _hub_text(spec)
    if source == "local":
        path = Path(spec["path"])
        try:
            return path.read_text("utf-8")
        except FileNotFoundError:
            raise UserError(f"{path}: corpus file does not exist") from None
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    raise UserError(f"unknown corpus source {source!r}")


def write_corpus(spec: dict, out: Path | str, force: bool = False, part: str = "held_out") -> dict:
    """Write the corpus text and a manifest (<out>.json: the spec, size and sha256) beside it."""
    out = Path(out)
    text = text_of(spec, part)
    if not text.strip():
        raise UserError(f"the {spec['source']} corpus is empty")
    write_text_atomic(out, text, force=force)
    manifest = {"spec": spec, "part": part, "characters": len(text), "sha256": sha256_file(out)}
    write_text_atomic(out.with_suffix(".json"), json.dumps(manifest, indent=2) + "\n", force=force)
    return manifest
