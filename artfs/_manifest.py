"""Manifests: the immutable list of entries of one version.

A manifest is written once as ``<project>/artifacts/<artifact>/versions/<N>.json`` and never
changed. Its entries are sorted by path. The *version digest* hashes ``(path, digest, executable,
reference)`` of every entry, so logging identical content again is recognised and creates nothing.

A version of many entries is stored sharded by directory instead (format 2, :mod:`artfs._pieces`):
its ``entries`` are then a :class:`LazyEntries`, read piece by piece as they are needed, behind the
same sequence API (``len`` costs nothing, iterating holds one directory at a time).

Everything read back from a store is validated as untrusted input: a tampered manifest with
``../x`` or an absolute path raises :class:`InvalidPath` instead of escaping a download root or
a mount.
"""

from __future__ import annotations

import bisect
import gc
import json
import json.encoder
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import islice, repeat
from operator import attrgetter, itemgetter, le, lt
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import xxhash

from ._digest import check_digest
from ._errors import ArtfsError, CorruptData, InvalidPath
from ._names import check_name, check_path, check_paths

FORMAT = 1

#: The largest size a manifest entry may claim: 1 PiB. No store holds a file that large (S3's
#: limit is 5 TiB), so a bigger size is a tampered or broken manifest, refused when it is read
#: (CorruptData naming the entry) instead of being printed as "888.2 PB" or allocated for.
MAX_ENTRY_SIZE = 1 << 50


class Entry(NamedTuple):
    """One file of a version (immutable).

    ``digest`` is the content digest (``xxh128:…``) when known; a reference entry (``ref`` set)
    keeps its bytes elsewhere and records what identifies them in ``ref_info`` (ETag, version id,
    generation) so a later read can tell whether the target changed.

    A named tuple rather than a dataclass: a version may have millions of entries, and a tuple is
    built in a fraction of the time (no per-field ``__setattr__``) and is about half the size.
    """

    path: str
    digest: str | None
    size: int
    executable: bool = False
    ref: str | None = None
    ref_info: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as it is written in a manifest."""
        d: dict[str, Any] = {"path": self.path, "digest": self.digest, "size": self.size}
        if self.executable:
            d["executable"] = True
        if self.ref is not None:
            d["ref"] = self.ref
            if self.ref_info:
                d["ref_info"] = self.ref_info
        return d

    @classmethod
    def from_json(cls, d: Any) -> "Entry":
        """An entry read from a manifest, validated like user input; ``CorruptData`` if it is not valid."""
        if not isinstance(d, dict):
            raise CorruptData(f"manifest entry is not an object: {d!r}")
        path = check_path(d.get("path"))
        digest = d.get("digest")
        ref = d.get("ref")
        if ref is not None and not isinstance(ref, str):
            raise CorruptData(f"entry {path!r}: invalid ref")
        if digest is not None:
            check_digest(digest)
        elif ref is None:
            raise CorruptData(f"entry {path!r}: neither digest nor ref")
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            if not (ref is not None and size is None):
                raise CorruptData(f"entry {path!r}: invalid size {size!r}")
            size = 0
        if size > MAX_ENTRY_SIZE:
            raise CorruptData(f"entry {path!r}: impossible size {size} (the bound is {MAX_ENTRY_SIZE} bytes, 1 PiB)")
        ref_info = d.get("ref_info")
        if ref_info is not None and not isinstance(ref_info, dict):
            raise CorruptData(f"entry {path!r}: invalid ref_info")
        return cls(path, digest, size, bool(d.get("executable", False)), ref, ref_info)


#: the ``ref_info`` fields that say *which* object a reference names (not when it was seen)
REF_IDENTITY = ("etag", "version_id", "generation", "checksum")


_path_of = attrgetter("path")


def version_digest(entries: Iterable[Entry]) -> str:
    """Hash of ``(path, digest, executable, ref)`` of every entry.

    A reference also contributes what identifies its object (ETag, version id, generation, and
    the size when no digest is known), so logging the same URI after its object changed makes a
    new version. Entries without ``ref`` hash exactly as before.

    Each entry hashes as the line ``json.dumps([path, digest, executable, ref, (ident)],
    ensure_ascii=False, sort_keys=True)``. Plain entries (no ``ref``, a ``bool`` executable bit)
    have their line formatted in bulk, with the very string encoder ``json.dumps`` uses.
    """
    es = entries if isinstance(entries, list) else list(entries)
    paths = list(map(_path_of, es))
    if not _sorted_paths(paths):  # checked entries (a commit's) are sorted already: no sort again
        es = sorted(es, key=_path_of)
        paths = list(map(_path_of, es))
    if not es:
        return f"xxh128:{xxhash.xxh3_128().hexdigest()}"
    digests = list(map(_digest_of, es))
    execs = list(map(_executable_of, es))
    if (set(map(type, paths)) == {str} and set(map(type, execs)) <= {bool}
            and set(map(type, digests)) <= {str, type(None)}):
        dj = (map(_encode_str, digests) if None not in digests
              else ("null" if d is None else _encode_str(d) for d in digests))
        recs = list(map(_PLAIN_REC, map(_encode_str, paths), dj, map(_JSON_BOOL.__getitem__, execs)))
        for i, e in enumerate(es):
            if e.ref is not None:
                recs[i] = _digest_record(e)
    else:
        recs = [_digest_record(e) for e in es]
    recs.append("")  # every line ends with a newline
    data = "\n".join(recs).encode("utf-8")
    return f"xxh128:{xxhash.xxh3_128(data).hexdigest()}"


def _digest_record(e: Entry) -> str:
    rec_l: list[Any] = [e.path, e.digest, e.executable, e.ref]
    if e.ref is not None:
        ident = {k: (e.ref_info or {})[k] for k in REF_IDENTITY if k in (e.ref_info or {})}
        if e.digest is None:
            ident["size"] = e.size
        rec_l.append(ident)
    return json.dumps(rec_l, ensure_ascii=False, sort_keys=True)


_encode_str = json.encoder.encode_basestring  # what json.dumps(..., ensure_ascii=False) uses for a str
_PLAIN_REC = "[{}, {}, {}, null]".format
_JSON_BOOL = {True: "true", False: "false"}
_digest_of = attrgetter("digest")
_executable_of = attrgetter("executable")


def blob_digests(entries: list[Entry]) -> list[str]:
    """The sorted digests of the entries' blobs (a reference keeps its bytes elsewhere), found in
    C when there is no reference."""
    if list(map(_ref_of, entries)).count(None) != len(entries):
        return sorted({e.digest for e in entries if e.digest and e.ref is None})
    out: set[str | None] = set(map(_digest_of, entries))
    out.discard(None)
    out.discard("")
    return sorted(d for d in out if d is not None)


def check_entries(entries: Iterable[Entry]) -> list[Entry]:
    """Sort entries; refuse duplicate paths and a path that is both a file and a directory.
    Entries already in order (checked before, as a draft's are) are not sorted again."""
    out = list(entries)
    paths = list(map(_path_of, out))
    if not _increasing(paths):
        out.sort(key=_path_of)
        paths = list(map(_path_of, out))
    if not _increasing(paths):
        for a, b in zip(paths, islice(paths, 1, None)):
            if a == b:
                raise InvalidPath(f"duplicate entry path {a!r}")
    if _maybe_file_under_file(paths):
        _refuse_file_under_file(paths)
    return out


def _sorted_paths(paths: list[str]) -> bool:
    """Whether ``paths`` is in order (equal neighbours allowed), in C."""
    return all(map(le, paths, islice(paths, 1, None)))


def _increasing(paths: list[str]) -> bool:
    """Whether ``paths`` is strictly increasing: sorted, without duplicates (in C, no Python loop)."""
    return all(map(lt, paths, islice(paths, 1, None)))


_head = itemgetter(0)


def _maybe_file_under_file(paths: list[str]) -> bool:
    """False when no path of the sorted, duplicate-free ``paths`` is a directory of another.

    The directories are the parents of all paths (computed in C) and their ancestors (a loop over
    the distinct parents only); each is looked up in the sorted paths. (An empty path, never
    valid, is left to the exact check.)
    """
    if paths and paths[0] == "":
        return True
    parents = set(map(_head, map(str.rpartition, paths, repeat("/"))))
    parents.discard("")
    dirs: set[str] = set()
    for p in parents:
        while p and p not in dirs:
            dirs.add(p)
            p = p.rpartition("/")[0]
    n = len(paths)
    for d in dirs:
        i = bisect.bisect_left(paths, d)
        if i < n and paths[i] == d:
            return True
    return False


def _refuse_file_under_file(paths: list[str]) -> None:
    """Raise for the first path (in order) that lies under a file, naming the outermost such file."""
    files = set(paths)
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise InvalidPath(f"entry {path!r} lies under the file {'/'.join(parts[:i])!r}")


# -- reading millions of entries quickly --------------------------------------------------------
# ``Manifest.from_bytes`` first tries a bulk check of the whole entry list: every field is pulled
# into a column by C code (``map(dict.get, …)``), and each column is validated at once: all paths by
# scans of their joined bytes (``check_paths``), all digests by slices of their concatenation,
# sizes by their types and minimum, order and duplicates by one pairwise comparison, files under
# files by a look-up of each directory. It only ever *accepts*: when anything is off it returns None and the entries go
# through ``Entry.from_json`` and ``check_entries`` one by one, which raise the precise error. So
# both accept exactly the same manifests and build exactly the same entries.

_BULK_MIN = 64  # below this the per-entry path is as fast
_PREFIX = b"xxh128:"
_DIGEST_LEN = len(_PREFIX) + 32
_HEX = b"0123456789abcdef"


def _digests_ok(digests: list[Any]) -> bool:
    """Whether every item is a valid digest, as ``check_digest`` says (``xxh128:`` + 32 lowercase hex).

    All have 39 characters and are ASCII, so in their concatenation digest ``i`` takes bytes
    ``39 i`` to ``39 i + 38``: every 39th byte from offset ``k`` must be the k-th byte of the prefix,
    and deleting the hex digits must leave only the prefixes' four non-hex bytes (``xxh:``) each.
    """
    n = len(digests)
    if set(map(type, digests)) != {str} or set(map(len, digests)) != {_DIGEST_LEN}:
        return False
    try:
        b = "".join(digests).encode("ascii")
    except UnicodeEncodeError:
        return False
    for k, c in enumerate(_PREFIX):
        if b[k::_DIGEST_LEN] != bytes((c,)) * n:
            return False
    return len(b.translate(None, _HEX)) == len(_PREFIX.translate(None, _HEX)) * n


_new_entry = partial(tuple.__new__, Entry)  # Entry(*fields) without the Python-level __new__
_get = dict.get


def _bulk_entries(raw: list[Any]) -> list[Entry] | None:
    """The checked, sorted entries of ``raw`` (a manifest's JSON entry list), or None when unsure.

    On success ``raw`` is emptied (its objects are no longer needed); on None it is untouched.
    """
    n = len(raw)
    if set(map(type, raw)) != {dict}:
        return None
    paths: list[Any] = list(map(_get, raw, repeat("path")))
    if set(map(type, paths)) != {str} or not _increasing(paths):
        return None
    digests: list[Any] = list(map(_get, raw, repeat("digest")))
    sizes: list[Any] = list(map(_get, raw, repeat("size")))
    refs = list(map(_get, raw, repeat("ref")))
    infos = list(map(_get, raw, repeat("ref_info")))
    special: list[int] = []
    if refs.count(None) != n or infos.count(None) != n:
        # references (or a ref_info on a plain entry): checked one by one, stand-ins in the columns
        special = [i for i in range(n) if refs[i] is not None or infos[i] is not None]
        digests = digests.copy()
        sizes = sizes.copy()
        for i in special:
            digests[i] = "xxh128:" + "0" * 32
            sizes[i] = 0
    if not _digests_ok(digests):
        return None
    if set(map(type, sizes)) != {int} or min(sizes) < 0 or max(sizes) > MAX_ENTRY_SIZE:  # type(True) is bool
        return None
    try:
        check_paths(paths)
    except InvalidPath:
        return None
    if _maybe_file_under_file(paths):
        return None
    executable = list(map(bool, map(_get, raw, repeat("executable"))))
    try:
        refs_entries = [Entry.from_json(raw[i]) for i in special]
    except ArtfsError:
        return None
    raw.clear()  # all checked: the JSON objects can go before the entries are built (lower peak)
    entries = list(map(_new_entry, zip(paths, digests, sizes, executable, repeat(None), repeat(None))))
    for i, e in zip(special, refs_entries):
        entries[i] = e
    return entries


def _entries_json(entries: list[Entry], paths: list[str] | None = None) -> list[str]:
    """``json.dumps(e.to_json(), ensure_ascii=False, separators=(",", ":"))`` of every entry
    (``paths``: what to write as each entry's path instead of its own, as a piece does).

    Plain entries (a ``str`` path and digest, an ``int`` size, no reference) are formatted in bulk
    with the string encoder ``json.dumps`` uses; the others go through ``json.dumps``.
    """
    if paths is None:
        paths = list(map(_path_of, entries))
    digests = list(map(_digest_of, entries))
    sizes = list(map(_size_of, entries))
    refs = list(map(_ref_of, entries))
    if not (set(map(type, paths)) <= {str} and set(map(type, digests)) <= {str} and set(map(type, sizes)) <= {int}):
        return [_entry_json(e._replace(path=p)) for e, p in zip(entries, paths)]
    out = list(map(_PLAIN_ENTRY, map(_encode_str, paths), map(_encode_str, digests), map(int.__repr__, sizes),
                   map(_EXEC_JSON.__getitem__, map(bool, map(_executable_of, entries)))))
    if refs.count(None) != len(refs):
        for i, r in enumerate(refs):
            if r is not None:
                out[i] = _entry_json(entries[i]._replace(path=paths[i]))
    return out


def _entry_json(e: Entry) -> str:
    return json.dumps(e.to_json(), ensure_ascii=False, separators=(",", ":"))


_PLAIN_ENTRY = '{{"path":{},"digest":{},"size":{}{}}}'.format
_EXEC_JSON = {True: ',"executable":true', False: ""}
_size_of = attrgetter("size")
_ref_of = attrgetter("ref")


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of objects.

    Each allocation of a container counts towards a collection, and every collection walks all
    the containers still alive: parsing a million-entry manifest with the collector running took
    three times as long. JSON trees hold no cycles, so nothing is lost by waiting. Nestable and
    safe across threads: the last one out restores the collector's earlier state.
    """
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


class LazyEntries(Sequence[Entry]):
    """The entries of a version that are not all in memory (a sharded one: :class:`artfs._pieces.TreeEntries`)."""

    @property
    def total_size(self) -> int:
        """Total bytes of the entries, known without reading them."""
        raise NotImplementedError


@dataclass
class Manifest:
    """What a version is: its entries (sorted by path), type, version digest, creation time, and the
    description and metadata it was logged with. Stored as ``versions/<N>.json`` and never changed;
    reading one validates it like user input (``CorruptData`` for anything malformed)."""

    project: str
    artifact: str
    version: int
    type: str
    entries: Sequence[Entry]  # a list, or LazyEntries for a sharded version
    digest: str
    created: str
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    run: str | None = None
    commit_id: str | None = None

    @property
    def size(self) -> int:
        """Total bytes of the entries."""
        if isinstance(self.entries, LazyEntries):
            return self.entries.total_size
        return sum(e.size for e in self.entries)

    @property
    def sharded(self) -> bool:
        """Whether the version is stored as pieces (format 2), its entries read as needed."""
        return isinstance(self.entries, LazyEntries)

    def to_bytes(self) -> bytes:
        """The manifest in format 1, every entry in it (JSON, UTF-8): how a small version is stored,
        and a whole copy of any version (a draft keeps its base's this way)."""
        doc = {
            "format": FORMAT,
            "project": self.project,
            "artifact": self.artifact,
            "version": self.version,
            "type": self.type,
            "digest": self.digest,
            "created": self.created,
            "description": self.description,
            "metadata": self.metadata,
            "run": self.run,
            "commit_id": self.commit_id,
            "entries": [],
        }
        head = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        assert head.endswith('"entries":[]}')
        return "".join((head[:-2], ",".join(_entries_json(self.entries if isinstance(self.entries, list) else list(self.entries))), "]}")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "manifest",
                   tree: Callable[[dict[str, Any]], Sequence[Entry]] | None = None) -> "Manifest":
        """Parse and validate a manifest read from a store (untrusted input).

        ``tree`` reads a format-2 head (a sharded version, :func:`artfs._pieces.parse_manifest`
        passes it): given the head's document, it returns the lazy entries; without it a
        format-2 manifest is an unknown format."""
        with gc_paused():
            return cls._from_bytes(data, where, tree)

    @classmethod
    def _from_bytes(cls, data: bytes, where: str,
                    tree: Callable[[dict[str, Any]], Sequence[Entry]] | None = None) -> "Manifest":
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptData(f"{where}: not valid JSON ({e})") from None
        sharded = isinstance(doc, dict) and doc.get("format") == 2 and tree is not None
        if not isinstance(doc, dict) or (doc.get("format") != FORMAT and not sharded):
            raise CorruptData(f"{where}: unknown manifest format")
        try:
            entries: Sequence[Entry] | None
            if sharded:
                assert tree is not None
                entries = tree(doc)
            else:
                raw_entries = doc.get("entries", [])
                if not isinstance(raw_entries, list):
                    raise CorruptData(f"{where}: entries is not a list")
                entries = _bulk_entries(raw_entries) if len(raw_entries) >= _BULK_MIN else None
                if entries is None:
                    entries = check_entries(Entry.from_json(d) for d in raw_entries)
                del raw_entries
                doc.pop("entries", None)  # the JSON objects go now, their strings live on
            version = doc["version"]
            if not isinstance(version, int) or isinstance(version, bool) or version < 0:
                raise CorruptData(f"{where}: invalid version {version!r}")
            metadata = doc.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise CorruptData(f"{where}: metadata is not an object")
            return cls(
                project=check_name(doc["project"], "project"),
                artifact=check_name(doc["artifact"], "artifact"),
                version=version,
                type=str(doc.get("type") or "unspecified"),
                entries=entries,
                digest=check_digest(doc["digest"]),
                created=str(doc.get("created") or ""),
                description=doc.get("description"),
                metadata=metadata,
                run=doc.get("run"),
                commit_id=doc.get("commit_id"),
            )
        except InvalidPath as e:
            raise InvalidPath(f"{where}: {e}") from None
        except KeyError as e:
            raise CorruptData(f"{where}: missing field {e}") from None
