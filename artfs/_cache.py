"""The local, checksum-keyed cache shared by every artfs process of a user.

Layout under ``$ARTFS_CACHE_DIR`` (default ``$XDG_CACHE_HOME/artfs``)::

    blobs/xxh128/<2>/<32>        complete, verified contents (mode 0444)
    partial/<32>                 a sparse file being filled chunk by chunk (the mount's lazy reads)
    partial/<32>.map             its chunk map (one byte per chunk, 1 = present)
    manifests/<store>/<p>/<a>/<N>.json   manifests already read (immutable, so valid forever); format 1
                                         only, whole (drafts read their base's bytes from here)
    manifests/<store>/<p>/<a>/<N>.head.json   the head of a sharded version (format 2)
    manifests/<store>/.trees/<p>/xxh128/<2>/<32>   pieces of sharded manifests read (content-addressed,
                                         checked against their digest at every read from here)
    tmp/                         files being written; renamed into place when complete
    hashes.db                    the record of local files hashed (:mod:`artfs._hashes`): not blobs

Invariants
* A file under ``blobs/`` is complete and was verified against its digest before it was renamed
  there. Writers use a unique temp name in ``tmp/`` and ``os.replace``, so concurrent processes
  never see half a file, and two processes fetching the same blob both end with the same bytes.
* A blob that later fails verification (disk damage, a user writing through a copy) is removed
  and fetched again by whoever noticed; it is never served.
* Whether a blob may be served without hashing it is answered in one place,
  :meth:`Cache.open_verified` (:mod:`artfs._verified`, which holds the record's format too).
* **What was verified is recorded on the blob**: the extended attribute ``user.artfs.verified``
  holds the digest, inode, size and mtime_ns as they were when its bytes were hashed (written
  before the blob is renamed into ``blobs/``), in 40 bytes (:func:`_stamp_value`). Whoever opens a blob to serve it without hashing it
  (the mount) first compares that record with ``fstat``: equal means the bytes are the ones that
  were verified (a write changes the mtime); different or missing means it is hashed again (then
  re-recorded) or, if it no longer matches its digest, dropped with one warning
  (``cache blob ... changed on disk after it was verified``) and fetched again. Copies out of the
  cache (``artfs get``, ``Artifact.download``, drafts) hash every byte they copy anyway, and check
  the size too. Not caught by the record: a change that also restores the mtime (``touch -d``) or
  silent disk damage under an unchanged inode; those are caught by the next copy out of the cache.
* Every user of a blob holds a shared ``flock`` on it while it is open; eviction takes an exclusive
  non-blocking lock and skips blobs it cannot lock, so an open blob is never evicted.
* Recency is the later of the file's atime and mtime. Use sets the atime only (``utime`` keeping the
  mtime, which belongs to the verification record); eviction removes least recent first.
* A crash leaves at most stray files in ``tmp/``, removed by the next cleanup.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from ._digest import cache_rel, digest_bytes, digest_file
from ._errors import ArtfsError, CorruptData, SizeMismatch
from ._hashes import HashRecord
from ._place import copy_hashing
from ._verified import STAMP_XATTR, check_blob, hash_fd, open_verified, stamp, stamp_ok, touch_fd

__all__ = ["STAMP_XATTR", "Cache", "CacheInfo", "check_blob", "hash_fd", "stamp", "stamp_ok", "touch_fd"]

log = logging.getLogger("artfs.cache")



# -- the local user's own directories ------------------------------------------------------------------
def make_private_dir(path: str) -> None:
    """Create ``path`` (and its parents) with mode 0700 for the directory itself, if it is missing.

    The cache and the staging directory hold bytes of private projects: another local user must
    not read them. An existing directory keeps the modes its owner gave it.
    """
    if os.path.isdir(path):
        return
    try:
        os.makedirs(path, mode=0o700)
    except FileExistsError:
        return
    os.chmod(path, 0o700)  # mkdir's mode passes through the umask


def default_cache_dir() -> str:
    env = os.environ.get("ARTFS_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "artfs")


_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(s: str | int) -> int:
    """``1GB``, ``500M``, ``20G``, ``1.5GiB``, ``1024`` -> bytes (K/M/G/T are powers of 1024).

    Raises ``ArtfsError`` for anything else (the CLI reports it as bad usage).
    """
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


def _copy_hashing(fi: "io.FileIO", dst: str, digest: str, mode: int | None, size: int | None = None) -> bool:
    """Copy the open file ``fi`` to a new ``dst`` (a reflink where it can: :mod:`artfs._place`)
    while hashing it; whether it matches ``digest``.

    SizeMismatch if it matches ``digest`` but is not ``size`` bytes long (``dst`` is left for the
    caller to remove).
    """
    return copy_hashing(fi.fileno(), dst, digest, mode, size)


@dataclass
class CacheInfo:
    path: str
    blobs: int
    bytes: int
    partial: int
    partial_bytes: int
    limit: int


class Cache:
    """The local cache of verified blobs and manifests, shared by every artfs process of the user.

    ``Cache(root)`` (default ``$ARTFS_CACHE_DIR``, else ``~/.cache/artfs``) creates its directories;
    ``max_size`` bounds it (``cleanup`` evicts least recently used blobs). ``OSError`` when the
    directory cannot be created.
    """

    def __init__(self, root: str | None = None, *, max_size: int | str | None = None) -> None:
        self.root = os.path.abspath(root or default_cache_dir())
        make_private_dir(self.root)  # cached bytes of private projects: 0700 for other local users
        for d in ("blobs", "partial", "manifests", "tmp"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        self.max_size = parse_size(max_size) if max_size is not None else default_cache_size(self.root)

    # -- paths ---------------------------------------------------------------------------------
    def path(self, digest: str) -> str:
        """Where the complete, verified blob ``digest`` lives (it may not be there)."""
        return os.path.join(self.root, "blobs", *cache_rel(digest).split("/"))

    def tmp_path(self) -> str:
        """A fresh name under the cache's ``tmp/`` (same file system, so it can be renamed into place)."""
        return os.path.join(self.root, "tmp", os.urandom(16).hex())  # as unique as a uuid4, cheaper

    def hash_record(self) -> HashRecord:
        """The record of what was hashed on this machine (``hashes.db``), for one put or download."""
        return HashRecord(os.path.join(self.root, "hashes.db"))

    def open_verified(self, digest: str, size: int, *, rehash: bool = False) -> int:
        """A read-only descriptor of the complete blob ``digest`` if it may be served as it is, else
        -1: the one answer to "is it complete and verified?" (:func:`artfs._verified.open_verified`)."""
        return open_verified(self.path(digest), digest, size, rehash=rehash)

    def has(self, digest: str) -> bool:
        """Whether the blob is in the cache."""
        return os.path.exists(self.path(digest))

    # -- filling -------------------------------------------------------------------------------
    def insert_file(self, digest: str, tmp: str, *, verified: bool = False, size: int | None = None) -> str:
        """Move a finished temp file into place after verifying it; returns the blob path.

        The verification record (see the module docstring) is written before the rename.
        """
        if not verified:
            got, n = digest_file(tmp)
            if got != digest:
                os.unlink(tmp)
                raise CorruptData(f"fetched bytes do not match {digest} (got {got})")
            if size is not None and n != size:
                os.unlink(tmp)
                raise SizeMismatch(f"the manifest says {size} bytes, but blob {digest} has {n}")
        dst = self.path(digest)
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            stamp(fd, digest)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o444)
        try:
            os.replace(tmp, dst)
        except FileNotFoundError:  # the first blob under this prefix
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(tmp, dst)
        return dst

    def insert_bytes(self, digest: str, data: bytes | memoryview) -> str:
        """Put a whole blob fetched into memory in place; returns the blob path.

        For small blobs (the mount fetches each in one GET): ``data`` is hashed where it is, then
        written once to a temp file, which gets its verification record and mode 0444 through the
        same descriptor and is renamed into place. The invariants of :meth:`insert_file` hold
        (verified before it is visible, recorded before the rename) without writing, re-opening
        and reading back a temp file. :class:`CorruptData` if ``data`` does not match
        ``digest``; nothing is left behind then.
        """
        got = digest_bytes(data)
        if got != digest:
            raise CorruptData(f"fetched bytes do not match {digest} (got {got})")
        tmp = self.tmp_path()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                stamp(fd, digest)
                os.fchmod(fd, 0o444)  # the mtime (in the record) stays
            finally:
                os.close(fd)
            dst = self.path(digest)
            try:
                os.replace(tmp, dst)
            except FileNotFoundError:  # the first blob under this prefix
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.replace(tmp, dst)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return dst

    def ensure(self, digest: str, fetch: Callable[[str], object]) -> str:
        """The path of a complete blob, calling ``fetch(tmp_path)`` to fill a temp file if missing.

        The fetched file is verified before it becomes visible.
        """
        p = self.path(digest)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            try:
                if check_blob(fd, p, digest, os.fstat(fd).st_size):
                    touch_fd(fd)
                    return p
            finally:
                os.close(fd)
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
            log.warning("cache blob %s changed on disk after it was verified (digest now %s); dropped it",
                        digest, got)
            return False
        with contextlib.suppress(OSError):
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            try:
                stamp(fd, digest)  # hashed just now: renew the record (a blob cached before records)
            finally:
                os.close(fd)
        return True

    def drop(self, digest: str) -> None:
        """Remove a blob from the cache (nothing if it is not there)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))

    @staticmethod
    def touch(p: str) -> None:
        """Mark a cache file as used now: its atime (least recently used files are evicted first;
        the mtime belongs to the verification record)."""
        with contextlib.suppress(OSError):
            os.utime(p, ns=(time.time_ns(), os.stat(p).st_mtime_ns))

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

    def copy_verified(self, digest: str, dst: str, *, mode: int | None = None, size: int | None = None) -> None:
        """Copy a cached blob to ``dst`` while hashing it; a mismatch drops the blob and raises.

        ``size``: the size the manifest gives the file; a blob of another size raises
        :class:`SizeMismatch` (the blob is kept: it matches its digest, the manifest is wrong).
        A blob that matched gets its verification record renewed if it was stale.

        Placed by reflink where the file system has them (never a hard link: a write to ``dst``
        must not reach the cache), and hashed either way: a corrupted cache file is never served;
        hashing costs one read of the blob, which is already in the page cache usually.
        ``mode``: the permission bits of ``dst``. FileNotFoundError if the blob is not cached.
        """
        src = self.path(digest)
        with open(src, "rb", buffering=0) as fi:
            fcntl.flock(fi.fileno(), fcntl.LOCK_SH)
            try:
                ok = _copy_hashing(fi, dst, digest, mode, size)
            except SizeMismatch:
                os.unlink(dst)
                raise
            if ok:
                if not stamp_ok(fi.fileno(), digest):
                    stamp(fi.fileno(), digest)
                touch_fd(fi.fileno())
        if not ok:
            os.unlink(dst)
            self.drop(digest)
            log.warning("cache blob %s changed on disk after it was verified; dropped it, "
                        "it will be fetched again", digest)
            raise CorruptData(f"cached blob {digest} was corrupted; dropped it")

    def fetch_copy(self, digest: str, fetch: Callable[[str], object], dst: str, *, mode: int | None = None,
                   size: int | None = None) -> bool:
        """Create ``dst`` holding the blob's verified bytes, through the cache.

        From the cache when it holds the blob (a corrupted copy is dropped and fetched again).
        Otherwise ``fetch(tmp)`` fills a temp file, which is hashed while it is copied to ``dst``
        and then becomes the cache's blob: one read of the fetched bytes, not one to verify them
        and another to copy them, and no window in which a cleanup could evict the blob between
        the two. Returns whether it fetched (the cache grew). CorruptData if the fetched bytes
        do not match; ``dst`` is not left behind then. ``size``: as for :meth:`copy_verified`
        (SizeMismatch when the blob, cached or fetched, has another size).
        """
        try:
            self.copy_verified(digest, dst, mode=mode, size=size)
            return False
        except SizeMismatch:
            raise
        except (CorruptData, FileNotFoundError):
            pass  # not cached, evicted meanwhile, or dropped as corrupt: fetch it
        tmp = self.tmp_path()
        try:
            fetch(tmp)
            with open(tmp, "rb", buffering=0) as fi:
                try:
                    ok = _copy_hashing(fi, dst, digest, mode, size)
                except SizeMismatch:
                    os.unlink(dst)
                    self.insert_file(digest, tmp, verified=True)  # the blob is right, keep it
                    raise
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
        """Where the manifest of vN of a store is kept (manifests never change, so it stays valid)."""
        return os.path.join(self.root, "manifests", store_id, project, artifact, f"{n}.json")

    def head_path(self, store_id: str, project: str, artifact: str, n: int) -> str:
        """Where the head of a sharded vN is kept: never at :meth:`manifest_path`, whose bytes
        readers take as a whole format-1 manifest."""
        return os.path.join(self.root, "manifests", store_id, project, artifact, f"{n}.head.json")

    def tree_path(self, store_id: str, project: str, digest: str) -> str:
        """Where a piece of a sharded manifest is kept (named by its digest: never stale). Under
        ``.trees``, which is no project name, so a listing of the cached projects and artifacts
        (a mount's, with the store down) never takes it for one."""
        hexpart = digest.split(":", 1)[1]
        return os.path.join(self.root, "manifests", store_id, ".trees", project, "xxh128", hexpart[:2], hexpart)

    def write_small(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically (through ``tmp/`` and a rename); ``OSError`` on failure."""
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
                    out.append((max(st.st_atime, st.st_mtime), st.st_blocks * 512 if sub == "partial" else st.st_size, p))
        return out

    def info(self) -> CacheInfo:
        """Where the cache is, how many blobs and bytes it holds (complete and partial), and its bound."""
        blobs = partial = nb = npb = 0
        for _, size, p in self._blobs():
            if os.sep + "partial" + os.sep in p:
                partial += 1
                npb += size
            else:
                blobs += 1
                nb += size
        return CacheInfo(self.root, blobs, nb, partial, npb, self.max_size)

    def cleanup(self, target: int | str | None = None, *, keep: Callable[[str], bool] | None = None,
                remove_temp: bool = False) -> tuple[int, int]:
        """Evict least recently used files until the cache holds at most ``target`` bytes.

        Returns (files removed, bytes freed). Blobs locked by a user (see :meth:`pinned`) and
        those for which ``keep(path)`` is true are skipped. Stray temp files older than an hour go
        too; with ``remove_temp`` (W&B's ``--remove-temp``) every temp file not written to for a
        minute (a younger one may be a download in progress).
        """
        limit = parse_size(target) if target is not None else self.max_size
        removed = freed = 0
        now = time.time()
        tmpdir = os.path.join(self.root, "tmp")
        for e in os.scandir(tmpdir):
            with contextlib.suppress(OSError):
                if e.stat().st_mtime < now - (60 if remove_temp else 3600):
                    st = e.stat()
                    os.unlink(e.path)
                    if remove_temp:
                        removed, freed = removed + 1, freed + st.st_size
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
        """Remove files left in ``tmp/`` (by crashed writers); only safe when no artfs process runs."""
        shutil.rmtree(os.path.join(self.root, "tmp"), ignore_errors=True)
        os.makedirs(os.path.join(self.root, "tmp"), exist_ok=True)
