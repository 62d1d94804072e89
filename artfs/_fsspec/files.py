"""Open ``artfs://`` files: read through the verified cache, or written into a transaction's draft.

Reading an entry, cheapest first (the same order as the mount's ``open``):

* a blob complete and verified in the cache opens as **the cache file itself**
  (:class:`CachedFile`, a plain buffered file over it: no copy, ``fileno()`` can be mmapped), as
  :meth:`artfs._cache.Cache.open_verified` answers it (once opened and locked, a shared ``flock``
  that eviction respects, its size and its verification record still match; otherwise the lazy
  reader, which hashes it again or drops it, serves the reads);
* a small blob missing from the cache (``LazyBlobs.small_max``) is fetched whole in one request by
  the lazy reader (``LazyBlobs.fetch_whole``, verified into the cache, as for the mount), and
  then opened as above;
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

import io
from typing import TYPE_CHECKING, Any, Protocol

from fsspec.spec import AbstractBufferedFile

from .._errors import PermissionDenied
from .._partial import _pread_full
from .._refs import is_pinned

if TYPE_CHECKING:
    from .._lazy import LazyBlobs
    from .._manifest import Entry
    from .._refs import RefReader
    from .._store import Store
    from .drafts import StagedDraft

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


def complete_fd(store: "Store", digest: str, size: int) -> int | None:
    """An fd on the complete cache blob if it may be served as it is (:meth:`Cache.open_verified`)."""
    fd = store.cache.open_verified(digest, size)
    return fd if fd >= 0 else None


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
            from .._lazy import RefReads  # an unpinned reference: whatever is there now, never cached

            return LazyFile(fs, name, RefReads(refs, entry) if size else None, {**details, "size": size}, **kw), True
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
    blobs: LazyBlobs = fs.blobs
    if entry.size <= blobs.small_max:  # fetched whole in one GET (verified), then served as above
        blobs.fetch_whole(project, entry.digest, entry.size)
        fd = complete_fd(store, entry.digest, entry.size)
        if fd is not None:
            return CachedFile(fs, name, fd, details), False
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


def pread_range(fd: int, size: int, start: int | None, end: int | None) -> bytes:
    """Bytes ``start:end`` of a file of ``size`` bytes, with fsspec's ``cat_file`` meaning of
    negative and missing bounds (an end before the start reads to the end of the file)."""
    s = 0 if start is None else (start if start >= 0 else max(0, size + start))
    e = size if end is None else min(size, end if end >= 0 else size + end)
    n = e - s if e >= s else size - s
    if n <= 0:
        return b""
    return _pread_full(fd, n, s)  # a short read is continued, not trusted
