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
  default 15, or the ``timeout`` keyword) rather than by a count:
  see :func:`artfs.backends._s3retry._bound_retries`.
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
  their digest) first makes one plain GET without botocore's request path
  (see :class:`artfs.backends._s3direct._DirectGet`), and falls back to :meth:`S3Backend.get`
  for anything but a complete 200 answer, within the same budget.
* :meth:`S3Backend.put_small` (lineage's edges and run records) first makes one plain signed PUT
  with ``http.client`` alone (:class:`artfs.backends._s3direct._DirectPut`: no boto3 imported),
  and falls back to :meth:`S3Backend.put` for anything but a 200, within the same budget.
* ``ARTFS_NO_SIGN_REQUEST=1`` (the CLI's ``--no-sign-request``, the mount's ``-o no_sign_request``)
  or ``unsigned=True`` sends unsigned requests, as anonymous users may for a public project (see
  :mod:`artfs._access`); no credentials are looked up then.

One boto3 client per backend object, created lazily; boto3 clients are thread-safe, so the backend
may be used from many threads at once.

The parts that stand on their own are in sibling modules (their names are re-exported here):
:mod:`artfs.backends._s3retry` (the time budget of botocore's retries, broken bodies),
:mod:`artfs.backends._s3direct` (the direct signed GET of small blobs),
:mod:`artfs.backends._s3errors` (botocore's exceptions as artfs errors),
:mod:`artfs.backends._s3client` (the boto3 client: endpoint, retries, signing), and
:mod:`artfs.backends._s3bucket` (listing, the gc of unfinished uploads, creating the bucket).
"""

from __future__ import annotations

import builtins
import logging
import os
import random
import threading
import time
from typing import Any, Callable, Iterator, Literal, TypeVar
from urllib.parse import urlparse

from .._errors import AlreadyExists, ArtfsError, NotFound, PermissionDenied, StoreUnavailable
from . import _s3bucket
from ._s3client import make_client, no_sign_request_from_env, retry_settings
from ._s3direct import _EMPTY_SHA256, _DirectGet, _DirectPut, direct_put_for
from ._s3errors import _DENIED, _EXISTS, _NOT_FOUND, _is_botocore, _NoSuchBucket, artfs_error
from ._s3retry import (DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT, _attempt_timeout, _aws_retry_config, _BodyBroke,
                       _bound_retries, _read_body, _timeout_from_env)
from .base import Backend, ObjectInfo, max_backoff, pwrite_all

__all__ = ["S3Backend", "no_sign_request_from_env", "DEFAULT_TIMEOUT", "DEFAULT_MAX_ATTEMPTS", "MiB",
           "DEFAULT_MULTIPART_THRESHOLD", "DEFAULT_MULTIPART_CHUNKSIZE", "MIN_PART_SIZE", "_attempt_timeout",
           "_aws_retry_config", "_BodyBroke", "_bound_retries", "_read_body", "_timeout_from_env", "_DirectGet",
           "_EMPTY_SHA256", "_DENIED", "_EXISTS", "_NOT_FOUND", "_is_botocore", "_NoSuchBucket"]

log = logging.getLogger("artfs.s3")

MiB = 1024 * 1024
DEFAULT_MULTIPART_THRESHOLD = 8 * MiB
DEFAULT_MULTIPART_CHUNKSIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum size of every part but the last
_T = TypeVar("_T")


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

        self.counter: dict[str, int] = {"put": 0, "get": 0, "range": 0, "download": 0}
        self._counter_lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._client_obj = None
        self._session: Any = None  # the boto3 session of the client (its credentials)
        self._direct_obj: _DirectGet | None = None
        self._direct_tried = False
        self._writer: _DirectPut | Literal[False] | None = None  # the direct PUT (False: none), made on first use

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
        # sets max_attempts from the AWS configuration, and keeps the session (its credentials)
        mode, self.max_attempts = retry_settings(self._max_attempts_arg)
        client, self._session = make_client(
            url=self.url, endpoint_url=self.endpoint_url, mode=mode, max_attempts=self.max_attempts,
            socket_timeout=self._socket_timeout, unsigned=self.unsigned, timeout=self.timeout,
            start_budget=self._start_budget, error=self.artfs_error)
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
                delay = random.random() * min(max_backoff(self.timeout), 0.05 * 2**tries)
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
        where = self._where(key) if key else f"{self.url} via {self._endpoint()}"
        return artfs_error(e, key, url=self.url, bucket=self.bucket, timeout=self.timeout, where=where,
                           exclusive=exclusive)


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
            data = d.get(self._key(key), deadline)
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

        One plain signed GET first (:meth:`_DirectGet.get_range_into`: the body read into one
        reused buffer, no botocore request path); whatever it did not deliver (an error status,
        a reset, a stall) is asked for through botocore, from the first byte not written. A body
        that breaks off is requested again from there, for as long as the budget allows; the
        budget starts again whenever bytes came through (else the direct attempt's time counts).
        """
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        if length <= 0:
            return len(self.get_range(key, offset, length))
        self._count("range")
        deadline: float | None = time.monotonic() + self.timeout
        done = 0
        d = self._direct()
        if d is not None:
            done, whole = d.get_range_into(self._key(key), offset, length, fd, fd_offset)
            if whole:
                return done
            if done:
                deadline = None  # it moved: a new budget for the rest
        while True:
            progress = [0]
            try:
                return done + self._reading(
                    lambda: self._fetch_once(key, offset + done, length - done, fd,
                                             fd_offset + done, progress), deadline)
            except _BodyBroke as e:
                if not progress[0]:
                    raise self.artfs_error(e.cause, key) from None
                done += progress[0]  # it moved: resume from there with a new budget
                deadline = None
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

    def put_small(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """:meth:`put`, by one plain signed PUT first (:class:`_DirectPut`: no boto3 imported, where
        the environment says how to sign and where to send it), botocore's :meth:`put` for anything
        but a 200, within what is left of the same budget. An exclusive create whose direct attempt
        got no answer is read back if botocore then finds the key taken (the attempt may have made it)."""
        deadline = time.monotonic() + self.timeout
        if self._writer is None:
            self._writer = direct_put_for(bucket=self.bucket, endpoint_url=self.endpoint_url, unsigned=self.unsigned,
                                          attempt_timeout=self._socket_timeout) or False
        status = self._writer.put(self._key(key), data, exclusive=exclusive, deadline=deadline) if self._writer else 0
        if status == 200:
            self._count("put")
            return
        if 300 <= status < 500 and status not in (404, 409, 412, 429):  # this request's shape is wrong here
            self._writer = False  # (a redirect, a refused signature): botocore's path from now on
        self._deadline.at = deadline  # botocore's retries share the deadline (see _start_budget)
        try:
            self.put(key, data, exclusive=exclusive)
        except AlreadyExists:
            if not (exclusive and status < 0 and self.get(key, deadline=deadline) == data):
                raise
        finally:
            self._deadline.at = None

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

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return _s3bucket.list_objects(self, prefix)

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        return _s3bucket.list_dirs(self, prefix)

    # -- misc ------------------------------------------------------------------------------------

    def gc_tmp(self, older_than: float) -> int:
        """Abort the multipart uploads under the store's prefix started over ``older_than`` s ago
        (see :func:`artfs.backends._s3bucket.gc_tmp`); returns how many."""
        return _s3bucket.gc_tmp(self, older_than)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (for tests and demos)."""
        _s3bucket.ensure_bucket(self)

    def close(self) -> None:
        with self._client_lock:
            clients = (self._client_obj,)
            self._client_obj = None
            self._direct_obj, self._direct_tried = None, False  # it sends through the client's pool
            writer, self._writer = self._writer, None
        if writer:
            writer.close()
        for c in clients:
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass
