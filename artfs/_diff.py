"""What changed between two versions: a diff of their manifests, never of their bytes.

Both manifests are sorted by path (:mod:`artfs._manifest`), so the diff is a merge walk. The walk
compares runs of entries a slice at a time (list equality, in C) and steps entry by entry only
around a difference, found by bisecting the first unequal slice: two versions of a million
files that differ in a thousand cost a million C comparisons and a few thousand Python steps
(0.1 s measured), not a million Python steps. The garbage collector is paused meanwhile.

What a change is, for one path:

* ``added``: in the new version only; ``removed``: in the old one only;
* ``moved``: removed at one path and added at another with the same content (the same digest,
  or for a reference without a digest the same URI and object identity); when several removed
  paths share the content of several added ones, they pair up by equal file names first, then
  in path order, and what is left stays added or removed;
* ``changed``: at the same path in both, with ``aspects`` saying what differs: ``content``
  (digest or size), ``executable`` (the executable bit) and ``reference`` (the URI, or what
  identifies the object: ETag, version id, generation, checksum). A moved file whose executable
  bit changed too has the aspect ``executable``.

Two sharded versions (:mod:`artfs._pieces`) are compared piece by piece from the root: a
directory whose piece is the same in both is skipped without being read, so a one-file change
in 10M entries reads the pieces on that file's path and nothing else. The counts and sizes come
from the heads. Any other pair (format 1, or one of each) is compared as two lists.

Fields of ``ref_info`` that say when an object was seen, not which it is, are no change (the
version digest ignores them too). A copy (new path, same content, old path kept) is ``added``.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Sequence

from ._manifest import REF_IDENTITY, Entry, LazyEntries, gc_paused
from ._pieces import SubDir, TreeEntries, _prefixed

#: statuses, in the order a ``--stat`` lists them
STATUSES = ("added", "removed", "changed", "moved")
#: what may differ between two entries at one path (or of a moved entry: ``executable``)
ASPECTS = ("content", "executable", "reference")


def ref_identity(e: Entry) -> dict[str, Any]:
    """What identifies a reference's object (ETag, version id, ...): ``{}`` for a plain entry."""
    info = e.ref_info or {}
    return {k: info[k] for k in REF_IDENTITY if k in info}


@dataclass(frozen=True)
class FileChange:
    """One changed file: its entries before (``old``) and after (``new``); None on the side it lacks."""

    status: str
    old: Entry | None
    new: Entry | None
    aspects: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """The path in the new version (in the old one for a removed file)."""
        e = self.new or self.old
        assert e is not None
        return e.path

    @property
    def old_path(self) -> str | None:
        """Where a moved file was (None for every other status)."""
        return self.old.path if self.status == "moved" and self.old is not None else None

    @property
    def size(self) -> int:
        """The file's size after the change (before it, for a removed file)."""
        e = self.new or self.old
        assert e is not None
        return e.size

    def to_json(self) -> dict[str, Any]:
        """The change as ``artfs diff --json`` prints it: ``old``/``new`` hold each side's entry."""
        doc: dict[str, Any] = {"status": self.status, "path": self.path}
        if self.old_path is not None:
            doc["old_path"] = self.old_path
        if self.aspects:
            doc["aspects"] = list(self.aspects)
        for side, e in (("old", self.old), ("new", self.new)):
            if e is None:
                continue
            d: dict[str, Any] = {"size": e.size, "digest": e.digest, "executable": e.executable}
            if e.ref is not None:
                d["ref"] = e.ref
                ident = ref_identity(e)
                if ident:
                    d["ref_identity"] = ident
            doc[side] = d
        return doc


@dataclass
class ArtifactDiff:
    """What changed from version ``old`` to version ``new`` (names like ``p/a:v3``): every changed
    file, sorted by path, and the size of both versions. True when anything changed."""

    old: str
    new: str
    changes: list[FileChange]
    old_files: int = 0
    new_files: int = 0
    old_size: int = 0
    new_size: int = 0
    _by_status: dict[str, list[FileChange]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def _of(self, status: str) -> list[FileChange]:
        if not self._by_status:
            groups: dict[str, list[FileChange]] = {s: [] for s in STATUSES}
            for c in self.changes:
                groups[c.status].append(c)
            self._by_status.update(groups)
        return self._by_status[status]

    @property
    def added(self) -> list[FileChange]:
        """Files only in the new version."""
        return self._of("added")

    @property
    def removed(self) -> list[FileChange]:
        """Files only in the old version."""
        return self._of("removed")

    @property
    def changed(self) -> list[FileChange]:
        """Files at the same path in both whose content, executable bit or reference differs."""
        return self._of("changed")

    @property
    def moved(self) -> list[FileChange]:
        """Files whose content left one path for another."""
        return self._of("moved")

    def stat(self) -> dict[str, Any]:
        """Counts and bytes per status (``artfs diff --stat --json``): raw numbers, no formatting."""
        ch = self.changed
        return {
            "old": {"name": self.old, "files": self.old_files, "bytes": self.old_size},
            "new": {"name": self.new, "files": self.new_files, "bytes": self.new_size},
            "added": {"files": len(self.added), "bytes": sum(c.size for c in self.added)},
            "removed": {"files": len(self.removed), "bytes": sum(c.size for c in self.removed)},
            "changed": {"files": len(ch), "bytes_before": sum(c.old.size for c in ch if c.old),
                        "bytes_after": sum(c.new.size for c in ch if c.new),
                        **{a: sum(1 for c in ch if a in c.aspects) for a in ASPECTS}},
            "moved": {"files": len(self.moved), "bytes": sum(c.size for c in self.moved)},
        }

    def to_json(self, *, limit: int | None = None) -> dict[str, Any]:
        """The diff as JSON: ``stat`` and the first ``limit`` changes (all when None);
        ``truncated`` says whether changes were left out."""
        shown = self.changes if limit is None else self.changes[:limit]
        return {"old": self.old, "new": self.new, "stat": self.stat(),
                "changes": [c.to_json() for c in shown], "truncated": len(shown) < len(self.changes)}


# -- the walk ------------------------------------------------------------------------------------
_FIRST_BLOCK = 64
_MAX_BLOCK = 1 << 16


def _first_mismatch(old: Sequence[Entry], i: int, new: Sequence[Entry], j: int, n: int) -> int:
    """The first k < n with ``old[i+k] != new[j+k]``, knowing the slices of length n differ."""
    lo, hi = 0, n  # old[i:i+lo] == new[j:j+lo]; the first difference lies in [lo, hi)
    while hi - lo > 8:
        mid = (lo + hi) // 2
        if old[i + lo:i + mid] == new[j + lo:j + mid]:
            lo = mid
        else:
            hi = mid
    while old[i + lo] == new[j + lo]:
        lo += 1
    return lo


def _walk(old: Sequence[Entry], new: Sequence[Entry]) -> tuple[list[Entry], list[Entry], list[tuple[Entry, Entry]]]:
    """(only in old, only in new, unequal at the same path) of two path-sorted entry lists."""
    gone: list[Entry] = []
    came: list[Entry] = []
    both: list[tuple[Entry, Entry]] = []
    if old == new:
        return gone, came, both
    i = j = 0
    no, nn = len(old), len(new)
    block = _FIRST_BLOCK
    while i < no and j < nn:
        x, y = old[i], new[j]
        if x == y:  # in step: skip what is equal a slice at a time, growing while it lasts
            b = min(block, no - i, nn - j)
            if old[i:i + b] == new[j:j + b]:
                i += b
                j += b
                block = min(block * 2, _MAX_BLOCK)
            else:
                k = _first_mismatch(old, i, new, j, b)
                i += k
                j += k
                block = _FIRST_BLOCK
            continue
        px, py = x.path, y.path  # a difference: one entry at a time until the two agree again
        if px == py:
            both.append((x, y))
            i += 1
            j += 1
        elif px < py:
            gone.append(x)
            i += 1
        else:
            came.append(y)
            j += 1
    gone.extend(old[i:])
    came.extend(new[j:])
    return gone, came, both


def _aspects(x: Entry, y: Entry) -> tuple[str, ...]:
    out = []
    if x.digest != y.digest or x.size != y.size:
        out.append("content")
    if x.executable != y.executable:
        out.append("executable")
    if (x.ref is not None or y.ref is not None) and (x.ref != y.ref or ref_identity(x) != ref_identity(y)):
        out.append("reference")
    return tuple(out)


def _content_key(e: Entry) -> Any:
    """What a move keeps: the digest, or for a reference without one its URI, identity and size."""
    if e.digest is not None:
        return e.digest
    return ("ref", e.ref, json.dumps(ref_identity(e), sort_keys=True), e.size)


def _basename(e: Entry) -> str:
    return e.path.rpartition("/")[2]


def _pair_moves(gone: list[Entry], came: list[Entry]) -> tuple[list[tuple[Entry, Entry]], list[Entry], list[Entry]]:
    """(moves (old, new), still removed, still added): same content, equal file names first.

    Linear in the entries: a renamed directory of 100,000 empty files (one digest) pairs in one pass.
    """
    by_key: dict[Any, list[Entry]] = defaultdict(list)
    for e in gone:
        by_key[_content_key(e)].append(e)
    moves: list[tuple[Entry, Entry]] = []
    added: list[Entry] = []
    pending: dict[Any, list[Entry]] = defaultdict(list)
    for e in came:
        k = _content_key(e)
        if k in by_key:
            pending[k].append(e)
        else:
            added.append(e)
    paired: set[str] = set()
    for k, news in pending.items():
        olds = by_key[k]
        by_name: dict[str, deque[Entry]] = defaultdict(deque)
        for o in olds:
            by_name[_basename(o)].append(o)
        left: list[Entry] = []
        for n in news:  # the same file name first: data/a.csv -> archive/a.csv
            q = by_name.get(_basename(n))
            if q:
                o = q.popleft()
                moves.append((o, n))
                paired.add(o.path)
            else:
                left.append(n)
        rest = deque(o for o in olds if o.path not in paired)
        for n in left:
            if rest:
                o = rest.popleft()
                moves.append((o, n))
                paired.add(o.path)
            else:
                added.append(n)
    removed = [e for e in gone if e.path not in paired]
    return moves, removed, added


def diff_entries(old: Sequence[Entry], new: Sequence[Entry], *, old_name: str = "old",
                 new_name: str = "new") -> ArtifactDiff:
    """The diff of two path-sorted entry lists (two manifests' ``entries``)."""
    with gc_paused():  # no cycles are made; a collection would walk the millions of entries alive
        return _diff(old, new, old_name, new_name)


def _walk_trees(old: TreeEntries, new: TreeEntries) -> tuple[list[Entry], list[Entry], list[tuple[Entry, Entry]]]:
    """:func:`_walk` of two sharded versions, reading only the pieces that differ."""
    gone: list[Entry] = []
    came: list[Entry] = []
    both: list[tuple[Entry, Entry]] = []

    def rec(path: str, a: SubDir, b: SubDir) -> None:
        if a.tree == b.tree:
            return
        pa, pb = old.piece(path, a), new.piece(path, b)
        prefix = f"{path}/" if path else ""
        g, c, bo = _walk(list(_prefixed(pa.files, prefix)), list(_prefixed(pb.files, prefix)))
        gone.extend(g)
        came.extend(c)
        both.extend(bo)
        da = {d.name: d for d in pa.dirs}
        db = {d.name: d for d in pb.dirs}
        for name in sorted(da.keys() | db.keys()):
            x, y = da.get(name), db.get(name)
            if x is not None and y is not None:
                rec(prefix + name, x, y)
            elif x is not None:
                gone.extend(old.iter_under(prefix + name, x))
            elif y is not None:
                came.extend(new.iter_under(prefix + name, y))

    rec("", old.root, new.root)
    gone.sort(key=_path_of)
    came.sort(key=_path_of)
    both.sort(key=lambda t: t[0].path)
    return gone, came, both


def _total(es: Sequence[Entry]) -> int:
    return es.total_size if isinstance(es, LazyEntries) else sum(map(_size_of, es))


def _diff(old: Sequence[Entry], new: Sequence[Entry], old_name: str, new_name: str) -> ArtifactDiff:
    if isinstance(old, TreeEntries) and isinstance(new, TreeEntries):
        gone, came, both = _walk_trees(old, new)
    else:
        gone, came, both = _walk(old if isinstance(old, list) else list(old),
                                 new if isinstance(new, list) else list(new))
    changes: list[FileChange] = []
    for x, y in both:
        aspects = _aspects(x, y)
        if aspects:  # unequal only in what says when a reference was seen: no change
            changes.append(FileChange("changed", x, y, aspects))
    moves, removed, added = _pair_moves(gone, came)
    changes += [FileChange("moved", x, y, ("executable",) if x.executable != y.executable else ())
                for x, y in moves]
    changes += [FileChange("removed", x, None) for x in removed]
    changes += [FileChange("added", None, y) for y in added]
    changes.sort(key=lambda c: c.path)
    return ArtifactDiff(old_name, new_name, changes, len(old), len(new), _total(old), _total(new))


_size_of = attrgetter("size")
_path_of = attrgetter("path")


def bounded_json(d: ArtifactDiff, max_bytes: int, **extra: Any) -> bytes:
    """The diff as UTF-8 JSON (keys sorted) of at most ``max_bytes``: ``stat`` always, then as many
    changes (in path order) as fit; ``truncated`` says whether some were left out and ``omitted``
    how many (``user.artfs.diff_parent``: an extended attribute's value is at most 64 KiB)."""
    def dump(doc: Any) -> bytes:
        return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()

    doc: dict[str, Any] = {**extra, "old": d.old, "new": d.new, "stat": d.stat(), "changes": [],
                           "truncated": True, "omitted": len(d.changes)}
    used = len(dump(doc))
    if used > max_bytes:
        raise ValueError(f"{max_bytes} bytes cannot hold even the diff's counts")
    shown: list[dict[str, Any]] = []
    for c in d.changes:
        cj = c.to_json()
        size = len(dump(cj)) + 1  # and its comma
        if used + size > max_bytes:
            break
        shown.append(cj)
        used += size
    doc["changes"] = shown
    doc["truncated"] = len(shown) < len(d.changes)
    doc["omitted"] = len(d.changes) - len(shown)
    return dump(doc)
