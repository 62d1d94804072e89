"""Index files: what a store that cannot list (a static web server) reads instead of a listing.

    index.json                                  {"format": 1, "projects": ["cycling", ...]}
    <project>/index.json                        {"format": 1, "artifacts": ["bike-dataset", ...]}
    <project>/artifacts/<artifact>/index.json   {"format": 1, "versions": [0, 1, 3], "latest": 3,
                                                 "aliases": {"best": 1}, "next": 5}

``next`` is one more than the highest number ever used, including deleted versions (their
tombstones ``deleted/<N>``): numbers are never reused, so the newest versions may follow a gap.

They are derived data, rebuilt at any time from a listing (:func:`rebuild_index`,
``artfs reindex``). Writers on a listable store (local disk, S3) refresh them after every commit,
alias change and deletion (:func:`update_index`, called by :class:`~artfs.Store`); a failure to
do so is logged, never fatal: the versions and aliases themselves are already safely written.

Why readers must not trust them for the newest version: each update writes a listing taken a
moment earlier, so two racing writers can end with the older listing written last. The HTTP
backend therefore checks that the highest indexed version still exists and probes
``versions/<N+1>.json``, ``N+2``, ... (stepping over tombstones ``deleted/<N>``) until a 404, and reads alias values from the alias files
themselves (``aliases`` here only says which alias files exist).

``index.json`` at the root would clash with a project named ``index.json``; such a project
cannot be published over HTTP (the index update logs the failure).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from ._errors import NotFound, PermissionDenied
# the index keys and documents are spelled and parsed in the core (artfs._layout); re-exported here
from ._layout import FORMAT as FORMAT
from ._layout import ROOT_INDEX as ROOT_INDEX
from ._layout import aliases_prefix, deleted_prefix
from ._layout import artifact_index_key as artifact_index_key
from ._layout import parse_index as parse_index
from ._layout import project_index_key as project_index_key
from ._names import check_name

if TYPE_CHECKING:
    from ._store import Store

log = logging.getLogger("artfs.index")

def artifact_index(store: "Store", project: str, artifact: str) -> dict[str, Any]:
    versions = store.versions(project, artifact)
    resolved = store.aliases(project, artifact, versions=versions)
    prefix = aliases_prefix(project, artifact)
    explicit = {o.key[len(prefix):] for o in store.backend.list(prefix)}
    used = list(versions)
    tomb = deleted_prefix(project, artifact)
    used += [int(o.key[len(tomb):]) for o in store.backend.list(tomb) if o.key[len(tomb):].isdigit()]
    doc: dict[str, Any] = {
        "format": FORMAT,
        "versions": versions,
        "aliases": {a: n for a, n in sorted(resolved.items()) if a in explicit},
    }
    if "latest" in resolved:
        doc["latest"] = resolved["latest"]
    doc["next"] = max(used, default=-1) + 1
    return doc


def _put(store: "Store", key: str, doc: dict[str, Any]) -> None:
    store.backend.put(key, json.dumps(doc, sort_keys=True).encode())


def _get(store: "Store", key: str) -> dict[str, Any] | None:
    try:
        return parse_index(store.backend.get(key), where=key)
    except NotFound:
        return None


def update_index(store: "Store", project: str, artifact: str | None = None) -> None:
    """Refresh the index files after a change to ``project/artifact``; never raises.

    Does nothing on a read-only store. Writes the artifact's index, the project's index and, if
    the project is new to it, the root index.
    """
    if store.backend.read_only:
        return
    try:
        if artifact is not None:
            _put(store, artifact_index_key(project, artifact), artifact_index(store, project, artifact))
        _put(store, project_index_key(project), {"format": FORMAT, "artifacts": store.artifacts(project)})
        root = _get(store, ROOT_INDEX)
        if root is None or project not in root.get("projects", []):
            _put(store, ROOT_INDEX, {"format": FORMAT, "projects": store.projects()})
    except Exception as e:  # an index is derived data: the change itself already succeeded
        log.warning("could not update the index files of %s/%s in %s: %s (run `artfs reindex %s`)",
                    project, artifact or "", store.url, e, project)


def rebuild_index(store: "Store", project: str | None = None) -> list[str]:
    """Rewrite every index file of ``project`` (default: all projects) and the root index.

    Returns the keys written. Needs a listable, writable store (the one the HTTP store publishes).
    """
    if store.backend.read_only:
        raise PermissionDenied(f"{store.url} is read-only; reindex the store it is published from")
    projects = [check_name(project, "project")] if project else store.projects()
    written = []
    for p in projects:
        arts = store.artifacts(p)
        if project and not arts:
            raise NotFound(f"{p}: no such project in {store.url}")
        for a in arts:
            key = artifact_index_key(p, a)
            _put(store, key, artifact_index(store, p, a))
            written.append(key)
        _put(store, project_index_key(p), {"format": FORMAT, "artifacts": arts})
        written.append(project_index_key(p))
    _put(store, ROOT_INDEX, {"format": FORMAT, "projects": store.projects()})
    written.append(ROOT_INDEX)
    return written
