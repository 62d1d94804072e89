"""The partial-file entry of a blob being fetched chunk by chunk (used by :mod:`artfs._lazy`).

An :class:`_Entry` is the shared state of one blob open in this process: its complete cache blob,
or its partial file and chunk map (or, for a blob too large to keep, an unnamed private pair, see
:class:`_Stream`). This module holds the on-disk format and the opening, map-loading and
low-level file helpers; :mod:`artfs._lazy` decides what to fetch, when to verify and when to
publish.

Files (in the shared cache, see :mod:`artfs._cache`)
-----------------------------------------------------
``partial/<32 hex>``
    A sparse file: the blob's bytes (chunk ``i`` covers ``[i*cs, (i+1)*cs)``), followed by a
    16-byte random nonce that ties it to its map (cut off before the file becomes a blob).
``partial/<32 hex>.map``
    A 40-byte header (magic ``ARTFSMP1``, blob size, chunk size ``cs``, the nonce) followed by one
    byte per chunk: 1 = the chunk's bytes are in the partial file. A map whose header does not
    match its partial file (another size, another nonce: e.g. a map that outlived its partial
    file, whose inode number may have been reused) is reset to all zeros with a fresh nonce.
    Chunk size is per entry: whoever creates the map picks it, later openers adopt it.

Creating, resetting, verifying-and-renaming and dropping an entry all happen under an exclusive
``flock`` on the map; an opener takes it too and checks that both paths still name the files it
opened, so it never pairs a map with the wrong partial file.

Invariants
----------
* **A map byte is set only after its chunk's bytes were written** (``pwrite`` data, then
  ``pwrite`` the map byte; no fsync). So a process crash leaves at worst chunks that are present
  but not marked: they are fetched again later. (A power loss may reorder writeback; the chunk
  then reads as zeros, and the digest check at completion catches it: the entry is dropped and
  fetched again.)
* **An fd is only used after checking, once locked, that the path still names the same inode**
  (:func:`_open_locked`): eviction may unlink a file between an open and its lock.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import fcntl
import logging
import os
import struct
import threading
from typing import TYPE_CHECKING, Callable

from ._digest import cache_rel, finish, hasher
from ._errors import ArtfsError
from ._layout import blob_key
from ._verified import _open_locked, _same, _unlink_if_same

if TYPE_CHECKING:
    from ._cache import Cache

__all__ = ["_Entry", "_Stream", "_open_locked", "_same", "_unlink_if_same"]

log = logging.getLogger("artfs.lazy")

_MAGIC = b"ARTFSMP1"
_HDR = struct.Struct("<8sQII16s")  # magic, blob size, chunk size, reserved, nonce
_NONCE = 16  # the partial file holds the nonce of its map in 16 bytes after the blob's end


def _pread_full(fd: int, n: int, off: int) -> bytes:
    b = os.pread(fd, n, off)
    if len(b) == n:
        return b
    parts = [b]
    got = len(b)
    while got < n:
        b = os.pread(fd, n - got, off + got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _pwrite_full(fd: int, data: bytes | memoryview, off: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, off)
        view = view[n:]
        off += n


_libc: "ctypes.CDLL | None" = None


def _punch(fd: int, off: int, n: int) -> bool:
    """Free ``[off, off+n)`` of a file (``fallocate(PUNCH_HOLE|KEEP_SIZE)``; reads give zeros)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        return int(_libc.fallocate(ctypes.c_int(fd), ctypes.c_int(0x03), ctypes.c_int64(off), ctypes.c_int64(n))) == 0
    except (OSError, AttributeError):
        return False


def _open_tmpfile(directory: str) -> int:
    """An unnamed file in ``directory`` (``O_TMPFILE``; a named file unlinked at once as a fallback)."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        p = os.path.join(directory, f"stream-{os.getpid()}-{os.urandom(8).hex()}")
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.unlink(p)
        return fd



class _Stream:
    """The state of a streamed entry: a blob larger than the cache's bound allows to keep.

    Such a blob is read through a private partial file (:meth:`_Entry.open_private`) holding at
    most ``window`` bytes of fetched chunks: once more are present, chunks are punched out of the
    file (and marked absent), never while a read is copying them (``pins``). It never becomes a complete cache blob, and it is freed when the last handle
    closes. Chunks are hashed in order as they arrive (``hash_off``, before they can be evicted);
    when a pass reaches the end, a digest mismatch fails that fetch with CorruptData and resets
    the entry (every open handle gets CorruptData once, as for a shared partial entry). A chunk
    may be copied by a reader before it is hashed (read-ahead completes out of order) or hashed
    before a reader copies it; the chunks copied in this pass are ``served``, and eviction
    (``LazyBlobs._stream_evict``) keeps the bytes hashed and the bytes served the same ones. Only
    a reader that jumps around can make it give up: that pass is then not verified as a whole
    (``hash_ok`` False) and the next read from offset 0 starts another.

    All fields are guarded by the entry's lock.
    """

    __slots__ = ("window", "resident", "nbytes", "pins", "served", "hasher", "hash_off", "hash_ok", "hash_done")

    def __init__(self, window: int) -> None:
        self.window = window
        self.resident: collections.deque[int] = collections.deque()  # present chunks, oldest first
        self.nbytes = 0  # bytes of present chunks
        self.pins: dict[int, int] = {}  # chunk -> reads copying it now
        self.reset_hash()

    def reset_hash(self) -> None:
        self.served: set[int] = set()  # chunks a reader copied in this pass
        self.hasher = hasher()
        self.hash_off = 0
        self.hash_ok = True
        self.hash_done = False


class _Entry:
    """The shared state of one blob open in this process (all handles of one digest)."""

    # set by LazyBlobs.open(fetch=..., verify=...) for reference entries (see open_ref)
    fetch: Callable[[int, int], bytes] | None = None  # instead of the store's get_range(key, ...)
    verify = True  # False: no digest to check; a fully fetched entry stays a partial entry

    def __init__(self, project: str, digest: str, size: int, cache: "Cache") -> None:
        self.project, self.digest, self.size = project, digest, size
        self.cache = cache
        self.cache_root = cache.root
        self.key = blob_key(project, digest)
        self.blob_path = cache.path(digest)
        hexpart = cache_rel(digest).rsplit("/", 1)[1]
        self.partial_path = os.path.join(self.cache_root, "partial", hexpart)
        self.map_path = self.partial_path + ".map"
        self.lock = threading.Lock()
        self.refs = 0  # open handles
        self.jobs = 0  # fetch jobs and verifications not finished (they use the fds)
        self.gen = 0  # bumped when a corrupt partial entry is dropped and started afresh
        self.complete = False
        self.finalizing = False
        self.fd = -1
        self.map_fd = -1
        self.old_fds: list[int] = []  # closed when the entry is freed (a reader may still use them)
        self.cs = 1
        self.nchunks = 0
        self.present = bytearray()
        self.npresent = 0
        self.finalize_due = False  # set under lock by refresh(); the reader starts verification
        # (the fetches in flight are in LazyBlobs' one registry, artfs._fetchpool._InFlight,
        # under (digest, gen, chunk): a new generation finds none of the old one's)
        self.touched: dict[int, int] = {}  # chunk -> bytes of it served by random reads (LazyBlobs._read_direct)
        # a streamed entry (a blob larger than the cache allows, see _Stream): None otherwise
        self.stream: _Stream | None = None

    # -- opening -------------------------------------------------------------------------------
    def open_complete(self) -> bool:
        """Use the complete cache blob if it may be served (:meth:`Cache.open_verified`, which
        hashes a blob whose record is stale and drops one that changed); False if there is none."""
        fd = self.cache.open_verified(self.digest, self.size, rehash=True) if self.verify else -1
        if fd < 0:
            return False
        self.fd, self.complete = fd, True
        return True

    def open_private(self, chunk_size: int) -> None:
        """Start a streamed entry: an unnamed partial file and map that only this process sees.

        Nobody else can mark or read them, so punching out chunks is safe, and they vanish when
        the entry is freed or the process dies (``O_TMPFILE``), so a crash leaves nothing behind.
        """
        tmpdir = os.path.join(self.cache_root, "tmp")
        fd = _open_tmpfile(tmpdir)
        try:
            mfd = _open_tmpfile(tmpdir)
        except BaseException:
            os.close(fd)
            raise
        self._load_map(fd, mfd, chunk_size)
        self.fd, self.map_fd, self.complete = fd, mfd, False

    def open_any(self, chunk_size: int) -> None:
        """Open the complete blob if it is cached, else its partial entry (created if needed)."""
        if self.open_complete():
            return
        for _ in range(20):
            if self.stream is not None:
                self.open_private(chunk_size)
                return
            fd = _open_locked(self.partial_path, os.O_RDWR | os.O_CREAT)
            mfd = -1
            try:
                mfd = os.open(self.map_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                fcntl.flock(mfd, fcntl.LOCK_EX)  # only while reading/initialising the entry
                if _same(self.map_path, mfd) and _same(self.partial_path, fd):
                    self._load_map(fd, mfd, chunk_size)
                    fcntl.flock(mfd, fcntl.LOCK_UN)
                    self.fd, self.map_fd, self.complete = fd, mfd, False
                    return
            except BaseException:
                os.close(fd)
                if mfd >= 0:
                    os.close(mfd)
                raise
            # verified into blobs/, dropped or evicted while we opened it: look again
            os.close(fd)
            os.close(mfd)
            if self.open_complete():
                self._remove_orphan()
                return
        raise ArtfsError(f"{self.partial_path}: keeps being replaced while opening it")

    def _load_map(self, fd: int, mfd: int, chunk_size: int) -> None:
        """Read the chunk map, or reset it if it does not belong to this partial file."""
        st = os.fstat(fd)
        raw = os.pread(mfd, _HDR.size, 0)
        cs = 0
        if len(raw) == _HDR.size:
            magic, size, cs, _, nonce = _HDR.unpack(raw)
            if magic != _MAGIC or size != self.size or cs <= 0:
                cs = 0
            elif st.st_size != self.size + _NONCE or os.pread(fd, _NONCE, self.size) != nonce:
                cs = 0  # a map left from an earlier partial file
        n = (self.size + cs - 1) // cs if cs else 0
        present = os.pread(mfd, n, _HDR.size) if cs else b""
        if not cs or len(present) != n:
            cs = chunk_size
            n = (self.size + cs - 1) // cs
            nonce = os.urandom(_NONCE)
            os.ftruncate(fd, self.size)  # whatever bytes are there are untrusted from now on
            _pwrite_full(fd, nonce, self.size)
            os.ftruncate(mfd, 0)
            os.pwrite(mfd, _HDR.pack(_MAGIC, self.size, cs, 0, nonce), 0)
            os.ftruncate(mfd, _HDR.size + n)
            present = bytes(n)
        else:
            with contextlib.suppress(OSError):
                os.utime(fd)  # recency for LRU eviction
        self.cs, self.nchunks = cs, n
        self.present = bytearray(present)
        self.npresent = n - self.present.count(0)

    def _remove_orphan(self) -> None:
        """Remove a partial file we created just before finding the blob complete (if unused)."""
        try:
            fd = os.open(self.partial_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_size == 0 and not os.path.exists(self.map_path):
                _unlink_if_same(self.partial_path, fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def refresh(self, c0: int, c1: int) -> None:
        """Pick up chunks in ``[c0, c1)`` that another process marked present (under lock).

        Not for a streamed entry: its map is private to this process, and the only bytes it could
        find set are our own jobs', written just before they take the lock to mark the chunks
        present and hash them; a reader picking them up here could read the last chunk before
        the pass was verified.
        """
        if self.stream is not None:
            return
        m = os.pread(self.map_fd, c1 - c0, _HDR.size + c0)
        for j, b in enumerate(m):
            i = c0 + j
            if b and not self.present[i]:
                self.present[i] = 1
                self.npresent += 1
        if (self.npresent == self.nchunks and not self.complete and not self.finalizing and self.verify
                and self.stream is None):
            # the last chunks came from another process: no fetch of ours will start verification
            self.finalizing = self.finalize_due = True

    def restart(self, chunk_size: int) -> None:
        """Start afresh (under ``self.lock``) after what was fetched failed verification: new
        files (a new private pair for a streamed entry), a new generation, so every handle open on
        the old one gets CorruptData once and no fetch of the old one is found any more. The old
        descriptors stay open until the entry is freed: a reader may still be using them."""
        old = (self.fd, self.map_fd)
        self.fd = self.map_fd = -1
        try:
            if self.stream is not None:
                self.stream = _Stream(self.stream.window)
                self.open_private(chunk_size)
            else:
                self.open_any(chunk_size)
        finally:
            self.old_fds.extend(old)
            self.gen += 1

    def close_fds(self) -> None:
        for fd in (self.fd, self.map_fd, *self.old_fds):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = self.map_fd = -1
        self.old_fds = []


def _hash_file(fd: int, size: int) -> tuple[str, int]:
    """The digest of the first ``size`` bytes of ``fd`` and how many bytes there were.

    Reads into one reused 1 MiB buffer (it stays in the CPU cache while it is hashed; a fresh
    ``bytes`` per read would cost page faults and zeroing). Not ``mmap``: a cache file shortened
    by another process while mapped would kill the daemon with SIGBUS.
    """
    h = hasher()
    buf = memoryview(bytearray(min(max(size, 1), 1 << 20)))
    off = 0
    while off < size:
        n = os.preadv(fd, [buf[: min(len(buf), size - off)]], off)
        if not n:
            break
        h.update(buf[:n])
        off += n
    return finish(h), off
