"""The writable ``draft/`` of every artifact: the FUSE side of :mod:`artfs._draft`.

``MNT/<project>/<artifact>/draft/`` is an :class:`artfs._draft.Draft`, a copy-on-write view of
the artifact's latest version kept in the staging directory. This module maps FUSE requests onto
it and owns what only a mount has; :class:`DraftSpace` holds one part of each of these modules:

    draft_slots.py    ``space`` (``SlotSpace``): slots (one per artifact, opened on first use), the
                      inode numbering, threads, the attributes the kernel sees (:class:`DraftSlot`)
    draft_files.py    ``files`` (``DraftFiles``): open files: copy-up on open for writing, reads,
                      writes, fsync, release
    draft_commits.py  ``commits`` (``DraftCommits``): commits (``user.artfs.commit``, at unmount)
                      and the ``user.artfs.*`` attributes
    drafts.py         :class:`DraftSpace`: those parts, and the namespace (lookup, mkdir, rename,
                      setattr, ...)

Threads
    Draft methods take the draft's lock, which a commit holds only while it reads the namespace and
    records its result (not while hashing or uploading: requests on a draft being committed are
    answered at once, and namespace changes go to the next version). The trio loop never waits for it: a short method (an sqlite transaction in WAL
    mode, a local file operation: lookups, creating, renaming, a write) runs right on the loop
    when the lock is free and no commit runs (``Staging.unless_busy``), which saves two thread
    switches per request (measured on the busy 2-core test machine: tar x of 5,000 small files
    34 s -> 13 s; scheduling latency, not work, was the cost); anything else (a
    copy-up from the store, hashing, a commit, the lock taken) goes to a worker thread. A write
    also passes the draft's write gate, which only commits take exclusively, and they set
    ``slot.busy`` first, so a write on the loop never waits for it either: while ``slot.busy``, a
    write waits on the loop (``slot.idle``) for the commit to end, and a truncate in a worker thread. sqlite's automatic
    checkpoints (which fsync) are off; a background task checkpoints every few seconds in a
    worker thread.

Commits, and what a crash leaves: :mod:`artfsd.draft_commits`.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import stat
import time
from typing import Any, Awaitable, Callable

import pyfuse3

from artfs.lowlevel import Attr, MountConfig

from .attrs import PREFIX as XATTR
from .draft_commits import STATUS_MAX, DraftCommits, status_value
from .draft_files import DraftFiles
from .draft_slots import (
    DRAFT_BASE, DRAFT_SPAN, READDIR_BATCH, TIMEOUT, DraftFile, DraftInode, DraftSlot, SlotSpace, _fuse, _owner,
    is_draft_inode,
)
from .nodes import ArtifactDir, DraftRoot

__all__ = [
    "DRAFT_BASE", "DRAFT_SPAN", "READDIR_BATCH", "STATUS_MAX", "TIMEOUT", "XATTR", "DraftFile",
    "DraftInode", "DraftSlot", "DraftSpace", "is_draft_inode", "status_value",
]


class DraftSpace:
    """Every draft of a writable mount: its parts ``space`` (slots, inodes, threads), ``files``
    (open files) and ``commits``, and the namespace of each draft."""

    def __init__(self, store: Any, blobs: Any, config: MountConfig, *, lineage: Any,
                 on_commit: Callable[[DraftSlot], Awaitable[None]] | None,
                 ref_reader: Callable[[], Any] | None) -> None:
        """See :class:`artfsd.draft_slots.SlotSpace` for the arguments."""
        self.space = SlotSpace(store, blobs, config, lineage=lineage, on_commit=on_commit, ref_reader=ref_reader)
        self.files = DraftFiles(self.space)
        self.commits = DraftCommits(self.space)
        # what the router and the daemon's main take from the space
        self.slots = self.space.slots
        self.stats = self.space.stats
        self.drafts = self.space.drafts
        self.draft = self.space.draft
        self.find = self.space.find
        self.start = self.space.start
        self.pending = self.space.pending
        self.provisional = self.space.provisional
        self.finish = self.commits.finish

    def node_for(self, d: ArtifactDir) -> DraftRoot:
        """The ``draft`` node of an artifact directory (:meth:`SlotSpace.node_for`)."""
        return self.space.node_for(d)

    # -- the namespace of a draft ------------------------------------------------------------------
    async def lookup(self, slot: DraftSlot, dino: int, name: bytes) -> pyfuse3.EntryAttributes:
        d = await self.space.draft(slot)

        def work() -> Attr:
            if name == b".":
                return d.namespace.getattr(dino)
            if name == b"..":
                return d.namespace.getattr(d.namespace.parent(dino))
            return d.namespace.lookup(dino, name)

        return self.space.entry(slot, await self.space.quick(slot, work))

    async def getattr(self, slot: DraftSlot, dino: int) -> pyfuse3.EntryAttributes:
        d = await self.space.draft(slot)
        try:
            a = await self.space.quick(slot, d.namespace.getattr, dino)
        except OSError as e:
            st = slot.inodes.get(dino)
            if e.errno != errno.ENOENT or st is None:
                raise
            a = self.space.orphan(dino, st)
        return self.space.entry(slot, a)

    async def readlink(self, slot: DraftSlot, dino: int) -> bytes:
        d = await self.space.draft(slot)
        target: str = await self.space.quick(slot, d.namespace.readlink, dino)
        return target.encode()

    async def opendir(self, slot: DraftSlot, dino: int) -> None:
        d = await self.space.draft(slot)
        a = await self.space.quick(slot, d.namespace.getattr, dino)
        if a.kind != "dir":
            raise _fuse(errno.ENOTDIR)

    async def readdir(self, slot: DraftSlot, dino: int, start_id: int, token: Any) -> None:
        d = await self.space.draft(slot)
        after = start_id  # the cookie of an entry is its draft inode: entries stay in place
        while True:
            batch = await self.space.quick(slot, functools.partial(d.namespace.readdir, dino, after, READDIR_BATCH))
            for name, a in batch:
                if not pyfuse3.readdir_reply(token, name.encode(), self.space.entry(slot, a), a.ino):
                    return
                after = a.ino
            if len(batch) < READDIR_BATCH:
                return

    async def mkdir(self, slot: DraftSlot, dparent: int, name: bytes, mode: int,
                    ctx: Any = None) -> pyfuse3.EntryAttributes:
        d = await self.space.draft(slot)

        def work() -> Attr:
            return d.namespace.getattr(d.namespace.mkdir(dparent, name, mode & 0o7777, **_owner(ctx)))

        return self.space.entry(slot, await self.space.quick(slot, work))

    async def symlink(self, slot: DraftSlot, dparent: int, name: bytes, target: bytes,
                      ctx: Any = None) -> pyfuse3.EntryAttributes:
        d = await self.space.draft(slot)

        def work() -> Attr:
            return d.namespace.getattr(d.namespace.symlink(dparent, name, target, **_owner(ctx)))

        return self.space.entry(slot, await self.space.quick(slot, work))

    async def mknod(self, slot: DraftSlot, dparent: int, name: bytes, mode: int, rdev: int = 0,
                    ctx: Any = None) -> pyfuse3.EntryAttributes:
        d = await self.space.draft(slot)

        def work() -> Attr:
            if stat.S_ISREG(mode):
                return d.namespace.getattr(d.namespace.create(dparent, name, mode & 0o7777, **_owner(ctx)))
            # FIFOs, sockets, devices: in the draft only (the kernel serves them; the mount is nodev)
            return d.namespace.getattr(d.namespace.mknod(dparent, name, mode, rdev, **_owner(ctx)))

        return self.space.entry(slot, await self.space.quick(slot, work))

    async def unlink(self, slot: DraftSlot, dparent: int, name: bytes) -> None:
        d = await self.space.draft(slot)

        def work() -> None:
            self.space.going(slot, d, dparent, name)
            d.namespace.unlink(dparent, name)

        await self.space.quick(slot, work)

    async def rmdir(self, slot: DraftSlot, dparent: int, name: bytes) -> None:
        d = await self.space.draft(slot)
        await self.space.quick(slot, d.namespace.rmdir, dparent, name)

    async def rename(self, slot: DraftSlot, old_parent: int, old: bytes, new_parent: int, new: bytes,
                     flags: int) -> None:
        d = await self.space.draft(slot)

        def work() -> None:
            if not flags & pyfuse3.RENAME_EXCHANGE:
                self.space.going(slot, d, new_parent, new)
            d.namespace.rename(old_parent, old, new_parent, new, flags)

        await self.space.quick(slot, work)

    async def setattr(self, slot: DraftSlot, dino: int, attr: Any, fields: Any) -> pyfuse3.EntryAttributes:
        d = await self.space.draft(slot)
        st = slot.inodes.get(dino)
        # the kernel checked the caller's rights (default_permissions) and, for a chown or a
        # write by another user, sends the mode with set-user/group-ID bits cleared
        uid = attr.st_uid if fields.update_uid else None
        gid = attr.st_gid if fields.update_gid else None

        def work() -> Attr:
            try:
                if fields.update_size:
                    d.staging.truncate(dino, attr.st_size)
                    if st is not None:
                        self.files.restage(d, dino, st)
                if uid is not None or gid is not None:  # kept in the draft, not in a version
                    d.namespace.chown(dino, uid, gid)
                if fields.update_mode:
                    d.namespace.chmod(dino, attr.st_mode & 0o7777)
                if fields.update_mtime or fields.update_atime:
                    d.namespace.utimens(dino, attr.st_atime_ns if fields.update_atime else None,
                              attr.st_mtime_ns if fields.update_mtime else None)
                return d.namespace.getattr(dino)
            except OSError as e:
                if e.errno != errno.ENOENT or st is None or st.fd < 0:
                    raise
                return self._orphan_setattr(dino, st, attr, fields, uid, gid)

        # a truncate may copy a base file up from the store: a worker thread
        run = self.space.run if fields.update_size else self.space.quick
        return self.space.entry(slot, await run(slot, work))

    def _orphan_setattr(self, dino: int, st: DraftInode, attr: Any, fields: Any, uid: int | None,
                        gid: int | None) -> Attr:
        """setattr of a file unlinked while open: on its fd and its kept attributes."""
        if fields.update_size:
            os.ftruncate(st.fd, attr.st_size)
        if fields.update_mtime or fields.update_atime:
            s = os.fstat(st.fd)
            os.utime(st.fd, ns=(attr.st_atime_ns if fields.update_atime else s.st_atime_ns,
                                attr.st_mtime_ns if fields.update_mtime else s.st_mtime_ns))
        a = self.space.orphan(dino, st)
        change: dict[str, Any] = {}
        if fields.update_mode:
            change["mode"] = stat.S_IFREG | (attr.st_mode & 0o7777)
        if uid is not None:
            change["uid"] = uid
        if gid is not None:
            change["gid"] = gid
        if change or fields.update_size:
            change["ctime_ns"] = time.time_ns()
        st.gone = a = dataclasses.replace(a, **change)
        return a
