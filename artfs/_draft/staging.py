"""Staged files: the bytes of a draft's files that differ from (or are not in) its base version.

A file node is *base* until something writes it; :meth:`Staging.open_for_write` (or a truncate)
gives it a staged copy ``files/<fid>`` (a copy-up of the base bytes through ``fetch``, or an empty
file when O_TRUNC makes the copy pointless) in one transaction, and the caller then writes that
file in place with ``pwrite``. The node's states and their transitions are drawn in
:mod:`artfs._draft.schema`.

The write gate (``DraftDB.gate``): every write passes it shared (:meth:`Staging.writing`), announcing
itself first (:meth:`Staging.mark_modified` sets the cached digest to NULL *before* the bytes
change), and commit and hashing take it exclusively, so the bytes hashed are the bytes uploaded.
Truncating a staged file passes the gate too.

What a crash leaves: a copy-up in progress is ``files/<fid>.tmp``, renamed to ``files/<fid>``
before the transaction that references it; killed before that transaction committed, the node is
still a base file and the sweep at the next open deletes the unreferenced file. Bytes written with
``pwrite`` are in the kernel's page cache as soon as it returns: a SIGKILL loses none of them
(closed or not); :meth:`Staging.fsync` makes them durable against power loss.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import uuid
from typing import Iterator

from .._errors import ArtfsError, CorruptData
from .namespace import Namespace
from .schema import _SQLITE_FULL, EMPTY_DIGEST, DraftDB, Fetch, _Node, _oserr


class Staging:
    """Content of a draft's files: copy-up, the write gate, truncation, fsync: ``draft.staging``."""

    def __init__(self, db: DraftDB, namespace: Namespace) -> None:
        self.db = db
        self.namespace = namespace
        self._durable = -1  # DraftDB.txs when an fsync last made the namespace durable

    # -- content -------------------------------------------------------------------------------
    def _file(self, ino: int) -> _Node:
        n = self.db.node(ino)
        if n.kind == "d":
            raise _oserr(errno.EISDIR)
        if n.kind != "f":
            raise _oserr(errno.EINVAL, "not a regular file")
        return n

    def _stage(self, n: _Node, *, empty: bool, fetch: Fetch | None) -> str:
        """Give base file ``n`` a staged copy (its bytes, or empty); returns the staged path."""
        fid = uuid.uuid4().hex
        p = self.db.fpath(fid)
        if empty:
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            digest: str | None = EMPTY_DIGEST
            size = 0
        else:
            fetch = fetch or self.db.fetch
            if fetch is None:
                raise ArtfsError(f"{self.db.path}: cannot copy up {n.name!r}: no fetch function to read the base version")
            entry = self.db.entry_of(n, self.namespace.path_of(n.ino))
            tmp = p + ".tmp"
            # The network/disk copy runs without the draft lock; the node is re-checked afterwards.
            self.db.lock.release()
            try:
                fetch(entry, tmp)
            except BaseException as e:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                    raise self.db.disk_full() from e
                raise
            finally:
                self.db.lock.acquire()
            got = os.stat(tmp).st_size
            if n.ref is None and got != n.size:
                os.unlink(tmp)
                raise CorruptData(f"copy-up of {entry.path!r}: got {got} bytes, the base has {n.size}")
            os.chmod(tmp, 0o600)
            os.utime(tmp, ns=(n.mtime if n.atime is None else n.atime, n.mtime))  # as overlayfs: a copy-up keeps the times
            os.rename(tmp, p)
            digest, size = (n.digest, n.size) if n.ref is None else (None, got)
            try:
                now = self.db.node(n.ino)
            except OSError:
                os.unlink(p)
                raise
            if now.fid is not None or now.digest != n.digest:  # another thread staged it meanwhile
                os.unlink(p)
                return self.db.fpath(now.fid) if now.fid else self._stage(now, empty=False, fetch=fetch)
        hm = os.stat(p).st_mtime_ns
        try:
            with self.db.tx() as con:
                con.execute("UPDATE nodes SET fid = ?, digest = ?, size = ?, hmtime = ?, ref = NULL, ref_info = NULL "
                            "WHERE ino = ?", (fid, digest, size, hm, n.ino))
                self.db.mark_dirty(con)
        except BaseException:
            os.unlink(p)
            raise
        self.db.after_tx()
        if digest is None:
            self.db.invalid.add(n.ino)
        return p

    def open_for_write(self, ino: int, *, truncate: bool = False, fetch: Fetch | None = None) -> str:
        """Prepare a file for writing; returns the staged path to open and ``pwrite`` into.

        A base file is copied up first (``fetch`` writes the base bytes), unless ``truncate``
        (O_TRUNC) makes the copy pointless. Call :meth:`release` when the handle is closed, and
        write through :meth:`writing` (or call :meth:`mark_modified` before every write).
        """
        with self.db.gate.shared() if truncate else contextlib.nullcontext(), self.db.lock:
            n = self._file(ino)
            if n.fid is None:
                p = self._stage(n, empty=truncate, fetch=fetch)
            else:
                p = self.db.fpath(n.fid)
                if truncate and os.stat(p).st_size:
                    self._invalidate(ino)
                    os.truncate(p, 0)
            self.db.writers[ino] = self.db.writers.get(ino, 0) + 1
            return p

    def release(self, ino: int) -> None:
        """A write handle from :meth:`open_for_write` was closed."""
        with self.db.lock:
            left = self.db.writers.get(ino, 0) - 1
            if left > 0:
                self.db.writers[ino] = left
            else:
                self.db.writers.pop(ino, None)

    def _invalidate(self, ino: int) -> None:
        with self.db.tx() as con:
            con.execute("UPDATE nodes SET digest = NULL WHERE ino = ?", (ino,))
            self.db.mark_dirty(con)
        self.db.after_tx()
        self.db.invalid.add(ino)

    def mark_modified(self, ino: int) -> None:
        """Announce a write to a staged file *before* it happens: its cached digest becomes invalid.

        Cheap when already invalid (no database write), so it can be called on every write.
        """
        if ino in self.db.invalid:
            return
        with self.db.lock:
            if ino not in self.db.invalid:
                n = self._file(ino)
                if n.fid is None:
                    raise ArtfsError(f"inode {ino} is not staged: call open_for_write first")
                self._invalidate(ino)

    def checkpoint(self, *, automatic: bool | None = None) -> None:
        """Copy the sqlite journal (WAL) into the database now (with fsyncs, so it may take a while).

        ``automatic=False`` stops sqlite from doing it by itself inside whichever transaction
        commits when the journal has grown: a caller that must not wait (the mount's event loop)
        runs short transactions itself and calls this from a worker thread every few seconds.
        Durability does not depend on it: a committed transaction in the journal survives a crash."""
        with self.db.lock:
            con = self.db.con()
            if automatic is not None:
                con.execute(f"PRAGMA wal_autocheckpoint={1000 if automatic else 0}")
            try:
                con.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError as e:
                if getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL:
                    raise self.db.disk_full() from e
                raise

    @contextlib.contextmanager
    def unless_busy(self) -> Iterator[bool]:
        """``with draft.staging.unless_busy() as free:`` whether the draft's lock was free; if so this thread
        holds it for the block, so a caller that must never wait (an event loop) can run a short
        method at once, and hands it to a worker thread otherwise (a commit holds the lock)."""
        free = self.db.lock.acquire(blocking=False)
        try:
            yield free
        finally:
            if free:
                self.db.lock.release()

    @contextlib.contextmanager
    def writing(self, ino: int) -> Iterator[None]:
        """``with draft.staging.writing(ino): os.pwrite(fd, data, offset)``: a write a commit cannot overlap."""
        with self.db.gate.shared():
            self.mark_modified(ino)
            yield

    def pwrite(self, ino: int, data: bytes, offset: int) -> int:
        """Convenience for scripts and tests: stage (copy up) if needed and write ``data`` at ``offset``."""
        p = self.open_for_write(ino)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
            try:
                with self.writing(ino):
                    return os.pwrite(fd, data, offset)
            finally:
                os.close(fd)
        finally:
            self.release(ino)

    def truncate(self, ino: int, size: int, *, fetch: Fetch | None = None) -> None:
        if size < 0:
            raise _oserr(errno.EINVAL)
        with self.db.gate.shared(), self.db.lock:  # changes bytes a running commit may be reading: waits for it
            n = self._file(ino)
            if n.fid is None:
                if size == n.size and n.ref is None:
                    return
                p = self._stage(n, empty=size == 0, fetch=fetch)
                if size == 0:
                    return
            else:
                p = self.db.fpath(n.fid)
            if os.stat(p).st_size != size or n.fid is None:
                self._invalidate(ino)
                os.truncate(p, size)

    def fsync(self, ino: int | None = None, datasync: bool = False) -> None:
        """Make a file's bytes and the namespace durable against power loss, not just a crash.

        The file is flushed without the draft's lock (other requests go on meanwhile). The
        namespace (the ``files/`` directory and the journal, with a full checkpoint) only when a
        transaction committed since the last fsync made it durable: a program that writes and
        fsyncs a file again and again changes no row after its first write (measured in
        docs/fast-paths.md, "Draft writes with fsync"). Every change of ``files/`` comes with a
        transaction (a staged file is created before the transaction that references it, and
        deleted after the one that drops it: a deletion lost to power loss is an unreferenced
        file, which the next open sweeps)."""
        fd = -1
        with self.db.lock:
            txs = self.db.txs
            if ino is not None:
                n = self.db.node(ino)
                if n.kind == "f" and n.fid is not None:
                    fd = os.open(self.db.fpath(n.fid), os.O_RDONLY | os.O_CLOEXEC)
        if fd >= 0:
            try:
                (os.fdatasync if datasync else os.fsync)(fd)
            finally:
                os.close(fd)
        if txs == self._durable:
            return
        with self.db.lock:
            dfd = os.open(self.db.files, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            if not self.db.readonly:
                self.db.con().execute("PRAGMA wal_checkpoint(FULL)")
            self._durable = max(self._durable, txs)
