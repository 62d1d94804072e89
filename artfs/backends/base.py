"""The backend interface (:class:`Backend`) and what every implementation shares.

Here rather than in the package's ``__init__`` so that the implementations import it without
importing the package's :func:`open_backend`, which imports them (no cycle).
"""

from __future__ import annotations

import abc
import builtins
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Iterator, Mapping


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch


class Backend(abc.ABC):
    #: a URL naming the store (``file:///…``, ``s3://bucket/prefix``, ``https://…``)
    url: str
    read_only: bool = False
    #: requests made so far by kind (``put``, ``get``, ``range``, ``download``): the mount's
    #: statistics (``user.artfs.stats``) and its cache janitor read it. The backends here count
    #: in their own dict, set in ``__init__``; this default (empty, read-only, so no two backends
    #: share counts) is what a backend that does not count shows.
    counter: Mapping[str, int] = MappingProxyType({})

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object; NotFound if missing."""

    @abc.abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end of the object)."""

    def fetch_range_into(self, key: str, offset: int, length: int, fd: int, fd_offset: int) -> int:
        """Write up to ``length`` bytes of the object from ``offset`` into the open file ``fd``.

        The bytes go to ``fd`` at ``fd_offset`` (``pwrite``: the fd's file position is neither
        used nor moved, so threads may fill one file at once). Returns how many bytes were
        written: fewer than ``length`` only at the end of the object. Counts as one range read;
        NotFound if the key is missing. On an error some of the bytes may have been written.

        The default is :meth:`get_range` then ``pwrite``. Backends override it to move the
        bytes without a round trip through one large Python buffer (the local store copies
        file to file in the kernel, S3 streams the response body in 1 MiB pieces).
        """
        data = self.get_range(key, offset, length)
        pwrite_all(fd, data, fd_offset)
        return len(data)

    @abc.abstractmethod
    def download_file(self, key: str, path: str) -> int:
        """Write the object to the local file ``path`` (created/truncated); return its size."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """Store ``data``; with ``exclusive`` fail with AlreadyExists if the key exists."""

    def put_small(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """:meth:`put` of a small object that many processes write at their start (lineage's edges
        and run records): a backend may take a path that is cheaper to set up (S3: a plain signed
        PUT, no boto3). The same semantics and time budget as :meth:`put`, which is the default."""
        self.put(key, data, exclusive=exclusive)

    @abc.abstractmethod
    def put_file(self, key: str, path: str, *, exclusive: bool = False) -> None:
        """Upload a local file (multipart for large files where the store supports it)."""

    def put_files(self, items: builtins.list[tuple[str, str]], workers: int,
                  done: Callable[[int], None] | None = None) -> None:
        """:meth:`put_file` for each (key, local path) of ``items``, ``workers`` at once;
        ``done(i)`` after item i is stored. The local store makes them durable as a batch."""
        from .._parallel import pmap

        def one(i: int) -> None:
            self.put_file(*items[i])
            if done is not None:
                done(i)

        pmap(one, range(len(items)), workers)

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size and mtime of the key, or None if it does not exist."""

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def missing(self, keys: builtins.list[str]) -> builtins.list[str]:
        """The keys of ``keys`` that do not exist (a HEAD each, several at once, by default)."""
        from .._parallel import STORE_WORKERS, pmap

        present = pmap(self.exists, keys, STORE_WORKERS)
        return [k for k, p in zip(keys, present) if not p]

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the key; a missing key is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every key under ``prefix`` (a directory-like prefix ending in ``/``), recursively."""

    @abc.abstractmethod
    def list_dirs(self, prefix: str) -> builtins.list[str]:
        """The names of the immediate "subdirectories" under ``prefix`` (ending in ``/``)."""

    # -- capabilities: what a backend may offer beyond the key/value contract (declared here, so
    # callers ask the interface rather than probe with getattr) ----------------------------------
    def get_blob(self, key: str) -> bytes:
        """The whole object ``key``, for a caller that checks its bytes against a content digest
        (so a backend may take a cheaper path than :meth:`get`, as S3's direct GET); :meth:`get`
        by default."""
        return self.get(key)

    def local_path(self, key: str) -> str | None:
        """The file of ``key`` on this machine (it may not exist) when the store is a local
        directory, so callers may ``stat`` it instead of sending a request; None for other stores."""
        return None

    #: whether :meth:`staging` gives copies on the store's own disk (the local store)
    stages: bool = False

    def staging(self, project: str) -> "Staging":
        """A new :class:`Staging` for one put's blobs of ``project``: files written on the store's
        own disk while they are hashed (one read of a source file, and the bytes stored are the
        bytes hashed), placed under their keys at the commit. Only where :attr:`stages`;
        ``NotImplementedError`` elsewhere."""
        raise NotImplementedError(f"{self.url}: no staging")

    def flush(self, keys: builtins.list[str]) -> None:
        """Make the objects just written under ``keys`` durable before a manifest names them.

        Nothing by default: a remote store has them once it acknowledged them. The local store
        writes without ``fsync`` per file (many small files would pay one each) and syncs here.
        """

    def gc_tmp(self, older_than: float) -> int:
        """Remove what crashed writers left outside the keys (temporary files, unfinished
        multipart uploads) older than ``older_than`` seconds; returns how many (none by default)."""
        return 0

    def close(self) -> None:
        pass


class Staging(abc.ABC):
    """Staged copies of one put's blobs (:meth:`Backend.staging`), each beside the key it will
    become and named so that no listing, lookup or ``gc`` of keys takes it for one.

    The order a put follows: :meth:`put_small` / :meth:`open_tmp` + :meth:`adopt` while hashing;
    :meth:`sync` (the bytes of every copy durable) before the commit's first :meth:`place`;
    :meth:`discard` for each copy the commit did not place (:meth:`left` says whether any is left).
    A key never names a file whose bytes a crash could lose.
    """

    @abc.abstractmethod
    def put_small(self, key: str, data: bytes) -> bool:
        """Stage ``data``, the whole of the blob ``key``; False (nothing written) when the store
        has ``key`` already or this staging holds a copy of it."""

    @abc.abstractmethod
    def open_tmp(self) -> tuple[str, int]:
        """(path, fd open for writing) of a new temp file for bytes whose key is not known yet."""

    @abc.abstractmethod
    def adopt(self, tmp: str, key: str) -> bool:
        """The complete, closed temp file ``tmp`` holds the blob ``key``: keep it as that key's
        staged copy (True), or remove it (False) when the store or this staging has one already."""

    @abc.abstractmethod
    def has(self, key: str) -> bool:
        """Whether a staged copy of ``key`` is waiting to be placed."""

    @abc.abstractmethod
    def place(self, key: str) -> None:
        """Move the staged copy of ``key`` under ``key`` (after :meth:`sync`)."""

    @abc.abstractmethod
    def discard(self, key: str) -> None:
        """Remove the staged copy of ``key`` if it is still there."""

    @abc.abstractmethod
    def left(self) -> int:
        """How many staged copies are neither placed nor discarded."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Make the bytes of every staged copy durable."""


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """``pwrite`` all of ``data`` at ``offset`` (a short write is continued, never dropped)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(f"pwrite wrote {n} bytes")
        view = view[n:]
        offset += n


def max_backoff(budget: float) -> float:
    """The longest sleep between two attempts of a request with a time budget of ``budget`` s: a
    tenth of it, at most 20 s. botocore's standard mode caps its backoff at 20 s whatever the
    budget, so with a 15-20 s budget the fourth or fifth retry's sleep would not fit and the
    request would give up with half its budget unspent (the S3 and HTTP(S) clients both cap)."""
    return min(20.0, max(0.01, budget / 10))


def timeout_from_env(var: str, default: float) -> float:
    """The per-request time budget from ``$var`` (seconds), else ``default``; a clear error for
    a value that is not a positive number (the backends' ``ARTFS_S3_TIMEOUT``, ``ARTFS_HTTP_TIMEOUT``)."""
    raw = os.environ.get(var)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{var}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{var}={raw!r}: must be positive")
    return value
