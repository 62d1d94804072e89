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
from typing import Callable, Iterable, NamedTuple

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
_FIRST_READ = 64 << 10


#: what identifies a file's bytes without reading them: (dev, ino, size, mtime_ns, ctime_ns)
Stamp = tuple[int, int, int, int, int]


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def granularity(st: os.stat_result) -> int:
    """How long after a file's last change its times may still be the same (ns).

    Times of whole seconds (both mtime and ctime: a file system without sub-second times, or one
    of two-second FAT times) get 2 s; others 0.1 s, well above the kernel tick that stamps them.
    """
    if st.st_mtime_ns % 1_000_000_000 == 0 and st.st_ctime_ns % 1_000_000_000 == 0:
        return _COARSE_NS
    return _FINE_NS


def digest_fd(fd: int, out: int = -1) -> tuple[str, int]:
    """``xxh128:…`` and length of the open file ``fd`` read from its start; with ``out``, every
    byte read is also written there (the bytes stored are exactly the bytes hashed).

    The first ``read`` of 64 KiB takes a small file whole, the one that returns nothing confirms
    the end (a short read ends a local file, not always a FUSE one); larger files go by 4 MiB.
    """
    h = xxhash.xxh3_128()
    n = 0
    want = _FIRST_READ
    while True:
        b = os.read(fd, want)
        if not b:
            break
        h.update(b)
        n += len(b)
        if out >= 0:
            view = memoryview(b)
            while view:
                view = view[os.write(out, view):]
        want = _MAX_READ
    return f"{ALGO}:{h.hexdigest()}", n


class Hashed(NamedTuple):
    """A file's digest, size and mode; ``read``: its bytes were read for it (not found in the
    record); ``staged``: the temp file holding the bytes read, when a stager was given."""

    digest: str
    size: int
    mode: int
    read: bool
    staged: str | None = None


#: makes a temp file (path, open fd) for a copy; given the digest when it is known already
Stager = Callable[[str | None], tuple[str, int]]


def _hash_staging(fd: int, stage: Stager) -> tuple[str, int, str]:
    """Digest and length of the open file ``fd``, its bytes copied into a file from ``stage``
    (returned too). A small file (read whole by the first read) is hashed before its copy is
    made, so the copy can be made beside its blob; a larger one is copied as it is read."""
    first = os.read(fd, _FIRST_READ)
    more = os.read(fd, _FIRST_READ) if first else b""
    if not more:
        digest = f"{ALGO}:{xxhash.xxh3_128_hexdigest(first)}"
        tmp, out = stage(digest)
        try:
            _write_all(out, first)
        except BaseException:
            os.close(out)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        os.close(out)
        return digest, len(first), tmp
    tmp, out = stage(None)
    try:
        try:
            h = xxhash.xxh3_128()
            n = 0
            for b in (first, more):
                h.update(b)
                _write_all(out, b)
                n += len(b)
            while True:
                b = os.read(fd, _MAX_READ)
                if not b:
                    break
                h.update(b)
                _write_all(out, b)
                n += len(b)
        finally:
            os.close(out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return f"{ALGO}:{h.hexdigest()}", n, tmp


def _write_all(fd: int, b: bytes) -> None:
    view = memoryview(b)
    while view:
        view = view[os.write(fd, view):]


def hash_path(path: str, known: dict[str, tuple[Stamp, str]] | None, fresh: list[tuple[str, Stamp, str]],
              stage: Stager | None = None) -> Hashed:
    """The digest of the file at ``path``: from ``known`` (rows of the record) when its row matches
    the file's ``stat`` in every field, else read and hashed (and copied into a temp file from
    ``stage`` as it is read), and appended to ``fresh`` (rows to record) when the read may be
    recorded (module docstring). ``OSError`` as ``open`` raises it.

    One ``fstat``, after the read, is enough to record it: a write during the read leaves a ctime
    at least as late as the read's start (less a tick), which the racy rule refuses.
    Safe to call from many threads at once with the same ``fresh`` (``list.append`` is atomic).
    """
    row = known.get(path) if known else None
    if row is not None:
        st = os.stat(path)
        if stamp_of(st) == row[0] and stat.S_ISREG(st.st_mode):
            return Hashed(row[1], st.st_size, st.st_mode, False)
    began = time.time_ns()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    tmp = None
    try:
        if stage is not None:
            digest, n, tmp = _hash_staging(fd, stage)
        else:
            digest, n = digest_fd(fd)
        after = os.fstat(fd)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    s = stamp_of(after)
    if n == s[2] and stat.S_ISREG(after.st_mode) and max(s[3], s[4]) + granularity(after) <= began:
        fresh.append((path, s, digest))
    return Hashed(digest, n, after.st_mode, True, tmp)


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
        # only well-formed rows (a damaged or foreign one is skipped: that file is read again and
        # its row written anew); the digest spelt by sqlite, not once per row in Python
        cols = (f"path, dev, ino, size, mtime_ns, ctime_ns, '{ALGO}:' || lower(hex(digest)) FROM files WHERE "
                "length(digest) = 16 AND typeof(digest) = 'blob' AND typeof(dev) = 'integer' AND "
                "typeof(ino) = 'integer' AND typeof(size) = 'integer' AND typeof(mtime_ns) = 'integer' AND "
                "typeof(ctime_ns) = 'integer' AND typeof(path) = 'text' AND")
        try:
            for d in under:
                lo = d.rstrip("/") + "/"
                hi = lo[:-1] + chr(ord("/") + 1)
                for r in con.execute(f"SELECT {cols} path >= ? AND path < ?", (lo, hi)):
                    out[r[0]] = (r[1:6], r[6])
            rest = [p for p in paths if p not in out]
            for i in range(0, len(rest), 500):
                chunk = rest[i:i + 500]
                for r in con.execute(f"SELECT {cols} path IN ({','.join('?' * len(chunk))})", chunk):
                    out[r[0]] = (r[1:6], r[6])
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
        gone = list(prune)
        try:
            for i in range(0, max(len(fresh), len(gone)), _CHUNK):  # rows spelt a chunk at a time
                rows = [(p, *s, bytes.fromhex(d.partition(":")[2])) for p, s, d in fresh[i:i + _CHUNK]]
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                    con.executemany("DELETE FROM files WHERE path = ?", ((p,) for p in gone[i:i + _CHUNK]))
                    con.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        con.execute("ROLLBACK")
                    raise
        except sqlite3.Error as e:
            self._failed(e)
            return 0
        return len(fresh)


def hash_files(record: HashRecord | None, paths: list[str], *, under: Iterable[str] = (),
               workers: int = 8, stage: Stager | None = None) -> list[Hashed]:
    """The digest of each file of ``paths`` (absolute), through ``record`` (None: read every one).

    ``under``: directories whose files are all among ``paths`` (an ``add_dir``'s roots): their
    rows are read in one range each, and rows below them of paths not given are dropped (files
    gone since). Unchanged files cost a ``stat``; the others are read in ``workers`` threads
    (and copied into temp files from ``stage`` as they are read: :attr:`Hashed.staged`; on an
    error those made so far are removed).
    """
    staged: list[str] = []

    def one(p: str) -> Hashed:
        h = hash_path(p, known, fresh, stage)
        if h.staged is not None:
            staged.append(h.staged)
        return h

    fresh: list[tuple[str, Stamp, str]] = []
    known: dict[str, tuple[Stamp, str]] | None = None
    try:
        if record is None:
            return pmap(one, paths, workers)
        known = record.rows(paths, under=[os.path.abspath(d) for d in under])
        out = pmap(one, paths, workers)
        # rows no longer true: of files gone, and of files read again but not recordable (racy)
        stale = set(known).difference(paths)
        stale.update(p for p, h in zip(paths, out) if h.read and p in known)
        stale.difference_update(p for p, _, _ in fresh)
        record.update(fresh, prune=stale)
        return out
    except BaseException:
        for t in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(t)
        raise
    finally:
        if record is not None:
            record.close()
