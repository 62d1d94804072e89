"""``http(s)://`` references: any URL (a HEAD, then GETs), and the media requests of ``gs://``.

Resolving sends a HEAD and records ``etag`` and ``last_modified``; when the server sends no strong
ETag or no Content-Length the content is streamed once and hashed (``digest``). A read sends
``If-Match`` for a strong ETag and compares the answer's ETag (without one: Last-Modified) and
length. Requests go through one ``httpx.Client`` per reader, shared with ``gs://``
(:mod:`artfs.backends._httpio`: a time budget per request, ``ARTFS_HTTP_TIMEOUT``, retries).
"""

from __future__ import annotations

import logging
from typing import Any, Callable
from urllib.parse import unquote, urlparse

import httpx
import xxhash

from .._digest import finish
from .._errors import ArtfsError, StoreUnavailable
from .._manifest import Entry
from ..backends._httpio import check_status, make_client, send, slice_stream
from .base import (
    CHUNK, Scheme, changed, clean, entry_path, info_of, is_pinned, start_from_content_range, to_int,
    total_from_content_range, weak,
)

log = logging.getLogger("artfs.refs")


class HTTPRefs(Scheme):
    @property
    def client(self) -> httpx.Client:
        """The reader's HTTP client (follows redirects, unlike the store's), made on first use."""
        c: httpx.Client = self.reader.shared(
            "httpx", lambda: make_client(self.reader.timeout, follow_redirects=True))
        return c

    def resolve(self, uri: str, bucket: str, key: str, name: str | None, checksum: bool,
                limit: int) -> list[Entry]:
        return self._resolve_http(uri, name, checksum)

    def read_range(self, entry: Entry, bucket: str, key: str, offset: int, length: int) -> bytes:
        return self._http_range(entry, "http", bucket, key, offset, length)

    def download(self, entry: Entry, bucket: str, key: str, path: str, h: Any) -> int:
        return self._http_download(entry, "http", bucket, key, path, h)

    def size(self, entry: Entry, bucket: str, key: str) -> int:
        r = self._head(entry.ref or key)
        check_status(r, f"{entry.path}: reference {entry.ref}")
        cl = r.headers.get("content-length")
        return int(cl) if cl and cl.isdigit() else 0

    def _head(self, url: str) -> httpx.Response:
        r = send(self.client, "HEAD", url, what=url)
        if r.status_code in (405, 501):  # no HEAD: take the headers of a GET
            r = send(self.client, "GET", url, stream=True, what=url)
            r.close()
        return r

    def _http_request(self, entry: Entry, scheme: str, bucket: str, key: str, headers: dict[str, str],
                      *, whole: bool = False) -> tuple[httpx.Response, Callable[[httpx.Response], None]]:
        """Open a streamed GET for the entry; returns it and the identity check for its headers."""
        info = info_of(entry)
        etag = info.get("etag")
        if is_pinned(entry) and etag and not etag.startswith("W/"):
            headers = {**headers, "If-Match": etag}
        r = send(self.client, "GET", key, headers=headers, stream=True, what=entry.ref)
        return r, lambda resp: self._http_check(entry, resp, whole=whole)

    def _http_check(self, entry: Entry, r: httpx.Response, *, whole: bool) -> None:
        """Compare the answer's ETag (or, without one, Last-Modified) with what was recorded.

        A whole download of an entry with a digest is verified by the digest instead of
        Last-Modified, so a touched but unchanged file is still served.
        """
        if not is_pinned(entry):
            return
        info = info_of(entry)
        rec, got = info.get("etag"), r.headers.get("etag")
        if rec and got and weak(got) != weak(rec):
            raise changed(entry, f"ETag {got}, recorded {rec}")
        if not rec and not (whole and entry.digest):
            lm, glm = info.get("last_modified"), r.headers.get("last-modified")
            if lm and glm and lm != glm:
                raise changed(entry, f"Last-Modified {glm}, recorded {lm}")

    def _http_status(self, entry: Entry, r: httpx.Response) -> None:
        s = r.status_code
        if s == 412:
            raise changed(entry, "the server says its ETag no longer matches")
        if s in (404, 410) and is_pinned(entry):
            raise changed(entry, f"HTTP {s}: it no longer exists")
        check_status(r, f"{entry.path}: reference {entry.ref}")

    def _size_check(self, entry: Entry, total: int | None) -> None:
        if is_pinned(entry) and total is not None and total != entry.size:
            raise changed(entry, f"{total} bytes now, {entry.size} recorded")

    def _http_range(self, entry: Entry, scheme: str, bucket: str, key: str, offset: int, length: int) -> bytes:
        r, check = self._http_request(entry, scheme, bucket, key, {"Range": f"bytes={offset}-{offset + length - 1}"})
        try:
            if r.status_code == 416:
                self._size_check(entry, total_from_content_range(r.headers.get("content-range")))
                return b""
            self._http_status(entry, r)
            check(r)
            try:
                if r.status_code == 206:
                    self._size_check(entry, total_from_content_range(r.headers.get("content-range")))
                    start = start_from_content_range(r.headers.get("content-range"))
                    if start is not None and start != offset:
                        raise StoreUnavailable(f"{entry.ref}: asked for bytes from {offset}, got from {start}")
                    return r.read()[:length]
                self._size_check(entry, to_int(r.headers.get("content-length")))
                self._warn_no_range(entry.ref or "")
                return slice_stream(r, offset, length)
            except httpx.TransportError as e:
                raise StoreUnavailable(f"{entry.path}: reading {entry.ref} broke off: {e}") from None
        finally:
            r.close()

    def _warn_no_range(self, uri: str) -> None:
        host = urlparse(uri).netloc
        if not self.reader.first_time(("no-range", host)):
            return
        log.warning("%s ignores HTTP Range requests; partial reads of its references fetch whole files", host)

    def _http_download(self, entry: Entry, scheme: str, bucket: str, key: str, path: str, h: Any) -> int:
        r, check = self._http_request(entry, scheme, bucket, key, {}, whole=True)
        try:
            self._http_status(entry, r)
            check(r)
            self._size_check(entry, to_int(r.headers.get("content-length")))
            n = 0
            with open(path, "wb") as f:
                try:
                    for chunk in r.iter_bytes(CHUNK):
                        f.write(chunk)
                        if h is not None:
                            h.update(chunk)
                        n += len(chunk)
                except httpx.TransportError as e:
                    raise StoreUnavailable(f"{entry.path}: download of {entry.ref} broke off: {e}") from None
            return n
        finally:
            r.close()

    def _resolve_http(self, uri: str, name: str | None, checksum: bool) -> list[Entry]:
        base = unquote(urlparse(uri).path.rstrip("/").rsplit("/", 1)[-1])
        if not (name or base):
            raise ArtfsError(f"{uri}: cannot tell a file name from the URL; pass name=")
        path = entry_path(uri, name or base, "")
        if not checksum:
            return [Entry(path, None, 0, ref=uri, ref_info={"checksum": False})]
        r = self._head(uri)
        check_status(r, f"reference {uri}")
        etag, lm, cl = r.headers.get("etag"), r.headers.get("last-modified"), to_int(r.headers.get("content-length"))
        info = clean({"etag": etag, "last_modified": lm})
        if etag and not etag.startswith("W/") and cl is not None:
            return [Entry(path, None, cl, ref=uri, ref_info=info)]
        # the server gives no strong identity (or no length): hash the content once
        h = xxhash.xxh3_128()
        n = 0
        r = send(self.client, "GET", uri, stream=True, what=uri)
        try:
            check_status(r, f"reference {uri}")
            etag, lm = r.headers.get("etag") or etag, r.headers.get("last-modified") or lm
            try:
                for chunk in r.iter_bytes(CHUNK):
                    h.update(chunk)
                    n += len(chunk)
            except httpx.TransportError as e:
                raise StoreUnavailable(f"reference {uri}: reading it broke off: {e}") from None
        finally:
            r.close()
        return [Entry(path, finish(h), n, ref=uri, ref_info=clean({"etag": etag, "last_modified": lm}))]

