"""The pyfuse3 ``Operations`` of the mount: dispatch by inode to the namespace or a version tree.

::

    MNT/                              RootDir      projects, re-listed when stale
    MNT/<project>/                    ProjectDir   artifacts, re-listed when stale
    MNT/<project>/<artifact>/         ArtifactDir  vN directories and alias symlinks
    MNT/<project>/<artifact>/latest   AliasLink    -> vN
    MNT/<project>/<artifact>/vN/…     VersionTree  immutable: long kernel cache timeouts
    MNT/<project>/<artifact>/draft/…  DraftSpace   writable (not with --read-only): artfsd.drafts

Version trees are immutable, so the kernel may keep their entries, attributes and pages for a day
(``keep_cache`` on open). The levels above change while mounted and get one-second timeouts.
Inodes of drafts lie above :data:`artfsd.drafts.DRAFT_BASE`; every request about one goes to
:class:`artfsd.drafts.DraftSpace`. Writes anywhere else answer ``EROFS``, except what the levels
above take as file operations on a writable mount:

    mkdir MNT/<project>, mkdir MNT/<project>/<artifact>   start a project / an artifact (local until committed)
    ln -s v3 MNT/<p>/<a>/best, mv tmp best, rm best        set, move, remove an alias (in the store, at once)
    setfattr -n user.artfs.description|metadata|aliases MNT/<p>/<a>/v3   change what a version says about itself

Handlers never block the trio loop: store calls and blob reads run in worker threads behind
capacity limiters, each bounded by the mount's ``--timeout``. The one exception is a read of a
complete cache blob whose pages are in the page cache: ``preadv(RWF_NOWAIT)`` serves it on the
loop (it cannot block), because the thread hop costs more than the copy (measured: 128 KiB
requests 0.36 -> 0.77 GB/s); so do the open and release of a file whose blob is complete and
verified in the cache (:mod:`artfsd.complete`: a few metadata system calls). Reference entries
read like blobs, through the lazy reader and the cache, each fetch pinned to what was recorded
(:func:`open_reference`). Errors become errno values in :mod:`artfsd.errors` only.

The mount root answers ``user.artfs.stats`` (JSON counters: store requests, reads, refreshes),
``user.artfs.pid`` (for ``artfs umount``) and ``user.artfs.store``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import math
import os
import re
import stat
import time
from dataclasses import dataclass
from typing import Any, Sequence

import pyfuse3
import trio

from artfs import ArtfsError, InvalidName, PermissionDenied, RefReader, Store
from artfs.lowlevel import check_alias, check_name, is_pinned, is_version, logger_of_version, parse_version, stamp_ok

from .complete import CompleteOpens
from .drafts import DRAFT_BASE, DraftFile, DraftSpace
from .errors import Timeout, errno_for, fuse_handler
from .kernel import Backings, Features, probe
from .prefetch import SMALL, SmallBlobs, small_files_of
from .prefetch import enabled as prefetch_enabled
from .lineage import Lineage
from .namespace import AliasLink, ArtifactDir, DraftRoot, ListingDir, Namespace, Node, ProjectDir, RootDir, VersionDir
from .tree import VersionTree

log = logging.getLogger("artfsd")

IMMUTABLE = 24 * 3600.0  # kernel cache timeout for entries inside versions
MUTABLE = 1.0  # ... for the levels above, which change while mounted
BLKSIZE = 1 << 20  # preferred I/O size reported by stat: tools then read in 1 MiB requests
XATTR = "user.artfs."
RETRY_AFTER = 0.5  # seconds during which a read of bytes that just failed fails again at once


def _erofs() -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno.EROFS)


def _enoent() -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno.ENOENT)


class OpenFile:
    """One open file of a version tree: a lazy blob handle, plus a fast path once the blob is complete.

    Once the blob is a complete, verified cache file, reads try ``preadv(RWF_NOWAIT)`` on it right
    on the trio loop: served from the page cache without a thread hop (which costs more than the
    copy), and never blocking, since RWF_NOWAIT refuses to wait for the disk. Anything else goes
    through the lazy reader in a worker thread. The fast fd holds a shared ``flock`` like every
    user of a cache blob, so eviction leaves it alone.
    """

    __slots__ = ("vdir", "tree", "node", "size", "digest", "handle", "failed", "fast", "_cache_path", "inode")

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
        data: bytes = self.handle.read(off, length)
        if self.fast < 0:
            self.attach_complete()
        return data

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


@dataclass
class DirHandle:
    # either a snapshot of a listing directory, or a directory of a version tree
    listing: list[tuple[str, Node]] | None = None
    vdir: VersionDir | None = None
    tree: VersionTree | None = None
    d: int = 0
    draft: Any = None  # a directory of a draft: its DraftSlot (and ``d`` is the draft inode)


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    # Off: measured no faster for drafts (close() waits for the writeback, and the daemon's copies
    # are the limit either way: 0.5-0.7 vs 0.9 GiB/s), and a lazy unmount at SIGTERM would drop
    # dirty pages the daemon never saw. Without it every write() reaches the staged file first.
    enable_writeback_cache = False
    # Asked for at init when pyfuse3 can (daemon/kernel.py); the kernel's answer is in self.kernel.
    enable_passthrough = True

    #: permission bits cleared from every mode shown (``--allow-group``: 0o007, so only the owner
    #: and the group pass the kernel's checks under ``default_permissions``)
    mode_clear = 0

    def __init__(
        self,
        store: Store,
        blobs: Any,
        *,
        refresh: float = 10.0,
        timeout: float = 30.0,
        read_threads: int = 64,
        store_threads: int = 16,
        uid: int | None = None,
        gid: int | None = None,
        refs: Any = None,
        drafts: DraftSpace | None = None,
        lineage: Lineage | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        # which run opened which version, wrote which draft (artfsd.lineage); on unless --no-lineage
        self.lineage = lineage if lineage is not None else Lineage(store)
        self._logged_by: dict[tuple[str, str, int], str] = {}
        self.blobs = blobs
        self.timeout = timeout
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.drafts = drafts  # None: a read-only mount
        self.ns = Namespace(store, limiter=trio.CapacityLimiter(store_threads), refresh=refresh, timeout=timeout,
                            drafts=drafts.node_for if drafts is not None else None)
        if drafts is not None:
            drafts.lineage = self.lineage
            drafts.on_commit = self._committed
            if drafts.ref_reader is None:
                drafts.ref_reader = self._ref_reader
        self.results_path: str | None = None  # where the daemon reports its commits at unmount
        self.read_limiter = trio.CapacityLimiter(read_threads)
        self._fh = itertools.count(1)
        self.files: dict[int, Any] = {}  # OpenFile (versions) or DraftFile
        self.dirs: dict[int, DirHandle] = {}
        self.stats = {"opens": 0, "reads": 0, "read_bytes": 0, "read_errors": 0, "readdirs": 0}
        self.started = time.time()
        self._buf = bytearray(0)
        self._refs: Any = refs  # artfs._refs.RefReader with the mount's file:// options
        self.kernel = Features()  # what the kernel agreed to: set by init()
        self.small = SmallBlobs(store, timeout=timeout)  # daemon/prefetch.py
        self.prefetch = prefetch_enabled()
        self._nursery: trio.Nursery | None = None
        self.backings = Backings(enabled=False)
        # files whose blob is complete open on the loop, no thread hop (daemon/complete.py)
        self.complete = CompleteOpens(store.cache, blobs, self.small, timeout=timeout, limiter=self.read_limiter,
                                      file_type=OpenFile)

    def init(self) -> None:
        """Called by pyfuse3 once the kernel answered INIT: learn what it can do for us."""
        self.kernel = probe(want_passthrough=self.enable_passthrough)
        self.backings.enabled = self.kernel.passthrough
        for what, why in self.kernel.why_not.items():
            log.info("kernel %s: off (%s)", what, why)
        log.info("kernel features: cached listings %s, passthrough %s",
                 "on" if self.kernel.cache_readdir else "off", "on" if self.kernel.passthrough else "off")

    def _ref_reader(self) -> Any:
        if self._refs is None:
            # file:// references name files of whoever wrote the manifest: never opened here
            self._refs = RefReader(allow_file=False)
        return self._refs

    def close(self) -> None:
        """Release what the operations hold (after the FUSE loop ended)."""
        for f in list(self.files.values()):
            if isinstance(f, OpenFile):
                with contextlib.suppress(Exception):
                    f.close()
        self.files.clear()
        if self._refs is not None:
            self._refs.close()

    def start(self, nursery: trio.Nursery) -> None:
        """Start background work (periodic refresh); call from inside the trio run."""
        self._nursery = nursery
        self.ns.start(nursery)
        if self.lineage.enabled:
            nursery.start_soon(self.lineage.run_background)
        if self.drafts is not None:
            self.drafts.start(nursery)  # checkpoints of the drafts' journals

    # -- inodes --------------------------------------------------------------------------------
    async def _resolve(self, ino: int) -> tuple[Node | None, VersionDir | None, VersionTree | None, int]:
        """(meta node, None, None, -1) for the levels above versions, else (None/vdir, vdir, tree, node).

        A version directory resolves to its tree's root (loading the index if needed).
        """
        meta = self.ns.inodes.meta.get(ino)
        if meta is not None:
            if isinstance(meta, VersionDir):
                tree = await self.ns.load(meta)
                return meta, meta, tree, tree.root
            return meta, None, None, -1
        v = self.ns.inodes.tree_owner(ino)
        if v is None:
            raise _enoent()
        tree = await self.ns.load(v)
        node = ino - v.base
        if node < 0 or node >= tree.size or node == tree.root:
            raise _enoent()
        return None, v, tree, node

    @staticmethod
    def _tree_ino(v: VersionDir, tree: VersionTree, node: int) -> int:
        return v.ino if node == tree.root else v.base + node

    # -- attributes ----------------------------------------------------------------------------
    def _attr(self, ino: int, mode: int, size: int, nlink: int, mtime_ns: int, timeout: float,
              entry_timeout: float | None = None) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = mode & ~self.mode_clear
        a.st_nlink = nlink
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_size = size
        a.st_blksize = BLKSIZE
        a.st_blocks = (size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = mtime_ns
        a.attr_timeout = timeout
        a.entry_timeout = timeout if entry_timeout is None else entry_timeout
        return a

    def _tree_attr(self, v: VersionDir, tree: VersionTree, node: int) -> pyfuse3.EntryAttributes:
        ino = self._tree_ino(v, tree, node)
        if tree.is_dir(node):
            d = tree.dir_of(node)
            # a writable mount lets setfattr through to vN/ itself (description, metadata, aliases)
            mode = 0o755 if node == tree.root and self.drafts is not None else 0o555
            return self._attr(ino, stat.S_IFDIR | mode, 0, 2 + tree.dir_nsub[d], v.created_ns, IMMUTABLE,
                              self.ns.refresh if node == tree.root else None)
        mode = stat.S_IFREG | (0o555 if tree.executable(node) else 0o444)
        return self._attr(ino, mode, tree.sizes[node], 1, v.created_ns, IMMUTABLE)

    def _meta_attr(self, node: Node) -> pyfuse3.EntryAttributes:
        """Attributes without store I/O (a version not loaded yet gets provisional ones)."""
        t = self.ns.started_ns
        if isinstance(node, AliasLink):
            return self._attr(node.ino, stat.S_IFLNK | 0o777, len(node.link), 1, t, MUTABLE)
        if isinstance(node, VersionDir):
            tree = node.tree
            if tree is not None:
                return self._tree_attr(node, tree, tree.root)
            # mtime and link count need the manifest: tell the kernel to ask again (getattr)
            return self._attr(node.ino, stat.S_IFDIR | 0o555, 0, 2, t, 0.0, self.ns.refresh)
        if isinstance(node, DraftRoot):
            assert self.drafts is not None
            return self._ds.provisional(node.slot, t)
        assert isinstance(node, ListingDir)
        nsub = sum(1 for c in node.children.values() if not isinstance(c, AliasLink))
        # writable: mkdir of projects/artifacts and alias symlinks pass the kernel's permission check
        mode = 0o755 if self.drafts is not None else 0o555
        return self._attr(node.ino, stat.S_IFDIR | mode, 0, 2 + nsub, t, MUTABLE)

    # -- lookups -------------------------------------------------------------------------------
    @fuse_handler
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if parent_inode >= DRAFT_BASE:
            slot, dino = self._draft(parent_inode)
            if name == b".." and dino == 1:
                return self._meta_attr(slot.node.parent)
            return await self._ds.lookup(slot, dino, name)
        meta, v, tree, node = await self._resolve(parent_inode)
        if tree is not None:
            assert v is not None
            if not tree.is_dir(node):
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            d = tree.dir_of(node)
            if name == b".":
                child: int | None = node
            elif name == b"..":
                if d == 0:
                    return self._meta_attr(v.artifact)
                child = tree.dir_node(tree.parent(d))
            else:
                child = tree.lookup(d, name)
            if child is None:
                raise _enoent()
            if child != tree.root:
                self.ns.referenced(v, +1)
            return self._tree_attr(v, tree, child)
        assert isinstance(meta, ListingDir)
        if name == b".":
            return self._meta_attr(meta)
        if name == b"..":
            return self._meta_attr(meta.parent or meta)
        try:
            sname = name.decode("utf-8")
        except UnicodeDecodeError:
            raise _enoent() from None
        found = await self.ns.lookup(meta, sname)
        if found is None:
            raise _enoent()
        if isinstance(found, VersionDir):
            await self.ns.load(found)  # its attributes come from the manifest
        if isinstance(found, DraftRoot):  # opens the draft (the first access of this draft/)
            return await self._ds.getattr(found.slot, 1)
        return self._meta_attr(found)

    @property
    def _ds(self) -> DraftSpace:
        """The drafts (only reached for draft inodes, which a read-only mount never hands out)."""
        if self.drafts is None:
            raise _erofs()
        return self.drafts

    def _draft(self, ino: int) -> tuple[Any, int]:
        """(DraftSlot, draft inode) of a draft inode."""
        if self.drafts is None:
            raise _enoent()
        return self._ds.find(ino)

    @fuse_handler
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if inode >= DRAFT_BASE:
            slot, dino = self._draft(inode)
            return await self._ds.getattr(slot, dino)
        meta, v, tree, node = await self._resolve(inode)
        if tree is not None:
            assert v is not None
            return self._tree_attr(v, tree, node)
        assert meta is not None
        return self._meta_attr(meta)

    @fuse_handler
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        if inode >= DRAFT_BASE:
            slot, dino = self._draft(inode)
            return await self._ds.readlink(slot, dino)
        node = self.ns.inodes.meta.get(inode)
        if not isinstance(node, AliasLink):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.link

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            if ino in self.ns.inodes.meta or ino >= DRAFT_BASE:
                continue  # names above the versions are kept for the mount's lifetime; drafts keep theirs
            v = self.ns.inodes.tree_owner(ino)
            if v is not None:
                self.ns.referenced(v, -n)

    # -- directories ---------------------------------------------------------------------------
    @fuse_handler
    async def opendir(self, inode: int, ctx: Any = None) -> int:  # or a FileInfo (kernel.py)
        if inode >= DRAFT_BASE:
            slot, dino = self._draft(inode)
            await self._ds.opendir(slot, dino)
            fh = next(self._fh)
            self.dirs[fh] = DirHandle(draft=slot, d=dino)
            return fh
        meta, v, tree, node = await self._resolve(inode)
        if tree is not None:
            if not tree.is_dir(node):
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            h = DirHandle(vdir=v, tree=tree, d=tree.dir_of(node))
        else:
            assert isinstance(meta, ListingDir)
            await self.ns.ensure_fresh(meta)
            h = DirHandle(listing=meta.sorted_children())
        fh = next(self._fh)
        self.dirs[fh] = h
        if tree is not None and self.kernel.cache_readdir:
            # A version's listing never changes (stable order and offsets): the kernel may keep it.
            return pyfuse3.FileInfo(fh=fh, keep_cache=True, cache_readdir=True)  # type: ignore[call-arg,return-value,unused-ignore]
        return fh

    @fuse_handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        h = self.dirs.get(fh)
        if h is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        self.stats["readdirs"] += 1
        if h.draft is not None:
            await self._ds.readdir(h.draft, h.d, start_id, token)
            return
        if h.listing is not None:
            for i in range(start_id, len(h.listing)):
                name, node = h.listing[i]
                if not pyfuse3.readdir_reply(token, name.encode(), self._meta_attr(node), i + 1):
                    break
            return
        v, tree = h.vdir, h.tree
        assert v is not None and tree is not None
        slots = tree.slots(h.d)
        given = 0
        for k in range(start_id, len(slots)):
            i = slots[k]
            if not pyfuse3.readdir_reply(token, tree.slot_name(i), self._tree_attr(v, tree, tree.slot_node(i)), k + 1):
                break
            given += 1
        if given:
            self.ns.referenced(v, given)

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    @fuse_handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        h = self.dirs.get(fh)
        if h is not None and h.draft is not None:
            await self._ds.fsyncdir(h.draft)

    # -- files ---------------------------------------------------------------------------------
    @fuse_handler
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if inode >= DRAFT_BASE:
            slot, dino = self._draft(inode)
            df = await self._ds.open(slot, dino, flags)
            if ctx is not None and (flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC):
                self.lineage.wrote(ctx.pid, slot.project, slot.artifact)
            fh = next(self._fh)
            self.files[fh] = df
            self.stats["opens"] += 1
            # the page cache stays valid across opens: every change of a draft file passes the kernel
            return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise _erofs()
        meta, v, tree, node = await self._resolve(inode)
        if tree is None or tree.is_dir(node):
            raise pyfuse3.FUSEError(errno.EISDIR if meta is not None else errno.EINVAL)
        assert v is not None
        size = tree.sizes[node]
        digest = tree.digest(node)
        ref = tree.refs.get(node)

        def open_blob() -> OpenFile:
            if ref is not None:  # bytes that stay elsewhere, read pinned to what was recorded
                return open_reference(self._ref_reader(), self.blobs, self.store.cache, v, tree, node, ref)
            assert digest is not None
            if size <= SMALL:  # fetched whole in one GET, verified, never chunk by chunk
                self.small.ensure(v.key[0], digest, size)
            handle = self.blobs.open(v.key[0], digest, size)
            f = OpenFile(v, tree, node, size, digest, handle, self.store.cache.path(digest))
            f.attach_complete()
            return f

        f: OpenFile | None = None
        if not size and ref is None:
            f = OpenFile(v, tree, node, 0, digest, None, None)
        elif ref is None:
            f = await self.complete.open(v, tree, node, size, digest)  # None: the general path below
        if f is None:
            with trio.move_on_after(self.timeout + 1.0):
                f = await trio.to_thread.run_sync(open_blob, limiter=self.read_limiter, abandon_on_cancel=True)
        if f is None:
            raise Timeout(f"open {v.spec}/{tree.path(node)}: the cache did not answer within {self.timeout:g} s")
        if self.prefetch and ref is None and 0 < size <= SMALL and self._nursery is not None:
            # a small file of this directory was read: fetch its small siblings ahead of the reader
            d = tree.file_dir(node)
            if self.small.want_prefetch(v.key, d):
                self._nursery.start_soon(self.small.prefetch_dir, v.key[0], small_files_of(tree, d))
        fh = next(self._fh)
        self.files[fh] = f
        self.ns.opened(v, +1)
        self.stats["opens"] += 1
        if ctx is not None:  # once per open, never per read: a dict and a set lookup once known
            self.lineage.opened(ctx.pid, v.key)
        if isinstance(f.handle, RefHandle):  # an unpinned reference: whatever is there now
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        if f.handle is not None:
            # A complete, verified blob backs the file in the kernel (daemon/kernel.py): reads
            # and mmap never reach the daemon. Otherwise (or when this inode has cached handles
            # open) the chunked path below.
            f.inode = inode
            bid = self.backings.open(inode, f.fast)
            if bid:  # the kernel accepts no other open flag with passthrough (FOPEN_PASSTHROUGH_MASK)
                return pyfuse3.FileInfo(fh=fh, keep_cache=False, backing_id=bid)  # type: ignore[call-arg,unused-ignore]
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        f = self.files.get(fh)
        if f is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if f.__class__ is DraftFile:
            try:
                return await self._ds.read(f, off, size)
            except Exception as e:
                raise pyfuse3.FUSEError(errno_for(e, f"read {f.slot.name}/draft inode {f.dino}")) from None
        if off >= f.size or size <= 0 or f.handle is None:
            return b""
        length = min(size, f.size - off)
        self.stats["reads"] += 1
        if f.failed is not None:
            # When a read-ahead request fails, the kernel retries the first page at once with a
            # request of its own; failing that retry fast keeps the caller's wait within --timeout.
            when, start, end, code = f.failed
            if time.monotonic() - when < RETRY_AFTER and start <= off < end:
                self.stats["read_errors"] += 1
                raise pyfuse3.FUSEError(code)
        if len(self._buf) < length:
            self._buf = bytearray(length)
        # One buffer serves every fast read: pyfuse3 copies it into its reply before any other
        # task runs (there is no checkpoint between this return and the reply).
        fast = f.read_nowait(off, length, self._buf)
        if fast is not None:
            self.stats["read_bytes"] += length
            return fast  # type: ignore[no-any-return,unused-ignore]  # pyfuse3 takes any buffer
        try:
            with trio.move_on_after(self.timeout + 5.0):
                data: bytes = await trio.to_thread.run_sync(f.read_blocking, off, length,
                                                            limiter=self.read_limiter, abandon_on_cancel=True)
                self.stats["read_bytes"] += len(data)
                return data
            raise Timeout(f"the store did not deliver the bytes within {self.timeout:g} s")
        except Exception as e:
            self.stats["read_errors"] += 1
            code = errno_for(e, f"read {f.what} [{off}:{off + length}]")
            f.failed = (time.monotonic(), off, off + length, code)
            raise pyfuse3.FUSEError(code) from None

    async def flush(self, fh: int) -> None:
        # Nothing to do at close(2) (writes reach the staged file as they come; the release
        # follows): ENOSYS tells the kernel to stop sending FLUSH at all, one request less per close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: int) -> None:
        f = self.files.pop(fh, None)
        if f is None:
            return
        if f.__class__ is DraftFile:
            try:
                await self._ds.release(f)
            except Exception as e:
                errno_for(e, f"close {f.slot.name}/draft inode {f.dino}")
            return
        self.ns.opened(f.vdir, -1)
        if f.inode:
            self.backings.release(f.inode)
        if f.handle is not None:
            try:
                await self.complete.close(f)  # on the loop unless the lazy reader may block
            except Exception as e:
                errno_for(e, f"close {f.what}")

    @fuse_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        f = self.files.get(fh)
        if f is not None and f.__class__ is DraftFile:
            await self._ds.fsync(f, datasync)

    # -- extended attributes -------------------------------------------------------------------
    async def _xattrs(self, inode: int) -> dict[str, bytes]:
        if inode >= DRAFT_BASE:
            slot, dino = self._draft(inode)
            return await self._ds.xattrs(slot, dino)
        meta, v, tree, node = await self._resolve(inode)
        out: dict[str, bytes] = {}
        if inode == pyfuse3.ROOT_INODE:
            out["store"] = self.store.url.encode()
            out["pid"] = str(os.getpid()).encode()
            if self.results_path:
                out["results"] = self.results_path.encode()
            out["stats"] = json.dumps(self.stats_doc(), sort_keys=True).encode()
        elif isinstance(meta, VersionDir):
            assert v is not None
            await self.ns.version_info(v)
            out["type"] = v.type.encode()
            if v.description is not None:
                out["description"] = v.description.encode()
            out["metadata"] = json.dumps(v.metadata, ensure_ascii=False, sort_keys=True).encode()
            out["aliases"] = ",".join(v.artifact.aliases_of(v.n)).encode()
            out["created"] = v.created.encode()
            out["digest"] = v.digest.encode()
            by = await self._version_logged_by(v)
            if by:
                out["logged_by"] = by.encode()
        elif tree is not None and not tree.is_dir(node):
            d = tree.digest(node)
            if d is not None:
                out["digest"] = d.encode()
            out["size"] = str(tree.sizes[node]).encode()
            ref = tree.refs.get(node)
            if ref is not None and ref.ref is not None:
                out["ref"] = ref.ref.encode()
        return {XATTR + k: val for k, val in out.items()}

    async def _version_logged_by(self, v: VersionDir) -> str | None:
        """``project/run_id`` that logged vN (``user.artfs.logged_by``); remembered once known."""
        by = self._logged_by.get(v.key)
        if by is None:
            try:
                by = await self.ns.run_sync(logger_of_version, self.store, *v.key, what=f"lineage of {v.spec}")
            except (ArtfsError, Timeout) as e:  # lineage is an extra: the version's other attributes still answer
                log.warning("%s: cannot read its lineage: %s", v.spec, e)
                return None
            if by:
                self._logged_by[v.key] = by
        return by

    @fuse_handler
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        try:
            sname = name.decode()
        except UnicodeDecodeError:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None
        if not sname.startswith(XATTR):
            # security.*, system.* (ACLs), trusted.*: not supported here, and saying so lets
            # ``ls -l`` stop asking for every file (it remembers ENOTSUP per device)
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR if sname.startswith("user.") else errno.ENOTSUP)
        if inode >= DRAFT_BASE and sname == XATTR + "last_commit":  # polled by `artfs commit`: cheap
            value = self._ds.last_commit_xattr(*self._draft(inode))
        else:
            value = (await self._xattrs(inode)).get(sname)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @fuse_handler
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return [k.encode() for k in await self._xattrs(inode)]

    def stats_doc(self) -> dict[str, Any]:
        backend = getattr(self.store.backend, "counter", {})
        return {
            "backend": dict(backend),
            "lineage": dict(self.lineage.stats, enabled=self.lineage.enabled),
            **self.stats,
            **self.ns.stats,
            **(self.drafts.stats if self.drafts is not None else {}),
            "open_files": len(self.files),
            "kernel": self.kernel.doc(),
            **self.small.stats,
            **self.complete.stats,
            "passthrough_files": len(self.backings),
            **self.backings.stats,
            "loaded_entries": self.ns.loaded_entries,
            "uptime": round(time.time() - self.started, 3),
        }

    # -- the file system -----------------------------------------------------------------------
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = BLKSIZE
        s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = self.ns.inodes.next
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        if self.drafts is not None:  # what drafts can still grow by: the disk of the staging directory
            try:
                st = await trio.to_thread.run_sync(_statvfs_near, self._ds.drafts.root)
                s.f_frsize = st.f_frsize
                s.f_blocks, s.f_bfree, s.f_bavail = st.f_blocks, st.f_bfree, st.f_bavail
                s.f_files, s.f_ffree, s.f_favail = st.f_files, st.f_ffree, st.f_favail
            except OSError as e:
                log.debug("statfs of the staging directory: %s", e)
        return s

    # -- writing: drafts, and the levels above as file operations ------------------------------
    async def _committed(self, slot: Any) -> None:
        """After a commit through the mount: show the new version and where ``latest`` points now."""
        if slot.node is not None:
            await self.ns.relist(slot.node.parent)

    def _writable_meta(self, ino: int) -> Node | None:
        return self.ns.inodes.meta.get(ino) if self.drafts is not None else None

    @fuse_handler
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        if inode >= DRAFT_BASE:
            slot, dino = self._draft(inode)
            return await self._ds.setattr(slot, dino, attr, fields)
        raise _erofs()

    @fuse_handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> pyfuse3.EntryAttributes:
        if parent_inode >= DRAFT_BASE:
            slot, dino = self._draft(parent_inode)
            return await self._ds.mknod(slot, dino, name, mode, rdev, ctx)
        raise _erofs()

    @fuse_handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        if parent_inode >= DRAFT_BASE:
            slot, dino = self._draft(parent_inode)
            self.lineage.wrote(ctx.pid, slot.project, slot.artifact)
            return await self._ds.mkdir(slot, dino, name, mode, ctx)
        node = self._writable_meta(parent_inode)
        if not isinstance(node, (RootDir, ProjectDir)):
            raise _erofs()
        sname = check_name(_text(name), "project" if isinstance(node, RootDir) else "artifact")
        await self.ns.ensure_fresh(node)
        if sname in node.children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        if isinstance(node, RootDir):  # a project exists in the store once it has an artifact
            self.ns.add_local(sname)
            return self._meta_attr(self.ns.root.children[sname])
        self.ns.add_local(node.name, sname)
        art = node.children[sname]
        assert isinstance(art, ArtifactDir) and self.drafts is not None
        if art.draft is None:
            art.draft = self._ds.node_for(art)
        try:  # start the draft now: staging keeps the new artifact across a remount
            await self._ds.draft(art.draft.slot)
        except BaseException:
            self.ns.drop_local(node.name, sname)
            raise
        return self._meta_attr(art)

    @fuse_handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        if parent_inode >= DRAFT_BASE:
            slot, dino = self._draft(parent_inode)
            await self._ds.rmdir(slot, dino, name)
            return None
        node = self._writable_meta(parent_inode)
        if not isinstance(node, (RootDir, ProjectDir)):
            raise _erofs()
        sname = _text(name)
        child = node.children.get(sname)
        if child is None:
            raise _enoent()
        assert isinstance(child, ListingDir)
        # Only what exists here alone can go: an empty project, or a new artifact with an empty draft.
        if isinstance(node, RootDir):
            if sname not in self.ns.local:
                raise _erofs()
            await self.ns.ensure_fresh(child)
            if child.children:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            self.ns.drop_local(sname)
            return None
        assert isinstance(child, ArtifactDir) and self.drafts is not None
        if sname not in self.ns.local.get(node.name, ()):
            raise _erofs()
        await self.ns.ensure_fresh(child)
        if any(isinstance(c, VersionDir) for c in child.children.values()):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        if child.draft is not None:
            slot = child.draft.slot
            d = await self._ds.draft(slot)
            if slot.inodes or await trio.to_thread.run_sync(lambda: bool(d.readdir(1, limit=1))):
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            slot.draft = None
            await trio.to_thread.run_sync(d.discard)
        self.ns.drop_local(node.name, sname)
        return None

    def _alias_target(self, d: ArtifactDir, target: bytes) -> int:
        """The version an alias symlink's target names: ``v3`` (or ``./v3/``), or another alias."""
        t = _text(target).strip()
        while t.startswith("./"):
            t = t[2:]
        t = t.rstrip("/")
        if is_version(t):
            return parse_version(t)
        if t in d.aliases:
            return d.aliases[t]
        log.error("%s/%s: an alias symlink must point to a version (vN) or another alias, not %r",
                  d.project, d.name, t)
        raise pyfuse3.FUSEError(errno.EINVAL)

    @fuse_handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        if parent_inode >= DRAFT_BASE:
            slot, dino = self._draft(parent_inode)
            return await self._ds.symlink(slot, dino, name, target, ctx)
        d = self._writable_meta(parent_inode)
        if not isinstance(d, ArtifactDir):
            raise _erofs()
        alias = check_alias(_text(name))
        await self.ns.ensure_fresh(d)
        if alias in d.children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        n = self._alias_target(d, target)
        await self.ns.run_sync(self.store.set_alias, d.project, d.name, alias, n, what=f"set alias {d.project}/{d.name}:{alias}")
        log.info("%s/%s: alias %s -> v%d", d.project, d.name, alias, n)
        self.ns.set_alias(d, alias, n)
        return self._meta_attr(d.children[alias])

    @fuse_handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        if parent_inode >= DRAFT_BASE:
            slot, dino = self._draft(parent_inode)
            await self._ds.unlink(slot, dino, name)
            self.lineage.wrote(ctx.pid, slot.project, slot.artifact)
            return None
        d = self._writable_meta(parent_inode)
        if isinstance(d, ArtifactDir):
            alias = _text(name)
            if isinstance(d.children.get(alias), AliasLink):
                await self._remove_alias(d, alias)
                return None
        raise _erofs()

    async def _remove_alias(self, d: ArtifactDir, alias: str) -> None:
        try:
            await self.ns.run_sync(self.store.remove_alias, d.project, d.name, alias,
                                   what=f"remove alias {d.project}/{d.name}:{alias}")
        except InvalidName as e:  # the automatic 'latest'
            log.error("%s/%s: %s", d.project, d.name, e)
            raise pyfuse3.FUSEError(errno.EPERM) from None
        log.info("%s/%s: alias %s removed", d.project, d.name, alias)
        self.ns.set_alias(d, alias, None)

    @fuse_handler
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: Any) -> None:
        if parent_inode_old >= DRAFT_BASE or parent_inode_new >= DRAFT_BASE:
            if parent_inode_old < DRAFT_BASE or parent_inode_new < DRAFT_BASE:
                raise pyfuse3.FUSEError(errno.EXDEV)
            so, do = self._draft(parent_inode_old)
            sn, dn = self._draft(parent_inode_new)
            if so is not sn:
                raise pyfuse3.FUSEError(errno.EXDEV)  # another artifact's draft: mv copies
            await self._ds.rename(so, do, name_old, dn, name_new, flags)
            self.lineage.wrote(ctx.pid, so.project, so.artifact)
            return None
        d = self._writable_meta(parent_inode_old)
        if isinstance(d, ArtifactDir) and parent_inode_new == parent_inode_old:
            old, new = _text(name_old), _text(name_new)
            src = d.children.get(old)
            if isinstance(src, AliasLink):  # `ln -sfn v4 best`: a symlink to a temp name renamed over best
                await self._rename_alias(d, src, check_alias(new), flags)
                return None
        raise _erofs()

    async def _rename_alias(self, d: ArtifactDir, src: AliasLink, new: str, flags: int) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        if flags & pyfuse3.RENAME_NOREPLACE and new in d.children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        old, n = src.name, src.target
        if old == new:
            return
        p, a = d.project, d.name

        def work() -> None:
            if old == "latest" and not self.store.backend.exists(f"{p}/artifacts/{a}/aliases/latest"):
                raise InvalidName("'latest' is automatic; it can be moved but not removed")
            self.store.set_alias(p, a, new, n)
            self.store.remove_alias(p, a, old)

        try:
            await self.ns.run_sync(work, what=f"rename alias {p}/{a}:{old} to {new}")
        except InvalidName as e:
            log.error("%s/%s: %s", p, a, e)
            raise pyfuse3.FUSEError(errno.EPERM) from None
        log.info("%s/%s: alias %s -> v%d (was %s)", p, a, new, n, old)
        self.ns.set_alias(d, new, n)
        self.ns.set_alias(d, old, None)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        # a version is a list of files: no hard links (tools such as git fall back to a copy or rename)
        raise pyfuse3.FUSEError(errno.EPERM if new_parent_inode >= DRAFT_BASE else errno.EROFS)

    @fuse_handler
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        if parent_inode >= DRAFT_BASE:
            slot, dino = self._draft(parent_inode)
            df, attrs = await self._ds.create(slot, dino, name, mode, ctx)
            self.lineage.wrote(ctx.pid, slot.project, slot.artifact)
            fh = next(self._fh)
            self.files[fh] = df
            self.stats["opens"] += 1
            return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False), attrs
        raise _erofs()

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        f = self.files.get(fh)
        if f is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if f.__class__ is not DraftFile:
            raise _erofs()
        try:
            return await self._ds.write(f, off, buf)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:
            raise pyfuse3.FUSEError(errno_for(e, f"write {f.slot.name}/draft inode {f.dino}")) from None

    @fuse_handler
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        sname = _text(name)
        if inode >= DRAFT_BASE:
            slot, dino = self._draft(inode)
            await self._ds.setxattr(slot, dino, sname, value)
            return None
        v = self._writable_meta(inode)
        if isinstance(v, VersionDir) and sname.startswith(XATTR):
            await self._set_version_xattr(v, sname[len(XATTR):], value)
            return None
        raise _erofs()

    @fuse_handler
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        sname = _text(name)
        if inode >= DRAFT_BASE:
            slot, dino = self._draft(inode)
            await self._ds.removexattr(slot, dino, sname)
            return None
        v = self._writable_meta(inode)
        if isinstance(v, VersionDir) and sname[len(XATTR):] in ("description", "metadata", "aliases"):
            await self._set_version_xattr(v, sname[len(XATTR):], None)
            return None
        raise _erofs()

    async def _set_version_xattr(self, v: VersionDir, key: str, value: bytes | None) -> None:
        """``user.artfs.description``/``metadata``/``aliases`` of vN: what the version says about
        itself (as ``Artifact.save``); its files, type and digest never change (EPERM)."""
        if key in ("type", "digest", "created"):
            raise pyfuse3.FUSEError(errno.EPERM)
        if key not in ("description", "metadata", "aliases"):
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        text = None if value is None else _text(value)
        p, a, n = v.key
        metadata: dict[str, Any] | None = None
        aliases: list[str] = []
        if key == "metadata":
            try:
                metadata = json.loads(text) if text and text.strip() else {}
            except ValueError:
                metadata = None
            if not isinstance(metadata, dict):
                log.error("%s: user.artfs.metadata must be a JSON object", v.spec)
                raise pyfuse3.FUSEError(errno.EINVAL)
        elif key == "aliases":
            aliases = [check_alias(x) for x in re.split(r"[,\s]+", text or "") if x]

        def work() -> None:
            if key == "aliases":
                now = [x for x, m in self.store.aliases(p, a).items() if m == n]
                for x in aliases:
                    if x not in now:
                        self.store.set_alias(p, a, x, n)
                for x in now:
                    if x not in aliases and x != "latest":
                        self.store.remove_alias(p, a, x)
                return
            info = self.store.info(p, a, n)
            description = (text or None) if key == "description" else info.get("description")
            md = metadata if key == "metadata" else info.get("metadata")
            self.store.set_info(p, a, n, description=description, metadata=md if isinstance(md, dict) else {})

        await self.ns.run_sync(work, what=f"update {v.spec}")
        log.info("%s: %s updated", v.spec, key)
        v.info_at = -math.inf  # read it again on the next getxattr
        if key == "aliases":
            await self.ns.relist(v.artifact)


def _text(name: bytes) -> str:
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise pyfuse3.FUSEError(errno.EINVAL) from None


def _statvfs_near(path: str) -> os.statvfs_result:
    """statvfs of ``path``, or of its nearest existing ancestor (staging is made on first use)."""
    while True:
        try:
            return os.statvfs(path)
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                raise
            path = parent
