"""The pyfuse3 ``Operations`` of the mount: dispatch by inode to the namespace or a version tree.

::

    MNT/                              RootDir      projects, re-listed when stale
    MNT/<project>/                    ProjectDir   artifacts, re-listed when stale
    MNT/<project>/<artifact>/         ArtifactDir  vN directories and alias symlinks
    MNT/<project>/<artifact>/latest   AliasLink    -> vN
    MNT/<project>/<artifact>/vN/…     VersionTree  immutable: long kernel cache timeouts

Version trees are immutable, so the kernel may keep their entries, attributes and pages for a day
(``keep_cache`` on open). The levels above change while mounted and get one-second timeouts.
Everything is read-only in this version: every write-type request answers ``EROFS``. (The
writable ``draft/`` of an artifact will be another kind of node next to the version trees.)

Handlers never block the trio loop: store calls and blob reads run in worker threads behind
capacity limiters, each bounded by the mount's ``--timeout``. The one exception is a read of a
complete cache blob whose pages are in the page cache: ``preadv(RWF_NOWAIT)`` serves it on the
loop (it cannot block), because the thread hop costs more than the copy (measured: 128 KiB
requests 0.36 -> 0.77 GB/s). Reference entries are read from where they live, pinned to what
was recorded. Errors become errno values in :mod:`artfsd.errors` only.

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
import os
import stat
import time
from dataclasses import dataclass
from typing import Any, Sequence

import pyfuse3
import trio

from artfs import Store

from .errors import Timeout, errno_for, fuse_handler
from .namespace import AliasLink, ListingDir, Namespace, Node, VersionDir
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

    __slots__ = ("vdir", "tree", "node", "size", "digest", "handle", "failed", "fast", "_cache_path")

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
            if os.fstat(fd).st_size == self.size and os.path.samestat(os.fstat(fd), os.stat(self._cache_path)):
                self.fast, fd = fd, -1
        except OSError:
            pass
        finally:
            if fd >= 0:
                os.close(fd)

    def read_nowait(self, off: int, length: int, buf: bytearray) -> memoryview | None:
        """The bytes if the page cache has them all, else None (never blocks). Fills ``buf``."""
        if self.fast < 0:
            return None
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
    """Reads of a reference entry, straight from where it lives (not cached yet; the kernel's
    page cache keeps what was read). Every read is pinned: a changed object gives EIO."""

    def __init__(self, reader: Any, entry: Any) -> None:
        self.reader = reader
        self.entry = entry

    def read(self, offset: int, length: int) -> bytes:
        data: bytes = self.reader.read_range(self.entry, offset, length)
        return data

    def close(self) -> None:
        pass


@dataclass
class DirHandle:
    # either a snapshot of a listing directory, or a directory of a version tree
    listing: list[tuple[str, Node]] | None = None
    vdir: VersionDir | None = None
    tree: VersionTree | None = None
    d: int = 0


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False

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
    ) -> None:
        super().__init__()
        self.store = store
        self.blobs = blobs
        self.timeout = timeout
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.ns = Namespace(store, limiter=trio.CapacityLimiter(store_threads), refresh=refresh, timeout=timeout)
        self.read_limiter = trio.CapacityLimiter(read_threads)
        self._fh = itertools.count(1)
        self.files: dict[int, OpenFile] = {}
        self.dirs: dict[int, DirHandle] = {}
        self.stats = {"opens": 0, "reads": 0, "read_bytes": 0, "read_errors": 0}
        self.started = time.time()
        self._buf = bytearray(0)
        self._refs: Any = None

    def _ref_reader(self) -> Any:
        if self._refs is None:
            from artfs._refs import RefReader

            # file:// references name files of whoever wrote the manifest: never opened here
            self._refs = RefReader(allow_file=False)
        return self._refs

    def close(self) -> None:
        """Release what the operations hold (after the FUSE loop ended)."""
        for f in list(self.files.values()):
            with contextlib.suppress(Exception):
                f.close()
        self.files.clear()
        if self._refs is not None:
            self._refs.close()

    def start(self, nursery: trio.Nursery) -> None:
        """Start background work (periodic refresh); call from inside the trio run."""
        self.ns.start(nursery)

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
        a.st_mode = mode
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
            return self._attr(ino, stat.S_IFDIR | 0o555, 0, 2 + tree.dir_nsub[d], v.created_ns, IMMUTABLE,
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
        assert isinstance(node, ListingDir)
        nsub = sum(1 for c in node.children.values() if not isinstance(c, AliasLink))
        return self._attr(node.ino, stat.S_IFDIR | 0o555, 0, 2 + nsub, t, MUTABLE)

    # -- lookups -------------------------------------------------------------------------------
    @fuse_handler
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
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
        return self._meta_attr(found)

    @fuse_handler
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        meta, v, tree, node = await self._resolve(inode)
        if tree is not None:
            assert v is not None
            return self._tree_attr(v, tree, node)
        assert meta is not None
        return self._meta_attr(meta)

    @fuse_handler
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        node = self.ns.inodes.meta.get(inode)
        if not isinstance(node, AliasLink):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.link

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            if ino in self.ns.inodes.meta:
                continue  # names above the versions are kept for the mount's lifetime
            v = self.ns.inodes.tree_owner(ino)
            if v is not None:
                self.ns.referenced(v, -n)

    # -- directories ---------------------------------------------------------------------------
    @fuse_handler
    async def opendir(self, inode: int, ctx: Any = None) -> int:
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
        return fh

    @fuse_handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        h = self.dirs.get(fh)
        if h is None:
            raise pyfuse3.FUSEError(errno.EBADF)
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
        return None

    # -- files ---------------------------------------------------------------------------------
    @fuse_handler
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
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
                return OpenFile(v, tree, node, size, digest, RefHandle(self._ref_reader(), ref), None)
            assert digest is not None
            handle = self.blobs.open(v.key[0], digest, size)
            f = OpenFile(v, tree, node, size, digest, handle, self.store.cache.path(digest))
            f.attach_complete()
            return f

        f: OpenFile | None = None
        if not size:
            f = OpenFile(v, tree, node, 0, digest, None, None)
        else:
            with trio.move_on_after(self.timeout + 1.0):
                f = await trio.to_thread.run_sync(open_blob, limiter=self.read_limiter, abandon_on_cancel=True)
        if f is None:
            raise Timeout(f"open {v.spec}/{tree.path(node)}: the cache did not answer within {self.timeout:g} s")
        fh = next(self._fh)
        self.files[fh] = f
        self.ns.opened(v, +1)
        self.stats["opens"] += 1
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        f = self.files.get(fh)
        if f is None:
            raise pyfuse3.FUSEError(errno.EBADF)
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
            return fast  # type: ignore[return-value]  # pyfuse3 takes any buffer
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
        return None

    async def release(self, fh: int) -> None:
        f = self.files.pop(fh, None)
        if f is None:
            return
        self.ns.opened(f.vdir, -1)
        if f.handle is not None:
            try:
                await trio.to_thread.run_sync(f.close, limiter=self.read_limiter)
            except Exception as e:
                errno_for(e, f"close {f.what}")

    @fuse_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    # -- extended attributes -------------------------------------------------------------------
    async def _xattrs(self, inode: int) -> dict[str, bytes]:
        meta, v, tree, node = await self._resolve(inode)
        out: dict[str, bytes] = {}
        if inode == pyfuse3.ROOT_INODE:
            out["store"] = self.store.url.encode()
            out["pid"] = str(os.getpid()).encode()
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
        elif tree is not None and not tree.is_dir(node):
            d = tree.digest(node)
            if d is not None:
                out["digest"] = d.encode()
            out["size"] = str(tree.sizes[node]).encode()
            ref = tree.refs.get(node)
            if ref is not None and ref.ref is not None:
                out["ref"] = ref.ref.encode()
        return {XATTR + k: val for k, val in out.items()}

    @fuse_handler
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        try:
            sname = name.decode()
        except UnicodeDecodeError:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None
        if not sname.startswith(XATTR):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
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
            **self.stats,
            **self.ns.stats,
            "open_files": len(self.files),
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
        return s

    # -- everything that writes: read-only here ------------------------------------------------
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        raise _erofs()

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> pyfuse3.EntryAttributes:
        raise _erofs()

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        raise _erofs()

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        raise _erofs()

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        raise _erofs()

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        raise _erofs()

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: Any) -> None:
        raise _erofs()

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        raise _erofs()

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        raise _erofs()

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        raise _erofs()

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        raise _erofs()

    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        raise _erofs()

