"""The local-directory store (the default).

Writes go to ``<root>/.tmp/<unique>`` and are renamed into place (``os.replace``) or, for an
exclusive create, hard-linked (``os.link`` fails with EEXIST if the name exists, atomically, also on
NFS). A crash leaves at most a stray file in ``.tmp/``, which ``gc`` removes.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from typing import Iterator

from .._errors import AlreadyExists, ArtfsError, NotFound, PermissionDenied, StoreUnavailable
from . import Backend, ObjectInfo

TMP = ".tmp"


def _oserror(e: OSError, key: str) -> ArtfsError:
    if e.errno == errno.ENOENT:
        return NotFound(f"{key}: not found in the store")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDenied(f"{key}: {e.strerror}")
    return StoreUnavailable(f"{key}: {e.strerror or e}")


class LocalBackend(Backend):
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = "file://" + self.root
        self.counter = {"put": 0, "get": 0, "range": 0}

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _tmp(self) -> str:
        d = os.path.join(self.root, TMP)
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, uuid.uuid4().hex)

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

    def download_file(self, key: str, path: str) -> int:
        try:
            shutil.copyfile(self._path(key), path)
            self.counter["get"] += 1
            return os.path.getsize(path)
        except OSError as e:
            if e.filename == path or getattr(e, "filename2", None) == path:
                raise
            raise _oserror(e, key) from None

    def _place(self, tmp: str, key: str, exclusive: bool) -> None:
        dst = self._path(key)
        try:
            for attempt in range(100):
                try:
                    try:
                        os.makedirs(os.path.dirname(dst), exist_ok=True)
                    except FileExistsError:  # made and pruned again while makedirs looked
                        if attempt == 99:
                            raise
                        continue
                    if exclusive:
                        try:
                            os.link(tmp, dst)
                        except FileExistsError:
                            raise AlreadyExists(f"{key}: already exists") from None
                    else:
                        os.replace(tmp, dst)
                    break
                except FileNotFoundError:
                    # ``delete`` of another key pruned the (then empty) parent directory between
                    # our makedirs and our rename: make it again
                    if attempt == 99 or not os.path.exists(tmp):
                        raise
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.counter["put"] += 1

    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        try:
            tmp = self._tmp()
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._place(tmp, key, exclusive)
        except OSError as e:
            raise _oserror(e, key) from None

    def put_file(self, key: str, path: str, *, exclusive: bool = False) -> None:
        try:
            tmp = self._tmp()
            shutil.copyfile(path, tmp)
            self._place(tmp, key, exclusive)
        except FileNotFoundError as e:
            if e.filename == path:
                raise
            raise _oserror(e, key) from None
        except OSError as e:
            raise _oserror(e, key) from None

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
                try:
                    st = os.stat(os.path.join(dirpath, fn))
                except FileNotFoundError:
                    continue
                key = fn if rel == "." else f"{rel}/{fn}"
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def list_dirs(self, prefix: str) -> list[str]:
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
        try:
            for e in os.scandir(d):
                if e.stat().st_mtime < time.time() - older_than:
                    os.unlink(e.path)
                    n += 1
        except FileNotFoundError:
            pass
        return n
