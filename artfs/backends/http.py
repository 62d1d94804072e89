"""The read-only HTTP(S) store: a store directory published on any static web server.

``https://host/path`` serves the store layout as it is (``python -m http.server``, nginx, a CDN in
front of a bucket, ...). A static server cannot list, so listings come from the small index files
that writers keep (see :mod:`artfs._index`)::

    index.json                                 the projects
    <project>/index.json                       its artifacts
    <project>/artifacts/<artifact>/index.json  its versions and aliases

The index is derived data that racing writers can leave stale, so it is never trusted for the
newest version: the version listing checks the highest indexed version still exists and probes
``versions/<N+1>.json``, ``N+2``, ... until a 404 (stepping over the tombstones ``deleted/<N>`` of
deleted versions: numbers are never reused). Alias values are always read from the alias
files themselves; the index only names them.

* Writes raise :class:`PermissionDenied` ("read-only store").
* ``get_range`` sends a ``Range`` header; a server that ignores it (status 200) is sliced on the
  client side, with one warning in the log per backend, since every read then costs a whole file.
* Requests go through one ``httpx.Client`` (thread-safe, pooled). The rule is the S3 store's:
  ``ARTFS_HTTP_TIMEOUT`` seconds (default 15) is the budget of each request, retries included.
  An idempotent request that fails with a 429/5xx, a refused or broken connection or a timeout
  is retried with exponential backoff and full jitter (as botocore's standard mode) until the
  budget is spent, counted from its start; each attempt gives up after a third of the budget
  (at least a second) without progress, so a stalled server is retried too. A body that breaks
  off is fetched again the same way. Redirects are not followed for the store (a ``dir`` ->
  ``dir/`` redirect must not look like a file).

The HTTP plumbing (client, budget, retries, status mapping) is :mod:`artfs.backends._httpio`,
shared with the ``http(s)://`` and ``gs://`` references.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import quote, urlparse

import httpx

from .. import _layout as L
from .._errors import NotFound, PermissionDenied, StoreUnavailable
from .base import Backend, ObjectInfo
from ._httpio import CHUNK, budget_of, http_mtime, make_client, retry_within, send, slice_stream

_T = TypeVar("_T")

log = logging.getLogger("artfs.http")

class HTTPBackend(Backend):
    """``http(s)://host/path``: a read-only store served by a static web server."""

    read_only = True

    def __init__(self, url: str, *, timeout: float | None = None, index_ttl: float = 1.0) -> None:
        u = urlparse(url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError(f"{url!r}: expected http(s)://host[/path]")
        if u.query or u.fragment:
            raise ValueError(f"{url!r}: a store URL has no query or fragment")
        self.url = url.rstrip("/")
        self._base = self.url + "/"
        self._client = make_client(timeout)
        self.index_ttl = index_ttl
        self._index_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()
        self._warned_range = False
        self.counter: dict[str, int] = {"put": 0, "get": 0, "range": 0, "download": 0}

    def __repr__(self) -> str:
        return f"HTTPBackend({self.url!r})"

    def close(self) -> None:
        self._client.close()

    # -- plumbing ------------------------------------------------------------------------------
    def _u(self, key: str) -> str:
        return self._base + quote(key, safe="/")

    def _send(self, method: str, key: str, *, headers: dict[str, str] | None = None,
              stream: bool = False) -> httpx.Response:
        return send(self._client, method, self._u(key), headers=headers, stream=stream, what=f"{key} ({self.url})")

    def _check(self, r: httpx.Response, key: str) -> None:
        s = r.status_code
        if 200 <= s < 300:
            return
        if s == 404 or s == 410 or 300 <= s < 400:
            raise NotFound(f"{key}: not found in the store ({self.url})")
        if s in (401, 403):
            raise PermissionDenied(f"{key}: access denied (HTTP {s}) by {self.url}")
        raise StoreUnavailable(f"{key}: HTTP {s} {r.reason_phrase} from {self.url}")

    # -- reading -------------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        r = self._send("GET", key)
        self._check(r, key)
        self.counter["get"] += 1
        return r.content

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        self.counter["range"] += 1
        if length <= 0:
            if self.head(key) is None:
                raise NotFound(f"{key}: not found in the store ({self.url})")
            return b""

        def attempt() -> bytes:
            r = self._send("GET", key, headers={"Range": f"bytes={offset}-{offset + length - 1}"}, stream=True)
            try:
                if r.status_code == 416:
                    return b""
                self._check(r, key)
                if r.status_code == 206:
                    return r.read()[:length]
                self._warn_no_range()
                return slice_stream(r, offset, length)
            finally:
                r.close()

        return self._body_retry(key, attempt)

    def _body_retry(self, key: str, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt`` (a request and the reading of its body) again while the budget lasts
        when its body breaks off (``send`` only retries until the response's head)."""
        try:
            return retry_within(budget_of(self._client), attempt,
                                lambda e: isinstance(e, httpx.TransportError))
        except httpx.TransportError as e:
            raise StoreUnavailable(f"{key}: reading from {self.url} broke off: {type(e).__name__}: {e}") from None

    def _warn_no_range(self) -> None:
        with self._lock:
            if self._warned_range:
                return
            self._warned_range = True
        log.warning("%s ignores HTTP Range requests; every partial read fetches whole files", self.url)

    def download_file(self, key: str, path: str) -> int:
        def attempt() -> tuple[httpx.Response, int]:
            r = self._send("GET", key, stream=True)
            try:
                self._check(r, key)
                n = 0
                with open(path, "wb") as f:
                    for chunk in r.iter_bytes(CHUNK):
                        f.write(chunk)
                        n += len(chunk)
            finally:
                r.close()
            return r, n

        r, n = self._body_retry(key, attempt)
        expected = r.headers.get("content-length")
        if expected is not None and expected.isdigit() and int(expected) != n:
            raise StoreUnavailable(f"{key}: download from {self.url} stopped after {n} of {expected} bytes")
        self.counter["download"] += 1
        return n

    def head(self, key: str) -> ObjectInfo | None:
        r = self._send("HEAD", key)
        if r.status_code in (404, 410) or 300 <= r.status_code < 400:
            return None
        self._check(r, key)
        size = r.headers.get("content-length")
        return ObjectInfo(key, int(size) if size and size.isdigit() else 0, http_mtime(r))

    # -- writing: refused ------------------------------------------------------------------------
    def _read_only(self, key: str) -> PermissionDenied:
        return PermissionDenied(f"{key}: {self.url} is a read-only store")

    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        raise self._read_only(key)

    def put_file(self, key: str, path: str, *, exclusive: bool = False) -> None:
        raise self._read_only(key)

    def delete(self, key: str) -> None:
        raise self._read_only(key)

    # -- listing through the index files -----------------------------------------------------------
    def read_index(self, key: str) -> dict[str, Any] | None:
        """An index document (cached for ``index_ttl`` seconds), or None if missing or unreadable."""
        now = time.monotonic()
        with self._lock:
            hit = self._index_cache.get(key)
        if hit is not None and now - hit[0] < self.index_ttl:
            return hit[1]
        try:
            doc = L.parse_index(self.get(key), where=f"{self.url}/{key}")
        except NotFound:
            doc = None
        with self._lock:
            self._index_cache[key] = (now, doc)
        return doc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Versions and alias names of an artifact; nothing else can be listed over HTTP.

        Other prefixes (``<p>/intents/``, ``<p>/deleting/``, ...) list as empty: a reader has no
        commit or deletion to wait for, and writing is refused anyway.
        """
        listing = L.parse_artifact_listing(prefix)
        if listing is None:
            log.debug("%s: cannot list %r over HTTP; treating it as empty", self.url, prefix)
            return
        project, artifact, kind = listing
        doc = self.read_index(L.artifact_index_key(project, artifact)) or {}
        if kind == "aliases":
            for name in sorted(doc.get("aliases") or {}):
                yield ObjectInfo(L.alias_key(project, artifact, name), 0, 0.0)
            return
        for n in self._versions(project, artifact, doc.get("versions") or [], doc.get("next", 0)):
            yield ObjectInfo(L.version_key(project, artifact, n), 0, 0.0)

    def _versions(self, project: str, artifact: str, indexed: builtins.list[int],
                  next_hint: int) -> builtins.list[int]:
        vs = sorted(set(indexed))
        # a deletion after the index was written: drop vanished versions from the top
        while vs and not self.exists(L.version_key(project, artifact, vs[-1])):
            vs.pop()
        # commits after the index was written: probe upwards until a number never used
        n = max(vs[-1] + 1 if vs else 0, next_hint)
        while True:
            if self.exists(L.version_key(project, artifact, n)):
                vs.append(n)
            elif not self.exists(L.deleted_key(project, artifact, n)):
                return vs
            n += 1

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        p = prefix.strip("/")
        if not p:
            doc = self.read_index(L.ROOT_INDEX)
            return sorted(doc.get("projects") or []) if doc else []
        parts = p.split("/")
        project = L.is_artifacts_prefix(p)
        if project is not None:
            doc = self.read_index(L.project_index_key(project))
            return sorted(doc.get("artifacts") or []) if doc else []
        if len(parts) == 1:
            return [L.ARTIFACTS_DIR] if self.read_index(L.project_index_key(parts[0])) else []
        return []
