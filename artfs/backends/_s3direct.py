"""The direct GETs of the S3 backend (:class:`_DirectGet`: SigV4 signing, urllib3 pool).

:meth:`S3Backend.get_blob <artfs.backends.s3.S3Backend.get_blob>` (small blobs, whole) and
:meth:`S3Backend.fetch_range_into <artfs.backends.s3.S3Backend.fetch_range_into>` (the lazy
reader's ranged GETs, streamed into the cache's partial file) try it first and fall back to
botocore's path for anything but a complete answer of the expected shape.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import logging
import re
from typing import Any

from .base import pwrite_all

log = logging.getLogger("artfs.s3")  # the S3 backend's logger

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)$")
PIECE = 1 << 20  # a ranged body is read into one buffer of this size at a time, then written


class _DirectGet:
    """One GET of a whole object without botocore's request path: for the mount's small blobs.

    botocore spends about 3-4 ms of CPU on a ``GetObject`` of 100 KiB here (serialising the
    call, a dozen event hooks, a generic SigV4 signer built on ``email`` headers, parsing the
    response's headers and timestamps), several times the cost of the transfer itself, and the
    small-file epoch is bound by the daemon's CPU. This makes the same request for a fraction:

    * the URL of a key is the one botocore builds (its endpoint and addressing style, learnt once
      from a presigned URL of a probe key), the key percent-encoded as botocore encodes it;
    * the request is signed with AWS Signature Version 4 for S3 (``x-amz-content-sha256`` of the
      empty body), the signing key derived once a day; ``tests/test_backends.py`` checks that the
      ``Authorization`` header is exactly the one botocore's ``S3SigV4Auth`` computes. Unsigned
      backends (``--no-sign-request``) send no signature;
    * it goes through the client's own connections: the urllib3 pool of botocore's session for
      the endpoint (the same TLS settings and per-attempt timeouts), taken once; through the
      session itself (``URLLib3Session.send``) when a proxy is configured. Straight to the pool
      halves the CPU again (measured 1.0 -> 0.57 ms per 100 KiB GET; botocore's whole path 2.2).

    :meth:`get` answers only a complete ``200`` (the body as long as ``Content-Length`` says),
    else None: the caller then asks botocore, whose retries and error mapping decide what an error
    status, a reset or a stall means. No response checksum is asked for: callers verify the bytes
    against the blob's digest. A status that says this request's shape is wrong here (a redirect
    to another region, a refused signature) turns the direct path off for the backend.
    """

    def __init__(self, base: str, http: Any, credentials: Any, region: str) -> None:
        from urllib.parse import urlsplit

        self.base = base  # http(s)://host[:port]/[bucket/], to which a percent-encoded key is appended
        parts = urlsplit(base)
        self.host = parts.netloc
        self.path = parts.path
        self.http = http
        self.credentials = credentials  # None: unsigned requests
        self.region = region
        self.on = True
        self.ranges = True  # ranged GETs too (off for a server that ignores Range, or behind a proxy)
        self.pool: Any = None  # urllib3's connection pool of the endpoint (see get)
        self.pool_ok = True
        self._day = ""
        self._key = b""
        self._secret = ""

    def headers(self, path: str, now: datetime.datetime | None = None) -> dict[str, str]:
        """The headers of a signed ``GET path`` (SigV4, service ``s3``); none when unsigned."""
        if self.credentials is None:
            return {}
        c = self.credentials.get_frozen_credentials()  # refreshes expiring credentials
        amzdate = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
        day = amzdate[:8]
        if day != self._day or c.secret_key != self._secret:
            k = hmac.new(("AWS4" + c.secret_key).encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._key, self._day, self._secret = k, day, c.secret_key
        h = {"host": self.host, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": amzdate}
        if c.token:
            h["x-amz-security-token"] = c.token
        names = sorted(h)
        signed = ";".join(names)
        canonical = "\n".join(["GET", path, "", *(f"{n}:{h[n]}" for n in names), "", signed, _EMPTY_SHA256])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        sig = hmac.new(self._key, to_sign.encode(), hashlib.sha256).hexdigest()
        del h["host"]  # added by the HTTP layer
        h["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={c.access_key}/{scope}, "
                              f"SignedHeaders={signed}, Signature={sig}")
        return h

    def _connection_pool(self) -> Any:
        """The urllib3 pool botocore's session uses for this endpoint (its TLS settings), or None
        when a proxy is configured for it (then every request goes through the session)."""
        http = self.http
        if http._proxy_config.proxy_url_for(self.base) is not None:
            return None
        pool = http._get_connection_manager(self.base, None).connection_from_url(self.base)
        http._setup_ssl_cert(pool, self.base, http._verify)
        return pool

    def _pool(self) -> Any:
        """The endpoint's urllib3 pool (taken once), or None: then requests go through the session."""
        if self.pool is None and self.pool_ok:
            try:
                self.pool = self._connection_pool()
            except Exception as e:  # another botocore: its session's public path below
                log.debug("no direct connection pool (%s)", e)
            self.pool_ok = self.pool is not None
        return self.pool

    def _refused(self, key: str, status: int) -> None:
        """A status that is no passing fault turns the direct path off (see the class)."""
        if status < 500 and status not in (404, 416, 429):  # 416: a range past the end of the object
            self.on = False  # the request is wrong here (region, signature, redirect): botocore's path
            log.debug("direct GET %s: status %d; using botocore's request path from now on", key, status)

    def get(self, key: str) -> bytes | None:
        """The whole object at ``key`` (the full key, prefix included), or None (see the class)."""
        from botocore.utils import percent_encode

        quoted = percent_encode(key, safe="/~")
        path = self.path + quoted
        try:
            pool = self._pool()
            if pool is not None:  # straight to the pool: botocore's session adds its own CPU per request
                r = pool.urlopen("GET", path, headers=self.headers(path), retries=False, assert_same_host=False,
                                 preload_content=True, decode_content=False)
                status, data, n = r.status, r.data, r.headers.get("content-length")
            else:
                from botocore.awsrequest import AWSRequest

                req = AWSRequest(method="GET", url=self.base + quoted, headers=self.headers(path))
                resp = self.http.send(req.prepare())
                status, data, n = resp.status_code, resp.content, resp.headers.get("content-length")
        except Exception as e:  # connection refused, reset, timeout, a body cut short: botocore retries it
            log.debug("direct GET %s: %s", key, e)
            self.pool = None  # taken again next time (a pool the manager closed, say)
            return None
        if status != 200:
            self._refused(key, status)
            return None
        if n is None or int(n) != len(data):
            return None
        return bytes(data)

    def get_range_into(self, key: str, offset: int, length: int, fd: int, fd_offset: int) -> tuple[int, bool]:
        """Stream bytes ``[offset, offset + length)`` of ``key`` into ``fd`` at ``fd_offset``.

        For the lazy reader's ranged GETs (up to 8 MiB each, a GiB in about 140 of them): one
        signed ``GET`` with a ``Range`` header, its body read with ``readinto`` straight from the
        socket into one reused buffer (``PIECE`` bytes) and ``pwrite``-n from there, so no bytes
        object is made per piece and no botocore request path runs (measured on the cold 1 GiB
        read from s3rver: see the README's figures).

        Returns ``(written, complete)``. ``complete`` only for a ``206`` whose ``Content-Range``
        starts at ``offset`` and ends within the range (a range crossing the end of the object is
        answered up to its end) and whose body arrived whole; ``written`` counts the bytes that
        reached ``fd`` even when the body broke off later, so the caller goes on from there with
        botocore (its retries and error mapping, as for :meth:`get`). Anything else (an error
        status, a ``200`` of a server that ignores ``Range``, a refused connection) writes nothing.
        Errors writing ``fd`` (a full disk) are raised as they are. Only with a connection pool
        (no proxy): through a proxy the session's own path is used, by botocore.
        """
        from botocore.utils import percent_encode

        if not self.ranges:
            return 0, False
        path = self.path + percent_encode(key, safe="/~")
        headers = self.headers(path)
        headers["Range"] = f"bytes={offset}-{offset + length - 1}"  # not signed: SigV4 does not need it
        try:
            pool = self._pool()
            if pool is None:
                self.ranges = False
                return 0, False
            r = pool.urlopen("GET", path, headers=headers, retries=False, assert_same_host=False,
                             preload_content=False, decode_content=False)
        except Exception as e:  # connection refused, reset, timeout: botocore retries it
            log.debug("direct ranged GET %s: %s", key, e)
            self.pool = None
            return 0, False
        done = 0
        whole = False
        try:
            n = self._range_length(key, r, offset, length)
            if n is None:
                return 0, False
            fp = getattr(r, "_fp", None)  # the http.client response: readinto fills our buffer in place
            readinto = fp.readinto if isinstance(fp, http.client.HTTPResponse) else r.readinto
            buf = memoryview(bytearray(min(PIECE, n)))
            while done < n:
                view = buf[: min(len(buf), n - done)]
                try:
                    k = readinto(view)
                except Exception as e:  # reset, stall (the attempt's read timeout), cut short
                    log.debug("direct ranged GET %s: body broke off after %d bytes: %s", key, done, e)
                    return done, False
                if not k:
                    return done, False
                pwrite_all(fd, view[:k], fd_offset + done)
                done += k
            whole = True
            return done, True
        finally:
            if whole:
                r.release_conn()  # the body was read to its end: the connection is reusable
            else:
                r.close()  # whatever is left unread: drop the connection, never reuse it
                r.release_conn()

    def _range_length(self, key: str, r: Any, offset: int, length: int) -> int | None:
        """The length of a ranged answer of the expected shape, else None (and why, for the log)."""
        status = r.status
        if status != 206:
            if status == 200:  # a server that ignores Range: its whole object is for botocore's path
                self.ranges = False
            self._refused(key, status)
            return None
        m = _CONTENT_RANGE.match(r.headers.get("content-range", ""))
        cl = r.headers.get("content-length")
        if m is None or cl is None or not cl.isdigit():
            return None
        first, last = int(m.group(1)), int(m.group(2))
        n = last - first + 1
        if first != offset or n > length or n <= 0 or int(cl) != n:
            log.debug("direct ranged GET %s: unexpected answer %s (%s bytes) to %d+%d", key,
                      m.group(0), cl, offset, length)
            return None
        return n

