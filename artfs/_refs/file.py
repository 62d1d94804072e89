"""``file://`` references: a file or directory on this machine.

Resolving stats the file and hashes its content (xxh128); records ``mtime_ns`` and the digest.
A read compares size and mtime, a whole download the digest too. A manifest comes from a store
that others can write, so reading is refused (PermissionDenied) unless the reader was made with
``allow_file=True`` or ``file_roots`` that contain the file's real path (symlinks followed).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from .._digest import digest_file
from .._errors import ArtfsError, InvalidPath, NotFound, PermissionDenied, StoreUnavailable
from .._manifest import Entry
from .base import CHUNK, Scheme, changed, entry_path, info_of, is_pinned, too_many


class FileRefs(Scheme):
    def resolve(self, uri: str, bucket: str, key: str, name: str | None, checksum: bool,
                limit: int) -> list[Entry]:
        return self._resolve_file(uri, key, name, checksum, limit)

    def read_range(self, entry: Entry, bucket: str, key: str, offset: int, length: int) -> bytes:
        return self._file_range(entry, key, offset, length)

    def download(self, entry: Entry, bucket: str, key: str, path: str, h: Any) -> int:
        return self._file_download(entry, key, path, h)

    def size(self, entry: Entry, bucket: str, key: str) -> int:
        p = self._file_path(entry, key)
        try:
            return os.stat(p).st_size
        except OSError as e:
            raise self._file_error(entry, e) from None

    def check_allowed(self, entry: Entry, key: str) -> None:
        self._file_path(entry, key)

    def _file_path(self, entry: Entry | None, path: str) -> str:
        real = os.path.realpath(path)
        if self.reader.allow_file or any(real == r or real.startswith(r.rstrip("/") + "/") for r in self.reader.file_roots):
            return real
        what = f"{entry.path}: reference {entry.ref}" if entry else f"file://{path}"
        raise PermissionDenied(
            f"{what} is a file on this machine; reading local files is off "
            "(pass allow_file=True or file_roots=[...] to allow it)"
        )

    @staticmethod
    def _file_error(entry: Entry, e: OSError) -> ArtfsError:
        if isinstance(e, FileNotFoundError):
            if is_pinned(entry):
                return changed(entry, "the file no longer exists")
            return NotFound(f"{entry.path}: reference {entry.ref} not found")
        if isinstance(e, PermissionError):
            return PermissionDenied(f"{entry.path}: reference {entry.ref}: {e.strerror}")
        return StoreUnavailable(f"{entry.path}: reference {entry.ref}: {e.strerror or e}")

    @staticmethod
    def _file_check(entry: Entry, fd: int) -> None:
        st = os.fstat(fd)
        if not is_pinned(entry):
            return
        mtime = info_of(entry).get("mtime_ns")
        if st.st_size != entry.size:
            raise changed(entry, f"{st.st_size} bytes now, {entry.size} recorded")
        if mtime is not None and st.st_mtime_ns != mtime:
            raise changed(entry, "modified since it was logged")

    @contextlib.contextmanager
    def _file_open(self, entry: Entry, path: str) -> Iterator[int]:
        real = self._file_path(entry, path)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise self._file_error(entry, e) from None
        try:
            self._file_check(entry, fd)
            yield fd
        finally:
            os.close(fd)

    def _file_range(self, entry: Entry, path: str, offset: int, length: int) -> bytes:
        with self._file_open(entry, path) as fd:
            try:
                return os.pread(fd, length, offset)
            except OSError as e:
                raise self._file_error(entry, e) from None

    def _file_download(self, entry: Entry, path: str, target: str, h: Any) -> int:
        with self._file_open(entry, path) as fd:
            n = 0
            with open(target, "wb") as out:
                while True:
                    try:
                        chunk = os.read(fd, CHUNK)
                    except OSError as e:
                        raise self._file_error(entry, e) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    if h is not None:
                        h.update(chunk)
                    n += len(chunk)
            self._file_check(entry, fd)  # changed while we copied?
            return n

    def _resolve_file(self, uri: str, path: str, name: str | None, checksum: bool, limit: int) -> list[Entry]:
        real = self._file_path(None, path)
        if os.path.isdir(real):
            files = []
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for fn in sorted(filenames):
                    full = os.path.join(dirpath, fn)
                    if os.path.isfile(full):
                        files.append((full, os.path.relpath(full, path).replace(os.sep, "/")))
                        if len(files) > limit:
                            raise too_many(uri, limit)
        elif os.path.isfile(real):
            files = [(path, "" if name else os.path.basename(path))]
        else:
            raise NotFound(f"{uri}: no such file or directory")
        out = []
        for full, rel in files:
            try:
                os.fsencode(rel).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidPath(f"reference {uri}: {full!r}: file name is not UTF-8") from None
            epath = entry_path(uri, name, rel)
            ref = "file://" + os.path.abspath(full)
            if not checksum:
                out.append(Entry(epath, None, os.path.getsize(full), ref=ref, ref_info={"checksum": False}))
                continue
            before = os.stat(full)
            digest, size = digest_file(full)
            after = os.stat(full)
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or size != after.st_size:
                raise ArtfsError(f"{full}: changed while it was being hashed; try again")
            out.append(Entry(epath, digest, size, ref=ref, ref_info={"mtime_ns": after.st_mtime_ns}))
        return out

