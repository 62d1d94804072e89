"""A draft's database (``draft.db``): its tables, their columns, the states they encode, the
schema's versions and their migration, and the transactions every other part of a draft runs.

:class:`DraftDB` is what the parts of a :class:`artfs._draft.Draft` share (the draft holds one
of each: ``namespace``, ``staging``, ``snapshot``, ``commits``, each built on this one): a
draft's in-memory state and the one sqlite connection. It knows nothing of POSIX rules or commits;
its methods are public to those parts (this module is private to the package).

``draft.db`` is sqlite3 in WAL mode with ``synchronous=NORMAL``: a committed transaction survives
a SIGKILL of the process (:meth:`Staging.fsync` also checkpoints it, for power loss).

Table ``meta`` (``key TEXT PRIMARY KEY, value TEXT``: each value is JSON)
    format          1, or 2 once the draft holds a FIFO, socket or device (:data:`FORMATS`)
    ready           true once the draft is completely created (set in the transaction that
                    materialises the base: a draft without it is never opened, see below)
    store_url, store_id, project, artifact      whose draft this is
    created         ns since the epoch
    base_version, base_digest    the base version (None: a new artifact); its manifest is
                    ``base-v<N>.json`` beside draft.db, written (fsync'ed) before the key
    dirty           see "States of the draft"
    commit_id, commit_vdigest    the pending commit (see :mod:`artfs._draft.commit`)
    description, type, metadata, aliases        what the next version will get
    group, group_writer    set once the draft was recorded as a part of a group of distributed
                    writers (:meth:`artfs._draft.commit.Commit.part`); later commits go there too

Table ``nodes`` (one row per node of the tree)
    ino         INTEGER PRIMARY KEY AUTOINCREMENT: stable for the node's lifetime (renames and
                reopening keep it) and never reused, even after a refresh emptied the table;
                the root is :data:`ROOT` (1), its parent 0
    parent, name    the directory entry; UNIQUE (parent, name) (index ``nodes_name``)
    kind        'f' file, 'd' directory, 'l' symlink; 'p' FIFO, 's' socket, 'b'/'c' device
    mode        permission bits (07777); a version keeps only a file's ``S_IXUSR``
    mtime       ns (a staged file's own mtime wins over it)
    fid         NULL: a base file; else the staged file ``files/<fid>`` (index ``nodes_fid``)
    digest, size    a base file: the base entry's digest (NULL for a reference) and size; a
                staged file: a cached digest of ``files/<fid>`` and the size it was taken at
    hmtime      a staged file: the mtime_ns its digest was taken at (NULL for base files)
    ref, ref_info   a base file that is a reference: its URI and pinning info (JSON)
    target      a symlink's target
    uid, gid    owner (NULL: the draft's owner, i.e. whoever runs the daemon)   [schema 2]
    atime, ctime    ns (NULL: equal to ``mtime``)                                [schema 2]
    rdev        device number of kind 'b'/'c'                                   [schema 2]

States of a file node
    base      ``fid`` NULL: the content is the base version's blob ``digest`` (or reference
              ``ref``), read from the store/cache. Nothing is copied into staging.
    staged    ``fid`` set: the content is ``files/<fid>``. ``digest``/``size``/``hmtime`` cache
              its digest, valid only while the file's size and mtime_ns still equal
              ``size``/``hmtime`` and no write was announced since (:meth:`Staging.writing` /
              :meth:`Staging.mark_modified` set ``digest`` to NULL *before* the caller writes;
              :meth:`DraftDB.digest_valid` is the test).

    create ----------------------------------------> staged (empty, digest of b"")
    base --open_for_write--------------------------> staged (copy-up: base bytes, digest still valid)
    base --open_for_write(truncate) / truncate(0)--> staged (empty: no copy-up)
    staged --write / truncate----------------------> staged, digest NULL until hashed (status/commit)
    staged --commit (no write handle open)---------> base of the new version; files/<fid> deleted
Directories, symlinks, FIFOs, sockets and device nodes are rows only. Base nodes are materialised
with NULL owners and times: a version records neither. A staged file's atime and mtime (and a
ctime at least as new as the row's) come from its staged file.

States of the draft
    clean     not ``dirty``: the nodes are exactly the base version's files.
              :meth:`Drafts.open` moves a clean draft to the artifact's current latest.
    dirty     something a version records changed since the draft was started or last reset,
              or it holds symlinks/empty directories/FIFOs/sockets/devices. It may still equal
              its base by content: ``status().differs`` and ``commit`` decide by content.
    pending   ``meta.commit_id`` set: a commit was started and may or may not have created a
              version; ``commit_vdigest`` records which content it was committing. The next
              commit resolves it (:mod:`artfs._draft.commit`).

Schema versions of ``nodes`` (the ``format`` key stays 1: a newer artfs reads both)
    1  the columns up to ``target``.
    2  + uid, gid, atime, ctime, rdev, and kinds 'p', 's', 'b', 'c' (rows only, kept in the
       draft and left out of a version, like empty directories; the first one sets ``format``
       to 2). An older artfs ignores the new columns (it selects its own). Opening a schema-1
       draft for writing adds the columns (ALTER TABLE, NULL everywhere, so every node keeps
       what it showed) and the ``nodes_subdirs`` index (link counts of directories), idempotently
       (a crash half-way is finished next time); a read-only open selects NULLs.

What a crash leaves (the database side; the commit's steps are in :mod:`artfs._draft.commit`)
    Every namespace operation is one transaction. A staged file created for it (create, O_TRUNC,
    copy-up: ``files/<fid>`` or ``.tmp``) whose transaction did not commit, or one whose node a
    committed transaction removed (unlink, rename over it), is unreferenced: :meth:`DraftDB.sweep`
    deletes it at the next open. A draft killed while being created lacks ``meta.ready`` and is
    refused (remove it and start again); the base is materialised in the transaction that sets it.

Full disk
    A transaction that cannot grow the journal raises OSError(ENOSPC) naming the staging disk
    (:meth:`DraftDB.disk_full`; sqlite says only "database or disk is full", which the mount would
    turn into EIO), and rolls back. Deletions must work on a full disk, since they are how a user
    gets room back: ``reserve`` (:data:`RESERVE` bytes beside draft.db) is released when a deletion
    finds the disk full and the transaction is retried (:meth:`DraftDB.freeing_tx`), and allocated
    again once an unlink freed a staged file's space (and at open).

Threads: one lock (``lock``, re-entrant) guards the connection (``check_same_thread=False``);
writes through file descriptors do not take it but pass ``gate`` (:class:`_Gate`), which commit
and hashing take exclusively, so the bytes hashed are the bytes uploaded.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import sqlite3
import stat
import threading
import time
from functools import partial
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from .._digest import digest_bytes
from .._errors import ArtfsError
from .._manifest import Entry, Manifest

ROOT = 1
FORMAT = 1
#: the ``format`` key: 1, or 2 once the draft holds a FIFO, socket or device (kinds an artfs from
#: before them would misread, so it refuses the draft as "unknown draft format" instead)
FORMATS = (1, 2)
EMPTY_DIGEST = digest_bytes(b"")
#: bytes kept allocated in ``reserve`` beside draft.db, released when a deletion finds the disk
#: full, so that ``rm`` can always free space (the journal needs room to record it)
RESERVE = 1 << 20
_SQLITE_FULL = 13

#: ``fetch(entry, path)`` writes the bytes of a base entry into the local file ``path``
Fetch = Callable[[Entry, str], None]


def _oserr(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code) + (f": {what}" if what else ""))


def _parse_time(s: str) -> int:
    try:
        return int(_dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1e9)
    except (ValueError, AttributeError):
        return time.time_ns()


class _Node(NamedTuple):
    ino: int
    parent: int
    name: str
    kind: str  # 'f' | 'd' | 'l'
    mode: int  # permission bits
    mtime: int  # ns (a staged file's own mtime wins)
    fid: str | None
    digest: str | None
    size: int
    hmtime: int | None
    ref: str | None
    ref_info: str | None
    target: str | None
    # schema 2 (POSIX attributes; NULL in rows of schema 1 and in base nodes: see _SCHEMA)
    uid: int | None = None
    gid: int | None = None
    atime: int | None = None
    ctime: int | None = None
    rdev: int | None = None


_node_of_row = partial(tuple.__new__, _Node)  # _Node(*row) without the Python-level __new__
_new_entry = partial(tuple.__new__, Entry)

_COLS = "ino, parent, name, kind, mode, mtime, fid, digest, size, hmtime, ref, ref_info, target"
#: what attribute reads select (the commit path reads :data:`_COLS` only)
_ACOLS = _COLS + ", uid, gid, atime, ctime, rdev"
_ACOLS_V1 = _COLS + ", NULL, NULL, NULL, NULL, NULL"  # a schema-1 database opened read-only
_POSIX_COLUMNS = ("uid", "gid", "atime", "ctime", "rdev")
#: the longest name of one directory entry, in bytes (NAME_MAX): longer ones are ENAMETOOLONG
NAME_MAX = 255

# Every column, the states the rows encode and the schema versions (1: the columns up to
# ``target``; 2: + uid, gid, atime, ctime, rdev, migrated by :meth:`DraftDB.connect`) are
# described in the module docstring.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS nodes (
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    mode INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    fid TEXT,
    digest TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    hmtime INTEGER,
    ref TEXT,
    ref_info TEXT,
    target TEXT,
    uid INTEGER,
    gid INTEGER,
    atime INTEGER,
    ctime INTEGER,
    rdev INTEGER
);
"""
_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS nodes_name ON nodes(parent, name);
CREATE INDEX IF NOT EXISTS nodes_parent ON nodes(parent);
CREATE INDEX IF NOT EXISTS nodes_fid ON nodes(fid) WHERE fid IS NOT NULL;
CREATE INDEX IF NOT EXISTS nodes_subdirs ON nodes(parent) WHERE kind = 'd';
"""


class _Gate:
    """Many writers or one exclusive holder (a commit); the exclusive side has priority."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._writers = 0
        self._frozen = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._frozen:
                self._cond.wait()
            self._writers += 1
        try:
            yield
        finally:
            with self._cond:
                self._writers -= 1
                if not self._writers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._frozen:
                self._cond.wait()
            self._frozen = True
            while self._writers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._frozen = False
                self._cond.notify_all()


class DraftDB:
    """A draft's state in this process and its database; see the module docstring.

    Opening (the lock file, the owner, which database to open) is :class:`artfs._draft.Draft`'s,
    which hands the connection over with :meth:`attach` and takes it back with :meth:`detach`.
    """

    def __init__(self, path: str, *, fetch: Fetch | None, readonly: bool) -> None:
        self.path = os.path.abspath(path)
        self.fetch = fetch
        self.readonly = readonly
        self.files = os.path.join(self.path, "files")
        self.lock = threading.RLock()
        self.gate = _Gate()
        self.invalid: set[int] = set()  # inos whose digest is known to be NULL in the db
        self.writers: dict[int, int] = {}  # ino -> write handles the caller holds (open_for_write/release)
        self._dirty = False
        self.gen = 0  # counts namespace changes: a commit compares it to see what changed meanwhile
        self.committing: set[str] = set()  # staged files a running commit reads: deleted after it
        #: transactions committed so far: an fsync checkpoints the journal only if one committed
        #: since the last fsync's checkpoint (:meth:`Staging.fsync`)
        self.txs = 0
        self._con: sqlite3.Connection | None = None
        self.acols = _ACOLS

    def attach(self, con: sqlite3.Connection, *, acols: str = _ACOLS) -> None:
        """Use ``con`` (from :meth:`connect`); ``acols``: what attribute reads select."""
        self._con = con
        self.acols = acols

    def detach(self) -> None:
        """Close the connection (the draft is closed); the caller holds the lock."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def reload_dirty(self) -> None:
        """``meta.dirty`` was written (a reset, the open): the in-process copy follows it."""
        self._dirty = bool(self.meta("dirty", False))

    @staticmethod
    def connect(db: str, *, readonly: bool) -> sqlite3.Connection:
        if readonly:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None,
                                  check_same_thread=False, timeout=30)
        else:
            con = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=30)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(_SCHEMA)
            # schema 1 -> 2 (see _SCHEMA): idempotent, so a crash half-way is finished next time
            have = {r[1] for r in con.execute("PRAGMA table_info(nodes)")}
            for col in _POSIX_COLUMNS:
                if col not in have:
                    con.execute(f"ALTER TABLE nodes ADD COLUMN {col} INTEGER")
            con.execute("CREATE INDEX IF NOT EXISTS nodes_subdirs ON nodes(parent) WHERE kind = 'd'")
        return con

    # -- sqlite plumbing ------------------------------------------------------------------------
    def con(self) -> sqlite3.Connection:
        if self._con is None:
            raise ArtfsError(f"{self.path}: the draft is closed")
        return self._con

    def q(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        with self.lock:
            return self.con().execute(sql, tuple(args)).fetchall()

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; a full disk raises OSError(ENOSPC) naming it (sqlite says only
        'database or disk is full', which the mount would turn into EIO)."""
        if self.readonly:
            raise _oserr(errno.EROFS, "draft opened read-only")
        con = self.con()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            self.txs += 1
        except sqlite3.OperationalError as e:
            if con.in_transaction:  # a failed COMMIT may leave the transaction open
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
            if getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL:
                raise self.disk_full() from e
            raise

    def disk_full(self) -> OSError:
        """ENOSPC naming the disk that holds the staging directory (for the error and the log)."""
        mnt = self.path
        with contextlib.suppress(OSError):
            while not os.path.ismount(mnt):
                mnt = os.path.dirname(mnt)
        try:
            st = os.statvfs(self.path)
            free = f", {st.f_bavail * st.f_frsize} bytes free"
        except OSError:
            free = ""
        return OSError(errno.ENOSPC, f"No space left on device: the staging disk {mnt} (holding the draft "
                                     f"{self.path}) is full{free}; delete files from the draft or free space there")

    # -- the reserve: room for the journal to record deletions on a full disk -------------------
    def make_reserve(self) -> None:
        """Keep ``reserve`` (:data:`RESERVE` bytes, allocated) beside draft.db; best effort."""
        p = os.path.join(self.path, "reserve")
        try:
            if os.stat(p).st_size >= RESERVE:
                return
        except FileNotFoundError:
            pass
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return
        try:
            os.posix_fallocate(fd, 0, RESERVE)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no room for all of it: none (a sparse file reserves nothing)
        finally:
            os.close(fd)

    def _release_reserve(self) -> bool:
        """Give the reserve's space back to the disk (a deletion needs room in the journal)."""
        p = os.path.join(self.path, "reserve")
        try:
            if os.stat(p).st_size == 0:
                return False
            os.truncate(p, 0)
        except OSError:
            return False
        return True

    def freeing_tx(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """A transaction that frees space (a deletion): on a full disk, spend the reserve and retry."""
        try:
            with self.tx() as con:
                return body(con)
        except OSError as e:
            if e.errno != errno.ENOSPC or not self._release_reserve():
                raise
        with self.tx() as con:
            return body(con)

    def meta(self, key: str, default: Any = None) -> Any:
        with self.lock:
            row = self.con().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    @staticmethod
    def set_meta(con: sqlite3.Connection, **kv: Any) -> None:
        con.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        [(k, json.dumps(v)) for k, v in kv.items()])

    def mark_dirty(self, con: sqlite3.Connection) -> None:
        self.gen += 1
        if not self._dirty:
            self.set_meta(con, dirty=True)

    def after_tx(self) -> None:
        """A transaction that marked the draft dirty committed (``_dirty`` mirrors ``meta.dirty``)."""
        self._dirty = True

    def node(self, ino: int) -> _Node:
        row = self.con().execute(f"SELECT {self.acols} FROM nodes WHERE ino = ?", (ino,)).fetchone()
        if row is None:
            raise _oserr(errno.ENOENT, f"inode {ino}")
        return _Node(*row)

    def child(self, parent: int, name: str) -> _Node | None:
        row = self.con().execute(f"SELECT {self.acols} FROM nodes WHERE parent = ? AND name = ?",
                                (parent, name)).fetchone()
        return None if row is None else _Node(*row)

    def directory(self, ino: int) -> _Node:
        n = self.node(ino)
        if n.kind != "d":
            raise _oserr(errno.ENOTDIR)
        return n

    def fpath(self, fid: str) -> str:
        return os.path.join(self.files, fid)

    # -- creation, reset, recovery ---------------------------------------------------------------
    def initialise(self, init: dict[str, Any]) -> None:
        base: Manifest | None = init["base"]
        now = time.time_ns()
        with self.tx() as con:
            con.execute("DELETE FROM nodes")
            con.execute("DELETE FROM meta")
            con.execute("DELETE FROM sqlite_sequence WHERE name = 'nodes'")
            con.execute("INSERT INTO nodes (ino, parent, name, kind, mode, mtime) VALUES (?, 0, '', 'd', ?, ?)",
                        (ROOT, 0o755, now))
            self.set_meta(con, format=FORMAT, store_url=init["store_url"], store_id=init["store_id"],
                      project=init["project"], artifact=init["artifact"], type=init["type"],
                      description=None, metadata={}, aliases=[], commit_id=None, commit_vdigest=None,
                      created=now, dirty=False)
            self.set_base(con, base)
            self.materialise(con, base)
            self.set_meta(con, ready=True)
        for fn in os.listdir(self.files):
            os.unlink(self.fpath(fn))

    def set_base(self, con: sqlite3.Connection, base: "Manifest | _Base | None") -> None:
        """Record ``base`` as the base version (its manifest is kept beside draft.db)."""
        if base is not None:
            p = os.path.join(self.path, f"base-v{base.version}.json")
            if not os.path.exists(p):
                tmp = p + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(base.to_bytes())
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, p)
        self.set_meta(con, base_version=base.version if base else None, base_digest=base.digest if base else None)

    def materialise(self, con: sqlite3.Connection, base: Manifest | None) -> None:
        """Insert a base node for every entry of ``base`` (one executemany; indexes built after)."""
        con.execute("DROP INDEX IF EXISTS nodes_name")
        con.execute("DROP INDEX IF EXISTS nodes_parent")
        con.execute("DROP INDEX IF EXISTS nodes_fid")
        con.execute("DROP INDEX IF EXISTS nodes_subdirs")
        if base is not None:
            # never reuse an inode number, even after a refresh emptied the table
            seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'nodes'").fetchone()
            top = con.execute("SELECT max(ino) FROM nodes").fetchone()[0]
            nxt = max(seq[0] if seq else 0, top or 0, ROOT) + 1
            mtime = _parse_time(base.created)
            dirs: dict[str, int] = {"": ROOT}
            rows: list[tuple[Any, ...]] = []
            for e in base.entries:
                d, _, fname = e.path.rpartition("/")
                parent = dirs.get(d)
                if parent is None:
                    parts = d.split("/")
                    parent = ROOT
                    for i in range(len(parts)):
                        sub = "/".join(parts[: i + 1])
                        ino = dirs.get(sub)
                        if ino is None:
                            ino = dirs[sub] = nxt
                            nxt += 1
                            rows.append((ino, parent, parts[i], "d", 0o755, mtime, None, None, 0, None, None, None, None))
                        parent = ino
                rows.append((nxt, parent, fname, "f", 0o755 if e.executable else 0o644, mtime, None, e.digest,
                             e.size, None, e.ref, json.dumps(e.ref_info) if e.ref_info else None, None))
                nxt += 1
            con.executemany(f"INSERT INTO nodes ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        for stmt in filter(None, (s.strip() for s in _INDEXES.split(";"))):
            con.execute(stmt)

    def sweep(self, *, tmp: bool = False) -> None:
        """Delete staged files no node references (left by a crash, or by commit's step 5).

        ``<fid>.tmp`` files only with ``tmp`` (at open): otherwise one may be a copy-up that
        another thread is writing without the lock (a commit ends while a file is copied up)."""
        live = {r[0] for r in self.q("SELECT fid FROM nodes WHERE fid IS NOT NULL")}
        live |= {self._fid_open(i) for i in self.writers}
        for fn in os.listdir(self.files):
            if fn not in live and (tmp or not fn.endswith(".tmp")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.fpath(fn))
        keep = f"base-v{self.meta('base_version')}.json"
        for fn in os.listdir(self.path):
            if fn.startswith("base-v") and fn != keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.path, fn))

    def _fid_open(self, ino: int) -> str | None:
        row = self.con().execute("SELECT fid FROM nodes WHERE ino = ?", (ino,)).fetchone()
        return row[0] if row else None

    # -- identity ------------------------------------------------------------------------------
    @property
    def project(self) -> str:
        return str(self.meta("project"))

    @property
    def artifact(self) -> str:
        return str(self.meta("artifact"))

    @property
    def store_url(self) -> str:
        return str(self.meta("store_url"))

    @property
    def store_id(self) -> str:
        return str(self.meta("store_id"))

    @property
    def base_version(self) -> int | None:
        with self.lock:
            v = self.meta("base_version")
            return None if v is None else int(v)

    @property
    def dirty(self) -> bool:
        with self.lock:
            return bool(self.meta("dirty", False))
    def staged_nodes(self) -> list[_Node]:
        return [_Node(*r) for r in self.q(f"SELECT {_COLS} FROM nodes WHERE fid IS NOT NULL")]

    def digest_valid(self, n: _Node, st: os.stat_result) -> bool:
        return (n.digest is not None and n.ino not in self.invalid and st.st_size == n.size
                and st.st_mtime_ns == n.hmtime)

    @staticmethod
    def entry_of(n: _Node, path: str) -> Entry:
        # tuple.__new__ directly: a snapshot builds one per base file (NamedTuple.__new__ is Python)
        return _new_entry((path, n.digest, n.size, bool(n.mode & stat.S_IXUSR), n.ref,
                           json.loads(n.ref_info) if n.ref_info else None))


class _Base(NamedTuple):
    """What a draft keeps of its base version: enough for :meth:`DraftDB.set_base`."""

    version: int
    digest: str
    data: bytes

    def to_bytes(self) -> bytes:
        return self.data


def read_owner(path: str) -> dict[str, Any]:
    try:
        with open(os.path.join(path, "owner")) as f:
            d = json.load(f)
            return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}
