"""A stand-in Hugging Face Hub on 127.0.0.1 serving model repos from local directories, answering the requests
``huggingface_hub`` makes the way the Hub answers them:

* ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{revision}``: the model info
  (``id``, ``sha`` = the commit, ``siblings`` = ``[{"rfilename"}]``); an unknown repo is 404 with
  ``X-Error-Code: RepoNotFound``, an unknown revision 404 with ``X-Error-Code: RevisionNotFound``;
* ``HEAD /{repo}/resolve/{revision}/{file}``: a regular file is 200 with ``X-Repo-Commit``, ``ETag`` (its git blob
  sha1) and ``Content-Length``; an LFS file (weights) is a 302 to ``/cdn/{sha256}`` with ``X-Repo-Commit``,
  ``X-Linked-Etag`` (its sha256), ``X-Linked-Size`` and ``Location``, as the Hub redirects to its CDN;
* ``GET`` of either URL: the bytes.

Every request is recorded in ``requests`` as ``(method, path)``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".h5", ".msgpack", ".gguf")


class Repo:
    """A repo's files at each of its revisions: ``{revision name or commit: (commit, {path: bytes})}``."""

    def __init__(self, files: dict[str, bytes], revisions: dict[str, str]):
        self.files = files
        self.revisions = {**revisions, **{c: c for c in revisions.values()}}


def repo_from_dir(directory: Path, revisions: dict[str, str], extra: dict[str, bytes] | None = None) -> Repo:
    files = {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
    return Repo({**files, **(extra or {})}, revisions)


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Hub(BaseHTTPRequestHandler):
    repos: dict[str, Repo] = {}
    requests: list[tuple[str, str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._route(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(body=False)

    def _route(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        type(self).requests.append((self.command, path))
        if path.startswith("/api/models/"):
            return self._info(path[len("/api/models/"):], body)
        if path.startswith("/cdn/"):
            blobs = {hashlib.sha256(d).hexdigest(): d for r in self.repos.values() for d in r.files.values()}
            data = blobs.get(path[len("/cdn/"):])
            return self._send(200, data, {}, body) if data is not None else self._error(404, "EntryNotFound", body)
        repo_id, sep, rest = path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        return self._file(repo_id, revision, filename, body) if sep else self._error(404, "RepoNotFound", body)

    def _info(self, rest: str, body: bool) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", body)
        commit = repo.revisions.get(revision or "main")
        if commit is None:
            return self._error(404, "RevisionNotFound", body)
        info = {"_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
                "sha": commit, "private": False, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                "tags": ["transformers"], "library_name": "transformers", "lastModified": "2025-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": f} for f in repo.files]}
        self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)

    def _file(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
        repo = self.repos.get(repo_id)
        commit = repo.revisions.get(revision) if repo else None
        if repo is None or commit is None:
            return self._error(404, "RepoNotFound" if repo is None else "RevisionNotFound", body)
        data = repo.files.get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", body)
        if filename.endswith(_LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            host = f"http://{self.headers['Host']}"
            return self._send(302, b"", {"X-Repo-Commit": commit, "X-Linked-Etag": f'"{sha256}"',
                                         "X-Linked-Size": str(len(data)), "Location": f"{host}/cdn/{sha256}"}, body)
        self._send(200, data, {"X-Repo-Commit": commit, "ETag": f'"{_git_sha1(data)}"'}, body)

    def _error(self, code: int, error_code: str, body: bool) -> None:
        self._send(code, json.dumps({"error": error_code}).encode(), {"X-Error-Code": error_code,
                                                                      "Content-Type": "application/json"}, body)

    def _send(self, code: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


@contextmanager
def stand_in_hub(repos: dict[str, Repo]) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(the hub's URL for ``HF_ENDPOINT``, the list its requests are recorded in)."""
    handler = type("Hub", (_Hub,), {"repos": repos, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()
