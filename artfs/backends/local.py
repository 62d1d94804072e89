"""The local-directory store (the default).

Writes go to ``<root>/.tmp/<unique>`` and are renamed into place (``os.replace``) or, for an
exclusive create, hard-linked (``os.link`` fails with EEXIST if the name exists, atomically, also on
NFS). A crash leaves at most a stray file in ``.tmp/``, which ``gc`` removes.

Access levels (:mod:`artfs._access`) live in the modes of a project's directory. When it has the
setgid bit (``artfs access set``), every file written here gets the project's file mode and group
before it is renamed or linked into place, and every directory made here gets the project
directory's mode: new versions keep the project's level.
"""

from __future__ import annotations

import builtins

import contextlib
import errno
import itertools
import os
import stat
import threading
import uuid
from typing import Callable, Iterator

from .._errors import AlreadyExists, ArtfsError, NotFound, PermissionDenied, StoreUnavailable
from ._localstage import STAGE, SYNCFS_MIN, LocalStaging
from .base import Backend, ObjectInfo, Staging, pwrite_all

__all__ = ["LocalBackend", "STAGE", "TMP"]

TMP = ".tmp"


def _oserror(e: OSError, key: str) -> ArtfsError:
    if e.errno == errno.ENOENT:
        return NotFound(f"{key}: not found in the store")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDenied(f"{key}: {e.strerror}")
    return StoreUnavailable(f"{key}: {e.strerror or e}")


# copy_file_range refused for this pair of files (another filesystem type, an old kernel, a file
# system without it): copy through a buffer instead
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
_buffers = threading.local()


def _copy_by_buffer(src: int, dst: int, length: int, offset: int, dst_offset: int) -> int:
    """Copy with ``preadv``/``pwrite`` through a reused per-thread 1 MiB buffer."""
    buf = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = memoryview(bytearray(1 << 20))
    done = 0
    while done < length:
        n = os.preadv(src, [buf[: min(len(buf), length - done)]], offset + done)
        if n == 0:
            break
        pwrite_all(dst, buf[:n], dst_offset + done)
        done += n
    return done


def _copy_fd(src: int, dst: int) -> int:
    """Copy all of ``src`` to ``dst`` (both from offset 0) in the kernel; returns the bytes copied.

    ``copy_file_range`` (a reflink where the file system can), else through a buffer. Nothing
    like ``shutil.copyfile``'s four ``stat`` calls per file, which a put of many small files paid.
    """
    done = 0
    while True:
        try:
            n = os.copy_file_range(src, dst, 1 << 30, done, done)
        except OSError as e:
            if e.errno not in _NO_COPY_FILE_RANGE:
                raise
            return done + _copy_by_buffer(src, dst, 1 << 62, done, done)
        if n == 0:
            if done == 0 and os.fstat(src).st_size > 0:  # a file system that copies nothing this way
                return _copy_by_buffer(src, dst, 1 << 62, 0, 0)
            return done
        done += n


_TMP_ID = uuid.uuid4().hex[:12]
_tmp_seq = itertools.count()


def _fsync_dir(path: str) -> None:
    """fsync a directory (the names in it durable); where directories cannot be opened, nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: more keys than this to look for: list their directories instead of a stat each
_LIST_MIN = 2048
#: more keys than this to flush: one ``syncfs`` of the store's file system instead of an fsync each
_SYNCFS_MIN = SYNCFS_MIN


def _syncfs(fd: int) -> None:
    """``syncfs(2)`` (all dirty data and metadata of ``fd``'s file system, in one call), else ``sync``."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


class LocalBackend(Backend):
    stages = True

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = "file://" + self.root
        self.counter: dict[str, int] = {"put": 0, "get": 0, "range": 0, "download": 0}
        self._unsynced: set[str] = set()  # keys a lone put_file wrote: their bytes are flush()'s to sync

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def local_path(self, key: str) -> str:
        """The file of ``key`` on this machine (it may not exist): callers may ``stat`` it directly."""
        return self._path(key)

    def _tmp(self) -> str:
        """A unique name in ``.tmp/``: pid, a random per-process part and a counter (no uuid4 per
        write: a put of many small files made thousands)."""
        return os.path.join(self.root, TMP, f"{os.getpid()}-{_TMP_ID}-{next(_tmp_seq)}")

    def _level(self, key: str) -> tuple[int, int] | None:
        """(mode, gid) of the project directory of ``key`` if artfs set its level (setgid), else None."""
        project, sep, _ = key.partition("/")
        if not sep:
            return None
        try:
            st = os.stat(os.path.join(self.root, project))
        except OSError:
            return None
        return (st.st_mode & 0o7777, st.st_gid) if st.st_mode & stat.S_ISGID else None

    def _create_tmp(self, key: str, level: tuple[int, int] | None | bool = True,
                    beside: str | None = None) -> tuple[str, int]:
        """Create and open a new temp file for ``key`` (making ``.tmp/`` only when it is missing),
        with the mode and group of ``key``'s project when its level is set (``level``: that
        level if the caller read it already, True to read it). ``beside``: in the directory of
        that key instead (a name starting with ``STAGE``), so that placing it is a rename within
        one directory."""
        for attempt in (1, 2):
            if beside is None:
                tmp = self._tmp()
            else:
                tmp = os.path.join(os.path.dirname(self._path(beside)), f"{STAGE}{os.getpid()}-{_TMP_ID}-{next(_tmp_seq)}")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                if beside is None:
                    os.makedirs(os.path.join(self.root, TMP), exist_ok=True)
                else:
                    self._makedirs(os.path.dirname(tmp), beside)
                continue
            if level is True:
                level = self._level(key)
            if isinstance(level, tuple):
                mode, gid = level
                with contextlib.suppress(PermissionError):  # a writer outside the group keeps its own
                    if os.fstat(fd).st_gid != gid:
                        os.fchown(fd, -1, gid)
                os.fchmod(fd, mode & 0o664)
            return tmp, fd
        raise AssertionError("not reached")

    def _makedirs(self, path: str, key: str) -> None:
        """``os.makedirs(path)``; the directories made get the project's mode when its level is set."""
        level = self._level(key)
        if level is None:
            os.makedirs(path, exist_ok=True)
            return
        missing = []
        p = path
        while not os.path.isdir(p):
            missing.append(p)
            p = os.path.dirname(p)
        for p in reversed(missing):
            try:
                os.mkdir(p)
            except FileExistsError:
                continue
            os.chmod(p, level[0])  # setgid and the group come from the parent; the umask is undone

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                data = f.read()
            self.counter["get"] += 1
            return data
        except IsADirectoryError:
            raise NotFound(f"{key}: not found in the store") from None
        except OSError as e:
            raise _oserror(e, key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self.counter["range"] += 1
        try:
            with open(self._path(key), "rb", buffering=0) as f:
                return os.pread(f.fileno(), length, offset)
        except OSError as e:
            raise _oserror(e, key) from None

    def fetch_range_into(self, key: str, offset: int, length: int, fd: int, fd_offset: int) -> int:
        """Copy file to file in the kernel (``copy_file_range``): no bytes pass through Python."""
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        self.counter["range"] += 1
        try:
            src = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except IsADirectoryError:
            raise NotFound(f"{key}: not found in the store") from None
        except OSError as e:
            raise _oserror(e, key) from None
        try:
            if not stat.S_ISREG(os.fstat(src).st_mode):
                raise NotFound(f"{key}: not found in the store")
            done = 0
            while done < length:
                try:
                    n = os.copy_file_range(src, fd, length - done, offset + done, fd_offset + done)
                except OSError as e:
                    if e.errno not in _NO_COPY_FILE_RANGE:
                        raise
                    return done + _copy_by_buffer(src, fd, length - done, offset + done, fd_offset + done)
                if n == 0:
                    break  # the end of the object
                done += n
            return done
        finally:
            os.close(src)

    def download_file(self, key: str, path: str) -> int:
        src = self._open_blob(key)
        try:
            dst = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)  # errors: the caller's
            try:
                n = _copy_fd(src, dst)
            finally:
                os.close(dst)
            self.counter["download"] += 1
            return n
        finally:
            os.close(src)

    def _open_blob(self, key: str) -> int:
        """An fd on the regular file of ``key``; NotFound/…: mapped errors."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise _oserror(e, key) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotFound(f"{key}: not found in the store")
        return fd

    def _place(self, tmp: str, key: str, exclusive: bool) -> None:
        dst = self._path(key)
        placed = False
        try:
            for attempt in range(100):
                try:
                    if exclusive:
                        try:
                            os.link(tmp, dst)
                        except FileExistsError:
                            raise AlreadyExists(f"{key}: already exists") from None
                    else:
                        os.replace(tmp, dst)
                    placed = True
                    break
                except FileNotFoundError:
                    # the parent directory is missing: never made, or pruned (then empty) by a
                    # ``delete`` of another key, maybe again since we last made it: make it
                    if attempt == 99 or not os.path.exists(tmp):
                        raise
                    try:
                        self._makedirs(os.path.dirname(dst), key)
                    except (FileExistsError, FileNotFoundError):
                        pass  # an ancestor pruned or made again while makedirs worked: try again
        finally:
            if exclusive or not placed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        if exclusive:  # a version's manifest: its name is durable once this returns
            _fsync_dir(os.path.dirname(dst))
        self.counter["put"] += 1

    def staging(self, project: str) -> Staging:
        """Copies of one put's blobs beside their keys (:mod:`artfs.backends._localstage`)."""
        return LocalStaging(self, project, f"{os.getpid()}-{_TMP_ID}-{next(_tmp_seq)}")

    # -- what the staging uses (artfs.backends._localstage) ------------------------------------------
    def level_of(self, key: str) -> tuple[int, int] | None:
        """(mode, gid) of the project of ``key`` when artfs set its access level, else None."""
        return self._level(key)

    def make_dirs(self, path: str, key: str) -> None:
        """``os.makedirs(path)`` with the project's mode for the directories made (``key``: of that project)."""
        self._makedirs(path, key)

    def new_tmp(self) -> tuple[str, int]:
        """(path, fd) of a new file in ``.tmp/``, open for writing (its project's mode set by the caller)."""
        return self._create_tmp("", None)

    def error(self, e: OSError, key: str) -> ArtfsError:
        """The artfs error for an ``OSError`` about ``key`` (NotFound, PermissionDenied, StoreUnavailable)."""
        return _oserror(e, key)

    def sync_all(self) -> None:
        """Everything written to the store's file system durable: one ``syncfs``."""
        self._syncfs()

    def _sync_files(self, tmps: builtins.list[str]) -> None:
        """fsync each, or for many one ``syncfs`` of the store's file system."""
        try:
            if len(tmps) > _SYNCFS_MIN:
                self._syncfs()
                return
            for t in tmps:
                fd = os.open(t, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            raise _oserror(e, TMP) from None

    def _syncfs(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _syncfs(fd)
        finally:
            os.close(fd)

    def flush(self, keys: builtins.list[str]) -> None:
        """Make ``keys`` durable: the bytes of those a lone :meth:`put_file` wrote (fsync'd each, or
        for many one ``syncfs``; every other write here synced its bytes before naming them), then
        the names: an fsync of each directory they are in, and of its parents up to the store's
        root (directories made for them). Not a ``syncfs`` for a put of many files, which would
        also wait for every other process's writes to the same disk."""
        if not keys:
            return
        try:
            unsynced = [k for k in keys if k in self._unsynced] if self._unsynced else []
            if len(unsynced) > _SYNCFS_MIN:
                self._syncfs()
            else:
                for k in unsynced:
                    fd = os.open(self._path(k), os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            self._unsynced.difference_update(unsynced)
            dirs = {self._path(d) for d in {k.rpartition("/")[0] for k in keys}}
            for d in list(dirs):
                while d.startswith(self.root + os.sep):
                    d = os.path.dirname(d)
                    dirs.add(d)
            for d in sorted(dirs, reverse=True):  # the deepest first: a name before its parent's
                _fsync_dir(d)
        except OSError as e:
            raise _oserror(e, keys[0]) from None

    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        try:
            tmp, fd = self._create_tmp(key)
            with open(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._place(tmp, key, exclusive)
        except OSError as e:
            raise _oserror(e, key) from None

    def put_file(self, key: str, path: str, *, exclusive: bool = False, sync: bool = False) -> None:
        """Copy ``path`` into ``.tmp/`` and rename it into place (``sync``: fsync'd before the rename,
        as :meth:`put_files` does for one file; a lone ``put_file`` leaves syncing to :meth:`flush`)."""
        tmp = self._copy_to_tmp(key, path, sync)
        try:
            self._place(tmp, key, exclusive)
        except OSError as e:
            raise _oserror(e, key) from None
        if not sync and not exclusive:
            self._unsynced.add(key)  # its bytes are flush()'s to sync

    def put_files(self, items: builtins.list[tuple[str, str]], workers: int,
                  done: Callable[[int], None] | None = None) -> None:
        """Copy every file into ``.tmp/``, sync them all (one ``syncfs`` for many), then rename each
        into place: no key ever names a file whose bytes a crash could lose, for one sync of
        the batch rather than an fsync per file. A failure removes the copies not yet placed."""
        from .._parallel import pmap

        if len(items) <= 1:
            for i, (k, p) in enumerate(items):
                self.put_file(k, p, sync=True)
                if done is not None:
                    done(i)
            return
        tmps: builtins.list[str | None] = [None] * len(items)

        def copy(i: int) -> None:
            key, path = items[i]
            tmps[i] = self._copy_to_tmp(key, path)

        def place(i: int) -> None:
            tmp = tmps[i]
            assert tmp is not None
            try:
                self._place(tmp, items[i][0], False)
            except OSError as e:
                raise _oserror(e, items[i][0]) from None
            tmps[i] = None
            if done is not None:
                done(i)

        try:
            pmap(copy, range(len(items)), workers)
            self._sync_files([t for t in tmps if t is not None])
            pmap(place, range(len(items)), workers)
        finally:
            for t in tmps:
                if t is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(t)

    def _copy_to_tmp(self, key: str, path: str, sync: bool = False) -> str:
        """A copy of the local file ``path`` in ``.tmp/`` (for ``key``); its path."""
        try:
            src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise  # a missing source file is the caller's error, as it is
        except OSError as e:
            raise _oserror(e, key) from None
        try:
            tmp, fd = self._create_tmp(key)
            try:
                try:
                    _copy_fd(src, fd)
                    if sync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return tmp
        except OSError as e:
            raise _oserror(e, key) from None
        finally:
            os.close(src)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _oserror(e, key) from None
        if not os.path.isfile(self._path(key)):
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def missing(self, keys: builtins.list[str]) -> builtins.list[str]:
        """A ``stat`` each, or for many keys one listing of each directory they fall in (blobs
        spread over 256), which costs less than 100,000 ``stat`` calls."""
        if len(keys) < _LIST_MIN:
            return [k for k in keys if not os.path.isfile(self._path(k))]
        by_dir: dict[str, builtins.list[str]] = {}
        for k in keys:
            d, _, name = k.rpartition("/")
            by_dir.setdefault(d, []).append(name)
        out = []
        for d, names in by_dir.items():
            try:
                with os.scandir(self._path(d)) as it:
                    present = {e.name for e in it if e.is_file()}
            except (FileNotFoundError, NotADirectoryError):
                present = set()
            except OSError as e:
                raise _oserror(e, d) from None
            out += [f"{d}/{n}" if d else n for n in names if n not in present]
        return out

    def delete(self, key: str) -> None:
        p = self._path(key)
        try:
            os.unlink(p)
        except FileNotFoundError:
            return
        except OSError as e:
            raise _oserror(e, key) from None
        # prune empty parent directories up to the root (best effort, racing creators retry)
        d = os.path.dirname(p)
        while d != self.root and d.startswith(self.root):
            try:
                os.rmdir(d)
            except OSError:
                break
            d = os.path.dirname(d)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        for dirpath, dirnames, filenames in os.walk(base):
            if dirpath == self.root and TMP in dirnames:
                dirnames.remove(TMP)
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for fn in sorted(filenames):
                if fn.startswith(STAGE):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, fn))
                except FileNotFoundError:
                    continue
                key = fn if rel == "." else f"{rel}/{fn}"
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        try:
            with os.scandir(base) as it:
                return sorted(
                    e.name for e in it if e.is_dir() and not (base == self.root and e.name == TMP)
                )
        except FileNotFoundError:
            return []
        except OSError as e:
            raise _oserror(e, prefix) from None

    def gc_tmp(self, older_than: float) -> int:
        """Remove temporary files left by crashed writers; returns how many."""
        import time

        d = os.path.join(self.root, TMP)
        n = 0
        old: builtins.list[str] = []
        try:
            old += [e.path for e in os.scandir(d) if e.stat().st_mtime < time.time() - older_than]
        except FileNotFoundError:
            pass
        for dirpath, dirnames, filenames in os.walk(self.root):  # staged copies beside their keys
            if dirpath == self.root and TMP in dirnames:
                dirnames.remove(TMP)
            for fn in filenames:
                if fn.startswith(STAGE):
                    with contextlib.suppress(FileNotFoundError):
                        if os.stat(os.path.join(dirpath, fn)).st_mtime < time.time() - older_than:
                            old.append(os.path.join(dirpath, fn))
        for p in old:
            try:
                os.unlink(p)
            except (PermissionError, FileNotFoundError):
                continue  # another user's file in an open store's sticky .tmp/, or gone
            n += 1
        return n
