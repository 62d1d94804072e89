"""The local record of what was hashed: a file's identity and times -> its digest.

A ``put`` of a tree of a million files reads every byte to hash it; with this record the next
``put`` (or ``Artifact.add_dir`` + ``log_artifact``, or a ``download`` over files already there)
reads only the files that changed since, as git's index and DVC's state database do.

Kept in ``<cache>/hashes.db`` (sqlite in WAL mode, shared by every artfs process of the user), one
row per directory (absolute path): the names of the files recorded in it, and for each, packed in
one blob, ``dev, ino, size, mtime_ns, ctime_ns`` as ``fstat`` gave them around the read that was
hashed, and the digest (16 bytes): 56 bytes a file. A put reads a directory's row when it lists
the directory and writes it back once that directory is done (a few directories per transaction),
so a tree of a million files costs a few thousand small queries, not a million.

Invariants
* **A row is used only when every field equals the file's ``stat`` now**: device, inode, size,
  mtime and ctime. Anything else (a ``touch``: new mtime; new bytes with the mtime put back by
  ``os.utime``/``touch -d``: new ctime; a file replaced by another, renamed over it: new inode) means
  the file is read and hashed again, and recorded anew. A user cannot set a ctime, so bytes
  changed behind a restored mtime are always seen.
* **A row is written only for a read it describes**: the ``fstat`` after the read, the read saw
  exactly ``size`` bytes, and the read began at least :func:`granularity` after the file's last
  change (the later of mtime and ctime). The last rule is git's "racy clean" one: a file system
  stamps times in ticks (a kernel tick on ext4, a second or two on older or foreign file
  systems), so a write in the same tick as the change before our read leaves every field as it
  was. A file changed that recently is hashed now and recorded on a later ``put``, once it has
  aged. (A write during the read leaves a ctime at least as late as the read's start, less a
  tick, which the same rule refuses: one ``fstat`` after the read is enough.)
* **The record is only a shortcut**: a missing, locked, unreadable or corrupt database, or a
  damaged row, is never an error. Busy or locked (another process writing for longer than the
  timeout): that run reads without it or records nothing. Corrupt or of another schema: it is
  deleted and made anew. A row that does not decode is ignored (its files are read) and
  replaced. Transactions are short (one directory's row read, a few directories' rows written)
  so that many processes can share it; two writing the same directory at once each write a row
  of true readings, and the later one stays.
* Rows no longer true are dropped when found: those of files read again (recorded anew, or left
  out if the read may not be recorded) and, when a directory is hashed whole (``add_dir``), those
  of its files that are gone and of its subdirectories that are gone. Rows of trees never hashed
  again stay until the cache directory goes.

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
import struct
import threading
import time
from typing import Iterable, NamedTuple

import xxhash

from ._digest import ALGO

log = logging.getLogger("artfs.hashes")

SCHEMA = 2  # 1: a row per file (path TEXT PRIMARY KEY); replaced, not migrated (a record is a shortcut)
_SCHEMA_SQL = ("CREATE TABLE IF NOT EXISTS dirs (path TEXT PRIMARY KEY, names BLOB NOT NULL, "
               "stamps BLOB NOT NULL) WITHOUT ROWID")
_BUSY_MS = 2000
_FINE_NS = 100_000_000  # 0.1 s: many times a kernel tick (at most 10 ms on Linux)
_COARSE_NS = 2_000_000_000  # file systems stamping whole seconds (FAT: even seconds)
_MAX_READ = 4 << 20
_FIRST_READ = 64 << 10
_PACK = struct.Struct("<QQqqq16s")  # dev, ino, size, mtime_ns, ctime_ns, digest


#: what identifies a file's bytes without reading them: (dev, ino, size, mtime_ns, ctime_ns)
Stamp = tuple[int, int, int, int, int]
#: a file's row in the record: its stamp and its digest (16 bytes)
Row = tuple[int, int, int, int, int, bytes]


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def matches(row: Row, st: os.stat_result) -> bool:
    """Whether ``row`` describes the file whose ``stat`` is ``st`` (every field equal)."""
    return (row[3] == st.st_mtime_ns and row[4] == st.st_ctime_ns and row[2] == st.st_size
            and row[1] == st.st_ino and row[0] == st.st_dev and stat.S_ISREG(st.st_mode))


def granularity(st: os.stat_result) -> int:
    """How long after a file's last change its times may still be the same (ns).

    Times of whole seconds (both mtime and ctime: a file system without sub-second times, or one
    of two-second FAT times) get 2 s; others 0.1 s, well above the kernel tick that stamps them.
    """
    if st.st_mtime_ns % 1_000_000_000 == 0 and st.st_ctime_ns % 1_000_000_000 == 0:
        return _COARSE_NS
    return _FINE_NS


def row_of(st: os.stat_result, n: int, digest: bytes, began: int) -> Row | None:
    """The row recording a read of ``n`` bytes begun at ``began`` (ns) that hashed to ``digest``,
    ``st`` being the file's ``fstat`` after it; None where the read may not be recorded."""
    m, c = st.st_mtime_ns, st.st_ctime_ns
    if n != st.st_size or not stat.S_ISREG(st.st_mode) or max(m, c) + granularity(st) > began:
        return None
    return (st.st_dev, st.st_ino, n, m, c, digest)


def hex_digest(raw: bytes) -> str:
    """``xxh128:<32 hex>`` of a raw 16-byte digest."""
    return f"{ALGO}:{raw.hex()}"


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
            write_all(out, b)
        want = _MAX_READ
    return f"{ALGO}:{h.hexdigest()}", n


def write_all(fd: int, b: bytes | memoryview) -> None:
    view = memoryview(b)
    while view:
        view = view[os.write(fd, view):]


class Hashed(NamedTuple):
    """A file's digest, size and mode; ``read``: its bytes were read for it (not found in the record)."""

    digest: str
    size: int
    mode: int
    read: bool


def hash_path(path: str, view: "RecordView | None") -> Hashed:
    """The digest of the file at ``path``: from ``view`` (the record) when its row matches the
    file's ``stat`` in every field, else read and hashed, and noted in ``view`` (recorded at its
    :meth:`~RecordView.save` when the read may be recorded, module docstring). ``OSError`` as
    ``open`` raises it. Safe to call from many threads at once with the same ``view``.
    """
    d, _, name = path.rpartition("/")
    row = view.get(d, name) if view is not None else None
    if row is not None:
        st = os.stat(path)
        if matches(row, st):
            return Hashed(hex_digest(row[5]), st.st_size, st.st_mode, False)
    began = time.time_ns()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        digest, n = digest_fd(fd)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if view is not None:
        view.note(d, name, row_of(after, n, bytes.fromhex(digest.partition(":")[2]), began))
    return Hashed(digest, n, after.st_mode, True)


def _decode(names: object, stamps: object) -> dict[str, Row]:
    """A directory's row as name -> row; {} for one that does not decode (it is written anew)."""
    if not isinstance(names, bytes) or not isinstance(stamps, bytes) or not names:
        return {}
    try:
        ns = names.decode("utf-8", "surrogateescape").split("\0")
        if len(stamps) != len(ns) * _PACK.size:
            return {}
        return dict(zip(ns, _PACK.iter_unpack(stamps)))
    except (UnicodeDecodeError, struct.error):
        return {}


def _encode(rows: dict[str, Row]) -> tuple[bytes, bytes] | None:
    """The (names, stamps) blobs of a directory's rows; None if one does not pack (then it is left out)."""
    try:
        return "\0".join(rows).encode("utf-8", "surrogateescape"), b"".join(_PACK.pack(*r) for r in rows.values())
    except (struct.error, UnicodeEncodeError):
        good = {}
        for name, r in rows.items():
            with contextlib.suppress(struct.error):
                _PACK.pack(*r)
                if "\0" not in name:
                    good[name] = r
        if len(good) == len(rows) or not good:
            return None
        return _encode(good)


class HashRecord:
    """The record at ``path`` (``<cache>/hashes.db``); see the module docstring.

    Every method swallows the database's failures (the record is a shortcut, never a reason for
    a ``put`` to fail): reads then know nothing and writes record nothing. Usable from several
    threads (one connection, used under a lock).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = None
        self._broken = False
        self._lock = threading.Lock()

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
                    con.execute("SELECT 1 FROM dirs LIMIT 1").fetchall()
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
                log.info("hash record %s is unreadable (%s); starting it anew", self.path, e)
                self._remove()
        self._broken = True
        return None

    def _remove(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + suffix)

    def _failed(self, e: Exception) -> None:
        """A query failed: corrupt (made anew at the next use) or busy (left for next time)."""
        self._close()
        if isinstance(e, sqlite3.OperationalError):
            log.debug("hash record %s: %s", self.path, e)
            return
        log.warning("hash record %s is unreadable (%s); starting it anew", self.path, e)
        self._remove()

    def _close(self) -> None:
        if self._con is not None:
            with contextlib.suppress(sqlite3.Error):
                self._con.close()
            self._con = None

    def close(self) -> None:
        with self._lock:
            self._close()

    # -- reading and writing -------------------------------------------------------------------
    def dir_rows(self, d: str) -> dict[str, Row]:
        """The rows of the files directly in the directory ``d`` (absolute, no trailing ``/``)."""
        with self._lock:
            con = self._connect()
            if con is None:
                return {}
            try:
                r = con.execute("SELECT names, stamps FROM dirs WHERE path = ?", (d,)).fetchone()
            except sqlite3.Error as e:
                self._failed(e)
                return {}
        return _decode(*r) if r else {}

    def dirs_below(self, root: str) -> list[str]:
        """The directories at or below ``root`` that have rows."""
        root = root.rstrip("/") or "/"
        lo = root + "/" if root != "/" else "/"
        hi = lo[:-1] + chr(ord("/") + 1)
        with self._lock:
            con = self._connect()
            if con is None:
                return []
            try:
                return [r[0] for r in con.execute("SELECT path FROM dirs WHERE path = ? OR (path >= ? AND path < ?)",
                                                  (root, lo, hi))]
            except sqlite3.Error as e:
                self._failed(e)
                return []

    def write(self, dirs: Iterable[tuple[str, dict[str, Row] | None]]) -> int:
        """Replace the rows of each directory given (None or {}: it has none now), in one
        transaction; returns how many files' rows were written."""
        packed: list[tuple[str, bytes, bytes]] = []
        gone: list[tuple[str]] = []
        n = 0
        for d, rows in dirs:
            blobs = _encode(rows) if rows else None
            if blobs is None:
                gone.append((d,))
            else:
                packed.append((d, *blobs))
                n += len(rows or ())
        if not packed and not gone:
            return 0
        with self._lock:
            con = self._connect()
            if con is None:
                return 0
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.executemany("INSERT OR REPLACE INTO dirs VALUES (?, ?, ?)", packed)
                    con.executemany("DELETE FROM dirs WHERE path = ?", gone)
                    con.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        con.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                self._failed(e)
                return 0
        return n

    def rows(self, paths: Iterable[str]) -> dict[str, tuple[Stamp, str]]:
        """path -> (stamp, digest) of those of ``paths`` (absolute) that have rows."""
        out: dict[str, tuple[Stamp, str]] = {}
        by_dir: dict[str, dict[str, Row]] = {}
        for p in paths:
            d, _, name = p.rpartition("/")
            if d not in by_dir:
                by_dir[d] = self.dir_rows(d)
            r = by_dir[d].get(name)
            if r is not None:
                out[p] = (r[:5], hex_digest(r[5]))
        return out


class RecordView:
    """The record as one download (or a put of single files) uses it: each directory's row read
    once, when first asked; readings noted; :meth:`save` writes back each directory whose rows
    changed, the others' rows kept as they were. Thread-safe."""

    def __init__(self, record: HashRecord) -> None:
        self.record = record
        self._dirs: dict[str, dict[str, Row]] = {}
        self._changed: set[str] = set()
        self._lock = threading.Lock()

    def _rows(self, d: str) -> dict[str, Row]:
        rows = self._dirs.get(d)
        if rows is None:
            got = self.record.dir_rows(d)
            with self._lock:
                rows = self._dirs.setdefault(d, got)
        return rows

    def get(self, d: str, name: str) -> Row | None:
        return self._rows(d).get(name)

    def note(self, d: str, name: str, row: Row | None) -> None:
        """``name`` in ``d`` was read: ``row`` records that read (None: it may not be, and the
        old row, no longer true, goes)."""
        rows = self._rows(d)
        with self._lock:
            if row is not None:
                rows[name] = row
            elif rows.pop(name, None) is None:
                return
            self._changed.add(d)

    def save(self) -> int:
        """Write the directories whose rows changed; returns how many files' rows were written."""
        with self._lock:
            changed = sorted(self._changed)
            self._changed.clear()
        return self.record.write((d, self._dirs[d]) for d in changed)
