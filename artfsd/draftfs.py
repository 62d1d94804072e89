"""The draft handler: ``MNT/<project>/<artifact>/draft/`` and everything below it.

A thin adapter: it finds the :class:`artfsd.drafts.DraftSlot` and draft inode of a kernel inode
(``DraftSpace.find``) and calls :class:`artfsd.drafts.DraftSpace` (the namespace) and its parts
``files`` (open files) and ``commits`` (``user.artfs.*``, commits), which map requests onto the
artifact's :class:`artfs.lowlevel.Draft`. What it adds is what only the router's view has: the
lineage of writers (which process wrote which draft), file handle numbers, ``..`` of ``draft/``
(its artifact, a node of the listing handler), and the errno of a failed read or write.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import pyfuse3

from . import attrs
from .drafts import DraftFile, DraftSpace
from .errors import errno_for
from .handler import Handler, Mount


class DraftHandler(Handler):
    """Inodes of the draft space (``DRAFT_BASE`` and above)."""

    def __init__(self, m: Mount, drafts: DraftSpace | None) -> None:
        self.m = m
        self.drafts = drafts  # None: a read-only mount, which never hands out draft inodes

    def _find(self, ino: int) -> tuple[Any, int]:
        """(DraftSlot, draft inode) of a kernel inode."""
        if self.drafts is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.drafts.find(ino)

    @property
    def ds(self) -> DraftSpace:
        if self.drafts is None:
            raise pyfuse3.FUSEError(errno.EROFS)
        return self.drafts

    def _wrote(self, ctx: Any, slot: Any) -> None:
        self.m.lineage.wrote(ctx.pid, slot.project, slot.artifact)

    # -- names and attributes --------------------------------------------------------------------
    async def lookup(self, parent: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        slot, dino = self._find(parent)
        if name == b".." and dino == 1:
            return self.m.entry_of(slot.node.parent)
        return await self.ds.lookup(slot, dino, name)

    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return await self.ds.getattr(*self._find(inode))

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return await self.ds.readlink(*self._find(inode))

    # forget: drafts keep their inodes (sqlite rowids) for the mount's lifetime

    # -- directories -----------------------------------------------------------------------------
    async def opendir(self, inode: int, ctx: Any) -> tuple[Any, bool]:
        slot, dino = self._find(inode)
        await self.ds.opendir(slot, dino)
        return (slot, dino), False

    async def readdir(self, dir: Any, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        slot, dino = dir
        await self.ds.readdir(slot, dino, start_id, token)

    async def fsyncdir(self, dir: Any, datasync: bool) -> None:
        await self.ds.files.fsyncdir(dir[0])

    async def fsync_all(self, datasync: bool) -> None:
        """``fsyncdir`` of a directory the router cannot name (no opendir): every open draft."""
        if self.drafts is None:
            return
        for slot in list(self.drafts.slots):
            if slot.draft is not None:
                await self.ds.files.fsyncdir(slot)

    # -- files -----------------------------------------------------------------------------------
    async def open(self, inode: int, flags: int, ctx: Any, fh: int) -> tuple[Any, pyfuse3.FileInfo]:
        slot, dino = self._find(inode)
        df = await self.ds.files.open(slot, dino, flags)
        if ctx is not None and (flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC):
            self._wrote(ctx, slot)
        self.m.stats["opens"] += 1
        # the page cache stays valid across opens: every change of a draft file passes the kernel
        return df, pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False)

    async def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Any,
                     fh: int) -> tuple[Any, pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        slot, dino = self._find(parent)
        df, entry = await self.ds.files.create(slot, dino, name, mode, ctx)
        self._wrote(ctx, slot)
        self.m.stats["opens"] += 1
        return df, pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False), entry

    async def read(self, file: Any, off: int, size: int) -> bytes:
        f: DraftFile = file
        try:
            return await self.ds.files.read(f, off, size)
        except Exception as e:
            raise pyfuse3.FUSEError(errno_for(e, f"read {f.slot.name}/draft inode {f.dino}")) from None

    async def write(self, file: Any, off: int, buf: bytes) -> int:
        f: DraftFile = file
        try:
            return await self.ds.files.write(f, off, buf)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:
            raise pyfuse3.FUSEError(errno_for(e, f"write {f.slot.name}/draft inode {f.dino}")) from None

    def write_fd(self, file: Any, off: int, size: int) -> int:
        return self.ds.files.write_fd(file, off, size)

    def write_fd_done(self, file: Any, off: int, result: int) -> int:
        f: DraftFile = file
        try:
            return self.ds.files.write_fd_done(f, off, result)
        except Exception as e:
            raise pyfuse3.FUSEError(errno_for(e, f"write {f.slot.name}/draft inode {f.dino}")) from None

    async def release(self, file: Any) -> None:
        f: DraftFile = file
        try:
            await self.ds.files.release(f)
        except Exception as e:
            errno_for(e, f"close {f.slot.name}/draft inode {f.dino}")

    async def fsync(self, file: Any, datasync: bool) -> None:
        await self.ds.files.fsync(file, datasync)

    # -- extended attributes ---------------------------------------------------------------------
    async def getxattr(self, inode: int, name: str) -> bytes | None:
        slot, dino = self._find(inode)
        if name == attrs.full(attrs.LAST_COMMIT):  # polled by `artfs commit`: cheap
            return self.ds.commits.last_commit_xattr(slot, dino)
        return (await self.ds.commits.xattrs(slot, dino)).get(name)

    async def xattrs(self, inode: int) -> dict[str, bytes]:
        return await self.ds.commits.xattrs(*self._find(inode))

    async def setxattr(self, inode: int, name: str, value: bytes, ctx: Any) -> None:
        slot, dino = self._find(inode)
        await self.ds.commits.setxattr(slot, dino, name, value)

    async def removexattr(self, inode: int, name: str, ctx: Any) -> None:
        slot, dino = self._find(inode)
        await self.ds.commits.removexattr(slot, dino, name)

    # -- changes ---------------------------------------------------------------------------------
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        slot, dino = self._find(inode)
        return await self.ds.setattr(slot, dino, attr, fields)

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Any) -> pyfuse3.EntryAttributes:
        slot, dino = self._find(parent)
        return await self.ds.mknod(slot, dino, name, mode, rdev, ctx)

    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        slot, dino = self._find(parent)
        self._wrote(ctx, slot)
        return await self.ds.mkdir(slot, dino, name, mode, ctx)

    async def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
        slot, dino = self._find(parent)
        await self.ds.rmdir(slot, dino, name)

    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        slot, dino = self._find(parent)
        return await self.ds.symlink(slot, dino, name, target, ctx)

    async def unlink(self, parent: int, name: bytes, ctx: Any) -> None:
        slot, dino = self._find(parent)
        await self.ds.unlink(slot, dino, name)
        self._wrote(ctx, slot)

    async def rename(self, old_parent: int, old: bytes, new_parent: int, new: bytes, flags: int, ctx: Any) -> None:
        so, do = self._find(old_parent)
        sn, dn = self._find(new_parent)
        if so is not sn:
            raise pyfuse3.FUSEError(errno.EXDEV)  # another artifact's draft: mv copies
        await self.ds.rename(so, do, old, dn, new, flags)
        self._wrote(ctx, so)

    async def link(self, inode: int, new_parent: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        # a version is a list of files: no hard links (tools such as git fall back to a copy or rename)
        raise pyfuse3.FUSEError(errno.EPERM)
