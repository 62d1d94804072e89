"""POSIX namespace operations of a draft: what ``stat``, ``readdir``, ``mkdir``, ``rename`` and
the rest see and do, each one sqlite transaction (:mod:`artfs._draft.schema`).

Checks come in the kernel's order so that each failure gets the errno a local filesystem would
give; errors are OSError with that errno, or :class:`InvalidPath` for a name a version cannot
hold (the mount answers EINVAL). Who may change what is the kernel's business (the mount uses
``default_permissions``): this layer stores what it is told. Permission bits, owners and times
are kept for the draft's life, but a version keeps only a file's executable bit (``S_IXUSR``).

Staged files (``files/<fid>``) appear here only where a namespace operation creates one (an
empty ``create``) or frees one (``unlink``, ``rename`` over a staged file): the file is deleted
after the transaction that dropped its node committed, unless a running commit reads it
(``DraftDB.committing``: deleted by the sweep after it). Writing, copy-up and truncation are in
:mod:`artfs._draft.staging`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from .._errors import InvalidPath
from .._manifest import Entry
from .._names import check_path
from .schema import EMPTY_DIGEST, NAME_MAX, ROOT, DraftDB, _Node, _oserr

#: ``renameat2`` flags (Linux values, as FUSE passes them)
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
MAX_SYMLINK = 4095

_KIND = {"f": "file", "d": "dir", "l": "symlink", "p": "fifo", "s": "socket", "b": "blockdev", "c": "chardev"}
_IFMT = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK, "p": stat.S_IFIFO, "s": stat.S_IFSOCK,
         "b": stat.S_IFBLK, "c": stat.S_IFCHR}
#: kinds a draft keeps but a version does not (like empty directories): FIFOs, sockets, devices
SPECIAL = {stat.S_IFIFO: "p", stat.S_IFSOCK: "s", stat.S_IFBLK: "b", stat.S_IFCHR: "c"}


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


class Namespace:
    """Reading and changing a draft's tree (see the module docstring): ``draft.namespace``."""

    def __init__(self, db: DraftDB) -> None:
        self.db = db

    # -- reading the namespace -----------------------------------------------------------------
    def _attr(self, n: _Node) -> Attr:
        if n.kind == "f" and n.fid is not None:
            try:
                st = os.stat(self.db.fpath(n.fid))
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
            nlink = 2 + self.db.con().execute("SELECT count(*) FROM nodes WHERE parent = ? AND kind = 'd'",
                                          (n.ino,)).fetchone()[0]
        return Attr(n.ino, _KIND[n.kind], _IFMT[n.kind] | mode, size, n.mtime, False, n.uid, n.gid,
                    n.atime, n.ctime, nlink, None, n.rdev or 0)

    def getattr(self, ino: int) -> Attr:
        with self.db.lock:
            return self._attr(self.db.node(ino))

    def lookup(self, parent: int, name: str | bytes) -> Attr:
        try:
            nm = _name(name)
        except InvalidPath:
            raise _oserr(errno.ENOENT) from None
        with self.db.lock:
            self.db.directory(parent)
            n = self.db.child(parent, nm)
            if n is None:
                raise _oserr(errno.ENOENT, nm)
            return self._attr(n)

    def readdir(self, ino: int, after: int = 0, limit: int | None = None) -> list[tuple[str, Attr]]:
        """Children of directory ``ino`` in inode order, those with an inode number > ``after``.

        Pass the last inode returned as ``after`` to continue: entries stay in place while others
        are added or removed (a good readdir cookie).
        """
        with self.db.lock:
            self.db.directory(ino)
            sql = f"SELECT {self.db.acols} FROM nodes WHERE parent = ? AND ino > ? ORDER BY ino"
            args: list[Any] = [ino, after]
            if limit is not None:
                sql += " LIMIT ?"
                args.append(limit)
            return [(r[2], self._attr(_Node(*r))) for r in self.db.q(sql, args)]

    def readlink(self, ino: int) -> str:
        with self.db.lock:
            n = self.db.node(ino)
            if n.kind != "l":
                raise _oserr(errno.EINVAL)
            return n.target or ""

    def parent(self, ino: int) -> int:
        with self.db.lock:
            return self.db.node(ino).parent if ino != ROOT else ROOT

    def path_of(self, ino: int) -> str:
        """The node's path inside the draft ('' for the root)."""
        with self.db.lock:
            parts = []
            while ino != ROOT:
                n = self.db.node(ino)
                parts.append(n.name)
                ino = n.parent
            return "/".join(reversed(parts))

    def resolve(self, path: str) -> int:
        """Inode of ``path`` (relative to the draft root; '' is the root), not following symlinks."""
        with self.db.lock:
            ino = ROOT
            for part in [p for p in path.split("/") if p]:
                self.db.directory(ino)
                n = self.db.child(ino, part)
                if n is None:
                    raise _oserr(errno.ENOENT, path)
                ino = n.ino
            return ino

    def base_entry(self, ino: int) -> Entry | None:
        """The base version's entry a base file node shows (None for staged files and non-files)."""
        with self.db.lock:
            n = self.db.node(ino)
            if n.kind != "f" or n.fid is not None:
                return None
            return self.db.entry_of(n, self.path_of(ino))

    def staged_path(self, ino: int) -> str | None:
        """Where a staged file's bytes are (None: a base file, read it from the store/cache)."""
        with self.db.lock:
            n = self.db.node(ino)
            if n.kind == "d":
                raise _oserr(errno.EISDIR)
            return self.db.fpath(n.fid) if n.kind == "f" and n.fid else None

    def statfs(self) -> os.statvfs_result:
        """Numbers of the disk holding the staging directory (what a draft can still grow by)."""
        return os.statvfs(self.db.path)

    # -- changing the namespace ----------------------------------------------------------------
    def _new_node(self, con: sqlite3.Connection, parent: int, name: str, kind: str, mode: int, *,
                  fid: str | None = None, target: str | None = None, digest: str | None = None,
                  hmtime: int | None = None, uid: int | None = None, gid: int | None = None,
                  rdev: int | None = None) -> int:
        """Insert a node owned by ``uid``/``gid`` (None: the draft's owner), as a local filesystem
        does: in a set-group-ID directory the group is the directory's, and a new directory
        inherits the bit (stripping it from files of other groups is the kernel's job)."""
        now = time.time_ns()
        p = self.db.node(parent)
        if p.mode & stat.S_ISGID:
            gid = p.gid
            if kind == "d":
                mode |= stat.S_ISGID
        cur = con.execute(
            "INSERT INTO nodes (parent, name, kind, mode, mtime, fid, digest, size, hmtime, target, uid, gid, "
            "atime, ctime, rdev) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
            (parent, name, kind, mode & 0o7777, now, fid, digest, hmtime, target, uid, gid, now, now, rdev))
        self._touch(con, now, parent)
        self.db.mark_dirty(con)
        return int(cur.lastrowid or 0)

    @staticmethod
    def _touch(con: sqlite3.Connection, now: int, *dirs: int) -> None:
        """A directory's entries changed: its mtime and ctime are ``now``."""
        con.executemany("UPDATE nodes SET mtime = ?, ctime = ? WHERE ino = ?", [(now, now, d) for d in set(dirs)])

    def _check_new(self, parent: int, name: str | bytes) -> str:
        nm = _name(name)
        self.db.directory(parent)
        if self.db.child(parent, nm) is not None:
            raise _oserr(errno.EEXIST, nm)
        return nm

    def create(self, parent: int, name: str | bytes, mode: int = 0o644, *, uid: int | None = None,
               gid: int | None = None) -> int:
        """A new empty file (staged); returns its inode. Open it with :meth:`open_for_write`.

        ``uid``/``gid``: who creates it (a mount passes the caller's; None: the draft's owner)."""
        with self.db.lock:
            nm = self._check_new(parent, name)
            fid = uuid.uuid4().hex
            p = self.db.fpath(fid)
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            hm = os.stat(p).st_mtime_ns
            try:
                with self.db.tx() as con:
                    ino = self._new_node(con, parent, nm, "f", mode, fid=fid, digest=EMPTY_DIGEST, hmtime=hm,
                                         uid=uid, gid=gid)
            except BaseException:
                os.unlink(p)
                raise
            self.db.after_tx()
            return ino

    def mkdir(self, parent: int, name: str | bytes, mode: int = 0o755, *, uid: int | None = None,
              gid: int | None = None) -> int:
        with self.db.lock:
            nm = self._check_new(parent, name)
            with self.db.tx() as con:
                ino = self._new_node(con, parent, nm, "d", mode, uid=uid, gid=gid)
            self.db.after_tx()
            return ino

    def mknod(self, parent: int, name: str | bytes, mode: int, rdev: int = 0, *, uid: int | None = None,
              gid: int | None = None) -> int:
        """A FIFO, socket or device node (``mode`` has its type): kept in the draft, as on a local
        disk, and left out of a version, which holds files only (like an empty directory)."""
        kind = SPECIAL.get(stat.S_IFMT(mode))
        if kind is None:
            raise _oserr(errno.EINVAL, f"mknod of type {stat.S_IFMT(mode):#o}")
        with self.db.lock:
            nm = self._check_new(parent, name)
            with self.db.tx() as con:
                ino = self._new_node(con, parent, nm, kind, mode, uid=uid, gid=gid,
                                     rdev=rdev if kind in ("b", "c") else None)
                if self.db.meta("format") == 1:
                    self.db.set_meta(con, format=2)
            self.db.after_tx()
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
        with self.db.lock:
            nm = self._check_new(parent, name)
            with self.db.tx() as con:
                ino = self._new_node(con, parent, nm, "l", 0o777, target=target, uid=uid, gid=gid)
            self.db.after_tx()
            return ino

    def _existing(self, parent: int, name: str | bytes) -> _Node:
        try:
            nm = _name(name)
        except InvalidPath:
            raise _oserr(errno.ENOENT) from None
        self.db.directory(parent)
        n = self.db.child(parent, nm)
        if n is None:
            raise _oserr(errno.ENOENT, nm)
        return n

    def _drop(self, con: sqlite3.Connection, n: _Node) -> str | None:
        """Delete node ``n``; returns the staged file to delete once the transaction committed."""
        con.execute("DELETE FROM nodes WHERE ino = ?", (n.ino,))
        self.db.invalid.discard(n.ino)
        return n.fid

    def _unlink_files(self, fids: Iterable[str | None]) -> None:
        for fid in fids:
            if fid and fid not in self.db.committing:  # else a running commit reads it: swept after it
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.db.fpath(fid))

    def unlink(self, parent: int, name: str | bytes) -> None:
        with self.db.lock:
            n = self._existing(parent, name)
            if n.kind == "d":
                raise _oserr(errno.EISDIR, n.name)

            def body(con: sqlite3.Connection) -> str | None:
                fid = self._drop(con, n)
                self._touch(con, time.time_ns(), parent)
                self.db.mark_dirty(con)
                return fid

            fid = self.db.freeing_tx(body)
            self.db.after_tx()
            self._unlink_files([fid])
            if fid:
                self.db.make_reserve()  # room again (if the file freed enough)

    def rmdir(self, parent: int, name: str | bytes) -> None:
        with self.db.lock:
            n = self._existing(parent, name)
            if n.kind != "d":
                raise _oserr(errno.ENOTDIR, n.name)
            if self.db.q("SELECT 1 FROM nodes WHERE parent = ? LIMIT 1", (n.ino,)):
                raise _oserr(errno.ENOTEMPTY, n.name)

            def body(con: sqlite3.Connection) -> None:
                self._drop(con, n)
                self._touch(con, time.time_ns(), parent)
                self.db.mark_dirty(con)

            self.db.freeing_tx(body)
            self.db.after_tx()

    def _is_ancestor(self, anc: int, ino: int) -> bool:
        """Whether directory ``anc`` is ``ino`` or one of its ancestors."""
        while True:
            if ino == anc:
                return True
            if ino == ROOT:
                return False
            ino = self.db.node(ino).parent

    def rename(self, old_parent: int, old_name: str | bytes, new_parent: int, new_name: str | bytes,
               flags: int = 0) -> None:
        """POSIX rename (replacing files and empty directories), plus RENAME_NOREPLACE/RENAME_EXCHANGE.

        Checks come in the kernel's order (``do_renameat2``/``vfs_rename``) so each failure gets
        the errno a local filesystem would give.
        """
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise _oserr(errno.EINVAL, f"rename flags {flags:#x}")
        exchange = bool(flags & RENAME_EXCHANGE)
        with self.db.lock:
            self.db.directory(new_parent)
            src = self._existing(old_parent, old_name)
            nm = _name(new_name)
            dst = self.db.child(new_parent, nm)
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
                with self.db.tx() as con:
                    # swap through a temporary name: (parent, name) is unique
                    con.execute("UPDATE nodes SET parent = -1, name = ? WHERE ino = ?", (f"\0{src.ino}", src.ino))
                    con.execute("UPDATE nodes SET parent = ?, name = ? WHERE ino = ?", (src.parent, src.name, dst.ino))
                    con.execute("UPDATE nodes SET parent = ?, name = ? WHERE ino = ?", (dst.parent, dst.name, src.ino))
                    self._touch(con, now, old_parent, new_parent)
                    con.execute("UPDATE nodes SET ctime = ? WHERE ino IN (?, ?)", (now, src.ino, dst.ino))
                    self.db.mark_dirty(con)
                self.db.after_tx()
                return
            if dst is not None:
                if src.kind == "d" and dst.kind != "d":
                    raise _oserr(errno.ENOTDIR, nm)
                if src.kind != "d" and dst.kind == "d":
                    raise _oserr(errno.EISDIR, nm)
                if dst.kind == "d" and self.db.q("SELECT 1 FROM nodes WHERE parent = ? LIMIT 1", (dst.ino,)):
                    raise _oserr(errno.ENOTEMPTY, nm)
            fid = None
            with self.db.tx() as con:
                if dst is not None:
                    fid = self._drop(con, dst)
                con.execute("UPDATE nodes SET parent = ?, name = ?, ctime = ? WHERE ino = ?",
                            (new_parent, nm, now, src.ino))
                self._touch(con, now, old_parent, new_parent)
                self.db.mark_dirty(con)
            self.db.after_tx()
            self._unlink_files([fid])

    def chmod(self, ino: int, mode: int) -> None:
        """Permission bits; a file's executable bit (``S_IXUSR``) is kept in the version.

        Sets the ctime, as every successful chmod does (even to the same bits)."""
        with self.db.lock:
            n = self.db.node(ino)
            if n.kind == "l":
                return  # Linux ignores the mode of symlinks
            if (n.mode & 0o7777) == (mode & 0o7777) and self._staged_ctime_now(n):
                return  # the same bits (cp -a, tar x): only the ctime moves, without a transaction
            with self.db.tx() as con:
                con.execute("UPDATE nodes SET mode = ?, ctime = ? WHERE ino = ?", (mode & 0o7777, time.time_ns(), ino))
                if n.kind == "f" and bool(n.mode & stat.S_IXUSR) != bool(mode & stat.S_IXUSR):
                    self.db.mark_dirty(con)
            if n.kind == "f" and bool(n.mode & stat.S_IXUSR) != bool(mode & stat.S_IXUSR):
                self.db.after_tx()

    def _staged_ctime_now(self, n: _Node) -> bool:
        """Move a staged file's ctime to now through its staged file (a chmod to the same bits),
        which costs no transaction; False if ``n`` is not staged or its row's ctime is still
        newer (the file's clock is the kernel's coarse one): then the caller writes the row."""
        if n.kind != "f" or n.fid is None:
            return False
        p = self.db.fpath(n.fid)
        os.chmod(p, 0o600)
        return os.stat(p).st_ctime_ns > (n.ctime or 0)

    def chown(self, ino: int, uid: int | None = None, gid: int | None = None) -> None:
        """Owner and group (None: unchanged); the draft keeps them, a version does not.

        Who may chown what, and clearing set-user/group-ID bits, is the kernel's business (the
        mount uses ``default_permissions`` and sends the new mode with the chown)."""
        with self.db.lock:
            n = self.db.node(ino)
            if (uid is None or uid == n.uid) and (gid is None or gid == n.gid) and self._staged_ctime_now(n):
                return  # the same owner (tar x as root): only the ctime moves, without a transaction
            with self.db.tx() as con:
                con.execute("UPDATE nodes SET uid = ?, gid = ?, ctime = ? WHERE ino = ?",
                            (n.uid if uid is None else uid, n.gid if gid is None else gid, time.time_ns(), ino))

    def utimens(self, ino: int, atime_ns: int | None = None, mtime_ns: int | None = None) -> None:
        """Set the access and/or modification time (None: unchanged); the ctime becomes now.

        A version records neither: they live in the draft (a staged file's in its staged file)."""
        if atime_ns is None and mtime_ns is None:
            return
        with self.db.lock:
            n = self.db.node(ino)
            now = time.time_ns()
            if n.kind == "f" and n.fid is not None:
                p = self.db.fpath(n.fid)
                st = os.stat(p)
                valid = self.db.digest_valid(n, st)
                os.utime(p, ns=(st.st_atime_ns if atime_ns is None else atime_ns,
                                st.st_mtime_ns if mtime_ns is None else mtime_ns))  # its ctime: now
                if valid:  # the bytes did not change: keep the cached digest valid
                    with self.db.tx() as con:
                        con.execute("UPDATE nodes SET hmtime = ? WHERE ino = ?", (os.stat(p).st_mtime_ns, ino))
                return
            old_atime = n.mtime if n.atime is None else n.atime
            with self.db.tx() as con:
                con.execute("UPDATE nodes SET atime = ?, mtime = ?, ctime = ? WHERE ino = ?",
                            (old_atime if atime_ns is None else atime_ns, n.mtime if mtime_ns is None else mtime_ns,
                             now, ino))
