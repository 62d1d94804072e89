"""Drafts: the persistent, crash-safe staging tree of an artifact's next version.

A draft is what the mount shows at ``MNT/<project>/<artifact>/draft/``: a writable,
copy-on-write view of a *base* version (the artifact's latest when the draft was started, or
nothing for a new artifact). This module owns its on-disk state and every operation on it, and
has no FUSE dependency: the daemon is a thin adapter over :class:`Draft`, and ``artfs commit``
commits a draft when no daemon runs.

Layout (never in the cache: a draft is user data)::

    $ARTFS_STAGING_DIR (default $XDG_DATA_HOME/artfs/staging)
      <store-id>/<project>/<artifact>/
        draft.db          sqlite3, WAL, synchronous=NORMAL: the namespace and the pending commit
        base-v<N>.json    the base version's manifest (written once; for status: removed files)
        files/<fid>       contents of staged files (fid: a uuid), written in place by the caller
        files/<fid>.tmp   a copy-up in progress
        lock              flock'ed exclusively by the one process that has the draft open
        reserve           RESERVE bytes kept allocated for the journal (see "Full disk" below)
        owner             who holds the lock (pid, what, mountpoint) for the "draft is busy" message

``draft.db`` has one row per node (``nodes``: inode, parent, name, kind, permission bits, mtime,
owner, group, atime, ctime, and for files either the base entry's digest/size/reference or a
staged file id with a cached digest; the schema and its versions are at ``_SCHEMA``) and a few
keys (``meta``: format, store, project, artifact, base version and digest, the pending
commit, description/type/metadata/aliases for the next version, the dirty flag). Inode numbers
are the rows' ``INTEGER PRIMARY KEY AUTOINCREMENT``: stable for a node's lifetime (renames and
reopening keep them) and never reused; the root is :data:`ROOT` (1).

States of a file node
    base      ``fid`` NULL: the content is the base version's blob ``digest`` (or reference
              ``ref``), read from the store/cache. Nothing is copied into staging.
    staged    ``fid`` set: the content is ``files/<fid>``. ``digest``/``size``/``hmtime`` cache
              its digest, valid only while the file's size and mtime_ns still equal
              ``size``/``hmtime`` and no write was announced since (:meth:`Draft.writing` /
              :meth:`Draft.mark_modified` set ``digest`` to NULL *before* the caller writes).

    create ----------------------------------------> staged (empty, digest of b"")
    base --open_for_write--------------------------> staged (copy-up: base bytes, digest still valid)
    base --open_for_write(truncate) / truncate(0)--> staged (empty: no copy-up)
    staged --write / truncate----------------------> staged, digest NULL until hashed (status/commit)
    staged --commit (no write handle open)---------> base of the new version; files/<fid> deleted
Directories, symlinks, FIFOs, sockets and device nodes are rows only. Permission bits, owners
and times are kept for the draft's life, but a version keeps only a file's executable bit
(``S_IXUSR``): no owners, no times. Empty directories, FIFOs, sockets and devices stay in the
draft but are not part of a version (a version is a list of files). Who may change what is the
kernel's business (the mount uses ``default_permissions``); this module stores what it is told.

States of the draft
    clean     not ``dirty``: the nodes are exactly the base version's files.
              :meth:`Drafts.open` moves a clean draft to the artifact's current latest.
    dirty     something a version records changed since the draft was started or last reset,
              or it holds symlinks/empty directories/FIFOs/sockets/devices. It may still equal
              its base by content:
              ``status().differs`` and ``commit`` decide by content.
    pending   ``meta.commit_id`` set: a commit was started and may or may not have created a
              version; ``commit_vdigest`` records which content it was committing. The next
              commit resolves it (below).

Durability: every namespace operation is one sqlite transaction. In WAL mode with
``synchronous=NORMAL`` a committed transaction survives a SIGKILL of the process; :meth:`Draft.fsync`
also checkpoints it for power loss. Bytes written into ``files/`` with ``pwrite`` survive a
SIGKILL too (the page cache belongs to the kernel). So a daemon killed with SIGKILL loses nothing
that was written (closed or not).

What a crash (SIGKILL) leaves, and how the next open finishes it
    * during create / O_TRUNC / copy-up: ``files/<fid>`` (or ``.tmp``) exists, the transaction
      that would reference it did not commit. The node is unchanged; the sweep at open deletes
      the unreferenced file.
    * during unlink, or a rename over a staged file: the transaction removed the node, the file
      is still there: unreferenced, swept.
    * while the draft is being created: the base is materialised in the same transaction that
      sets ``meta.ready``; a draft without it is rebuilt from scratch.
    * commit, step by step::

        0 read the namespace; refuse symlinks that cannot be committed (before any hashing)
        1 hash staged files whose cached digest is invalid; store the digests  (one transaction)
        2 record commit_id (uuid) + commit_vdigest                              (one transaction)
        3 Store.commit(..., commit_id, base_version): intent, upload, manifest carrying commit_id
        4 reset: base := the new version, staged files become base nodes, commit_id := NULL,
          description/metadata/aliases cleared                                  (one transaction)
        5 delete the staged files no node references any more

      Killed before 2: a dirty draft; commit again. Killed after 2 (pending): the next commit
      passes the same id, and if step 3 got as far as the manifest, Store.commit finds the
      version newer than the base that carries the id and returns it (``created=False``) instead
      of creating a second one; the draft then resets to it. If the content was changed after
      the crash (``commit_vdigest`` differs), the draft first adopts the version that attempt
      created (if any) as its base, then commits the new content under a fresh id: two versions,
      both real. Killed after 4: unreferenced files, swept. One version per content, never two.
    * a commit that fails (store down) raises an error saying how to retry and changes nothing
      but cached digests and the pending id.

Full disk: an operation that needs room on the staging disk (a write, creating a file, a
transaction that grows the journal) fails with OSError(ENOSPC) whose message names the disk (the
mount passes ENOSPC on and logs that line); nothing half-done is left (the transaction rolls back,
a new staged file is removed). Deletions must work on a full disk, since they are how a user gets
room back: ``reserve`` is released when an unlink/rmdir finds the disk full and the transaction is
retried, and it is allocated again once an unlink freed a staged file's space (and at open).

Symlinks: a version has no symlinks. At commit, a symlink whose target resolves (relative to its
directory, through further symlinks, never leaving the draft) to a file is committed as a copy of
that file (same digest: no bytes are duplicated in the store); one resolving to a directory is
committed as a copy of every file under it. Absolute, escaping, dangling and looping symlinks
cannot be committed: ``commit`` refuses with an error naming them and keeps the draft whole, so
nothing is dropped silently; ``status().problems`` lists them beforehand.

Equality: a draft whose files equal its base (same paths, digests and executable bits: a file
rewritten with identical bytes, changes reverted, ...) commits nothing and ``commit`` returns
None; its staged copies are dropped (the base has those bytes). A new artifact's draft without
files commits nothing either.

Concurrency: one process owns a draft: an exclusive ``flock`` on ``lock`` for as long as the
:class:`Draft` is open (the daemon holds it for the mount's lifetime; others get
:class:`DraftBusy` naming the owner, and may still look with ``Draft.open(path, readonly=True)``).
Inside the owner every method may be called from any thread: one lock guards the sqlite
connection (``check_same_thread=False``). Writes through file descriptors do not take it; they
go through :meth:`Draft.writing`, a shared gate that commit and hashing take exclusively, so the
bytes hashed are the bytes uploaded (truncating a staged file passes the gate too). While a
commit runs, writes and truncates wait for it; everything else is answered at once: the commit
holds the lock only to read the namespace (step 0 below) and to record its results, not while it
hashes or uploads. A namespace change made meanwhile (create, rename, unlink, mkdir, chmod) goes
to the next version: the commit counts changes (``_gen``), and if any happened the draft stays
dirty after it; a staged file becomes a base node only if the new version holds its bytes. A
staged file unlinked during a commit is deleted after it (``_committing``: the upload reads it).

What the FUSE adapter does (draft inodes are per draft; map them into the daemon's inode space)
    lookup/getattr/readdir/mkdir/rmdir/unlink/rename/symlink/readlink/chmod/utimens/statfs:
        call the method of the same name; ``readdir(ino, after=cookie)`` pages by inode number.
    create: ``create()`` then ``open_for_write(ino)``; open for writing:
        ``open_for_write(ino, truncate=O_TRUNC)``; keep an fd on the returned path;
        ``release(ino)`` when the handle is released (a file with an open write handle stays
        staged across a commit, so its fd stays valid).
    write: ``with draft.writing(ino): os.pwrite(fd, data, offset)``.
    read: staged -> ``staged_path(ino)``; base -> ``base_entry(ino)`` (digest/reference) through
        the cache, like a version's file.
    setattr size: ``truncate(ino, size)``; fsync/fsyncdir: ``fsync(ino, datasync)``.
    errors: OSError carries the errno to pass on; InvalidPath (a name a version cannot hold)
        -> EINVAL; DraftBusy only at open. Hard links are not supported (EPERM).
    xattrs user.artfs.description/type/metadata/aliases on draft/: ``set_description`` etc.
    unmount: ``commit(store)``; on error log it and keep the draft (``artfs commit`` later).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import shutil
import sqlite3
import stat
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple

from ._digest import digest_bytes, digest_file
from ._errors import AlreadyExists, ArtfsError, CorruptData, InvalidPath, NotFound, StoreUnavailable
from ._manifest import Entry, Manifest, check_entries, gc_paused, version_digest
from ._names import check_alias, check_name, check_path

if TYPE_CHECKING:
    from ._distributed import PartResult
    from ._store import CommitResult, Store

__all__ = [
    "Attr", "Draft", "DraftBusy", "DraftRef", "DraftStatus", "Drafts", "RENAME_EXCHANGE", "RENAME_NOREPLACE",
    "ROOT", "default_staging_root", "list_drafts", "store_fetch",
]

#: ``renameat2`` flags (Linux values, as FUSE passes them)
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

ROOT = 1
FORMAT = 1
#: the ``format`` key: 1, or 2 once the draft holds a FIFO, socket or device (kinds an artfs from
#: before them would misread, so it refuses the draft as "unknown draft format" instead)
FORMATS = (1, 2)
EMPTY_DIGEST = digest_bytes(b"")
MAX_SYMLINK = 4095
#: bytes kept allocated in ``reserve`` beside draft.db, released when a deletion finds the disk
#: full, so that ``rm`` can always free space (the journal needs room to record it)
RESERVE = 1 << 20
_SQLITE_FULL = 13
_MAX_HOPS = 40

#: ``fetch(entry, path)`` writes the bytes of a base entry into the local file ``path``
Fetch = Callable[[Entry, str], None]

_KIND = {"f": "file", "d": "dir", "l": "symlink", "p": "fifo", "s": "socket", "b": "blockdev", "c": "chardev"}
_IFMT = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK, "p": stat.S_IFIFO, "s": stat.S_IFSOCK,
         "b": stat.S_IFBLK, "c": stat.S_IFCHR}
#: kinds a draft keeps but a version does not (like empty directories): FIFOs, sockets, devices
SPECIAL = {stat.S_IFIFO: "p", stat.S_IFSOCK: "s", stat.S_IFBLK: "b", stat.S_IFCHR: "c"}

#: set to a step name (``after-commit-id``, ``after-store-commit``, ``after-reset``) to make :meth:`Draft.commit`
#: stop there (print a line to stderr and sleep) so a crash test can SIGKILL it at that point
TEST_PAUSE_ENV = "ARTFS_DRAFT_TEST_PAUSE"


class DraftBusy(ArtfsError):
    """Another process (usually a running ``artfs mount``) has the draft open."""

    exit_code = 8

    def __init__(self, message: str, owner: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.owner = owner or {}


def default_staging_root() -> str:
    env = os.environ.get("ARTFS_STAGING_DIR")
    if env:
        return env
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "artfs", "staging")


def _oserr(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code) + (f": {what}" if what else ""))


def _name(name: str | bytes) -> str:
    """One path component: what check_path allows, without '/'.

    A component longer than :data:`NAME_MAX` bytes is ENAMETOOLONG (an OSError, not
    InvalidPath), for lookups too, as on a local filesystem."""
    if len(name if isinstance(name, bytes) else name.encode("utf-8", "surrogatepass")) > NAME_MAX:
        raise _oserr(errno.ENAMETOOLONG)
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPath(f"invalid name {name!r}: not UTF-8") from None
    if not isinstance(name, str) or "/" in name:
        raise InvalidPath(f"invalid name {name!r}: contains '/'")
    return check_path(name)


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

# Schema versions of ``nodes`` (the ``format`` key stays 1: a newer artfs reads both).
#   1  the columns up to ``target``.
#   2  + uid, gid (owner; NULL: the owner of the draft, i.e. whoever runs the daemon),
#      atime, ctime (ns; NULL: equal to ``mtime``), rdev (device number of kind 'b'/'c').
#      Kinds 'p' (FIFO), 's' (socket), 'b', 'c' (devices) are new too: rows only, kept in the
#      draft and left out of a version, like empty directories; the first one sets ``format``
#      to 2 (:data:`FORMATS`). An older artfs ignores the new columns (it selects its own).
#      Opening a schema-1 draft for writing adds the columns (ALTER TABLE, NULL everywhere, so
#      every node keeps what it showed) and the ``nodes_subdirs`` index (link counts of
#      directories); a read-only open selects NULLs.
#      Base nodes are materialised with NULLs too: a version records no owner and no times.
#      A staged file's atime, mtime (and a ctime at least as new) come from its staged file.
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


@dataclass(frozen=True)
class Attr:
    """What ``stat`` shows for a node of the draft."""

    ino: int
    kind: str  # "file" | "dir" | "symlink"
    mode: int  # full st_mode (type and permission bits)
    size: int
    mtime_ns: int
    staged: bool = False  # a file whose bytes are in staging (else: base blob / not a file)
    uid: int | None = None  # None: the draft's owner (whoever runs the daemon)
    gid: int | None = None
    atime_ns: int | None = None  # None: mtime_ns
    ctime_ns: int | None = None  # None: mtime_ns
    nlink: int = 1  # a directory: 2 + its subdirectories
    blocks: int | None = None  # 512-byte blocks a staged file really uses (None: size rounded up)
    rdev: int = 0  # a device's number

    @property
    def executable(self) -> bool:
        return self.kind == "file" and bool(self.mode & stat.S_IXUSR)


@dataclass
class DraftStatus:
    """How a draft differs from its base version."""

    project: str
    artifact: str
    store_url: str
    base_version: int | None
    path: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    added_bytes: int = 0
    changed_bytes: int = 0  # new sizes of changed files
    removed_bytes: int = 0
    unhashed: list[str] = field(default_factory=list)  # base files written since their last hash
    #                        (status(hash=False), e.g. a look at a draft a mount holds): maybe changed
    problems: list[str] = field(default_factory=list)  # symlinks that cannot be committed
    commit_pending: bool = False
    description: str | None = None
    type: str = "unspecified"
    metadata: dict[str, Any] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    busy: dict[str, Any] | None = None  # the owner, when another process holds the draft

    @property
    def differs(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.unhashed)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["differs"] = self.differs
        return d

    def summary(self) -> str:
        def mb(n: int) -> str:
            for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
                if n < 1024 or unit == "TiB":
                    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
                n /= 1024  # type: ignore[assignment]
            return str(n)

        parts = []
        if self.added:
            parts.append(f"{len(self.added)} added ({mb(self.added_bytes)})")
        if self.changed:
            parts.append(f"{len(self.changed)} changed ({mb(self.changed_bytes)})")
        if self.removed:
            parts.append(f"{len(self.removed)} removed ({mb(self.removed_bytes)})")
        if self.unhashed:
            parts.append(f"{len(self.unhashed)} written, maybe changed")
        return ", ".join(parts) or "no changes"


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


def _pause(step: str) -> None:
    """Crash-test hook: stop at ``step`` when $ARTFS_DRAFT_TEST_PAUSE names it."""
    if os.environ.get(TEST_PAUSE_ENV) == step:
        os.write(2, f"artfs-draft-paused:{step}\n".encode())
        while True:
            time.sleep(3600)


class Draft:
    """The staging tree of one artifact. Open with :meth:`open`/:meth:`start` or :class:`Drafts`."""

    def __init__(self, path: str, *, fetch: Fetch | None = None, readonly: bool = False,
                 owner: str | dict[str, Any] | None = None, _init: dict[str, Any] | None = None) -> None:
        self.path = os.path.abspath(path)
        self.fetch = fetch
        self.readonly = readonly
        self._files = os.path.join(self.path, "files")
        self._lock = threading.RLock()
        self._gate = _Gate()
        self._invalid: set[int] = set()  # inos whose digest is known to be NULL in the db
        self._open: dict[int, int] = {}  # ino -> write handles the caller holds (open_for_write/release)
        self._dirty = False
        self._gen = 0  # counts namespace changes: a commit compares it to see what changed meanwhile
        self._committing: set[str] = set()  # staged files a running commit reads: deleted after it
        self._lockfd: int | None = None
        self._con: sqlite3.Connection | None = None
        self._acols = _ACOLS
        if readonly:
            self._open_readonly()
        else:
            self._open_owned(owner, _init)

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, *, fetch: Fetch | None = None, readonly: bool = False,
             owner: str | dict[str, Any] | None = None) -> "Draft":
        """Open an existing draft. ``readonly`` takes no lock (to look at a draft a daemon holds).

        ``owner`` describes this process for the "draft is busy" message others get: a string,
        or a dict such as ``{"what": "artfs mount", "mountpoint": "/mnt/a"}``.
        """
        return cls(path, fetch=fetch, readonly=readonly, owner=owner)

    @classmethod
    def start(cls, path: str, *, store_url: str, store_id: str, project: str, artifact: str,
               base: Manifest | None, type: str | None = None, fetch: Fetch | None = None,
               owner: str | dict[str, Any] | None = None) -> "Draft":
        """Start a draft at ``path`` as a copy-on-write view of ``base`` (None: a new artifact)."""
        check_name(project, "project")
        check_name(artifact, "artifact")
        init = {"store_url": store_url, "store_id": store_id, "project": project, "artifact": artifact,
                "base": base, "type": type or (base.type if base else "unspecified")}
        return cls(path, fetch=fetch, owner=owner, _init=init)

    def _open_owned(self, owner: str | dict[str, Any] | None, init: dict[str, Any] | None) -> None:
        if init is None and not os.path.exists(os.path.join(self.path, "draft.db")):
            raise NotFound(f"{self.path}: no draft here")
        os.makedirs(self._files, exist_ok=True)
        fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                info = read_owner(self.path)
                raise DraftBusy(f"{self.path}: the draft is already open ({_describe(info)})", info) from None
            raise
        self._lockfd = fd
        try:
            who = dict(owner) if isinstance(owner, dict) else {"what": owner or " ".join(sys.argv)[:300]}
            with open(os.path.join(self.path, "owner"), "w") as f:
                json.dump({"pid": os.getpid(), "since": time.time(), **who}, f)
            self._con = self._connect(os.path.join(self.path, "draft.db"), readonly=False)
            self._acols = _ACOLS
            ready = self._meta("ready", False)
            if init is not None:
                if ready:
                    raise AlreadyExists(f"{self.path}: a draft already exists here")
                self._initialise(init)
            elif not ready:
                raise NotFound(f"{self.path}: the draft was never completely created; remove it and start again")
            if self._meta("format") not in FORMATS:
                raise CorruptData(f"{self.path}: unknown draft format {self._meta('format')!r}")
            self._dirty = bool(self._meta("dirty", False))
            self._invalid = {r[0] for r in self._q("SELECT ino FROM nodes WHERE fid IS NOT NULL AND digest IS NULL")}
            self._sweep(tmp=True)
            self._make_reserve()
        except BaseException:
            self.close()
            raise

    def _open_readonly(self) -> None:
        db = os.path.join(self.path, "draft.db")
        if not os.path.exists(db):
            raise NotFound(f"{self.path}: no draft here")
        self._con = self._connect(db, readonly=True)
        have = {r[1] for r in self._con.execute("PRAGMA table_info(nodes)")}
        self._acols = _ACOLS if have.issuperset(_POSIX_COLUMNS) else _ACOLS_V1
        if not self._meta("ready", False):
            raise NotFound(f"{self.path}: the draft was never completely created")

    @staticmethod
    def _connect(db: str, *, readonly: bool) -> sqlite3.Connection:
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

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            if self._lockfd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, "owner"))
                os.close(self._lockfd)  # releases the flock
                self._lockfd = None

    def __enter__(self) -> "Draft":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Draft {self.project}/{self.artifact} base={self.base_version} at {self.path}>"

    def discard(self) -> None:
        """Throw the draft away (every change in it is lost) and close it."""
        if self.readonly:
            raise ArtfsError("cannot discard a draft opened read-only")
        path = self.path
        with self._lock:
            self.close()
            shutil.rmtree(path, ignore_errors=True)

    # -- sqlite plumbing ------------------------------------------------------------------------
    def _c(self) -> sqlite3.Connection:
        if self._con is None:
            raise ArtfsError(f"{self.path}: the draft is closed")
        return self._con

    def _q(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            return self._c().execute(sql, tuple(args)).fetchall()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; a full disk raises OSError(ENOSPC) naming it (sqlite says only
        'database or disk is full', which the mount would turn into EIO)."""
        if self.readonly:
            raise _oserr(errno.EROFS, "draft opened read-only")
        con = self._c()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
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
    def _make_reserve(self) -> None:
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

    def _freeing_tx(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """A transaction that frees space (a deletion): on a full disk, spend the reserve and retry."""
        try:
            with self._tx() as con:
                return body(con)
        except OSError as e:
            if e.errno != errno.ENOSPC or not self._release_reserve():
                raise
        with self._tx() as con:
            return body(con)

    def _meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._c().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    @staticmethod
    def _set(con: sqlite3.Connection, **kv: Any) -> None:
        con.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        [(k, json.dumps(v)) for k, v in kv.items()])

    def _mark_dirty(self, con: sqlite3.Connection) -> None:
        self._gen += 1
        if not self._dirty:
            self._set(con, dirty=True)

    def _node(self, ino: int) -> _Node:
        row = self._c().execute(f"SELECT {self._acols} FROM nodes WHERE ino = ?", (ino,)).fetchone()
        if row is None:
            raise _oserr(errno.ENOENT, f"inode {ino}")
        return _Node(*row)

    def _child(self, parent: int, name: str) -> _Node | None:
        row = self._c().execute(f"SELECT {self._acols} FROM nodes WHERE parent = ? AND name = ?",
                                (parent, name)).fetchone()
        return None if row is None else _Node(*row)

    def _dir(self, ino: int) -> _Node:
        n = self._node(ino)
        if n.kind != "d":
            raise _oserr(errno.ENOTDIR)
        return n

    def _fpath(self, fid: str) -> str:
        return os.path.join(self._files, fid)

    # -- creation, reset, recovery ---------------------------------------------------------------
    def _initialise(self, init: dict[str, Any]) -> None:
        base: Manifest | None = init["base"]
        now = time.time_ns()
        with self._tx() as con:
            con.execute("DELETE FROM nodes")
            con.execute("DELETE FROM meta")
            con.execute("DELETE FROM sqlite_sequence WHERE name = 'nodes'")
            con.execute("INSERT INTO nodes (ino, parent, name, kind, mode, mtime) VALUES (?, 0, '', 'd', ?, ?)",
                        (ROOT, 0o755, now))
            self._set(con, format=FORMAT, store_url=init["store_url"], store_id=init["store_id"],
                      project=init["project"], artifact=init["artifact"], type=init["type"],
                      description=None, metadata={}, aliases=[], commit_id=None, commit_vdigest=None,
                      created=now, dirty=False)
            self._set_base(con, base)
            self._materialise(con, base)
            self._set(con, ready=True)
        for fn in os.listdir(self._files):
            os.unlink(self._fpath(fn))

    def _set_base(self, con: sqlite3.Connection, base: "Manifest | _Base | None") -> None:
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
        self._set(con, base_version=base.version if base else None, base_digest=base.digest if base else None)

    def _materialise(self, con: sqlite3.Connection, base: Manifest | None) -> None:
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

    def _sweep(self, *, tmp: bool = False) -> None:
        """Delete staged files no node references (left by a crash, or by commit's step 5).

        ``<fid>.tmp`` files only with ``tmp`` (at open): otherwise one may be a copy-up that
        another thread is writing without the lock (a commit ends while a file is copied up)."""
        live = {r[0] for r in self._q("SELECT fid FROM nodes WHERE fid IS NOT NULL")}
        live |= {self._fid_open(i) for i in self._open}
        for fn in os.listdir(self._files):
            if fn not in live and (tmp or not fn.endswith(".tmp")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._fpath(fn))
        keep = f"base-v{self._meta('base_version')}.json"
        for fn in os.listdir(self.path):
            if fn.startswith("base-v") and fn != keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.path, fn))

    def _fid_open(self, ino: int) -> str | None:
        row = self._c().execute("SELECT fid FROM nodes WHERE ino = ?", (ino,)).fetchone()
        return row[0] if row else None

    # -- identity ------------------------------------------------------------------------------
    @property
    def project(self) -> str:
        return str(self._meta("project"))

    @property
    def artifact(self) -> str:
        return str(self._meta("artifact"))

    @property
    def store_url(self) -> str:
        return str(self._meta("store_url"))

    @property
    def store_id(self) -> str:
        return str(self._meta("store_id"))

    @property
    def base_version(self) -> int | None:
        with self._lock:
            v = self._meta("base_version")
            return None if v is None else int(v)

    @property
    def dirty(self) -> bool:
        with self._lock:
            return bool(self._meta("dirty", False))

    def base_manifest(self) -> Manifest | None:
        v = self.base_version
        if v is None:
            return None
        with open(os.path.join(self.path, f"base-v{v}.json"), "rb") as f:
            return Manifest.from_bytes(f.read(), where=f"{self.path} base v{v}")

    def _base_files(self) -> dict[str, tuple[str | None, bool, str | None, int]]:
        """path -> (digest, executable, ref, size) of the base version, read fast.

        base-v<N>.json was written by this module from a manifest already validated when it was
        read from the store, so it is not validated a second time (1M entries: seconds saved).
        """
        v = self.base_version
        if v is None:
            return {}
        with open(os.path.join(self.path, f"base-v{v}.json"), "rb") as f:
            doc = json.load(f)
        return {d["path"]: (d.get("digest"), bool(d.get("executable", False)), d.get("ref"), d.get("size") or 0)
                for d in doc["entries"]}

    # -- the next version's description --------------------------------------------------------
    def pending(self) -> dict[str, Any]:
        """Description, type, metadata and aliases the next version will get."""
        with self._lock:
            return {k: self._meta(k) for k in ("description", "type", "metadata", "aliases")}

    def set_description(self, description: str | None) -> None:
        with self._lock, self._tx() as con:
            self._set(con, description=description)

    def set_type(self, type: str) -> None:
        if type != "unspecified":
            check_name(type, "type")
        with self._lock, self._tx() as con:
            self._set(con, type=type)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        if not isinstance(metadata, dict):
            raise ArtfsError("metadata must be a JSON object")
        json.dumps(metadata)  # must be JSON
        with self._lock, self._tx() as con:
            self._set(con, metadata=metadata)

    def set_aliases(self, aliases: Iterable[str]) -> None:
        al = list(dict.fromkeys(check_alias(a) for a in aliases))
        with self._lock, self._tx() as con:
            self._set(con, aliases=al)

    # -- reading the namespace -----------------------------------------------------------------
    def _attr(self, n: _Node) -> Attr:
        if n.kind == "f" and n.fid is not None:
            try:
                st = os.stat(self._fpath(n.fid))
            except FileNotFoundError:
                raise _oserr(errno.EIO, f"staged file {n.fid} of inode {n.ino} is missing") from None
            # writes, truncates and utimens move the staged file's times; chmod/chown/rename the row's
            ctime = max(st.st_ctime_ns, n.ctime or 0)
            return Attr(n.ino, "file", stat.S_IFREG | n.mode, st.st_size, st.st_mtime_ns, True, n.uid, n.gid,
                        st.st_atime_ns, ctime, 1, st.st_blocks)
        size = len(n.target.encode()) if n.kind == "l" and n.target else n.size if n.kind == "f" else 0
        mode = 0o777 if n.kind == "l" else n.mode
        nlink = 1
        if n.kind == "d":  # "." and the entry in its parent, plus each subdirectory's ".."
            nlink = 2 + self._c().execute("SELECT count(*) FROM nodes WHERE parent = ? AND kind = 'd'",
                                          (n.ino,)).fetchone()[0]
        return Attr(n.ino, _KIND[n.kind], _IFMT[n.kind] | mode, size, n.mtime, False, n.uid, n.gid,
                    n.atime, n.ctime, nlink, None, n.rdev or 0)

    def getattr(self, ino: int) -> Attr:
        with self._lock:
            return self._attr(self._node(ino))

    def lookup(self, parent: int, name: str | bytes) -> Attr:
        try:
            nm = _name(name)
        except InvalidPath:
            raise _oserr(errno.ENOENT) from None
        with self._lock:
            self._dir(parent)
            n = self._child(parent, nm)
            if n is None:
                raise _oserr(errno.ENOENT, nm)
            return self._attr(n)

    def readdir(self, ino: int, after: int = 0, limit: int | None = None) -> list[tuple[str, Attr]]:
        """Children of directory ``ino`` in inode order, those with an inode number > ``after``.

        Pass the last inode returned as ``after`` to continue: entries stay in place while others
        are added or removed (a good readdir cookie).
        """
        with self._lock:
            self._dir(ino)
            sql = f"SELECT {self._acols} FROM nodes WHERE parent = ? AND ino > ? ORDER BY ino"
            args: list[Any] = [ino, after]
            if limit is not None:
                sql += " LIMIT ?"
                args.append(limit)
            return [(r[2], self._attr(_Node(*r))) for r in self._q(sql, args)]

    def readlink(self, ino: int) -> str:
        with self._lock:
            n = self._node(ino)
            if n.kind != "l":
                raise _oserr(errno.EINVAL)
            return n.target or ""

    def parent(self, ino: int) -> int:
        with self._lock:
            return self._node(ino).parent if ino != ROOT else ROOT

    def path_of(self, ino: int) -> str:
        """The node's path inside the draft ('' for the root)."""
        with self._lock:
            parts = []
            while ino != ROOT:
                n = self._node(ino)
                parts.append(n.name)
                ino = n.parent
            return "/".join(reversed(parts))

    def resolve(self, path: str) -> int:
        """Inode of ``path`` (relative to the draft root; '' is the root), not following symlinks."""
        with self._lock:
            ino = ROOT
            for part in [p for p in path.split("/") if p]:
                self._dir(ino)
                n = self._child(ino, part)
                if n is None:
                    raise _oserr(errno.ENOENT, path)
                ino = n.ino
            return ino

    def base_entry(self, ino: int) -> Entry | None:
        """The base version's entry a base file node shows (None for staged files and non-files)."""
        with self._lock:
            n = self._node(ino)
            if n.kind != "f" or n.fid is not None:
                return None
            return self._entry_of(n, self.path_of(ino))

    @staticmethod
    def _entry_of(n: _Node, path: str) -> Entry:
        # tuple.__new__ directly: a snapshot builds one per base file (NamedTuple.__new__ is Python)
        return _new_entry((path, n.digest, n.size, bool(n.mode & stat.S_IXUSR), n.ref,
                           json.loads(n.ref_info) if n.ref_info else None))

    def staged_path(self, ino: int) -> str | None:
        """Where a staged file's bytes are (None: a base file, read it from the store/cache)."""
        with self._lock:
            n = self._node(ino)
            if n.kind == "d":
                raise _oserr(errno.EISDIR)
            return self._fpath(n.fid) if n.kind == "f" and n.fid else None

    def statfs(self) -> os.statvfs_result:
        """Numbers of the disk holding the staging directory (what a draft can still grow by)."""
        return os.statvfs(self.path)

    # -- changing the namespace ----------------------------------------------------------------
    def _new_node(self, con: sqlite3.Connection, parent: int, name: str, kind: str, mode: int, *,
                  fid: str | None = None, target: str | None = None, digest: str | None = None,
                  hmtime: int | None = None, uid: int | None = None, gid: int | None = None,
                  rdev: int | None = None) -> int:
        """Insert a node owned by ``uid``/``gid`` (None: the draft's owner), as a local filesystem
        does: in a set-group-ID directory the group is the directory's, and a new directory
        inherits the bit (stripping it from files of other groups is the kernel's job)."""
        now = time.time_ns()
        p = self._node(parent)
        if p.mode & stat.S_ISGID:
            gid = p.gid
            if kind == "d":
                mode |= stat.S_ISGID
        cur = con.execute(
            "INSERT INTO nodes (parent, name, kind, mode, mtime, fid, digest, size, hmtime, target, uid, gid, "
            "atime, ctime, rdev) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
            (parent, name, kind, mode & 0o7777, now, fid, digest, hmtime, target, uid, gid, now, now, rdev))
        self._touch(con, now, parent)
        self._mark_dirty(con)
        return int(cur.lastrowid or 0)

    @staticmethod
    def _touch(con: sqlite3.Connection, now: int, *dirs: int) -> None:
        """A directory's entries changed: its mtime and ctime are ``now``."""
        con.executemany("UPDATE nodes SET mtime = ?, ctime = ? WHERE ino = ?", [(now, now, d) for d in set(dirs)])

    def _check_new(self, parent: int, name: str | bytes) -> str:
        nm = _name(name)
        self._dir(parent)
        if self._child(parent, nm) is not None:
            raise _oserr(errno.EEXIST, nm)
        return nm

    def _after_tx(self) -> None:
        self._dirty = True

    def create(self, parent: int, name: str | bytes, mode: int = 0o644, *, uid: int | None = None,
               gid: int | None = None) -> int:
        """A new empty file (staged); returns its inode. Open it with :meth:`open_for_write`.

        ``uid``/``gid``: who creates it (a mount passes the caller's; None: the draft's owner)."""
        with self._lock:
            nm = self._check_new(parent, name)
            fid = uuid.uuid4().hex
            p = self._fpath(fid)
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            hm = os.stat(p).st_mtime_ns
            try:
                with self._tx() as con:
                    ino = self._new_node(con, parent, nm, "f", mode, fid=fid, digest=EMPTY_DIGEST, hmtime=hm,
                                         uid=uid, gid=gid)
            except BaseException:
                os.unlink(p)
                raise
            self._after_tx()
            return ino

    def mkdir(self, parent: int, name: str | bytes, mode: int = 0o755, *, uid: int | None = None,
              gid: int | None = None) -> int:
        with self._lock:
            nm = self._check_new(parent, name)
            with self._tx() as con:
                ino = self._new_node(con, parent, nm, "d", mode, uid=uid, gid=gid)
            self._after_tx()
            return ino

    def mknod(self, parent: int, name: str | bytes, mode: int, rdev: int = 0, *, uid: int | None = None,
              gid: int | None = None) -> int:
        """A FIFO, socket or device node (``mode`` has its type): kept in the draft, as on a local
        disk, and left out of a version, which holds files only (like an empty directory)."""
        kind = SPECIAL.get(stat.S_IFMT(mode))
        if kind is None:
            raise _oserr(errno.EINVAL, f"mknod of type {stat.S_IFMT(mode):#o}")
        with self._lock:
            nm = self._check_new(parent, name)
            with self._tx() as con:
                ino = self._new_node(con, parent, nm, kind, mode, uid=uid, gid=gid,
                                     rdev=rdev if kind in ("b", "c") else None)
                if self._meta("format") == 1:
                    self._set(con, format=2)
            self._after_tx()
            return ino

    def symlink(self, parent: int, name: str | bytes, target: str | bytes, *, uid: int | None = None,
                gid: int | None = None) -> int:
        if isinstance(target, bytes):
            try:
                target = target.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidPath(f"symlink target {target!r} is not UTF-8") from None
        if not target or "\x00" in target or len(target.encode()) > MAX_SYMLINK:
            raise InvalidPath(f"invalid symlink target {target!r}")
        with self._lock:
            nm = self._check_new(parent, name)
            with self._tx() as con:
                ino = self._new_node(con, parent, nm, "l", 0o777, target=target, uid=uid, gid=gid)
            self._after_tx()
            return ino

    def _existing(self, parent: int, name: str | bytes) -> _Node:
        try:
            nm = _name(name)
        except InvalidPath:
            raise _oserr(errno.ENOENT) from None
        self._dir(parent)
        n = self._child(parent, nm)
        if n is None:
            raise _oserr(errno.ENOENT, nm)
        return n

    def _drop(self, con: sqlite3.Connection, n: _Node) -> str | None:
        """Delete node ``n``; returns the staged file to delete once the transaction committed."""
        con.execute("DELETE FROM nodes WHERE ino = ?", (n.ino,))
        self._invalid.discard(n.ino)
        return n.fid

    def _unlink_files(self, fids: Iterable[str | None]) -> None:
        for fid in fids:
            if fid and fid not in self._committing:  # else a running commit reads it: swept after it
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._fpath(fid))

    def unlink(self, parent: int, name: str | bytes) -> None:
        with self._lock:
            n = self._existing(parent, name)
            if n.kind == "d":
                raise _oserr(errno.EISDIR, n.name)

            def body(con: sqlite3.Connection) -> str | None:
                fid = self._drop(con, n)
                self._touch(con, time.time_ns(), parent)
                self._mark_dirty(con)
                return fid

            fid = self._freeing_tx(body)
            self._after_tx()
            self._unlink_files([fid])
            if fid:
                self._make_reserve()  # room again (if the file freed enough)

    def rmdir(self, parent: int, name: str | bytes) -> None:
        with self._lock:
            n = self._existing(parent, name)
            if n.kind != "d":
                raise _oserr(errno.ENOTDIR, n.name)
            if self._q("SELECT 1 FROM nodes WHERE parent = ? LIMIT 1", (n.ino,)):
                raise _oserr(errno.ENOTEMPTY, n.name)

            def body(con: sqlite3.Connection) -> None:
                self._drop(con, n)
                self._touch(con, time.time_ns(), parent)
                self._mark_dirty(con)

            self._freeing_tx(body)
            self._after_tx()

    def _is_ancestor(self, anc: int, ino: int) -> bool:
        """Whether directory ``anc`` is ``ino`` or one of its ancestors."""
        while True:
            if ino == anc:
                return True
            if ino == ROOT:
                return False
            ino = self._node(ino).parent

    def rename(self, old_parent: int, old_name: str | bytes, new_parent: int, new_name: str | bytes,
               flags: int = 0) -> None:
        """POSIX rename (replacing files and empty directories), plus RENAME_NOREPLACE/RENAME_EXCHANGE.

        Checks come in the kernel's order (``do_renameat2``/``vfs_rename``) so each failure gets
        the errno a local filesystem would give.
        """
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise _oserr(errno.EINVAL, f"rename flags {flags:#x}")
        exchange = bool(flags & RENAME_EXCHANGE)
        with self._lock:
            self._dir(new_parent)
            src = self._existing(old_parent, old_name)
            nm = _name(new_name)
            dst = self._child(new_parent, nm)
            if dst is not None and flags & RENAME_NOREPLACE:
                raise _oserr(errno.EEXIST, nm)
            if dst is None and exchange:
                raise _oserr(errno.ENOENT, nm)
            if src.kind == "d" and self._is_ancestor(src.ino, new_parent) and (dst is None or dst.ino != src.ino):
                raise _oserr(errno.EINVAL, "cannot move a directory into itself")
            if dst is not None and dst.kind == "d" and dst.ino != src.ino and self._is_ancestor(dst.ino, old_parent):
                raise _oserr(errno.EINVAL if exchange else errno.ENOTEMPTY, nm)
            if dst is not None and dst.ino == src.ino:
                return  # POSIX: renaming a file onto itself does nothing
            now = time.time_ns()
            if exchange:
                assert dst is not None
                with self._tx() as con:
                    # swap through a temporary name: (parent, name) is unique
                    con.execute("UPDATE nodes SET parent = -1, name = ? WHERE ino = ?", (f"\0{src.ino}", src.ino))
                    con.execute("UPDATE nodes SET parent = ?, name = ? WHERE ino = ?", (src.parent, src.name, dst.ino))
                    con.execute("UPDATE nodes SET parent = ?, name = ? WHERE ino = ?", (dst.parent, dst.name, src.ino))
                    self._touch(con, now, old_parent, new_parent)
                    con.execute("UPDATE nodes SET ctime = ? WHERE ino IN (?, ?)", (now, src.ino, dst.ino))
                    self._mark_dirty(con)
                self._after_tx()
                return
            if dst is not None:
                if src.kind == "d" and dst.kind != "d":
                    raise _oserr(errno.ENOTDIR, nm)
                if src.kind != "d" and dst.kind == "d":
                    raise _oserr(errno.EISDIR, nm)
                if dst.kind == "d" and self._q("SELECT 1 FROM nodes WHERE parent = ? LIMIT 1", (dst.ino,)):
                    raise _oserr(errno.ENOTEMPTY, nm)
            fid = None
            with self._tx() as con:
                if dst is not None:
                    fid = self._drop(con, dst)
                con.execute("UPDATE nodes SET parent = ?, name = ?, ctime = ? WHERE ino = ?",
                            (new_parent, nm, now, src.ino))
                self._touch(con, now, old_parent, new_parent)
                self._mark_dirty(con)
            self._after_tx()
            self._unlink_files([fid])

    def chmod(self, ino: int, mode: int) -> None:
        """Permission bits; a file's executable bit (``S_IXUSR``) is kept in the version.

        Sets the ctime, as every successful chmod does (even to the same bits)."""
        with self._lock:
            n = self._node(ino)
            if n.kind == "l":
                return  # Linux ignores the mode of symlinks
            if (n.mode & 0o7777) == (mode & 0o7777) and self._staged_ctime_now(n):
                return  # the same bits (cp -a, tar x): only the ctime moves, without a transaction
            with self._tx() as con:
                con.execute("UPDATE nodes SET mode = ?, ctime = ? WHERE ino = ?", (mode & 0o7777, time.time_ns(), ino))
                if n.kind == "f" and bool(n.mode & stat.S_IXUSR) != bool(mode & stat.S_IXUSR):
                    self._mark_dirty(con)
            if n.kind == "f" and bool(n.mode & stat.S_IXUSR) != bool(mode & stat.S_IXUSR):
                self._after_tx()

    def _staged_ctime_now(self, n: _Node) -> bool:
        """Move a staged file's ctime to now through its staged file (a chmod to the same bits),
        which costs no transaction; False if ``n`` is not staged or its row's ctime is still
        newer (the file's clock is the kernel's coarse one): then the caller writes the row."""
        if n.kind != "f" or n.fid is None:
            return False
        p = self._fpath(n.fid)
        os.chmod(p, 0o600)
        return os.stat(p).st_ctime_ns > (n.ctime or 0)

    def chown(self, ino: int, uid: int | None = None, gid: int | None = None) -> None:
        """Owner and group (None: unchanged); the draft keeps them, a version does not.

        Who may chown what, and clearing set-user/group-ID bits, is the kernel's business (the
        mount uses ``default_permissions`` and sends the new mode with the chown)."""
        with self._lock:
            n = self._node(ino)
            if (uid is None or uid == n.uid) and (gid is None or gid == n.gid) and self._staged_ctime_now(n):
                return  # the same owner (tar x as root): only the ctime moves, without a transaction
            with self._tx() as con:
                con.execute("UPDATE nodes SET uid = ?, gid = ?, ctime = ? WHERE ino = ?",
                            (n.uid if uid is None else uid, n.gid if gid is None else gid, time.time_ns(), ino))

    def utimens(self, ino: int, atime_ns: int | None = None, mtime_ns: int | None = None) -> None:
        """Set the access and/or modification time (None: unchanged); the ctime becomes now.

        A version records neither: they live in the draft (a staged file's in its staged file)."""
        if atime_ns is None and mtime_ns is None:
            return
        with self._lock:
            n = self._node(ino)
            now = time.time_ns()
            if n.kind == "f" and n.fid is not None:
                p = self._fpath(n.fid)
                st = os.stat(p)
                valid = self._digest_valid(n, st)
                os.utime(p, ns=(st.st_atime_ns if atime_ns is None else atime_ns,
                                st.st_mtime_ns if mtime_ns is None else mtime_ns))  # its ctime: now
                if valid:  # the bytes did not change: keep the cached digest valid
                    with self._tx() as con:
                        con.execute("UPDATE nodes SET hmtime = ? WHERE ino = ?", (os.stat(p).st_mtime_ns, ino))
                return
            old_atime = n.mtime if n.atime is None else n.atime
            with self._tx() as con:
                con.execute("UPDATE nodes SET atime = ?, mtime = ?, ctime = ? WHERE ino = ?",
                            (old_atime if atime_ns is None else atime_ns, n.mtime if mtime_ns is None else mtime_ns,
                             now, ino))

    # -- content -------------------------------------------------------------------------------
    def _file(self, ino: int) -> _Node:
        n = self._node(ino)
        if n.kind == "d":
            raise _oserr(errno.EISDIR)
        if n.kind != "f":
            raise _oserr(errno.EINVAL, "not a regular file")
        return n

    def _stage(self, n: _Node, *, empty: bool, fetch: Fetch | None) -> str:
        """Give base file ``n`` a staged copy (its bytes, or empty); returns the staged path."""
        fid = uuid.uuid4().hex
        p = self._fpath(fid)
        if empty:
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            digest: str | None = EMPTY_DIGEST
            size = 0
        else:
            fetch = fetch or self.fetch
            if fetch is None:
                raise ArtfsError(f"{self.path}: cannot copy up {n.name!r}: no fetch function to read the base version")
            entry = self._entry_of(n, self.path_of(n.ino))
            tmp = p + ".tmp"
            # The network/disk copy runs without the draft lock; the node is re-checked afterwards.
            self._lock.release()
            try:
                fetch(entry, tmp)
            except BaseException as e:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                    raise self.disk_full() from e
                raise
            finally:
                self._lock.acquire()
            got = os.stat(tmp).st_size
            if n.ref is None and got != n.size:
                os.unlink(tmp)
                raise CorruptData(f"copy-up of {entry.path!r}: got {got} bytes, the base has {n.size}")
            os.chmod(tmp, 0o600)
            os.utime(tmp, ns=(n.mtime if n.atime is None else n.atime, n.mtime))  # as overlayfs: a copy-up keeps the times
            os.rename(tmp, p)
            digest, size = (n.digest, n.size) if n.ref is None else (None, got)
            try:
                now = self._node(n.ino)
            except OSError:
                os.unlink(p)
                raise
            if now.fid is not None or now.digest != n.digest:  # another thread staged it meanwhile
                os.unlink(p)
                return self._fpath(now.fid) if now.fid else self._stage(now, empty=False, fetch=fetch)
        hm = os.stat(p).st_mtime_ns
        try:
            with self._tx() as con:
                con.execute("UPDATE nodes SET fid = ?, digest = ?, size = ?, hmtime = ?, ref = NULL, ref_info = NULL "
                            "WHERE ino = ?", (fid, digest, size, hm, n.ino))
                self._mark_dirty(con)
        except BaseException:
            os.unlink(p)
            raise
        self._after_tx()
        if digest is None:
            self._invalid.add(n.ino)
        return p

    def open_for_write(self, ino: int, *, truncate: bool = False, fetch: Fetch | None = None) -> str:
        """Prepare a file for writing; returns the staged path to open and ``pwrite`` into.

        A base file is copied up first (``fetch`` writes the base bytes), unless ``truncate``
        (O_TRUNC) makes the copy pointless. Call :meth:`release` when the handle is closed, and
        write through :meth:`writing` (or call :meth:`mark_modified` before every write).
        """
        with self._gate.shared() if truncate else contextlib.nullcontext(), self._lock:
            n = self._file(ino)
            if n.fid is None:
                p = self._stage(n, empty=truncate, fetch=fetch)
            else:
                p = self._fpath(n.fid)
                if truncate and os.stat(p).st_size:
                    self._invalidate(ino)
                    os.truncate(p, 0)
            self._open[ino] = self._open.get(ino, 0) + 1
            return p

    def release(self, ino: int) -> None:
        """A write handle from :meth:`open_for_write` was closed."""
        with self._lock:
            left = self._open.get(ino, 0) - 1
            if left > 0:
                self._open[ino] = left
            else:
                self._open.pop(ino, None)

    def _invalidate(self, ino: int) -> None:
        with self._tx() as con:
            con.execute("UPDATE nodes SET digest = NULL WHERE ino = ?", (ino,))
            self._mark_dirty(con)
        self._after_tx()
        self._invalid.add(ino)

    def mark_modified(self, ino: int) -> None:
        """Announce a write to a staged file *before* it happens: its cached digest becomes invalid.

        Cheap when already invalid (no database write), so it can be called on every write.
        """
        if ino in self._invalid:
            return
        with self._lock:
            if ino not in self._invalid:
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
        with self._lock:
            con = self._c()
            if automatic is not None:
                con.execute(f"PRAGMA wal_autocheckpoint={1000 if automatic else 0}")
            try:
                con.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError as e:
                if getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL:
                    raise self.disk_full() from e
                raise

    @contextlib.contextmanager
    def unless_busy(self) -> Iterator[bool]:
        """``with draft.unless_busy() as free:`` whether the draft's lock was free; if so this thread
        holds it for the block, so a caller that must never wait (an event loop) can run a short
        method at once, and hands it to a worker thread otherwise (a commit holds the lock)."""
        free = self._lock.acquire(blocking=False)
        try:
            yield free
        finally:
            if free:
                self._lock.release()

    @contextlib.contextmanager
    def writing(self, ino: int) -> Iterator[None]:
        """``with draft.writing(ino): os.pwrite(fd, data, offset)``: a write a commit cannot overlap."""
        with self._gate.shared():
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
        with self._gate.shared(), self._lock:  # changes bytes a running commit may be reading: waits for it
            n = self._file(ino)
            if n.fid is None:
                if size == n.size and n.ref is None:
                    return
                p = self._stage(n, empty=size == 0, fetch=fetch)
                if size == 0:
                    return
            else:
                p = self._fpath(n.fid)
            if os.stat(p).st_size != size or n.fid is None:
                self._invalidate(ino)
                os.truncate(p, size)

    def fsync(self, ino: int | None = None, datasync: bool = False) -> None:
        """Make a file's bytes and the namespace durable against power loss, not just a crash."""
        with self._lock:
            if ino is not None:
                n = self._node(ino)
                if n.kind == "f" and n.fid is not None:
                    fd = os.open(self._fpath(n.fid), os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        (os.fdatasync if datasync else os.fsync)(fd)
                    finally:
                        os.close(fd)
            dfd = os.open(self._files, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            if not self.readonly:
                self._c().execute("PRAGMA wal_checkpoint(FULL)")

    # -- what the draft holds ------------------------------------------------------------------
    def _digest_valid(self, n: _Node, st: os.stat_result) -> bool:
        return (n.digest is not None and n.ino not in self._invalid and st.st_size == n.size
                and st.st_mtime_ns == n.hmtime)

    @gc_paused()  # it builds a few objects per node of maybe millions, none in a cycle
    def _snapshot(self, *, hash: bool, defer: list[tuple[str, _Node]] | None = None) -> tuple[
            list[Entry], dict[str, Callable[[str], None] | str], list[str], list[tuple[str, int]]]:
        """(entries, {digest: staged path}, problems, unhashed (path, size)) of the draft as it is now.

        Staged files whose cached digest is invalid are hashed when ``hash``; the digests are
        stored (unless read-only). The caller holds the lock and, when hashing, the gate. With
        ``defer`` (and not ``hash``) such files are listed there as (path, node) instead, for the
        caller to hash without the lock (:meth:`commit`).
        """
        rows = list(map(_node_of_row, self._q(f"SELECT {_COLS} FROM nodes")))
        children: dict[int, dict[str, _Node]] = {}
        for r in rows:
            if r.ino != ROOT:
                children.setdefault(r.parent, {})[r.name] = r
        byino = {r.ino: r for r in rows}
        updates: list[tuple[str, int, int, int]] = []
        unhashed: list[tuple[str, int]] = []

        known: dict[int, tuple[str | None, int]] = {}

        def file_entry(n: _Node, path: str) -> Entry | None:
            if n.fid is None:
                return self._entry_of(n, path)
            p = self._fpath(n.fid)
            if n.ino in known:
                digest, size = known[n.ino]
            else:
                st = os.stat(p)
                if self._digest_valid(n, st):
                    digest, size = n.digest, n.size
                elif hash:
                    digest, size = digest_file(p)
                    after = os.stat(p)
                    if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                        updates.append((digest, size, after.st_mtime_ns, n.ino))
                else:
                    digest, size = None, st.st_size
                known[n.ino] = (digest, size)
            if digest is None:
                if defer is not None:
                    defer.append((path, n))
                unhashed.append((path, size))
                return None
            sources[digest] = p
            return Entry(path, digest, size, bool(n.mode & stat.S_IXUSR))

        entries: list[Entry] = []
        sources: dict[str, Callable[[str], None] | str] = {}
        problems: list[str] = []
        links: list[tuple[_Node, str, list[int]]] = []

        stack: list[tuple[int, str, list[int]]] = [(ROOT, "", [ROOT])]
        while stack:
            d, prefix, anc = stack.pop()
            for name, c in children.get(d, {}).items():
                path = prefix + name
                if c.kind == "d":
                    stack.append((c.ino, path + "/", anc + [c.ino]))
                elif c.kind == "f":
                    e = file_entry(c, path)
                    if e is not None:
                        entries.append(e)
                elif c.kind == "l":  # FIFOs, sockets, devices: not in a version
                    links.append((c, path, anc))

        def resolve(start: int, target: str, hops: int) -> _Node:
            if target.startswith("/"):
                raise _Problem("is absolute")
            cur = byino[start]
            parts = [p for p in target.split("/") if p not in ("", ".")]
            for i, part in enumerate(parts):
                if cur.kind != "d":
                    raise _Problem("is dangling")
                if part == "..":
                    if cur.ino == ROOT:
                        raise _Problem("points outside the draft")
                    cur = byino[cur.parent]
                    continue
                nxt = children.get(cur.ino, {}).get(part)
                if nxt is None:
                    raise _Problem("is dangling")
                if nxt.kind == "l":
                    if hops >= _MAX_HOPS:
                        raise _Problem("loops")
                    nxt = resolve(cur.ino, nxt.target or "", hops + 1)
                cur = nxt
            return cur

        def expand(link: _Node, path: str, anc: list[int]) -> None:
            t = resolve(link.parent, link.target or "", 0)
            if t.kind == "f":
                e = file_entry(t, path)
                if e is not None:
                    entries.append(e)
                return
            todo = [(t.ino, path + "/", anc)]
            while todo:
                d, prefix, seen = todo.pop()
                if d in seen:
                    raise _Problem("loops (it points to a directory that contains it)")
                for name, c in children.get(d, {}).items():
                    if c.kind == "d":
                        todo.append((c.ino, prefix + name + "/", seen + [d]))
                    elif c.kind == "f":
                        e = file_entry(c, prefix + name)
                        if e is not None:
                            entries.append(e)
                    elif c.kind == "l":
                        expand(c, prefix + name, seen + [d])

        for link, path, anc in links:
            try:
                expand(link, path, anc)
            except _Problem as e:
                problems.append(f"symlink {path!r} -> {link.target!r} {e}")
            except RecursionError:
                problems.append(f"symlink {path!r} -> {link.target!r} loops")
        if updates and not self.readonly:
            with self._tx() as con:
                con.executemany("UPDATE nodes SET digest = ?, size = ?, hmtime = ? WHERE ino = ?", updates)
            for u in updates:
                self._invalid.discard(u[3])
        entries.sort(key=lambda e: e.path)
        return entries, sources, problems, unhashed

    def entries(self) -> list[Entry]:
        """The files the next version would hold (hashing staged files as needed)."""
        with self._gate.exclusive(), self._lock:
            entries, _, problems, _ = self._snapshot(hash=True)
            if problems:
                raise InvalidPath(self._problems_message(problems))
            return entries

    def status(self, *, hash: bool = True) -> DraftStatus:
        """What differs from the base version: added/changed/removed files and their bytes."""
        with contextlib.ExitStack() as stack:
            if hash:
                stack.enter_context(self._gate.exclusive())
            stack.enter_context(self._lock)
            entries, _, problems, unhashed = self._snapshot(hash=hash)
            old = self._base_files()
            base_version = self.base_version
            meta = {k: self._meta(k) for k in ("project", "artifact", "store_url", "description", "type",
                                                "metadata", "aliases", "commit_id")}
        st = DraftStatus(meta["project"], meta["artifact"], meta["store_url"], base_version,
                         self.path, problems=problems,
                         commit_pending=meta["commit_id"] is not None, description=meta["description"],
                         type=meta["type"] or "unspecified", metadata=meta["metadata"] or {},
                         aliases=meta["aliases"] or [])
        for e in entries:
            b = old.pop(e.path, None)
            if b is None:
                st.added.append(e.path)
                st.added_bytes += e.size
            elif b[:3] != (e.digest, e.executable, e.ref):
                st.changed.append(e.path)
                st.changed_bytes += e.size
        for p, size in unhashed:  # written since hashed: new if the base lacks it, else maybe changed
            if old.pop(p, None) is None:
                st.added.append(p)
                st.added_bytes += size
            else:
                st.unhashed.append(p)
        st.added.sort()
        st.removed = sorted(old)
        st.removed_bytes = sum(b[3] for b in old.values())
        if self.readonly:
            st.busy = read_owner(self.path) or None
        return st

    def _problems_message(self, problems: list[str]) -> str:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        return (f"{self.project}/{self.artifact}: cannot commit the draft: " + "; ".join(problems[:10]) + more
                + ". A version holds only files: replace these symlinks by files or remove them, then commit"
                " again; the draft is kept as it is.")

    # -- commit --------------------------------------------------------------------------------
    def commit(self, store: "Store", *, description: str | None = None, metadata: dict[str, Any] | None = None,
               type: str | None = None, aliases: Iterable[str] = (), run: str | None = None,
               progress: Callable[[int], None] | None = None, group: str | None = None,
               keep: bool = False) -> "CommitResult | PartResult | None":
        """Commit the draft as the next version; None if it equals its base (nothing is created).

        Exactly once across crashes (see the module docstring). Arguments override what was set
        with :meth:`set_description` etc. On failure the draft is kept and the error says how to
        retry.

        ``group`` (or a group an earlier commit of this draft recorded): record the draft as a
        part of that pending group instead (:func:`artfs._distributed.upsert_draft`; ``keep``
        keeps the draft afterwards, else it is discarded).
        """
        if self.readonly:
            raise ArtfsError("cannot commit a draft opened read-only")
        group = group or self._meta("group")
        if group is not None:
            from ._distributed import upsert_draft

            return upsert_draft(self, store, group, description=description, metadata=metadata, type=type,
                                progress=progress, keep=keep)
        extra_aliases = [check_alias(a) for a in aliases]
        # The gate is held for the whole commit: no byte of a staged file changes (writes and
        # truncates wait), so the bytes hashed are the bytes uploaded. The lock is held only to
        # read the namespace (step 0) and to record results: lookups, stat, readdir, reads, even
        # creating or renaming files are answered meanwhile (what changes goes to the next version).
        with self._gate.exclusive():
            deferred: list[tuple[str, _Node]] = []
            with self._lock:
                project, artifact = self.project, self.artifact
                if store.id != self.store_id:
                    raise ArtfsError(f"{self.path} is a draft of {self.store_url}, not of {store.url}")
                entries, sources, problems, _ = self._snapshot(hash=False, defer=deferred)
                if problems:  # before hashing anything: the commit cannot succeed
                    raise InvalidPath(self._problems_message(problems))
                gen = self._gen
                self._committing = {n.fid for n in self._staged_nodes() if n.fid}
            try:
                return self._commit(store, project, artifact, entries, sources, deferred, gen, extra_aliases,
                                    description=description, metadata=metadata, type=type, run=run,
                                    progress=progress)
            finally:
                self._committing = set()

    def _staged_nodes(self) -> list[_Node]:
        return [_Node(*r) for r in self._q(f"SELECT {_COLS} FROM nodes WHERE fid IS NOT NULL")]

    def _hash_deferred(self, deferred: list[tuple[str, _Node]], entries: list[Entry],
                       sources: dict[str, Callable[[str], None] | str]) -> None:
        """Hash the staged files :meth:`_snapshot` deferred (without the lock; the caller holds the
        gate) and add their entries; the digests are stored as the snapshot would have."""
        hashed: dict[int, tuple[str, int]] = {}
        updates: list[tuple[str, int, int, int, str]] = []
        for path, n in deferred:
            got = hashed.get(n.ino)
            if got is None:
                p = self._fpath(n.fid or "")
                st = os.stat(p)  # the file stays (deletion waits for the commit) and cannot change
                got = hashed[n.ino] = digest_file(p)
                after = os.stat(p)
                if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                    updates.append((got[0], got[1], after.st_mtime_ns, n.ino, n.fid or ""))
            digest, size = got
            sources[digest] = self._fpath(n.fid or "")
            entries.append(Entry(path, digest, size, bool(n.mode & stat.S_IXUSR)))
        entries.sort(key=lambda e: e.path)
        if updates:
            with self._lock, self._tx() as con:  # only where the node still has that staged file
                con.executemany("UPDATE nodes SET digest = ?, size = ?, hmtime = ? WHERE ino = ? AND fid = ?", updates)
                for u in updates:
                    self._invalid.discard(u[3])

    def _commit(self, store: "Store", project: str, artifact: str, entries: list[Entry],
                sources: dict[str, Callable[[str], None] | str], deferred: list[tuple[str, _Node]], gen: int,
                extra_aliases: list[str], *, description: str | None, metadata: dict[str, Any] | None,
                type: str | None, run: str | None, progress: Callable[[int], None] | None) -> "CommitResult | None":
        """Steps 1-5 of a commit (module docstring), from the namespace :meth:`commit` read at ``gen``."""
        try:
            self._hash_deferred(deferred, entries, sources)
            vdigest = version_digest(check_entries(entries))
            digests = {e.digest for e in entries if e.digest}
            base_version = self.base_version
            pending = self._meta("commit_id")
            if pending is not None and self._meta("commit_vdigest") != vdigest:
                # An earlier attempt committed other content; if it landed, it is the new base.
                done = store.find_commit(project, artifact, pending, after=base_version)
                landed = store.manifest(project, artifact, done) if done is not None else None
                with self._lock, self._tx() as con:
                    if landed is not None:
                        self._set_base(con, landed)
                    self._set(con, commit_id=None, commit_vdigest=None)
                base_version = self.base_version
                pending = None
            if pending is None:
                base_digest = self._meta("base_digest")
                if vdigest == base_digest or (base_digest is None and not entries):
                    with self._lock:
                        self._unstage(committed=digests, changed=self._gen != gen)
                    return None
                pending = uuid.uuid4().hex
                with self._lock, self._tx() as con:
                    self._set(con, commit_id=pending, commit_vdigest=vdigest)
            _pause("after-commit-id")
            meta = {k: self._meta(k) for k in ("description", "metadata", "type", "aliases")}
            al = list(dict.fromkeys(list(meta["aliases"] or []) + extra_aliases))
            result = store.commit(
                project, artifact, type=type or meta["type"] or "unspecified", entries=entries,
                sources=sources,
                description=description if description is not None else meta["description"],
                metadata=metadata if metadata is not None else (meta["metadata"] or {}),
                aliases=al, run=run, progress=progress, commit_id=pending, base_version=base_version,
                vdigest=vdigest)
        except (ArtfsError, OSError) as e:
            raise self._failed(e) from e
        _pause("after-store-commit")
        try:  # in the local cache already: Store.commit wrote or read it
            base = _committed(store, project, artifact, result.version, vdigest)
        except (ArtfsError, OSError) as e:
            raise self._failed(e) from e
        with self._lock:
            self._committing = set()
            self._unstage(base=base, committed=digests, changed=self._gen != gen)
        return result

    def _failed(self, e: BaseException) -> ArtfsError:
        how = (f"the draft is kept; retry with `artfs commit {self.project}/{self.artifact}` "
               f"(or `artfs commit MNT/{self.project}/{self.artifact}/draft` while mounted, or unmount again)")
        msg = f"{self.project}/{self.artifact}: commit failed: {e}; {how}"
        if isinstance(e, ArtfsError):
            try:
                err = type(e)(msg)
            except TypeError:
                err = ArtfsError(msg)
        else:
            err = StoreUnavailable(msg) if isinstance(e, (ConnectionError, TimeoutError)) else ArtfsError(msg)
        return err

    def _unstage(self, *, base: "Manifest | _Base | None" = None, committed: set[str] | None = None,
                 changed: bool = False) -> None:
        """After a commit (or finding the draft equal to its base): staged files become base nodes.

        Files with an open write handle stay staged (their bytes equal the new base anyway), and
        so do files whose bytes the new base does not hold (``committed``: its digests; a file
        created while the commit ran). ``changed``: the namespace changed while the commit ran,
        so the draft stays dirty (those changes are the next version's). The caller holds the lock.
        """
        staged = self._staged_nodes()
        updates = []
        for n in staged:
            if n.ino in self._open or n.digest is None or n.ino in self._invalid:
                continue
            if committed is not None and n.digest not in committed:
                continue
            try:
                fst = os.stat(self._fpath(n.fid or ""))
            except FileNotFoundError:
                continue
            # the row takes over the staged file's times (a ctime never goes back)
            updates.append((fst.st_mtime_ns, fst.st_atime_ns, fst.st_ctime_ns, n.ino))
        links_or_empty = self._q(
            "SELECT 1 FROM nodes d WHERE d.kind NOT IN ('f', 'd') OR (d.kind = 'd' AND d.ino != 1 AND NOT EXISTS "
            "(SELECT 1 FROM nodes c WHERE c.parent = d.ino)) LIMIT 1")
        with self._tx() as con:
            con.executemany("UPDATE nodes SET fid = NULL, hmtime = NULL, mtime = ?, atime = ?, "
                            "ctime = max(coalesce(ctime, 0), ?) WHERE ino = ?", updates)
            if base is not None:  # a commit: the version is the new base; its description is used up
                self._set_base(con, base)
                self._set(con, commit_id=None, commit_vdigest=None, description=None, metadata={}, aliases=[])
            # Clean again unless something a version does not hold is left (symlinks, empty
            # directories) or a file stays staged because a write handle is open.
            self._set(con, dirty=bool(links_or_empty) or len(updates) < len(staged) or changed)
        self._dirty = bool(self._meta("dirty"))
        if base is not None:
            _pause("after-reset")
        self._sweep()

    def refresh(self, latest: Manifest | None) -> bool:
        """Rebase a *clean* draft onto ``latest`` (the artifact's current latest); True if it moved.

        A dirty draft keeps its base: the commit records whatever the user made of it.
        """
        with self._gate.exclusive(), self._lock:
            if self._meta("dirty", False) or self._meta("commit_id") is not None:
                return False
            if latest is None or latest.version == self.base_version:
                return False
            with self._tx() as con:
                con.execute("DELETE FROM nodes WHERE ino != ?", (ROOT,))
                self._set_base(con, latest)
                self._materialise(con, latest)
            self._invalid.clear()
            self._sweep()
            return True


class _Problem(Exception):
    pass


class _Base(NamedTuple):
    """What a draft keeps of its base version: enough for :meth:`Draft._set_base`."""

    version: int
    digest: str
    data: bytes

    def to_bytes(self) -> bytes:
        return self.data


def _committed(store: "Store", project: str, artifact: str, n: int, vdigest: str) -> "Manifest | _Base":
    """The version a commit made (or matched), as the draft's next base.

    Its manifest is in the local cache (``Store.commit`` wrote or read it); its bytes are taken
    as they are, without parsing a manifest of maybe millions of entries again, and its digest
    is the one just committed (the version carries that content, whichever way it was found).
    """
    try:
        with open(store.cache.manifest_path(store.id, project, artifact, n), "rb") as f:
            return _Base(n, vdigest, f.read())
    except FileNotFoundError:
        return store.manifest(project, artifact, n)


def read_owner(path: str) -> dict[str, Any]:
    try:
        with open(os.path.join(path, "owner")) as f:
            d = json.load(f)
            return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "by an unknown process"
    who = "by this process" if info.get("pid") == os.getpid() else f"by pid {info.get('pid')}"
    at = f" mounted at {info['mountpoint']}" if info.get("mountpoint") else ""
    return f"{who}: {info.get('what') or '?'}{at}"


def store_fetch(store: "Store", project: str) -> Fetch:
    """A fetch function that copies a base blob from the store through the verified cache."""

    def fetch(entry: Entry, dst: str) -> None:
        if entry.ref is not None or not entry.digest:
            raise ArtfsError(f"{entry.path}: copying a reference into a draft is not supported yet")
        for attempt in (1, 2):
            store.fetch_blob(project, entry.digest)
            try:
                store.cache.copy_verified(entry.digest, dst, size=entry.size)
                return
            except CorruptData:
                if attempt == 2:
                    raise

    return fetch


@dataclass(frozen=True)
class DraftRef:
    """A draft on disk (not opened)."""

    store_id: str
    project: str
    artifact: str
    path: str

    def busy(self) -> dict[str, Any] | None:
        """The owner if a process has the draft open, else None."""
        try:
            fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return read_owner(self.path) or {"pid": None, "what": "unknown process"}
        finally:
            os.close(fd)
        return None

    def status(self, *, hash: bool = True, all: bool = False) -> DraftStatus | None:
        """How the draft differs from its base; None for a clean draft unless ``all``.

        A draft another process holds (a running mount) is read without taking it over and
        without hashing: files written since their last hash count as ``unhashed``.
        """
        owner = self.busy()
        try:
            if owner is None:
                with Draft.open(self.path) as d:
                    return d.status(hash=hash) if all or d.dirty else None
        except DraftBusy as e:
            owner = e.owner or {"pid": None}
        with Draft.open(self.path, readonly=True) as d:
            if not all and not d.dirty:
                return None
            st = d.status(hash=False)
        st.busy = owner
        return st


def list_drafts(root: str | None = None, *, store_id: str | None = None) -> list[DraftRef]:
    """Every draft under the staging root (of one store if ``store_id``), clean ones included."""
    root = os.path.abspath(root or default_staging_root())
    out = []
    with contextlib.suppress(FileNotFoundError):
        for sid in sorted(os.listdir(root)) if store_id is None else [store_id]:
            sd = os.path.join(root, sid)
            if not os.path.isdir(sd):
                continue
            for p in sorted(os.listdir(sd)):
                pd = os.path.join(sd, p)
                if not os.path.isdir(pd):
                    continue
                for a in sorted(os.listdir(pd)):
                    if os.path.exists(os.path.join(pd, a, "draft.db")):
                        out.append(DraftRef(sid, p, a, os.path.join(pd, a)))
    return out


class Drafts:
    """The drafts of one store in a staging directory: enumerate them, open one."""

    def __init__(self, store: "Store", *, root: str | None = None) -> None:
        self.store = store
        self.root = os.path.abspath(root or default_staging_root())
        self.dir = os.path.join(self.root, store.id)

    def path(self, project: str, artifact: str) -> str:
        return os.path.join(self.dir, check_name(project, "project"), check_name(artifact, "artifact"))

    def list(self) -> list[DraftRef]:
        """Every draft of this store on disk (clean ones included), sorted."""
        return list_drafts(self.root, store_id=self.store.id)

    def _latest(self, project: str, artifact: str) -> Manifest | None:
        versions = self.store.versions(project, artifact)
        if not versions:
            return None
        _, _, n = self.store.resolve(f"{project}/{artifact}:latest")
        return self.store.manifest(project, artifact, n)

    def open(self, project: str, artifact: str, *, create: bool = True, fetch: Fetch | None = None,
             owner: str | dict[str, Any] | None = None, refresh: bool = True) -> Draft:
        """Open the draft of ``project/artifact``, starting it from the latest version if needed.

        A clean draft is moved to the current latest first (when the store can be reached).
        Raises :class:`DraftBusy` if another process has it open.
        """
        path = self.path(project, artifact)
        fetch = fetch or store_fetch(self.store, project)
        try:
            d = Draft.open(path, fetch=fetch, owner=owner)
        except NotFound:
            if not create:
                raise NotFound(f"{project}/{artifact}: no draft of {self.store.url} in {self.root}") from None
            latest = self._latest(project, artifact)
            from ._access import make_private_dir

            make_private_dir(self.root)  # drafts hold bytes of private projects: 0700 for other local users
            os.makedirs(path, exist_ok=True)
            return Draft(path, fetch=fetch, owner=owner, _init={
                "store_url": self.store.url, "store_id": self.store.id, "project": project, "artifact": artifact,
                "base": latest, "type": latest.type if latest else "unspecified"})
        if refresh and not d.dirty:
            try:
                d.refresh(self._latest(project, artifact))
            except StoreUnavailable:
                pass
            except BaseException:
                d.close()
                raise
        return d

    def status(self, *, hash: bool = True, all: bool = False) -> builtins.list[DraftStatus]:
        """Status of every dirty draft of this store (``all``: clean ones too)."""
        return [st for ref in self.list() if (st := ref.status(hash=hash, all=all)) is not None]
