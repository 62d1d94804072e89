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
* Retries are botocore's own ("standard" mode), bounded by a time budget (``ARTFS_S3_TIMEOUT``
  seconds, default 15, or the ``timeout`` keyword): an unreachable endpoint raises
  :class:`StoreUnavailable` within roughly that budget, never hangs.
* Every botocore/boto3 error is normalised to the artfs errors, with a one-line message naming the
  key and the endpoint.
* ``ARTFS_NO_SIGN_REQUEST=1`` (the CLI's ``--no-sign-request``, the mount's ``-o no_sign_request``)
  or ``unsigned=True`` sends unsigned requests, as anonymous users may for a public project (see
  :mod:`artfs._access`); no credentials are looked up then.

One boto3 client per backend object, created lazily; boto3 clients are thread-safe, so the backend
may be used from many threads at once.
"""

from __future__ import annotations

import os
import threading
from typing import Iterator
from urllib.parse import urlparse

from .._errors import AlreadyExists, ArtfsError, NotFound, PermissionDenied, StoreUnavailable
from . import Backend, ObjectInfo, pwrite_all

MiB = 1024 * 1024
DEFAULT_TIMEOUT = 15.0
DEFAULT_MULTIPART_THRESHOLD = 8 * MiB
DEFAULT_MULTIPART_CHUNKSIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum size of every part but the last

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


UPLOAD_READ_TIMEOUT = 300.0


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


def _budget(timeout: float, max_attempts: int | None) -> tuple[int, float]:
    """Split a total time budget into (attempts, per-attempt connect/read timeout).

    botocore's standard retry mode sleeps at most ``2**(n-1)`` s (capped at 20 s) before retry
    ``n`` when throttled, far less (50 ms scale) after connection errors, so ``a`` attempts spend
    at most ``2**(a-1) - 1`` s sleeping; what is left of the budget is shared by the attempts'
    socket timeouts (connect and read, each per attempt).
    """
    attempts = max_attempts or (3 if timeout >= 6 else 2)
    sleeping = min(2 ** (attempts - 1) - 1, 20 * (attempts - 1))
    per_attempt = max(0.5, (timeout - sleeping) / attempts)
    return attempts, per_attempt


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
        self.max_attempts, self._socket_timeout = _budget(self.timeout, max_attempts)
        self.multipart_threshold = int(multipart_threshold)
        chunk = multipart_chunksize or DEFAULT_MULTIPART_CHUNKSIZE
        self.multipart_chunksize = max(int(chunk), MIN_PART_SIZE)
        self.max_concurrency = max_concurrency
        self.unsigned = no_sign_request_from_env() if unsigned is None else bool(unsigned)

        self.counter = {"put": 0, "get": 0, "range": 0, "download": 0}
        self._counter_lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._client_obj = None
        self._upload_client_obj = None

    # -- plumbing --------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"S3Backend({self.url!r}, endpoint={self._endpoint()!r})"

    def _count(self, what: str) -> None:
        with self._counter_lock:
            self.counter[what] += 1

    @property
    def _client(self):
        c = self._client_obj
        if c is None:
            with self._client_lock:
                c = self._client_obj
                if c is None:
                    c = self._client_obj = self._make_client()
        return c

    @property
    def _upload_client(self):
        """A client for multipart uploads: completing a large upload can keep the server silent
        for longer than the per-attempt socket timeout (servers concatenate the parts), so this
        one waits up to ``UPLOAD_READ_TIMEOUT`` for an answer; connecting is bounded as usual."""
        c = self._upload_client_obj
        if c is None:
            with self._client_lock:
                c = self._upload_client_obj
                if c is None:
                    c = self._upload_client_obj = self._make_client(
                        read_timeout=max(self._socket_timeout, UPLOAD_READ_TIMEOUT))
        return c

    def _make_client(self, *, read_timeout: float | None = None):
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
        config = Config(
            # total_max_attempts counts the first request; botocore's "max_attempts" would not
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=self._socket_timeout,
            read_timeout=read_timeout or self._socket_timeout,
            max_pool_connections=32,
            s3={"addressing_style": addressing},
            **_unsigned_config(self.unsigned),
        )
        try:
            # a private session: boto3's default session is not thread-safe to create clients from
            session = boto3.session.Session()
            region = session.region_name or ("us-east-1" if endpoint else None)
            return session.client(
                "s3", endpoint_url=self.endpoint_url, region_name=region, config=config
            )
        except Exception as e:
            raise self._error(e, "") from None

    def _endpoint(self) -> str:
        c = self._client_obj
        if c is not None:
            return c.meta.endpoint_url
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)} via {self._endpoint()}"

    def _transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=max(self.multipart_threshold, 1),
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
            num_download_attempts=2,  # botocore already retried each request
            use_threads=True,
        )

    def _error(self, e: BaseException, key: str, *, exclusive: bool = False) -> BaseException:
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
            return self._error(inner, key, exclusive=exclusive)

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
                f"{key or self.url}: S3 endpoint unreachable after {self.max_attempts} attempts: "
                f"{e} ({where})"
            )
        if isinstance(e, BotoCoreError):
            return StoreUnavailable(f"{key or self.url}: {e} ({where})")
        if isinstance(e, (ConnectionError, TimeoutError)):
            return StoreUnavailable(f"{key or self.url}: {e} ({where})")
        if _is_botocore(e):
            return StoreUnavailable(f"{key or self.url}: {type(e).__name__}: {e} ({where})")
        return e  # not a store failure (a bug, a bad argument): let it surface as it is

    # -- reading ---------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        try:
            r = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with r["Body"] as body:
                data = body.read()
        except Exception as e:
            raise self._error(e, key) from None
        self._count("get")
        return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        self._count("range")
        if length <= 0:
            # S3 has no empty range; still tell a missing key from an existing one
            if self.head(key) is None:
                raise NotFound(f"{key}: not found in the store ({self._where(key)})")
            return b""
        try:
            rng = f"bytes={offset}-{offset + length - 1}"
            r = self._client.get_object(Bucket=self.bucket, Key=self._key(key), Range=rng)
            with r["Body"] as body:
                data = body.read()
        except Exception as e:
            from botocore.exceptions import ClientError

            if isinstance(e, ClientError) and (
                e.response.get("Error", {}).get("Code") == "InvalidRange"
                or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 416
            ):
                return b""  # offset at or past the end (or an empty object)
            raise self._error(e, key) from None
        # a server that ignores Range sends the whole object (status 200): cut it ourselves
        if r.get("ResponseMetadata", {}).get("HTTPStatusCode") == 200 and "ContentRange" not in r:
            data = data[offset : offset + length]
        return data[:length]

    def fetch_range_into(self, key: str, offset: int, length: int, fd: int, fd_offset: int) -> int:
        """One ranged GET whose body is streamed into ``fd`` in 1 MiB pieces (bounded memory)."""
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        if length <= 0:
            return len(self.get_range(key, offset, length))
        self._count("range")
        try:
            rng = f"bytes={offset}-{offset + length - 1}"
            r = self._client.get_object(Bucket=self.bucket, Key=self._key(key), Range=rng)
        except Exception as e:
            from botocore.exceptions import ClientError

            if isinstance(e, ClientError) and (
                e.response.get("Error", {}).get("Code") == "InvalidRange"
                or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 416
            ):
                return 0  # offset at or past the end (or an empty object)
            raise self._error(e, key) from None
        done = 0
        with r["Body"] as body:
            skip = 0
            if r.get("ResponseMetadata", {}).get("HTTPStatusCode") == 200 and "ContentRange" not in r:
                skip = offset  # a server that ignores Range sends the whole object
            while done < length:
                try:
                    piece = body.read(min(MiB, skip) if skip else min(MiB, length - done))
                except Exception as e:
                    raise self._error(e, key) from None
                if not piece:
                    break
                if skip:
                    skip -= len(piece)  # bytes before the range: dropped
                    continue
                pwrite_all(fd, piece, fd_offset + done)
                done += len(piece)
        return done

    def download_file(self, key: str, path: str) -> int:
        try:
            self._client.download_file(
                self.bucket, self._key(key), path, Config=self._transfer_config()
            )
        except OSError as e:
            # errors about the local target are the caller's, not the store's
            if getattr(e, "filename", None) is not None or not _is_botocore(e):
                raise
            raise self._error(e, key) from None
        except Exception as e:
            err = self._error(e, key)
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
            r = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            err = self._error(e, key)
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
            r = self._client.get_object(Bucket=self.bucket, Key=self._key(key), Range="bytes=0-0")
            r["Body"].close()
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 416:  # an empty object
                return ObjectInfo(key, 0, 0.0)
            err = self._error(e, key)
            if isinstance(err, NotFound) and not isinstance(err, _NoSuchBucket):
                return None
            raise (denied if isinstance(err, PermissionDenied) else err) from None
        except Exception as e:
            raise self._error(e, key) from None
        total = str(r.get("ContentRange", "")).rpartition("/")[2]
        size = int(total) if total.isdigit() else int(r.get("ContentLength", 0))
        return ObjectInfo(key, size, r["LastModified"].timestamp())

    # -- writing ---------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        kwargs = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **kwargs)
        except Exception as e:
            err = self._error(e, key, exclusive=exclusive)
            if isinstance(err, AlreadyExists) and self._own_retried_write(e, key, data):
                pass  # our first attempt succeeded but its answer was lost; a retry saw it
            else:
                raise err from None
        self._count("put")

    def _own_retried_write(self, e: BaseException, key: str, data: bytes) -> bool:
        """After a 412 on a *retried* exclusive PUT: is the object there the one we sent?

        botocore retries a PUT whose response was lost; if the first attempt did create the
        object, the retry fails with 412 although the create succeeded. Identical bytes mean the
        store holds exactly what we wanted to write, so we report success.
        """
        meta = getattr(e, "response", {}).get("ResponseMetadata", {})
        if not meta.get("RetryAttempts"):
            return False
        try:
            return self.get(key) == data
        except ArtfsError:
            return False

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
                    self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=f)
            else:
                self._upload_client.upload_file(
                    path, self.bucket, self._key(key), Config=self._transfer_config()
                )
        except OSError as e:
            if getattr(e, "filename", None) == path or not _is_botocore(e):
                raise
            raise self._error(e, key) from None
        except Exception as e:
            raise self._error(e, key) from None
        self._count("put")

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            err = self._error(e, key)
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
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield ObjectInfo(
                        obj["Key"][n:], int(obj["Size"]), obj["LastModified"].timestamp()
                    )
        except Exception as e:
            raise self._error(e, prefix) from None

    def list_dirs(self, prefix: str) -> list[str]:
        full = self._list_prefix(prefix)
        names = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full, Delimiter="/"
            )
            for page in pages:
                for cp in page.get("CommonPrefixes", ()):
                    name = cp["Prefix"][len(full) :].rstrip("/")
                    if name:
                        names.append(name)
        except Exception as e:
            raise self._error(e, prefix) from None
        return sorted(names)

    # -- misc ------------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (for tests and demos)."""
        c = self._client
        try:
            c.head_bucket(Bucket=self.bucket)
            return
        except Exception as e:
            err = self._error(e, "")
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
            raise self._error(e, "") from None

    def close(self) -> None:
        with self._client_lock:
            clients = (self._client_obj, self._upload_client_obj)
            self._client_obj = self._upload_client_obj = None
        for c in clients:
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass


def no_sign_request_from_env() -> bool:
    """Whether ``$ARTFS_NO_SIGN_REQUEST`` asks for unsigned requests (``1``, ``true``, ``yes``)."""
    return os.environ.get("ARTFS_NO_SIGN_REQUEST", "").strip().lower() in ("1", "true", "yes", "on")


def _unsigned_config(unsigned: bool) -> dict:
    if not unsigned:
        return {}
    from botocore import UNSIGNED

    return {"signature_version": UNSIGNED}


def _is_botocore(e: BaseException) -> bool:
    return type(e).__module__.startswith(("botocore", "boto3", "s3transfer", "urllib3"))
