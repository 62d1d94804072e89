"""Distributed writers, the writers' side: parts, upsert (the overview: :mod:`artfs._distributed`).

Store layout (beside ``artifacts/``, so a group never shows up as an artifact)::

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

Step 6 and the finish it looks at are described in :mod:`artfs._groups_finish`; the claims it
lists there (:func:`_claims`) are read here too.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ._errors import AlreadyExists, ArtfsError, CorruptData, InvalidPath, NotFound, StoreUnavailable
from ._manifest import _BULK_MIN, Entry, _bulk_entries, _entries_json, check_entries, gc_paused
from ._manifest import version_digest
from . import _layout as L
from ._names import check_alias, check_name
from ._parallel import STORE_WORKERS, pmap

if TYPE_CHECKING:
    from ._artifact import Artifact
    from ._store import Store

FORMAT = 1
#: a group nothing was written into for this long is abandoned: ``gc`` removes it and its blobs
GROUP_GRACE = 7 * 24 * 3600.0
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
        store.wait_for_deletions(project)
        missing = store.missing_blobs(project, digests)
        sizes = {e.digest: e.size for e in entries if e.digest}
        up_bytes = store.upload_blobs(project, digests, missing, sources, sizes, progress, STORE_WORKERS)
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
    entries, sources = artifact_entries(art, store)
    return upsert(store, project, art.name, group, entries=entries, sources=sources, writer=writer,
                  type=art.type, description=art.description, metadata=art.metadata, progress=progress, run=run,
                  aliases=list(art.aliases) + list(aliases))


def artifact_entries(art: "Artifact", store: "Store") -> tuple[list[Entry], dict[str, Callable[[str], None] | str]]:
    """The entries of a draft :class:`Artifact` (its files hashed, through the store's cache's
    record of what was hashed) and where each blob's bytes are."""
    return art.draft_entries(store.cache.hash_record())
