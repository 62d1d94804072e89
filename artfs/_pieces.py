"""Pieces: a large version's manifest sharded by directory, as git trees.

A version of at least :func:`shard_min` entries (``$ARTFS_SHARD_MIN``, default 10,000) is stored
as a small *head* (``versions/<N>.json``, format 2: everything a format-1 manifest has but the
entries, plus the root piece and the totals) and one *piece* per directory::

    <project>/trees/xxh128/<2 hex>/<32 hex>   one directory: its files and its subdirectories

A piece is the JSON object ``{"format":2,"files":[...],"dirs":[...]}``: ``files`` are format-1
entries whose ``path`` is one component (the file's name in this directory), sorted by name;
``dirs`` are ``{"name","tree","count","dirs","size","subdirs"}`` sorted by name: the subdirectory's
piece digest, the totals of everything below it (files, directories, bytes) and how many
subdirectories it has itself (for its link count, known without reading its piece). The bytes are written
one way only (compact JSON, fields in this order, UTF-8), and a piece's key is the xxh128 of its
bytes, so:

* an unchanged directory is the same piece in every version (and in every artifact of the
  project): a commit that changes one file writes that file's piece and the pieces of its parent
  directories, and never writes a piece the store has;
* identical directories at two paths are one piece: a piece never names its own path.

Invariants (checked when a piece is read, like everything read back from a store; a piece that
breaks one is refused with ``CorruptData``/``InvalidPath`` naming the version, the directory and
the piece):

* a piece's bytes hash to its key (``CorruptData``: "does not match its digest");
* names are single valid path components (no ``/``, ``.``, ``..``, NUL; ``InvalidPath``), strictly
  increasing in each list, never both a file and a directory of one piece;
* every entry is valid as in format 1 (digest, size at most ``MAX_ENTRY_SIZE``...);
* a subdirectory holds at least one file, and the totals a parent records for it are the totals
  of the piece it names (so the head's totals are the version's, known before any piece is read);
* pieces are immutable and written before the head that names them; the head is created
  exclusively, so a crash mid-commit leaves pieces no head names (collected by ``gc``), never a
  version that names a missing piece. gc keeps every piece reachable from a head or named by a
  young intent (:mod:`artfs._gc`).

The version digest is unchanged: it hashes the entries in path order (:func:`version_digest`),
whatever the format, so identical content is recognised across formats.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass, field
from itertools import compress, count, pairwise, repeat, starmap
from operator import attrgetter, getitem, itemgetter, ne
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import xxhash

from ._digest import check_digest
from ._errors import CorruptData, InvalidPath
from ._manifest import (MAX_ENTRY_SIZE, Entry, LazyEntries, Manifest, _bulk_entries, _BULK_MIN, _entries_json,
                        _new_entry, check_entries)
from ._names import check_name, check_path

FORMAT = 2
SHARD_MIN_DEFAULT = 10_000


def shard_min() -> int:
    """The fewest entries a version is sharded at (``$ARTFS_SHARD_MIN``; smaller ones stay one
    format-1 manifest: one GET, no piece)."""
    raw = os.environ.get("ARTFS_SHARD_MIN")
    if not raw:
        return SHARD_MIN_DEFAULT
    try:
        return max(0, int(raw))
    except ValueError:
        raise ValueError(f"ARTFS_SHARD_MIN={raw!r}: expected a number of entries") from None


class SubDir(NamedTuple):
    """A directory as its parent records it: its name, its piece, and the totals below it."""

    name: str
    tree: str
    nfiles: int  # files below it, at any depth ("count" in a piece)
    ndirs: int  # directories below it, at any depth, not counting itself ("dirs")
    size: int  # bytes of those files
    nsub: int = 0  # its own subdirectories ("subdirs": a directory's link count is 2 + this)


@dataclass
class Piece:
    """One parsed piece: ``files`` are entries whose ``path`` is their name in this directory."""

    digest: str
    files: list[Entry]
    dirs: list[SubDir]
    count: int = 0
    ndirs: int = 0
    size: int = 0
    names: list[str] = field(default_factory=list)  # the names of ``files`` (for bisecting)

    def __post_init__(self) -> None:
        self.names = list(map(_path_of, self.files))
        self.count = len(self.files) + sum(map(_count_of, self.dirs))
        self.ndirs = len(self.dirs) + sum(map(_dirs_of, self.dirs))
        self.size = sum(map(_size_of, self.files)) + sum(map(_size_of, self.dirs))

    def dirs_in_path_order(self) -> list[SubDir]:
        """The subdirectories in the order their entries' paths sort (by ``name + "/"``: ``a-b/``
        before ``a/``), in which a walk yields a version's entries in path order."""
        if all(a.name + "/" < b.name + "/" for a, b in pairwise(self.dirs)):
            return self.dirs
        return sorted(self.dirs, key=_dir_key)

    def weight(self) -> int:
        """What a piece costs to keep in memory, in entries (for bounded caches)."""
        return len(self.files) + len(self.dirs) + 1


_path_of = attrgetter("path")
_size_of = attrgetter("size")
_count_of = attrgetter("nfiles")
_dirs_of = attrgetter("ndirs")
_name_of = attrgetter("name")
_head = itemgetter(0)


def _dir_key(d: SubDir) -> str:
    return d.name + "/"


def piece_digest(data: bytes) -> str:
    return f"xxh128:{xxhash.xxh3_128(data).hexdigest()}"


def piece_bytes(files: Sequence[Entry], dirs: Sequence[SubDir], names: list[str] | None = None) -> bytes:
    """The one way a piece is written (``files``: entries named by their name in the directory, or
    by ``names`` when given)."""
    d = ",".join(json.dumps({"name": s.name, "tree": s.tree, "count": s.nfiles, "dirs": s.ndirs, "size": s.size,
                             "subdirs": s.nsub},
                            ensure_ascii=False, separators=(",", ":")) for s in dirs)
    fs = ",".join(_entries_json(files if isinstance(files, list) else list(files), names))
    return "".join(('{"format":2,"files":[', fs, '],"dirs":[', d, "]}")).encode()


def parse_piece(data: bytes, digest: str, where: str) -> Piece:
    """A piece read from a store (untrusted), checked against its digest and the invariants above."""
    what = f"{where}: piece {digest}"
    if piece_digest(data) != digest:
        raise CorruptData(f"{what} does not match its digest (changed or damaged in the store)")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptData(f"{what}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorruptData(f"{what}: unknown piece format")
    raw_files, raw_dirs = doc.get("files"), doc.get("dirs")
    if not isinstance(raw_files, list) or not isinstance(raw_dirs, list):
        raise CorruptData(f"{what}: files and dirs must be lists")
    try:
        files = _bulk_entries(raw_files) if len(raw_files) >= _BULK_MIN else None
        if files is None:
            files = check_entries(Entry.from_json(d) for d in raw_files)
        names = list(map(_path_of, files))
        if "/" in "".join(names):
            bad = next(n for n in names if "/" in n)
            raise InvalidPath(f"entry name {bad!r} is not one path component")
        dirs = [_subdir(d) for d in raw_dirs]
    except InvalidPath as e:
        raise InvalidPath(f"{what}: {e}") from None
    except CorruptData as e:
        raise CorruptData(f"{what}: {e}") from None
    dnames = list(map(_name_of, dirs))
    if any(a >= b for a, b in pairwise(dnames)):
        raise CorruptData(f"{what}: directories not sorted by name, or one listed twice")
    both = set(dnames).intersection(names)
    if both:
        raise CorruptData(f"{what}: {sorted(both)[0]!r} is both a file and a directory")
    return Piece(digest, files, dirs)


def _subdir(d: Any) -> SubDir:
    if not isinstance(d, dict):
        raise CorruptData(f"directory record is not an object: {d!r}")
    name = d.get("name")
    check_path(name)
    assert isinstance(name, str)
    if "/" in name:
        raise InvalidPath(f"directory name {name!r} is not one path component")
    nfiles, ndirs, size = _totals(d, f"directory {name!r}")
    if nfiles == 0:
        raise CorruptData(f"directory {name!r}: holds no file")
    return SubDir(name, check_digest(d.get("tree")), nfiles, ndirs, size, _nsub(d, ndirs, f"directory {name!r}"))


def _nsub(d: dict[str, Any], ndirs: int, what: str) -> int:
    x = d.get("subdirs")
    if not isinstance(x, int) or isinstance(x, bool) or x < 0 or x > ndirs:
        raise CorruptData(f"{what}: invalid subdirs {x!r}")
    return x


def _totals(d: dict[str, Any], what: str) -> tuple[int, int, int]:
    nums = [d.get(k) for k in ("count", "dirs", "size")]
    out: list[int] = []
    for x in nums:
        if not isinstance(x, int) or isinstance(x, bool) or x < 0:
            raise CorruptData(f"{what}: invalid totals {nums!r}")
        out.append(x)
    if out[2] > out[0] * MAX_ENTRY_SIZE:
        raise CorruptData(f"{what}: impossible size {out[2]}")
    return out[0], out[1], out[2]


def check_totals(sd: SubDir, p: Piece, what: str) -> None:
    """The totals a parent (or the head) records for a directory must be its piece's."""
    if (sd.nfiles, sd.ndirs, sd.size, sd.nsub) != (p.count, p.ndirs, p.size, len(p.dirs)):
        raise CorruptData(f"{what}: piece {p.digest} holds {p.count} files in {p.ndirs} directories "
                          f"({p.size} bytes, {len(p.dirs)} its own), its parent says {sd.nfiles} in {sd.ndirs} "
                          f"({sd.size} bytes, {sd.nsub} its own)")


# -- building the pieces of a version ---------------------------------------------------------------
@dataclass
class DirPlan:
    """One directory of a version being committed: its piece, and where its files are in the entries."""

    path: str
    sub: SubDir  # its name in its parent, its piece digest, totals
    runs: list[tuple[int, int]]  # ranges of the (path-sorted) entries that are its own files
    dirs: list[SubDir]  # its subdirectories, by name
    depth: int


@dataclass
class TreePlan:
    """The pieces of a version, built from its sorted entries (bytes are made again when written)."""

    entries: Sequence[Entry]
    root: SubDir
    dirs: dict[str, DirPlan]  # by directory path ("" is the root)

    def own(self, d: DirPlan) -> tuple[list[Entry], list[str]]:
        """The entries of ``d``'s own files (full paths), and their names in ``d``."""
        cut = len(d.path) + 1 if d.path else 0
        es = self.entries[d.runs[0][0]:d.runs[0][1]] if len(d.runs) == 1 else \
            [e for s, t in d.runs for e in self.entries[s:t]]
        es = es if isinstance(es, list) else list(es)
        paths = list(map(_path_of, es))
        return es, (list(map(getitem, paths, repeat(slice(cut, None)))) if cut else paths)

    def files_of(self, d: DirPlan) -> list[Entry]:
        """The entries of ``d``'s own files, named by their names."""
        es, names = self.own(d)
        return [_new_entry((p, *e[1:])) for p, e in zip(names, es)]

    def bytes_of(self, d: DirPlan) -> bytes:
        es, names = self.own(d)
        return piece_bytes(es, d.dirs, names)

    def digests(self) -> list[str]:
        """Every piece of the version, once each."""
        return sorted({d.sub.tree for d in self.dirs.values()})


def plan_tree(entries: Sequence[Entry]) -> TreePlan:
    """The pieces of ``entries`` (sorted by path, checked: :func:`~artfs._manifest.check_entries`).

    One pass over the entries' parent directories (found in C: runs of equal parents), a Python
    step per run, not per entry; a directory is closed (its piece made and hashed) as soon as the
    path order has left it, so only the pieces' digests are kept, not their bytes.
    """
    n = len(entries)
    paths = list(map(_path_of, entries))
    parents = map(_head, map(str.rpartition, paths, repeat("/")))
    starts = [0, *compress(count(1), starmap(ne, pairwise(parents)))] if n else []
    plan = TreePlan(entries, SubDir("", "", 0, 0, 0), {})
    stack: list[tuple[str, list[tuple[int, int]], list[SubDir]]] = [("", [], [])]

    def close() -> None:
        path, runs, dirs = stack.pop()
        dirs.sort(key=_name_of)
        tmp = DirPlan(path, SubDir("", "", 0, 0, 0), runs, dirs, path.count("/") + 1 if path else 0)
        files, names = plan.own(tmp)
        data = piece_bytes(files, dirs, names)
        sub = SubDir(path.rpartition("/")[2], piece_digest(data), len(files) + sum(map(_count_of, dirs)),
                     len(dirs) + sum(map(_dirs_of, dirs)), sum(map(_size_of, files)) + sum(map(_size_of, dirs)),
                     len(dirs))
        tmp.sub = sub
        plan.dirs[path] = tmp
        if stack:
            stack[-1][2].append(sub)
        else:
            plan.root = sub

    for s, t in zip(starts, [*starts[1:], n]):
        parent = _parent_of(paths[s])
        while stack[-1][0] and not (parent == stack[-1][0] or parent.startswith(stack[-1][0] + "/")):
            close()
        top = stack[-1][0]
        if parent != top:
            rest = parent[len(top) + 1:] if top else parent
            acc = top
            for part in rest.split("/"):
                acc = f"{acc}/{part}" if acc else part
                stack.append((acc, [], []))
        stack[-1][1].append((s, t))
    while stack:
        close()
    return plan


def _parent_of(path: str) -> str:
    return path.rpartition("/")[0]


# -- reading a sharded version lazily -----------------------------------------------------------------
Loader = Callable[[str, str], Piece]  # (digest, where) -> the checked piece


class TreeEntries(LazyEntries):
    """The entries of a sharded version, read piece by piece as they are needed.

    ``len`` is the head's count (no piece read); iterating walks the pieces in path order and
    holds one directory at a time; indexing loads the whole list once (for the few readers that
    need every entry at hand). Immutable, so copies of a manifest share it.
    """

    def __init__(self, root: SubDir, load: Loader, where: str) -> None:
        self.root = root
        self._load = load
        self.where = where
        self._all: list[Entry] | None = None

    def __len__(self) -> int:
        return self.root.nfiles

    @property
    def total_size(self) -> int:
        return self.root.size

    def __repr__(self) -> str:
        return f"<TreeEntries {self.where}: {self.root.nfiles} entries, root {self.root.tree}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TreeEntries) and other.root == self.root:
            return True
        if isinstance(other, (list, TreeEntries)):
            return len(other) == len(self) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def piece(self, path: str, sd: SubDir) -> Piece:
        """The checked piece of the directory ``path`` whose record is ``sd``."""
        what = f"{self.where} directory {path or '/'!r}"
        p = self._load(sd.tree, what)
        check_totals(sd, p, what)
        return p

    def root_piece(self) -> Piece:
        return self.piece("", self.root)

    def __getitem__(self, i: Any) -> Any:
        if self._all is None:
            self._all = list(self)
        return self._all[i]

    def __iter__(self) -> Iterator[Entry]:
        if self._all is not None:
            return iter(self._all)
        return self.iter_under("", self.root)

    def iter_under(self, path: str, sd: SubDir) -> Iterator[Entry]:
        """The entries below directory ``path`` (record ``sd``), in path order, with full paths."""
        p = self.piece(path, sd)
        prefix = f"{path}/" if path else ""
        i = 0
        names = p.names
        for d in p.dirs_in_path_order():
            # a file sorts before the directory's entries when its name is below ``name + "/"``
            k = bisect.bisect_left(names, d.name + "/", i)
            yield from _prefixed(p.files[i:k], prefix)
            i = k
            yield from self.iter_under(prefix + d.name, d)
        yield from _prefixed(p.files[i:], prefix)

    def walk(self, seen: set[str] | None = None) -> Iterator[tuple[str, Piece]]:
        """(path, piece) of every directory, parents first; a piece in ``seen`` (digests, updated)
        is not read again, nor what is below it."""
        stack = [("", self.root)]
        while stack:
            path, sd = stack.pop()
            if seen is not None:
                if sd.tree in seen:
                    continue
                seen.add(sd.tree)
            p = self.piece(path, sd)
            yield path, p
            prefix = f"{path}/" if path else ""
            stack.extend((prefix + d.name, d) for d in reversed(p.dirs))

    def find_dir(self, path: str) -> tuple[SubDir, Piece] | None:
        """The record and piece of directory ``path`` ("" the root), or None."""
        sd = self.root
        p = self.root_piece()
        acc = ""
        for part in path.split("/") if path else []:
            nxt = next((d for d in p.dirs if d.name == part), None)
            if nxt is None:
                return None
            acc = f"{acc}/{part}" if acc else part
            sd, p = nxt, self.piece(acc, nxt)
        return sd, p


def _prefixed(files: list[Entry], prefix: str) -> Iterator[Entry]:
    if not prefix:
        return iter(files)
    return map(_new_entry, map(_with_path, map(prefix.__add__, map(_path_of, files)), files))


def _with_path(path: str, e: Entry) -> tuple[Any, ...]:
    return (path, *e[1:])


# -- the head: versions/<N>.json of a sharded version -------------------------------------------------
#: (project, piece digest, where it is needed) -> the checked piece (the Store's reader, cached)
ReadPiece = Callable[[str, str, str], Piece]


def head_bytes(m: Manifest, root: SubDir) -> bytes:
    """The head of a sharded version: what a format-1 manifest holds but its entries, and the root."""
    doc = {"format": FORMAT, "project": m.project, "artifact": m.artifact, "version": m.version, "type": m.type,
           "digest": m.digest, "created": m.created, "description": m.description, "metadata": m.metadata,
           "run": m.run, "commit_id": m.commit_id,
           "root": {"tree": root.tree, "count": root.nfiles, "dirs": root.ndirs, "size": root.size,
                    "subdirs": root.nsub}}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def parse_manifest(data: bytes, *, where: str, read_piece: ReadPiece | None) -> Manifest:
    """A manifest of either format read from a store; a sharded one's entries read through ``read_piece``."""
    def tree(doc: dict[str, Any]) -> TreeEntries:
        r = doc.get("root")
        if not isinstance(r, dict):
            raise CorruptData(f"{where}: the head names no root piece")
        nfiles, ndirs, size = _totals(r, f"{where}: the root")
        project = check_name(doc.get("project"), "project")
        assert read_piece is not None
        load: Loader = lambda digest, what: read_piece(project, digest, what)  # noqa: E731
        return TreeEntries(SubDir("", check_digest(r.get("tree")), nfiles, ndirs, size, _nsub(r, ndirs, f"{where}: the root")),
                           load, where)

    return Manifest.from_bytes(data, where=where, tree=tree if read_piece is not None else None)


def tree_of(m: Manifest) -> TreeEntries | None:
    """The lazy entries of a sharded version, None for a format-1 one."""
    return m.entries if isinstance(m.entries, TreeEntries) else None


__all__ = ["FORMAT", "Piece", "ReadPiece", "SubDir", "TreeEntries", "TreePlan", "head_bytes", "parse_manifest",
           "parse_piece", "piece_bytes", "plan_tree", "shard_min", "tree_of"]
