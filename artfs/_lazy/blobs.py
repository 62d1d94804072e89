"""The public face of the lazy reader: :class:`LazyBlobs` opens handles and answers what is open.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from .._digest import check_digest
from .._errors import ArtfsError
from .._refs import RefReader, is_pinned, ref_key

from .reads import BlobHandle
from .whole import _Whole

if TYPE_CHECKING:
    from .._manifest import Entry


class RefReads:
    """An open unpinned reference (``checksum=False``): whatever is there now, read straight from
    where it lives, never cached (the mount opens it with ``direct_io``). The face of a
    :class:`BlobHandle`, without a descriptor."""

    uncached = True
    fd = -1
    blocking_close = False

    def __init__(self, reader: RefReader, entry: "Entry") -> None:
        self.reader = reader
        self.entry = entry

    def read(self, offset: int, length: int) -> bytes:
        return self.reader.read_range(self.entry, offset, length)

    def readinto_nowait(self, offset: int, buf: memoryview) -> int | None:
        return None  # every read asks where it lives (in a worker thread)

    def will_need(self) -> None:
        pass

    def close(self) -> None:
        pass


class LazyBlobs(_Whole):
    """Chunked, lazily filled reads of store blobs through the shared cache.

    Built in layers, one module each (:mod:`artfs._lazy`): the shared state (``core``), streamed
    entries (``stream``), verification (``verify``), fetch jobs (``fetch``), reads and their
    policy (``reads``), whole fetches of small blobs and their prefetch (``whole``), and this
    public face.
    """

    def open(self, project: str, digest: str, size: int, *,
             fetch: Callable[[int, int], bytes] | None = None, verify: bool = True) -> BlobHandle:
        """A handle on the blob ``digest`` of ``project`` with ``size`` bytes (from the manifest).

        A blob complete and verified in the cache (:meth:`Cache.open_verified`, hashed again if
        its record is stale) gets a handle of its own descriptor; a small one missing from the
        cache is fetched whole first (:meth:`fetch_whole`, the only store I/O an open does); any
        other shares the blob's entry and fetches chunks as they are read, so a blob or chunks
        already cached are readable with the store down.
        """
        check_digest(digest)
        if size < 0:
            raise ArtfsError(f"{digest}: negative size {size}")
        if verify:
            cache = self.store.cache
            fd = cache.open_verified(digest, size, rehash=True)
            if fd < 0 and fetch is None and 0 < size <= self.small_max:
                self.fetch_whole(project, digest, size)
                fd = cache.open_verified(digest, size, rehash=True)
            if fd >= 0:
                self._hold(digest, +1)
                return BlobHandle(self, project, digest, size, fd=fd)
        e = self._acquire(project, digest, size, fetch=fetch, verify=verify)
        return BlobHandle(self, project, digest, size, entry=e)

    def open_complete(self, project: str, digest: str, size: int) -> BlobHandle | None:
        """A handle of the blob if it is complete and verified in the cache, else None (take
        :meth:`open`). Never blocks and reads metadata only (:meth:`Cache.open_verified` without
        rehashing): for the mount's event loop. Its reads and its close never block either,
        but for a read that must wait for the disk."""
        fd = self.store.cache.open_verified(digest, size)
        if fd < 0:
            return None
        self._hold(digest, +1)
        return BlobHandle(self, project, digest, size, fd=fd)

    def open_ref(self, project: str, entry: "Entry", reader: "RefReader") -> BlobHandle:
        """A handle on a pinned reference entry, read through the cache like a blob.

        Chunks come from ``reader.read_range(entry, ...)`` (every read pinned to the recorded
        object) instead of the store. An entry with a content ``digest`` shares its cache entry
        with blobs of that digest and is verified when complete; one without is cached under
        ``xxh128:<ref_key(entry)>`` (a key of the URI and the recorded version, never a content
        digest) and stays a partial entry once complete: there is nothing to verify it against.
        The caller checks :meth:`RefReader.check_allowed` first (``file://``).
        """
        if not is_pinned(entry):
            raise ArtfsError(f"{entry.path}: an unpinned reference (checksum=False) cannot be cached")

        def fetch(off: int, n: int) -> bytes:
            return reader.read_range(entry, off, n)

        if entry.digest:
            return self.open(project, entry.digest, entry.size, fetch=fetch)
        return self.open(project, f"xxh128:{ref_key(entry)}", entry.size, fetch=fetch, verify=False)

    @staticmethod
    def open_unpinned(reader: "RefReader", entry: "Entry") -> RefReads:
        """The reader of an unpinned reference entry (``checksum=False``): never cached."""
        return RefReads(reader, entry)

    def is_complete(self, digest: str) -> bool:
        """True if a verified copy of the blob is in the cache."""
        check_digest(digest)
        return os.path.exists(self.store.cache.path(digest))

    def open_digests(self) -> set[str]:
        """Digests with open handles (for ``Cache.cleanup(keep=…)``)."""
        with self._held_lock:
            held = set(self._held)
        with self._lock:
            return held | {d for d, e in self._entries.items() if e.refs > 0}

    def keep_path(self, path: str) -> bool:
        """A ``keep=`` predicate for :meth:`Cache.cleanup`: is this cache file in use here?"""
        name = os.path.basename(path)
        if name.endswith(".map"):
            name = name[:-4]
        return any(d.endswith(name) for d in self.open_digests())

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no fetch, prefetch or verification is running; False on timeout."""
        with self._busy:
            return self._busy.wait_for(lambda: self._active == 0, timeout)

    def close(self) -> None:
        """Stop the workers (queued read-ahead and prefetch are dropped). Open handles of complete
        blobs stay readable."""
        self._closed = True
        self._pool.close()

    def __enter__(self) -> "LazyBlobs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
