"""Content digests: ``xxh128:<32 hex>`` (XXH3-128).

The algorithm name is part of every digest so another one can be added later without ambiguity.
"""

from __future__ import annotations

import os
import re

import xxhash

from ._errors import CorruptData

ALGO = "xxh128"
_DIGEST_RE = re.compile(r"xxh128:[0-9a-f]{32}")
_BUF = 4 << 20


def check_digest(d: object) -> str:
    if not isinstance(d, str) or not _DIGEST_RE.fullmatch(d):
        raise CorruptData(f"invalid digest {d!r}")
    return d


def hasher() -> "xxhash.xxh3_128":
    return xxhash.xxh3_128()


def finish(h: "xxhash.xxh3_128") -> str:
    return f"{ALGO}:{h.hexdigest()}"


def digest_bytes(data: bytes | memoryview) -> str:
    """``xxh128:<32 hex>`` of ``data``, the digest artfs records for file contents."""
    return f"{ALGO}:{xxhash.xxh3_128_hexdigest(data)}"


def read_buffer(fd: int) -> bytearray:
    """A buffer for reading the open file ``fd`` through: its size (+1), at most 4 MiB.

    Not always 4 MiB: zeroing a fresh 4 MiB buffer costs more than reading and hashing a small
    file, and a put or get of many small files would pay it for each one.
    """
    try:
        size = os.fstat(fd).st_size
    except OSError:
        size = _BUF
    return bytearray(max(4096, min(_BUF, size + 1)))


def digest_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """Digest (``xxh128:…``) and size of a local file, read in large buffers; ``OSError`` if unreadable."""
    h = xxhash.xxh3_128()
    size = 0
    with open(path, "rb", buffering=0) as f:
        buf = read_buffer(f.fileno())
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            size += n
    return finish(h), size


def cache_rel(digest: str) -> str:
    check_digest(digest)
    hexpart = digest.split(":", 1)[1]
    return f"{ALGO}/{hexpart[:2]}/{hexpart}"
