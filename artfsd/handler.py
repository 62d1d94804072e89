"""The one protocol of the mount's three handlers, and what they share.

:class:`artfsd.fs.Operations` is a router: it finds the handler of an inode (:meth:`route`, the
one place that tells the inode ranges apart) and passes the request on. Each handler answers
for its own inodes:

* :class:`artfsd.listing.ListingHandler`: the mount root, projects, artifacts, alias symlinks
  (mkdir of projects/artifacts and alias moves on a writable mount);
* :class:`artfsd.versions.VersionHandler`: ``vN/`` and everything below it (immutable; what a
  version says about itself is changed through the library, by setfattr on ``vN/``);
* :class:`artfsd.draftfs.DraftHandler`: ``draft/`` of every artifact (through
  :class:`artfsd.drafts.DraftSpace`).

The router owns file and directory handles: a handler's ``open``/``opendir`` returns its own
state object, which comes back to its ``read``/``readdir``/``release``. A method a handler does
not implement answers as a read-only file system would (:class:`Handler`'s defaults: EROFS for
changes, EINVAL/ENOATTR for what does not apply). Handlers raise ``pyfuse3.FUSEError`` or an
artfs exception; the router's :func:`artfsd.errors.fuse_handler` turns the latter into errnos.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, Callable

import pyfuse3

from artfs import Store
from artfs.lowlevel import MountConfig

from .lineage import Lineage
from .listings import Listings
from .nodes import Node

IMMUTABLE = 24 * 3600.0  # kernel cache timeout for entries inside versions
MUTABLE = 1.0  # ... for the levels above, which change while mounted


def erofs() -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno.EROFS)


def enoent() -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno.ENOENT)


def fuse_text(name: bytes) -> str:
    """A name or value from the kernel as text; EINVAL if it is not UTF-8."""
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise pyfuse3.FUSEError(errno.EINVAL) from None


class Mount:
    """What every handler shares: the store, the listings (``ns``), the mount's configuration, owners and
    modes, counters, lineage.

    ``entry_of`` gives the attributes of any node of the listings without store I/O (the
    router's: a listing shows versions and ``draft/`` beside projects and aliases).
    """

    def __init__(self, store: Store, ns: Listings, lineage: Lineage, config: MountConfig, *,
                 entry_of: Callable[[Node], pyfuse3.EntryAttributes]) -> None:
        self.store = store
        self.ns = ns
        self.lineage = lineage
        self.config = config
        self.uid = os.getuid()
        self.gid = os.getgid() if config.gid is None else config.gid
        self.timeout = config.timeout
        self.writable = not config.read_only  # False: --read-only (no drafts, no alias or version changes)
        #: permission bits cleared from every mode shown (``--allow-group``: 0o007)
        self.mode_clear = config.mode_clear
        self.stats = {"opens": 0, "reads": 0, "read_bytes": 0, "read_errors": 0, "readdirs": 0,
                      # requests that reach the daemon, counted by the router (artfsd.fs)
                      "lookups": 0, "getattrs": 0, "readlinks": 0, "releases": 0, "forgets": 0,
                      "opendir_enosys": 0}
        self.entry_of = entry_of

    def attr(self, ino: int, mode: int, size: int, nlink: int, mtime_ns: int, timeout: float,
             entry_timeout: float | None = None) -> pyfuse3.EntryAttributes:
        """Attributes as every handler but the drafts' shows them (one owner, one time)."""
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = mode & ~self.mode_clear
        a.st_nlink = nlink
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_size = size
        a.st_blksize = self.config.blksize
        a.st_blocks = (size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = mtime_ns
        a.attr_timeout = timeout
        a.entry_timeout = timeout if entry_timeout is None else entry_timeout
        return a

    def dir_mode(self) -> int:
        """Directories that take changes on a writable mount show w for the owner (else the
        kernel's permission check refuses mkdir, symlink and setfattr before we see them)."""
        return stat.S_IFDIR | (0o755 if self.writable else 0o555)


class Handler:
    """The protocol: every request the router passes on, with a read-only file system's answers.

    Inodes are the kernel's numbers; ``name`` arguments are raw bytes; xattr names are text
    (``getxattr`` sees only ``user.*`` names: the router answers ENOTSUP for the rest). ``dir``/``file`` are the state objects the
    handler's own ``opendir``/``open``/``create`` returned.
    """

    # -- names and attributes
    async def lookup(self, parent: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        raise enoent()

    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        raise enoent()

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        raise pyfuse3.FUSEError(errno.EINVAL)

    def forget(self, inode: int, nlookup: int) -> None:
        """The kernel dropped ``nlookup`` references to ``inode`` (never blocks)."""

    # -- directories
    async def opendir(self, inode: int, ctx: Any) -> tuple[Any, bool]:
        """(the directory's state, whether its listing never changes: the kernel may cache it)."""
        raise pyfuse3.FUSEError(errno.ENOTDIR)

    async def readdir(self, dir: Any, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        raise pyfuse3.FUSEError(errno.EBADF)

    async def releasedir(self, dir: Any) -> None:
        return None

    async def fsyncdir(self, dir: Any, datasync: bool) -> None:
        return None

    # -- files
    async def open(self, inode: int, flags: int, ctx: Any, fh: int) -> tuple[Any, pyfuse3.FileInfo]:
        """(the open file's state, the FileInfo for the kernel, with ``fh``)."""
        raise erofs()

    async def read(self, file: Any, off: int, size: int) -> bytes:
        raise pyfuse3.FUSEError(errno.EBADF)

    async def write(self, file: Any, off: int, buf: bytes) -> int:
        raise erofs()

    def write_fd(self, file: Any, off: int, size: int) -> int:
        """A file descriptor for pyfuse3 to copy a write's bytes into itself, or -1 (``write``)."""
        return -1

    def write_fd_done(self, file: Any, off: int, result: int) -> int:
        """After that copy: the byte count to answer (``result`` < 0: -errno)."""
        raise pyfuse3.FUSEError(errno.EIO)  # never called: write_fd gave no fd

    async def release(self, file: Any) -> None:
        return None

    async def fsync(self, file: Any, datasync: bool) -> None:
        return None

    # -- extended attributes (full names: user.artfs.*)
    async def getxattr(self, inode: int, name: str) -> bytes | None:
        """The value, or None (ENOATTR)."""
        return (await self.xattrs(inode)).get(name)

    async def xattrs(self, inode: int) -> dict[str, bytes]:
        """Every attribute of the inode, in listing order."""
        return {}

    async def setxattr(self, inode: int, name: str, value: bytes, ctx: Any) -> None:
        raise erofs()

    async def removexattr(self, inode: int, name: str, ctx: Any) -> None:
        raise erofs()

    # -- changes
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        raise erofs()

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Any) -> pyfuse3.EntryAttributes:
        raise erofs()

    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        raise erofs()

    async def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
        raise erofs()

    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        raise erofs()

    async def unlink(self, parent: int, name: bytes, ctx: Any) -> None:
        raise erofs()

    async def rename(self, old_parent: int, old: bytes, new_parent: int, new: bytes, flags: int, ctx: Any) -> None:
        """Both parents belong to this handler (the router answers EXDEV/EROFS otherwise)."""
        raise erofs()

    async def link(self, inode: int, new_parent: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        # a version is a list of files: no hard links (tools such as git fall back to a copy or rename)
        raise erofs()

    async def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Any,
                     fh: int) -> tuple[Any, pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        raise erofs()
