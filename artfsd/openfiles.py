"""Open files of version trees: a lazy blob or reference reader, and the fast path of complete blobs.

:class:`OpenFile` is what :meth:`artfsd.versions.VersionHandler.open` hands the router for a file
of ``vN/``; :func:`open_reference` opens a reference entry (bytes that stay where they are, each
fetch pinned to what was recorded); :class:`RefHandle` reads an unpinned one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Any

from artfs import PermissionDenied
from artfs.lowlevel import is_pinned, stamp_ok

from .nodes import VersionDir
from .tree import VersionTree

READ_AHEAD = 64 << 20  # bytes of a complete cache blob hinted ahead of a sequential reader


class OpenFile:
    """One open file of a version tree: a lazy blob handle, plus a fast path once the blob is complete.

    Once the blob is a complete, verified cache file, reads try ``preadv(RWF_NOWAIT)`` on it right
    on the trio loop: served from the page cache without a thread hop (which costs more than the
    copy), and never blocking, since RWF_NOWAIT refuses to wait for the disk. A read that must
    wait for the disk reads the same descriptor in a worker thread (:meth:`read_blocking`), never
    the lazy reader, whose handle would cost an open and a close in threads per file: the blob is
    verified and locked already. Sequential readers get the cache file read ahead by the kernel
    (``POSIX_FADV_WILLNEED``, :meth:`_hint`), so the disk streams instead of answering one request
    after the other. Blobs still being fetched go through the lazy reader in a worker thread.
    The fast fd holds a shared ``flock`` like every user of a cache blob, so eviction leaves it alone.
    """

    __slots__ = ("vdir", "tree", "node", "size", "digest", "handle", "failed", "fast", "_cache_path", "inode", "warm",
                 "_h_end", "_h_to")

    def __init__(self, vdir: VersionDir, tree: VersionTree, node: int, size: int, digest: str | None,
                 handle: Any, cache_path: str | None) -> None:
        self.vdir = vdir
        self.tree = tree
        self.node = node
        self.size = size
        self.digest = digest
        self.handle = handle  # artfs._lazy.BlobHandle, None for empty files
        self.failed: tuple[float, int, int, int] | None = None  # (when, start, end, errno) of the last failed read
        self.fast = -1
        self._cache_path = cache_path
        self.inode = 0  # > 0 once registered with the mount's Backings (released with the handle)
        self.warm = False  # its blob was complete in the cache when it was opened (nothing fetched)
        self._h_end = 0  # end of the furthest sequential read of the cache file (read-ahead hints)
        self._h_to = 0  # the cache file is hinted (WILLNEED) up to here

    @property
    def what(self) -> str:
        return f"{self.vdir.spec}/{self.tree.path(self.node)}"

    def attach_complete(self) -> None:
        """Use the complete cache blob for the fast path if it exists (blocking: call in a thread)."""
        if self.fast >= 0 or self._cache_path is None or not os.path.exists(self._cache_path):
            return
        try:
            fd = os.open(self._cache_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            # unchanged since it was verified (its record, see artfs._cache): else the lazy reader,
            # which re-verifies or drops it, serves the reads
            if (os.fstat(fd).st_size == self.size and os.path.samestat(os.fstat(fd), os.stat(self._cache_path))
                    and self.digest is not None and stamp_ok(fd, self.digest)):
                self.fast, fd = fd, -1
        except OSError:
            pass
        finally:
            if fd >= 0:
                os.close(fd)

    def read_nowait(self, off: int, length: int, buf: bytearray) -> memoryview | None:
        """The bytes if the page cache has them all, else None (never blocks). Fills ``buf``."""
        if self.fast < 0:  # not complete yet: chunks already fetched are served the same way
            nowait = getattr(self.handle, "readinto_nowait", None)
            n = nowait(off, memoryview(buf)[:length]) if nowait is not None else None
            return memoryview(buf)[:length] if n == length else None
        try:
            n = os.preadv(self.fast, [memoryview(buf)[:length]], off, os.RWF_NOWAIT)
        except OSError:  # EAGAIN: not (all) in the page cache; anything else: let the slow path say
            return None
        if n != length:
            return None
        return memoryview(buf)[:length]

    def read_blocking(self, off: int, length: int) -> bytes:
        """Blocking (a worker thread): from the complete blob's descriptor, else the lazy reader."""
        fd = self.fast
        if fd >= 0:
            try:
                data = os.pread(fd, length, off)
            except OSError:
                data = b""  # the lazy reader reports it as an artfs error
            if len(data) == length:
                self._hint(fd, off, off + length)
                return data
        slow: bytes = self.handle.read(off, length)
        if self.fast < 0:
            self.attach_complete()
        return slow

    def will_need(self) -> None:
        """Start reading a small complete blob into the page cache (at open, without passthrough):
        its one read then finds the bytes there, on the event loop, instead of in a thread."""
        if self.fast >= 0:
            with contextlib.suppress(OSError):
                os.posix_fadvise(self.fast, 0, self.size, os.POSIX_FADV_WILLNEED)
            self._h_to = self.size

    def _hint(self, fd: int, offset: int, end: int) -> None:
        """Have the kernel read the cache file ``READ_AHEAD`` bytes ahead of a sequential reader,
        the next ones once it is half-way through them (a random read hints nothing)."""
        if offset == 0 or self._h_end - (4 << 20) <= offset <= self._h_end + (4 << 20):
            self._h_end = max(self._h_end, end)
        else:
            self._h_end = self._h_to = end
            return
        if self._h_to - end >= READ_AHEAD // 2:
            return
        start, stop = max(self._h_to, end), min(self.size, end + READ_AHEAD)
        self._h_to = stop
        if stop > start:
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, start, stop - start, os.POSIX_FADV_WILLNEED)

    def close(self) -> None:
        if self.fast >= 0:
            os.close(self.fast)
            self.fast = -1
        if self.handle is not None:
            self.handle.close()


class RefHandle:
    """Reads of an unpinned reference entry (``checksum=False``), straight from where it lives:
    whatever is there now, so never cached (the file is opened with ``direct_io``)."""

    def __init__(self, reader: Any, entry: Any) -> None:
        self.reader = reader
        self.entry = entry

    def read(self, offset: int, length: int) -> bytes:
        data: bytes = self.reader.read_range(self.entry, offset, length)
        return data

    def close(self) -> None:
        pass


def open_reference(reader: Any, blobs: Any, cache: Any, v: VersionDir, tree: VersionTree, node: int,
                   ref: Any) -> OpenFile:
    """Open a reference entry (blocking: call in a worker thread).

    ``file://`` outside the mount's ``--allow-file``/``--file-root`` fails first (EACCES), before
    anything could be served from the cache. A pinned reference reads through the lazy reader and
    the cache like a blob (``LazyBlobs.open_ref``: chunks, read-ahead; every fetch pinned to what
    was recorded, so a changed object gives EIO); an unpinned one reads whatever is there now.
    """
    try:
        reader.check_allowed(ref)
    except PermissionDenied as e:
        raise PermissionDenied(
            f"{v.spec}/{tree.path(node)}: {e} (a mount needs --allow-file or --file-root DIR)") from None
    if not is_pinned(ref):
        size = reader.size(ref)
        return OpenFile(v, tree, node, size, None, RefHandle(reader, ref) if size else None, None)
    if not ref.size:
        return OpenFile(v, tree, node, 0, ref.digest, None, None)
    handle = blobs.open_ref(v.key[0], ref, reader)
    f = OpenFile(v, tree, node, ref.size, ref.digest, handle, cache.path(ref.digest) if ref.digest else None)
    f.attach_complete()
    return f

