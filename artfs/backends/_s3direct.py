"""The direct GETs of the S3 backend (:class:`_DirectGet`: SigV4 signing, urllib3's pool and sockets).

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
import os
import re
import threading
import time
from typing import Any

from .base import pwrite_all

log = logging.getLogger("artfs.s3")  # the S3 backend's logger

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)$")
PIECE = 1 << 20  # a ranged body is read into one buffer of this size at a time, then written
_FIRST_READ = 64 << 10  # the receive buffer of a thread at first: the head and the start of the body
_MAX_BUFFER = 8 << 20  # kept per thread at most; a larger object is read into a buffer of its own


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
      session itself (``URLLib3Session.send``) when a proxy is configured. On a connection of
      that pool the request is written and the answer read on the socket directly
      (:meth:`_exchange`), not through ``http.client`` and urllib3's response. CPU per 100 KiB
      GET, 16 threads against s3rver: botocore's whole path 2.2 ms, the session 1.0, the pool's
      ``urlopen`` 0.6-1.0, the socket directly 0.23-0.39;
    * the signature's date is formatted once a second, its HMAC is OpenSSL's one-shot
      ``hmac.digest``.

    :meth:`get` answers only a complete ``200`` (the body as long as ``Content-Length`` says),
    within the caller's deadline, else None: the caller then asks botocore, whose retries and error mapping decide what an error
    status, a reset or a stall means. No response checksum is asked for: callers verify the bytes
    against the blob's digest. A status that says this request's shape is wrong here (a redirect
    to another region, a refused signature), or a 200 that is not framed by ``Content-Length``
    (a server that answers in chunks), turns the direct path off for the backend.
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
        self._when: tuple[int, str] = (0, "")  # (a second, its x-amz-date)
        self._local = threading.local()  # each thread's receive buffer (_buffer)

    def headers(self, path: str, now: datetime.datetime | None = None) -> dict[str, str]:
        """The headers of a signed ``GET path`` (SigV4, service ``s3``); none when unsigned."""
        if self.credentials is None:
            return {}
        c = self.credentials.get_frozen_credentials()  # refreshes expiring credentials
        if now is None:  # the date of this second, formatted once a second
            t = int(time.time())
            when = self._when
            if when[0] != t:
                when = self._when = (t, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t)))
            amzdate = when[1]
        else:
            amzdate = now.strftime("%Y%m%dT%H%M%SZ")
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
        sig = hmac.digest(self._key, to_sign.encode(), "sha256").hex()  # OpenSSL's one-shot HMAC
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

    def get(self, key: str, deadline: float | None = None) -> bytes | None:
        """The whole object at ``key`` (the full key, prefix included), or None (see the class).

        ``deadline`` (``time.monotonic()``): no wait of this request (connect, each read) goes past
        it; by default each one waits at most the client's own per-attempt timeout.
        """
        from botocore.utils import percent_encode

        quoted = percent_encode(key, safe="/~")
        path = self.path + quoted
        try:
            pool = self._pool()
            if pool is not None:  # straight to the pool's sockets: see _exchange
                status, data = self._exchange(pool, path, deadline)
                n: Any = len(data) if data is not None else None
            else:
                from botocore.awsrequest import AWSRequest

                req = AWSRequest(method="GET", url=self.base + quoted, headers=self.headers(path))
                resp = self.http.send(req.prepare())
                status, data, n = resp.status_code, resp.content, resp.headers.get("content-length")
        except Exception as e:  # connection refused, reset, timeout, a body cut short: botocore retries it
            log.debug("direct GET %s: %s", key, e)
            self.pool = None  # taken again next time (a pool the manager closed, say)
            return None
        if status < 0:  # no usable answer (closed early, malformed, cut short): botocore retries it
            return None
        if status != 200:
            self._refused(key, status)
            return None
        if data is None:  # a 200 without a Content-Length (chunked): this server needs botocore's reader
            self.on = False
            log.debug("direct GET %s: no Content-Length; using botocore's request path from now on", key)
            return None
        if n is None or int(n) != len(data):
            return None
        return bytes(data)

    def get_range_into(self, key: str, offset: int, length: int, fd: int, fd_offset: int) -> tuple[int, bool]:
        """Stream bytes ``[offset, offset + length)`` of ``key`` into ``fd`` at ``fd_offset``.

        For the lazy reader's ranged GETs (up to 16 MiB each, a GiB in about 75 of them): one
        signed ``GET`` with a ``Range`` header, its body read with ``readinto`` straight from the
        socket into one reused buffer (``PIECE`` bytes) and ``pwrite``-n from there, so no bytes
        object is made per piece and no botocore request path runs (measured on the cold 1 GiB
        read from s3rver: see docs/benchmarks.md).

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

    def _timeouts(self, pool: Any) -> tuple[float | None, float | None]:
        """(connect, read) timeouts of the pool's connections: the client's per-attempt timeouts."""
        t = pool.timeout
        c, r = t.connect_timeout, t.read_timeout
        return (c if isinstance(c, (int, float)) else None), (r if isinstance(r, (int, float)) else None)

    def _exchange(self, pool: Any, path: str, deadline: float | None) -> tuple[int, bytes | None]:
        """``GET path`` on a connection of urllib3's ``pool``: (status, body); the body only for a
        complete 200 with a ``Content-Length`` (else None); status -1: no usable answer.

        The connection is urllib3's (connected, with TLS, the way botocore set the pool up, and
        checked for a drop by the pool when taken); the request is written and the answer read on
        its socket directly, without ``http.client``: its header parsing (the ``email`` package)
        and urllib3's response object cost more CPU than the transfer of a small blob. Only the
        simplest answer is taken: ``HTTP/1.x 200`` framed by ``Content-Length`` (read into one
        buffer per thread, copied out once). Anything else (another status, chunked framing, a
        malformed or oversized head, bytes past the body, a connection closed early, a timeout)
        closes the connection, which is never reused in an unknown state; the caller then asks
        botocore. A connection is put back only after a complete answer that did not say
        ``Connection: close``.
        """
        conn = pool._get_conn()
        ok = False
        try:
            connect_t, read_t = self._timeouts(pool)
            if conn.sock is None:  # new, or closed by the pool as dropped: urllib3 connects it
                conn.timeout = _bounded(connect_t, deadline)
                conn.connect()
                alpn = getattr(conn.sock, "selected_alpn_protocol", None)
                if alpn is not None and alpn() not in (None, "http/1.1"):
                    self.on = False  # not HTTP/1.1 on this connection: botocore's path from now on
                    return -1, None
            sock = conn.sock
            request = self._request(path)
            sock.settimeout(_bounded(read_t, deadline))
            sock.sendall(request)
            status, body, reusable = _read_answer(sock, self._local, read_t, deadline)
            ok = reusable
            return status, body
        finally:
            if ok:
                pool._put_conn(conn)
            else:
                conn.close()
                pool._put_conn(None)  # the pool's slot, as urllib3 returns it after an error

    def _request(self, path: str) -> bytes:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}", "User-Agent: artfs", "Accept-Encoding: identity"]
        lines.extend(f"{k}: {v}" for k, v in self.headers(path).items())
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")


def _bounded(timeout: float | None, deadline: float | None) -> float | None:
    """``timeout`` (None: no limit), shortened so that the wait ends by ``deadline``; an expired
    deadline raises TimeoutError."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request's time budget is spent")
    return left if timeout is None else min(timeout, left)


def _read_answer(sock: Any, local: threading.local, read_t: float | None,
                 deadline: float | None) -> tuple[int, bytes | None, bool]:
    """Read one HTTP/1.x answer from ``sock`` into this thread's buffer ``local.buf``: (status,
    body, reusable); status -1 when there is no usable answer (closed early, malformed, cut short).

    ``body`` is None unless it is a 200 framed by ``Content-Length`` whose every byte arrived;
    ``reusable``: the connection is at the end of a complete answer and may serve another request.
    Raises OSError (timeouts included) when the socket fails.
    """
    buf: bytearray | None = getattr(local, "buf", None)
    if buf is None:
        buf = local.buf = bytearray(_FIRST_READ)
    view = memoryview(buf)
    n = 0
    while True:  # the head: the status line and the headers, up to the empty line
        if n == len(buf):
            return -1, None, False  # a head larger than the first read: not what S3 sends
        k = sock.recv_into(view[n:])
        if not k:
            return -1, None, False  # closed before a whole head (a stale keep-alive connection, say)
        n += k
        end = buf.find(b"\r\n\r\n", 0, n)
        if end >= 0:
            break
        sock.settimeout(_bounded(read_t, deadline))
    lines = bytes(view[:end]).split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    try:
        status = int(rest[:3])
    except ValueError:
        return -1, None, False
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or status != 200:
        return status, None, False  # its body is not read: the connection is closed
    keep = version == b"HTTP/1.1"
    length = -1
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or name != name.strip():
            return -1, None, False  # malformed (or an obsolete folded line)
        name = name.lower()
        if name == b"content-length":
            try:
                v = int(value)
            except ValueError:
                return -1, None, False
            if v < 0 or (length >= 0 and v != length):
                return -1, None, False
            length = v
        elif name == b"transfer-encoding":
            return status, None, False  # framed by chunks (even if a Content-Length is there too)
        elif name == b"connection" and b"close" in value.lower():
            keep = False
    if length < 0:
        return status, None, False
    start = end + 4
    total = start + length
    if n > total:
        return -1, None, False  # more bytes than the answer: not a state to go on from
    if total > len(buf):  # a larger buffer, the part already read moved over
        bigger = bytearray(total)
        bigger[:n] = view[:n]
        if total <= _MAX_BUFFER:
            local.buf = bigger  # kept for this thread's next answers
        view = memoryview(bigger)
    while n < total:
        sock.settimeout(_bounded(read_t, deadline))
        k = sock.recv_into(view[n:total])
        if not k:
            return -1, None, False  # cut short
        n += k
    return status, bytes(view[start:total]), keep


# -- the write side: lineage's small PUTs without boto3 ------------------------------------------------
#: settings only botocore can read right (a profile's endpoint, addressing, FIPS/dual-stack, a CA
#: bundle): where the AWS configuration file names one, the direct PUT stands aside
_CONFIG_WORDS = ("endpoint_url", "addressing_style", "use_dualstack", "use_fips", "ca_bundle", "services",
                 "s3 =", "s3=")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def _env_credentials() -> tuple[str, str, str | None] | None:
    """(access key, secret key, session token) from the environment (the first source of boto3's
    chain, ahead of every file and role), or None."""
    access, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret:
        return None
    return access, secret, os.environ.get("AWS_SESSION_TOKEN") or os.environ.get("AWS_SECURITY_TOKEN") or None


def _config_text() -> str | None:
    """The AWS configuration file's text ('' when there is none), None when it cannot be read."""
    path = os.environ.get("AWS_CONFIG_FILE") or os.path.join(os.path.expanduser("~"), ".aws", "config")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except OSError:
        return None


def direct_put_for(*, bucket: str, endpoint_url: str | None, unsigned: bool,
                   attempt_timeout: float) -> "_DirectPut | None":
    """The direct PUT of a store, from the environment alone (no boto3 imported), where that says
    exactly what botocore would do: the endpoint (``endpoint_url``, ``AWS_ENDPOINT_URL_S3``,
    ``AWS_ENDPOINT_URL``; else AWS S3 in ``AWS_DEFAULT_REGION``), its addressing style (as
    :func:`artfs.backends._s3client.make_client` sets it) and the credentials of the environment.
    None (then botocore's path) when anything else could decide it: no credentials in the
    environment, a proxy, a configuration file naming an endpoint, an addressing style, a CA
    bundle, or the region where the environment does not (``AWS_CA_BUNDLE`` is honoured)."""
    from urllib.parse import urlsplit

    creds = None if unsigned else _env_credentials()
    config = _config_text()
    if (not unsigned and creds is None) or config is None or any(w in config for w in _CONFIG_WORDS):
        return None
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() in ("1", "true"):
        return None
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_DEFAULT_REGION")
    if region is None and config:
        return None  # the profile's region (botocore reads it): not guessed here
    style = os.environ.get("ARTFS_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
    if endpoint:
        u = urlsplit(endpoint)
        if u.scheme not in ("http", "https") or not u.netloc or u.query or u.path.strip("/"):
            return None
        scheme, host = u.scheme, u.netloc
        region = region or "us-east-1"
        virtual = style == "virtual"
    else:
        if region is None or not re.fullmatch(r"[a-z]{2}-[a-z]+-\d", region) or region.startswith(("cn-", "us-gov-")):
            return None
        scheme, host = "https", f"s3.{region}.amazonaws.com"
        virtual = style != "path" and _DNS_BUCKET.match(bucket) is not None
    if style not in ("path", "virtual", "auto"):
        return None
    if virtual:
        return _DirectPut(scheme, f"{bucket}.{host}", "/", creds, region, attempt_timeout)
    return _DirectPut(scheme, host, f"/{bucket}/", creds, region, attempt_timeout)


class _DirectPut:
    """One signed ``PUT`` of a small object with ``http.client`` alone: for lineage's edges and run
    records, which every worker process of a job writes once (its first open of a version). Its
    reason is the worker's start, not the transfer: boto3's import and client cost about 0.3-0.8 s
    of CPU per process, more than a short epoch's reads (docs/fsspec.md).

    The signature is SigV4 for S3 over the body's SHA-256, the headers ``tests/test_s3_faults.py``
    checks against botocore's ``S3SigV4Auth``. Each wait (connect, send, the answer) is bounded by
    the store's per-attempt timeout and the caller's deadline. One attempt: :meth:`put` returns
    the status, -1 for no answer (the object may have been written: the caller reads an exclusive
    create back); the caller takes botocore's path (its retries, its errors) for anything but a
    200. A kept-alive connection that the server closed meanwhile is opened again once for a plain
    PUT (no byte of an answer was read).
    """

    def __init__(self, scheme: str, host: str, path: str, creds: tuple[str, str, str | None] | None,
                 region: str, attempt_timeout: float) -> None:
        self.scheme, self.host, self.path = scheme, host, path  # path: "/bucket/" or "/"
        self.creds, self.region, self.attempt_timeout = creds, region, attempt_timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def headers(self, method: str, path: str, body: bytes, now: float | None = None) -> dict[str, str]:
        """The signed headers of ``method path`` with ``body`` (SigV4, service ``s3``)."""
        payload = hashlib.sha256(body).hexdigest()
        amzdate = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        h = {"host": self.host, "x-amz-content-sha256": payload, "x-amz-date": amzdate}
        if self.creds is None:
            return {"x-amz-content-sha256": payload}
        access, secret, token = self.creds
        if token:
            h["x-amz-security-token"] = token
        day = amzdate[:8]
        k = hmac.digest(("AWS4" + secret).encode(), day.encode(), "sha256")
        for part in (self.region, "s3", "aws4_request"):
            k = hmac.digest(k, part.encode(), "sha256")
        names = sorted(h)
        signed = ";".join(names)
        canonical = "\n".join([method, path, "", *(f"{n}:{h[n]}" for n in names), "", signed, payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        del h["host"]
        h["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, "
                              f"Signature={hmac.digest(k, to_sign.encode(), 'sha256').hex()}")
        return h

    def put(self, key: str, body: bytes, *, exclusive: bool = False, deadline: float | None = None) -> int:
        """``PUT`` ``body`` at ``key`` (the full key, prefix included; with ``If-None-Match: *`` when
        ``exclusive``): the answer's status, -1 when there was none (refused, reset, timed out)."""
        from urllib.parse import quote

        path = self.path + quote(key, safe="/~")
        headers = self.headers("PUT", path, body)
        headers["Content-Length"] = str(len(body))
        if exclusive:
            headers["If-None-Match"] = "*"
        with self._lock:
            for fresh in (False, True):
                conn, reused = self._conn, self._conn is not None
                try:
                    if conn is None:
                        conn = self._connect(deadline)
                    assert conn.sock is not None
                    conn.sock.settimeout(_bounded(self.attempt_timeout, deadline))
                    conn.request("PUT", path, body=body, headers=headers)
                    r = conn.getresponse()
                    r.read()  # the body (empty on success, an XML error otherwise): the connection is reusable
                    self._conn = None if r.will_close else conn
                    if r.will_close:
                        conn.close()
                    return r.status
                except Exception as e:  # refused, reset, timed out, malformed: botocore's path decides
                    if conn is not None:
                        conn.close()
                    self._conn = None
                    if reused and not fresh and not exclusive and isinstance(
                            e, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
                        continue  # a kept-alive connection the server had closed: once more on a new one
                    log.debug("direct PUT %s: %s", key, e)
                    return -1
        return -1

    def _connect(self, deadline: float | None) -> http.client.HTTPConnection:
        timeout = _bounded(self.attempt_timeout, deadline)
        if self.scheme == "https":
            import ssl

            ctx = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)  # as botocore's verify
            return _connected(http.client.HTTPSConnection(self.host, timeout=timeout, context=ctx))
        return _connected(http.client.HTTPConnection(self.host, timeout=timeout))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _connected(conn: http.client.HTTPConnection) -> http.client.HTTPConnection:
    conn.connect()
    return conn
