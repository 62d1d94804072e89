"""Deletion and gc of a store's versions and blobs, and the ordering that keeps commits safe.

:meth:`artfs._store.Store.delete_version` and :meth:`~artfs._store.Store.gc` call
:func:`delete_version` and :func:`gc`; a commit calls :func:`wait_for_deletions` (its step 2).

Invariants (with the store's, see :mod:`artfs._store`)
* Every blob named by an existing manifest exists: deletion removes a manifest before any blob,
  and removes only blobs no manifest, no young intent and no pending distributed part names.
* Every piece (:mod:`artfs._pieces`) reachable from an existing manifest exists: deletion and gc
  remove only pieces no manifest reaches and no young intent names (an intent's ``trees``; the
  blobs named by those of its pieces that exist are live too, :mod:`artfs._shards`).
* A version number is never reused: deletion writes ``deleted/<N>`` before removing the manifest.

Commit versus deletion (no locks, only ordering; needs list-after-write consistency, which local
disks and S3 give):

    commit:  1 write intent  2 wait for deletions listed now  3 check/upload blobs  4 create manifest  5 drop intent
    delete:  a write marker  b tombstone + remove manifest  c list intents + manifests  d delete unreferenced blobs  e drop marker

A deletion that started before step 1 is waited for in step 2, so step 3 sees its effect and
re-uploads whatever it removed. A deletion that starts after step 1 lists the intent in step c
(its marker came after the intent) and keeps the commit's blobs. Intents older than the grace
period (24 h) and markers older than ``MARKER_STALE`` are considered abandoned by crashed processes.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING

from . import _layout as L
from ._digest import check_digest
from ._aliaslog import iso_ns, remove_alias
from ._distributed import gc_groups, pending_blobs
from ._errors import ArtfsError, CorruptData, InvalidName, NotFound, StoreUnavailable
from ._index import update_index
from ._layout import blob_key
from ._manifest import Manifest
from ._names import check_name
from ._pieces import tree_of

if TYPE_CHECKING:
    from ._store import Store

INTENT_GRACE = 24 * 3600.0
MARKER_STALE = 600.0


class HasAliases(ArtfsError):
    """A version was not deleted because aliases point at it (the caller did not ask to remove them).

    The message speaks the API's language (``delete_aliases=True``); the CLI says ``--delete-aliases``.
    """

    def __init__(self, name: str, aliases: list[str]) -> None:
        self.name = name
        self.aliases = aliases
        super().__init__(f"{name} has {'alias' if len(aliases) == 1 else 'aliases'} {', '.join(aliases)}; "
                         "pass delete_aliases=True to delete it with them")


def wait_for_deletions(store: Store, project: str, *, timeout: float = MARKER_STALE) -> None:
    """Wait until the deletions running now (listed after our intent) are done.

    Deletions that start later see our intent, so they are not waited for: a steady stream of
    deletions must not starve a commit.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    waiting: set[str] | None = None
    while True:
        now = time.time()
        live = {o.key for o in store.backend.list(L.deleting_prefix(project)) if now - o.mtime < MARKER_STALE}
        waiting = live if waiting is None else waiting & live
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise StoreUnavailable(f"{project}: a deletion has been running for {timeout:.0f} s; try again later")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _marker(store: Store, project: str) -> str:
    key = L.deleting_key(project, uuid.uuid4().hex)
    store.backend.put(key, json.dumps({"created": time.time()}).encode())
    return key


def live_blobs(store: Store, project: str) -> set[str]:
    """Digests named by any manifest or by a young intent of ``project``."""
    return live_sets(store, project)[0]


def live_sets(store: Store, project: str) -> tuple[set[str], set[str]]:
    """(blob digests, piece digests) that any manifest or young intent of ``project`` needs."""
    live: set[str] = set()
    trees: set[str] = set()
    now = time.time()
    for o in store.backend.list(L.intents_prefix(project)):
        if now - o.mtime > INTENT_GRACE:
            continue
        try:
            doc = json.loads(store.backend.get(o.key))
            live.update(d for d in doc.get("blobs", []) if isinstance(d, str))
            named = [d for d in doc.get("trees", []) if isinstance(d, str)]
        except (NotFound, ValueError, AttributeError):
            continue
        for t in named:
            trees.add(t)  # kept even if not written yet: it may be being written now
            try:  # the blobs of the pieces a commit in flight reuses or wrote already
                p = store.read_piece(project, t, f"intent {o.key}")
            except ArtfsError:  # not written yet: the blobs it will name are in the intent's own list
                continue
            live.update(e.digest for e in p.files if e.digest)
    seen: set[str] = set()
    for a in store.artifacts(project):
        for n in store.versions(project, a):
            try:
                _add_version(store.manifest(project, a, n), live, trees, seen)
            except NotFound:
                continue
    # after the intents: an upsert drops its intent only once its part is written
    live |= pending_blobs(store, project)
    return live, trees


def _add_version(m: Manifest, blobs: set[str], trees: set[str], seen: set[str]) -> None:
    """Add what ``m`` needs; pieces in ``seen`` (walked for another version) are not read again."""
    t = tree_of(m)
    if t is None:
        blobs.update(e.digest for e in m.entries if e.digest)
        return
    for _, p in t.walk(seen):
        trees.add(p.digest)
        blobs.update(e.digest for e in p.files if e.digest)


def delete_version(store: Store, project: str, artifact: str, n: int, *, delete_aliases: bool = False) -> list[str]:
    """Delete vN and at once every blob nothing else needs; returns the aliases removed."""
    m = store.manifest(project, artifact, n)
    aliases = store.aliases(project, artifact)
    own = sorted(a for a, v in aliases.items() if v == n and a != "latest")
    if own and not delete_aliases:
        raise HasAliases(f"{project}/{artifact}:v{n}", own)
    for a in own + (["latest"] if aliases.get("latest") == n else []):
        try:  # recorded in the alias's history, as any removal (artfs._aliaslog)
            remove_alias(store, project, artifact, a, reason=f"v{n} deleted", index=False)
        except (NotFound, InvalidName):  # removed meanwhile, or the automatic latest
            pass
    marker = _marker(store, project)
    try:
        # the tombstone comes first: from now on no commit takes the number n again
        store.backend.put(L.deleted_key(project, artifact, n), json.dumps({"commit_id": m.commit_id, "created": m.created,
                                                                           "deleted": iso_ns(time.time_ns())}).encode())
        store.backend.delete(L.version_key(project, artifact, n))
        store.forget_manifest(project, artifact, n)
        store.backend.delete(L.info_key(project, artifact, n))
        dkey = L.digest_key(project, artifact, m.digest)
        try:
            if store.backend.get(dkey).decode().strip() == str(n):
                store.backend.delete(dkey)
        except NotFound:
            pass
        live, live_trees = live_sets(store, project)
        mine: set[str] = set()
        mine_trees: set[str] = set()
        _add_version(m, mine, mine_trees, set())
        for d in mine - live:  # a blob only a reference's digest names is unused too
            store.backend.delete(blob_key(project, d))
        for t in mine_trees - live_trees:
            store.backend.delete(L.tree_key(project, t))
    finally:
        store.backend.delete(marker)
    update_index(store, project, artifact)
    return own


def gc(store: Store, project: str, *, dry_run: bool = False) -> dict[str, int]:
    """Remove blobs no version and no young intent needs, and stale intents/markers/temp files."""
    check_name(project, "project")
    marker = _marker(store, project)
    removed = freed = stale = trees_removed = 0
    try:
        groups = gc_groups(store, project, dry_run=dry_run)  # abandoned groups first: their blobs go too
        live, live_trees = live_sets(store, project)
        now = time.time()
        for o in store.backend.list(L.blobs_prefix(project)):
            parts = o.key.split("/")
            d = f"{parts[-3]}:{parts[-1]}" if len(parts) >= 4 else ""
            try:
                check_digest(d)
            except CorruptData:
                continue
            if d not in live:
                removed += 1
                freed += o.size
                if not dry_run:
                    store.backend.delete(o.key)
        for o in store.backend.list(L.trees_prefix(project)):
            t = L.digest_of_tree_key(project, o.key)
            if t is not None and t not in live_trees:
                trees_removed += 1
                if not dry_run:
                    store.backend.delete(o.key)
        for o in list(store.backend.list(L.intents_prefix(project))):
            if now - o.mtime > INTENT_GRACE:
                stale += 1
                if not dry_run:
                    store.backend.delete(o.key)
        for o in list(store.backend.list(L.deleting_prefix(project))):
            if o.key != marker and now - o.mtime > MARKER_STALE:
                stale += 1
                if not dry_run:
                    store.backend.delete(o.key)
        if not dry_run:
            stale += store.backend.gc_tmp(INTENT_GRACE)
    finally:
        store.backend.delete(marker)
    return {"blobs_removed": removed, "bytes_freed": freed, "stale_removed": stale, "groups_removed": groups,
            "pieces_removed": trees_removed}
