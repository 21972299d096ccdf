"""A Hugging Face hub on 127.0.0.1 for the download tests, answering the way the Hub
answers huggingface_hub's `hf_hub_download`:

- HEAD/GET `{endpoint}/{repo}/resolve/{revision}/{filename}`: `X-Repo-Commit` on every
  answer; a small file is served in place with its git `ETag` and `Content-Length`; a
  large one (an LFS file) is a 302 to a second server, the "CDN", with `X-Linked-Etag`
  (its sha256) and `X-Linked-Size`, as the Hub redirects to its storage;
- the CDN serves the bytes and honours `Range: bytes=N-` with a 206;
- errors carry the Hub's `X-Error-Code` (401 RepoNotFound, 404 EntryNotFound with the
  commit, 404 RevisionNotFound); `HEAD /` answers (the app's reachability probe).

Faults on demand: `cut[filename] = n` sends the first n bytes of that file's next GET and
then drops the connection; `interrupt[filename] = n` sends n bytes and then delivers
SIGINT to the main thread (a Ctrl-C mid-download); `drop` lists files whose every GET
is dropped without an answer; `status[filename] = 503` answers that file's resolve
requests with that status (a hub outage). `seen` records every request.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "5e1f0c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"
# files this big are LFS files, served through the CDN like the Hub's model weights
LFS_MIN_BYTES = 10_000
# how long an interrupted GET keeps its connection open after the SIGINT
INTERRUPT_HOLD_S = 2.0


@dataclass(frozen=True)
class Seen:
    """One request a server answered."""

    server: str  # "hub" or "cdn"
    method: str
    path: str
    range: str | None


@dataclass
class FakeHub:
    """The hub and its CDN serving `repos` ({repo id: {file name: local file}})."""

    repos: dict[str, dict[str, Path]]
    cut: dict[str, int] = field(default_factory=dict)
    interrupt: dict[str, int] = field(default_factory=dict)
    drop: set[str] = field(default_factory=set)
    status: dict[str, int] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._data = {
            repo: {name: Path(path).read_bytes() for name, path in files.items()}
            for repo, files in self.repos.items()
        }
        self._blobs = {
            hashlib.sha256(data).hexdigest(): (name, data)
            for files in self._data.values()
            for name, data in files.items()
        }
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._servers = [_server(self, "hub"), _server(self, "cdn")]
        self._threads: list[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        """The URL to give as HF_ENDPOINT."""
        return _url(self._servers[0])

    @property
    def cdn(self) -> str:
        return _url(self._servers[1])

    def start(self) -> FakeHub:
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever, args=(0.05,), daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Shut both servers down, open connections included: nothing answers then."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # closed by the client already
                    connection.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self._threads:
            self.stop()

    def gets(self, filename: str) -> list[Seen]:
        """The GETs that fetched `filename`'s bytes (from the hub or the CDN)."""
        return [s for s in self.seen if s.method == "GET" and _names(s.path, filename)]

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def take_fault(self, faults: dict[str, int], filename: str) -> int | None:
        with self._lock:
            return faults.pop(filename, None)

    def lookup(self, repo: str, filename: str) -> bytes | None:
        return self._data.get(repo, {}).get(filename)

    def blob(self, sha: str) -> tuple[str, bytes] | None:
        return self._blobs.get(sha)


def _names(path: str, filename: str) -> bool:
    """Whether a request path fetches `filename` (by name, or by the CDN's query)."""
    parts = urlsplit(path)
    return unquote(parts.path).endswith(f"/{filename}") or parts.query == filename


def _server(hub: FakeHub, role: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.hub = hub  # type: ignore[attr-defined]
    server.role = role  # type: ignore[attr-defined]
    return server


def _url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.hub.track(self.connection, open_=True)

    def finish(self) -> None:
        self.hub.track(self.connection, open_=False)
        super().finish()

    def log_message(self, format, *args) -> None:
        """Quiet: the test reads `FakeHub.seen` instead."""

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    def _answer(self, body: bool) -> None:
        role = self.server.role  # type: ignore[attr-defined]
        self.hub.record(Seen(role, self.command, self.path, self.headers.get("Range")))
        if role == "cdn":
            self._cdn(body)
        else:
            self._resolve(body)

    def _resolve(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/":
            return self._send(200, {}, b"", body)
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match is None:  # the API's other endpoints: not served here
            return self._send(404, {}, b'{"error":"Not Found"}', body)
        repo, revision, filename = match.groups()
        if repo not in self.hub.repos:
            return self._error(401, "RepoNotFound", "Repository not found", body)
        if revision not in ("main", COMMIT):
            message = f"Invalid rev id: {revision}"
            return self._error(404, "RevisionNotFound", message, body)
        if filename in self.hub.status:
            return self._send(self.hub.status[filename], {}, b"", body)
        data = self.hub.lookup(repo, filename)
        if data is None:
            message = f'{filename} does not exist on "main"'
            return self._error(404, "EntryNotFound", message, body)
        headers = {"X-Repo-Commit": COMMIT}
        if len(data) < LFS_MIN_BYTES:
            headers["ETag"] = f'"{_git_blob_sha1(data)}"'
            return self._content(filename, data, headers, body)
        sha = hashlib.sha256(data).hexdigest()
        headers |= {
            "ETag": f'"{_git_blob_sha1(sha.encode())}"',  # the LFS pointer's
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(len(data)),
            "Location": f"{self.hub.cdn}/blobs/{sha}?{filename}",
        }
        self._send(302, headers, b"", body)

    def _cdn(self, body: bool) -> None:
        parts = urlsplit(self.path)
        found = self.hub.blob(parts.path.removeprefix("/blobs/"))
        if found is None:
            return self._send(404, {}, b"", body)
        filename, data = found
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        self._content(filename, data, {"ETag": etag}, body)

    def _content(self, filename: str, data: bytes, headers: dict, body: bool) -> None:
        status, start = 200, 0
        wanted = self.headers.get("Range")
        if wanted is not None:
            match = re.fullmatch(r"bytes=(\d+)-", wanted)
            if match is None or int(match.group(1)) >= len(data):
                return self._send(416, {}, b"", body)
            status, start = 206, int(match.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if body and filename in self.hub.drop:
            self.close_connection = True
            return
        cut = self.hub.take_fault(self.hub.cut, filename) if body else None
        stop = self.hub.take_fault(self.hub.interrupt, filename) if body else None
        part = data[start:]
        headers |= {
            "Accept-Ranges": "bytes",
            "Content-Length": str(len(part)),
            "Content-Disposition": f'inline; filename="{filename}";',
        }
        self._head(status, headers)
        if not body:
            return
        if cut is not None or stop is not None:
            self.wfile.write(part[: cut if cut is not None else stop])
            self.wfile.flush()
            if stop is not None:
                main = threading.main_thread().ident
                signal.pthread_kill(main, signal.SIGINT)
                threading.Event().wait(INTERRUPT_HOLD_S)
            self.close_connection = True
            return
        self.wfile.write(part)

    def _error(self, status: int, code: str, message: str, body: bool) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if code == "EntryNotFound":
            headers["X-Repo-Commit"] = COMMIT
        payload = json.dumps({"error": message}).encode()
        headers["Content-Type"] = "application/json"
        self._send(status, headers, payload, body)

    def _send(self, status: int, headers: dict, payload: bytes, body: bool) -> None:
        self._head(status, {**headers, "Content-Length": str(len(payload))})
        if body:
            self.wfile.write(payload)

    def _head(self, status: int, headers: dict) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
