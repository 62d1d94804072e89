"""Distributed writers: many processes on many machines build one version (upsert, finish).

W&B's ``run.upsert_artifact`` / ``run.finish_artifact``, with no server: every writer adds its
files to a *pending group* of an artifact, and one ``finish`` merges all of them into the next
version. The store's own guarantees (exclusive creates, the commit/deletion ordering of
:mod:`artfs._store`) keep concurrent writers and finishers safe.

Store layout (beside ``artifacts/``, so a group never shows up as an artifact)::

    <project>/groups/<artifact>/<group>/parts/<writer>.json   one writer's part: its entries (its files)
    <project>/groups/<artifact>/<group>/finish/<k>.json       claim k: a finisher's right to commit
    <project>/groups/<artifact>/<group>/finished.json         the result: version, commit id, parts merged

Upsert (one writer, one part; keys no other writer touches)::

    0 refuse if finished.json exists (the group was finished: use a new group)
    1 write an intent naming the part's blobs     (like a commit: protects them while uploading)
    2 wait for deletions running now
    3 upload the blobs the store lacks
    4 put parts/<writer>.json                      (one atomic put: a reader sees all of it or none)
    5 drop the intent                              (from now on the part protects its blobs)
    6 look at the finish state (below)

A writer killed before 4 leaves no part (or its previous part, whole) and some unreferenced
blobs that ``gc`` removes; the intent expires after the store's intent grace. Upserting again
from the same writer replaces its part (step 4 overwrites the key), so the group then holds that
writer's new files only.

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
while its part misses the version.

Protection from deletion: :func:`pending_blobs` (called by ``Store._live_blobs`` after it lists
intents and manifests, so a part written after its intent was listed-missing is seen) names the
blobs of every part of a group that is not abandoned. A group is *abandoned* when nothing in it
(part, claim, result) was written for ``GROUP_GRACE`` seconds (default 7 days); ``artfs gc``
removes abandoned groups (then their blobs, in the same run), and also the leftover parts of
finished groups. Merging needs no blob check: every blob of a live part is present.
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ._digest import digest_file
from ._errors import AlreadyExists, ArtfsError, CorruptData, InvalidPath, NotFound, StoreUnavailable
from ._lineage import parse_run_path, record_edge
from ._manifest import _BULK_MIN, REF_IDENTITY, Entry, _bulk_entries, _entries_json, check_entries, gc_paused
from ._manifest import version_digest
from . import _layout as L
from ._names import check_alias, check_name
from ._parallel import STORE_WORKERS, pmap
from ._results import CommitResult

if TYPE_CHECKING:
    from ._artifact import Artifact
    from ._store import Store

FORMAT = 1
#: a group nothing was written into for this long is abandoned: ``gc`` removes it and its blobs
GROUP_GRACE = 7 * 24 * 3600.0
#: how often a finisher re-puts its claim, and after how long without that a claim is dead
HEARTBEAT = 5.0
CLAIM_STALE = 60.0
#: how long ``finish`` (and an upsert that finds a finish running) waits for another finisher
WAIT_TIMEOUT = 600.0
_WORKERS = 8
_POLL = 0.05
#: this process's default writer id: host, pid and a random part (a reused pid is another writer)
_PROCESS_WRITER = f"{socket.gethostname().split('.')[0] or 'host'}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class PartsConflict(ArtfsError):
    """Two parts give one path different content (or one has a file where another has a directory)."""

    exit_code = 1

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


class GroupFinished(AlreadyExists):
    """The group was finished (its version exists): a part added now would be in no version."""


def default_writer() -> str:
    """The writer id of this process when none is given (``<host>-<pid>-<random>``)."""
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in _PROCESS_WRITER)[:120]
    return check_name(name.lstrip(".-") or "writer", "writer")


@dataclass
class PartResult:
    """What an upsert did: the part it recorded and what it uploaded."""

    project: str
    artifact: str
    group: str
    writer: str
    part_id: str
    files: int
    size: int
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0

    def __str__(self) -> str:
        return (f"{self.project}/{self.artifact} group {self.group}: part of writer {self.writer} recorded "
                f"({self.files} files, {self.uploaded_blobs} new blobs, {self.uploaded_bytes} bytes uploaded)")


@dataclass
class PartInfo:
    writer: str
    part_id: str
    files: int
    size: int
    created: float
    host: str | None = None
    pid: int | None = None


@dataclass
class GroupInfo:
    """A group as ``artfs status`` shows it."""

    project: str
    artifact: str
    group: str
    parts: list[PartInfo] = field(default_factory=list)
    finished: int | None = None
    finishing: bool = False
    updated: float = 0.0

    @property
    def files(self) -> int:
        """Files in all parts (a path in several parts counts in each)."""
        return sum(p.files for p in self.parts)

    @property
    def size(self) -> int:
        """Bytes in all parts."""
        return sum(p.size for p in self.parts)

    def to_json(self) -> dict[str, Any]:
        """The group as ``artfs status --json`` shows it."""
        return {"project": self.project, "artifact": self.artifact, "group": self.group,
                "finished": self.finished, "finishing": self.finishing, "updated": self.updated,
                "files": self.files, "size": self.size,
                "parts": [vars(p) for p in self.parts]}


# -- keys (spelled by artfs._layout) ----------------------------------------------------------------------
#: a group: (project, artifact, group)
_G = tuple[str, str, str]


def _check(project: str, artifact: str, group: str) -> None:
    check_name(project, "project")
    check_name(artifact, "artifact")
    check_name(group, "group")


# -- parts ---------------------------------------------------------------------------------------------
def _part_bytes(doc: dict[str, Any], entries: list[Entry]) -> bytes:
    head = json.dumps({**doc, "entries": []}, ensure_ascii=False, separators=(",", ":"))
    return "".join((head[:-2], ",".join(_entries_json(entries)), "]}")).encode("utf-8")


@dataclass
class _Part:
    key: str
    writer: str
    part_id: str
    created: float
    type: str
    description: str | None
    metadata: dict[str, Any]
    entries: list[Entry]
    host: str | None
    pid: int | None
    run: str | None = None
    aliases: list[str] = field(default_factory=list)


def _parse_part(data: bytes, key: str) -> _Part:
    """A part read from the store (untrusted, like a manifest: every path and digest is checked)."""
    where = f"part {key}"
    with gc_paused():
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptData(f"{where}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CorruptData(f"{where}: unknown part format")
        raw = doc.get("entries")
        if not isinstance(raw, list):
            raise CorruptData(f"{where}: entries is not a list")
        try:
            entries = _bulk_entries(raw) if len(raw) >= _BULK_MIN else None
            if entries is None:
                entries = check_entries(Entry.from_json(d) for d in raw)
        except InvalidPath as e:
            raise CorruptData(f"{where}: {e}") from None
    writer = key.rsplit("/", 1)[-1][: -len(".json")]
    if doc.get("writer") != writer or not isinstance(doc.get("part_id"), str):
        raise CorruptData(f"{where}: names writer {doc.get('writer')!r}")
    md = doc.get("metadata") or {}
    if not isinstance(md, dict):
        raise CorruptData(f"{where}: metadata is not an object")
    desc = doc.get("description")
    return _Part(key, writer, doc["part_id"], float(doc.get("created") or 0), str(doc.get("type") or "unspecified"),
                 desc if isinstance(desc, str) else None, md, entries,
                 doc.get("host") if isinstance(doc.get("host"), str) else None,
                 doc.get("pid") if isinstance(doc.get("pid"), int) else None,
                 doc.get("run") if isinstance(doc.get("run"), str) else None,
                 [a for a in doc.get("aliases") or [] if isinstance(a, str) and _valid_alias(a)])


def _read_parts(store: "Store", project: str, artifact: str, group: str) -> list[_Part]:
    prefix = L.group_parts_prefix(project, artifact, group)
    keys = sorted(o.key for o in store.backend.list(prefix)
                  if o.key.endswith(".json") and "/" not in o.key[len(prefix):] and _valid_name(o.key[len(prefix):-5]))

    def fetch(key: str) -> bytes | None:
        try:
            return store.backend.get(key)
        except NotFound:  # replaced or removed meanwhile
            return None

    # fetched in threads (latency), parsed in this one (CPU: threads would only contend for the GIL)
    with gc_paused():
        return [_parse_part(data, key) for key, data in zip(keys, pmap(fetch, keys, _WORKERS)) if data is not None]


def _valid_alias(s: str) -> bool:
    try:
        check_alias(s)
        return True
    except ArtfsError:
        return False


def _valid_name(s: str) -> bool:
    try:
        check_name(s)
        return True
    except ArtfsError:
        return False


def _read_json(store: "Store", key: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(store.backend.get(key))
    except NotFound:
        return None
    except ValueError:
        raise CorruptData(f"{key}: not valid JSON") from None
    if not isinstance(doc, dict):
        raise CorruptData(f"{key}: not a JSON object")
    return doc


# -- upsert --------------------------------------------------------------------------------------------
def upsert(store: "Store", project: str, artifact: str, group: str, *, entries: list[Entry],
           sources: dict[str, Callable[[str], None] | str], writer: str | None = None, type: str = "unspecified",
           description: str | None = None, metadata: dict[str, Any] | None = None,
           progress: Callable[[int], None] | None = None, timeout: float = WAIT_TIMEOUT,
           part_id: str | None = None, run: str | None = None, aliases: Iterable[str] = ()) -> PartResult:
    """Record ``entries`` as ``writer``'s part of ``group`` (replacing that writer's earlier part).

    ``sources`` maps a digest to a local file (or a callable uploading to a key), as for
    :meth:`Store.commit`; only blobs the store lacks are uploaded. Raises :class:`GroupFinished`
    if the group was finished before this part was recorded (then it is in no version).
    ``part_id`` (default: a new one) lets a retry after a crash record the very same part.
    ``run`` (``project/run_id``) names the run that wrote the part: ``finish`` records it as a
    contributor of the version (lineage). ``aliases`` are given to the version at ``finish``.
    """
    _check(project, artifact, group)
    writer = check_name(writer or default_writer(), "writer")
    aliases = [check_alias(a) for a in aliases]
    if type != "unspecified":
        check_name(type, "type")
    with gc_paused():
        entries = check_entries(entries)
        digests = sorted({e.digest for e in entries if e.digest and e.ref is None})
    _refuse_finished(store, project, artifact, group)
    part_id = part_id or uuid.uuid4().hex
    ikey = L.intent_key(project, part_id)
    store.backend.put(ikey, json.dumps({"created": time.time(), "artifact": artifact, "group": group,
                                        "blobs": digests}).encode())
    try:
        store._wait_for_deletions(project)
        missing = store._missing_blobs(project, digests)
        sizes = {e.digest: e.size for e in entries if e.digest}
        up_bytes = store._upload_blobs(project, digests, missing, sources, sizes, progress, STORE_WORKERS)
        doc = {"format": FORMAT, "writer": writer, "part_id": part_id, "created": time.time(),
               "host": socket.gethostname(), "pid": os.getpid(), "type": type,
               "description": description, "metadata": dict(metadata or {}), "run": run,
               "aliases": aliases}
        with gc_paused():
            data = _part_bytes(doc, entries)
        store.backend.put(L.group_part_key(project, artifact, group, writer), data)
    finally:
        store.backend.delete(ikey)
    result = PartResult(project, artifact, group, writer, part_id, len(entries), sum(e.size for e in entries),
                        len(missing), up_bytes)
    _after_upsert(store, project, artifact, group, part_id, timeout)
    return result


def _refuse_finished(store: "Store", project: str, artifact: str, group: str) -> None:
    fin = _read_json(store, L.group_finished_key(project, artifact, group))
    if fin is not None:
        raise GroupFinished(f"{project}/{artifact}: group {group} was finished as v{fin.get('version')}; "
                            f"a new part needs a new group")


def _after_upsert(store: "Store", project: str, artifact: str, group: str, part_id: str, timeout: float) -> None:
    """Step 6: if a finish is running or done, wait for its result and say whether our part is in it."""
    gkey = (project, artifact, group)
    deadline = time.monotonic() + timeout
    while True:
        fin = _read_json(store, L.group_finished_key(*gkey))
        if fin is not None:
            if part_id in (fin.get("parts") or {}).values():
                return
            raise GroupFinished(f"{project}/{artifact}: group {group} was finished as v{fin.get('version')} "
                                f"while this part was being recorded; the part is not in that version "
                                f"(upsert it into a new group)")
        if not _claims(store, gkey):
            return  # any finisher that claims from now on lists our part
        if time.monotonic() > deadline:
            raise StoreUnavailable(f"{project}/{artifact}: group {group} is being finished and the finisher has "
                                   f"not completed in {timeout:.0f} s; `artfs finish {project}/{artifact} --group "
                                   f"{group}` completes it; whether this part is in the version is then shown "
                                   f"by `artfs status`")
        time.sleep(_POLL)


def _claims(store: "Store", gkey: _G) -> list[tuple[int, str, float]]:
    """(k, key, mtime) of every claim of the group, lowest first."""
    out = []
    for o in store.backend.list(L.group_claims_prefix(*gkey)):
        name = o.key.rsplit("/", 1)[-1]
        if name.endswith(".json") and name[:-5].isdigit():
            out.append((int(name[:-5]), o.key, o.mtime))
    return sorted(out)


def upsert_artifact(store: "Store", art: "Artifact", project: str, group: str, *, writer: str | None = None,
                    progress: Callable[[int], None] | None = None, run: str | None = None,
                    aliases: Iterable[str] = ()) -> PartResult:
    """Upsert the files an :class:`Artifact` holds (``add_file``/``add_dir``/``new_file``/references)."""
    entries, sources = artifact_entries(art)
    return upsert(store, project, art._name, group, entries=entries, sources=sources, writer=writer,
                  type=art.type, description=art.description, metadata=art.metadata, progress=progress, run=run,
                  aliases=list(art.aliases) + list(aliases))


def artifact_entries(art: "Artifact") -> tuple[list[Entry], dict[str, Callable[[str], None] | str]]:
    """The entries of a draft :class:`Artifact` (its files hashed) and where each blob's bytes are."""
    import stat

    art._need_draft()

    def describe(item: tuple[str, str]) -> Entry:
        path, local = item
        st = os.stat(local)
        digest, size = digest_file(local)
        return Entry(path, digest, size, bool(st.st_mode & stat.S_IXUSR))

    entries = pmap(describe, sorted(art._files.items()), _WORKERS)
    sources: dict[str, Callable[[str], None] | str] = {e.digest: art._files[e.path] for e in entries if e.digest}
    return entries + list(art._refs.values()), sources


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
        store._wait_for_deletions(project)

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
    entries, sources = artifact_entries(art)
    return finish(store, project, art._name, group, type=art.type, entries=entries, sources=sources,
                  description=art.description, metadata=art.metadata or None,
                  aliases=list(dict.fromkeys(list(art.aliases) + list(aliases))), progress=progress, timeout=timeout,
                  run=run)


# -- listing, protection, gc ------------------------------------------------------------------------------
def groups(store: "Store", project: str, artifact: str | None = None, *, finished: bool = False) -> list[GroupInfo]:
    """The groups of ``project`` (of one artifact), pending ones only unless ``finished``."""
    check_name(project, "project")
    prefix = L.groups_prefix(project, check_name(artifact, "artifact") if artifact else None)
    found: dict[tuple[str, str], GroupInfo] = {}
    part_keys: list[tuple[GroupInfo, str]] = []
    for o in store.backend.list(prefix):
        rest = L.split_group_key(project, o.key)
        if len(rest) < 3 or not (_valid_name(rest[0]) and _valid_name(rest[1])):
            continue
        g = found.setdefault((rest[0], rest[1]), GroupInfo(project, rest[0], rest[1]))
        g.updated = max(g.updated, o.mtime)
        if rest[2:3] == [L.GROUP_FINISHED]:
            g.finished = -1
        elif rest[2:3] == [L.GROUP_CLAIMS]:
            g.finishing = True
        elif rest[2:3] == [L.GROUP_PARTS] and len(rest) == 4 and rest[3].endswith(".json"):
            part_keys.append((g, o.key))
    out = [g for g in found.values() if finished or g.finished is None]
    keep = {id(g) for g in out}

    def read(item: tuple[GroupInfo, str]) -> tuple[GroupInfo, _Part | None]:
        try:
            return item[0], _parse_part(store.backend.get(item[1]), item[1])
        except (NotFound, CorruptData):
            return item[0], None

    for g, p in pmap(read, [x for x in part_keys if id(x[0]) in keep], _WORKERS):
        if p is not None:
            g.parts.append(PartInfo(p.writer, p.part_id, len(p.entries), sum(e.size for e in p.entries),
                                    p.created, p.host, p.pid))
    for g in out:
        g.parts.sort(key=lambda p: p.writer)
        if g.finished == -1:
            fin = _read_json(store, L.group_finished_key(project, g.artifact, g.group)) or {}
            g.finished = fin.get("version") if isinstance(fin.get("version"), int) else None
    return sorted(out, key=lambda g: (g.artifact, g.group))


def _scan(store: "Store", project: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(artifact, group) -> {"updated": newest mtime, "finished": bool, "parts": [keys], "keys": [all keys]}."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for o in store.backend.list(L.groups_prefix(project)):
        rest = L.split_group_key(project, o.key)
        if len(rest) < 3:
            continue
        g = out.setdefault((rest[0], rest[1]), {"updated": 0.0, "finished": False, "parts": [], "keys": []})
        g["updated"] = max(g["updated"], o.mtime)
        g["keys"].append(o.key)
        if rest[2] == L.GROUP_FINISHED:
            g["finished"] = True
        elif rest[2] == L.GROUP_PARTS and o.key.endswith(".json"):
            g["parts"].append(o.key)
    return out


def pending_blobs(store: "Store", project: str, *, grace: float = GROUP_GRACE) -> set[str]:
    """Digests named by the parts of every group that is not abandoned (see the module docstring)."""
    now = time.time()
    keys = [k for g in _scan(store, project).values() if now - g["updated"] <= grace for k in g["parts"]]

    def blobs(key: str) -> list[str]:
        try:
            doc = json.loads(store.backend.get(key))
        except (NotFound, ValueError):
            return []
        es = doc.get("entries") if isinstance(doc, dict) else None
        return [e["digest"] for e in es or [] if isinstance(e, dict) and isinstance(e.get("digest"), str)
                and e.get("ref") is None]

    live: set[str] = set()
    for ds in pmap(blobs, keys, _WORKERS):
        live.update(ds)
    return live


def gc_groups(store: "Store", project: str, *, grace: float = GROUP_GRACE, dry_run: bool = False) -> int:
    """Remove abandoned groups (nothing written for ``grace`` s) and parts left in finished groups.

    Returns how many groups were removed or cleaned. Called by ``Store.gc`` before it computes
    the live blobs, so the blobs of removed groups go in the same run.
    """
    now = time.time()
    n = 0
    for g in _scan(store, project).values():
        if now - g["updated"] > grace:
            doomed = g["keys"]
        elif g["finished"] and g["parts"]:
            doomed = g["parts"]
        else:
            continue
        n += 1
        if not dry_run:
            # the result last: a finisher or an upsert racing this still finds the group finished
            doomed = sorted(doomed, key=lambda k: k.endswith(L.GROUP_FINISHED))
            pmap(store.backend.delete, [k for k in doomed if not k.endswith(L.GROUP_FINISHED)], _WORKERS)
            for k in doomed:
                if k.endswith(L.GROUP_FINISHED):
                    store.backend.delete(k)
    return n


# -- drafts (the mount's draft/ as a part) ------------------------------------------------------------------
def upsert_draft(draft: Any, store: "Store", group: str, *, description: str | None = None,
                 metadata: dict[str, Any] | None = None, type: str | None = None,
                 progress: Callable[[int], None] | None = None, keep: bool = False) -> PartResult | None:
    """Record a draft's files as its part of ``group`` instead of committing a version.

    ``artfs mount --group GROUP`` commits drafts this way. The draft's writer id is recorded in
    the draft (``meta.group``/``meta.group_writer``, one transaction) before anything is
    uploaded, so a retry after a crash replaces the same part rather than adding a second one;
    any later commit of that draft goes to the same group (a draft is never both a version and a
    part). The part holds every file of the draft, its base version's files included (the draft
    is a copy-on-write view of ``latest``). Unless ``keep`` (a commit through a running mount),
    the draft is discarded once its part is recorded: its files are in the group now, and the
    next mount starts a fresh draft from ``latest``. Returns None, writing nothing, when the
    draft equals its base and no part was recorded from it yet.
    """
    if draft.readonly:
        raise ArtfsError("cannot commit a draft opened read-only")
    with draft._gate.exclusive(), draft._lock:
        project, artifact = draft.project, draft.artifact
        if store.id != draft.store_id:
            raise ArtfsError(f"{draft.path} is a draft of {draft.store_url}, not of {store.url}")
        entries, sources, problems, _ = draft._snapshot(hash=True)
        if problems:
            raise InvalidPath(draft._problems_message(problems))
        recorded = draft._meta("group") == group and draft._meta("group_writer")
        if not recorded and version_digest(check_entries(entries)) == draft._meta("base_digest"):
            return None
        writer = recorded or f"draft-{uuid.uuid4().hex[:16]}"
        if not recorded:
            with draft._tx() as con:
                draft._set(con, group=group, group_writer=writer)
        meta = draft.pending()
        try:
            result = upsert(store, project, artifact, group, entries=entries, sources=sources, writer=writer,
                            type=type or meta["type"] or "unspecified",
                            description=description if description is not None else meta["description"],
                            metadata=metadata if metadata is not None else (meta["metadata"] or {}),
                            progress=progress)
        except (ArtfsError, OSError) as e:
            raise draft._failed(e) from e
    if not keep:
        draft.discard()
    return result
