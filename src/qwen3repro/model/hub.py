"""Downloads a model from the Hugging Face Hub at a pinned revision, resumably, and checks its bytes."""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
from pathlib import Path

from qwen3repro.errors import UserError, first_line
from qwen3repro.fsutil import sha256_file

# Everything a Qwen3 checkpoint needs, and never a pickle (*.bin, *.pt): weights load from safetensors only.
HUB_PATTERNS = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "*.safetensors",
    "model.safetensors.index.json",
    "LICENSE",
    "README.md",
]
OFFLINE_CONFIG = "config/config.yaml"


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    h.update(path.read_bytes())
    return h.hexdigest()


def _verify(local_dir: Path, siblings) -> None:
    """Check every downloaded file against the Hub's record: sha256 for LFS files, git blob id otherwise."""
    for sib in siblings:
        if not any(fnmatch.fnmatch(sib.rfilename, p) for p in HUB_PATTERNS):
            continue
        path = local_dir / sib.rfilename
        if not path.is_file():
            raise UserError(f"download incomplete: {sib.rfilename} is missing")
        if sib.lfs is not None:
            ok = sha256_file(path) == sib.lfs.sha256
        else:
            ok = sib.blob_id is None or _git_blob_sha1(path) == sib.blob_id
        if not ok:
            path.unlink()
            raise UserError(f"{sib.rfilename}: checksum differs from the Hub's; deleted, run again to re-download")


def download(repo_id: str, revision: str, out_dir: Path, partial_dir: Path) -> dict:
    """Download into `partial_dir` (kept between attempts, so an interrupted download resumes),
    verify, then move the files into `out_dir`. Returns the recipe for the manifest."""
    from huggingface_hub import HfApi, snapshot_download

    partial_dir = Path(partial_dir)
    partial_dir.mkdir(exist_ok=True)
    try:
        snapshot_download(repo_id=repo_id, revision=revision, local_dir=partial_dir, allow_patterns=HUB_PATTERNS)
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as e:  # huggingface_hub raises OSError, httpx and HfHubHTTPError subclasses
        if not any(p for p in partial_dir.iterdir() if p.name != ".cache"):
            shutil.rmtree(partial_dir, ignore_errors=True)
        reason = first_line(e)
        raise UserError(
            f"cannot download {repo_id}@{revision} from the Hugging Face Hub ({reason}); "
            f"offline, use the embedded default model: --configfile {OFFLINE_CONFIG}"
        ) from e
    _verify(partial_dir, info.siblings or [])
    for path in sorted(partial_dir.iterdir()):
        if path.name != ".cache":
            path.rename(out_dir / path.name)
    shutil.rmtree(partial_dir)
    return {"repo_id": repo_id, "revision": revision, "sha": info.sha}
