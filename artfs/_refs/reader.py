"""The reader of references: one object per process, dispatching each URI to its scheme's module.

A scheme's module is imported on the first reference of that scheme (``importlib``), so
``import artfs`` and local-only use never import httpx (``http(s)://``, ``gs://``) or boto3
(``s3://``).
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any, Callable, Hashable, TypeVar

import xxhash

from .._digest import finish
from .._errors import ArtfsError, NotFound
from .._manifest import Entry
from .._names import check_path
from .base import DEFAULT_MAX_OBJECTS, Scheme, changed, is_pinned, parse_uri

_T = TypeVar("_T")

#: scheme -> (module of artfs._refs, class): one module per scheme (http and https share one)
_MODULES = {"file": ("file", "FileRefs"), "s3": ("s3", "S3Refs"), "gs": ("gs", "GSRefs"),
            "http": ("http", "HTTPRefs"), "https": ("http", "HTTPRefs")}


class RefReader:
    """Reads reference entries, exactly as recorded. Thread-safe; one per process is plenty.

    ``allow_file``/``file_roots`` decide which ``file://`` references may be opened (none by
    default). ``timeout`` bounds each HTTP/GCS request (``ARTFS_HTTP_TIMEOUT``, default 15 s);
    S3 uses the S3 backend's settings (``ARTFS_S3_TIMEOUT``, ``AWS_ENDPOINT_URL``, ...), its
    budget ``s3_timeout`` when given (the mount's ``--timeout``).
    """

    def __init__(self, *, allow_file: bool = False, file_roots: list[str] | tuple[str, ...] = (),
                 timeout: float | None = None, s3_timeout: float | None = None) -> None:
        self.allow_file = allow_file
        self.file_roots = [os.path.realpath(os.path.expanduser(r)) for r in file_roots]
        self.timeout = timeout
        self.s3_timeout = s3_timeout
        self._lock = threading.Lock()
        self._schemes: dict[str, Scheme] = {}
        self._shared: dict[str, Any] = {}
        self._seen: set[Hashable] = set()

    def __enter__(self) -> "RefReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the clients this reader opened (it opens new ones if used again)."""
        with self._lock:
            schemes, self._schemes = list(self._schemes.values()), {}
            shared, self._shared = list(self._shared.values()), {}
        for c in shared:
            c.close()
        for s in schemes:
            s.close()

    # -- what the schemes share -----------------------------------------------------------------
    def _scheme(self, scheme: str) -> Scheme:
        module, cls = _MODULES[scheme]
        s = self._schemes.get(module)
        if s is None:
            impl = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
            with self._lock:
                s = self._schemes.get(module)
                if s is None:
                    s = self._schemes[module] = impl(self)
        return s

    def shared(self, name: str, make: Callable[[], _T]) -> _T:
        """A client that several schemes share (``http`` and ``gs``: one httpx client), made on
        first use and closed by :meth:`close`."""
        c = self._shared.get(name)
        if c is None:
            with self._lock:
                c = self._shared.get(name)
                if c is None:
                    c = self._shared[name] = make()
        return c

    def first_time(self, what: Hashable) -> bool:
        """True once per reader for ``what`` (warnings said once, e.g. a host that ignores Range)."""
        with self._lock:
            if what in self._seen:
                return False
            self._seen.add(what)
            return True

    # -- the public operations -------------------------------------------------------------------
    def resolve(self, uri: str, *, name: str | None = None, checksum: bool = True,
                max_objects: int | None = DEFAULT_MAX_OBJECTS) -> list[Entry]:
        """Entries for ``uri`` (one object, or every object under a prefix/directory)."""
        limit = DEFAULT_MAX_OBJECTS if max_objects is None else int(max_objects)
        if name is not None:
            name = check_path(name.strip("/")) if name.strip("/") else None
        scheme, bucket, key = parse_uri(uri)
        entries = self._scheme(scheme).resolve(uri, bucket, key, name, checksum, limit)
        if not entries:
            raise NotFound(f"{uri}: no objects found")
        return entries

    def read_range(self, entry: Entry, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` of the recorded object (fewer only at its end)."""
        if entry.ref is None:
            raise ArtfsError(f"{entry.path}: not a reference")
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        if length <= 0 or (is_pinned(entry) and offset >= entry.size):
            return b""
        scheme, bucket, key = parse_uri(entry.ref)
        return self._scheme(scheme).read_range(entry, bucket, key, offset, length)

    def download(self, entry: Entry, path: str) -> int:
        """Write the whole recorded object to ``path``; returns its size.

        Verifies the size (and the digest when recorded); raises ReferenceChanged on a mismatch
        (``path`` then holds garbage: write to a temporary name).
        """
        if entry.ref is None:
            raise ArtfsError(f"{entry.path}: not a reference")
        scheme, bucket, key = parse_uri(entry.ref)
        h = xxhash.xxh3_128() if entry.digest else None
        n = self._scheme(scheme).download(entry, bucket, key, path, h)
        if is_pinned(entry) and n != entry.size:
            raise changed(entry, f"{n} bytes now, {entry.size} recorded")
        if h is not None and finish(h) != entry.digest:
            raise changed(entry, f"content digest {finish(h)}, recorded {entry.digest}")
        return n

    def check_allowed(self, entry: Entry) -> None:
        """Raise :class:`PermissionDenied` if this reader may not read ``entry`` (a ``file://``
        reference outside what ``allow_file``/``file_roots`` allow). No I/O besides resolving
        symlinks; for the mount's ``open``, before anything is served from the cache."""
        if entry.ref is not None and entry.ref.startswith("file:"):
            self._scheme("file").check_allowed(entry, parse_uri(entry.ref)[2])

    def size(self, entry: Entry) -> int:
        """The object's size: as recorded when pinned, else asked from its home (one request)."""
        if entry.ref is None or is_pinned(entry):
            return entry.size
        scheme, bucket, key = parse_uri(entry.ref)
        return self._scheme(scheme).size(entry, bucket, key)


def resolve_reference(uri: str, *, name: str | None = None, checksum: bool = True,
                      max_objects: int | None = DEFAULT_MAX_OBJECTS) -> list[Entry]:
    """Entries for ``uri``: one object, or every object under an ``s3://``/``gs://`` prefix or a directory.

    ``name`` is where the entries go in the artifact: the entry path of a single object (default:
    its base name), the directory of a prefix's objects (default: the artifact's root). More than
    ``max_objects`` objects is an error, never a silent cut. Entry paths are validated; a listing
    with ``../`` keys is refused. ``file://`` is allowed here: naming a local file is the user's
    own act (reading it back later is what :class:`RefReader` guards).
    """
    with RefReader(allow_file=True) as r:
        return r.resolve(uri, name=name, checksum=checksum, max_objects=max_objects)
