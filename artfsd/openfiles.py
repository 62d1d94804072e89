"""Open files of version trees: their open, read and release, each file one handle of the lazy reader.

:class:`VersionFiles` is the open, read and release of a file of ``vN/``
(:class:`artfsd.versions.VersionHandler` hands those three requests to it, and nothing else
serves them). Each open file is an :class:`OpenFile`: where it is in the mount, and exactly one
handle of its bytes: a :class:`artfs.lowlevel.LazyBlobs` handle (``BlobHandle``, with its one
descriptor of the blob: its own for a complete blob, the blob's shared entry otherwise), or
the reader of an unpinned reference. Whether a cache blob may be served as it is, how a blob is
fetched (chunks, read-ahead, small blobs whole, a directory's prefetch) and the one registry of
fetches in flight all belong to the lazy reader and the cache (:mod:`artfs._lazy`,
:meth:`artfs.Cache.open_verified`); what is left here is what only the daemon knows: the event
loop, the kernel's passthrough, the timeout of a request, and when to prefetch.

Opening, cheapest first
    A training epoch opens thousands of small files, and the daemon is one Python process: what
    an open costs in CPU is what limits the epoch. So:

    1. a blob complete and verified in the cache opens **on the event loop**
       (``LazyBlobs.open_complete``: ``open`` + ``flock(LOCK_SH | LOCK_NB)``, one ``fstat``, the
       verification record; no worker thread, cheaper than the two hand-offs to a thread and
       back for the open and the release);
    2. a small blob (``LazyBlobs.small_max``) missing from the cache whose whole fetch is in
       flight (the directory's prefetch) is waited for on the loop (:func:`artfsd.prefetch.wait_for`),
       else fetched whole in one worker thread (``LazyBlobs.fetch_whole``: one GET, verified), and
       then opened as in 1;
    3. anything else opens in a worker thread (``LazyBlobs.open``: a stale record hashed again, a
       changed blob dropped, the chunked entry of a blob being fetched), within ``--timeout``.

    The first open of a small file of a directory that was not in the cache asks the lazy reader
    to prefetch the directory's other small files (:class:`artfsd.prefetch.DirPrefetch`, once per
    directory; never on a hit: an epoch over a warm cache starts none).

Reading
    A read whose bytes are in the page cache is served on the loop (``readinto_nowait``:
    ``preadv(RWF_NOWAIT)`` of the blob, or of the chunks already fetched; it never blocks), as
    the thread hop costs more than the copy; any other read runs the handle's ``read`` in a worker
    thread. A complete blob can instead back the file in the kernel (passthrough,
    :mod:`artfsd.kernel`, from the handle's ``fd``): its reads and mmap never reach the daemon.

Releasing
    On the loop for a handle of its own descriptor (``close(2)`` of a regular file does not
    wait); in a worker thread for one sharing an entry, whose close takes the reader's locks.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pyfuse3
import trio

from artfs import PermissionDenied
from artfs.lowlevel import LazyBlobs, is_pinned

from .errors import Timeout, errno_for
from .handler import Mount
from .kernel import Backings
from .nodes import VersionDir
from .prefetch import DirPrefetch, wait_for
from .tree import VersionTree

RETRY_AFTER = 0.5  # seconds during which a read of bytes that just failed fails again at once


class OpenFile:
    """One open file of a version tree: where it is, and its one handle (None for an empty file)."""

    __slots__ = ("vdir", "tree", "node", "size", "digest", "handle", "failed", "inode", "warm")

    def __init__(self, vdir: VersionDir, tree: VersionTree, node: int, size: int, digest: str | None,
                 handle: Any, *, warm: bool = False) -> None:
        self.vdir = vdir
        self.tree = tree
        self.node = node
        self.size = size
        self.digest = digest
        self.handle = handle  # artfs._lazy.BlobHandle or RefReads; None for an empty file
        self.failed: tuple[float, int, int, int] | None = None  # (when, start, end, errno) of the last failed read
        self.inode = 0  # > 0 once registered with the mount's Backings (released with the handle)
        self.warm = warm  # its blob was complete in the cache when it was opened (nothing fetched)

    @property
    def what(self) -> str:
        return f"{self.vdir.spec}/{self.tree.path(self.node)}"

    def read_nowait(self, off: int, length: int, buf: bytearray) -> memoryview | None:
        """The bytes if the page cache has them all, else None (never blocks). Fills ``buf``."""
        view = memoryview(buf)[:length]
        return view if self.handle.readinto_nowait(off, view) == length else None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def open_reference(reader: Any, blobs: LazyBlobs, v: VersionDir, tree: VersionTree, node: int,
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
        return OpenFile(v, tree, node, size, None, blobs.open_unpinned(reader, ref) if size else None)
    if not ref.size:
        return OpenFile(v, tree, node, 0, ref.digest, None)
    return OpenFile(v, tree, node, ref.size, ref.digest, blobs.open_ref(v.key[0], ref, reader))


class VersionFiles:
    """The open, read and release of files of version trees (the module docstring)."""

    def __init__(self, m: Mount, blobs: LazyBlobs, *, refs: Callable[[], Any], backings: Backings) -> None:
        self.m = m
        self.ns = m.ns
        self.blobs = blobs
        self.read_limiter = trio.CapacityLimiter(m.config.read_threads)
        self.ref_reader = refs  # the mount's RefReader (its file:// options), made on first use
        self.backings = backings  # passthrough registrations (artfsd/kernel.py)
        # ARTFS_PREFETCH=0 / prefetch off: no background fetch of a directory's small files
        self.prefetch = DirPrefetch(blobs) if m.config.prefetch else None
        self.stats = {"loop_opens": 0}
        self._buf = bytearray(0)

    async def open(self, v: VersionDir, tree: VersionTree, node: int, inode: int, ctx: Any,
                   fh: int) -> tuple[OpenFile, pyfuse3.FileInfo]:
        size = tree.sizes[node]
        digest = tree.digest(node)
        ref = tree.refs.get(node)
        blobs = self.blobs
        f: OpenFile | None = None
        if not size and ref is None:
            f = OpenFile(v, tree, node, 0, digest, None)
        elif ref is None:
            assert digest is not None
            f = await self._open_on_loop(v, tree, node, size, digest)  # None: in a worker thread
        if f is None:
            def open_blob() -> OpenFile:
                if ref is not None:  # bytes that stay elsewhere, read pinned to what was recorded
                    return open_reference(self.ref_reader(), blobs, v, tree, node, ref)
                assert digest is not None
                return OpenFile(v, tree, node, size, digest, blobs.open(v.key[0], digest, size))

            with trio.move_on_after(self.m.timeout + 1.0):
                f = await trio.to_thread.run_sync(open_blob, limiter=self.read_limiter, abandon_on_cancel=True)
        if f is None:
            raise Timeout(f"open {v.spec}/{tree.path(node)}: the cache did not answer within {self.m.timeout:g} s")
        if self.prefetch is not None and not f.warm and ref is None and 0 < size <= blobs.small_max:
            # a small file of this directory was not in the cache: fetch its small siblings ahead
            # of the reader (not on a hit: an epoch over a warm cache would have the prefetch stat
            # every sibling's blob for nothing)
            self.prefetch.start(v, tree, tree.file_dir(node))
        self.ns.opened(v, +1)
        self.m.stats["opens"] += 1
        if ctx is not None:  # once per open, never per read: a dict and a set lookup once known
            self.m.lineage.opened(ctx.pid, v.key)
        h = f.handle
        if h is not None and h.uncached:  # an unpinned reference: whatever is there now
            return f, pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        if h is not None:
            # A complete, verified blob backs the file in the kernel (artfsd/kernel.py): reads
            # and mmap never reach the daemon. Otherwise (or when this inode has cached handles
            # open) the chunked path of read().
            f.inode = inode
            bid = self.backings.open(inode, h.fd)
            if bid:  # the kernel accepts no other open flag with passthrough (FOPEN_PASSTHROUGH_MASK)
                return f, pyfuse3.FileInfo(fh=fh, keep_cache=False, backing_id=bid)  # type: ignore[call-arg,unused-ignore]
            if size <= blobs.small_max:  # read whole right after the open: have the disk start now
                h.will_need()
        return f, pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def _open_on_loop(self, v: VersionDir, tree: VersionTree, node: int, size: int,
                            digest: str) -> OpenFile | None:
        """The open file if its blob is (or, for a small one, could be made) complete and verified,
        opened on the loop; None: open it in a worker thread. Raises what fetching a small blob
        raised (the store's error)."""
        blobs = self.blobs
        project = v.key[0]
        h = blobs.open_complete(project, digest, size)
        warm = h is not None
        if h is None and size <= blobs.small_max:
            job = blobs.flight(digest)
            if job is not None:  # the directory's prefetch is fetching it: wait here, not in a thread
                await wait_for(job, self.m.timeout)
                h = blobs.open_complete(project, digest, size)
            if h is None:
                fetched = False
                with trio.move_on_after(self.m.timeout + 1.0):
                    await trio.to_thread.run_sync(blobs.fetch_whole, project, digest, size,
                                                  limiter=self.read_limiter, abandon_on_cancel=True)
                    fetched = True
                if not fetched:
                    raise Timeout(f"open {v.spec}/{tree.path(node)}: the store did not deliver the file "
                                  f"within {self.m.timeout:g} s")
                h = blobs.open_complete(project, digest, size)
        if h is None:
            return None
        self.stats["loop_opens"] += 1
        return OpenFile(v, tree, node, size, digest, h, warm=warm)

    async def read(self, f: OpenFile, off: int, size: int) -> bytes:
        if off >= f.size or size <= 0 or f.handle is None:
            return b""
        length = min(size, f.size - off)
        stats = self.m.stats
        stats["reads"] += 1
        if f.failed is not None:
            # When a read-ahead request fails, the kernel retries the first page at once with a
            # request of its own; failing that retry fast keeps the caller's wait within --timeout.
            when, start, end, code = f.failed
            if time.monotonic() - when < RETRY_AFTER and start <= off < end:
                stats["read_errors"] += 1
                raise pyfuse3.FUSEError(code)
        if len(self._buf) < length:
            self._buf = bytearray(length)
        # One buffer serves every fast read: pyfuse3 copies it into its reply before any other
        # task runs (there is no checkpoint between this return and the reply).
        fast = f.read_nowait(off, length, self._buf)
        if fast is not None:
            stats["read_bytes"] += length
            return fast  # type: ignore[return-value,unused-ignore]  # pyfuse3 takes any buffer
        try:
            with trio.move_on_after(self.m.timeout + 5.0):
                data: bytes = await trio.to_thread.run_sync(f.handle.read, off, length,
                                                            limiter=self.read_limiter, abandon_on_cancel=True)
                stats["read_bytes"] += len(data)
                return data
            raise Timeout(f"the store did not deliver the bytes within {self.m.timeout:g} s")
        except Exception as e:
            stats["read_errors"] += 1
            code = errno_for(e, f"read {f.what} [{off}:{off + length}]")
            f.failed = (time.monotonic(), off, off + length, code)
            raise pyfuse3.FUSEError(code) from None

    async def release(self, f: OpenFile) -> None:
        self.ns.opened(f.vdir, -1)
        if f.inode:
            self.backings.release(f.inode)
        h = f.handle
        if h is None:
            return
        try:
            if h.blocking_close:  # it shares an entry: the lazy reader's locks
                await trio.to_thread.run_sync(f.close, limiter=self.read_limiter)
            else:
                f.close()  # a descriptor: close(2) of a regular file does not wait
        except Exception as e:
            errno_for(e, f"close {f.what}")

