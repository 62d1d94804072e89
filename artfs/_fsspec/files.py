"""Open ``artfs://`` files: read through the verified cache, or written into a transaction's draft.

Reading an entry, cheapest first (the same order as the mount's ``open``):

* a blob complete and verified in the cache opens as **the cache file itself**
  (:class:`CachedFile`, a plain buffered file over it: no copy, ``fileno()`` can be mmapped). As
  in ``artfsd.openfiles.OpenFile.attach_complete`` it is used only if, once opened and locked
  (a shared ``flock``: eviction skips it while it is open), its size and its verification record
  (:func:`artfs._cache.stamp_ok`) still match; otherwise the lazy reader, which hashes it again
  or drops it, serves the reads;
* a blob of at most :data:`SMALL` bytes missing from the cache is fetched whole in one request,
  verified into the cache, and then opened as above (as the mount fetches small files);
* anything else reads through :class:`artfs._lazy.LazyBlobs` (:class:`LazyFile`): chunks fetched on
  demand into the shared cache with read-ahead for sequential readers, verified when complete,
  so a ``seek`` to the end of a 10 GiB file fetches a chunk or two, not the file;
* references read as in the mount: ``file://`` only where ``allow_file``/``file_roots`` allow
  (``PermissionError`` otherwise), pinned ones through the lazy reader (every fetch pinned to
  the recorded object), unpinned ones (``checksum=False``) straight from where they live.

A file written under ``draft/`` is a :class:`DraftFile`: its bytes go to a staged local file,
which joins the draft when the file is closed (see :mod:`artfs._fsspec.drafts`).
"""

from __future__ import annotations

import fcntl
import io
import os
import time
from typing import TYPE_CHECKING, Any, Protocol

from fsspec.spec import AbstractBufferedFile

from .._cache import stamp_ok
from .._errors import CorruptData, NotFound, PermissionDenied
from .._layout import blob_key
from .._refs import is_pinned

if TYPE_CHECKING:
    from .._lazy import LazyBlobs
    from .._manifest import Entry
    from .._refs import RefReader
    from .._store import Store
    from .drafts import StagedDraft

#: blobs up to this size are fetched whole in one request (the mount's daemon/prefetch.py SMALL)
SMALL = 1 << 20
#: a warm open renews the blob's atime (its recency for eviction) at most this often, in seconds
#: (the mount's artfsd.complete.TOUCH_EVERY): a ``utime`` per open dirties the inode, which the
#: file system then writes back, for every file of an epoch
TOUCH_EVERY = 60.0


class _Handle(Protocol):
    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class LazyFile(AbstractBufferedFile):  # type: ignore[misc]
    """A read-only file whose bytes come from a handle (a lazy blob, or a reference reader)."""

    def __init__(self, fs: Any, path: str, handle: _Handle | None, details: dict[str, Any], *,
                 block_size: int | None = None, cache_type: str = "none",
                 cache_options: dict[str, Any] | None = None) -> None:
        self._handle = handle
        super().__init__(fs, path, mode="rb", block_size=block_size, cache_type=cache_type,
                         cache_options=cache_options, size=details["size"])
        self._details = details

    def _fetch_range(self, start: int, end: int) -> bytes:
        if self._handle is None or end <= start:
            return b""
        return self._handle.read(start, end - start)

    def close(self) -> None:
        try:
            super().close()
        finally:
            h, self._handle = getattr(self, "_handle", None), None
            if h is not None:
                h.close()


class CachedFile(io.BufferedReader):
    """The complete, verified cache file of a blob, opened read-only (holding a shared ``flock``)."""

    def __init__(self, fs: Any, path: str, fd: int, details: dict[str, Any]) -> None:
        super().__init__(io.FileIO(fd, "rb", closefd=True), buffer_size=1 << 16)
        self.fs, self.path, self.details, self.size = fs, path, details, details["size"]

    def info(self) -> dict[str, Any]:
        """What ``fs.info`` says about the file."""
        return self.details

    @property
    def full_name(self) -> str:
        """The path with the protocol: ``artfs://...``."""
        return f"artfs://{self.path}"


class _RefHandle:
    """An unpinned reference (``checksum=False``): whatever is there now, never cached."""

    def __init__(self, reader: "RefReader", entry: "Entry") -> None:
        self.reader, self.entry = reader, entry

    def read(self, offset: int, length: int) -> bytes:
        return self.reader.read_range(self.entry, offset, length)

    def close(self) -> None:
        pass


def complete_fd(store: "Store", digest: str, size: int) -> int | None:
    """An fd on the complete cache blob if it is there, locked, and still the bytes that were verified."""
    path = store.cache.path(digest)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        st = os.fstat(fd)
        if st.st_size == size and os.path.samestat(st, os.stat(path)) and stamp_ok(fd, digest, st):
            if time.time() - st.st_atime > TOUCH_EVERY:  # recency for eviction; the mtime is the record's
                os.utime(fd, ns=(time.time_ns(), st.st_mtime_ns))
            fd, ok = -1, fd
            return ok
    except OSError:
        pass
    finally:
        if fd >= 0:
            os.close(fd)
    return None


def fetch_small(store: "Store", project: str, digest: str, size: int) -> None:
    """Fetch a small blob whole into the cache (verified before it appears under its name)."""
    try:
        data = store.backend.get_blob(blob_key(project, digest))
    except NotFound:  # listed in a manifest, gone from the store: corrupt, not "no such file"
        raise CorruptData(f"blob {digest} (project {project}) is missing from {store.url} although a "
                          "version lists it") from None
    if len(data) != size:
        raise CorruptData(f"{digest}: the store has {len(data)} bytes, the manifest says {size}")
    store.cache.insert_bytes(digest, data)


def open_entry(fs: Any, name: str, project: str, entry: "Entry", details: dict[str, Any], *,
               block_size: int | None = None, cache_type: str = "none",
               cache_options: dict[str, Any] | None = None) -> tuple[Any, bool]:
    """A file object reading ``entry`` of a version of ``project``, the cheapest way there is, and
    whether it was served from the cache as it was (False: bytes were or will be fetched).

    ``fs.blobs`` (the lazy reader) and ``fs.refs`` (references) are only touched when needed: a
    warm epoch over complete blobs never starts either, nor builds the store's client.
    """
    store: Store = fs.store
    kw: dict[str, Any] = {"block_size": block_size, "cache_type": cache_type, "cache_options": cache_options}
    if entry.ref is not None:
        refs: RefReader = fs.refs
        try:
            refs.check_allowed(entry)
        except PermissionDenied as e:
            raise PermissionDenied(f"artfs://{name}: {e} (pass allow_file=True or file_roots=[DIR] in the "
                                   "storage options)") from None
        if not is_pinned(entry):
            size = refs.size(entry)
            return LazyFile(fs, name, _RefHandle(refs, entry) if size else None, {**details, "size": size}, **kw), True
        if not entry.size:
            return LazyFile(fs, name, None, details, **kw), True
        if entry.digest:
            fd = complete_fd(store, entry.digest, entry.size)
            if fd is not None:
                return CachedFile(fs, name, fd, details), True
        return LazyFile(fs, name, fs.blobs.open_ref(project, entry, refs), details, **kw), False
    assert entry.digest is not None
    if not entry.size:
        return LazyFile(fs, name, None, details, **kw), True
    fd = complete_fd(store, entry.digest, entry.size)
    if fd is not None:
        return CachedFile(fs, name, fd, details), True
    if entry.size <= SMALL:
        fetch_small(store, project, entry.digest, entry.size)
        fd = complete_fd(store, entry.digest, entry.size)
        if fd is not None:
            return CachedFile(fs, name, fd, details), False
    blobs: LazyBlobs = fs.blobs
    return LazyFile(fs, name, blobs.open(project, entry.digest, entry.size), details, **kw), False


class DraftFile(AbstractBufferedFile):  # type: ignore[misc]
    """A file being written into a draft: its bytes go to a staged local file, which replaces (or
    adds) the draft's entry when the file is closed. Discarded with the transaction on error."""

    def __init__(self, fs: Any, path: str, mode: str, draft: "StagedDraft", rel: str, *,
                 block_size: int | None = None, autocommit: bool = False) -> None:
        super().__init__(fs, path, mode=mode, block_size=block_size, autocommit=autocommit)
        self._draft, self._rel = draft, rel
        self._tmp = draft.new_temp()
        self._out: io.BufferedWriter | None = open(self._tmp, "wb")

    def _initiate_upload(self) -> None:
        pass

    def _upload_chunk(self, final: bool = False) -> bool:
        out = self._out
        if out is None:
            raise ValueError(f"{self.path}: the file was discarded")
        out.write(self.buffer.getbuffer())
        if final:
            self._out = None
            out.close()
            self._draft.stage(self._rel, self._tmp)
        return True

    def commit(self) -> None:
        """At the end of the transaction: a file still open is closed (and so staged)."""
        if not self.closed:
            self.close()

    def discard(self) -> None:
        """The transaction failed: the staged bytes go (the draft itself is discarded too)."""
        out, self._out = self._out, None
        if out is not None:
            out.close()
            self.closed = True
        self._draft.unstage_temp(self._tmp)
