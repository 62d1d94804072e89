"""The memo of parsed manifests a :class:`~artfs.Store` keeps in memory.

Manifests never change, and parsing a million entries takes seconds while a commit needs its
base's several times: the last few parsed ones are kept (at most :data:`MEMO_MANIFESTS`, and at
most :data:`MEMO_ENTRIES` entries in all; a larger manifest is not kept). What is kept is never
handed out: :meth:`ManifestMemo.get` returns a copy that shares nothing mutable with it (the
entry list and the metadata; entries are immutable tuples), so a caller may change what it gets.
Thread-safe.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from collections import OrderedDict
from operator import attrgetter

from ._digest import check_digest
from ._errors import ArtfsError
from ._manifest import LazyEntries, Manifest, _digests_ok
from ._names import check_paths

MEMO_MANIFESTS = 4
MEMO_ENTRIES = 4_000_000

_digest_of = attrgetter("digest")
_path_of = attrgetter("path")
_size_of = attrgetter("size")
_executable_of = attrgetter("executable")
_ref_of = attrgetter("ref")
_ref_info_of = attrgetter("ref_info")


class ManifestMemo:
    """The last few parsed manifests, by (project, artifact, version)."""

    def __init__(self) -> None:
        self._memo: OrderedDict[tuple[str, str, int], Manifest] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, project: str, artifact: str, n: int) -> Manifest | None:
        """A copy of the kept manifest of vN, or None."""
        key = (project, artifact, n)
        with self._lock:
            m = self._memo.get(key)
            if m is None:
                return None
            self._memo.move_to_end(key)
        return copy_manifest(m)

    def remember(self, m: Manifest) -> None:
        """Keep ``m`` (not to be changed any more)."""
        if _weight(m) > MEMO_ENTRIES:
            return
        with self._lock:
            self._memo[(m.project, m.artifact, m.version)] = m
            self._memo.move_to_end((m.project, m.artifact, m.version))
            total = sum(map(_weight, self._memo.values()))
            while len(self._memo) > MEMO_MANIFESTS or total > MEMO_ENTRIES:
                _, old = self._memo.popitem(last=False)
                total -= _weight(old)

    def remember_written(self, m: Manifest) -> None:
        """Keep the manifest a commit just wrote, when it is exactly what parsing its bytes would give
        (plain entries with valid paths and digests, JSON metadata); else the next read parses it."""
        es = m.entries
        if isinstance(es, LazyEntries):
            self.remember(m)
            return
        if not (set(map(type, map(_executable_of, es))) <= {bool} and set(map(type, map(_size_of, es))) <= {int}
                and list(map(_ref_of, es)).count(None) == len(es)
                and list(map(_ref_info_of, es)).count(None) == len(es)
                and all(isinstance(x, (str, type(None))) for x in (m.description, m.run, m.commit_id))
                and isinstance(m.type, str) and m.type and isinstance(m.created, str) and m.created
                and (not es or _digests_ok(list(map(_digest_of, es))))):
            return
        try:
            check_paths(list(map(_path_of, es)))
            check_digest(m.digest)
        except ArtfsError:
            return
        self.remember(dataclasses.replace(m, entries=list(es), metadata=json.loads(json.dumps(m.metadata))))

    def forget(self, project: str, artifact: str, n: int) -> None:
        with self._lock:
            self._memo.pop((project, artifact, n), None)


def copy_manifest(m: Manifest) -> Manifest:
    """A copy of ``m`` that shares nothing mutable with it (entries are immutable tuples; the lazy
    entries of a sharded version are immutable as a whole, so copies share them)."""
    es = m.entries if isinstance(m.entries, LazyEntries) else list(m.entries)
    return dataclasses.replace(m, entries=es, metadata=copy.deepcopy(m.metadata))


def _weight(m: Manifest) -> int:
    """Entries a kept manifest holds in memory (a sharded one's pieces are kept elsewhere: 0)."""
    return 0 if isinstance(m.entries, LazyEntries) else len(m.entries)
