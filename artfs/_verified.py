"""Verified cache blobs: the record of what was verified, and the one verified open.

Every reader that serves a cache blob without hashing it (the mount's open of a file, the lazy
reader, ``artfs://``) asks :func:`open_verified` (through :meth:`artfs._cache.Cache.open_verified`)
and nothing else; this module is the one place that says what "complete and verified" means.

The record (``user.artfs.verified``, :func:`stamp`): the digest, inode, size and mtime_ns of the
blob when its bytes were hashed, written before it is renamed into ``blobs/``. A blob whose
record matches its ``fstat`` holds the bytes that were verified (a write changes the mtime); one
whose record is stale or missing is hashed again before it is served (:func:`check_blob`:
re-recorded if it still matches, else dropped with one warning). What this cannot catch (a change
that restores the mtime, silent disk damage) is in :mod:`artfs._cache`'s docstring.

Invariants of :func:`open_verified`
* The descriptor it returns holds a shared ``flock`` (eviction takes an exclusive one and skips
  blobs it cannot lock), was checked *after* locking to be the file still at the blob's path
  (eviction may unlink it between the open and the lock), has the manifest's size, and its record
  matched (or it was hashed just now).
* Without ``rehash`` it never waits (``LOCK_NB``) and reads metadata only: safe on an event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import time

import xxhash

from . import _xattrs
from ._digest import read_buffer
from ._errors import ArtfsError

log = logging.getLogger("artfs.cache")

STAMP_XATTR = _xattrs.full(_xattrs.VERIFIED)  # on cache blobs, not in the mount
#: an open of a blob to serve it renews its atime (its recency for eviction) at most this often
#: (seconds): a ``utime`` per open dirties the inode, which the file system then writes back, for
#: every file of an epoch
TOUCH_EVERY = 60.0

_STAMP = struct.Struct("<QQq")


def _stamp_value(digest: str, st: os.stat_result) -> bytes:
    """The verification record: the digest's 16 bytes, then inode, size and mtime_ns (64-bit,
    little-endian): 40 bytes.

    Short enough to live inside the inode on ext4 (with 256-byte inodes, a value of up to 56 bytes
    fits beside this name). The earlier text form (``<digest> <inode> <size> <mtime_ns>``, 70-80
    bytes) did not: each blob got a 4 KiB attribute block of its own, allocated (and written) at
    insert, freed at eviction, and read from the disk, apart from the inode, by every open of a
    blob whose metadata is not in memory. A record in the old form no longer matches: that blob
    is hashed once more when it is next served unhashed, and recorded anew.
    """
    return bytes.fromhex(digest.partition(":")[2]) + _STAMP.pack(st.st_ino, st.st_size, st.st_mtime_ns)


def stamp(fd: int, digest: str) -> bool:
    """Record on the open file ``fd`` that its bytes, as they are now, match ``digest``.

    Call it right after hashing, before the file is renamed into ``blobs/``. Returns False if the
    record cannot be written (a file system without user xattrs, a read-only file of another
    user): that blob is then hashed again whenever it is opened to be served unhashed.
    """
    try:
        os.setxattr(fd, STAMP_XATTR, _stamp_value(digest, os.fstat(fd)))
        return True
    except PermissionError:  # user xattrs need write permission: a 0444 blob of ours
        try:
            mode = os.fstat(fd).st_mode & 0o7777
            os.fchmod(fd, mode | 0o200)
            try:
                os.setxattr(fd, STAMP_XATTR, _stamp_value(digest, os.fstat(fd)))
            finally:
                os.fchmod(fd, mode)
            return True
        except OSError:
            return False
    except OSError:
        return False


def stamp_ok(fd: int, digest: str, st: os.stat_result | None = None) -> bool:
    """Whether ``fd`` is unchanged since it was verified against ``digest`` (no hashing).

    ``st``: an ``fstat`` of ``fd`` the caller just took (saves one; the mount's warm open).
    """
    try:
        rec = os.getxattr(fd, STAMP_XATTR)
    except OSError:
        return False
    return rec == _stamp_value(digest, os.fstat(fd) if st is None else st)


def hash_fd(fd: int) -> tuple[str, int]:
    """The digest of the whole open file ``fd`` and its length (one reused buffer)."""
    h = xxhash.xxh3_128()
    buf = read_buffer(fd)
    view = memoryview(buf)
    off = 0
    while True:
        n = os.preadv(fd, [view], off)
        if not n:
            break
        h.update(view[:n])
        off += n
    return f"xxh128:{h.hexdigest()}", off


def check_blob(fd: int, path: str, digest: str, size: int) -> bool:
    """Whether the blob open as ``fd`` (at ``path`` in ``blobs/``) may be served without hashing.

    True when its verification record matches its ``fstat`` (cheap) or, failing that, when hashing
    it again gives ``digest`` and ``size`` (the record is renewed: a blob whose mtime was merely
    touched, or one cached before records existed, is hashed once). Otherwise the blob is unlinked
    (if ``path`` still names it), one warning is logged, and False says "fetch it again".
    """
    if os.fstat(fd).st_size == size and stamp_ok(fd, digest):
        return True
    before = os.fstat(fd)
    got, n = hash_fd(fd)
    if got == digest and n == size:
        after = os.fstat(fd)
        if (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size):
            stamp(fd, digest)  # else written to while hashed: no record, hashed again next time
        return True
    log.warning("cache blob %s changed on disk after it was verified (%d bytes, digest %s); "
                "dropped it, it will be fetched again", digest, n, got)
    try:
        if os.path.samestat(os.stat(path), os.fstat(fd)):
            os.unlink(path)
    except FileNotFoundError:
        pass
    return False


def touch_fd(fd: int) -> None:
    """Mark an open cache file as used (its atime; the mtime belongs to the verification record)."""
    with contextlib.suppress(OSError):
        os.utime(fd, ns=(time.time_ns(), os.fstat(fd).st_mtime_ns))


def _same(path: str, fd: int) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except FileNotFoundError:
        return False


def _unlink_if_same(path: str, fd: int) -> None:
    """Unlink ``path`` if it still names the file open as ``fd`` (not a successor)."""
    if _same(path, fd):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _open_locked(path: str, flags: int, mode: int = 0o644) -> int:
    """Open ``path`` and take a shared flock on it; -1 if it does not exist (without O_CREAT).

    Eviction may unlink a file between our open and our lock; then the path names another inode
    (or none) and we try again, so the returned fd is locked *and* still the file at ``path``.
    """
    for _ in range(10):
        try:
            fd = os.open(path, flags | os.O_CLOEXEC, mode)
        except FileNotFoundError:
            if flags & os.O_CREAT:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                continue
            return -1
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if _same(path, fd):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise ArtfsError(f"{path}: keeps being replaced while opening it")


def _renew(fd: int, st: os.stat_result) -> None:
    """Recency for LRU eviction, at most every :data:`TOUCH_EVERY` s (the mtime is the record's)."""
    if time.time() - st.st_atime > TOUCH_EVERY:
        with contextlib.suppress(OSError):
            os.utime(fd, ns=(time.time_ns(), st.st_mtime_ns))


def open_verified(path: str, digest: str, size: int, *, rehash: bool = False) -> int:
    """A read-only descriptor of the complete blob at ``path`` if it may be served as it is, else -1.

    The descriptor holds a shared ``flock``, is the file still at ``path`` and is ``size`` bytes
    long (the module's invariants). Without ``rehash`` (a caller on an event loop) it never
    blocks (a blob locked for eviction answers -1) and reads metadata only: one ``fstat`` serves
    the size, the record and the atime; a stale or missing record answers -1 (the caller asks
    again with ``rehash`` where it may wait). With ``rehash`` it waits for the lock, hashes a blob
    whose record is stale again (:func:`check_blob`: kept and re-recorded, or dropped with one
    warning) and drops a blob of the wrong size: -1 then means "fetch it". Either way the atime
    (recency) is renewed at most every :data:`TOUCH_EVERY` seconds.
    """
    if rehash:
        fd = _open_locked(path, os.O_RDONLY)
        if fd < 0:
            return -1
        try:
            st = os.fstat(fd)
            if st.st_size != size:
                log.warning("cached blob %s has %d bytes, not %d; dropping it", digest, st.st_size, size)
                _unlink_if_same(path, fd)
            elif check_blob(fd, path, digest, size):
                _renew(fd, st)
                fd, ok = -1, fd
                return ok
        finally:
            if fd >= 0:
                os.close(fd)
        return -1
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        st = os.fstat(fd)
        if st.st_size == size and os.path.samestat(st, os.stat(path)) and stamp_ok(fd, digest, st):
            _renew(fd, st)
            fd, ok = -1, fd
            return ok
    except OSError:
        pass
    finally:
        if fd >= 0:
            os.close(fd)
    return -1
