"""The writable ``draft/`` of every artifact: the FUSE side of :mod:`artfs._draft`.

``MNT/<project>/<artifact>/draft/`` is an :class:`artfs._draft.Draft`, a copy-on-write view of
the artifact's latest version kept in the staging directory. This module maps FUSE requests onto
it and owns what only a mount has:

Slots and opening
    Every artifact the mount lists gets a :class:`DraftSlot` (no I/O). Its draft is opened on the
    first access of ``draft/`` (``Drafts.open``: a clean draft moves to the artifact's current
    latest then, and only then) and stays open, holding the draft's flock, until unmount.

Inodes
    A draft numbers its nodes itself (sqlite rowids: stable, never reused, the root is 1). Slot
    ``k`` maps node ``i`` to ``DRAFT_BASE + k * DRAFT_SPAN + i``: far above every inode of the
    read side (which counts up from 2), so one comparison tells the two apart and no table is
    needed in either direction.

Open files (:class:`DraftInode`: one per inode with open handles, shared by all of them)
    Once the node is staged, an fd (``O_RDWR``) on its staged file; before that, a lazy reader of
    the base blob. Opening for writing stages the node (``open_for_write``: a copy-up, or an empty
    file for ``O_TRUNC``) and swaps the shared fd, so every reader sees every write at once. An fd
    swapped out is closed only when the last handle goes (a read in a worker thread may still
    use it). The daemon buffers nothing: each FUSE write is one ``pwrite`` into the staged file,
    in the kernel's page cache as soon as it returns, so a SIGKILL of the daemon loses nothing
    that was written. A node unlinked while open keeps its state: reads, writes, ``fstat`` and
    ``ftruncate`` go to the fd, as on a local disk.

Threads
    Draft methods take the draft's lock, which a commit holds only while it reads the namespace and
    records its result (not while hashing or uploading: requests on a draft being committed are
    answered at once, and namespace changes go to the next version). The trio loop never waits for it: a short method (an sqlite transaction in WAL
    mode, a local file operation: lookups, creating, renaming, a write) runs right on the loop
    when the lock is free and no commit runs (``Draft.unless_busy``), which saves two thread
    switches per request (measured on the busy 2-core test machine: tar x of 5,000 small files
    34 s -> 13 s; scheduling latency, not work, was the cost); anything else (a
    copy-up from the store, hashing, a commit, the lock taken) goes to a worker thread. A write
    also passes the draft's write gate, which only commits take exclusively, and they set
    ``slot.busy`` first, so a write on the loop never waits for it either: while ``slot.busy``, a
    write waits on the loop (``slot.idle``) for the commit to end, and a truncate in a worker thread. sqlite's automatic
    checkpoints (which fsync) are off; a background task checkpoints every few seconds in a
    worker thread.

Commit
    ``setxattr user.artfs.commit`` on ``draft/`` commits in a worker thread while the request
    waits; the result, or the error, is ``user.artfs.last_commit``. With ``"wait": false`` in the
    request (what ``artfs commit`` sends) the setxattr returns at once and the commit runs in the
    background: the kernel holds ``draft/``'s inode lock for as long as a setxattr runs, which
    would keep every lookup and listing in ``draft/`` waiting for the whole commit. At unmount
    (:meth:`DraftSpace.finish`, after the kernel has let go of the mount) every draft that
    differs from its base is committed: those opened in this session and those an earlier one
    left in staging (a SIGKILL, a store that was down). A draft equal to its base makes no
    version; a new artifact's draft that stayed empty is removed. What a crash at each step of a
    commit leaves, and how the next commit finishes it exactly once, is the draft library's
    business (:mod:`artfs._draft`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import logging
import os
import re
import stat
import threading
import time
from typing import Any, Awaitable, Callable, Iterable

import pyfuse3
import trio

from artfs import InvalidName, PartResult
from artfs.lowlevel import ROOT, Attr, Draft, DraftBusy, Drafts, is_pinned

from .attrs import PREFIX as XATTR
from .namespace import ArtifactDir, DraftRoot

log = logging.getLogger("artfsd")

DRAFT_BASE = 1 << 48  # first inode of the draft space
DRAFT_SPAN = 1 << 36  # inodes per draft
TIMEOUT = 1.0  # kernel cache timeout of draft entries and attributes
BLKSIZE = 1 << 20
READDIR_BATCH = 512


def is_draft_inode(ino: int) -> bool:
    return ino >= DRAFT_BASE


def _fuse(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


class _Empty:
    """The reader of an empty base file."""

    def read(self, off: int, length: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


class _RefReads:
    """Reads of a reference of the base version, straight from where it lives."""

    def __init__(self, reader: Any, entry: Any) -> None:
        self.reader = reader
        self.entry = entry

    def read(self, off: int, length: int) -> bytes:
        data: bytes = self.reader.read_range(self.entry, off, length)
        return data

    def close(self) -> None:
        pass


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
        self.last_commit: dict[str, Any] | None = None
        self._opening: trio.Lock | None = None
        self._committing: trio.Lock | None = None

    @property
    def name(self) -> str:
        return f"{self.project}/{self.artifact}"


class DraftSpace:
    """Every draft of a writable mount: slots, inodes, open files, commits."""

    #: see ``Operations.mode_clear`` (``--allow-group``)
    mode_clear = 0

    def __init__(self, store: Any, blobs: Any, *, mountpoint: str, staging: str | None = None,
                 uid: int | None = None, gid: int | None = None, ref_reader: Callable[[], Any] | None = None,
                 threads: int = 16, group: str | None = None) -> None:
        self.store = store
        self.group = group  # artfs mount --group: drafts are committed as parts of this group
        self.blobs = blobs
        self.mountpoint = mountpoint
        self.drafts = Drafts(store, root=staging)
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.ref_reader = ref_reader
        self.threads = threads  # worker threads per draft
        self.commit_limiter = trio.CapacityLimiter(4)
        self.slots: list[DraftSlot] = []
        self.by_name: dict[tuple[str, str], DraftSlot] = {}
        self.on_commit: Callable[[DraftSlot], Awaitable[None]] | None = None
        #: artfsd.lineage.Lineage: names a commit's logger (the first writer since the last commit)
        self.lineage: Any = None
        self._lock = threading.Lock()  # swaps of DraftInode.fd/blob between threads
        self.stats = {"draft_writes": 0, "draft_write_bytes": 0, "commits": 0}
        self._nursery: trio.Nursery | None = None

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
        if slot._opening is None:
            slot._opening = trio.Lock()
        async with slot._opening:
            if slot.draft is None:
                slot.draft = await self._run(slot, self._open, slot)
        return slot.draft

    def _open(self, slot: DraftSlot) -> Draft:
        d = self.drafts.open(slot.project, slot.artifact, owner=self.owner)
        try:
            d.checkpoint(automatic=False)  # the loop runs transactions: no fsync inside them
        except BaseException:
            d.close()
            raise
        base = d.base_version
        log.info("%s: draft opened (%s%s) in %s", slot.name, "new artifact" if base is None else f"base v{base}",
                 ", with changes" if d.dirty else "", d.path)
        return d

    async def _run(self, slot: DraftSlot, fn: Callable[..., Any], *args: Any) -> Any:
        """In a worker thread; each draft has its own threads, so requests waiting for one draft's
        commit never take the threads another draft needs."""
        if slot.limiter is None:
            slot.limiter = trio.CapacityLimiter(self.threads)
        return await trio.to_thread.run_sync(fn, *args, limiter=slot.limiter)

    async def _quick(self, slot: DraftSlot, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a short draft method right here if the draft's lock is free and no commit runs,
        else in a worker thread (see the module docstring)."""
        d = slot.draft
        if d is not None and not slot.busy:
            with d.unless_busy() as free:
                if free:
                    return fn(*args)
        return await self._run(slot, fn, *args)

    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        nursery.start_soon(self._checkpoints)

    async def _checkpoints(self, every: float = 5.0) -> None:
        """Copy each open draft's sqlite journal into its database now and then (in a thread)."""
        while True:
            await trio.sleep(every)
            for slot in list(self.slots):
                d = slot.draft
                if d is not None and not slot.busy:
                    try:
                        await self._run(slot, d.checkpoint)
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
        e.st_blksize = BLKSIZE
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
    def _orphan(dino: int, st: DraftInode) -> Attr:
        """Attributes of a file unlinked while open (link count 0): what it had, times and size
        from its fd."""
        a = st.gone or Attr(dino, "file", stat.S_IFREG | 0o644, st.size, time.time_ns())
        if st.fd >= 0:
            s = os.fstat(st.fd)
            return dataclasses.replace(a, size=s.st_size, mtime_ns=s.st_mtime_ns, atime_ns=s.st_atime_ns,
                                       ctime_ns=max(s.st_ctime_ns, a.ctime_ns or 0), blocks=s.st_blocks, nlink=0)
        return dataclasses.replace(a, nlink=0)

    def _going(self, slot: DraftSlot, d: Draft, dparent: int, name: bytes) -> None:
        """Before an unlink or a rename over ``name``: if that file is open, keep its attributes
        for fstat (its node goes; its fd stays). Runs in the same call as the removal."""
        if not slot.inodes:
            return
        try:
            a = d.lookup(dparent, name)
        except OSError:
            return
        st = slot.inodes.get(a.ino)
        if st is not None:
            st.gone = a

    # -- the namespace of a draft ------------------------------------------------------------------
    async def lookup(self, slot: DraftSlot, dino: int, name: bytes) -> pyfuse3.EntryAttributes:
        d = await self.draft(slot)

        def work() -> Attr:
            if name == b".":
                return d.getattr(dino)
            if name == b"..":
                return d.getattr(d.parent(dino))
            return d.lookup(dino, name)

        return self.entry(slot, await self._quick(slot, work))

    async def getattr(self, slot: DraftSlot, dino: int) -> pyfuse3.EntryAttributes:
        d = await self.draft(slot)
        try:
            a = await self._quick(slot, d.getattr, dino)
        except OSError as e:
            st = slot.inodes.get(dino)
            if e.errno != errno.ENOENT or st is None:
                raise
            a = self._orphan(dino, st)
        return self.entry(slot, a)

    async def readlink(self, slot: DraftSlot, dino: int) -> bytes:
        d = await self.draft(slot)
        target: str = await self._quick(slot, d.readlink, dino)
        return target.encode()

    async def opendir(self, slot: DraftSlot, dino: int) -> None:
        d = await self.draft(slot)
        a = await self._quick(slot, d.getattr, dino)
        if a.kind != "dir":
            raise _fuse(errno.ENOTDIR)

    async def readdir(self, slot: DraftSlot, dino: int, start_id: int, token: Any) -> None:
        d = await self.draft(slot)
        after = start_id  # the cookie of an entry is its draft inode: entries stay in place
        while True:
            batch = await self._quick(slot, functools.partial(d.readdir, dino, after, READDIR_BATCH))
            for name, a in batch:
                if not pyfuse3.readdir_reply(token, name.encode(), self.entry(slot, a), a.ino):
                    return
                after = a.ino
            if len(batch) < READDIR_BATCH:
                return

    async def mkdir(self, slot: DraftSlot, dparent: int, name: bytes, mode: int,
                    ctx: Any = None) -> pyfuse3.EntryAttributes:
        d = await self.draft(slot)

        def work() -> Attr:
            return d.getattr(d.mkdir(dparent, name, mode & 0o7777, **_owner(ctx)))

        return self.entry(slot, await self._quick(slot, work))

    async def symlink(self, slot: DraftSlot, dparent: int, name: bytes, target: bytes,
                      ctx: Any = None) -> pyfuse3.EntryAttributes:
        d = await self.draft(slot)

        def work() -> Attr:
            return d.getattr(d.symlink(dparent, name, target, **_owner(ctx)))

        return self.entry(slot, await self._quick(slot, work))

    async def mknod(self, slot: DraftSlot, dparent: int, name: bytes, mode: int, rdev: int = 0,
                    ctx: Any = None) -> pyfuse3.EntryAttributes:
        d = await self.draft(slot)

        def work() -> Attr:
            if stat.S_ISREG(mode):
                return d.getattr(d.create(dparent, name, mode & 0o7777, **_owner(ctx)))
            # FIFOs, sockets, devices: in the draft only (the kernel serves them; the mount is nodev)
            return d.getattr(d.mknod(dparent, name, mode, rdev, **_owner(ctx)))

        return self.entry(slot, await self._quick(slot, work))

    async def unlink(self, slot: DraftSlot, dparent: int, name: bytes) -> None:
        d = await self.draft(slot)

        def work() -> None:
            self._going(slot, d, dparent, name)
            d.unlink(dparent, name)

        await self._quick(slot, work)

    async def rmdir(self, slot: DraftSlot, dparent: int, name: bytes) -> None:
        d = await self.draft(slot)
        await self._quick(slot, d.rmdir, dparent, name)

    async def rename(self, slot: DraftSlot, old_parent: int, old: bytes, new_parent: int, new: bytes,
                     flags: int) -> None:
        d = await self.draft(slot)

        def work() -> None:
            if not flags & pyfuse3.RENAME_EXCHANGE:
                self._going(slot, d, new_parent, new)
            d.rename(old_parent, old, new_parent, new, flags)

        await self._quick(slot, work)

    async def setattr(self, slot: DraftSlot, dino: int, attr: Any, fields: Any) -> pyfuse3.EntryAttributes:
        d = await self.draft(slot)
        st = slot.inodes.get(dino)
        # the kernel checked the caller's rights (default_permissions) and, for a chown or a
        # write by another user, sends the mode with set-user/group-ID bits cleared
        uid = attr.st_uid if fields.update_uid else None
        gid = attr.st_gid if fields.update_gid else None

        def work() -> Attr:
            try:
                if fields.update_size:
                    d.truncate(dino, attr.st_size)
                    if st is not None:
                        self._restage(d, dino, st)
                if uid is not None or gid is not None:  # kept in the draft, not in a version
                    d.chown(dino, uid, gid)
                if fields.update_mode:
                    d.chmod(dino, attr.st_mode & 0o7777)
                if fields.update_mtime or fields.update_atime:
                    d.utimens(dino, attr.st_atime_ns if fields.update_atime else None,
                              attr.st_mtime_ns if fields.update_mtime else None)
                return d.getattr(dino)
            except OSError as e:
                if e.errno != errno.ENOENT or st is None or st.fd < 0:
                    raise
                return self._orphan_setattr(dino, st, attr, fields, uid, gid)

        # a truncate may copy a base file up from the store: a worker thread
        run = self._run if fields.update_size else self._quick
        return self.entry(slot, await run(slot, work))

    def _orphan_setattr(self, dino: int, st: DraftInode, attr: Any, fields: Any, uid: int | None,
                        gid: int | None) -> Attr:
        """setattr of a file unlinked while open: on its fd and its kept attributes."""
        if fields.update_size:
            os.ftruncate(st.fd, attr.st_size)
        if fields.update_mtime or fields.update_atime:
            s = os.fstat(st.fd)
            os.utime(st.fd, ns=(attr.st_atime_ns if fields.update_atime else s.st_atime_ns,
                                attr.st_mtime_ns if fields.update_mtime else s.st_mtime_ns))
        a = self._orphan(dino, st)
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

    # -- files -------------------------------------------------------------------------------------
    def _restage(self, d: Draft, dino: int, st: DraftInode) -> None:
        """Point the shared fd at the node's staged file if it changed (thread)."""
        path = d.staged_path(dino)
        if path is None:
            return
        with self._lock:
            if st.path == path and st.fd >= 0:
                return
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            if st.fd >= 0:
                st.old.append(st.fd)
            st.fd, st.path = fd, path

    def _open_write(self, d: Draft, dino: int, st: DraftInode, truncate: bool) -> None:
        path = d.open_for_write(dino, truncate=truncate)
        try:
            with self._lock:
                if st.path != path or st.fd < 0:
                    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                    if st.fd >= 0:
                        st.old.append(st.fd)
                    st.fd, st.path = fd, path
        except BaseException:
            d.release(dino)
            raise

    def _open_write_staged(self, d: Draft, dino: int, st: DraftInode, truncate: bool) -> bool:
        if not truncate and d.staged_path(dino) is None:
            return False
        self._open_write(d, dino, st, truncate)
        return True

    def _open_read_staged(self, d: Draft, dino: int, st: DraftInode) -> bool:
        path = d.staged_path(dino)
        if path is None:
            return False
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        with self._lock:
            if st.fd < 0 and st.blob is None:
                st.fd, st.path, fd = fd, path, -1
        if fd >= 0:
            os.close(fd)
        return True

    def _open_read(self, slot: DraftSlot, d: Draft, dino: int, st: DraftInode) -> None:
        path = d.staged_path(dino)
        if path is not None:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            with self._lock:
                if st.fd < 0:
                    st.fd, st.path, fd = fd, path, -1
            if fd >= 0:
                os.close(fd)
            return
        entry = d.base_entry(dino)
        if entry is None:
            raise OSError(errno.EINVAL, "not a regular file")
        blob = self._open_base(slot, entry)
        with self._lock:
            if st.blob is None and st.fd < 0:
                st.blob, st.size, blob = blob, entry.size, None
        if blob is not None:
            blob.close()

    def _open_base(self, slot: DraftSlot, entry: Any) -> Any:
        if entry.ref is not None:
            reader = self.ref_reader() if self.ref_reader is not None else None
            if reader is None:
                raise OSError(errno.EIO, "no reference reader")
            check = getattr(reader, "check_allowed", None)
            if check is not None:
                check(entry)
            open_ref = getattr(self.blobs, "open_ref", None)
            pinned = bool(is_pinned(entry))
            if open_ref is not None and pinned and entry.size:
                return open_ref(slot.project, entry, reader)
            return _RefReads(reader, entry)
        if not entry.size:
            return _Empty()
        return self.blobs.open(slot.project, entry.digest, entry.size)

    async def open(self, slot: DraftSlot, dino: int, flags: int) -> DraftFile:
        d = await self.draft(slot)
        write = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        st = slot.inodes.get(dino)
        if st is None:
            st = slot.inodes[dino] = DraftInode()
        st.nopen += 1
        truncate = bool(flags & os.O_TRUNC)
        try:
            if write:
                # a staged file (or one emptied by O_TRUNC) opens at once; a base file is copied up first
                if not await self._quick(slot, self._open_write_staged, d, dino, st, truncate):
                    await self._run(slot, self._open_write, d, dino, st, truncate)
            elif st.fd < 0 and st.blob is None:
                if not await self._quick(slot, self._open_read_staged, d, dino, st):
                    await self._run(slot, self._open_read, slot, d, dino, st)
        except BaseException:
            await self._drop(slot, dino, st)
            raise
        return DraftFile(slot, dino, st, write)

    async def create(self, slot: DraftSlot, dparent: int, name: bytes, mode: int,
                     ctx: Any = None) -> tuple[DraftFile, pyfuse3.EntryAttributes]:
        d = await self.draft(slot)

        def work() -> tuple[int, DraftInode, Attr]:
            ino = d.create(dparent, name, mode & 0o7777, **_owner(ctx))
            st = DraftInode()
            self._open_write(d, ino, st, False)
            return ino, st, d.getattr(ino)

        ino, st, a = await self._quick(slot, work)
        st.nopen = 1
        slot.inodes[ino] = st
        return DraftFile(slot, ino, st, True), self.entry(slot, a)

    async def read(self, h: DraftFile, off: int, size: int) -> bytes:
        st = h.state
        fd = st.fd
        if fd >= 0:
            buf = bytearray(size)
            try:  # served from the page cache right here, or not at all (never blocks)
                if os.preadv(fd, [buf], off, os.RWF_NOWAIT) == size:
                    return buf  # type: ignore[return-value]  # pyfuse3 takes any buffer
            except OSError:
                pass
            data: bytes = await self._run(h.slot, os.pread, fd, size, off)
            return data
        if st.blob is not None:
            if off >= st.size:
                return b""
            data = await self._run(h.slot, st.blob.read, off, min(size, st.size - off))
            return data
        raise _fuse(errno.EBADF)

    async def write(self, h: DraftFile, off: int, buf: bytes) -> int:
        st, slot = h.state, h.slot
        d = slot.draft
        if st.fd < 0 or d is None:
            raise _fuse(errno.EBADF)
        self.stats["draft_writes"] += 1
        self.stats["draft_write_bytes"] += len(buf)
        while slot.busy and slot.idle is not None:  # a commit reads the staged bytes: wait here, not
            await slot.idle.wait()  # in a worker thread, so the threads stay free for other requests
        try:
            return await self._write_now(h, d, off, buf)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise d.disk_full() from None  # ENOSPC, and the log line names the staging disk
            raise

    async def _write_now(self, h: DraftFile, d: Draft, off: int, buf: bytes) -> int:
        st, slot = h.state, h.slot
        if st.marked and not slot.busy:
            # On the loop: the digest is invalid already and no commit can hold the gate, so
            # neither the draft's lock nor its gate is waited for (see the module docstring).
            try:
                with d.writing(h.dino):
                    return os.pwrite(st.fd, buf, off)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                return os.pwrite(st.fd, buf, off)  # unlinked while open: the bytes go nowhere
        n: int = await self._quick(slot, self._write, d, h, off, buf)
        return n

    @staticmethod
    def _write(d: Draft, h: DraftFile, off: int, buf: bytes) -> int:
        st = h.state
        try:
            with d.writing(h.dino):
                n = os.pwrite(st.fd, buf, off)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            return os.pwrite(st.fd, buf, off)  # unlinked while open
        st.marked = True
        return n

    async def fsync(self, h: DraftFile, datasync: bool) -> None:
        d = h.slot.draft
        if d is None:
            return

        def work() -> None:
            try:
                d.fsync(h.dino, datasync)
            except OSError as e:
                if e.errno != errno.ENOENT or h.state.fd < 0:
                    raise
                os.fsync(h.state.fd)

        await self._run(h.slot, work)

    async def fsyncdir(self, slot: DraftSlot) -> None:
        d = await self.draft(slot)
        await self._run(slot, d.fsync)

    async def release(self, h: DraftFile) -> None:
        d = h.slot.draft
        if h.write and d is not None:
            try:
                await self._quick(h.slot, d.release, h.dino)
            except Exception as e:
                log.warning("%s: release of inode %d: %s", h.slot.name, h.dino, e)
        await self._drop(h.slot, h.dino, h.state)

    async def _drop(self, slot: DraftSlot, dino: int, st: DraftInode) -> None:
        st.nopen -= 1
        if st.nopen > 0:
            return
        if slot.inodes.get(dino) is st:
            del slot.inodes[dino]
        if st.blob is None:
            st.close()  # closing fds of local files
        else:
            await self._run(slot, st.close)

    # -- extended attributes -------------------------------------------------------------------------
    async def xattrs(self, slot: DraftSlot, dino: int) -> dict[str, bytes]:
        d = await self.draft(slot)

        def work() -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            if dino == ROOT:
                p = d.pending()
                if p["description"] is not None:
                    out["description"] = str(p["description"]).encode()
                out["type"] = str(p["type"] or "unspecified").encode()
                out["metadata"] = json.dumps(p["metadata"] or {}, ensure_ascii=False, sort_keys=True).encode()
                out["aliases"] = ",".join(p["aliases"] or []).encode()
                base = d.base_version
                out["base"] = b"" if base is None else f"v{base}".encode()
                if self.group is not None:
                    out["group"] = self.group.encode()
                out["status"] = status_value(d.status(hash=False).to_json())
                if slot.last_commit is not None:
                    out["last_commit"] = json.dumps(slot.last_commit, sort_keys=True).encode()
                return out
            try:
                entry = d.base_entry(dino)
            except OSError:
                return out
            if entry is not None:
                if entry.digest:
                    out["digest"] = entry.digest.encode()
                out["size"] = str(entry.size).encode()
                if entry.ref is not None:
                    out["ref"] = entry.ref.encode()
            return out

        got: dict[str, bytes] = await self._run(slot, work)
        return {XATTR + k: v for k, v in got.items()}

    async def setxattr(self, slot: DraftSlot, dino: int, name: str, value: bytes) -> None:
        if dino != ROOT or not name.startswith(XATTR):
            raise _fuse(errno.ENOTSUP)  # a version keeps no extended attributes of files
        key = name[len(XATTR):]
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _fuse(errno.EINVAL) from None
        if key == "commit":
            request = _commit_request(text)
            if request.get("wait") is False and self._nursery is not None:
                # Answer now and commit in the background: the kernel holds draft/'s inode lock
                # for as long as a setxattr runs, which would block every lookup and listing of
                # draft/ for the whole commit. The caller polls user.artfs.last_commit for its id.
                slot.last_commit = {"name": slot.name, "ok": None, "running": True, "id": request.get("id")}
                self._nursery.start_soon(self._commit_quietly, slot, request)
                return
            await self.commit(slot, request)
            return
        d = await self.draft(slot)
        try:
            if key == "description":
                await self._run(slot, d.set_description, text or None)
            elif key == "type":
                await self._run(slot, d.set_type, text.strip() or "unspecified")
            elif key == "metadata":
                md = json.loads(text) if text.strip() else {}
                if not isinstance(md, dict):
                    raise ValueError("metadata must be a JSON object")
                await self._run(slot, d.set_metadata, md)
            elif key == "aliases":
                await self._run(slot, d.set_aliases, [a for a in re.split(r"[,\s]+", text) if a])
            elif key in ("base", "status", "last_commit"):
                raise _fuse(errno.EPERM)
            else:
                raise _fuse(errno.ENOTSUP)
        except (ValueError, InvalidName) as e:  # includes json.JSONDecodeError
            log.error("%s: setxattr %s: %s", slot.name, name, e)
            raise _fuse(errno.EINVAL) from None

    async def removexattr(self, slot: DraftSlot, dino: int, name: str) -> None:
        if dino != ROOT or not name.startswith(XATTR):
            raise _fuse(pyfuse3.ENOATTR)
        d = await self.draft(slot)
        key = name[len(XATTR):]
        if key == "description":
            await self._run(slot, d.set_description, None)
        elif key == "metadata":
            await self._run(slot, d.set_metadata, {})
        elif key == "aliases":
            await self._run(slot, d.set_aliases, [])
        elif key == "type":
            await self._run(slot, d.set_type, "unspecified")
        else:
            raise _fuse(pyfuse3.ENOATTR)

    # -- commits ---------------------------------------------------------------------------------------
    async def commit(self, slot: DraftSlot, request: dict[str, Any]) -> dict[str, Any]:
        """Commit the slot's draft now (``user.artfs.commit``); the result is also ``last_commit``."""
        d = await self.draft(slot)
        if slot._committing is None:
            slot._committing = trio.Lock()
        async with slot._committing:
            slot.busy = True
            idle = slot.idle = trio.Event()
            t0 = time.monotonic()
            try:
                kw = {k: request[k] for k in ("description", "metadata", "type", "aliases") if request.get(k) is not None}
                if self.lineage is not None:
                    kw["run"] = self.lineage.logger_of(slot.project, slot.artifact)
                result = await trio.to_thread.run_sync(
                    functools.partial(d.commit, self.store, group=self.group, keep=True, **kw),
                    limiter=self.commit_limiter)
                if self.lineage is not None and result is not None and not isinstance(result, PartResult):
                    self.lineage.committed(slot.project, slot.artifact, result.version, result.created)
            except Exception as e:
                slot.last_commit = {"name": slot.name, "ok": False, "error": str(e), "id": request.get("id")}
                log.error("%s", e)
                raise
            finally:
                slot.busy = False
                idle.set()
                for st in slot.inodes.values():
                    st.marked = False  # a commit hashes: the next write must announce itself again
            doc = _result_doc(slot.name, d, result, time.monotonic() - t0)
            doc["id"] = request.get("id")
            slot.last_commit = doc
            self.stats["commits"] += 1
            log.info("%s", _result_text(doc))
        if self.on_commit is not None:
            await self.on_commit(slot)
        return doc

    async def _commit_quietly(self, slot: DraftSlot, request: dict[str, Any]) -> None:
        """A commit requested with ``"wait": false``: its result (or error) is ``last_commit``."""
        try:
            await self.commit(slot, request)
        except Exception as e:  # logged by commit(); make sure the caller's id gets an answer
            if slot.last_commit is None or slot.last_commit.get("ok") is not False:
                slot.last_commit = {"name": slot.name, "ok": False, "error": str(e), "id": request.get("id")}

    def last_commit_xattr(self, slot: DraftSlot, dino: int) -> bytes | None:
        """``user.artfs.last_commit`` of ``draft/`` without opening or reading the draft."""
        if dino != ROOT or slot.last_commit is None:
            return None
        return json.dumps(slot.last_commit, sort_keys=True).encode()

    def finish(self, handles: Iterable[Any] = ()) -> dict[str, Any]:
        """At unmount (the kernel has let go): commit every draft that differs from its base.

        Blocking; call after the FUSE loop has ended. Returns the report ``artfs umount`` prints.
        """
        for h in handles:  # nothing holds a file open any more
            if isinstance(h, DraftFile) and h.write and h.slot.draft is not None:
                with contextlib.suppress(Exception):
                    h.slot.draft.release(h.dino)
        for each in self.slots:
            for st in each.inodes.values():
                st.close()
            each.inodes.clear()
        report: dict[str, Any] = {"commits": [], "unchanged": [], "failed": []}
        opened = {(s.project, s.artifact): s for s in self.slots if s.draft is not None}
        try:
            refs = {(r.project, r.artifact): r for r in self.drafts.list()}
        except OSError as e:
            log.error("cannot list the drafts in %s: %s", self.drafts.root, e)
            refs = {}
        for key in sorted(set(opened) | set(refs)):
            slot: DraftSlot | None = opened.get(key)
            d = slot.draft if slot is not None else None
            if d is None:
                try:
                    d = Draft.open(refs[key].path, owner=self.owner)
                except DraftBusy:
                    continue  # another mount or an `artfs commit` has it: theirs to commit
                except Exception as e:
                    report["failed"].append({"name": "/".join(key), "error": str(e)})
                    log.error("%s: cannot open the draft: %s", "/".join(key), e)
                    continue
            try:
                self._finish_one(d, report, opened=slot is not None)
            finally:
                with contextlib.suppress(Exception):
                    d.close()
                if slot is not None:
                    slot.draft = None
        return report

    def _finish_one(self, d: Draft, report: dict[str, Any], *, opened: bool) -> None:
        name = f"{d.project}/{d.artifact}"
        if not d.dirty:
            if d.base_version is None and not d.readdir(ROOT, limit=1):
                d.discard()  # a new artifact nothing was written into: nothing to keep
            elif opened:
                report["unchanged"].append(name)
            return
        t0 = time.monotonic()
        log.info("%s: committing the draft", name)
        try:
            run = self.lineage.logger_of(d.project, d.artifact) if self.lineage is not None else None
            result = d.commit(self.store, run=run, group=self.group)
            if self.lineage is not None and result is not None and not isinstance(result, PartResult):
                self.lineage.committed(d.project, d.artifact, result.version, result.created)
        except Exception as e:
            report["failed"].append({"name": name, "error": str(e)})
            log.error("%s", e)
            return
        doc = _result_doc(name, d, result, time.monotonic() - t0)
        if result is None:
            report["unchanged"].append(name)
            if d.base_version is None and not d.readdir(ROOT, limit=1):
                d.discard()
        else:
            report["commits"].append(doc)
        log.info("%s", _result_text(doc))


#: the longest ``user.artfs.status`` value: the kernel refuses values over 64 KiB (E2BIG)
STATUS_MAX = 60 * 1024
_STATUS_LISTS = ("added", "changed", "removed", "unhashed", "problems")


def status_value(doc: dict[str, Any], limit: int = STATUS_MAX) -> bytes:
    """``user.artfs.status``: the whole status while it fits in ``limit`` bytes; beyond that a
    summary: every count and size, the first paths of each list (as many as fit, the same number
    for each), ``"truncated": true`` and where the full list is (``artfs status --json``)."""
    value = json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()
    if len(value) <= limit:
        return value
    short = dict(doc)
    short["counts"] = {k: len(doc.get(k) or []) for k in _STATUS_LISTS}
    short["truncated"] = True
    short["full"] = "artfs status --json (the complete lists; works while mounted)"
    cap = max(len(doc.get(k) or []) for k in _STATUS_LISTS)
    while True:
        cap //= 2
        for k in _STATUS_LISTS:
            short[k] = list((doc.get(k) or [])[:cap])
        value = json.dumps(short, ensure_ascii=False, sort_keys=True).encode()
        if len(value) <= limit or cap == 0:
            return value


def _owner(ctx: Any) -> dict[str, int | None]:
    """Who a FUSE request comes from: the owner of what it creates."""
    if ctx is None:
        return {"uid": None, "gid": None}
    return {"uid": int(ctx.uid), "gid": int(ctx.gid)}


def _commit_request(text: str) -> dict[str, Any]:
    """The value of ``user.artfs.commit``: ``1`` or a JSON object (description, metadata, type,
    aliases overriding what the draft's attributes say, and an ``id`` echoed in the result)."""
    text = text.strip()
    if not text.startswith("{"):
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        raise _fuse(errno.EINVAL) from None
    if not isinstance(doc, dict) or (doc.get("metadata") is not None and not isinstance(doc["metadata"], dict)):
        raise _fuse(errno.EINVAL)
    return doc


def _result_doc(name: str, d: Draft, result: Any, seconds: float) -> dict[str, Any]:
    if isinstance(result, PartResult):  # artfs mount --group: a part, not a version
        return {"name": name, "ok": True, "committed": True, "version": None, "created": False,
                "group": result.group, "writer": result.writer, "files": result.files,
                "uploaded_blobs": result.uploaded_blobs, "uploaded_bytes": result.uploaded_bytes, "aliases": [],
                "seconds": round(seconds, 3)}
    if result is None:
        return {"name": name, "ok": True, "committed": False, "version": d.base_version, "created": False,
                "seconds": round(seconds, 3)}
    return {"name": name, "ok": True, "committed": True, "version": result.version, "created": result.created,
            "files": result.files, "uploaded_blobs": result.uploaded_blobs, "uploaded_bytes": result.uploaded_bytes,
            "aliases": list(result.aliases), "seconds": round(seconds, 3)}


def _result_text(doc: dict[str, Any]) -> str:
    if doc.get("group"):
        return (f"{doc['name']}: recorded as a part of group {doc['group']} ({doc['files']} files, "
                f"{doc['uploaded_blobs']} new blobs, {doc['uploaded_bytes']} bytes uploaded, {doc['seconds']:.2f} s)")
    if not doc.get("committed"):
        base = doc.get("version")
        return f"{doc['name']}: nothing to commit (the draft equals {'v%s' % base if base is not None else 'nothing'})"
    if not doc.get("created"):
        return f"{doc['name']}:v{doc['version']} matched: already in the store (identical content, or an interrupted commit)"
    return (f"{doc['name']}:v{doc['version']} created ({doc['files']} files, {doc['uploaded_blobs']} new blobs, "
            f"{doc['uploaded_bytes']} bytes uploaded, {doc['seconds']:.2f} s)")

