"""What every reference scheme shares: URIs, the recorded identity of an entry, and the
:class:`Scheme` interface that each scheme's module (``file``, ``s3``, ``gs``, ``http``) implements.

Only the standard library and artfs' core are imported here, so that a process that never
meets a remote reference never imports httpx or boto3.
"""

from __future__ import annotations

import abc
import os
from typing import Any, Callable, Hashable, Protocol, TypeVar
from urllib.parse import urlparse

import xxhash

from .._errors import ArtfsError, InvalidPath, ReferenceChanged
from .._manifest import Entry
from .._names import check_path, join_path

DEFAULT_MAX_OBJECTS = 10000
SCHEMES = ("s3", "gs", "http", "https", "file")
#: how much of an object is read or written at a time
CHUNK = 4 << 20


_T = TypeVar("_T")


class Reader(Protocol):
    """What a scheme needs of its reader (:class:`~artfs._refs.reader.RefReader` is the one):
    declared here, so that this module does not import the reader module, which imports it."""

    @property
    def allow_file(self) -> bool: ...
    @property
    def file_roots(self) -> list[str]: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def s3_timeout(self) -> float | None: ...
    def shared(self, name: str, make: Callable[[], _T]) -> _T: ...
    def first_time(self, what: Hashable) -> bool: ...


class Scheme(abc.ABC):
    """The references of one URI scheme, for one :class:`RefReader` (thread-safe, as the reader).

    ``bucket`` and ``key`` are :func:`parse_uri`'s: the bucket and key for ``s3``/``gs``, ``""``
    and the URL for ``http(s)``, ``""`` and the absolute path for ``file``. The reader has
    already checked that ``entry`` is a reference and what can be answered without I/O.
    """

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    @abc.abstractmethod
    def resolve(self, uri: str, bucket: str, key: str, name: str | None, checksum: bool,
                limit: int) -> list[Entry]:
        """Entries for one object or every object under a prefix/directory (see RefReader.resolve)."""

    @abc.abstractmethod
    def read_range(self, entry: Entry, bucket: str, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` of the recorded object; ReferenceChanged if it changed."""

    @abc.abstractmethod
    def download(self, entry: Entry, bucket: str, key: str, path: str, h: Any) -> int:
        """Write the object to ``path``, feeding ``h`` (an xxh128 hasher or None); returns the size."""

    @abc.abstractmethod
    def size(self, entry: Entry, bucket: str, key: str) -> int:
        """The object's size now (one request), for an entry that is not pinned."""

    def check_allowed(self, entry: Entry, key: str) -> None:
        """Raise PermissionDenied if the reader may not read this entry (no I/O); all may by default."""

    def close(self) -> None:
        """Close the clients this scheme opened."""


def parse_uri(uri: str) -> tuple[str, str, str]:
    """``(scheme, bucket, key)`` for s3/gs, ``(scheme, "", url)`` for http(s), ``("file", "", path)``."""
    if not isinstance(uri, str):
        raise ArtfsError(f"invalid reference {uri!r}")
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ArtfsError(f"{uri!r}: unsupported reference; expected s3://, gs://, http(s):// or file://")
    if "\x00" in uri:
        raise ArtfsError(f"{uri!r}: contains NUL")
    if scheme in ("s3", "gs"):
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ArtfsError(f"{uri!r}: no bucket")
        return scheme, bucket, key
    if scheme == "file":
        host, _, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise ArtfsError(f"{uri!r}: a file:// reference names a local absolute path (file:///path)")
        return "file", "", os.path.normpath("/" + path)
    if not urlparse(uri).netloc:
        raise ArtfsError(f"{uri!r}: no host")
    return scheme, "", uri


def info_of(entry: Entry) -> dict[str, Any]:
    """``ref_info`` with only well-typed values (it comes from a manifest: untrusted input)."""
    out: dict[str, Any] = {}
    for k, v in (entry.ref_info or {}).items():
        if k == "checksum":
            if isinstance(v, bool):
                out[k] = v
        elif k == "mtime_ns":
            if isinstance(v, int) and not isinstance(v, bool):
                out[k] = v
        elif isinstance(v, str) and v:
            out[k] = v
    return out


def is_pinned(entry: Entry) -> bool:
    """Whether ``entry`` recorded what identifies its object (``checksum=True`` when resolved)."""
    return entry.ref is not None and info_of(entry).get("checksum", True) is not False


def ref_key(entry: Entry) -> str:
    """A stable 32-hex key for the exact object a reference entry names (URI + identity).

    For the mount's cache of reference chunks when the entry has no ``digest``: two entries share
    a key only if they name the same object at the same version/ETag/generation/mtime.
    """
    info = {k: v for k, v in sorted(info_of(entry).items()) if k != "last_modified"}
    return xxhash.xxh3_128_hexdigest(repr((entry.ref, entry.size, entry.digest, info)).encode())


def entry_path(uri: str, name: str | None, rel: str) -> str:
    try:
        return join_path(name, rel) if rel else check_path(name)
    except InvalidPath as e:
        raise InvalidPath(f"reference {uri}: {e}") from None


def clean(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if v is not None and v != ""}


def weak(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def changed(entry: Entry, why: str) -> ReferenceChanged:
    return ReferenceChanged(f"{entry.path}: reference {entry.ref} changed since it was logged ({why})")


def too_many(uri: str, limit: int) -> ArtfsError:
    return ArtfsError(
        f"{uri}: more than {limit} objects (max_objects={limit}); reference a narrower prefix "
        f"or raise the limit (max_objects=..., --max-objects)"
    )


def to_int(s: str | None) -> int | None:
    return int(s) if s is not None and s.isdigit() else None


def total_from_content_range(cr: str | None) -> int | None:
    """``bytes 0-9/1234`` -> 1234 (None when absent or ``*``)."""
    if not cr or "/" not in cr:
        return None
    return to_int(cr.rsplit("/", 1)[1].strip())


def start_from_content_range(cr: str | None) -> int | None:
    if not cr:
        return None
    spec = cr.strip().split(" ", 1)[-1]
    return to_int(spec.split("-", 1)[0])


