"""Opening files of versions whose blob is complete in the cache: on the event loop, no thread hop.

A training epoch opens thousands of small files, and the daemon is one Python process: what an
open costs in CPU is what limits the epoch. The general open (``Operations.open``) runs in a
worker thread, because it may have to wait for the store, hash a blob or take the lazy reader's
locks. For a blob that is complete and verified in the cache none of that is needed: checking it
takes a handful of system calls on local metadata, cheaper than the two hand-offs to a thread and
back (one for the open, one for the release). :meth:`CompleteOpens.open` does exactly that:

1. ``open`` + ``flock(LOCK_SH | LOCK_NB)`` of ``blobs/…/<digest>``, then ``fstat`` + ``stat``: the
   file still has the path (eviction did not unlink it between the two) and the size the manifest
   gives it;
2. its verification record (``user.artfs.verified``, see :mod:`artfs._cache`) matches ``fstat``:
   the bytes are the ones hashed when the blob was inserted;
3. its atime is renewed for the cache's LRU eviction (at most once a minute per blob).

Any other outcome (missing, locked for eviction, record stale or absent, wrong size) answers None
and the caller takes the general path, which re-hashes, drops or fetches as it always did: this
module only ever serves a blob that passed 1 and 2. The descriptor becomes ``OpenFile.fast``
(passthrough's backing file, or ``preadv(RWF_NOWAIT)`` reads on the loop); it holds the shared
``flock``, so the blob cannot be evicted while the file is open. A read that must wait for the
disk (no passthrough, pages not cached) reads that descriptor in a worker thread
(:meth:`artfsd.openfiles.OpenFile.read_blocking`); the lazy reader's handle is opened only if that
fails (:class:`DeferredHandle`, in the worker thread), so a file costs no thread at open and
release.

A small blob missing from the cache (:data:`artfsd.prefetch.SMALL`) is waited for on the loop if
the directory's prefetch is fetching it already (:meth:`SmallBlobs.wait`), else fetched in one
worker thread (one GET, verified, see :mod:`artfsd.prefetch`), and then opened as above.

Releasing a file opened here closes its descriptor on the loop; only a file whose lazy handle was
opened (it had a blocking read) is closed in a worker thread, as the lazy reader may block.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from typing import Any, Callable

import trio

from artfs.lowlevel import stamp_ok

from .errors import Timeout
from .prefetch import SMALL, SmallBlobs

log = logging.getLogger("artfsd")

#: a blob's atime (its recency for eviction) is renewed at most this often (seconds)
TOUCH_EVERY = 60.0


def open_verified(path: str, size: int, digest: str) -> int:
    """A read-only descriptor of the cache blob at ``path`` if it may be served as it is, else -1.

    Never blocks on a lock (``LOCK_NB``) and reads only metadata (one ``fstat`` serves the size,
    the record and the atime checks). The descriptor holds a shared ``flock``: the blob is not
    evicted while it is open.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        st = os.fstat(fd)
        if st.st_size != size or not os.path.samestat(st, os.stat(path)) or not stamp_ok(fd, digest, st):
            os.close(fd)
            return -1
        if time.time() - st.st_atime > TOUCH_EVERY:  # recency for LRU; the mtime is the record's
            os.utime(fd, ns=(time.time_ns(), st.st_mtime_ns))
    except OSError:
        os.close(fd)
        return -1
    return fd


class DeferredHandle:
    """The lazy reader's handle of a complete blob, opened only when a read needs it.

    With passthrough no read reaches the daemon; otherwise reads are served from ``OpenFile.fast``
    (on the loop from the page cache, else in a worker thread); only a read of that descriptor
    that fails opens the lazy reader's handle here, which re-checks the blob and reports the error.
    """

    __slots__ = ("_blobs", "_project", "_digest", "_size", "_h", "_lock")

    def __init__(self, blobs: Any, project: str, digest: str, size: int) -> None:
        self._blobs = blobs
        self._project, self._digest, self._size = project, digest, size
        self._h: Any = None
        self._lock = threading.Lock()

    @property
    def opened(self) -> bool:
        return self._h is not None

    def read(self, offset: int, length: int) -> bytes:
        """Blocking: call in a worker thread."""
        h = self._h
        if h is None:
            with self._lock:
                if self._h is None:
                    self._h = self._blobs.open(self._project, self._digest, self._size)
                h = self._h
        data: bytes = h.read(offset, length)
        return data

    def close(self) -> None:
        h, self._h = self._h, None
        if h is not None:
            h.close()


class CompleteOpens:
    """Opens of complete, verified cache blobs on the loop (see the module docstring).

    ``file_type`` builds the open file: ``file_type(vdir, tree, node, size, digest, handle,
    cache_path)``, whose ``fast`` attribute gets the descriptor (``artfsd.fs.OpenFile``).
    """

    def __init__(self, cache: Any, blobs: Any, small: SmallBlobs, *, timeout: float,
                 limiter: trio.CapacityLimiter, file_type: Callable[..., Any]) -> None:
        self.cache = cache
        self.blobs = blobs
        self.small = small
        self.timeout = timeout
        self.limiter = limiter
        self.file_type = file_type
        self.stats = {"loop_opens": 0}

    async def open(self, vdir: Any, tree: Any, node: int, size: int, digest: str | None) -> Any:
        """The open file if its blob is (or, for a small one, could be made) complete and verified;
        None: take the general path. Raises what fetching a small blob raised (the store's error)."""
        if digest is None or size <= 0:
            return None
        path = self.cache.path(digest)
        fd = open_verified(path, size, digest)
        warm = fd >= 0
        if fd < 0 and size <= SMALL:
            if await self.small.wait(digest):  # the directory's prefetch was fetching it
                fd = open_verified(path, size, digest)
            if fd < 0:
                project = vdir.key[0]
                fetched = False
                with trio.move_on_after(self.timeout + 1.0):
                    await trio.to_thread.run_sync(self.small.ensure, project, digest, size,
                                                  limiter=self.limiter, abandon_on_cancel=True)
                    fetched = True
                if not fetched:
                    raise Timeout(f"open {vdir.spec}/{tree.path(node)}: the store did not deliver the file "
                                  f"within {self.timeout:g} s")
                fd = open_verified(path, size, digest)
        if fd < 0:
            return None
        try:
            f = self.file_type(vdir, tree, node, size, digest, DeferredHandle(self.blobs, vdir.key[0], digest, size),
                               path)
        except BaseException:
            os.close(fd)
            raise
        f.fast = fd
        f.warm = warm
        self.stats["loop_opens"] += 1
        return f

    async def close(self, f: Any) -> None:
        """Close an open file of a version: on the loop unless its lazy handle may block."""
        h = f.handle
        if h is None or (h.__class__ is DeferredHandle and not h.opened):
            f.close()  # a descriptor: close(2) of a regular file does not wait
            return
        await trio.to_thread.run_sync(f.close, limiter=self.limiter)
