"""The S3 store (AWS S3 or any S3-compatible server: MinIO, Ceph RGW, R2, moto, ...).

``s3://bucket[/prefix]``: every key is stored as ``<prefix>/<key>``. Credentials come from the
standard boto3 chain (env vars, ``~/.aws``, instance roles); the endpoint from ``AWS_ENDPOINT_URL``
(read by boto3 itself), overridden by ``ARTFS_S3_ENDPOINT`` or the ``endpoint_url`` keyword.

* An exclusive create is one ``PutObject`` with ``If-None-Match: *``; S3 answers 412
  PreconditionFailed (or 409 ConditionalRequestConflict for a concurrent conditional write) if the
  key exists, which becomes :class:`AlreadyExists`.
* Large uploads and downloads go through boto3's transfer manager (multipart upload, parallel
  ranged GETs); a multipart object only becomes visible when the upload is completed, so readers
  never see half an object.
* Retries are botocore's own (its "standard" mode: exponential backoff with full jitter and a
  retry quota; ``retry_mode``/``AWS_RETRY_MODE`` and ``max_attempts``/``AWS_MAX_ATTEMPTS`` from
  the AWS configuration are honoured), bounded by a time budget (``ARTFS_S3_TIMEOUT`` seconds,
  default 15, or the ``timeout`` keyword) rather than by a count: see :func:`_bound_retries`.
  Every request -- a GET, a single PUT, one part of a multipart upload, its completion or
  abort -- gives up and raises :class:`StoreUnavailable` within the budget, counted from its
  start; each attempt gives up after a third of it without progress (connect, or no byte sent
  or received), so a stall is retried too. A transfer that keeps moving is never cut off.
* A response body that breaks off (reset, stall, short read) is read again, from where it broke
  off for :meth:`S3Backend.fetch_range_into`, within the same budget: botocore only retries
  until the response headers arrive.
* A multipart upload that fails is aborted by boto3's transfer manager (within the budget);
  one that could not be aborted (the store was down, the process was killed) is aborted by
  :meth:`S3Backend.gc_tmp` (``artfs gc``) once older than the given age.
* Every botocore/boto3 error is normalised to the artfs errors, with a one-line message naming the
  key and the endpoint.
* :meth:`S3Backend.get_blob` (the mount's small blobs, whose bytes the caller checks against
  their digest) first makes one plain GET without botocore's request path (see :class:`_DirectGet`),
  and falls back to :meth:`S3Backend.get` for anything but a complete 200 answer, within the same
  budget.
* ``ARTFS_NO_SIGN_REQUEST=1`` (the CLI's ``--no-sign-request``, the mount's ``-o no_sign_request``)
  or ``unsigned=True`` sends unsigned requests, as anonymous users may for a public project (see
  :mod:`artfs._access`); no credentials are looked up then.

One boto3 client per backend object, created lazily; boto3 clients are thread-safe, so the backend
may be used from many threads at once.
"""

from __future__ import annotations

import builtins
import datetime
import hashlib
import hmac
import logging
import os
import random
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlparse

from .._errors import AlreadyExists, ArtfsError, NotFound, PermissionDenied, StoreUnavailable
from .base import Backend, ObjectInfo, pwrite_all

log = logging.getLogger("artfs.s3")

MiB = 1024 * 1024
DEFAULT_TIMEOUT = 15.0
DEFAULT_MULTIPART_THRESHOLD = 8 * MiB
DEFAULT_MULTIPART_CHUNKSIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum size of every part but the last
#: attempts per request when the AWS configuration names none: the time budget is the real bound
DEFAULT_MAX_ATTEMPTS = 1000
_T = TypeVar("_T")

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket", "NoSuchUpload"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccountProblem",
}
_EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


class _NoSuchBucket(NotFound):
    """The bucket itself is missing (a NotFound to callers, but never "the key is absent")."""


def _timeout_from_env() -> float:
    raw = os.environ.get("ARTFS_S3_TIMEOUT")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"ARTFS_S3_TIMEOUT={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise ValueError(f"ARTFS_S3_TIMEOUT={raw!r}: must be positive")
    return value


def _attempt_timeout(timeout: float) -> float:
    """Socket timeout of one attempt (connect; and the longest wait for the next byte either way).

    A third of the budget, so a stalled request is tried about three times before the budget is
    spent, but never under a second: a loaded server may be slow to answer a legitimate request.
    """
    return min(timeout, max(1.0, timeout / 3))


def _aws_retry_config() -> tuple[str | None, int | None]:
    """``retry_mode`` and ``max_attempts`` if the user set them (env or AWS config file), else None."""
    import botocore.session

    try:
        s = botocore.session.Session()
        mode = s.get_config_variable("retry_mode", methods=("env", "config"))
        attempts = s.get_config_variable("max_attempts", methods=("env", "config"))
    except Exception:  # a broken ~/.aws/config is reported when the client is made
        return None, None
    return (str(mode) if mode else None), (int(attempts) if attempts else None)


def _bound_retries(client: Any, attempt_timeout: float, max_attempts: int) -> None:
    """Make botocore's standard/adaptive retry handler stop when the request's time budget is spent.

    botocore bounds retries by a count only. Its decision (which errors to retry, backoff with
    jitter, retry quota) is kept as it is: the handler it registered is replaced by the same
    handler wrapped so that a retry is refused when its backoff plus one more attempt would end
    past the deadline the ``before-call`` hook stored in the request's context. The legacy mode
    is left alone (attempts then bound it: ``max_attempts`` times the attempt timeout).
    """
    from botocore.retries import standard

    events = client.meta.events
    service = client.meta.service_model.service_id.hyphenize()
    events.unregister(f"needs-retry.{service}", unique_id=f"retry-config-{service}")

    def bounded(inner: Callable[..., float | None]) -> Callable[..., float | None]:
        def needs_retry(**kwargs: Any) -> float | None:
            delay = inner(**kwargs)
            if delay is None:
                return None
            context = (kwargs.get("request_dict") or {}).get("context") or {}
            deadline = context.get("artfs_deadline")
            if deadline is not None and time.monotonic() + delay + attempt_timeout > deadline:
                return None  # the budget is spent: the last error is raised
            return delay

        return needs_retry

    class _Events:  # what register_retry_handler needs of a client: register(), wrapping its handler
        def register(self, event: str, handler: Callable[..., Any], unique_id: str | None = None,
                     **kw: Any) -> None:
            if event.split(".")[0] == "needs-retry":
                handler = bounded(handler)
            events.register(event, handler, unique_id=unique_id, **kw)

    shim = SimpleNamespace(meta=SimpleNamespace(service_model=client.meta.service_model, events=_Events()))
    standard.register_retry_handler(shim, max_attempts=max_attempts)


class _BodyBroke(Exception):
    """A response body broke off (reset, stall, short read, bad checksum) after botocore handed
    the response over: botocore retries a request only until its headers arrive."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _read_body(body: Any, *size: int) -> bytes:
    try:
        data: bytes = body.read(*size)
    except Exception as e:
        raise _BodyBroke(e) from e
    return data


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


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

    def get(self, key: str) -> bytes | None:
        """The whole object at ``key`` (the full key, prefix included), or None (see the class)."""
        from botocore.utils import percent_encode

        quoted = percent_encode(key, safe="/~")
        path = self.path + quoted
        try:
            if self.pool is None and self.pool_ok:
                try:
                    self.pool = self._connection_pool()
                except Exception as e:  # another botocore: its session's public path below
                    log.debug("no direct connection pool (%s)", e)
                self.pool_ok = self.pool is not None
            pool = self.pool
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
            if status != 404 and status < 500 and status != 429:
                self.on = False  # the request is wrong here (region, signature, redirect): botocore's path
                log.debug("direct GET %s: status %d; using botocore's request path from now on", key, status)
            return None
        if n is None or int(n) != len(data):
            return None
        return bytes(data)


class S3Backend(Backend):
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int | None = None,
        max_concurrency: int = 10,
        unsigned: bool | None = None,
    ) -> None:
        u = urlparse(url)
        if u.scheme != "s3" or not u.netloc:
            raise ValueError(f"{url!r}: expected s3://bucket[/prefix]")
        self.bucket = u.netloc
        prefix = u.path.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.url = f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

        self.endpoint_url = endpoint_url or os.environ.get("ARTFS_S3_ENDPOINT") or None
        self.timeout = float(timeout) if timeout is not None else _timeout_from_env()
        if self.timeout <= 0:
            raise ValueError(f"timeout={timeout!r}: must be positive")
        self._socket_timeout = _attempt_timeout(self.timeout)
        self._max_attempts_arg = max_attempts
        self.max_attempts = max_attempts or DEFAULT_MAX_ATTEMPTS
        self._deadline = threading.local()  # .at: the budget of the operation running in this thread
        self.multipart_threshold = int(multipart_threshold)
        chunk = multipart_chunksize or DEFAULT_MULTIPART_CHUNKSIZE
        self.multipart_chunksize = max(int(chunk), MIN_PART_SIZE)
        self.max_concurrency = max_concurrency
        self.unsigned = no_sign_request_from_env() if unsigned is None else bool(unsigned)

        self.counter = {"put": 0, "get": 0, "range": 0, "download": 0}
        self._counter_lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._client_obj = None
        self._session: Any = None  # the boto3 session of the client (its credentials)
        self._direct_obj: _DirectGet | None = None
        self._direct_tried = False

    # -- plumbing --------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"S3Backend({self.url!r}, endpoint={self._endpoint()!r})"

    def _count(self, what: str) -> None:
        with self._counter_lock:
            self.counter[what] += 1

    @property
    def client(self) -> Any:
        """The store's boto3 S3 client, made on first use (its endpoint, credentials, retries and
        time budget): the ``s3://`` references (artfs._refs.s3) use it for their buckets too."""
        c = self._client_obj
        if c is None:
            with self._client_lock:
                c = self._client_obj
                if c is None:
                    c = self._client_obj = self._make_client()
        return c

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as e:  # pragma: no cover - boto3 is a dependency
            raise StoreUnavailable(f"{self.url}: the S3 backend needs boto3 ({e})") from None

        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
            "AWS_ENDPOINT_URL"
        )
        # custom endpoints (MinIO, moto, Ceph, ...) rarely resolve virtual-hosted bucket names
        addressing = os.environ.get("ARTFS_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
        mode, aws_attempts = _aws_retry_config()
        mode = mode or "standard"
        self.max_attempts = self._max_attempts_arg or aws_attempts or DEFAULT_MAX_ATTEMPTS
        config = Config(
            # total_max_attempts counts the first request, as AWS_MAX_ATTEMPTS does
            retries={"mode": mode, "total_max_attempts": self.max_attempts},
            # a large part or a slow CompleteMultipartUpload gets no longer: S3 keeps the
            # connection busy (whitespace) while it completes, and a moving upload never times out
            connect_timeout=self._socket_timeout,
            read_timeout=self._socket_timeout,
            max_pool_connections=32,
            s3={"addressing_style": addressing},
            **_unsigned_config(self.unsigned),
        )
        try:
            # a private session: boto3's default session is not thread-safe to create clients from
            session = boto3.session.Session()
            region = session.region_name or ("us-east-1" if endpoint else None)
            client = session.client(
                "s3", endpoint_url=self.endpoint_url, region_name=region, config=config
            )
        except Exception as e:
            raise self.artfs_error(e, "") from None
        self._session = session
        client.meta.events.register("before-call.s3", self._start_budget)
        if mode in ("standard", "adaptive"):
            _bound_retries(client, self._socket_timeout, self.max_attempts)
        return client

    def _start_budget(self, context: dict[str, Any], **kwargs: Any) -> None:
        """``before-call`` hook: the deadline of this request (that of the enclosing operation of
        this thread when there is one, see :meth:`_reading`), read by the retry handler."""
        at = getattr(self._deadline, "at", None)
        context["artfs_deadline"] = at if at is not None else time.monotonic() + self.timeout

    def _reading(self, attempt: Callable[[], _T], deadline: float | None = None) -> _T:
        """Run ``attempt`` (a request and the reading of its body) until it succeeds or the budget
        is spent: when the body breaks off (:class:`_BodyBroke`) the request is made again, after
        a jittered backoff as botocore's. Requests made inside share the operation's deadline, so
        botocore's own retries of them stop at the same time. Raises the last :class:`_BodyBroke`
        or the request's error. ``deadline``: when the operation started earlier (default: now +
        the budget)."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        tries = 0
        while True:
            self._deadline.at = deadline
            try:
                return attempt()
            except _BodyBroke:
                tries += 1
                delay = random.random() * min(20.0, 0.05 * 2**tries)
                if tries >= self.max_attempts or time.monotonic() + delay + self._socket_timeout > deadline:
                    raise
            finally:
                self._deadline.at = None
            time.sleep(delay)

    def _endpoint(self) -> str:
        c = self._client_obj
        if c is not None:
            return c.meta.endpoint_url
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)} via {self._endpoint()}"

    def transfer_config(self) -> Any:
        """The transfer manager's settings of this store (multipart sizes, concurrency)."""
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=max(self.multipart_threshold, 1),
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
            num_download_attempts=3,  # of a part whose body broke off (botocore retried the request)
            use_threads=True,
        )

    def artfs_error(self, e: BaseException, key: str, *, exclusive: bool = False) -> BaseException:
        """The artfs error for a boto3/botocore/s3transfer exception (others are returned as-is)."""
        if isinstance(e, ArtfsError):
            return e
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError as BotoConnectionError,
            CredentialRetrievalError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
            ProfileNotFound,
        )

        where = self._where(key) if key else f"{self.url} via {self._endpoint()}"
        # boto3's transfer wrappers hide the real error; unwrap it
        inner = getattr(e, "last_exception", None) or (
            e.__context__ if type(e).__name__ == "S3UploadFailedError" else None
        )
        if isinstance(inner, BaseException) and inner is not e:
            return self.artfs_error(inner, key, exclusive=exclusive)

        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code") or "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            msg = err.get("Message") or code or str(status)
            if exclusive and (code in _EXISTS or status in (409, 412)):
                return AlreadyExists(f"{key}: already exists ({where})")
            if code == "NoSuchBucket":
                return _NoSuchBucket(
                    f"{key or self.url}: bucket {self.bucket!r} does not exist ({where})"
                )
            if code in _NOT_FOUND or status == 404:
                return NotFound(f"{key}: not found in the store ({where})")
            if code in _DENIED or status == 403:
                return PermissionDenied(f"{key or self.url}: access denied: {msg} ({where})")
            what = key or self.url
            return StoreUnavailable(f"{what}: S3 error {code or status}: {msg} ({where})")
        if isinstance(e, (NoCredentialsError, PartialCredentialsError, ProfileNotFound)):
            return PermissionDenied(f"{key or self.url}: no usable AWS credentials: {e} ({where})")
        if isinstance(e, CredentialRetrievalError):
            return StoreUnavailable(f"{key or self.url}: cannot get AWS credentials: {e} ({where})")
        if isinstance(e, (BotoConnectionError, HTTPClientError)):
            return StoreUnavailable(
                f"{key or self.url}: S3 endpoint unreachable (gave up after the "
                f"{self.timeout:g} s budget, ARTFS_S3_TIMEOUT): {e} ({where})"
            )
        if isinstance(e, BotoCoreError):
            return StoreUnavailable(f"{key or self.url}: {e} ({where})")
        if isinstance(e, (ConnectionError, TimeoutError)):
            return StoreUnavailable(f"{key or self.url}: {e} ({where})")
        if _is_botocore(e):
            return StoreUnavailable(f"{key or self.url}: {type(e).__name__}: {e} ({where})")
        return e  # not a store failure (a bug, a bad argument): let it surface as it is

    # -- reading ---------------------------------------------------------------------------------

    def get(self, key: str, *, deadline: float | None = None) -> bytes:
        def attempt() -> bytes:
            r = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            with r["Body"] as body:
                return _read_body(body)

        try:
            data = self._reading(attempt, deadline)
        except _BodyBroke as e:
            raise self.artfs_error(e.cause, key) from None
        except Exception as e:
            raise self.artfs_error(e, key) from None
        self._count("get")
        return data

    def get_blob(self, key: str) -> bytes:
        """The whole object ``key``, for a caller that checks its bytes against a content digest.

        One plain GET first (:class:`_DirectGet`: a fraction of botocore's CPU per request); for
        anything but a complete 200 answer, :meth:`get` (botocore's retries and errors) within
        what is left of the same budget, so the whole call still ends within ``timeout``.
        """
        deadline = time.monotonic() + self.timeout
        d = self._direct()
        if d is not None:
            data = d.get(self._key(key))
            if data is not None:
                self._count("get")
                return data
        return self.get(key, deadline=deadline)

    def _direct(self) -> _DirectGet | None:
        """The direct GET of this backend, set up on first use; None where it cannot be used."""
        d = self._direct_obj
        if d is not None and d.on:
            return d
        if self._direct_tried:
            return None
        with self._client_lock:
            if self._direct_tried:
                return self._direct_obj if self._direct_obj is not None and self._direct_obj.on else None
            self._direct_tried = True
        try:
            self._direct_obj = self._make_direct()
        except Exception as e:  # no credentials yet, an unusual client: botocore's path says why
            log.debug("%s: no direct GET (%s)", self.url, e)
            self._direct_obj = None
        return self._direct_obj

    def _make_direct(self) -> _DirectGet | None:
        from botocore import UNSIGNED

        client = self.client
        sigv = client.meta.config.signature_version
        http = getattr(getattr(client, "_endpoint", None), "http_session", None)
        if http is None or sigv not in (None, "s3v4", "v4", UNSIGNED):
            return None
        probe = "artfs-probe"
        url = client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": probe})
        base = url.split("?", 1)[0]
        if not base.endswith("/" + probe):
            return None
        credentials = None
        if sigv is not UNSIGNED:
            credentials = self._session.get_credentials() if self._session is not None else None
            if credentials is None:
                return None  # botocore reports the missing credentials
        return _DirectGet(base[: -len(probe)], http, credentials, client.meta.region_name or "us-east-1")

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        self._count("range")
        if length <= 0:
            # S3 has no empty range; still tell a missing key from an existing one
            if self.head(key) is None:
                raise NotFound(f"{key}: not found in the store ({self._where(key)})")
            return b""
        def attempt() -> tuple[dict[str, Any], bytes]:
            rng = f"bytes={offset}-{offset + length - 1}"
            r = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=rng)
            with r["Body"] as body:
                return r, _read_body(body)

        try:
            r, data = self._reading(attempt)
        except _BodyBroke as e:
            raise self.artfs_error(e.cause, key) from None
        except Exception as e:
            from botocore.exceptions import ClientError

            if isinstance(e, ClientError) and (
                e.response.get("Error", {}).get("Code") == "InvalidRange"
                or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 416
            ):
                return b""  # offset at or past the end (or an empty object)
            raise self.artfs_error(e, key) from None
        # a server that ignores Range sends the whole object (status 200): cut it ourselves
        if r.get("ResponseMetadata", {}).get("HTTPStatusCode") == 200 and "ContentRange" not in r:
            data = data[offset : offset + length]
        return data[:length]

    def fetch_range_into(self, key: str, offset: int, length: int, fd: int, fd_offset: int) -> int:
        """One ranged GET whose body is streamed into ``fd`` in 1 MiB pieces (bounded memory).

        A body that breaks off is requested again from the first byte not written, for as long
        as the budget allows; the budget starts again whenever bytes came through.
        """
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        if length <= 0:
            return len(self.get_range(key, offset, length))
        self._count("range")
        done = 0
        while True:
            progress = [0]
            try:
                return done + self._reading(
                    lambda: self._fetch_once(key, offset + done, length - done, fd,
                                             fd_offset + done, progress))
            except _BodyBroke as e:
                if not progress[0]:
                    raise self.artfs_error(e.cause, key) from None
                done += progress[0]  # it moved: resume from there with a new budget
            except Exception as e:
                raise self.artfs_error(e, key) from None

    def _fetch_once(self, key: str, offset: int, length: int, fd: int, fd_offset: int,
                    progress: list[int]) -> int:
        """One attempt of :meth:`fetch_range_into`; ``progress[0]`` counts what reached ``fd``
        in the attempts of this call whose body broke off (each attempt restarts after them)."""
        offset += progress[0]
        length -= progress[0]
        fd_offset += progress[0]
        try:
            rng = f"bytes={offset}-{offset + length - 1}"
            r = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=rng)
        except Exception as e:
            from botocore.exceptions import ClientError

            if isinstance(e, ClientError) and (
                e.response.get("Error", {}).get("Code") == "InvalidRange"
                or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 416
            ):
                return progress[0]  # offset at or past the end (or an empty object)
            raise
        done = 0
        with r["Body"] as body:
            skip = 0
            if r.get("ResponseMetadata", {}).get("HTTPStatusCode") == 200 and "ContentRange" not in r:
                skip = offset  # a server that ignores Range sends the whole object
            while done < length:
                try:
                    piece = _read_body(body, min(MiB, skip) if skip else min(MiB, length - done))
                except _BodyBroke:
                    progress[0] += done
                    raise  # _reading asks again from there while the budget lasts
                if not piece:
                    break
                if skip:
                    skip -= len(piece)  # bytes before the range: dropped
                    continue
                pwrite_all(fd, piece, fd_offset + done)
                done += len(piece)
        return progress[0] + done

    def download_file(self, key: str, path: str) -> int:
        def attempt() -> None:
            from s3transfer.exceptions import RetriesExceededError

            try:
                self.client.download_file(
                    self.bucket, self._key(key), path, Config=self.transfer_config()
                )
            except RetriesExceededError as e:  # a part's body broke num_download_attempts times
                raise _BodyBroke(e) from e

        try:
            self._reading(attempt)
        except _BodyBroke as e:
            raise self.artfs_error(e.cause, key) from None
        except OSError as e:
            # errors about the local target are the caller's, not the store's
            if getattr(e, "filename", None) is not None or not _is_botocore(e):
                raise
            raise self.artfs_error(e, key) from None
        except Exception as e:
            err = self.artfs_error(e, key)
            if not (isinstance(err, PermissionDenied) and self.unsigned):
                raise err from None
            # the transfer manager starts with a HEAD, which some servers refuse where GET is allowed
            # (see _head_by_get): fetch the object with one streamed GET instead
            with open(path, "wb") as f:
                n = self.fetch_range_into(key, 0, 1 << 62, f.fileno(), 0)
            self._count("download")
            return n
        self._count("download")
        return os.path.getsize(path)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            err = self.artfs_error(e, key)
            if isinstance(err, NotFound) and not isinstance(err, _NoSuchBucket):
                return None
            if isinstance(err, PermissionDenied) and self.unsigned:
                return self._head_by_get(key, err)
            raise err from None
        return ObjectInfo(key, int(r["ContentLength"]), r["LastModified"].timestamp())

    def _head_by_get(self, key: str, denied: PermissionDenied) -> ObjectInfo | None:
        """HEAD refused to an anonymous caller: ask with a one-byte GET instead.

        AWS lets whoever may ``s3:GetObject`` send HEAD, but some S3 servers (moto among them)
        check HEAD against an action of its own that a bucket policy cannot name, so a public
        object answers 403 to HEAD and 200 to GET.
        """
        from botocore.exceptions import ClientError

        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range="bytes=0-0")
            r["Body"].close()
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 416:  # an empty object
                return ObjectInfo(key, 0, 0.0)
            err = self.artfs_error(e, key)
            if isinstance(err, NotFound) and not isinstance(err, _NoSuchBucket):
                return None
            raise (denied if isinstance(err, PermissionDenied) else err) from None
        except Exception as e:
            raise self.artfs_error(e, key) from None
        total = str(r.get("ContentRange", "")).rpartition("/")[2]
        size = int(total) if total.isdigit() else int(r.get("ContentLength", 0))
        return ObjectInfo(key, size, r["LastModified"].timestamp())

    # -- writing ---------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        kwargs = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **kwargs)
        except Exception as e:
            err = self.artfs_error(e, key, exclusive=exclusive)
            if isinstance(err, AlreadyExists) and self._own_retried_write(e, key, data):
                pass  # our first attempt succeeded but its answer was lost; a retry saw it
            else:
                raise err from None
        self._count("put")

    def _own_retried_write(self, e: BaseException, key: str, data: bytes) -> bool:
        """After a 412 on a *retried* exclusive PUT: is the object there the one we sent?

        botocore retries a PUT whose response was lost; if the first attempt did create the
        object, the retry fails with 412 although the create succeeded. Identical bytes mean the
        store holds exactly what we wanted to write, so we report success (artfs's exclusive
        creates carry unique bytes: a manifest names its commit id and time). If the object
        cannot be read back, whether the create was ours is unknown: that is a
        :class:`StoreUnavailable`, never an AlreadyExists that would make a commit take the
        next number and leave a duplicate version behind.
        """
        meta = getattr(e, "response", {}).get("ResponseMetadata", {})
        if not meta.get("RetryAttempts"):
            return False
        try:
            return self.get(key) == data
        except NotFound:
            return False  # it was there (412) and is gone: someone else's, since deleted
        except ArtfsError as err:
            raise StoreUnavailable(
                f"{key}: an exclusive create was retried and found the key taken; cannot tell "
                f"whether the first attempt made it: {err}") from None

    def put_file(self, key: str, path: str, *, exclusive: bool = False) -> None:
        size = os.path.getsize(path)  # FileNotFoundError about the caller's file stays an OSError
        if exclusive:
            # the transfer manager cannot send If-None-Match; S3 takes single PUTs up to 5 GiB
            with open(path, "rb") as f:
                data = f.read()
            self.put(key, data, exclusive=True)
            return
        try:
            if size < self.multipart_threshold:
                with open(path, "rb") as f:
                    self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=f)
            else:
                self.client.upload_file(
                    path, self.bucket, self._key(key), Config=self.transfer_config()
                )
        except OSError as e:
            if getattr(e, "filename", None) == path or not _is_botocore(e):
                raise
            raise self.artfs_error(e, key) from None
        except Exception as e:
            raise self.artfs_error(e, key) from None
        self._count("put")

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            err = self.artfs_error(e, key)
            if isinstance(err, NotFound) and not isinstance(err, _NoSuchBucket):
                return
            raise err from None

    # -- listing ---------------------------------------------------------------------------------

    def _list_prefix(self, prefix: str) -> str:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return self.prefix + prefix

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        full = self._list_prefix(prefix)
        n = len(self.prefix)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield ObjectInfo(
                        obj["Key"][n:], int(obj["Size"]), obj["LastModified"].timestamp()
                    )
        except Exception as e:
            raise self.artfs_error(e, prefix) from None

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        full = self._list_prefix(prefix)
        names = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full, Delimiter="/"
            )
            for page in pages:
                for cp in page.get("CommonPrefixes", ()):
                    name = cp["Prefix"][len(full) :].rstrip("/")
                    if name:
                        names.append(name)
        except Exception as e:
            raise self.artfs_error(e, prefix) from None
        return sorted(names)

    # -- misc ------------------------------------------------------------------------------------

    def gc_tmp(self, older_than: float) -> int:
        """Abort the multipart uploads under the store's prefix started over ``older_than`` s ago.

        A failed upload is aborted by the transfer manager at once; this removes what is left
        when that abort could not reach the store or the process died (S3 keeps, and bills, the
        parts of an unfinished upload forever). Younger uploads may belong to a commit running
        now, so :meth:`artfs.Store.gc` passes its intent grace period. Returns how many.
        """
        kwargs = {"Prefix": self.prefix} if self.prefix else {}
        now = time.time()
        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, **kwargs
            )
            for page in pages:
                for up in page.get("Uploads", ()):
                    if now - up["Initiated"].timestamp() < older_than:
                        continue
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
                        )
                    except Exception as e:
                        err = self.artfs_error(e, up["Key"])
                        if type(err) is not NotFound:
                            raise err from None
                        continue  # NoSuchUpload: completed or aborted by someone else meanwhile
                    aborted += 1
        except Exception as e:
            raise self.artfs_error(e, "") from None
        return aborted


    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (for tests and demos)."""
        c = self.client
        try:
            c.head_bucket(Bucket=self.bucket)
            return
        except Exception as e:
            err = self.artfs_error(e, "")
            if not isinstance(err, NotFound):
                raise err from None
        kwargs = {}
        region = c.meta.region_name
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            c.create_bucket(Bucket=self.bucket, **kwargs)
        except Exception as e:
            code = getattr(e, "response", {}).get("Error", {}).get("Code")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            raise self.artfs_error(e, "") from None

    def close(self) -> None:
        with self._client_lock:
            clients = (self._client_obj,)
            self._client_obj = None
            self._direct_obj, self._direct_tried = None, False  # it sends through the client's pool
        for c in clients:
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass


def no_sign_request_from_env() -> bool:
    """Whether ``$ARTFS_NO_SIGN_REQUEST`` asks for unsigned requests (``1``, ``true``, ``yes``)."""
    return os.environ.get("ARTFS_NO_SIGN_REQUEST", "").strip().lower() in ("1", "true", "yes", "on")


def _unsigned_config(unsigned: bool) -> dict[str, Any]:
    if not unsigned:
        return {}
    from botocore import UNSIGNED

    return {"signature_version": UNSIGNED}


def _is_botocore(e: BaseException) -> bool:
    return type(e).__module__.startswith(("botocore", "boto3", "s3transfer", "urllib3"))
