"""The draft space's bookkeeping: slots (one per artifact), the inode numbering, open-file state,
worker threads, and the attributes the kernel sees (:class:`SlotSpace`, the part of
:class:`artfsd.drafts.DraftSpace` its other parts, ``DraftFiles`` and ``DraftCommits``, are built on).

Slots and opening
    Every artifact the mount lists gets a :class:`DraftSlot` (no I/O). Its draft is opened on the
    first access of ``draft/`` (``Drafts.open``: a clean draft moves to the artifact's current
    latest then, and only then) and stays open, holding the draft's flock, until unmount.

Inodes
    A draft numbers its nodes itself (sqlite rowids: stable, never reused, the root is 1). Slot
    ``k`` maps node ``i`` to ``DRAFT_BASE + k * DRAFT_SPAN + i``: far above every inode of the
    read side (which counts up from 2), so one comparison tells the two apart and no table is
    needed in either direction.

Threads: see :mod:`artfsd.drafts` (``quick`` runs a short draft method on the loop when the
draft's lock is free and no commit runs; ``run`` sends anything else to the draft's own threads).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import stat
import threading
import time
from typing import Any, Awaitable, Callable

import pyfuse3
import trio

from artfs.lowlevel import ROOT, Attr, Draft, DraftCommit, Drafts, MountConfig

from .nodes import ArtifactDir, DraftRoot

log = logging.getLogger("artfsd")

DRAFT_BASE = 1 << 48  # first inode of the draft space
DRAFT_SPAN = 1 << 36  # inodes per draft
TIMEOUT = 1.0  # kernel cache timeout of draft entries and attributes
READDIR_BATCH = 512


def is_draft_inode(ino: int) -> bool:
    return ino >= DRAFT_BASE


def _fuse(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


class DraftInode:
    """What the open handles of one draft inode share (see the module docstring)."""

    __slots__ = ("fd", "path", "old", "blob", "size", "nopen", "marked", "gone")

    def __init__(self) -> None:
        self.fd = -1  # the staged file, O_RDWR
        self.path: str | None = None  # ... and its path (a new one after a copy-up)
        self.old: list[int] = []  # fds swapped out, closed with the last handle
        self.blob: Any = None  # the base bytes while not staged (a LazyBlobs handle)
        self.size = 0  # size of the base bytes
        self.nopen = 0
        self.marked = False  # a write was announced since the last commit (the digest is invalid)
        self.gone: Attr | None = None  # unlinked (or renamed over) while open: its last attributes

    def close(self) -> None:
        for fd in [self.fd, *self.old]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd, self.old = -1, []
        if self.blob is not None:
            with contextlib.suppress(Exception):
                self.blob.close()
            self.blob = None


class DraftFile:
    """One open handle (a FUSE ``fh``) of a draft file."""

    __slots__ = ("slot", "dino", "state", "write")

    def __init__(self, slot: "DraftSlot", dino: int, state: DraftInode, write: bool) -> None:
        self.slot = slot
        self.dino = dino
        self.state = state
        self.write = write  # holds an open_for_write registration (release it on close)


class DraftSlot:
    """The draft of one artifact, as the mount knows it: unopened, open, committing."""

    def __init__(self, index: int, project: str, artifact: str) -> None:
        self.index = index
        self.project = project
        self.artifact = artifact
        self.base = DRAFT_BASE + index * DRAFT_SPAN
        self.draft: Draft | None = None
        self.node: DraftRoot | None = None
        self.inodes: dict[int, DraftInode] = {}
        self.busy = False  # a commit runs: every draft call goes to a worker thread
        self.idle: trio.Event | None = None  # set when the running commit ends (writes wait for it)
        self.limiter: trio.CapacityLimiter | None = None  # this draft's worker threads
        self.last_commit: DraftCommit | None = None  # user.artfs.last_commit
        self.opening: trio.Lock | None = None  # held while the draft is opened
        self.committing: trio.Lock | None = None  # held while a commit runs

    @property
    def name(self) -> str:
        return f"{self.project}/{self.artifact}"


class SlotSpace:
    """Slots, inodes, threads and attributes of the drafts of a mount (a part of
    :class:`artfsd.drafts.DraftSpace`, shared by its other parts)."""

    def __init__(self, store: Any, blobs: Any, config: MountConfig, *, lineage: Any,
                 on_commit: Callable[[DraftSlot], Awaitable[None]] | None,
                 ref_reader: Callable[[], Any] | None) -> None:
        """``lineage``: artfsd.lineage.Lineage, which names a commit's logger (the first writer
        since the last commit); ``on_commit``: called after each commit through the mount."""
        self.store = store
        self.config = config
        self.group = config.group  # artfs mount --group: drafts are committed as parts of this group
        self.blobs = blobs
        self.mountpoint = config.mountpoint
        self.drafts = Drafts(store, root=config.staging)
        self.uid = os.getuid()
        self.gid = os.getgid() if config.gid is None else config.gid
        #: see ``Operations.mode_clear`` (``--allow-group``)
        self.mode_clear = config.mode_clear
        self.ref_reader = ref_reader
        self.threads = config.draft_threads  # worker threads per draft
        self.commit_limiter = trio.CapacityLimiter(4)
        self.slots: list[DraftSlot] = []
        self.by_name: dict[tuple[str, str], DraftSlot] = {}
        self.on_commit = on_commit
        self.lineage = lineage
        self.fd_lock = threading.Lock()  # swaps of DraftInode.fd/blob between threads
        # draft_fd_writes: those of draft_writes whose bytes pyfuse3 wrote itself (write_fd)
        self.stats = {"draft_writes": 0, "draft_write_bytes": 0, "draft_fd_writes": 0, "commits": 0}
        self.nursery: trio.Nursery | None = None  # where background commits run (``start``)

    @property
    def owner(self) -> dict[str, Any]:
        return {"what": "artfs mount", "mountpoint": self.mountpoint}

    # -- slots and inodes ------------------------------------------------------------------------
    def node_for(self, d: ArtifactDir) -> DraftRoot:
        """The ``draft`` node of an artifact directory (the namespace calls this once per artifact)."""
        key = (d.project, d.name)
        slot = self.by_name.get(key)
        if slot is None:
            slot = self.by_name[key] = DraftSlot(len(self.slots), *key)
            self.slots.append(slot)
        if slot.node is None:
            slot.node = DraftRoot(slot.base + ROOT, d, slot)
        return slot.node

    def find(self, ino: int) -> tuple[DraftSlot, int]:
        k, dino = divmod(ino - DRAFT_BASE, DRAFT_SPAN)
        if k >= len(self.slots) or dino == 0:
            raise _fuse(errno.ENOENT)
        return self.slots[k], dino

    def pending(self) -> list[tuple[str, str]]:
        """(project, artifact) of every draft in staging with changes not committed (at mount)."""
        out = []
        for ref in self.drafts.list():
            try:
                with Draft.open(ref.path, readonly=True) as d:
                    if d.dirty:
                        out.append((ref.project, ref.artifact))
            except Exception as e:
                log.warning("%s: cannot read the draft in %s: %s", f"{ref.project}/{ref.artifact}", ref.path, e)
        return out

    async def draft(self, slot: DraftSlot) -> Draft:
        """The slot's draft, opened (in a worker thread) on first use."""
        d = slot.draft
        if d is not None:
            return d
        if slot.opening is None:
            slot.opening = trio.Lock()
        async with slot.opening:
            if slot.draft is None:
                slot.draft = await self.run(slot, self._open, slot)
        return slot.draft

    def _open(self, slot: DraftSlot) -> Draft:
        d = self.drafts.open(slot.project, slot.artifact, owner=self.owner)
        try:
            d.staging.checkpoint(automatic=False)  # the loop runs transactions: no fsync inside them
        except BaseException:
            d.close()
            raise
        base = d.base_version
        log.info("%s: draft opened (%s%s) in %s", slot.name, "new artifact" if base is None else f"base v{base}",
                 ", with changes" if d.dirty else "", d.path)
        return d

    async def run(self, slot: DraftSlot, fn: Callable[..., Any], *args: Any) -> Any:
        """In a worker thread; each draft has its own threads, so requests waiting for one draft's
        commit never take the threads another draft needs."""
        if slot.limiter is None:
            slot.limiter = trio.CapacityLimiter(self.threads)
        return await trio.to_thread.run_sync(fn, *args, limiter=slot.limiter)

    async def quick(self, slot: DraftSlot, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a short draft method right here if the draft's lock is free and no commit runs,
        else in a worker thread (see the module docstring)."""
        d = slot.draft
        if d is not None and not slot.busy:
            with d.staging.unless_busy() as free:
                if free:
                    return fn(*args)
        return await self.run(slot, fn, *args)

    def start(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        nursery.start_soon(self._checkpoints)

    async def _checkpoints(self, every: float = 5.0) -> None:
        """Copy each open draft's sqlite journal into its database now and then (in a thread)."""
        while True:
            await trio.sleep(every)
            for slot in list(self.slots):
                d = slot.draft
                if d is not None and not slot.busy:
                    try:
                        await self.run(slot, d.staging.checkpoint)
                    except Exception as e:
                        log.warning("%s: checkpoint of the draft's journal: %s", slot.name, e)

    # -- attributes ------------------------------------------------------------------------------
    def entry(self, slot: DraftSlot, a: Attr) -> pyfuse3.EntryAttributes:
        """What the kernel caches and checks permissions against (the mount uses
        ``default_permissions``): the node's own owner, mode and three times; a node without an
        owner of its own (base files, drafts from before owners were kept) is the daemon's user's."""
        e = pyfuse3.EntryAttributes()
        e.st_ino = slot.base + a.ino
        e.st_mode = a.mode & ~self.mode_clear
        e.st_nlink = a.nlink
        e.st_rdev = a.rdev
        e.st_uid = self.uid if a.uid is None else a.uid
        # --allow-group (mode_clear set): every file shows the mount's group, so that only its
        # members (and the owner) pass the kernel's default_permissions
        e.st_gid = self.gid if a.gid is None or self.mode_clear else a.gid
        e.st_size = a.size
        e.st_blksize = self.config.blksize
        # a staged file: the blocks it really takes (sparse files are small); a base file: its size
        e.st_blocks = (a.size + 511) // 512 if a.blocks is None else a.blocks
        e.st_mtime_ns = a.mtime_ns
        e.st_atime_ns = a.mtime_ns if a.atime_ns is None else a.atime_ns
        e.st_ctime_ns = a.mtime_ns if a.ctime_ns is None else a.ctime_ns
        e.attr_timeout = e.entry_timeout = TIMEOUT
        return e

    def provisional(self, slot: DraftSlot, mtime_ns: int) -> pyfuse3.EntryAttributes:
        """Attributes of ``draft/`` in a listing of its artifact, without opening the draft."""
        e = self.entry(slot, Attr(ROOT, "dir", stat.S_IFDIR | 0o755, 0, mtime_ns, nlink=2))
        e.attr_timeout = 0.0  # a stat asks again (getattr), which opens the draft
        return e

    @staticmethod
    def orphan(dino: int, st: DraftInode) -> Attr:
        """Attributes of a file unlinked while open (link count 0): what it had, times and size
        from its fd."""
        a = st.gone or Attr(dino, "file", stat.S_IFREG | 0o644, st.size, time.time_ns())
        if st.fd >= 0:
            s = os.fstat(st.fd)
            return dataclasses.replace(a, size=s.st_size, mtime_ns=s.st_mtime_ns, atime_ns=s.st_atime_ns,
                                       ctime_ns=max(s.st_ctime_ns, a.ctime_ns or 0), blocks=s.st_blocks, nlink=0)
        return dataclasses.replace(a, nlink=0)

    def going(self, slot: DraftSlot, d: Draft, dparent: int, name: bytes) -> None:
        """Before an unlink or a rename over ``name``: if that file is open, keep its attributes
        for fstat (its node goes; its fd stays). Runs in the same call as the removal."""
        if not slot.inodes:
            return
        try:
            a = d.namespace.lookup(dparent, name)
        except OSError:
            return
        st = slot.inodes.get(a.ino)
        if st is not None:
            st.gone = a


def _owner(ctx: Any) -> dict[str, int | None]:
    """Who a FUSE request comes from: the owner of what it creates."""
    if ctx is None:
        return {"uid": None, "gid": None}
    return {"uid": int(ctx.uid), "gid": int(ctx.gid)}
