"""The local record of what was hashed: a file's identity and times -> its digest.

A ``put`` of a tree of a million files reads every byte to hash it; with this record the next
``put`` (or ``Artifact.add_dir`` + ``log_artifact``, or a ``download`` over files already there)
reads only the files that changed since, as git's index and DVC's state database do.

Kept in ``<cache>/hashes.db`` (sqlite in WAL mode, shared by every artfs process of the user), one
row per absolute path: ``dev, ino, size, mtime_ns, ctime_ns`` as ``fstat`` gave them around the
read that was hashed, and the digest (16 bytes).

Invariants
* **A row is used only when every field equals the file's ``stat`` now**: device, inode, size,
  mtime and ctime. Anything else (a ``touch``: new mtime; new bytes with the mtime put back by
  ``os.utime``/``touch -d``: new ctime; a file replaced by another, renamed over it: new inode) means
  the file is read and hashed again, and recorded anew. A user cannot set a ctime, so bytes
  changed behind a restored mtime are always seen.
* **A row is written only for a read it describes**: the ``fstat`` before and after the read are
  equal, the read saw exactly ``size`` bytes, and the read began at least :func:`granularity`
  after the file's last change (the later of mtime and ctime). The last rule is git's "racy
  clean" one: a file system stamps times in ticks (a kernel tick on ext4, a second or two on
  older or foreign file systems), so a write in the same tick as the change before our read
  leaves every field as it was. A file changed that recently is hashed now and recorded on a
  later ``put``, once it has aged.
* **The record is only a shortcut**: a missing, locked, unreadable or corrupt database is never an
  error. Busy or locked (another process writing for longer than the timeout): that run reads
  without it or records nothing. Corrupt or of another schema: it is deleted and made anew.
  Transactions are short (one read of a directory's rows, one batch of inserts) so that many
  processes can share it.
* Rows no longer true are dropped when found: those of files read again (recorded anew, or
  dropped if the read may not be recorded) and, when a directory is hashed again, those of its
  files that are gone. Rows of trees never hashed again stay until the cache directory goes.

Not caught (as with git): a change that restores mtime *and* lands on a file system whose ctime
the writer controls (a network file system whose server clock runs behind this machine's by more
than the granularity, or a tool writing the raw disk).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import time
from typing import Iterable, NamedTuple

import xxhash

from ._digest import ALGO
from ._parallel import pmap

log = logging.getLogger("artfs.hashes")

SCHEMA = 1
_SCHEMA_SQL = ("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, dev INTEGER NOT NULL, ino INTEGER NOT NULL, "
               "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, "
               "digest BLOB NOT NULL) WITHOUT ROWID")
_BUSY_MS = 2000
_CHUNK = 20000  # rows per insert transaction: short, so other processes are not kept waiting
_FINE_NS = 100_000_000  # 0.1 s: many times a kernel tick (at most 10 ms on Linux)
_COARSE_NS = 2_000_000_000  # file systems stamping whole seconds (FAT: even seconds)
_MAX_READ = 4 << 20


class Stamp(NamedTuple):
    """What identifies a file's bytes without reading them (``fstat``'s fields)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "Stamp":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def granularity(st: os.stat_result) -> int:
    """How long after a file's last change its times may still be the same (ns).

    Times of whole seconds (both mtime and ctime: a file system without sub-second times, or one
    of two-second FAT times) get 2 s; others 0.1 s, well above the kernel tick that stamps them.
    """
    if st.st_mtime_ns % 1_000_000_000 == 0 and st.st_ctime_ns % 1_000_000_000 == 0:
        return _COARSE_NS
    return _FINE_NS


def digest_fd(fd: int, size_hint: int) -> tuple[str, int]:
    """``xxh128:…`` and length of the open file ``fd`` read from its start.

    One ``read`` of ``size_hint + 1`` bytes takes a small file whole; the read that returns
    nothing confirms the end (a short read is the end of a local file, not of a FUSE one).
    """
    h = xxhash.xxh3_128()
    n = 0
    want = max(1, min(_MAX_READ, size_hint + 1))
    while True:
        b = os.read(fd, want)
        if not b:
            break
        h.update(b)
        n += len(b)
    return f"{ALGO}:{h.hexdigest()}", n


class Hashed(NamedTuple):
    """A file's digest, size and mode; ``read`` says whether its bytes were read for it."""

    digest: str
    size: int
    mode: int
    read: bool


def hash_path(path: str, known: dict[str, tuple[Stamp, str]] | None, fresh: list[tuple[str, Stamp, str]]) -> Hashed:
    """The digest of the file at ``path``: from ``known`` (rows of the record) when its row matches
    the file's ``stat`` in every field, else read and hashed, and appended to ``fresh`` (rows to
    record) when the read may be recorded (module docstring). ``OSError`` as ``open`` raises it.

    Safe to call from many threads at once with the same ``fresh`` (``list.append`` is atomic).
    """
    row = known.get(path) if known else None
    if row is not None:
        st = os.stat(path)
        if Stamp.of(st) == row[0] and stat.S_ISREG(st.st_mode):
            return Hashed(row[1], st.st_size, st.st_mode, False)
    began = time.time_ns()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        digest, n = digest_fd(fd, before.st_size)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    s = Stamp.of(after)
    if (s == Stamp.of(before) and n == s.size and stat.S_ISREG(after.st_mode)
            and max(s.mtime_ns, s.ctime_ns) + granularity(after) <= began):
        fresh.append((path, s, digest))
    return Hashed(digest, n, after.st_mode, True)


def _keep(out: dict[str, tuple[Stamp, str]], r: tuple[object, ...]) -> None:
    """Add a row read back to ``out`` if it is well formed (a damaged or foreign row is skipped:
    that file is read again, and its row written anew)."""
    path, digest = r[0], r[6]
    if (isinstance(path, str) and isinstance(digest, bytes) and len(digest) == 16
            and all(type(x) is int for x in r[1:6])):
        out[path] = (Stamp(*r[1:6]), f"{ALGO}:{digest.hex()}")  # type: ignore[arg-type]


class HashRecord:
    """The record at ``path`` (``<cache>/hashes.db``); see the module docstring.

    Every method swallows the database's failures (the record is a shortcut, never a reason for
    a ``put`` to fail): :meth:`rows` then knows nothing and :meth:`update` records nothing.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = None
        self._broken = False

    # -- the connection ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection | None:
        if self._con is not None or self._broken:
            return self._con
        for attempt in (1, 2):
            try:
                con = sqlite3.connect(self.path, timeout=_BUSY_MS / 1000, isolation_level=None,
                                      check_same_thread=False)
                try:
                    con.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
                    version = con.execute("PRAGMA user_version").fetchone()[0]
                    if version not in (0, SCHEMA):
                        raise sqlite3.DatabaseError(f"schema {version}, not {SCHEMA}")
                    if version == 0:  # new: the only time a connection writes before it must
                        con.execute("PRAGMA journal_mode = WAL")  # persistent: readers never wait for a writer
                        con.execute(_SCHEMA_SQL)
                        con.execute(f"PRAGMA user_version = {SCHEMA}")
                    con.execute("PRAGMA synchronous = NORMAL")  # a crash may lose the last rows: hashed again
                    con.execute("SELECT 1 FROM files LIMIT 1").fetchall()
                except BaseException:
                    con.close()
                    raise
                self._con = con
                return con
            except sqlite3.OperationalError as e:  # busy, locked, cannot open: not now
                log.debug("hash record %s not used: %s", self.path, e)
                self._broken = True
                return None
            except sqlite3.DatabaseError as e:  # not a database, malformed, another schema
                if attempt == 2:
                    break
                log.warning("hash record %s is unreadable (%s); starting it anew", self.path, e)
                self._remove()
        self._broken = True
        return None

    def _remove(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + suffix)

    def _failed(self, e: Exception) -> None:
        """A query failed: corrupt (made anew at the next use) or busy (left for next time)."""
        self.close()
        if isinstance(e, sqlite3.OperationalError):
            log.debug("hash record %s: %s", self.path, e)
            return
        log.warning("hash record %s is unreadable (%s); starting it anew", self.path, e)
        self._remove()

    def close(self) -> None:
        if self._con is not None:
            with contextlib.suppress(sqlite3.Error):
                self._con.close()
            self._con = None

    # -- reading and writing -------------------------------------------------------------------
    def rows(self, paths: Iterable[str] = (), *, under: Iterable[str] = ()) -> dict[str, tuple[Stamp, str]]:
        """The rows of ``paths`` and of every path below the directories ``under`` (absolute):
        path -> (stamp, digest). One range read per directory, so a tree costs one query."""
        con = self._connect()
        out: dict[str, tuple[Stamp, str]] = {}
        if con is None:
            return out
        cols = "path, dev, ino, size, mtime_ns, ctime_ns, digest"
        try:
            for d in under:
                lo = d.rstrip("/") + "/"
                hi = lo[:-1] + chr(ord("/") + 1)
                for r in con.execute(f"SELECT {cols} FROM files WHERE path >= ? AND path < ?", (lo, hi)):
                    _keep(out, r)
            rest = [p for p in paths if p not in out]
            for i in range(0, len(rest), 500):
                chunk = rest[i:i + 500]
                q = f"SELECT {cols} FROM files WHERE path IN ({','.join('?' * len(chunk))})"
                for r in con.execute(q, chunk):
                    _keep(out, r)
        except sqlite3.Error as e:
            self._failed(e)
            return {}
        return out

    def update(self, fresh: list[tuple[str, Stamp, str]], *, prune: Iterable[str] = ()) -> int:
        """Record ``fresh`` rows (path, stamp, digest), replacing older ones; then delete the rows
        of the paths in ``prune`` (files found gone). Returns how many rows were written."""
        if not fresh and not prune:
            return 0
        con = self._connect()
        if con is None:
            return 0
        rows = [(p, *s, bytes.fromhex(d.partition(":")[2])) for p, s, d in fresh]
        gone = [(p,) for p in prune]
        try:
            for i in range(0, max(len(rows), len(gone)), _CHUNK):
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", rows[i:i + _CHUNK])
                    con.executemany("DELETE FROM files WHERE path = ?", gone[i:i + _CHUNK])
                    con.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        con.execute("ROLLBACK")
                    raise
        except sqlite3.Error as e:
            self._failed(e)
            return 0
        return len(rows)


def hash_files(record: HashRecord | None, paths: list[str], *, under: Iterable[str] = (),
               workers: int = 8) -> list[Hashed]:
    """The digest of each file of ``paths`` (absolute), through ``record`` (None: read every one).

    ``under``: directories whose files are all among ``paths`` (an ``add_dir``'s roots): their
    rows are read in one range each, and rows below them of paths not given are dropped (files
    gone since). Unchanged files cost a ``stat``; the others are read in ``workers`` threads.
    """
    if record is None:
        return pmap(lambda p: hash_path(p, None, []), paths, workers)
    try:
        known = record.rows(paths, under=[os.path.abspath(d) for d in under])
        fresh: list[tuple[str, Stamp, str]] = []
        out = pmap(lambda p: hash_path(p, known, fresh), paths, workers)
        # rows no longer true: of files gone, and of files read again but not recordable (racy)
        stale = set(known).difference(paths)
        stale.update(p for p, h in zip(paths, out) if h.read and p in known)
        stale.difference_update(p for p, _, _ in fresh)
        record.update(fresh, prune=stale)
        return out
    finally:
        record.close()
