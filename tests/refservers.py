"""Real servers on 127.0.0.1 for the reference and HTTP-store tests (a plain module, not fixtures).

* :class:`FileServer` — a threaded ``http.server`` serving an in-memory dict of files, with ETag,
  Last-Modified, Content-Length, Range and If-Match (each switchable, to play a poorer server).
* :class:`StaticDirServer` — ``python -m http.server --directory DIR`` as a subprocess, exactly
  what a user would publish a store with.
* :class:`GCSEmulator` — ``gcp-storage-emulator`` as a subprocess (in memory).

Subprocesses are stopped by their own PID in ``__exit__``.
"""

from __future__ import annotations

import email.utils
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import httpx
import xxhash

from artfs.testing import free_port


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _send_empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, *, body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0].lstrip("/")
        with owner.lock:
            owner.requests.append((self.command, path, dict(self.headers)))
            item = owner.files.get(path)
        if item is None:
            self._send_empty(404)
            return
        data, mtime = item
        etag = f'"{xxhash.xxh64_hexdigest(data)}"'
        if owner.etag and self.headers.get("If-Match") not in (None, "*", etag):
            self._send_empty(412)
            return
        start, end, status = 0, len(data), 200
        rng = self.headers.get("Range")
        if owner.ranges and rng and rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].partition("-")
            if a == "":
                start = max(len(data) - int(b), 0)
            else:
                start = int(a)
                end = min(int(b) + 1, len(data)) if b else len(data)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        if owner.etag:
            self.send_header("ETag", etag)
        if owner.last_modified:
            self.send_header("Last-Modified", email.utils.formatdate(mtime, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        if owner.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if body:
            self.wfile.write(data[start:end])


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: "FileServer"


class FileServer:
    """``with FileServer({"a/b.bin": data}) as srv:`` — files at ``srv.url + "/a/b.bin"``.

    ``srv.set(path, data)`` changes a file behind the references (a new ETag and Last-Modified);
    ``srv.requests`` records ``(method, path, headers)`` of every request.
    """

    def __init__(self, files: dict[str, bytes] | None = None, *, etag: bool = True, ranges: bool = True,
                 last_modified: bool = True) -> None:
        self.lock = threading.Lock()
        self.files: dict[str, tuple[bytes, float]] = {}
        self.etag, self.ranges, self.last_modified = etag, ranges, last_modified
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._t = 1_700_000_000.0
        for p, d in (files or {}).items():
            self.set(p, d)

    def set(self, path: str, data: bytes) -> None:
        with self.lock:
            self._t += 10  # a visibly newer Last-Modified
            self.files[path] = (data, self._t)

    def url_of(self, path: str) -> str:
        return f"{self.url}/{path}"

    def __enter__(self) -> "FileServer":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _wait_answers(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Any) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read()[-2000:]!r}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


class _Subprocess:
    argv: list[str]
    probe = "/"

    def __enter__(self) -> "_Subprocess":
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env())
        try:
            _wait_answers(self.url + self.probe, self.proc, 30, self._log)
        except BaseException:
            self.__exit__()
            raise
        return self

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def __exit__(self, *exc: object) -> None:
        p = self.proc
        if p.poll() is None:
            p.terminate()  # by its own PID
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self._log.close()


class StaticDirServer(_Subprocess):
    """``with StaticDirServer(store_dir) as srv:`` (``srv.url``) — ``python -m http.server`` publishing a directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def command(self) -> list[str]:
        return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(self.port),
                "--directory", self.directory]


class GCSEmulator(_Subprocess):
    """``with GCSEmulator() as gcs:`` — a GCS JSON API endpoint at ``gcs.url`` (``STORAGE_EMULATOR_HOST``)."""

    probe = "/storage/v1/b"

    def command(self) -> list[str]:
        exe = shutil.which("gcp-storage-emulator", path=os.path.dirname(sys.executable)) or "gcp-storage-emulator"
        return [exe, "start", "--host=127.0.0.1", f"--port={self.port}", "--in-memory"]

    # small client for the tests' own setup
    def create_bucket(self, bucket: str) -> None:
        r = httpx.post(f"{self.url}/storage/v1/b", params={"project": "test"}, json={"name": bucket})
        r.raise_for_status()

    def upload(self, bucket: str, name: str, data: bytes) -> dict[str, Any]:
        r = httpx.post(f"{self.url}/upload/storage/v1/b/{bucket}/o", params={"uploadType": "media", "name": name},
                       content=data, headers={"Content-Type": "application/octet-stream"})
        r.raise_for_status()
        doc: dict[str, Any] = r.json()
        return doc
