"""The pyfuse3 ``Operations`` of the mount: a router over three handlers.

::

    MNT/                              RootDir      \\
    MNT/<project>/                    ProjectDir    > listing handler   (artfsd.listing)
    MNT/<project>/<artifact>/         ArtifactDir   |
    MNT/<project>/<artifact>/latest   AliasLink    /
    MNT/<project>/<artifact>/vN/…     VersionTree    version handler   (artfsd.versions)
    MNT/<project>/<artifact>/draft/…  DraftSpace     draft handler     (artfsd.draftfs)

Every request about an inode goes to the handler :meth:`Operations.route` names; that method is
the one place that knows how the inode numbers are laid out (drafts from
:data:`artfsd.drafts.DRAFT_BASE` up, below that the nodes of the listings and the contiguous
ranges version trees reserve, :mod:`artfsd.listings`). A request about two directories
(``rename``) needs both in one handler: across drafts and anything else it is EXDEV (``mv``
copies), across the read-only levels EROFS. The handlers share one protocol
(:class:`artfsd.handler.Handler`) and the router owns the file and directory handle numbers.

The router also owns what belongs to the whole mount: the kernel's features (init), background
tasks (start), ``statfs``, the counters of ``user.artfs.stats`` (:meth:`Operations.stats_doc`),
and the ``user.`` prefix check of extended attributes (names are in :mod:`artfsd.attrs`). Errors
become errno values in :mod:`artfsd.errors` only.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import time
from typing import Any, Sequence

import pyfuse3
import trio

from artfs import RefReader, Store
from artfs.lowlevel import MountConfig

from .draftfs import DraftHandler
from .drafts import DRAFT_BASE, DraftSpace
from .errors import fuse_handler
from .handler import Handler, Mount
from .kernel import (Backings, CompleteReads, Features, build_features, mapped_reads_wanted, passthrough_likely, probe,
                     splice_max_read, spliced_reads_wanted)
from .lineage import Lineage
from .listing import ListingHandler
from .listings import Listings
from .nodes import AliasLink, DraftRoot, ListingDir, Node, VersionDir
from .openfiles import OpenFile
from .versions import VersionHandler

log = logging.getLogger("artfsd")


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    # Off: measured no faster for drafts (close() waits for the writeback, and the daemon's copies
    # are the limit either way: 0.5-0.7 vs 0.9 GiB/s), and a lazy unmount at SIGTERM would drop
    # dirty pages the daemon never saw. Without it every write() reaches the staged file first.
    enable_writeback_cache = False
    # opendir answered ENOSYS when pyfuse3 names the directory in readdir (artfsd/kernel.py)
    enable_no_opendir = True
    # A pyfuse3 with write_fd (artfs/_fusebuild/patches/) asks write_fd where each write's bytes go
    # and splices them there (draft files: the staged file), without a copy through Python;
    # stock pyfuse3 ignores this and calls write.
    enable_write_fd = True
    # The kernel keeps alias symlinks' targets (artfs/_fusebuild/patches/, symlink-cache); the
    # listings invalidate a link's inode when its alias moves (artfsd/kernel.py).
    enable_cache_symlinks = True
    # A pyfuse3 with the zero-copy-reads patch lets read() answer with a file range, which libfuse
    # splices into the kernel (FUSE_CAP_SPLICE_WRITE): complete blobs (_read_complete_blob).
    enable_splice_write = True

    def __init__(self, store: Store, blobs: Any, config: MountConfig, *, results: str | None = None) -> None:
        """``results``: where the daemon reports its commits at unmount (``user.artfs.results``)."""
        super().__init__()
        self.store = store
        self.config = config
        # which run opened which version, wrote which draft (artfsd.lineage); on unless --no-lineage
        self.lineage = Lineage(store, enabled=config.lineage)
        self.blobs = blobs
        self.timeout = config.timeout
        # Asked for at init when pyfuse3 can (artfsd/kernel.py); the kernel's answer is in self.kernel.
        # passthrough of complete cache blobs, off with -o no_passthrough (or ARTFS_PASSTHROUGH=0):
        # every read through the daemon
        self.enable_passthrough = config.passthrough
        self.passthrough_off = config.passthrough_off  # who turned it off, for user.artfs.stats
        self._refs: RefReader | None = None  # the mount's file:// options, made on first use
        self.drafts = None if config.read_only else DraftSpace(  # None: a read-only mount
            store, blobs, config, lineage=self.lineage, on_commit=self._committed, ref_reader=self._ref_reader)
        self.ns = Listings(store, config, limiter=trio.CapacityLimiter(config.store_threads),
                            drafts=self.drafts.node_for if self.drafts is not None else None)
        self.mount = Mount(store, self.ns, self.lineage, config, entry_of=self.entry_of)
        self.kernel = Features()  # what the kernel agreed to: set by init()
        self.backings = Backings(enabled=False)
        self.complete_reads = CompleteReads(timeout=config.timeout, limiter=trio.CapacityLimiter(config.read_threads))
        #: the max_read= mount option spliced reads need here (0: none; artfsd/kernel.py); not where
        #: passthrough will serve complete blobs, so reads that fetch keep their 1 MiB requests
        self._splice_needs = splice_max_read() if build_features().get("read_fd") and spliced_reads_wanted() else 0
        self.max_read = 0 if passthrough_likely(config.passthrough) else self._splice_needs
        self.listing = ListingHandler(self.mount, self.drafts, stats=self.stats_doc, results_path=results)
        self.versions = VersionHandler(self.mount, blobs, refs=self._ref_reader, backings=self.backings)
        self.draft_handler = DraftHandler(self.mount, self.drafts)
        self._fh = itertools.count(1)
        self.files: dict[int, Any] = {}  # fh -> the handler's open file (OpenFile, DraftFile)
        self._file_handlers: dict[int, Handler] = {}
        self.dirs: dict[int, tuple[Handler, Any]] = {}  # fh -> (handler, its directory state)
        self.started = time.time()

    # -- what belongs to the whole mount ---------------------------------------------------------
    @property
    def mode_clear(self) -> int:
        """Permission bits cleared from every mode shown (:attr:`MountConfig.mode_clear`)."""
        return self.mount.mode_clear

    @property
    def results_path(self) -> str | None:
        """Where the daemon reports its commits at unmount (``user.artfs.results``)."""
        return self.listing.results_path

    @property
    def stats(self) -> dict[str, int]:
        return self.mount.stats

    def init(self) -> None:
        """Called by pyfuse3 once the kernel answered INIT: learn what it can do for us."""
        self.kernel = probe(want_passthrough=self.enable_passthrough, want_no_opendir=self.enable_no_opendir,
                            off_by=self.passthrough_off, want_spliced_reads=spliced_reads_wanted())
        self.backings.enabled = self.kernel.passthrough
        if self.kernel.spliced_reads and self.max_read != self._splice_needs:
            # passthrough was expected and did not come: 1 MiB replies do not fit libfuse's pipe,
            # and libfuse would copy each through a buffer of its own (slower than a mapping)
            self.kernel.spliced_reads = False
            self.kernel.why_not["spliced_reads"] = ("replies of 1 MiB requests do not fit the pipe libfuse splices "
                                                    "through (fs.pipe-max-size, no CAP_SYS_RESOURCE)")
        self.complete_reads.mode = ("splice" if self.kernel.spliced_reads else
                                    "map" if mapped_reads_wanted() else "")
        self.listing.fresh_on_getattr = self.kernel.no_opendir
        for what, why in self.kernel.why_not.items():
            log.info("kernel %s: off (%s)", what, why)
        log.info("kernel features: cached listings %s, passthrough %s, cached symlinks %s",
                 "all (no opendir)" if self.kernel.no_opendir else "versions" if self.kernel.cache_readdir
                 else "off", "on" if self.kernel.passthrough else "off",
                 "on" if self.kernel.cache_symlinks else "off")

    def _ref_reader(self) -> Any:
        if self._refs is None:
            # file:// references name files of whoever wrote the manifest: opened only with
            # --allow-file/--file-root; s3:// ones within the mount's timeout
            c = self.config
            self._refs = RefReader(allow_file=c.allow_file, file_roots=c.file_roots, s3_timeout=c.store_timeout)
        return self._refs

    def close(self) -> None:
        """Release what the operations hold (after the FUSE loop ended)."""
        for f in list(self.files.values()):
            if isinstance(f, OpenFile):
                with contextlib.suppress(Exception):
                    f.close()
        self.files.clear()
        self._file_handlers.clear()
        if self._refs is not None:
            self._refs.close()

    def start(self, nursery: trio.Nursery) -> None:
        """Start background work (periodic refresh); call from inside the trio run."""
        self.ns.start(nursery)
        if self.lineage.enabled:
            nursery.start_soon(self.lineage.run_background)
        if self.drafts is not None:
            self.drafts.start(nursery)  # checkpoints of the drafts' journals

    async def _committed(self, slot: Any) -> None:
        """After a commit through the mount: show the new version and where ``latest`` points now."""
        if slot.node is not None:
            await self.ns.relist(slot.node.parent)

    def stats_doc(self) -> dict[str, Any]:
        return {
            "backend": dict(self.store.backend.counter),
            "lineage": dict(self.lineage.stats, enabled=self.lineage.enabled),
            **self.stats,
            **self.ns.stats,
            **(self.drafts.stats if self.drafts is not None else {}),
            "open_files": len(self.files),
            "kernel": self.kernel.doc(),
            # the lazy reader's: fetched_bytes, direct_reads, small_fetches, prefetched, prefetch_errors
            **dict(getattr(self.blobs, "stats", {})),
            **self.versions.files.stats,
            "passthrough_files": len(self.backings),
            **self.backings.stats,
            **self.complete_reads.stats,
            "max_read": self.max_read,  # the mount's max_read= (0: the kernel's 1 MiB requests)
            "loaded_entries": self.ns.loaded_entries,
            "uptime": round(time.time() - self.started, 3),
        }

    # -- routing ---------------------------------------------------------------------------------
    def route(self, ino: int) -> Handler:
        """The handler of an inode: the one place that tells the inode ranges apart."""
        if ino >= DRAFT_BASE:
            return self.draft_handler
        node = self.ns.inodes.meta.get(ino)
        if node is None or isinstance(node, VersionDir):
            return self.versions  # vN/, an inode of a version tree, or none (ENOENT there)
        return self.listing

    def entry_of(self, node: Node) -> pyfuse3.EntryAttributes:
        """Attributes of a node of the listings without store I/O, from the handler it belongs to."""
        if isinstance(node, VersionDir):
            return self.versions.entry(node)
        if isinstance(node, DraftRoot):
            assert self.drafts is not None
            return self.drafts.provisional(node.slot, self.ns.started_ns)
        assert isinstance(node, (ListingDir, AliasLink))
        return self.listing.entry(node)

    def _new_file(self, h: Handler, f: Any, fh: int) -> None:
        self.files[fh] = f
        self._file_handlers[fh] = h

    # -- names and attributes --------------------------------------------------------------------
    @fuse_handler
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        self.stats["lookups"] += 1
        return await self.route(parent_inode).lookup(parent_inode, name, ctx)

    @fuse_handler
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        self.stats["getattrs"] += 1
        return await self.route(inode).getattr(inode, ctx)

    @fuse_handler
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        self.stats["readlinks"] += 1
        return await self.route(inode).readlink(inode, ctx)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        self.stats["forgets"] += len(inode_list)
        for ino, n in inode_list:
            self.route(ino).forget(ino, n)

    @fuse_handler
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        return await self.route(inode).setattr(inode, attr, fields, fh, ctx)

    # -- directories -----------------------------------------------------------------------------
    @fuse_handler
    async def opendir(self, inode: int, ctx: Any = None) -> int:  # or a FileInfo (kernel.py)
        if self.kernel.no_opendir:
            # Once: the kernel then opens every directory itself, with its listing cached, and
            # sends readdir with fh 0 and the directory in the token (artfsd/kernel.py).
            self.stats["opendir_enosys"] += 1
            raise pyfuse3.FUSEError(errno.ENOSYS)
        h = self.route(inode)
        state, immutable = await h.opendir(inode, ctx)
        fh = next(self._fh)
        self.dirs[fh] = (h, state)
        if immutable and self.kernel.cache_readdir:
            # A version's listing never changes (stable order and offsets): the kernel may keep it.
            return pyfuse3.FileInfo(fh=fh, keep_cache=True, cache_readdir=True)  # type: ignore[call-arg,return-value,unused-ignore]
        return fh

    @fuse_handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if fh == 0 and self.kernel.no_opendir:  # no handle: the directory's state for this call
            inode: int = token.inode  # type: ignore[attr-defined,unused-ignore]
            h = self.route(inode)
            state, _ = await h.opendir(inode, None)
            self.stats["readdirs"] += 1
            try:
                await h.readdir(state, start_id, token)
            finally:
                await h.releasedir(state)
            return
        d = self.dirs.get(fh)
        if d is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        self.stats["readdirs"] += 1
        await d[0].readdir(d[1], start_id, token)

    async def releasedir(self, fh: int) -> None:
        d = self.dirs.pop(fh, None)
        if d is not None:
            await d[0].releasedir(d[1])

    @fuse_handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        if fh == 0 and self.kernel.no_opendir:
            # No handle says which directory: make every open draft durable (more than asked for,
            # never less). Only drafts have anything to sync.
            await self.draft_handler.fsync_all(datasync)
            return
        d = self.dirs.get(fh)
        if d is not None:
            await d[0].fsyncdir(d[1], datasync)

    # -- files -----------------------------------------------------------------------------------
    @fuse_handler
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        h = self.route(inode)
        fh = next(self._fh)
        f, info = await h.open(inode, flags, ctx, fh)
        self._new_file(h, f, fh)
        return info

    @fuse_handler
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        h = self.route(parent_inode)
        fh = next(self._fh)
        f, info, entry = await h.create(parent_inode, name, mode, flags, ctx, fh)
        self._new_file(h, f, fh)
        return info, entry

    async def read(self, fh: int, off: int, size: int) -> bytes:
        f = self.files.get(fh)
        if f is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if f.__class__ is OpenFile and f.handle is not None and self.complete_reads.takes(f.size):
            fd = f.handle.fd  # >= 0: the blob is complete and verified (RefReads: -1)
            if fd >= 0:
                return await self._read_complete_blob(fh, f, fd, off, size)  # type: ignore[no-any-return]
        return await self._file_handlers[fh].read(f, off, size)  # raises FUSEError only

    async def _read_complete_blob(self, fh: int, f: OpenFile, fd: int, off: int, size: int) -> Any:
        """A read of a complete, verified cache blob, with one copy (:class:`artfsd.kernel.CompleteReads`):
        the range ``(fd, offset, length)`` of its cache file, which pyfuse3 (zero-copy-reads patch)
        has libfuse splice into the kernel, or a view of the cache file mapped (stock pyfuse3).

        The reply is sent on the event loop right after this returns: a range whose pages are
        not in memory is read into the page cache in a worker thread first. Anything that fails
        there (or takes longer than the mount's timeout) is left to the ordinary read, which
        reports it.
        """
        if off >= f.size or size <= 0:
            return b""
        length = min(size, f.size - off)
        r = self.complete_reads
        hint = r.ready(fh, fd, off, length, f.size)
        if hint is not None:
            r.stats["complete_fills"] += 1
            filled = False
            with trio.move_on_after(self.timeout):
                try:
                    await trio.to_thread.run_sync(r.fill, fd, off, length, hint, limiter=r.limiter,
                                                  abandon_on_cancel=True)
                    filled = True
                except OSError as e:
                    log.debug("spliced read of %s [%d:%d]: %s", f.what, off, off + length, e)
            if not filled or f.handle is None or f.handle.fd != fd:  # failed, timed out, or released meanwhile
                return await self.versions.read(f, off, size)
        self.stats["reads"] += 1
        self.stats["read_bytes"] += length
        return r.answer(fh, fd, off, length)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        f = self.files.get(fh)
        if f is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await self._file_handlers[fh].write(f, off, buf)  # raises FUSEError only

    def write_fd(self, fh: int, off: int, size: int) -> int:
        f = self.files.get(fh)
        if f is None:
            return -1  # write answers EBADF
        return self._file_handlers[fh].write_fd(f, off, size)

    def write_fd_done(self, fh: int, off: int, result: int) -> int:
        return self._file_handlers[fh].write_fd_done(self.files[fh], off, result)  # raises FUSEError only

    async def flush(self, fh: int) -> None:
        # Nothing to do at close(2) (a draft's writes reach the staged file as they come; the
        # release follows): ENOSYS tells the kernel to stop sending FLUSH at all, one request
        # less per close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: int) -> None:
        self.stats["releases"] += 1
        self.complete_reads.forget(fh)  # its read state and mapping (artfsd/kernel.py)
        f = self.files.pop(fh, None)
        h = self._file_handlers.pop(fh, None)
        if f is not None and h is not None:
            await h.release(f)  # logs what fails: a close has no one to tell

    @fuse_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        f = self.files.get(fh)
        if f is not None:
            await self._file_handlers[fh].fsync(f, datasync)

    # -- extended attributes ---------------------------------------------------------------------
    @fuse_handler
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        try:
            sname = name.decode()
        except UnicodeDecodeError:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None
        if not sname.startswith("user."):
            # security.*, system.* (ACLs), trusted.*: not supported here, and saying so lets
            # ``ls -l`` stop asking for every file (it remembers ENOTSUP per device)
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        value = await self.route(inode).getxattr(inode, sname)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @fuse_handler
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return [k.encode() for k in await self.route(inode).xattrs(inode)]

    @fuse_handler
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        await self.route(inode).setxattr(inode, _text(name), value, ctx)

    @fuse_handler
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        await self.route(inode).removexattr(inode, _text(name), ctx)

    # -- changes of names ------------------------------------------------------------------------
    @fuse_handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return await self.route(parent_inode).mknod(parent_inode, name, mode, rdev, ctx)

    @fuse_handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return await self.route(parent_inode).mkdir(parent_inode, name, mode, ctx)

    @fuse_handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.route(parent_inode).rmdir(parent_inode, name, ctx)

    @fuse_handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        return await self.route(parent_inode).symlink(parent_inode, name, target, ctx)

    @fuse_handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.route(parent_inode).unlink(parent_inode, name, ctx)

    @fuse_handler
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: Any) -> None:
        old, new = self.route(parent_inode_old), self.route(parent_inode_new)
        if old is not new:  # between drafts and the rest mv copies; the rest is read-only
            raise pyfuse3.FUSEError(errno.EXDEV if self.draft_handler in (old, new) else errno.EROFS)
        await old.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        return await self.route(new_parent_inode).link(inode, new_parent_inode, new_name, ctx)

    # -- the file system -------------------------------------------------------------------------
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = self.config.blksize
        s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = self.ns.inodes.next
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        if self.drafts is not None:  # what drafts can still grow by: the disk of the staging directory
            try:
                st = await trio.to_thread.run_sync(_statvfs_near, self.drafts.drafts.root)
                s.f_frsize = st.f_frsize
                s.f_blocks, s.f_bfree, s.f_bavail = st.f_blocks, st.f_bfree, st.f_bavail
                s.f_files, s.f_ffree, s.f_favail = st.f_files, st.f_ffree, st.f_favail
            except OSError as e:
                log.debug("statfs of the staging directory: %s", e)
        return s


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
