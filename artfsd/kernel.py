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

These need a pyfuse3 that can ask for them: stock pyfuse3 3.5 cannot (``opendir`` returns only a
handle, ``FileInfo`` has no backing id, ``init`` asks for no symlink cache). ``artfs build-fuse``
builds pyfuse3 with ``artfs/_fusebuild/patches/pyfuse3-3.5.0-*.patch`` (kernel-cache,
readdir-inode, symlink-cache; against libfuse 3.17 built from Debian's source package when the
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
    why_not: dict[str, str] = field(default_factory=dict)

    def doc(self) -> dict[str, Any]:
        return {"cache_readdir": self.cache_readdir, "no_opendir": self.no_opendir,
                "passthrough": self.passthrough, "cache_symlinks": self.cache_symlinks,
                **({"unavailable": dict(self.why_not)} if self.why_not else {})}


def build_features() -> dict[str, bool]:
    """What the installed pyfuse3 can ask for (before ``init``)."""
    probe_fn = getattr(pyfuse3, "kernel_features", None)
    if probe_fn is None:
        return {"cache_readdir": False, "passthrough": False, "passthrough_enabled": False}
    return dict(probe_fn())


def probe(*, want_passthrough: bool = True, want_no_opendir: bool = True, off_by: str = "") -> Features:
    """What the running session can use (call after ``pyfuse3.init``, once the kernel answered).

    ``off_by``: what turned passthrough off when not ``want_passthrough`` (``-o no_passthrough``).
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
    return f


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
