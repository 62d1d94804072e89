"""Distributed writers' groups as a whole: listing (``artfs status``), protection, gc.

The store layout is in :mod:`artfs._groups_parts`; the overview in :mod:`artfs._distributed`.


Protection from deletion: :func:`pending_blobs` (called by ``artfs._gc.live_blobs`` after it lists
intents and manifests, so a part written after its intent was listed-missing is seen) names the
blobs of every part of a group that is not abandoned. A group is *abandoned* when nothing in it
(part, claim, result) was written for ``GROUP_GRACE`` seconds (default 7 days); ``artfs gc``
removes abandoned groups (then their blobs, in the same run), and also the leftover parts of
finished groups. Merging needs no blob check: every blob of a live part is present.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ._errors import CorruptData, NotFound
from ._groups_parts import GROUP_GRACE, _WORKERS, GroupInfo, PartInfo, _Part, _parse_part, _read_json, _valid_name
from . import _layout as L
from ._names import check_name
from ._parallel import pmap

if TYPE_CHECKING:
    from ._store import Store


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
