"""Distributed writers, the finisher's side: merge the parts into one version, exactly once.

The store layout and the upsert protocol are in :mod:`artfs._groups_parts`; the overview in
:mod:`artfs._distributed`.

Finish (exactly once; racing finishers yield one version and all learn its number)::

    a finished.json exists                  -> that version (nothing else happens)
    b exclusive create finish/<k>.json      -> we hold claim k (k = 0, or one past a dead claim)
    c list and read every part; merge them with the finisher's own files
        conflicting paths                   -> drop the claim, raise PartsConflict (parts kept)
    d put the claim again with the parts it merged (writer -> part id); an intent naming the
      parts' blobs, wait for deletions, check that no merged part was replaced meanwhile
    e Store.commit(..., commit_id of the claim): the version, exactly once per claim
    f put finished.json; delete the merged parts and the claims

While it holds a claim, the finisher re-puts it every ``HEARTBEAT`` seconds. Other finishers
wait while the newest claim is alive; a claim that nobody has refreshed for ``CLAIM_STALE``
seconds *as observed by the waiter's own clock* (no comparison of clocks between machines) was
left by a finisher that died: a waiter first looks for a version carrying that claim's commit
id (the dead finisher may have got as far as e; then it writes finished.json from that claim),
and otherwise takes over with claim k+1. The one assumption (the same kind the store makes for
deletion markers): a finisher is never frozen for longer than ``CLAIM_STALE`` between b and e.

Why the parts are read *after* the claim (c after b): an upsert checks the finish state after its
part is written (6). Either its check saw no claim, so the claim came later and the finisher's
listing sees the part; or it saw a claim, and it waits for finished.json and reports whether its
part (by its part id) is in the version (``GroupFinished`` if not). So no upsert is told "ok"
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections import Counter
from operator import attrgetter
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ._errors import AlreadyExists, ArtfsError, CorruptData, InvalidPath, NotFound, StoreUnavailable
from ._groups_parts import (_G, _POLL, _WORKERS, WAIT_TIMEOUT, PartsConflict, _check, _claims, _parse_part, _Part,
                            _read_json, _read_parts, artifact_entries)
from ._lineage import parse_run_path, record_edge
from ._manifest import REF_IDENTITY, Entry, gc_paused
from . import _layout as L
from ._names import check_alias, check_name
from ._parallel import pmap
from ._results import CommitResult

if TYPE_CHECKING:
    from ._artifact import Artifact
    from ._store import Store

#: how often a finisher re-puts its claim, and after how long without that a claim is dead
HEARTBEAT = 5.0
CLAIM_STALE = 60.0


# -- finish --------------------------------------------------------------------------------------------
def merge(parts: list[_Part], own: Iterable[Entry] = ()) -> list[Entry]:
    """The union of the parts' entries and ``own``; PartsConflict names every path that disagrees.

    One path may come from several parts when they agree on its content (digest, executable bit,
    reference and what identifies the referenced object). A file in one part under a path that
    is a directory in another is found by ``check_entries`` (``Store.commit`` calls it first,
    before it writes anything), which :func:`finish` turns into a PartsConflict too.
    """
    with gc_paused():
        groups = [p.entries for p in parts] + [list(own)]
        owners = [p.writer for p in parts] + ["the finisher"]
        out: list[Entry] = [e for es in groups for e in es]
        paths = list(map(_path_of, out))
        if len(set(paths)) != len(paths):  # some path comes from several parts: one copy, if they agree
            counts = Counter(paths)
            dups = {p for p, c in counts.items() if c > 1}
            out = [e for e in out if e.path not in dups]
            first: dict[str, tuple[Any, int, Entry]] = {}
            conflicts: list[str] = []
            for owner, es in enumerate(groups):
                for e in es:
                    if e.path not in dups:
                        continue
                    key = _content(e)
                    seen = first.get(e.path)
                    if seen is None:
                        first[e.path] = (key, owner, e)
                    elif seen[0] != key and e.path not in conflicts:
                        conflicts.append(e.path)
                        first[e.path] = (seen[0], seen[1], e._replace(path=f"{e.path} (writers {owners[seen[1]]} "
                                                                          f"and {owners[owner]})"))
            if conflicts:
                _raise_conflict(sorted(first[p][2].path for p in conflicts))
            out += [first[p][2] for p in dups]
    return out  # unsorted: Store.commit sorts and checks (a file where another part has a directory)


_path_of = attrgetter("path")
_PART_ID = re.compile(rb'"part_id":\s*"([0-9a-f]{1,64})"')


def _content(e: Entry) -> Any:
    if e.ref is None:
        return (e.digest, e.executable)
    ident = tuple((k, (e.ref_info or {}).get(k)) for k in REF_IDENTITY)
    return (e.digest, e.executable, e.ref, ident, e.size if e.digest is None else None)


def _raise_conflict(conflicts: list[str]) -> None:
    paths = [c.split(" (writers ", 1)[0] for c in conflicts]
    more = f" (and {len(conflicts) - 20} more)" if len(conflicts) > 20 else ""
    raise PartsConflict("parts give different content to " + "; ".join(conflicts[:20]) + more
                        + "; nothing was committed and the parts are kept: upsert the corrected files "
                          "from the writers concerned, then finish again", paths)


class _Heartbeat:
    """Re-puts a claim every ``HEARTBEAT`` seconds until stopped (a finisher shows it is alive)."""

    def __init__(self, store: "Store", key: str, doc: dict[str, Any]) -> None:
        self.store, self.key, self.doc = store, key, doc
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="artfs-finish-heartbeat", daemon=True)
        self._thread.start()

    def update(self, **kv: Any) -> None:
        with self._lock:
            self.doc.update(kv)
            self._put()

    def _put(self) -> None:
        self.doc["alive"] = time.time()
        self.store.backend.put(self.key, json.dumps(self.doc).encode())

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                with self._lock:
                    if not self._stop.is_set():
                        self._put()
            except ArtfsError:
                pass  # the store is down: so is our commit, which will say so

    def stop(self) -> None:
        """After this returns the claim is never written again (it may be deleted)."""
        with self._lock:
            self._stop.set()
        self._thread.join()


def finish(store: "Store", project: str, artifact: str, group: str, *, type: str = "unspecified",
           entries: Iterable[Entry] = (), sources: dict[str, Callable[[str], None] | str] | None = None,
           description: str | None = None, metadata: dict[str, Any] | None = None, aliases: Iterable[str] = (),
           run: str | None = None, progress: Callable[[int], None] | None = None,
           timeout: float = WAIT_TIMEOUT) -> "CommitResult":
    """Merge every part of ``group`` (and ``entries``, the finisher's own files) into the next version.

    Exactly once: racing finishers yield one version, and each returns it (``created`` is True
    for the one that made it). Finishing a finished group returns its version. Waits at most
    ``timeout`` seconds for another finisher that is still alive; raises PartsConflict (nothing
    committed, parts kept) when parts disagree, NotFound when the group has no parts.
    """
    _check(project, artifact, group)
    aliases = [check_alias(a) for a in aliases]
    if type != "unspecified":
        check_name(type, "type")
    own = list(entries)
    gkey = (project, artifact, group)
    deadline = time.monotonic() + timeout
    seen: dict[str, tuple[float, float]] = {}  # claim key -> (mtime, when we first saw that mtime)
    while True:
        fin = _read_json(store, L.group_finished_key(*gkey))
        if fin is not None:
            return _finished_result(store, project, artifact, group, fin, aliases)
        claims = _claims(store, gkey)
        if claims:
            k, key, mtime = claims[-1]
            now = time.monotonic()
            if seen.get(key, (None, 0.0))[0] != mtime:
                seen[key] = (mtime, now)
            if now - seen[key][1] < CLAIM_STALE:  # its finisher is alive: wait for its result
                if now > deadline:
                    who = _read_json(store, key) or {}
                    raise StoreUnavailable(
                        f"{project}/{artifact}: group {group} is being finished by {who.get('host')} "
                        f"(pid {who.get('pid')}), still running after {timeout:.0f} s; try again later")
                time.sleep(_POLL)
                continue
            # the newest claim is dead; if its commit (or an older one's) landed, that is the result
            landed = _landed(store, project, artifact, group, claims)
            if landed is not None:
                return _finished_result(store, project, artifact, group, landed, aliases)
            k += 1  # otherwise take over
        else:
            k = 0
        versions = store.versions(project, artifact)
        claim_key = L.group_claim_key(project, artifact, group, k)
        doc: dict[str, Any] = {"commit_id": uuid.uuid4().hex, "created": time.time(), "alive": time.time(),
                               "host": socket.gethostname(), "pid": os.getpid(), "parts": None,
                               "after": versions[-1] if versions else -1}
        try:
            store.backend.put(claim_key, json.dumps(doc).encode(), exclusive=True)
        except AlreadyExists:
            continue  # another finisher got there first: wait for it
        return _commit_claim(store, project, artifact, group, claim_key, k, doc, own=own, type=type,
                             sources=sources, description=description, metadata=metadata, aliases=aliases,
                             run=run, progress=progress)


def _commit_claim(store: "Store", project: str, artifact: str, group: str, claim_key: str, k: int,
                  doc: dict[str, Any], *, own: list[Entry], type: str,
                  sources: dict[str, Callable[[str], None] | str] | None, description: str | None,
                  metadata: dict[str, Any] | None, aliases: list[str], run: str | None,
                  progress: Callable[[int], None] | None) -> "CommitResult":
    """Steps c-f for the holder of claim ``k``."""
    gkey = (project, artifact, group)
    beat = _Heartbeat(store, claim_key, doc)
    release = True  # drop the claim on the way out: nothing was committed under it
    ikey: str | None = None
    try:
        parts = _read_parts(store, project, artifact, group)
        if not parts and not own:
            raise NotFound(f"{project}/{artifact}: group {group} has no parts")
        merged = merge(parts, own)
        vtype = _merged_type(project, artifact, group, type, parts)
        md: dict[str, Any] = {}
        for p in parts:
            md.update(p.metadata)
        md.update(metadata or {})
        desc = description if description is not None else next((p.description for p in parts if p.description), None)
        part_ids = {p.writer: p.part_id for p in parts}
        aliases = list(dict.fromkeys(aliases + [a for p in parts for a in p.aliases]))
        beat.update(parts=part_ids)
        known = {e.digest for p in parts for e in p.entries if e.digest and e.ref is None}
        ikey = _protect(store, project, artifact, group, doc["commit_id"], parts, known)
        try:
            result = store.commit(
                project, artifact, type=vtype, entries=merged, sources=dict(sources or {}), description=desc,
                metadata=md, aliases=aliases, run=run, progress=progress, commit_id=doc["commit_id"],
                known_blobs=known)
        except InvalidPath as e:
            # check_entries, the first thing Store.commit does (nothing written yet): a file in one
            # part where another has a directory
            raise PartsConflict(f"{project}/{artifact}: the parts of group {group} conflict: {e}; nothing was "
                                f"committed and the parts are kept", [str(e)]) from None
        except BaseException:
            # Did the version land before the failure? Unsure (the store is down): keep the claim;
            # it goes stale and the next finisher looks for its commit id.
            try:
                n = store.find_commit(project, artifact, doc["commit_id"], after=doc["after"])
            except BaseException:
                release = False
                raise
            if n is not None:
                release = False
                beat.stop()
                _record(store, gkey, n, doc["commit_id"], part_ids, [p.key for p in parts], k)
            raise
        release = False
        if result.created:
            _contributors(store, project, artifact, result.version, parts)
    finally:
        beat.stop()
        if ikey is not None:
            store.backend.delete(ikey)
        if release:
            store.backend.delete(claim_key)
    _record(store, gkey, result.version, doc["commit_id"], part_ids, [p.key for p in parts], k)
    return result


def _protect(store: "Store", project: str, artifact: str, group: str, commit_id: str, parts: list[_Part],
             blobs: set[str]) -> str:
    """Keep the merged parts' blobs alive until the version exists; returns the intent's key.

    The parts protect their blobs, but a writer may replace its part while we finish (its old
    blobs are then garbage to a gc) and ``Store.commit`` is told not to check them. So, like a
    commit: an intent naming them, then wait for the deletions running now, then make sure no
    part we merged was replaced before the intent (the first KiB of each part, which holds its
    part id, is read again). A replaced part fails the finish (nothing committed): run it
    again, it merges the new part.
    """
    ikey = L.parts_intent_key(project, commit_id)
    store.backend.put(ikey, json.dumps({"created": time.time(), "artifact": artifact, "group": group,
                                        "blobs": sorted(blobs)}).encode())
    try:
        store.wait_for_deletions(project)

        def part_id(p: _Part) -> str | None:
            try:
                m = _PART_ID.search(store.backend.get_range(p.key, 0, 1024))
                return m.group(1).decode() if m else _parse_part(store.backend.get(p.key), p.key).part_id
            except NotFound:
                return None

        for p, now in zip(parts, pmap(part_id, parts, _WORKERS)):
            if now != p.part_id:
                raise ArtfsError(f"{project}/{artifact}: writer {p.writer} replaced its part of group {group} "
                                 f"while it was being finished; nothing was committed: finish again")
    except BaseException:
        store.backend.delete(ikey)
        raise
    return ikey


def _contributors(store: "Store", project: str, artifact: str, n: int, parts: list[_Part]) -> None:
    """Lineage: every run that wrote a part contributed to vN (one edge key per run; best effort)."""
    for run in sorted({p.run for p in parts if p.run}):
        try:
            rp, rid = parse_run_path(run)
            record_edge(store, "logged", rp, rid, project, artifact, n, role="contributor")
        except ArtfsError:
            continue  # a part naming a bad run: its files count, its lineage does not


def _merged_type(project: str, artifact: str, group: str, type: str, parts: list[_Part]) -> str:
    kinds = sorted({p.type for p in parts if p.type != "unspecified"})
    if type != "unspecified":
        kinds = [type] if not kinds or kinds == [type] else kinds + [type]
    if len(set(kinds)) > 1:
        raise PartsConflict(f"{project}/{artifact}: the parts of group {group} give different types "
                            f"({', '.join(sorted(set(kinds)))}); nothing was committed", [])
    return kinds[0] if kinds else "unspecified"


def _landed(store: "Store", project: str, artifact: str, group: str,
            claims: list[tuple[int, str, float]]) -> dict[str, Any] | None:
    """If a claim's commit created a version (its finisher died before finished.json), record it."""
    docs = [(k, _read_json(store, key)) for k, key, _ in claims]
    ids = {d["commit_id"]: (k, d) for k, d in docs if d and isinstance(d.get("commit_id"), str)}
    if not ids:
        return None
    afters = [d.get("after") for _, d in ids.values()]
    ints = [a for a in afters if isinstance(a, int)]
    after = min(ints) if len(ints) == len(afters) else None
    for n in reversed(store.versions(project, artifact)):
        if after is not None and n <= after:
            break
        try:
            cid = store.manifest(project, artifact, n).commit_id
        except NotFound:
            continue
        if cid is not None and cid in ids:
            k, d = ids[cid]
            if not isinstance(d.get("parts"), dict):
                continue  # cannot be: a claim records its parts before it commits
            keys = [L.group_part_key(project, artifact, group, w) for w in d["parts"]]
            return _record(store, (project, artifact, group), n, cid, d["parts"], keys, k)
    return None


def _record(store: "Store", gkey: _G, version: int, commit_id: str, parts: dict[str, str], part_keys: list[str],
            k: int) -> dict[str, Any]:
    """Step f: the result, then the merged parts and the claims go."""
    fin = {"version": version, "commit_id": commit_id, "parts": parts, "finished": time.time(), "claim": k}
    store.backend.put(L.group_finished_key(*gkey), json.dumps(fin).encode())
    pmap(store.backend.delete, part_keys, _WORKERS)
    for _, key, _ in _claims(store, gkey):
        store.backend.delete(key)
    return fin


def _finished_result(store: "Store", project: str, artifact: str, group: str, fin: dict[str, Any],
                     aliases: list[str]) -> "CommitResult":
    n = fin.get("version")
    if not isinstance(n, int):
        raise CorruptData(f"{L.group_finished_key(project, artifact, group)}: no version")
    try:
        m = store.manifest(project, artifact, n)
    except NotFound:
        raise NotFound(f"{project}/{artifact}: group {group} was finished as v{n}, which has since been deleted") from None
    for a in aliases:
        store.set_alias(project, artifact, a, n)
    return CommitResult(project, artifact, n, False, len(m.entries), aliases=aliases)


def finish_artifact(store: "Store", art: "Artifact", project: str, group: str, *,
                    aliases: Iterable[str] = (), progress: Callable[[int], None] | None = None,
                    timeout: float = WAIT_TIMEOUT, run: str | None = None) -> "CommitResult":
    """Finish ``group`` of ``art``'s artifact, adding the files ``art`` holds itself."""
    entries, sources = artifact_entries(art, store)
    return finish(store, project, art.name, group, type=art.type, entries=entries, sources=sources,
                  description=art.description, metadata=art.metadata or None,
                  aliases=list(dict.fromkeys(list(art.aliases) + list(aliases))), progress=progress, timeout=timeout,
                  run=run)
