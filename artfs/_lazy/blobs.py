"""The public face of the lazy reader: :class:`LazyBlobs` opens handles and answers what is open.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from .._digest import check_digest
from .._errors import ArtfsError, CorruptData
from .._partial import _Entry, _Stream
from .._refs import RefReader, is_pinned, ref_key

from .reads import BlobHandle, _Reads

if TYPE_CHECKING:
    from .._manifest import Entry


class LazyBlobs(_Reads):
    """Chunked, lazily filled reads of store blobs through the shared cache.

    Built in layers, one module each (:mod:`artfs._lazy`): the shared state (``core``), streamed
    entries (``stream``), verification (``verify``), fetch jobs (``fetch``), reads and their
    policy (``reads``), and this public face.
    """

    def open(self, project: str, digest: str, size: int, *,
             fetch: Callable[[int, int], bytes] | None = None, verify: bool = True) -> BlobHandle:
        """A handle on the blob ``digest`` of ``project`` with ``size`` bytes (from the manifest).

        Does no store I/O: a blob or chunks already cached are readable with the store down.
        """
        check_digest(digest)
        if size < 0:
            raise ArtfsError(f"{digest}: negative size {size}")
        cache = self.store.cache
        if verify and digest not in self._entries:
            self._precheck(cache.path(digest), digest, size)
        start_verify = None
        with self._lock:
            e = self._entries.get(digest)
            if e is None:
                e = _Entry(project, digest, size, cache.root, cache.path(digest))
                e.fetch, e.verify = fetch, verify
                if self.stream_over is not None and size > self.stream_over:
                    e.stream = _Stream(self.stream_window)
                try:
                    e.open_any(self.chunk_size)
                except OSError as ex:
                    e.close_fds()
                    raise ArtfsError(f"opening the cache entry of {digest}: {ex}") from None
                self._entries[digest] = e
                if not e.complete and e.npresent == e.nchunks and e.verify and e.stream is None:
                    e.finalizing = True  # every chunk arrived earlier, verification never ran
                    start_verify = e
            elif e.size != size:
                raise CorruptData(f"{digest} opened with size {size}, but already open with size {e.size}")
            with e.lock:
                e.refs += 1
                h = BlobHandle(self, e)
        if start_verify is not None:
            self._start_finalize(start_verify)
        return h

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

    def is_complete(self, digest: str) -> bool:
        """True if a verified copy of the blob is in the cache."""
        check_digest(digest)
        return os.path.exists(self.store.cache.path(digest))

    def open_digests(self) -> set[str]:
        """Digests with open handles (for ``Cache.cleanup(keep=…)``)."""
        with self._lock:
            return {d for d, e in self._entries.items() if e.refs > 0}

    def keep_path(self, path: str) -> bool:
        """A ``keep=`` predicate for :meth:`Cache.cleanup`: is this cache file in use here?"""
        name = os.path.basename(path)
        if name.endswith(".map"):
            name = name[:-4]
        with self._lock:
            return any(e.refs > 0 and e.digest.endswith(name) for e in self._entries.values())

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no fetch or verification is running; False on timeout."""
        with self._busy:
            return self._busy.wait_for(lambda: self._active == 0, timeout)

    def close(self) -> None:
        """Stop the workers (queued read-ahead is dropped). Open handles of complete blobs stay readable."""
        self._closed = True
        self._pool.close()

    def __enter__(self) -> "LazyBlobs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
