"""Downloads a model from the Hugging Face Hub at a pinned revision, resumably, and checks its bytes.

huggingface_hub resolves the revision, lists the files (with the Hub's sha256 of each), finds each
file's address and gives the HTTP session and headers, all through its public functions. What it no
longer does (2.x) is keep a partial file when the process ends: its temporary files are per process
and deleted on failure. A model is gigabytes, so this module keeps `<file>.part` in a directory of
its own (results/models/.<name>.download, one Snakemake job at a time) and asks for the rest with a
Range request: when a connection drops, and when a rerun finds the part.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
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
COMMIT = re.compile(r"^[0-9a-f]{40}$")
log = logging.getLogger(__name__)


def _git_blob_sha1(path: Path) -> str:
    """git's object id of the file (what the Hub records for a file outside LFS), read in blocks."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def wanted(siblings) -> list:
    """The repository's files this pipeline downloads: top-level files matching HUB_PATTERNS."""
    return [
        s for s in siblings if "/" not in s.rfilename and any(fnmatch.fnmatch(s.rfilename, p) for p in HUB_PATTERNS)
    ]


def hub_record(sibling) -> dict:
    """The Hub's own record of a file at the revision: its size and sha256 (LFS) or git blob id."""
    if sibling.lfs is not None:
        return {"size": sibling.size, "sha256": sibling.lfs.sha256}
    return {"size": sibling.size, "git_blob": sibling.blob_id}


def matches_record(path: Path, record: dict, sha256: str | None = None) -> bool:
    """Whether the file is the one the Hub records; `sha256`: the file's, when already computed."""
    if "sha256" in record:
        return (sha256 or sha256_file(path)) == record["sha256"]
    return record.get("git_blob") is None or _git_blob_sha1(path) == record["git_blob"]


def _offline(repo_id: str, revision: str, e: Exception) -> UserError:
    return UserError(
        f"cannot download {repo_id}@{revision} from the Hugging Face Hub ({first_line(e)}); "
        f"offline, use the embedded default model: --configfile {OFFLINE_CONFIG}"
    )


def resolve(repo_id: str, revision: str):
    """The repository's info at `revision` (files with the Hub's sizes and hashes). A branch or tag
    is resolved to the commit it points to now, with a warning: the run is pinned to that commit."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    except RevisionNotFoundError:
        raise UserError(f"{repo_id}: revision {revision!r} does not exist on the Hub") from None
    except RepositoryNotFoundError:
        raise UserError(f"{repo_id}: no such model repository on the Hub (or a private one: set HF_TOKEN)") from None
    except Exception as e:  # offline mode, connection refused, 5xx: OSError, httpx and HfHubHTTPError subclasses
        raise _offline(repo_id, revision, e) from None
    if not COMMIT.match(revision):
        log.warning(
            "%s: revision %r is a branch or tag, resolved to commit %s (recorded in the manifest); "
            "set revision: %s to pin it",
            repo_id,
            revision,
            info.sha,
            info.sha,
        )
    return info


def fetch(repo_id: str, commit: str, sibling, partial_dir: Path) -> Path:
    """One file into `partial_dir`, resuming from its .part file, checked against the Hub's record."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    name, record = sibling.rfilename, hub_record(sibling)
    final, part = partial_dir / name, partial_dir / f"{name}.part"
    if final.is_file():  # downloaded and checked by an earlier attempt
        return final
    have = part.stat().st_size if part.is_file() else 0
    if have > record["size"]:
        part.unlink()
        have = 0
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo_id, name, revision=commit))
        append_rest(meta.location, part, record["size"])
    except Exception as e:
        got = part.stat().st_size if part.is_file() else 0
        raise UserError(
            f"download of {repo_id}/{name} stopped at {got:,} of {record['size']:,} bytes ({first_line(e)}); "
            "run again to resume"
        ) from None
    if not matches_record(part, record):
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise UserError(
            f"{repo_id}/{name}: the bytes received differ from the Hub's sha256 at {commit}; deleted, nothing kept"
        )
    part.rename(final)
    return final


RETRIES = 5  # attempts in a row that bring no byte before a download gives up


def append_rest(url: str, part: Path, size: int) -> None:
    """Append to `part` the bytes of `url` it does not hold yet, asked for with a Range request from its
    size. A connection that drops is asked again from where it stopped, as long as attempts bring bytes;
    a server that ignores the range (200 instead of 206) sends the whole file, which replaces the part."""
    import httpx2
    from huggingface_hub import constants, get_session
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    stalls = 0
    while (have := part.stat().st_size if part.is_file() else 0) < size:
        headers = build_hf_headers() | ({"Range": f"bytes={have}-"} if have else {})
        try:
            with get_session().stream(
                "GET", url, headers=headers, follow_redirects=True, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT
            ) as response:
                hf_raise_for_status(response)
                with open(part, "ab") as f:
                    if have and response.status_code != 206:
                        f.truncate(0)
                    for block in response.iter_bytes(1 << 20):
                        f.write(block)
        except httpx2.TransportError as e:
            got = part.stat().st_size if part.is_file() else 0
            stalls = 0 if got > have else stalls + 1
            if stalls >= RETRIES:
                raise
            log.info("%s: the connection dropped at %s bytes (%s); asking for the rest", part.stem, f"{got:,}", e)


def _route_hub_logging() -> None:
    """huggingface_hub writes its warnings (a dropped connection retried) to stderr with a handler of its
    own; send them where ours go instead: the rule's log file, or the CLI's stderr at its verbosity."""
    import huggingface_hub  # noqa: F401  (configures its logger on import)

    hub_logger = logging.getLogger("huggingface_hub")
    for handler in list(hub_logger.handlers):
        hub_logger.removeHandler(handler)
    hub_logger.propagate = True


def download(repo_id: str, revision: str, out_dir: Path, partial_dir: Path) -> dict:
    """Download into `partial_dir` (kept between attempts, so an interrupted download resumes),
    check every file against the Hub's record, then move the files into `out_dir`. Returns the recipe
    for the manifest: the revision asked for, the commit it is, and the Hub's record of each file."""
    _route_hub_logging()
    info = resolve(repo_id, revision)
    files = wanted(info.siblings or [])
    if not files:
        raise UserError(
            f"{repo_id}@{info.sha}: none of the repository's files is a model file ({', '.join(HUB_PATTERNS)})"
        )
    partial_dir = Path(partial_dir)
    pinned = partial_dir / "commit"
    if partial_dir.is_dir() and (not pinned.is_file() or pinned.read_text().strip() != info.sha):
        shutil.rmtree(partial_dir)  # parts of another commit (a branch that moved): start over
    partial_dir.mkdir(exist_ok=True)
    pinned.write_text(info.sha + "\n")
    for sibling in files:
        log.info("downloading %s (%s bytes)", sibling.rfilename, f"{sibling.size:,}")
        fetch(repo_id, info.sha, sibling, partial_dir)
    for sibling in files:
        (partial_dir / sibling.rfilename).rename(out_dir / sibling.rfilename)
    shutil.rmtree(partial_dir)
    return {
        "repo_id": repo_id,
        "revision": revision,
        "sha": info.sha,
        "hub_files": {s.rfilename: hub_record(s) for s in files},
    }
