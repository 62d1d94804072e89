"""The local, checksum-keyed cache shared by every artfs process of a user.

Layout under ``$ARTFS_CACHE_DIR`` (default ``$XDG_CACHE_HOME/artfs``)::

    blobs/xxh128/<2>/<32>        complete, verified contents (mode 0444)
    partial/<32>                 a sparse file being filled chunk by chunk (the mount's lazy reads)
    partial/<32>.map             its chunk map (one byte per chunk, 1 = present)
    manifests/<store>/<p>/<a>/<N>.json   manifests already read (immutable, so valid forever)
    tmp/                         files being written; renamed into place when complete

Invariants
* A file under ``blobs/`` is complete and was verified against its digest before it was renamed
  there. Writers use a unique temp name in ``tmp/`` and ``os.replace``, so concurrent processes
  never see half a file, and two processes fetching the same blob both end with the same bytes.
* A blob that later fails verification (disk damage, a user writing through a copy) is removed
  and fetched again by whoever noticed; it is never served.
* Every user of a blob holds a shared ``flock`` on it while it is open; eviction takes an exclusive
  non-blocking lock and skips blobs it cannot lock, so an open blob is never evicted.
* Recency is the file's mtime, touched on every use; eviction removes least recent first.
* A crash leaves at most stray files in ``tmp/``, removed by the next cleanup.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

import xxhash

from ._digest import cache_rel, digest_file, read_buffer
from ._errors import ArtfsError, CorruptData


def default_cache_dir() -> str:
    env = os.environ.get("ARTFS_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "artfs")


_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(s: str | int) -> int:
    """``1GB``, ``500M``, ``20G``, ``1.5GiB``, ``1024`` -> bytes (K/M/G/T are powers of 1024)."""
    if isinstance(s, int):
        return s
    m = _SIZE_RE.match(s)
    if not m:
        raise ArtfsError(f"invalid size {s!r}: expected e.g. 500M, 1GB, 20G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def default_cache_size(root: str) -> int:
    """10% of the disk holding the cache."""
    d = root
    while not os.path.exists(d):
        d = os.path.dirname(d) or "/"
    st = os.statvfs(d)
    return st.f_blocks * st.f_frsize // 10


def _copy_hashing(fi: "io.FileIO", dst: str, digest: str, mode: int | None) -> bool:
    """Copy the open file ``fi`` to a new ``dst`` while hashing it; whether it matches ``digest``."""
    h = xxhash.xxh3_128()
    buf = read_buffer(fi.fileno())
    view = memoryview(buf)
    with open(dst, "wb") as fo:
        if mode is not None:
            os.fchmod(fo.fileno(), mode)
        while True:
            n = fi.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            fo.write(view[:n])
    return f"xxh128:{h.hexdigest()}" == digest


@dataclass
class CacheInfo:
    path: str
    blobs: int
    bytes: int
    partial: int
    partial_bytes: int
    limit: int


class Cache:
    def __init__(self, root: str | None = None, *, max_size: int | str | None = None) -> None:
        self.root = os.path.abspath(root or default_cache_dir())
        from ._access import make_private_dir

        make_private_dir(self.root)  # cached bytes of private projects: 0700 for other local users
        for d in ("blobs", "partial", "manifests", "tmp"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        self.max_size = parse_size(max_size) if max_size is not None else default_cache_size(self.root)

    # -- paths ---------------------------------------------------------------------------------
    def path(self, digest: str) -> str:
        return os.path.join(self.root, "blobs", *cache_rel(digest).split("/"))

    def tmp_path(self) -> str:
        return os.path.join(self.root, "tmp", uuid.uuid4().hex)

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    # -- filling -------------------------------------------------------------------------------
    def insert_file(self, digest: str, tmp: str, *, verified: bool = False) -> str:
        """Move a finished temp file into place after verifying it; returns the blob path."""
        if not verified:
            got, _ = digest_file(tmp)
            if got != digest:
                os.unlink(tmp)
                raise CorruptData(f"fetched bytes do not match {digest} (got {got})")
        dst = self.path(digest)
        os.chmod(tmp, 0o444)
        try:
            os.replace(tmp, dst)
        except FileNotFoundError:  # the first blob under this prefix
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(tmp, dst)
        return dst

    def ensure(self, digest: str, fetch: Callable[[str], object]) -> str:
        """The path of a complete blob, calling ``fetch(tmp_path)`` to fill a temp file if missing.

        The fetched file is verified before it becomes visible.
        """
        p = self.path(digest)
        if os.path.exists(p):
            self.touch(p)
            return p
        tmp = self.tmp_path()
        try:
            fetch(tmp)
            return self.insert_file(digest, tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def verify(self, digest: str) -> bool:
        """Hash a cached blob; drop it (and return False) if it does not match."""
        p = self.path(digest)
        try:
            got, _ = digest_file(p)
        except FileNotFoundError:
            return False
        if got != digest:
            self.drop(digest)
            return False
        return True

    def drop(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))

    @staticmethod
    def touch(p: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(p)

    @contextlib.contextmanager
    def pinned(self, digest: str) -> Iterator[str]:
        """Hold a shared lock on a cached blob so cleanup leaves it alone while it is used."""
        p = self.path(digest)
        fd = os.open(p, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield p
        finally:
            os.close(fd)

    def copy_verified(self, digest: str, dst: str, *, mode: int | None = None) -> None:
        """Copy a cached blob to ``dst`` while hashing it; a mismatch drops the blob and raises.

        A reflink would skip the read, but then a corrupted cache file could be served; hashing
        while copying costs one read of the blob, which is already in the page cache usually.
        ``mode``: the permission bits of ``dst``. FileNotFoundError if the blob is not cached.
        """
        src = self.path(digest)
        with open(src, "rb", buffering=0) as fi:
            fcntl.flock(fi.fileno(), fcntl.LOCK_SH)
            ok = _copy_hashing(fi, dst, digest, mode)
        if not ok:
            os.unlink(dst)
            self.drop(digest)
            raise CorruptData(f"cached blob {digest} was corrupted; dropped it")
        self.touch(src)

    def fetch_copy(self, digest: str, fetch: Callable[[str], object], dst: str, *, mode: int | None = None) -> bool:
        """Create ``dst`` holding the blob's verified bytes, through the cache.

        From the cache when it holds the blob (a corrupted copy is dropped and fetched again).
        Otherwise ``fetch(tmp)`` fills a temp file, which is hashed while it is copied to ``dst``
        and then becomes the cache's blob: one read of the fetched bytes, not one to verify them
        and another to copy them, and no window in which a cleanup could evict the blob between
        the two. Returns whether it fetched (the cache grew). CorruptData if the fetched bytes
        do not match; ``dst`` is not left behind then.
        """
        try:
            self.copy_verified(digest, dst, mode=mode)
            return False
        except (CorruptData, FileNotFoundError):
            pass  # not cached, evicted meanwhile, or dropped as corrupt: fetch it
        tmp = self.tmp_path()
        try:
            fetch(tmp)
            with open(tmp, "rb", buffering=0) as fi:
                ok = _copy_hashing(fi, dst, digest, mode)
            if not ok:
                os.unlink(dst)
                raise CorruptData(f"fetched bytes do not match {digest}")
            self.insert_file(digest, tmp, verified=True)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # -- manifests -----------------------------------------------------------------------------
    def manifest_path(self, store_id: str, project: str, artifact: str, n: int) -> str:
        return os.path.join(self.root, "manifests", store_id, project, artifact, f"{n}.json")

    def write_small(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = self.tmp_path()
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    # -- size bound ----------------------------------------------------------------------------
    def _blobs(self) -> list[tuple[float, int, str]]:
        out = []
        for sub in ("blobs", "partial"):
            for dirpath, _, files in os.walk(os.path.join(self.root, sub)):
                for fn in files:
                    p = os.path.join(dirpath, fn)
                    try:
                        st = os.stat(p)
                    except FileNotFoundError:
                        continue
                    out.append((st.st_mtime, st.st_blocks * 512 if sub == "partial" else st.st_size, p))
        return out

    def info(self) -> CacheInfo:
        blobs = partial = nb = npb = 0
        for _, size, p in self._blobs():
            if os.sep + "partial" + os.sep in p:
                partial += 1
                npb += size
            else:
                blobs += 1
                nb += size
        return CacheInfo(self.root, blobs, nb, partial, npb, self.max_size)

    def cleanup(self, target: int | str | None = None, *, keep: Callable[[str], bool] | None = None) -> tuple[int, int]:
        """Evict least recently used files until the cache holds at most ``target`` bytes.

        Returns (files removed, bytes freed). Blobs locked by a user (see :meth:`pinned`) and
        those for which ``keep(path)`` is true are skipped. Stray temp files older than an hour go too.
        """
        limit = parse_size(target) if target is not None else self.max_size
        removed = freed = 0
        now = time.time()
        tmpdir = os.path.join(self.root, "tmp")
        for e in os.scandir(tmpdir):
            with contextlib.suppress(OSError):
                if e.stat().st_mtime < now - 3600:
                    os.unlink(e.path)
        files = self._blobs()
        total = sum(s for _, s, _ in files)
        for _, size, p in sorted(files):
            if total <= limit:
                break
            if keep is not None and keep(p):
                continue
            if p.endswith(".map"):
                continue  # removed together with its partial file
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                total -= size
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        continue
                    raise
                try:
                    if os.stat(p).st_ino != os.fstat(fd).st_ino:
                        continue  # another cleanup removed it and a new copy took its place
                    os.unlink(p)
                except FileNotFoundError:  # another cleanup removed it first
                    total -= size
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p + ".map")
            finally:
                os.close(fd)
            removed += 1
            freed += size
            total -= size
        return removed, freed

    def clear_tmp(self) -> None:
        shutil.rmtree(os.path.join(self.root, "tmp"), ignore_errors=True)
        os.makedirs(os.path.join(self.root, "tmp"), exist_ok=True)
