"""The store's side of sharded manifests (:mod:`artfs._pieces`): reading pieces through the
cache, and the part of a commit that writes them.

Reading. A piece is read from memory (the last pieces read, at most :data:`MEMO_WEIGHT` entries
in all), else from the cache (``manifests/<store>/<p>/trees/...``, checked against its digest:
a damaged copy is dropped and fetched again), else from the store (one GET; over HTTPS a plain
GET of a key named by its digest, so no listing or index is needed), then checked and cached.
A piece a head names that the store lacks is ``CorruptData`` (a store that lost data).

Committing (:class:`ShardedCommit`, driven by :meth:`artfs._store.Store.commit`). Before the
intent, the new version's pieces are planned (digests only) and compared with the base's from
the root down: a directory whose piece equals the base's at the same path is *known* (it exists,
and so does everything below it and every blob it names, while the base's manifest exists), and
its subtree is not looked at; only pieces on changed paths are read from the base. The intent
names every piece of the new version (``"trees"``) and only the blobs of pieces that are not
known, so a deletion or gc that starts after the intent keeps both (it walks the pieces an intent
names that exist: :func:`artfs._gc.live_sets`); a one-file change to 10M entries writes an intent
of a few KB per directory level, not one of every digest. If the base's manifest is gone after
the intent (deleted meanwhile), nothing is known: the intent is written again with every blob,
deletions are waited for again, and every piece and blob is checked. Pieces the store lacks are
written after the blobs, all at once and durable as a batch (:func:`put_pieces`: on the
local store one sync of their bytes before any is renamed under its key, then one of their names,
not an fsync per piece), and only then is the head created (exclusively), so no head ever names
a piece that is not there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Sequence

from . import _layout as L
from ._errors import CorruptData, NotFound
from ._manifest import Entry, Manifest
from ._pieces import DirPlan, Piece, SubDir, TreeEntries, TreePlan, parse_piece, piece_digest, plan_tree, tree_of

if TYPE_CHECKING:
    from ._store import Store

MEMO_WEIGHT = 200_000


class PieceReader:
    """Pieces of one store's projects, read through a small memo and the cache. Thread-safe."""

    def __init__(self, store: "Store") -> None:
        self.store = store
        self._memo: OrderedDict[str, Piece] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()
        self.reads = 0  # pieces fetched from the store (tests and benchmarks count them)

    def read(self, project: str, digest: str, where: str) -> Piece:
        with self._lock:
            p = self._memo.get(digest)
            if p is not None:
                self._memo.move_to_end(digest)
                return p
        cpath = self.store.cache.tree_path(self.store.id, project, digest)
        data: bytes | None = None
        with contextlib.suppress(OSError):
            with open(cpath, "rb") as f:
                data = f.read()
            if piece_digest(data) != digest:  # a damaged cache copy: fetched again
                os.unlink(cpath)
                data = None
        fetched = data is None
        if data is None:
            try:
                data = self.store.backend.get(L.tree_key(project, digest))
            except NotFound:
                raise CorruptData(f"{where}: piece {digest} is missing from the store") from None
            self.reads += 1
        p = parse_piece(data, digest, where)
        if fetched:
            with contextlib.suppress(OSError):
                self.store.cache.write_small(cpath, data)
        self.remember(p)
        return p

    def remember(self, p: Piece) -> None:
        w = p.weight()
        if w > MEMO_WEIGHT:
            return
        with self._lock:
            if p.digest in self._memo:
                return
            self._memo[p.digest] = p
            self._weight += w
            while self._weight > MEMO_WEIGHT:
                _, old = self._memo.popitem(last=False)
                self._weight -= old.weight()


def put_pieces(store: "Store", project: str, items: list[tuple[str, bytes]]) -> None:
    """Write pieces ((digest, bytes) each), durable as a batch: where the store stages (the local
    store) each is staged beside its key without an fsync (:meth:`Backend.staging`), all are
    synced at once (:meth:`Staging.sync`: one ``syncfs`` for many), only then placed under their
    keys, and their names synced (:meth:`Backend.flush`). A crash point of the sharded commit
    (tests/crashpoints.py), after which no head exists yet."""
    from ._parallel import STORE_WORKERS, pmap

    backend = store.backend
    keys = [L.tree_key(project, d) for d, _ in items]
    if not backend.stages or len(items) <= 1:
        pmap(lambda i: backend.put(keys[i], items[i][1]), range(len(items)), STORE_WORKERS)
        backend.flush(keys)
        return
    staging = backend.staging(project)
    staged: list[str] = []
    placed = 0
    try:
        for key, (_, data) in zip(keys, items):
            if staging.put_small(key, data):  # False: the store has it (or this batch staged it)
                staged.append(key)
        staging.sync()
        for key in staged:
            staging.place(key)
            placed += 1
    finally:
        for key in staged[placed:]:
            staging.discard(key)
    backend.flush(keys)


class ShardedCommit:
    """The pieces of one commit: planned, compared with the base, written (see the module docstring)."""

    def __init__(self, store: "Store", project: str, entries: Sequence[Entry], base: Manifest | None) -> None:
        self.store = store
        self.project = project
        self.plan: TreePlan = plan_tree(entries)
        self.base_tree = tree_of(base) if base is not None else None
        self.unknown: list[DirPlan] = list(self.plan.dirs.values())
        if self.base_tree is not None:
            self.unknown = self._not_in_base()

    @property
    def root(self) -> SubDir:
        return self.plan.root

    @property
    def knows_base(self) -> bool:
        """Whether some pieces (and their blobs) are known from a sharded base."""
        return self.base_tree is not None

    def _not_in_base(self) -> list[DirPlan]:
        """The directories whose piece differs from the base's at the same path (read top-down:
        only the base's pieces on changed paths)."""
        assert self.base_tree is not None
        out: list[DirPlan] = []
        stack: list[tuple[str, SubDir | None]] = [("", self.base_tree.root)]
        while stack:
            path, old = stack.pop()
            d = self.plan.dirs[path]
            if old is not None and old.tree == d.sub.tree:
                continue
            out.append(d)
            old_dirs = {}
            if old is not None:
                old_dirs = {s.name: s for s in self.base_tree.piece(path, old).dirs}
            prefix = f"{path}/" if path else ""
            stack.extend((prefix + s.name, old_dirs.get(s.name)) for s in d.dirs)
        return out

    def forget_base(self) -> None:
        """The base is gone: nothing is known any more."""
        self.base_tree = None
        self.unknown = list(self.plan.dirs.values())

    def trees(self) -> list[str]:
        return self.plan.digests()

    def new_blobs(self) -> list[str]:
        """The blobs named by pieces that are not known (the ones the intent lists)."""
        out: set[str] = set()
        for d in self.unknown:
            for s, t in d.runs:
                out.update(e.digest for e in self.plan.entries[s:t] if e.digest and e.ref is None)
        return sorted(out)

    def lazy(self, m: Manifest) -> Manifest:
        """``m`` (just committed) with its entries read from its pieces, as a reader gets it."""
        where = f"{m.project}/{m.artifact}:v{m.version}"
        reader = self.store.read_piece
        project = self.project
        return dataclasses.replace(m, entries=TreeEntries(self.root, lambda d, w: reader(project, d, w), where))

    def write_pieces(self) -> int:
        """Write the pieces the store lacks (children first), durable; returns how many."""
        store, project = self.store, self.project
        todo: dict[str, DirPlan] = {}
        for d in self.unknown:
            todo.setdefault(d.sub.tree, d)
        keys = {L.tree_key(project, t): t for t in todo}
        missing = store.backend.missing(list(keys))
        order = sorted((todo[keys[k]] for k in missing), key=lambda d: -d.depth)
        items = [(d.sub.tree, self.plan.bytes_of(d)) for d in order]
        put_pieces(store, project, items)
        for t, data in items:
            with contextlib.suppress(OSError):
                store.cache.write_small(store.cache.tree_path(store.id, project, t), data)
        return len(items)
