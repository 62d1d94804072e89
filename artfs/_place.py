"""Placing a verified copy of a blob: a reflink where the file system has them, else a copy;
hashed on the way in either case; and the one way a download names its target under a root.

Used by downloads (``artfs get``, ``Artifact.download``/``checkout``) from the cache or straight
from a local store's blob, and by the cache's own copies out.

Invariants
* **Never a hard link**: the copy placed is a file of its own. A reflink (``FICLONE``) shares
  the blocks until either file is written; a write to the downloaded file then copies what it
  changes (copy on write), so the cache's or the store's blob is never touched.
* **Every byte is hashed**: a reflink skips the write, not the read. The source is read and
  hashed (from the page cache, usually), so a corrupted blob is refused, not shared.
* A file system without reflinks (ext4), or a source and destination on two file systems, copies
  through a buffer (read, hash, write: one read of the source); one failed ``FICLONE`` in a
  destination directory is enough to stop trying it there in this process.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading

from ._errors import CorruptData, InvalidPath, NotFound, SizeMismatch
from ._hashes import digest_fd
from ._names import check_path

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS,
               errno.EPERM, errno.ETXTBSY}
_refused: set[str] = set()  # directories where a reflink failed (no fstat per file to ask for devices)
_lock = threading.Lock()


def reflink(src: int, dst: int, where: str) -> bool:
    """Make ``dst`` (empty, open for writing, in the directory ``where``) share ``src``'s blocks;
    False where it cannot (then not tried again for that directory in this process)."""
    if where in _refused:
        return False
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return True
    except OSError as e:
        if e.errno not in _NO_REFLINK:
            raise
        with _lock:
            _refused.add(where)
        return False


def copy_hashing(src: int, dst: str, digest: str, mode: int | None, size: int | None = None) -> bool:
    """Create (or truncate) ``dst`` holding the bytes of the open file ``src`` (read from its
    current offset, which should be 0) by reflink or copy, hashing them; whether they match ``digest``.

    ``mode``: permission bits of ``dst``. SizeMismatch if they match ``digest`` but are not
    ``size`` bytes long. Either way ``dst`` is left for the caller to remove when this does not
    return True.
    """
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        if reflink(src, fd, os.path.dirname(dst)):
            got, n = digest_fd(src)  # the shared bytes, read once to verify them
        else:
            got, n = digest_fd(src, fd)
    finally:
        os.close(fd)
    ok = got == digest
    if ok and size is not None and n != size:
        raise SizeMismatch(f"the manifest says {size} bytes, but blob {digest} has {n}")
    return ok


def place_blob(blob: str, dst: str, digest: str, mode: int, size: int) -> None:
    """Create ``dst`` from a local store's blob file (reflink or copy, hashed: :mod:`artfs._place`).

    NotFound if the store lacks it; CorruptData (``dst`` removed) if its bytes do not match.
    """
    try:
        fd = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"blob {digest}: not found in the store") from None
    try:
        if not copy_hashing(fd, dst, digest, mode, size):
            os.unlink(dst)
            raise CorruptData(f"blob {digest} in the store does not match its digest")
    finally:
        os.close(fd)


def safe_target(root: str, path: str, checked: set[str] | None = None) -> str:
    """``root/path``, refusing a path that escapes ``root`` or passes through a symlink.

    ``checked``: directories already found not to be symlinks (one download checks each once).
    """
    check_path(path)
    target = os.path.join(root, *path.split("/"))
    d = root
    for part in path.split("/")[:-1]:
        d = os.path.join(d, part)
        if checked is not None and d in checked:
            continue
        if os.path.islink(d):
            raise InvalidPath(f"{path!r}: {d} is a symlink; refusing to write through it")
        if checked is not None:
            checked.add(d)
    if os.path.commonpath([root, os.path.abspath(target)]) != root:
        raise InvalidPath(f"{path!r} escapes {root}")
    return target
