"""Hashing the files of a put: a directory at a time, in a few threads, each file read once and
(into a local store) copied as it is read; the results in three compact arrays.

Used by ``Artifact.add_dir``/``add_file`` + ``log_artifact`` (and so ``artfs put``, ``put
--upsert``, ``finish``). A file is looked up in the record of what was hashed
(:mod:`artfs._hashes`): unchanged since it was recorded, it costs one ``stat``; else it is opened,
read (a small file by one ``read``, its end told by the ``fstat`` that the record needs anyway),
hashed, and, where the store stages (:meth:`~artfs.backends.base.Backend.staging`), written beside
its blob as a staged copy. A directory's row of the record is read when its first file is
reached and written back (a few directories per transaction) when its last is done, so the rows
of a tree are never all in memory and a crash loses at most the last few directories' rows.

Invariants
* **The bytes stored are the bytes hashed**: a staged copy is written from the very buffer that
  was hashed; a file larger than one read goes through a temp file as it is read and is renamed
  to its staged name once its digest is known. Nothing is staged for a blob the store has
  already (one ``stat`` of the blob), nor twice for two files of the same bytes.
* **Nothing outlives a failed put**: on any error every staged copy this put made is removed
  before the error is raised (the caller removes those the commit did not place, the same way:
  :meth:`Digests.discard`). A copy a killed process leaves is ``gc``'s (older than a day).
* **Memory**: per file 16 bytes of digest, 8 of size and 1 of flags, plus the record rows of the
  directories being hashed now; no object per file outlives the directory it is in.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import threading
import time
from array import array
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence

import xxhash

from ._hashes import _FIRST_READ, _MAX_READ, HashRecord, Row, hex_digest, matches, row_of, write_all
from ._layout import blob_key

if TYPE_CHECKING:
    from .backends.base import Staging

#: files of one directory hashed by one thread before it takes more work
_CHUNK = 512
#: record rows written once this many files' rows wait (and at the end)
_WRITE_EVERY = 20000

READ, EXEC, STAGED = 1, 2, 4
_RD = os.O_RDONLY | os.O_CLOEXEC


class Digests:
    """Digest, size and flags (:data:`READ`: read to hash it; :data:`EXEC`: executable by its
    owner; :data:`STAGED`: its bytes are in a staged copy) of each of ``n`` files."""

    def __init__(self, n: int) -> None:
        self.raw = bytearray(16 * n)
        self.sizes = array("q", bytes(8 * n))
        self.flags = bytearray(n)

    def __len__(self) -> int:
        return len(self.flags)

    def digest(self, i: int) -> str:
        return hex_digest(bytes(self.raw[16 * i:16 * i + 16]))

    def read(self) -> int:
        """How many files were read (the others' digests came from the record)."""
        return sum(1 for f in self.flags if f & READ)

    def discard(self, staging: "Staging", project: str) -> None:
        """Remove every staged copy of these files that is still there (not placed)."""
        if not staging.left():
            return
        key = key_of(project)
        for i, f in enumerate(self.flags):
            if f & STAGED:
                staging.discard(key(bytes(self.raw[16 * i:16 * i + 16])))


class _Dir:
    """One directory being hashed: its rows in the record, the rows it will have, the chunks left."""

    __slots__ = ("old", "new", "gone", "left")

    def __init__(self, old: dict[str, Row], left: int) -> None:
        self.old = old
        self.new: dict[str, Row] = {}
        self.gone: list[str] = []  # read again, and not recordable: the old row goes
        self.left = left


def key_maker(project: str) -> Callable[[bytes], str]:
    """raw digest -> its blob's key in ``project``, spelt as :func:`~artfs._layout.blob_key` spells it
    (without checking each digest again: these are made here)."""
    probe = "0123456789abcdef" * 2
    head, found, tail = blob_key(project, hex_digest(bytes.fromhex(probe))).rpartition(probe)
    assert found and head.endswith(f"/{probe[:2]}/") and not tail, "blob keys end in <2 hex>/<32 hex>"
    head = head[:-3]

    def key(raw: bytes) -> str:
        h = raw.hex()
        return f"{head}/{h[:2]}/{h}"

    return key


key_of = functools.lru_cache(maxsize=64)(key_maker)


def _runs(paths: Sequence[str]) -> Iterator[tuple[str, int, int]]:
    """(directory, start, end) of each run of consecutive ``paths`` in one directory."""
    start, prev = 0, None
    for i, p in enumerate(paths):
        d = p[:p.rindex("/")]
        if d != prev:
            if prev is not None:
                yield prev, start, i
            start, prev = i, d
    if prev is not None:
        yield prev, start, len(paths)


def hash_files(record: HashRecord | None, paths: Sequence[str], *, whole: Iterable[str] = (),
               workers: int = 4, staging: "Staging | None" = None, project: str = "") -> Digests:
    """The digests of ``paths`` (absolute, distinct; best grouped by directory, as a walk gives
    them), through ``record`` (None: read every file).

    ``whole``: directories whose every file is among ``paths`` (an ``add_dir``'s roots): the rows
    of their files that are gone, and of their subdirectories that are gone, are dropped.
    ``staging``: copy each file read into a staged copy beside its blob of ``project`` (module
    docstring). ``OSError`` as ``open``/``stat`` raise it (a file gone, unreadable); then nothing
    staged is left behind.
    """
    out = Digests(len(paths))
    work: list[tuple[str, int, int]] = []
    left: dict[str, int] = {}
    for d, a, b in _runs(paths):
        for s in range(a, b, _CHUNK):
            work.append((d, s, min(b, s + _CHUNK)))
            left[d] = left.get(d, 0) + 1
    dirs: dict[str, _Dir] = {}
    pending: list[tuple[str, dict[str, Row] | None]] = []
    pending_n = 0
    lock = threading.Lock()
    roots = [os.path.abspath(w).rstrip("/") for w in whole]

    def is_whole(d: str) -> bool:
        return any(d == r or d.startswith(r + "/") for r in roots)

    def start(d: str) -> _Dir:
        with lock:
            st = dirs.get(d)
            if st is not None:
                return st
        old = record.dir_rows(d) if record is not None else {}
        with lock:
            return dirs.setdefault(d, _Dir(old, left[d]))

    def finish(d: str, st: _Dir) -> None:
        nonlocal pending_n
        with lock:
            st.left -= 1
            if st.left:
                return
            del dirs[d]
            if record is None:
                return
            if is_whole(d):
                rows = st.new
            else:
                rows = dict(st.old)
                for name in st.gone:
                    rows.pop(name, None)
                rows.update(st.new)
            if rows != st.old:
                pending.append((d, rows))
                pending_n += len(rows) + 1
            if pending_n < _WRITE_EVERY:
                return
            batch = pending[:]
            pending.clear()
            pending_n = 0
        record.write(batch)

    def chunk(d: str, a: int, b: int) -> None:
        st = start(d)
        old, new, gone = st.old, st.new, st.gone
        raw, sizes, flags = out.raw, out.sizes, out.flags
        cut = len(d) + 1
        began = time.time_ns()  # before any read of the chunk: a conservative start for each
        for i in range(a, b):
            path = paths[i]
            name = path[cut:]
            row = old.get(name)
            if row is not None:
                s = os.stat(path)
                if matches(row, s):
                    raw[16 * i:16 * i + 16] = row[5]
                    sizes[i] = s.st_size
                    flags[i] = EXEC if s.st_mode & stat.S_IXUSR else 0
                    new[name] = row
                    continue
            digest, n, s, staged = _read(path, staging, project)
            raw[16 * i:16 * i + 16] = digest
            sizes[i] = n
            flags[i] = READ | (EXEC if s.st_mode & stat.S_IXUSR else 0) | (STAGED if staged else 0)
            r = row_of(s, n, digest, began)
            if r is not None:
                new[name] = r
            elif row is not None:
                gone.append(name)
        finish(d, st)

    try:
        _run(chunk, work, workers)
        if record is not None:
            with lock:
                batch = pending[:]
                pending.clear()
            seen = set(left)
            for r in roots:  # rows of directories gone since
                batch += [(d, None) for d in record.dirs_below(r) if d not in seen]
            record.write(batch)
    except BaseException:
        if staging is not None:
            out.discard(staging, project)
        raise
    finally:
        if record is not None:
            record.close()
    return out


def _read(path: str, staging: "Staging | None", project: str) -> tuple[bytes, int, os.stat_result, bool]:
    """Read and hash one file (staging a copy of it): (digest, length, fstat after, staged)."""
    fd = os.open(path, _RD)
    try:
        b = os.read(fd, _FIRST_READ)
        s = os.fstat(fd)
        if len(b) == s.st_size and len(b) < _FIRST_READ:  # the whole file, as its size says
            os.close(fd)
            fd = -1
            digest = xxhash.xxh3_128_digest(b)
            staged = staging is not None and staging.put_small(key_of(project)(digest), b)
            return digest, len(b), s, staged
        return _read_more(fd, b, staging, project)
    finally:
        if fd >= 0:
            os.close(fd)


def _read_more(fd: int, first: bytes, staging: "Staging | None", project: str
               ) -> tuple[bytes, int, os.stat_result, bool]:
    """The rest of a file larger than one read (or whose size changed meanwhile), copied into a
    temp file as it is read when staging."""
    h = xxhash.xxh3_128()
    tmp, out = staging.open_tmp() if staging is not None else ("", -1)
    try:
        try:
            n = 0
            b = first
            while b:
                h.update(b)
                if out >= 0:
                    write_all(out, b)
                n += len(b)
                b = os.read(fd, _MAX_READ)
            s = os.fstat(fd)
        finally:
            if out >= 0:
                os.close(out)
        digest = h.digest()
        staged = staging is not None and staging.adopt(tmp, key_of(project)(digest))
    except BaseException:
        if tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    return digest, n, s, staged


def _run(fn: Callable[[str, int, int], None], work: list[tuple[str, int, int]], workers: int) -> None:
    """``fn(*w)`` for each ``w`` of ``work`` in ``workers`` threads; the first error stops them
    taking more and is raised once they are done."""
    if workers <= 1 or len(work) <= 1:
        for w in work:
            fn(*w)
        return
    nxt = iter(work)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def loop() -> None:
        while not errors:
            with lock:
                w = next(nxt, None)
            if w is None:
                return
            try:
                fn(*w)
            except BaseException as e:
                errors.append(e)
                return

    threads = [threading.Thread(target=loop, name=f"artfs-hash-{i}", daemon=True)
               for i in range(min(workers, len(work)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class Sources(Mapping[str, "str | Callable[[str], None]"]):
    """Where a put's blobs' bytes are, for :meth:`artfs.Store.commit`: a digest staged by this
    put maps to a function placing that copy under the blob's key; another to the local file
    that has those bytes. The commit asks only about the blobs the store lacks, so nothing is
    built for the others: a staged copy is found by its name, and the index of the files not
    staged is made at the first question about one. ``parts``: (digests, their local paths);
    ``extra``: more sources, asked first (the blobs of entries copied from other artifacts)."""

    def __init__(self, parts: Sequence[tuple[Digests, Sequence[str]]], staging: "Staging | None",
                 project: str) -> None:
        self._parts, self._staging, self._project = parts, staging, project
        self.extra: Mapping[str, "str | Callable[[str], None]"] = {}
        self._index: dict[bytes, tuple[int, int]] | None = None
        self._lock = threading.Lock()

    def _local(self, raw: bytes) -> str | None:
        with self._lock:
            if self._index is None:
                index: dict[bytes, tuple[int, int]] = {}
                for p, (got, _) in enumerate(self._parts):
                    for i, f in enumerate(got.flags):
                        if not f & STAGED:
                            index.setdefault(bytes(got.raw[16 * i:16 * i + 16]), (p, i))
                self._index = index
        where = self._index.get(raw)
        return None if where is None else self._parts[where[0]][1][where[1]]

    def __getitem__(self, digest: str) -> "str | Callable[[str], None]":
        if digest in self.extra:
            return self.extra[digest]
        try:
            raw = bytes.fromhex(digest.partition(":")[2])
        except ValueError:
            raise KeyError(digest) from None
        staging = self._staging
        if staging is not None and len(raw) == 16 and staging.has(key_of(self._project)(raw)):
            return staging.place
        local = self._local(raw)
        if local is None:
            raise KeyError(digest)
        return local

    def __iter__(self) -> Iterator[str]:
        yield from self.extra
        seen: set[bytes] = {bytes.fromhex(d.partition(":")[2]) for d in self.extra}
        for got, _ in self._parts:
            for i in range(len(got)):
                raw = bytes(got.raw[16 * i:16 * i + 16])
                if raw not in seen:
                    seen.add(raw)
                    yield hex_digest(raw)

    def __len__(self) -> int:
        return sum(1 for _ in self)
