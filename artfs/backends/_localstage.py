"""The local store's staged copies of a put's blobs (:class:`~artfs.backends.base.Staging`).

A copy is written beside the blob it will become, as ``<blob's directory>/.artfs-stage-<put>-<blob's
name>`` (``<put>``: pid, a random per-process part and a counter: one name per put, so two puts of
the same bytes, in two processes or two threads, never share a copy). Placing it is a rename within
one directory. A file larger than one read is written into ``.tmp/`` while it is hashed and renamed
to its staged name once its digest is known.

Invariants
* A staged name is never a key: ``list``, ``missing`` and the blob checks skip ``.artfs-stage-*``,
  and ``gc`` removes those older than a day (a killed put's).
* The bytes of every staged copy are durable (:meth:`LocalStaging.sync`: one ``syncfs`` of the
  store's file system for more than 64 copies, else an ``fsync`` each) before the first is renamed
  to its key; the renamed names are made durable by the store's ``flush`` (the directories'
  ``fsync``), which a commit calls before it creates the manifest naming them.
* Nothing is staged for a blob the store has already (one ``stat``), nor twice in one put.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Protocol

from .base import Staging

STAGE = ".artfs-stage-"
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
#: more copies than this: one ``syncfs`` instead of an ``fsync`` each
SYNCFS_MIN = 64


class StagingStore(Protocol):
    """What a staging needs of the local store (:class:`artfs.backends.local.LocalBackend`)."""

    root: str

    def level_of(self, key: str) -> tuple[int, int] | None: ...
    def make_dirs(self, path: str, key: str) -> None: ...
    def new_tmp(self) -> tuple[str, int]: ...
    def error(self, e: OSError, key: str) -> Exception: ...
    def sync_all(self) -> None: ...


class LocalStaging(Staging):
    def __init__(self, backend: StagingStore, project: str, token: str) -> None:
        self.backend = backend
        self.prefix = backend.root + "/"
        self.level = backend.level_of(project + "/")  # once for the whole put, not once per file
        self.token = STAGE + token + "-"
        self._lock = threading.Lock()
        self._staged = 0
        self._done = 0  # placed or discarded
        self._few: list[str] | None = []  # the copies' paths while there are few (fsync'd one by one)
        self._made: set[str] = set()  # blob directories this put made: no blob to look for in them

    def _names(self, key: str) -> tuple[str, str]:
        blob = self.prefix + key
        d, _, name = blob.rpartition("/")
        return blob, f"{d}/{self.token}{name}"

    def _counted(self, path: str) -> None:
        with self._lock:
            self._staged += 1
            if self._few is not None:
                self._few.append(path)
                if len(self._few) > SYNCFS_MIN:
                    self._few = None

    def _fix(self, fd: int) -> None:
        """The project's file mode and group, when its level is set (artfs._access)."""
        if self.level is not None:
            mode, gid = self.level
            with contextlib.suppress(PermissionError):  # a writer outside the group keeps its own
                if os.fstat(fd).st_gid != gid:
                    os.fchown(fd, -1, gid)
            os.fchmod(fd, mode & 0o664)

    def put_small(self, key: str, data: bytes) -> bool:
        blob, tmp = self._names(key)
        d = blob[:blob.rindex("/")]
        if d not in self._made:  # (a blob another process places there meanwhile: the commit sees it)
            try:
                os.stat(blob)
                return False  # the store has it
            except FileNotFoundError:
                pass
            except OSError as e:
                raise self.backend.error(e, key) from None
        try:
            try:
                fd = os.open(tmp, _NEW, 0o644)
            except FileNotFoundError:  # the blob's directory is not made yet
                self.backend.make_dirs(d, key)
                with self._lock:
                    self._made.add(d)
                fd = os.open(tmp, _NEW, 0o644)
        except FileExistsError:
            return False  # a file of the same bytes was staged by this put
        except OSError as e:
            raise self.backend.error(e, key) from None
        try:
            try:
                self._fix(fd)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(e, OSError):
                raise self.backend.error(e, key) from None
            raise
        self._counted(tmp)
        return True

    def open_tmp(self) -> tuple[str, int]:
        try:
            tmp, fd = self.backend.new_tmp()
        except OSError as e:
            raise self.backend.error(e, ".tmp") from None
        try:
            self._fix(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        return tmp, fd

    def adopt(self, tmp: str, key: str) -> bool:
        blob, staged = self._names(key)
        try:
            if os.path.exists(blob) or os.path.exists(staged):
                os.unlink(tmp)
                return False
            try:
                os.rename(tmp, staged)
            except FileNotFoundError:
                if not os.path.exists(tmp):
                    raise
                self.backend.make_dirs(os.path.dirname(staged), key)
                os.rename(tmp, staged)
        except OSError as e:
            raise self.backend.error(e, key) from None
        self._counted(staged)
        return True

    def has(self, key: str) -> bool:
        return os.path.exists(self._names(key)[1])

    def place(self, key: str) -> None:
        blob, staged = self._names(key)
        try:
            os.replace(staged, blob)
        except OSError as e:
            raise self.backend.error(e, key) from None
        with self._lock:
            self._done += 1

    def discard(self, key: str) -> None:
        try:
            os.unlink(self._names(key)[1])
        except FileNotFoundError:
            return
        except OSError:
            return  # gc removes what is left, a day later
        with self._lock:
            self._done += 1

    def left(self) -> int:
        return self._staged - self._done

    def sync(self) -> None:
        if not self._staged:
            return
        try:
            if self._few is None:
                self.backend.sync_all()
                return
            for p in self._few:
                fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            raise self.backend.error(e, ".tmp") from None
