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

This module also holds the HTTP plumbing that :mod:`artfs._refs` uses for ``http(s)://`` and
``gs://`` references (:func:`make_client`, :func:`send`).
"""

from __future__ import annotations

import builtins
import email.utils
import logging
import os
import random
import threading
import time
import weakref
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import quote, urlparse

import httpx

from .._errors import ArtfsError, NotFound, PermissionDenied, StoreUnavailable
from . import Backend, ObjectInfo

log = logging.getLogger("artfs.http")

DEFAULT_TIMEOUT = 15.0
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK = 1 << 20
#: the time budget of each client made by :func:`make_client` (its per-attempt timeouts are less)
_BUDGETS: "weakref.WeakKeyDictionary[httpx.Client, float]" = weakref.WeakKeyDictionary()
_T = TypeVar("_T")


def attempt_timeout(budget: float) -> float:
    """The socket timeout of one attempt: a third of the budget (so a stall is retried), >= 1 s."""
    return min(budget, max(1.0, budget / 3))


def backoff(attempt: int) -> float:
    """Seconds to sleep before retry ``attempt`` (1, 2, ...): botocore's exponential backoff with
    full jitter (random up to ``2**(attempt-1)`` s, capped at 20 s)."""
    return random.random() * min(20.0, 2.0 ** (attempt - 1))


def retry_within(budget: float, attempt: Callable[[], _T], retryable: Callable[[Exception], bool]) -> _T:
    """Call ``attempt`` until it returns, an error is not ``retryable`` or the budget would be spent
    by the next backoff and attempt; the last error is then raised."""
    deadline = time.monotonic() + budget
    per_attempt = attempt_timeout(budget)
    n = 0
    while True:
        try:
            return attempt()
        except Exception as e:
            n += 1
            delay = backoff(n)
            if not retryable(e) or time.monotonic() + delay + per_attempt > deadline:
                raise
        time.sleep(delay)


def _timeout_from_env() -> float:
    raw = os.environ.get("ARTFS_HTTP_TIMEOUT")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"ARTFS_HTTP_TIMEOUT={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise ValueError(f"ARTFS_HTTP_TIMEOUT={raw!r}: must be positive")
    return value


def make_client(timeout: float | None = None, *, follow_redirects: bool = False) -> httpx.Client:
    """An ``httpx.Client`` whose requests through :func:`send` are bounded by ``timeout`` seconds
    (default ``ARTFS_HTTP_TIMEOUT``), retries included; one attempt waits :func:`attempt_timeout`."""
    t = float(timeout) if timeout is not None else _timeout_from_env()
    per_attempt = attempt_timeout(t)
    client = httpx.Client(
        timeout=httpx.Timeout(per_attempt, connect=min(per_attempt, 5.0)),
        follow_redirects=follow_redirects,
        headers={"User-Agent": "artfs", "Accept-Encoding": "identity"},
    )
    _BUDGETS[client] = t
    return client


def budget_of(client: httpx.Client) -> float:
    """The time budget of a request through ``client``."""
    return _BUDGETS.get(client, DEFAULT_TIMEOUT)


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    stream: bool = False,
    what: str | None = None,
) -> httpx.Response:
    """Send an idempotent request, retrying 429/5xx answers and transport failures until the
    client's time budget (:func:`budget_of`) is spent.

    Returns the response whatever its status (the caller maps 4xx to its own errors); raises
    :class:`StoreUnavailable` once the budget is spent. With ``stream`` the caller must close
    the response.
    """
    what = what or url
    budget = budget_of(client)
    tries = [0]

    def attempt() -> httpx.Response:
        tries[0] += 1
        req = client.build_request(method, url, headers=headers, params=params)
        r = client.send(req, stream=stream)
        if r.status_code in _RETRY_STATUS:
            r.close()
            raise _RetryStatus(r)
        return r

    try:
        return retry_within(budget, attempt, _transient)
    except _RetryStatus as e:
        last = f"HTTP {e.response.status_code} {e.response.reason_phrase}"
    except httpx.TransportError as e:  # timeouts, refused connections, broken reads
        last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    raise StoreUnavailable(
        f"{what}: unavailable after {tries[0]} attempts in the {budget:g} s budget "
        f"(ARTFS_HTTP_TIMEOUT) ({last})")


class _RetryStatus(Exception):
    """An answer worth retrying (429/5xx)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _transient(e: Exception) -> bool:
    return isinstance(e, (_RetryStatus, httpx.TransportError))


def http_mtime(r: httpx.Response) -> float:
    lm = r.headers.get("last-modified")
    if lm:
        try:
            return email.utils.parsedate_to_datetime(lm).timestamp()
        except (TypeError, ValueError):
            pass
    return 0.0


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
        self.counter = {"put": 0, "get": 0, "range": 0, "download": 0}

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
                return _slice_stream(r, offset, length)
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
                    for chunk in r.iter_bytes(_CHUNK):
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
        from .._index import parse_index

        now = time.monotonic()
        with self._lock:
            hit = self._index_cache.get(key)
        if hit is not None and now - hit[0] < self.index_ttl:
            return hit[1]
        try:
            doc = parse_index(self.get(key), where=f"{self.url}/{key}")
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
        from .._index import artifact_index_key

        parts = prefix.strip("/").split("/")
        if len(parts) != 4 or parts[1] != "artifacts" or parts[3] not in ("versions", "aliases"):
            log.debug("%s: cannot list %r over HTTP; treating it as empty", self.url, prefix)
            return
        project, _, artifact, kind = parts
        akey = f"{project}/artifacts/{artifact}/"
        doc = self.read_index(artifact_index_key(project, artifact)) or {}
        if kind == "aliases":
            for name in sorted(doc.get("aliases") or {}):
                yield ObjectInfo(f"{akey}aliases/{name}", 0, 0.0)
            return
        for n in self._versions(akey, doc.get("versions") or [], doc.get("next", 0)):
            yield ObjectInfo(f"{akey}versions/{n}.json", 0, 0.0)

    def _versions(self, akey: str, indexed: builtins.list[int], next_hint: int) -> builtins.list[int]:
        vs = sorted(set(indexed))
        # a deletion after the index was written: drop vanished versions from the top
        while vs and not self.exists(f"{akey}versions/{vs[-1]}.json"):
            vs.pop()
        # commits after the index was written: probe upwards until a number never used
        n = max(vs[-1] + 1 if vs else 0, next_hint)
        while True:
            if self.exists(f"{akey}versions/{n}.json"):
                vs.append(n)
            elif not self.exists(f"{akey}deleted/{n}"):
                return vs
            n += 1

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        from .._index import ROOT_INDEX, project_index_key

        p = prefix.strip("/")
        if not p:
            doc = self.read_index(ROOT_INDEX)
            return sorted(doc.get("projects") or []) if doc else []
        parts = p.split("/")
        if len(parts) == 2 and parts[1] == "artifacts":
            doc = self.read_index(project_index_key(parts[0]))
            return sorted(doc.get("artifacts") or []) if doc else []
        if len(parts) == 1:
            return ["artifacts"] if self.read_index(project_index_key(parts[0])) else []
        return []


def _slice_stream(r: httpx.Response, offset: int, length: int) -> bytes:
    """``length`` bytes from ``offset`` of a whole-object response, reading no further than needed."""
    out = bytearray()
    pos = 0
    end = offset + length
    for chunk in r.iter_bytes(_CHUNK):
        lo, hi = max(offset - pos, 0), min(end - pos, len(chunk))
        if lo < hi:
            out += chunk[lo:hi]
        pos += len(chunk)
        if pos >= end:
            break
    return bytes(out)


def check_status(r: httpx.Response, what: str) -> None:
    """Map an error status of a reference read to an artfs error (used by :mod:`artfs._refs`)."""
    s = r.status_code
    if s < 400:
        return
    if s in (404, 410):
        raise NotFound(f"{what}: not found (HTTP {s})")
    if s in (401, 403):
        raise PermissionDenied(f"{what}: access denied (HTTP {s})")
    raise ArtfsError(f"{what}: HTTP {s} {r.reason_phrase}") if s < 500 else StoreUnavailable(
        f"{what}: HTTP {s} {r.reason_phrase}"
    )
