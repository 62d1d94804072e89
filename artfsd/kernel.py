"""What the kernel can do for the mount without the daemon: cached listings and passthrough.

Two FUSE features take whole classes of requests away from this (Python, one-threaded) daemon:

* **Cached directory listings** (``FOPEN_CACHE_DIR``): the kernel keeps a directory's listing
  after one complete ``readdir`` and answers the next ones itself. With a pyfuse3 that names the
  directory in ``readdir`` (``ReaddirToken.inode``, patches/pyfuse3-3.5.0-readdir-inode.patch),
  the daemon answers the first ``opendir`` with ENOSYS: the kernel then sends no OPENDIR or
  RELEASEDIR for the rest of the mount (FUSE_NO_OPENDIR_SUPPORT) and opens every directory with
  ``FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR`` (``no_opendir``), so a repeated ``find`` reaches the
  daemon not at all. Otherwise only version directories are opened with ``cache_readdir``.
  What keeps a cached listing true (fs/fuse/readdir.c, ``fuse_readdir_cached``): a read from
  offset 0 first refreshes the directory's attributes if they expired and drops the cached
  listing when the mtime or the inode's change counter moved. Version trees never change; a
  draft's directories are changed only through the mount (each create/unlink/rename moves the
  counter in the kernel) or by the daemon, which reports the new mtime; a listing directory
  (root, project, artifact) has a 1 s attribute timeout, re-lists itself on ``getattr`` when its
  listing is stale (as ``opendir`` did), and reports as mtime the time its names last changed
  (:meth:`artfsd.listing.ListingHandler.entry`).
* **Passthrough** (``FOPEN_PASSTHROUGH``, Linux >= 6.9, libfuse >= 3.16, CAP_SYS_ADMIN): an open
  file of a version whose blob is complete and verified in the cache is backed by that cache
  file; ``read``, ``splice`` and ``mmap`` then go to it in the kernel, at the speed of the
  cache file, and no read reaches the daemon. Blobs still being filled keep the chunked path.
* **Cached symlinks** (``FUSE_CACHE_SYMLINKS``, Linux >= 4.20, libfuse >= 3.10): the kernel keeps
  an alias symlink's target (``latest -> v3``) in its page cache, so a path walk through
  ``MNT/p/a/latest/...`` sends no READLINK. The target changes when the alias moves: the
  listings then invalidate the link's inode (its page and attributes) before the refresh that
  saw the move completes, and its entry (:mod:`artfsd.listings`), so a moved alias shows within
  the refresh interval, as without the cache.

* **Spliced reads** (``FUSE_CAP_SPLICE_WRITE``, any kernel libfuse can splice to): a read the
  daemon serves from a complete, verified cache blob (passthrough off or refused) is answered
  with the file range ``(fd, offset, length)`` instead of bytes, and libfuse splices it from the
  cache file's page cache into ``/dev/fuse`` (patches/pyfuse3-3.5.0-zero-copy-reads.patch): one
  copy in the kernel instead of two through Python. The reply is sent on the event loop, so
  :class:`SplicedReads` first makes sure the range is in memory (a worker thread reads it into
  the page cache with ``sendfile`` to ``/dev/null``, no copy, and hints the next 64 MiB of a
  sequential reader), and only then answers.

These need a pyfuse3 that can ask for them: stock pyfuse3 3.5 cannot (``opendir`` returns only a
handle, ``FileInfo`` has no backing id, ``init`` asks for no symlink cache, ``read`` must return
bytes). ``artfs build-fuse``
builds pyfuse3 with ``artfs/_fusebuild/patches/pyfuse3-3.5.0-*.patch`` (kernel-cache,
readdir-inode, symlink-cache, zero-copy-reads; against libfuse 3.17 built from Debian's source package when the
system's is older). ``-o no_passthrough`` turns passthrough off (``turned off (-o
no_passthrough)`` in the stats), so the ordinary path can be tested and measured on a machine
that has passthrough. Everything here degrades: with stock pyfuse3, an older
libfuse or kernel, or without CAP_SYS_ADMIN, :func:`probe` says what is missing, the daemon logs
it once and reports it in ``user.artfs.stats``, and every request takes the ordinary path.

The kernel's rule for passthrough (fs/fuse/iomode.c): while an inode has a file open in
passthrough mode, it cannot be opened in cached mode (ETXTBSY), and all its passthrough opens
must use the same backing file; while it has cached opens, a passthrough open fails. So
:class:`Backings` keeps, per inode, either one backing id with the number of handles using it,
or the number of cached handles, never both: an open takes whichever mode the inode is in, and
only an inode with no open handle can change mode.

Invariant: a backing id is closed (``backing_close``) only after the last handle that used it
was released; the backing fd holds a shared ``flock`` on the cache blob (like every user of a
blob), so the cache's size bound never evicts a blob that backs an open file, and the kernel's
own reference keeps the bytes even if the file is unlinked.

Measured and left as it is (docs/benchmarks.md, warm epochs): a second open of an inode already in
passthrough checks its blob again (:mod:`artfsd.complete`) before sharing the backing id,
because that check is what keeps a blob changed since the first open from being served to a new
reader, and an epoch never opens one file twice at a time, so skipping it would save nothing
there. Keeping a backing id registered past the last release (the kernel allows it: the id
lives until ``backing_close``) would hold the blob open and locked against eviction and still
save no request: OPEN and RELEASE reach the daemon either way.

The patched pyfuse3 also answers requests faster (its session loop takes a request already
queued without waiting for the fd to become readable); nothing here depends on that.
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass, field
from typing import Any

import pyfuse3

log = logging.getLogger("artfsd")


@dataclass
class Features:
    """What this daemon can use, and why not where it cannot."""

    cache_readdir: bool = False
    no_opendir: bool = False  # opendir answered ENOSYS: every listing cached, readdir gets fh 0
    passthrough: bool = False
    cache_symlinks: bool = False  # the kernel keeps alias symlinks' targets (invalidated on a move)
    spliced_reads: bool = False  # reads of complete blobs answered with a file range, spliced by libfuse
    why_not: dict[str, str] = field(default_factory=dict)

    def doc(self) -> dict[str, Any]:
        return {"cache_readdir": self.cache_readdir, "no_opendir": self.no_opendir,
                "passthrough": self.passthrough, "cache_symlinks": self.cache_symlinks,
                "spliced_reads": self.spliced_reads,
                **({"unavailable": dict(self.why_not)} if self.why_not else {})}


def build_features() -> dict[str, bool]:
    """What the installed pyfuse3 can ask for (before ``init``)."""
    probe_fn = getattr(pyfuse3, "kernel_features", None)
    if probe_fn is None:
        return {"cache_readdir": False, "passthrough": False, "passthrough_enabled": False}
    return dict(probe_fn())


def probe(*, want_passthrough: bool = True, want_no_opendir: bool = True, off_by: str = "",
          want_spliced_reads: bool = True) -> Features:
    """What the running session can use (call after ``pyfuse3.init``, once the kernel answered).

    ``off_by``: what turned passthrough off when not ``want_passthrough`` (``-o no_passthrough``).
    ``want_spliced_reads``: False with ``ARTFS_SPLICED_READS=0`` (every read through Python).
    """
    built = build_features()
    f = Features()
    if built.get("cache_readdir"):
        f.cache_readdir = True
    else:
        f.why_not["cache_readdir"] = "pyfuse3 without the kernel-cache patch (run `artfs build-fuse`)"
    if not want_no_opendir:
        f.why_not["no_opendir"] = "turned off"
    elif built.get("readdir_inode"):
        f.no_opendir = True
    else:
        f.why_not["no_opendir"] = "pyfuse3 without the readdir-inode patch (run `artfs build-fuse`)"
    if not want_passthrough:
        f.why_not["passthrough"] = f"turned off ({off_by or 'by the daemon'})"
    elif not built.get("passthrough"):
        if "kernel_features" not in dir(pyfuse3):
            f.why_not["passthrough"] = "pyfuse3 without the kernel-cache patch (run `artfs build-fuse`)"
        else:
            f.why_not["passthrough"] = "pyfuse3 was built against libfuse < 3.16"
    elif not built.get("passthrough_enabled"):
        f.why_not["passthrough"] = ("the kernel did not offer it (needs Linux >= 6.9 and the daemon "
                                    "running with CAP_SYS_ADMIN)")
    else:
        f.passthrough = True
    if built.get("cache_symlinks_enabled"):
        f.cache_symlinks = True
    elif "cache_symlinks" not in built:
        f.why_not["cache_symlinks"] = "pyfuse3 without the symlink-cache patch (run `artfs build-fuse`)"
    elif not built["cache_symlinks"]:
        f.why_not["cache_symlinks"] = "pyfuse3 was built against libfuse < 3.10"
    else:
        f.why_not["cache_symlinks"] = "the kernel did not offer it (needs Linux >= 4.20)"
    if not want_spliced_reads:
        f.why_not["spliced_reads"] = "turned off (ARTFS_SPLICED_READS=0)"
    elif not built.get("read_fd"):
        f.why_not["spliced_reads"] = "pyfuse3 without the zero-copy-reads patch (run `artfs build-fuse`)"
    elif not built.get("splice_write_enabled"):
        f.why_not["spliced_reads"] = "the kernel did not offer splice (FUSE_CAP_SPLICE_WRITE)"
    else:
        f.spliced_reads = True
    return f


#: a read request's largest size (max_pages = 256), and libfuse's room for its reply in the pipe
MAX_REQUEST = 1 << 20
_REPLY_EXTRA = 3 * 4096 + 16  # fuse_send_data_iov: pagesize * (header iov + buffer + 1) + the header


def splice_max_read() -> int:
    """The ``max_read=`` a mount needs so that libfuse can splice every read reply, 0 if none.

    libfuse splices a reply through a pipe that holds it whole plus three pages; it grows its
    pipe with ``F_SETPIPE_SZ``, which above ``fs.pipe-max-size`` (1 MiB by default) needs
    CAP_SYS_RESOURCE, and copies every reply through a buffer of its own (slower than the
    daemon's own path) when the pipe stays too small. Measured here the same way: a pipe is
    grown to what a 1 MiB reply needs; if that is refused, reads are limited to what the
    largest pipe allowed holds (1008 KiB with the default limit).
    """
    import fcntl

    need = MAX_REQUEST + _REPLY_EXTRA
    r, w = os.pipe()
    try:
        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, need)
        return 0
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        limit = 1 << 20
    return max(64 << 10, (limit - _REPLY_EXTRA) // 4096 * 4096)


def passthrough_likely(wanted: bool) -> bool:
    """Whether passthrough will be on, as far as can be told before ``init`` (asked for, a build
    that can, Linux >= 6.9, root): then complete blobs never reach the daemon."""
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return bool(wanted and build_features().get("passthrough") and os.geteuid() == 0 and (major, minor) >= (6, 9))


def spliced_reads_wanted() -> bool:
    """``ARTFS_SPLICED_READS=0`` turns spliced reads off (to measure the path through Python)."""
    return os.environ.get("ARTFS_SPLICED_READS", "1") != "0"


def mapped_reads_wanted() -> bool:
    """``ARTFS_MAPPED_READS=0`` turns mapped reads off (to measure the path through Python)."""
    return os.environ.get("ARTFS_MAPPED_READS", "1") != "0"


@dataclass
class _Mode:
    backing_id: int = 0  # > 0: the inode is in passthrough mode with this backing file
    users: int = 0  # handles open in the current mode


class Backings:
    """Per inode: passthrough (one backing id, shared by its handles) or cached opens."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._modes: dict[int, _Mode] = {}
        self.stats = {"passthrough_opens": 0, "passthrough_refused": 0}

    def open(self, inode: int, fd: int) -> int:
        """A backing id for a new handle of ``inode`` served from the complete blob ``fd``, or 0.

        0 means: open it in cached mode (passthrough is off, the inode has cached opens, or the
        kernel refused the backing file). Pair every call with :meth:`release` of the same
        inode and the returned id.
        """
        m = self._modes.get(inode)
        if m is not None and m.backing_id == 0:  # cached opens active: stay cached
            m.users += 1
            return 0
        if m is not None:
            m.users += 1
            self.stats["passthrough_opens"] += 1
            return m.backing_id
        if not self.enabled or fd < 0:
            self._modes[inode] = _Mode(0, 1)
            return 0
        try:
            bid = int(pyfuse3.backing_open(fd))  # type: ignore[attr-defined,unused-ignore]
        except OSError as e:
            self.stats["passthrough_refused"] += 1
            log.warning("passthrough refused for inode %d (%s); reading it through the daemon", inode,
                        os.strerror(e.errno) if e.errno else e)
            self._modes[inode] = _Mode(0, 1)
            return 0
        self._modes[inode] = _Mode(bid, 1)
        self.stats["passthrough_opens"] += 1
        return bid

    def cached(self, inode: int) -> bool:
        """Whether a new handle of ``inode`` must be a cached one (cached handles are open)."""
        m = self._modes.get(inode)
        return m is not None and m.backing_id == 0

    def in_passthrough(self, inode: int) -> bool:
        m = self._modes.get(inode)
        return m is not None and m.backing_id > 0

    def release(self, inode: int) -> None:
        m = self._modes.get(inode)
        if m is None:
            return
        m.users -= 1
        if m.users > 0:
            return
        del self._modes[inode]
        if m.backing_id > 0:
            try:
                pyfuse3.backing_close(m.backing_id)  # type: ignore[attr-defined,unused-ignore]
            except OSError as e:  # the session is gone (unmounted): nothing left to release
                log.debug("backing_close(%d): %s", m.backing_id, e)

    def __len__(self) -> int:
        return sum(1 for m in self._modes.values() if m.backing_id > 0)


#: bytes of a complete cache blob hinted (POSIX_FADV_WILLNEED) ahead of a sequential reader
SPLICE_READ_AHEAD = 64 << 20
_PAGE = 4096


class CompleteReads:
    """Reads of complete, verified cache blobs the daemon serves, with one copy instead of two.

    Two ways, chosen at init (:attr:`mode`): ``splice`` (the zero-copy-reads patch, the kernel
    granted splice): the answer is the cache file's range ``(fd, offset, length)``, which libfuse
    splices from the page cache into ``/dev/fuse``; ``map`` (any pyfuse3, stock included): the
    answer is a ``memoryview`` of the cache file mapped read-only, which pyfuse3 writes to
    ``/dev/fuse`` straight from the page cache (the kernel's one copy; the pages are mapped by
    fault-around, 16 at a time). ``map`` serves files larger than :data:`MAPPED_MIN` only: below,
    a mapping costs more than the copy it saves (``mmap``/``munmap`` per file of an epoch).

    Both are answered on the event loop, so the range must be in memory first. :meth:`ready`
    says whether it can be answered at once: both its first and its last page are in the page
    cache (``preadv(RWF_NOWAIT)`` of one byte each; read-ahead fills a range in order, so a page
    missing between them is rare, and then the reply waits for the disk on the loop, as a read
    of any local file would) and no read-ahead hint is due. Otherwise :meth:`fill` (a worker
    thread) hints the cache file ahead of a sequential reader and reads the range into the page
    cache without copying it (``sendfile`` to ``/dev/null``). Per open file of more than
    :data:`MAPPED_MIN` (by handle) it keeps where the furthest sequential read ended, how far the
    file is hinted (a random read hints nothing) and its mapping; :meth:`forget` drops them at
    the handle's release.

    Invariant: a range is answered only from a descriptor of a complete, verified blob (the open
    file's handle's ``fd``), which holds the blob's shared ``flock``: the bytes sent are the ones
    verified, and eviction cannot unlink the file while the handle is open. A mapping is made
    from a descriptor of its own (mmap keeps one), which holds no lock, and is unmapped at the
    release; blobs are never truncated, so a mapped page always exists.
    """

    def __init__(self, *, timeout: float, limiter: Any) -> None:
        self.mode = ""  # "", "splice" or "map": set by Operations.init from the kernel's answer
        self.timeout = timeout
        self.limiter = limiter
        self._state: dict[int, _ReadState] = {}  # fh -> its sequential position, hints, mapping
        self._byte = bytearray(1)
        self._null = -1
        self.stats = {"spliced_reads": 0, "mapped_reads": 0, "complete_fills": 0}

    def takes(self, size: int) -> bool:
        """Whether a read of a complete blob of ``size`` bytes is answered here."""
        return self.mode == "splice" or (self.mode == "map" and size > MAPPED_MIN)

    def _resident(self, fd: int, off: int, length: int) -> bool:
        b = [self._byte]
        try:
            if os.preadv(fd, b, off, os.RWF_NOWAIT) != 1:
                return False
            last = off + length - 1
            return last // _PAGE == off // _PAGE or os.preadv(fd, b, last, os.RWF_NOWAIT) == 1
        except OSError:  # EAGAIN: not in the page cache
            return False

    def _hint_due(self, st: _ReadState, off: int, end: int, size: int) -> tuple[int, int]:
        """The range to hint ahead of this read, or (0, 0); updates the handle's state."""
        if off == 0 or st.end - (4 << 20) <= off <= st.end + (4 << 20):
            st.end = max(st.end, end)
        else:  # a random read: restart, hint nothing
            st.end = st.hinted = end
            return 0, 0
        if st.hinted - end >= SPLICE_READ_AHEAD // 2 or st.hinted >= size:
            return 0, 0
        start, stop = max(st.hinted, end), min(size, end + SPLICE_READ_AHEAD)
        st.hinted = stop
        return start, stop

    def ready(self, fh: int, fd: int, off: int, length: int, size: int) -> tuple[int, int] | None:
        """None: answer now (:meth:`answer`); else the hint (start, stop) for :meth:`fill` first.
        A file of up to :data:`MAPPED_MIN` is hinted whole at its open (the handle's ``will_need``)."""
        hint = (0, 0)
        if size > MAPPED_MIN:
            st = self._state.get(fh)
            if st is None:
                st = self._state[fh] = _ReadState()
            hint = self._hint_due(st, off, off + length, size)
        if hint == (0, 0) and self._resident(fd, off, length):
            return None
        return hint

    def fill(self, fd: int, off: int, length: int, hint: tuple[int, int]) -> None:
        """Blocking (a worker thread): hint ahead, then have ``[off, off+length)`` in memory."""
        start, stop = hint
        if stop > start:
            os.posix_fadvise(fd, start, stop - start, os.POSIX_FADV_WILLNEED)
        if self._null < 0:
            self._null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        done = 0
        while done < length:
            n = os.sendfile(self._null, fd, off + done, length - done)
            if n <= 0:
                raise OSError(f"the cache file ended at {off + done}")
            done += n

    def answer(self, fh: int, fd: int, off: int, length: int) -> Any:
        """What ``read`` returns for a range that is in memory (see the class docstring)."""
        if self.mode == "splice":
            self.stats["spliced_reads"] += 1
            return (fd, off, length)
        st = self._state[fh]  # takes(): map mode serves only files with state
        if st.map is None:
            # mmap keeps a dup of the descriptor it is given: map a descriptor of its own (the
            # same inode, another open file), so that the mapping never holds the blob's flock
            own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                st.map = mmap.mmap(own, 0, prot=mmap.PROT_READ)
            finally:
                os.close(own)
        self.stats["mapped_reads"] += 1
        return memoryview(st.map)[off:off + length]

    def forget(self, fh: int) -> None:
        """At the release of ``fh``: drop its state and unmap its mapping."""
        st = self._state.pop(fh, None)
        if st is not None and st.map is not None:
            try:
                st.map.close()
            except BufferError:  # a reply still holds a view: unmapped with the last view
                pass


#: files up to this size are read whole right after their open: no per-handle state, no mapping
MAPPED_MIN = 1 << 20


class _ReadState:
    __slots__ = ("end", "hinted", "map")

    def __init__(self) -> None:
        self.end = 0  # end of the furthest sequential read
        self.hinted = 0  # the cache file is hinted (WILLNEED) up to here
        self.map: mmap.mmap | None = None
