"""The model registry: collections whose versions link versions of other artifacts, no bytes copied.

W&B's ``run.link_artifact(art, "wandb-registry-model/bike-models", aliases=["production"])`` and
``art.link(...)``. A registry is a project (W&B's names, ``wandb-registry-<name>`` or the older
``model-registry``, are ordinary project names here); a collection in it has versions ``v0``,
``v1``, ... in the order they were linked, each naming one source version, and aliases of its
own (``latest``: the last linked, unless set; ``production``, ``staging``, ...).

Store layout (spelled in :mod:`artfs._layout`)::

    <rp>/collections/<collection>/links/<N>.json   {"source": "p/a:vK", "type", "created", "run"}
    <rp>/collections/<collection>/aliases/<alias>  N
    <ap>/lineage/linked/<a>/<K>/<rp>/<collection>/<N>   the same link, seen from the source version

Invariants
* A link object is created exclusively (``N`` claimed like a version number) and never changed;
  unlinking deletes it. Linking a version that a collection already links adds the aliases to
  that link and creates nothing (W&B does the same).
* A collection has one type, its first link's; linking a version of another type is refused.
* Nothing in the source project changes except one lineage key, so the registry can be a
  project that the source's writers cannot change (access is per project).
* A link whose source version was deleted is skipped when listing and resolving, as W&B drops a
  deleted version from the registry; its objects stay until ``unlink``.
* Reading a linked version reads the source version's manifest and blobs in the source project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._artifact import Artifact
from ._errors import AlreadyExists, ArtfsError, CorruptData, InvalidName, NotFound
from ._layout import (
    collection_alias_key,
    collection_aliases_prefix,
    collection_link_key,
    collection_links_prefix,
    collections_prefix,
    version_key,
    version_link_key,
    version_links_prefix,
    version_of_key,
)
from ._lineage import now_iso, parse_version_ref, version_ref
from ._names import check_alias, check_name, valid_name

if TYPE_CHECKING:
    from ._store import Store

LINK_FORMAT = "artfs.link/1"


@dataclass
class Link:
    """vN of a collection: the source version it names."""

    project: str
    collection: str
    n: int
    source: tuple[str, str, int]
    type: str
    created: str
    run: str | None = None

    @property
    def name(self) -> str:
        return f"{self.project}/{self.collection}:v{self.n}"


def parse_target(target: str, default_project: str) -> tuple[str, str]:
    """``registry/collection`` (or ``entity/registry/collection``; a bare ``collection`` is in
    ``default_project``) -> (registry, collection)."""
    parts = target.split("/")
    if len(parts) == 3:
        parts = parts[1:]
    if len(parts) == 1:
        parts = [default_project, parts[0]]
    if len(parts) != 2 or ":" in target:
        raise InvalidName(f"invalid link target {target!r}: expected REGISTRY/COLLECTION")
    return check_name(parts[0], "registry"), check_name(parts[1], "collection")


def collections(store: "Store", project: str) -> list[str]:
    """The collections of a project (a registry), sorted."""
    return sorted(c for c in store.backend.list_dirs(collections_prefix(check_name(project, "project")))
                  if valid_name(c))


def _numbers(store: "Store", project: str, collection: str) -> list[int]:
    out = []
    for o in store.backend.list(collection_links_prefix(project, collection)):
        n = version_of_key(o.key)
        if n is not None:
            out.append(n)
    return sorted(out)


def read_link(store: "Store", project: str, collection: str, n: int) -> Link:
    key = collection_link_key(project, collection, n)
    try:
        data = store.backend.get(key)
    except NotFound:
        raise NotFound(f"{project}/{collection}:v{n}: no such link") from None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != LINK_FORMAT:
            raise ValueError("unknown format")
        source = parse_version_ref(doc.get("source"))
        ltype = check_name(doc.get("type"), "type")
        run = doc.get("run")
        if run is not None and not isinstance(run, str):
            raise ValueError("run is not a string")
    except (ValueError, UnicodeDecodeError, InvalidName) as e:
        raise CorruptData(f"{key}: not a valid link ({e})") from None
    return Link(project, collection, n, source, ltype, str(doc.get("created") or ""), run)


def links(store: "Store", project: str, collection: str, *, live: bool = True) -> list[Link]:
    """Every link of a collection in order; ``live``: only those whose source version exists."""
    out = [read_link(store, project, collection, n) for n in _numbers(store, project, collection)]
    if live:
        out = [lk for lk in out if store.backend.exists(version_key(*lk.source))]
    return out


def aliases(store: "Store", project: str, collection: str, live: list[Link] | None = None) -> dict[str, int]:
    """Alias -> link number, with the automatic ``latest`` (the last live link)."""
    live = links(store, project, collection) if live is None else live
    numbers = {lk.n for lk in live}
    out: dict[str, int] = {}
    for o in store.backend.list(collection_aliases_prefix(project, collection)):
        alias = o.key.rsplit("/", 1)[-1]
        try:
            n = int(store.backend.get(o.key).decode().strip())
        except (ValueError, UnicodeDecodeError, NotFound):
            continue
        if valid_name(alias, alias=True) and n in numbers:
            out[alias] = n
    if "latest" not in out and live:
        out["latest"] = live[-1].n
    return out


def set_alias(store: "Store", project: str, collection: str, alias: str, n: int) -> None:
    check_alias(alias)
    read_link(store, project, collection, n)
    store.backend.put(collection_alias_key(project, collection, alias), str(n).encode())


def remove_alias(store: "Store", project: str, collection: str, alias: str) -> None:
    try:
        store.backend.delete(collection_alias_key(project, collection, check_alias(alias)))
    except NotFound:
        pass


def resolve(store: "Store", project: str, collection: str, version: int | None, alias: str | None) -> Link:
    """The live link that ``collection:vN`` or ``collection:alias`` names (NotFound otherwise)."""
    if version is not None:
        lk = read_link(store, project, collection, version)
        if not store.backend.exists(version_key(*lk.source)):
            raise NotFound(f"{lk.name}: its source {version_ref(*lk.source)} was deleted")
        return lk
    live = links(store, project, collection)
    if not live:
        raise NotFound(f"{project}/{collection}: no such collection (or no linked version left) in {store.url}")
    n = aliases(store, project, collection, live).get(alias or "latest")
    if n is None:
        raise NotFound(f"{project}/{collection}:{alias}: no such alias")
    return next(lk for lk in live if lk.n == n)


def link(store: "Store", source: tuple[str, str, int], stype: str, project: str, collection: str,
         link_aliases: list[str], run: str | None = None) -> Link:
    """Link the source version into ``project/collection`` (or find its link) and set the aliases."""
    check_name(project, "registry")
    check_name(collection, "collection")
    link_aliases = [check_alias(a) for a in dict.fromkeys(link_aliases)]
    if (project, collection) == source[:2]:
        raise ArtfsError(f"{project}/{collection} is the artifact itself, not a collection to link it into")
    if collection in store.artifacts(project):
        raise AlreadyExists(f"{project}/{collection} is an artifact; a collection needs a name of its own")
    existing = links(store, project, collection, live=False)
    if existing and existing[0].type != stype:
        raise InvalidName(f"{project}/{collection} holds {existing[0].type!r} versions, not {stype!r}")
    found = next((lk for lk in existing if lk.source == source), None)
    if found is None:
        n = existing[-1].n + 1 if existing else 0
        while True:
            doc = {"format": LINK_FORMAT, "source": version_ref(*source), "type": stype, "created": now_iso(),
                   "run": run}
            try:
                store.backend.put(collection_link_key(project, collection, n), json.dumps(doc).encode(),
                                  exclusive=True)
                break
            except AlreadyExists:  # another linker took N
                n += 1
        store.backend.put(version_link_key(*source, project, collection, n), b"{}")
        found = read_link(store, project, collection, n)
        if "latest" not in link_aliases:  # an explicit latest elsewhere would hide this link
            remove_alias(store, project, collection, "latest")
    for a in link_aliases:
        set_alias(store, project, collection, a, found.n)
    return found


def unlink(store: "Store", lk: Link) -> None:
    """Remove vN from its collection (its aliases too); the source version is untouched."""
    for a, n in aliases(store, lk.project, lk.collection, links(store, lk.project, lk.collection, live=False)).items():
        if n == lk.n:
            remove_alias(store, lk.project, lk.collection, a)
    for key in (collection_link_key(lk.project, lk.collection, lk.n),
                version_link_key(*lk.source, lk.project, lk.collection, lk.n)):
        try:
            store.backend.delete(key)
        except NotFound:
            pass


def links_of_version(store: "Store", aproject: str, artifact: str, n: int) -> list[str]:
    """``registry/collection:vM`` of every link of a version (one listing)."""
    prefix = version_links_prefix(aproject, artifact, n)
    out = []
    for o in store.backend.list(prefix):
        parts = o.key[len(prefix):].split("/")
        if len(parts) == 3 and parts[2].isdigit() and valid_name(parts[0]) and valid_name(parts[1]):
            out.append(f"{parts[0]}/{parts[1]}:v{parts[2]}")
    return sorted(out)


def collection_symlinks(store: "Store", project: str, collection: str) -> dict[str, str]:
    """What the mount shows in ``MNT/<project>/<collection>/``: ``vN`` -> ``../../<p>/<a>/vK`` (the
    linked version's directory in the same mount) and each alias -> ``vN``."""
    live = links(store, project, collection)
    out = {f"v{lk.n}": f"../../{lk.source[0]}/{lk.source[1]}/v{lk.source[2]}" for lk in live}
    out.update((a, f"v{n}") for a, n in aliases(store, project, collection, live).items())
    return out


def linked_artifact(store: "Store", lk: Link) -> "Artifact":
    """The linked version as an Artifact named after the collection (``registry/coll:vN``) whose
    files are the source version's (read from the source project)."""
    art = Artifact.of_version(store, *lk.source)
    art.as_link(lk.project, lk.collection, lk.n, [a for a, v in aliases(store, lk.project, lk.collection).items()
                                                  if v == lk.n])
    return art
