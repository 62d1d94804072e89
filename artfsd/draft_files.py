"""Open files of drafts: opening (a copy-up for writing), reads, writes, fsync and release
(:class:`DraftFiles`, the part ``files`` of :class:`artfsd.drafts.DraftSpace`, over its
:class:`artfsd.draft_slots.SlotSpace`).

Open files (:class:`DraftInode`: one per inode with open handles, shared by all of them)
    Once the node is staged, an fd (``O_RDWR``) on its staged file; before that, a lazy reader of
    the base blob. Opening for writing stages the node (``open_for_write``: a copy-up, or an empty
    file for ``O_TRUNC``) and swaps the shared fd, so every reader sees every write at once. An fd
    swapped out is closed only when the last handle goes (a read in a worker thread may still
    use it). The daemon buffers nothing: each FUSE write is one ``pwrite`` into the staged file,
    in the kernel's page cache as soon as it returns, so a SIGKILL of the daemon loses nothing
    that was written. A node unlinked while open keeps its state: reads, writes, ``fstat`` and
    ``ftruncate`` go to the fd, as on a local disk.

Writes without Python bytes
    With the patched pyfuse3 (``write_fd``, artfs/_fusebuild/patches/) a write to a file whose digest
    is already invalid, while no commit runs, is copied by pyfuse3 itself from the request into the
    staged file (``write_fd``/``write_fd_done`` below hold the write gate around the copy): no
    Python object of the bytes, one copy less per request. Every other write, and every write on
    stock pyfuse3, takes :meth:`DraftFiles.write`.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import pyfuse3

from artfs.lowlevel import Attr, Draft, is_pinned

from .draft_slots import DraftFile, DraftInode, DraftSlot, SlotSpace, _fuse, _owner, log


class _Empty:
    """The reader of an empty base file."""

    def read(self, off: int, length: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


class DraftFiles:
    """Open files of the drafts (module docstring)."""

    def __init__(self, space: SlotSpace) -> None:
        self.space = space
        self._writing: Any = None  # the write gate held between write_fd and write_fd_done

    # -- files -------------------------------------------------------------------------------------
    def restage(self, d: Draft, dino: int, st: DraftInode) -> None:
        """Point the shared fd at the node's staged file if it changed (thread)."""
        path = d.namespace.staged_path(dino)
        if path is None:
            return
        with self.space.fd_lock:
            if st.path == path and st.fd >= 0:
                return
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            if st.fd >= 0:
                st.old.append(st.fd)
            st.fd, st.path = fd, path

    def _open_write(self, d: Draft, dino: int, st: DraftInode, truncate: bool) -> None:
        path = d.staging.open_for_write(dino, truncate=truncate)
        try:
            with self.space.fd_lock:
                if st.path != path or st.fd < 0:
                    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                    if st.fd >= 0:
                        st.old.append(st.fd)
                    st.fd, st.path = fd, path
        except BaseException:
            d.staging.release(dino)
            raise

    def _open_write_staged(self, d: Draft, dino: int, st: DraftInode, truncate: bool) -> bool:
        if not truncate and d.namespace.staged_path(dino) is None:
            return False
        self._open_write(d, dino, st, truncate)
        return True

    def _open_read_staged(self, d: Draft, dino: int, st: DraftInode) -> bool:
        path = d.namespace.staged_path(dino)
        if path is None:
            return False
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        with self.space.fd_lock:
            if st.fd < 0 and st.blob is None:
                st.fd, st.path, fd = fd, path, -1
        if fd >= 0:
            os.close(fd)
        return True

    def _open_read(self, slot: DraftSlot, d: Draft, dino: int, st: DraftInode) -> None:
        path = d.namespace.staged_path(dino)
        if path is not None:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            with self.space.fd_lock:
                if st.fd < 0:
                    st.fd, st.path, fd = fd, path, -1
            if fd >= 0:
                os.close(fd)
            return
        entry = d.namespace.base_entry(dino)
        if entry is None:
            raise OSError(errno.EINVAL, "not a regular file")
        blob = self._open_base(slot, entry)
        with self.space.fd_lock:
            if st.blob is None and st.fd < 0:
                st.blob, st.size, blob = blob, entry.size, None
        if blob is not None:
            blob.close()

    def _open_base(self, slot: DraftSlot, entry: Any) -> Any:
        if entry.ref is not None:
            reader = self.space.ref_reader() if self.space.ref_reader is not None else None
            if reader is None:
                raise OSError(errno.EIO, "no reference reader")
            check = getattr(reader, "check_allowed", None)
            if check is not None:
                check(entry)
            open_ref = getattr(self.space.blobs, "open_ref", None)
            pinned = bool(is_pinned(entry))
            if open_ref is not None and pinned and entry.size:
                return open_ref(slot.project, entry, reader)
            return self.space.blobs.open_unpinned(reader, entry)
        if not entry.size:
            return _Empty()
        return self.space.blobs.open(slot.project, entry.digest, entry.size)

    async def open(self, slot: DraftSlot, dino: int, flags: int) -> DraftFile:
        d = await self.space.draft(slot)
        write = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        st = slot.inodes.get(dino)
        if st is None:
            st = slot.inodes[dino] = DraftInode()
        st.nopen += 1
        truncate = bool(flags & os.O_TRUNC)
        try:
            if write:
                # a staged file (or one emptied by O_TRUNC) opens at once; a base file is copied up first
                if not await self.space.quick(slot, self._open_write_staged, d, dino, st, truncate):
                    await self.space.run(slot, self._open_write, d, dino, st, truncate)
            elif st.fd < 0 and st.blob is None:
                if not await self.space.quick(slot, self._open_read_staged, d, dino, st):
                    await self.space.run(slot, self._open_read, slot, d, dino, st)
        except BaseException:
            await self._drop(slot, dino, st)
            raise
        return DraftFile(slot, dino, st, write)

    async def create(self, slot: DraftSlot, dparent: int, name: bytes, mode: int,
                     ctx: Any = None) -> tuple[DraftFile, pyfuse3.EntryAttributes]:
        d = await self.space.draft(slot)

        def work() -> tuple[int, DraftInode, Attr]:
            ino = d.namespace.create(dparent, name, mode & 0o7777, **_owner(ctx))
            st = DraftInode()
            self._open_write(d, ino, st, False)
            return ino, st, d.namespace.getattr(ino)

        ino, st, a = await self.space.quick(slot, work)
        st.nopen = 1
        slot.inodes[ino] = st
        return DraftFile(slot, ino, st, True), self.space.entry(slot, a)

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
            data: bytes = await self.space.run(h.slot, os.pread, fd, size, off)
            return data
        if st.blob is not None:
            if off >= st.size:
                return b""
            data = await self.space.run(h.slot, st.blob.read, off, min(size, st.size - off))
            return data
        raise _fuse(errno.EBADF)

    async def write(self, h: DraftFile, off: int, buf: bytes) -> int:
        st, slot = h.state, h.slot
        d = slot.draft
        if st.fd < 0 or d is None:
            raise _fuse(errno.EBADF)
        self.space.stats["draft_writes"] += 1
        self.space.stats["draft_write_bytes"] += len(buf)
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
                with d.staging.writing(h.dino):
                    return os.pwrite(st.fd, buf, off)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                return os.pwrite(st.fd, buf, off)  # unlinked while open: the bytes go nowhere
        n: int = await self.space.quick(slot, self._write, d, h, off, buf)
        return n

    def write_fd(self, h: DraftFile, off: int, size: int) -> int:
        """Where pyfuse3 may copy a write's bytes itself (its ``write_fd``, in the patched build):
        the staged file's fd, or -1 for the ordinary :meth:`write`.

        The same case as the fast path of :meth:`_write_now` (the digest is invalid already and no
        commit runs) and the same accounting: the write gate is entered here, pyfuse3 copies the
        bytes (``pwrite`` from libfuse's buffer, or a splice where libfuse received the request
        into a pipe: never through a Python object), and :meth:`write_fd_done` leaves the gate,
        both on the loop before any other request is handled. Anything
        else (the first write since a commit, a commit running, a file unlinked while open) takes
        the ordinary path, which waits or marks as before."""
        st, slot = h.state, h.slot
        d = slot.draft
        if not st.marked or slot.busy or st.fd < 0 or d is None or self._writing is not None:
            return -1
        gate = d.staging.writing(h.dino)
        try:
            gate.__enter__()  # never waits: only a commit takes the gate exclusively, and it sets busy first
        except OSError:
            return -1  # unlinked while open (ENOENT): the ordinary path knows what to do
        self._writing = gate
        return st.fd

    def write_fd_done(self, h: DraftFile, off: int, result: int) -> int:
        """pyfuse3 copied ``result`` bytes (or failed with ``-result``) to the fd :meth:`write_fd`
        gave: leave the write gate, count, and answer as :meth:`write` would."""
        gate, self._writing = self._writing, None
        if gate is not None:
            gate.__exit__(None, None, None)
        self.space.stats["draft_writes"] += 1
        d = h.slot.draft
        if result < 0:
            if -result == errno.ENOSPC and d is not None:
                raise d.disk_full()  # ENOSPC, and the log line names the staging disk
            raise OSError(-result, os.strerror(-result))
        self.space.stats["draft_write_bytes"] += result
        self.space.stats["draft_fd_writes"] += 1
        return result

    @staticmethod
    def _write(d: Draft, h: DraftFile, off: int, buf: bytes) -> int:
        st = h.state
        try:
            with d.staging.writing(h.dino):
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
                d.staging.fsync(h.dino, datasync)
            except OSError as e:
                if e.errno != errno.ENOENT or h.state.fd < 0:
                    raise
                os.fsync(h.state.fd)

        await self.space.run(h.slot, work)

    async def fsyncdir(self, slot: DraftSlot) -> None:
        d = await self.space.draft(slot)
        await self.space.run(slot, d.staging.fsync)

    async def release(self, h: DraftFile) -> None:
        d = h.slot.draft
        if h.write and d is not None:
            try:
                await self.space.quick(h.slot, d.staging.release, h.dino)
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
            await self.space.run(slot, st.close)
