"""A small Hugging Face Hub for the tests: model and dataset repositories served over HTTP the way
huggingface_hub 2.x reads them, with faults to switch on (a dropped connection, a server that is down,
bytes that differ from the advertised sha256).

Routes, as the Hub answers them:
  GET  /api/{models,datasets}/<repo>/revision/<rev>[?blobs=true]   repo info: sha, siblings (size, blobId, lfs)
  GET  /api/{models,datasets}/<repo>/tree/<rev>                    the file listing
  HEAD|GET /[datasets/]<repo>/resolve/<rev>/<path>                 small files: the bytes (ETag: git blob id);
                                                                    LFS files: 302 to the CDN, X-Linked-Etag/-Size
  GET  /cdn/<sha256>                                                LFS bytes, with Range requests (206)
Errors carry the Hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound). The CDN is named
`localhost` while the Hub is `127.0.0.1`: another host, so huggingface_hub does not follow the redirect
on HEAD, exactly as with the real CDN. Files are plain HTTP, never Xet.

    python tests/hub_server.py MODEL_DIR [--repo ORG/NAME] [--port 8000]   then HF_ENDPOINT=http://127.0.0.1:8000
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".parquet", ".gguf", ".bin")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    sha256 = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()


@dataclass
class Repo:
    repo_id: str
    files: dict[str, bytes]
    kind: str = "model"  # or "dataset"
    branches: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        tree = "".join(f"{name}\0{git_blob_id(self.stored(name))}\n" for name in sorted(self.files))
        self.commit = hashlib.sha1(f"{self.kind}/{self.repo_id}\n{tree}".encode()).hexdigest()
        self.branches.setdefault("main", self.commit)

    def is_lfs(self, name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)

    def stored(self, name: str) -> bytes:
        """What git stores: the bytes, or the LFS pointer to them."""
        data = self.files[name]
        return lfs_pointer(data) if self.is_lfs(name) else data

    def entry(self, name: str) -> dict:
        data = self.files[name]
        lfs = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(self.stored(name))}
        return {
            "name": name,
            "size": len(data),
            "oid": git_blob_id(self.stored(name)),
            "lfs": lfs if self.is_lfs(name) else None,
        }

    def resolve(self, revision: str) -> str | None:
        return self.commit if revision == self.commit else self.branches.get(revision)


@dataclass
class Served:
    """One request, as the server saw it: for GETs of file bytes, the Range asked and the bytes sent."""

    method: str
    path: str
    status: int
    range: str | None = None
    bytes_sent: int = 0


class HubServer:
    """Start with `with HubServer([...]) as hub:`; hub.url goes into HF_ENDPOINT."""

    def __init__(self, repos: list[Repo], port: int = 0):
        self.repos = {(r.kind, r.repo_id): r for r in repos}
        self.log: list[Served] = []
        self.drop_after: dict[str, int] = {}  # sha256 -> bytes to send before dropping the connection (once)
        self.down_after_drop = False  # after a drop, answer 503 to everything until heal()
        self.corrupt: set[str] = set()  # sha256s whose bytes are served with one byte flipped
        self.down = False
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cdn = f"http://localhost:{self.port}/cdn"

    def __enter__(self) -> HubServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def heal(self) -> None:
        self.down = False
        self.drop_after.clear()

    def file_gets(self, sha256: str) -> list[Served]:
        return [s for s in self.log if s.method == "GET" and s.path == f"/cdn/{sha256}"]

    def blob(self, sha256: str) -> bytes | None:
        for repo in self.repos.values():
            for data in repo.files.values():
                if hashlib.sha256(data).hexdigest() == sha256:
                    return data
        return None


API = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+)/(revision|tree)/([^/]+)(?:/.*)?$")
RESOLVE = re.compile(r"^/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # the tests read hub.log instead
            pass

        def do_HEAD(self):
            self._route(head=True)

        def do_GET(self):
            self._route(head=False)

        def _route(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if hub.down:
                return self._error(503, None, "Service Unavailable", head)
            if m := API.match(path):
                return self._api(*m.groups(), head=head)
            if m := RESOLVE.match(path):
                return self._resolve("dataset" if m.group(1) else "model", *m.groups()[1:], head=head)
            if path.startswith("/cdn/"):
                return self._cdn(path.removeprefix("/cdn/"), head)
            self._error(404, None, "Not Found", head)

        def _repo(self, kind: str, repo_id: str, revision: str, head: bool) -> tuple[Repo, str] | None:
            repo = hub.repos.get((kind, repo_id))
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}", head)
                return None
            commit = repo.resolve(revision)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
                return None
            return repo, commit

        def _api(self, kinds: str, repo_id: str, what: str, revision: str, head: bool) -> None:
            found = self._repo(kinds.removesuffix("s"), repo_id, revision, head)
            if found is None:
                return
            repo, commit = found
            entries = [repo.entry(name) for name in sorted(repo.files)]
            if what == "tree":
                body = [
                    {"type": "file", "oid": e["oid"], "size": e["size"], "path": e["name"]}
                    | (
                        {"lfs": {"oid": e["lfs"]["sha256"], "size": e["size"], "pointerSize": e["lfs"]["pointerSize"]}}
                        if e["lfs"]
                        else {}
                    )
                    for e in entries
                ]
            else:
                siblings = [
                    {"rfilename": e["name"], "size": e["size"], "blobId": e["oid"]}
                    | ({"lfs": e["lfs"]} if e["lfs"] else {})
                    for e in entries
                ]
                body = {"id": repo_id, "sha": commit, "private": False, "siblings": siblings}
            self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)

        def _resolve(self, kind: str, repo_id: str, revision: str, name: str, head: bool) -> None:
            found = self._repo(kind, repo_id, revision, head)
            if found is None:
                return
            repo, commit = found
            if name not in repo.files:
                return self._error(404, "EntryNotFound", f"{name} does not exist at {revision}", head)
            entry = repo.entry(name)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{entry["oid"]}"'}
            if entry["lfs"]:  # the Hub's answer for an LFS file: a redirect to the CDN, the file's facts on it
                sha256 = entry["lfs"]["sha256"]
                headers |= {
                    "Location": f"{hub.cdn}/{sha256}",
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(entry["size"]),
                }
                return self._send(302, b"", headers, head)
            self._send(200, repo.files[name], headers | {"Accept-Ranges": "bytes"}, head)

        def _cdn(self, sha256: str, head: bool) -> None:
            data = hub.blob(sha256)
            if data is None:
                return self._error(404, None, "Not Found", head)
            if sha256 in hub.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start, end, status = 0, len(data), 200
            asked = self.headers.get("Range")
            if asked and (m := RANGE.match(asked)):
                start = int(m.group(1))
                end = int(m.group(2)) + 1 if m.group(2) else len(data)
                status = 206
            body = data[start:end]
            headers = {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            cut = None if head else hub.drop_after.pop(sha256, None)
            self._send(status, body, headers, head, cut=cut, range_=asked)

        def _error(self, status: int, code: str | None, message: str, head: bool) -> None:
            headers = {"Content-Type": "application/json"} | ({"X-Error-Code": code} if code else {})
            self._send(status, json.dumps({"error": message}).encode(), headers | {"X-Error-Message": message}, head)

        def _send(self, status, body: bytes, headers: dict, head: bool, cut: int | None = None, range_=None) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            sent = 0 if head else min(len(body), cut if cut is not None else len(body))
            if sent:
                self.wfile.write(body[:sent])
                self.wfile.flush()
            hub.log.append(Served(self.command, unquote(urlsplit(self.path).path), status, range_, sent))
            if cut is not None:  # the connection drops in the middle of the body
                self.close_connection = True
                if hub.down_after_drop:
                    hub.down = True

    return Handler


def parquet_of(frame) -> bytes:
    """A pandas DataFrame as a dataset repository's parquet file."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def serve_directory(directory: Path, repo_id: str) -> Repo:
    """A model directory's files as a repository (not the pipeline's manifest, not hidden files)."""
    return Repo(
        repo_id,
        {
            p.name: p.read_bytes()
            for p in sorted(directory.iterdir())
            if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
        },
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--repo", default="local/model")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    repo = serve_directory(args.model_dir, args.repo)
    with HubServer([repo], port=args.port) as hub:
        print(f"HF_ENDPOINT={hub.url}  repo_id {repo.repo_id}  revision {repo.commit}", flush=True)
        threading.Event().wait()
