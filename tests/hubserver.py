"""A loopback HTTP server that answers the Hugging Face hub calls huggingface-hub makes to download a repo.

Serves folders as model repos at one fixed commit:
    GET  /api/models/{repo}[/revision/{rev}]        repo info: sha + siblings (older clients list these)
    GET  /api/models/{repo}/tree/{rev}[/{path}]     file listing with sizes, blob ids, LFS sha256 (newer ones)
    HEAD /{repo}/resolve/{rev}/{path}               X-Repo-Commit, ETag, Content-Length (the metadata call)
    GET  /{repo}/resolve/{rev}/{path}               the bytes, with Range support (206) for resumed downloads
and the calls `HfApi.create_repo` / `create_commit` / `upload_folder` make (legacy LFS path: run clients with
HF_HUB_DISABLE_XET=1):
    POST /api/repos/create                          a new empty repo (409 when it exists)
    POST /api/validate-yaml                         model card metadata check (always fine)
    POST /api/models/{repo}/preupload/{rev}         upload mode per file: "lfs" for big/binary, else "regular"
    POST /{repo}.git/info/lfs/objects/batch         where to PUT each LFS object not stored yet
    PUT  /lfs-upload/{oid}                          the object's bytes (sha256 checked)
    POST /api/models/{repo}/commit/{rev}            ndjson commit: regular files inline, LFS files by oid
Writes need a token from `tokens`; a private repo answers 401 RepoNotFound without one, like the hub.
Errors carry the hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) so huggingface-hub raises
its usual exceptions. Fault injection: `cut_once` drops the connection after N bytes of one file, once;
`throttle` slows one file down so a test can kill a downloading process midway; `hold` stalls one file
until the test releases it. Every request is recorded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".gguf")  # served like the hub serves LFS files
DEFAULT_BRANCH = "main"
_SEND_CHUNK = 64 * 1024


@dataclass(frozen=True)
class RepoFile:
    path: str
    source: Path
    size: int
    blob_id: str  # git blob sha1
    sha256: str | None  # LFS files only

    @property
    def etag(self) -> str:
        # The hub's ETag is the LFS sha256 for LFS files and the git blob id for the others.
        return self.sha256 or self.blob_id


@dataclass
class Repo:
    repo_id: str
    commit: str
    files: dict[str, RepoFile]
    private: bool = False


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    status: int


@dataclass
class _Faults:
    cuts: dict[str, int] = field(default_factory=dict)  # file path -> bytes to send before dropping, once
    throttles: dict[str, float] = field(default_factory=dict)  # file path -> seconds to sleep per 64 KiB
    holds: dict[str, threading.Event] = field(default_factory=dict)  # file path -> body waits until set
    corrupt: set[str] = field(default_factory=set)  # file path -> the next full GET flips its first byte


def _describe_file(folder: Path, path: Path) -> RepoFile:
    data = path.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    rel = path.relative_to(folder).as_posix()
    lfs = hashlib.sha256(data).hexdigest() if rel.endswith(LFS_SUFFIXES) else None
    return RepoFile(rel, path, len(data), blob, lfs)


def _commit_of(files: dict[str, RepoFile]) -> str:
    listing = json.dumps(sorted((f.path, f.blob_id) for f in files.values()))
    return hashlib.sha1(listing.encode()).hexdigest()


class LoopbackHub:
    """The server; use as a context manager or call start()/stop(). Bound to 127.0.0.1 on a free port."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.faults = _Faults()
        self.sent: dict[str, int] = {}  # file path -> body bytes written so far (all requests)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.tokens: set[str] = {"hf_loopback_token"}  # accepted as `Authorization: Bearer <token>`
        self._storage = tempfile.TemporaryDirectory(prefix="loopback-hub-")
        self.lfs_objects: dict[str, Path] = {}  # sha256 -> stored upload

    # ---- setup ----------------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, folder: Path, *, private: bool = False) -> str:
        """Serve every file under `folder` as repo `repo_id`; returns its commit hash."""
        files = {}
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            described = _describe_file(Path(folder), path)
            files[described.path] = described
        repo = Repo(repo_id, _commit_of(files), files, private)
        self.repos[repo_id] = repo
        return repo.commit

    def store(self, data: bytes) -> Path:
        """Keep uploaded bytes in the server's own folder; returns where."""
        path = Path(self._storage.name) / hashlib.sha256(data).hexdigest()
        path.write_bytes(data)
        return path

    def replace_file(self, repo_id: str, path: str, data: bytes) -> str:
        """Serve other bytes for one file of a repo (a tampered upload); returns the new commit."""
        repo = self.repos[repo_id]
        stored = self.store(data)
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        lfs = hashlib.sha256(data).hexdigest() if path.endswith(LFS_SUFFIXES) else None
        repo.files[path] = RepoFile(path, stored, len(data), blob, lfs)
        repo.commit = _commit_of(repo.files)
        return repo.commit

    def cut_once(self, path: str, after_bytes: int) -> None:
        """The next full GET of `path` sends `after_bytes` bytes, then drops the connection."""
        self.faults.cuts[path] = after_bytes

    def throttle(self, path: str, seconds_per_chunk: float) -> None:
        self.faults.throttles[path] = seconds_per_chunk

    def corrupt_once(self, path: str) -> None:
        """The next full GET of `path` sends the right length with its first byte flipped (a bad transfer)."""
        self.faults.corrupt.add(path)

    def hold(self, path: str) -> threading.Event:
        """Bodies of `path` are not sent until the returned event is set (headers go out at once)."""
        event = self.faults.holds[path] = threading.Event()
        return event

    # ---- lifecycle ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackHub:
        handler = type("BoundHandler", (_HubHandler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for gate in self.faults.holds.values():
            gate.set()  # never leave a handler thread stalled
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._storage.cleanup()

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- bookkeeping -------------------------------------------------------------------------------------
    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def count(self, method: str | None = None, path_suffix: str = "") -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and r.path.endswith(path_suffix)
            )

    def add_sent(self, path: str, n: int) -> None:
        with self._lock:
            self.sent[path] = self.sent.get(path, 0) + n

    def take_cut(self, path: str) -> int | None:
        with self._lock:
            return self.faults.cuts.pop(path, None)

    def take_corrupt(self, path: str) -> bool:
        with self._lock:
            if path in self.faults.corrupt:
                self.faults.corrupt.discard(path)
                return True
            return False


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a `bytes=a-b` / `bytes=a-` range, or None for a full response."""
    if not header or not header.startswith("bytes="):
        return None
    first_text, _, last_text = header[len("bytes=") :].split(",")[0].partition("-")
    first = int(first_text) if first_text else max(size - int(last_text), 0)
    last = int(last_text) if first_text and last_text else size - 1
    return first, min(last, size - 1)


class _HubHandler(BaseHTTPRequestHandler):
    hub: LoopbackHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    # ---- dispatch ---------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        body = self._read_body()
        if parts == ["api", "repos", "create"]:
            self._create_repo(json.loads(body))
        elif parts == ["api", "validate-yaml"]:
            self._json({"errors": [], "warnings": []})
        elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("preupload", "commit"):
            repo = self._writable("/".join(parts[2:4]), "/".join(parts[5:]))
            if repo is not None and parts[4] == "preupload":
                self._preupload(repo, json.loads(body))
            elif repo is not None:
                self._commit(repo, body)
        elif (
            len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]
        ):
            if self._writable(parts[0] + "/" + parts[1][: -len(".git")], None) is not None:
                self._lfs_batch(json.loads(body))
        else:
            self._error(404, "EntryNotFound", "no such endpoint")

    def do_PUT(self) -> None:
        parts = urlsplit(self.path).path.strip("/").split("/")
        data = self._read_body()
        if len(parts) != 2 or parts[0] != "lfs-upload":
            self._error(404, "EntryNotFound", "no such endpoint")
        elif hashlib.sha256(data).hexdigest() != parts[1]:
            self._error(400, "BadRequest", "uploaded bytes do not match their sha256")
        else:
            self.hub.lfs_objects[parts[1]] = self.hub.store(data)
            self._json({})

    def _dispatch(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            self._api(parts[2:], parse_qs(url.query))
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), send_body)
        else:
            self._error(404, "EntryNotFound", "no such endpoint")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization") or ""
        return header.startswith("Bearer ") and header[len("Bearer ") :] in self.hub.tokens

    def _repo(self, repo_id: str, revision: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        if revision not in (DEFAULT_BRANCH, repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id", repo.commit)
            return None
        return repo

    # ---- API ----------------------------------------------------------------------------------------------
    def _api(self, parts: list[str], query: dict[str, list[str]]) -> None:
        repo_id = "/".join(parts[:2])
        rest = parts[2:]
        if not rest or rest[0] == "revision":
            repo = self._repo(repo_id, rest[1] if len(rest) > 1 else DEFAULT_BRANCH)
            if repo is not None:
                self._json(self._info(repo))
        elif rest[0] == "tree" and len(rest) >= 2:
            repo = self._repo(repo_id, rest[1])
            if repo is not None:
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                self._json(self._tree(repo, "/".join(rest[2:]), recursive))
        else:
            self._error(404, "EntryNotFound", "no such endpoint")

    @staticmethod
    def _info(repo: Repo) -> dict[str, Any]:
        return {
            "_id": repo.commit[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": repo.commit,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": [{"rfilename": path} for path in repo.files],
        }

    @staticmethod
    def _tree(repo: Repo, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        base = f"{prefix}/" if prefix else ""
        entries: dict[str, dict[str, Any]] = {}
        for f in repo.files.values():
            if not f.path.startswith(base):
                continue
            head, sep, _tail = f.path[len(base) :].partition("/")
            if sep and not recursive:
                entries[base + head] = {"type": "directory", "oid": "0" * 40, "size": 0, "path": base + head}
                continue
            if sep:  # recursive listings name the folders too, like the hub
                entries.setdefault(
                    base + head, {"type": "directory", "oid": "0" * 40, "size": 0, "path": base + head}
                )
            entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
            if f.sha256:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            entries[f.path] = entry
        return [entries[key] for key in sorted(entries)]

    # ---- files -------------------------------------------------------------------------------------------
    def _resolve(self, repo_id: str, revision: str, path: str, send_body: bool) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        f = repo.files.get(path)
        if f is None:
            self._error(404, "EntryNotFound", "Entry not found", repo.commit)
            return
        span = _parse_range(self.headers.get("Range"), f.size)
        first, last = span if span else (0, f.size - 1)
        status = 206 if span else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{f.etag}"')
        self.send_header("X-Repo-Commit", repo.commit)
        if span:
            self.send_header("Content-Range", f"bytes {first}-{last}/{f.size}")
        self.end_headers()
        self.hub.record(Request(self.command, self.path, self.headers.get("Range"), status))
        if send_body:
            corrupt = not span and self.hub.take_corrupt(path)
            self._send_bytes(f, first, last, cut=None if span else self.hub.take_cut(path), corrupt=corrupt)

    def _send_bytes(self, f: RepoFile, first: int, last: int, cut: int | None, corrupt: bool = False) -> None:
        delay = self.hub.faults.throttles.get(f.path, 0.0)
        if (gate := self.hub.faults.holds.get(f.path)) is not None:
            gate.wait(timeout=300)
        remaining = last - first + 1 if cut is None else min(cut, last - first + 1)
        with open(f.source, "rb") as source:
            source.seek(first)
            while remaining > 0:
                block = source.read(min(_SEND_CHUNK, remaining))
                if corrupt:
                    block, corrupt = bytes([block[0] ^ 0xFF]) + block[1:], False
                try:
                    self.wfile.write(block)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client went away (e.g. a killed test process)
                remaining -= len(block)
                self.hub.add_sent(f.path, len(block))
                if delay:
                    time.sleep(delay)
        if cut is not None:
            self.close_connection = True
            self.connection.shutdown(2)  # drop mid-body: the client sees a short read

    # ---- uploads -----------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _writable(self, repo_id: str, revision: str | None) -> Repo | None:
        if not self._authorized():
            self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return None
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if revision is not None and revision != DEFAULT_BRANCH:
            self._error(404, "RevisionNotFound", "only the main branch takes commits here", repo.commit)
            return None
        return repo

    def _create_repo(self, payload: dict[str, Any]) -> None:
        if not self._authorized():
            self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return
        repo_id = f"{payload['organization']}/{payload['name']}"
        if repo_id in self.hub.repos:  # the hub's 409 still names the repo's url
            self._error(
                409, "RepoExists", "You already created this model repo", extra={"url": self._url(repo_id)}
            )
            return
        files: dict[str, RepoFile] = {}
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.hub.repos[repo_id] = Repo(repo_id, _commit_of(files), files, private)
        self._json({"url": self._url(repo_id), "name": repo_id})

    def _url(self, repo_id: str) -> str:
        return f"{self.hub.url}/{repo_id}"

    def _preupload(self, repo: Repo, payload: dict[str, Any]) -> None:
        answer = []
        for item in payload["files"]:
            path = item["path"]
            lfs = path.endswith(LFS_SUFFIXES) or item["size"] > 10 * 1024 * 1024
            existing = repo.files.get(path)
            oid = (existing.sha256 if lfs else existing.blob_id) if existing else None
            answer.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        self._json({"files": answer, "commitOid": repo.commit})

    def _lfs_batch(self, payload: dict[str, Any]) -> None:
        objects = []
        for item in payload["objects"]:
            entry: dict[str, Any] = {"oid": item["oid"], "size": item["size"]}
            if item["oid"] not in self.hub.lfs_objects:  # already stored objects need no upload
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{item['oid']}"}}
            objects.append(entry)
        self._json({"transfer": "basic", "objects": objects})

    def _commit(self, repo: Repo, body: bytes) -> None:
        files = dict(repo.files)
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                files[value["path"]] = self._described(value["path"], self.hub.store(data), data)
            elif key == "lfsFile":
                stored = self.hub.lfs_objects.get(value["oid"])
                if stored is None:
                    self._error(422, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                    return
                files[value["path"]] = self._described(value["path"], stored, stored.read_bytes())
            elif key == "deletedFile":
                files.pop(value["path"], None)
        repo.files = files
        repo.commit = _commit_of(files)
        url = f"{self.hub.url}/{repo.repo_id}/commit/{repo.commit}"
        self._json({"commitUrl": url, "commitOid": repo.commit, "pullRequestUrl": None})

    @staticmethod
    def _described(path: str, stored: Path, data: bytes) -> RepoFile:
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        lfs = hashlib.sha256(data).hexdigest() if path.endswith(LFS_SUFFIXES) else None
        return RepoFile(path, stored, len(data), blob, lfs)

    # ---- helpers -----------------------------------------------------------------------------------------
    def _json(self, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.hub.record(Request(self.command, self.path, None, 200))

    def _error(
        self,
        status: int,
        code: str,
        message: str,
        commit: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        body = json.dumps({"error": message} | (extra or {})).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.hub.record(Request(self.command, self.path, None, status))
