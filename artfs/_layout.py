"""The store's key layout: the one module that spells a key.

Every key artfs reads or writes in a store (a local directory, an S3 prefix, a static HTTPS
server: the same layout everywhere) is built and taken apart here, so that the layout can be
read in one place and changed in one place. ``tests/test_layering.py`` fails if another module
spells a key segment (``"blobs/"``, ``f"{project}/runs/"``, ``"finished.json"``...).

Layout (``<N>`` a version number, ``<32 hex>`` the hex part of an ``xxh128:`` digest)::

    index.json                                           projects (read by HTTPS stores, artfs._index)
    <project>/index.json                                 its artifacts                  (artfs._index)
    <project>/blobs/xxh128/<2 hex>/<32 hex>              file contents, immutable
    <project>/trees/xxh128/<2 hex>/<32 hex>              one directory of a sharded manifest (artfs._pieces), immutable
    <project>/artifacts/<artifact>/versions/<N>.json     manifest of vN, created exclusively, never changed
    <project>/artifacts/<artifact>/info/<N>.json         mutable description/metadata of vN
    <project>/artifacts/<artifact>/aliases/<alias>       the version number an alias points to
    <project>/artifacts/<artifact>/digests/<32 hex>      version digest -> N (finds identical content)
    <project>/artifacts/<artifact>/deleted/<N>           tombstone of a deleted vN: N is never used again
    <project>/artifacts/<artifact>/index.json            its versions and aliases       (artfs._index)
    <project>/intents/<commit-id>.json                   a commit in flight: the blobs it will reference
    <project>/deleting/<id>.json                         a deletion or gc in flight
    <project>/groups/<artifact>/<group>/parts/<writer>.json   one distributed writer's part
    <project>/groups/<artifact>/<group>/finish/<k>.json       claim k: a finisher's right to commit
    <project>/groups/<artifact>/<group>/finished.json         the group's result
    <project>/aliases-log/<artifact>/<alias>/<time-ns>-<random>.json   one move of an alias, never rewritten
    <project>/runs/<run-id>/run.json                     a run's record, written only by its run
    <project>/runs/<run-id>/<kind>/<ap>/<artifact>/<N>   run -> version edge (kind: used, logged)
    <project>/runs/<run-id>/history.jsonl                the run's logged metrics, one row a line (its run only)
    <project>/runs/<run-id>/summary.json                 its summary, step, metric definitions, config (its run only)
    <project>/runs/<run-id>/files/<path>                 files of the run: logged media (its run only)
    <ap>/lineage/<kind>/<artifact>/<N>/<rp>/<run-id>     the same edge, version side
    <rp>/collections/<collection>/links/<N>.json         vN of a registry collection: the version it links
    <rp>/collections/<collection>/aliases/<alias>        the link number an alias of the collection names
    <ap>/lineage/linked/<artifact>/<N>/<rp>/<collection>/<M>   vN is linked as <rp>/<collection>:vM

What each object means and which invariants hold between them is written where they are
used: :mod:`artfs._store` (versions, aliases, intents, deletion), :mod:`artfs._aliaslog` (the
history of aliases), :mod:`artfs._distributed`
(groups), :mod:`artfs._lineage` (runs), :mod:`artfs._index` (index files).

Functions take names that the caller has already validated (:mod:`artfs._names`); a digest is
checked here because a malformed one would otherwise make a key outside ``blobs/``. A prefix
ends with ``/`` (what :meth:`Backend.list` and ``list_dirs`` take).

The index documents (``index.json``) are parsed here too (:func:`parse_index`): the HTTPS
backend reads them instead of a listing, and it imports nothing above the core.

This is the core layer: it imports only :mod:`artfs._digest`, :mod:`artfs._names` and
:mod:`artfs._errors`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ._digest import ALGO, check_digest
from ._errors import CorruptData, InvalidName
from ._names import check_alias, check_name

log = logging.getLogger("artfs.index")

# -- store root -------------------------------------------------------------------------------
#: the root index of a store (artfs._index); a project named ``index.json`` would clash with it
ROOT_INDEX = "index.json"


def project_index_key(project: str) -> str:
    return f"{project}/index.json"


# -- blobs --------------------------------------------------------------------------------------
def blobs_prefix(project: str) -> str:
    return f"{project}/blobs/"


def blob_key(project: str, digest: str) -> str:
    """Store key of a blob: ``<project>/blobs/xxh128/<2 hex>/<32 hex>``."""
    check_digest(digest)
    hexpart = digest.split(":", 1)[1]
    return f"{project}/blobs/{ALGO}/{hexpart[:2]}/{hexpart}"


# -- pieces of sharded manifests (artfs._pieces) -------------------------------------------------
def trees_prefix(project: str) -> str:
    return f"{project}/trees/"


def tree_key(project: str, digest: str) -> str:
    """Store key of a manifest piece: ``<project>/trees/xxh128/<2 hex>/<32 hex>``."""
    check_digest(digest)
    hexpart = digest.split(":", 1)[1]
    return f"{project}/trees/{ALGO}/{hexpart[:2]}/{hexpart}"


def digest_of_tree_key(project: str, key: str) -> str | None:
    """The digest a key under :func:`trees_prefix` names, or None for anything else."""
    parts = key[len(trees_prefix(project)):].split("/")
    if not key.startswith(trees_prefix(project)) or len(parts) != 3 or parts[0] != ALGO:
        return None
    d = f"{ALGO}:{parts[2]}"
    try:
        check_digest(d)
    except CorruptData:
        return None
    return d if parts[1] == parts[2][:2] else None


# -- artifacts and versions ---------------------------------------------------------------------
def artifacts_prefix(project: str) -> str:
    return f"{project}/artifacts/"


def artifact_index_key(project: str, artifact: str) -> str:
    return f"{project}/artifacts/{artifact}/index.json"


def versions_prefix(project: str, artifact: str) -> str:
    return f"{project}/artifacts/{artifact}/versions/"


def version_key(project: str, artifact: str, n: int) -> str:
    return f"{project}/artifacts/{artifact}/versions/{n}.json"


def version_of_key(key: str) -> int | None:
    """N of a ``versions/<N>.json`` key (or of its last component); None for anything else."""
    name = key.rsplit("/", 1)[-1]
    return int(name[:-5]) if name.endswith(".json") and name[:-5].isdigit() else None


def info_key(project: str, artifact: str, n: int) -> str:
    return f"{project}/artifacts/{artifact}/info/{n}.json"


def aliases_prefix(project: str, artifact: str) -> str:
    return f"{project}/artifacts/{artifact}/aliases/"


def alias_key(project: str, artifact: str, alias: str) -> str:
    return f"{project}/artifacts/{artifact}/aliases/{alias}"


def digest_key(project: str, artifact: str, vdigest: str) -> str:
    """Where the version number of the version with digest ``vdigest`` (``xxh128:<hex>``) is kept."""
    return f"{project}/artifacts/{artifact}/digests/{vdigest.split(':')[1]}"


def deleted_prefix(project: str, artifact: str) -> str:
    return f"{project}/artifacts/{artifact}/deleted/"


def deleted_key(project: str, artifact: str, n: int) -> str:
    return f"{project}/artifacts/{artifact}/deleted/{n}"


# -- the history of aliases (artfs._aliaslog) ---------------------------------------------------------
def alias_log_prefix(project: str, artifact: str, alias: str | None = None) -> str:
    """Every recorded move of the artifact's aliases, or of one alias."""
    return f"{project}/aliases-log/{artifact}/" + (f"{alias}/" if alias else "")


def alias_log_key(project: str, artifact: str, alias: str, time_ns: int, tag: str) -> str:
    """One move: the time is zero-padded, so a listing (in key order) is in time order."""
    return f"{project}/aliases-log/{artifact}/{alias}/{time_ns:020d}-{tag}.json"


def parse_alias_log_key(project: str, artifact: str, key: str) -> tuple[str, int] | None:
    """(alias, time in ns) of a key listed under :func:`alias_log_prefix`, None for anything else."""
    rest = key[len(alias_log_prefix(project, artifact)):] if key.startswith(alias_log_prefix(project, artifact)) else ""
    alias, _, name = rest.partition("/")
    stamp, dash, tag = name.partition("-")
    if not (dash and stamp.isdigit() and len(stamp) == 20 and tag.endswith(".json") and tag[:-5].isalnum()):
        return None
    try:
        return check_alias(alias), int(stamp)
    except InvalidName:
        return None


def parse_artifact_listing(prefix: str) -> tuple[str, str, str] | None:
    """(project, artifact, kind) of ``<p>/artifacts/<a>/<kind>/`` for kind versions or aliases.

    What a store that cannot list (HTTPS) recognises in a listing request (artfs.backends.http).
    """
    parts = prefix.strip("/").split("/")
    if len(parts) != 4 or parts[1] != "artifacts" or parts[3] not in ("versions", "aliases"):
        return None
    return parts[0], parts[2], parts[3]


def is_artifacts_prefix(prefix: str) -> str | None:
    """The project of ``<project>/artifacts/``, else None."""
    parts = prefix.strip("/").split("/")
    return parts[0] if len(parts) == 2 and parts[1] == "artifacts" else None


#: the one directory under a project that a store which cannot list still shows (artfs.backends.http)
ARTIFACTS_DIR = "artifacts"


# -- commits and deletions in flight ---------------------------------------------------------------
def intents_prefix(project: str) -> str:
    return f"{project}/intents/"


def intent_key(project: str, commit_id: str) -> str:
    return f"{project}/intents/{commit_id}.json"


def parts_intent_key(project: str, commit_id: str) -> str:
    """The intent of a distributed finish: the merged parts' blobs (artfs._distributed)."""
    return f"{project}/intents/{commit_id}-parts.json"


def deleting_prefix(project: str) -> str:
    return f"{project}/deleting/"


def deleting_key(project: str, marker_id: str) -> str:
    return f"{project}/deleting/{marker_id}.json"


# -- distributed writers' groups ---------------------------------------------------------------------
def groups_prefix(project: str, artifact: str | None = None) -> str:
    """Every group of the project, or of one artifact."""
    return f"{project}/groups/" + (f"{artifact}/" if artifact else "")


def group_parts_prefix(project: str, artifact: str, group: str) -> str:
    return f"{project}/groups/{artifact}/{group}/parts/"


def group_part_key(project: str, artifact: str, group: str, writer: str) -> str:
    return f"{project}/groups/{artifact}/{group}/parts/{writer}.json"


def group_claims_prefix(project: str, artifact: str, group: str) -> str:
    return f"{project}/groups/{artifact}/{group}/finish/"


def group_claim_key(project: str, artifact: str, group: str, k: int) -> str:
    return f"{project}/groups/{artifact}/{group}/finish/{k}.json"


def group_finished_key(project: str, artifact: str, group: str) -> str:
    return f"{project}/groups/{artifact}/{group}/finished.json"


#: the components of a group's keys after ``<artifact>/<group>/`` (for code that sorts a listing)
GROUP_PARTS, GROUP_CLAIMS, GROUP_FINISHED = "parts", "finish", "finished.json"


def split_group_key(project: str, key: str) -> list[str]:
    """The components of ``key`` (listed under :func:`groups_prefix`) after ``<project>/groups/``:
    ``[artifact, group, GROUP_PARTS, "<writer>.json"]``, ``[artifact, group, GROUP_FINISHED]``..."""
    return key[len(groups_prefix(project)):].split("/")


# -- runs and lineage ------------------------------------------------------------------------------
def runs_prefix(project: str) -> str:
    return f"{project}/runs/"


def run_prefix(project: str, run_id: str) -> str:
    """What error messages name a run by."""
    return f"{project}/runs/{run_id}"


def run_key(project: str, run_id: str) -> str:
    return f"{project}/runs/{run_id}/run.json"


def run_history_key(project: str, run_id: str) -> str:
    """The run's metrics (``run.log``), JSON lines; rewritten whole by the run's one logging process."""
    return f"{project}/runs/{run_id}/history.jsonl"


def run_summary_key(project: str, run_id: str) -> str:
    return f"{project}/runs/{run_id}/summary.json"


def run_file_key(project: str, run_id: str, path: str) -> str:
    """A file of the run (``media/images/...`` of a logged ``Image``); ``path`` checked by the caller."""
    return f"{project}/runs/{run_id}/files/{path}"


def run_edges_prefix(project: str, run_id: str, kind: str) -> str:
    return f"{project}/runs/{run_id}/{kind}/"


def run_edge_key(project: str, run_id: str, kind: str, aproject: str, artifact: str, n: int) -> str:
    return f"{project}/runs/{run_id}/{kind}/{aproject}/{artifact}/{n}"


def version_edges_prefix(aproject: str, artifact: str, n: int, kind: str) -> str:
    return f"{aproject}/lineage/{kind}/{artifact}/{n}/"


def version_edge_key(aproject: str, artifact: str, n: int, kind: str, project: str, run_id: str) -> str:
    return f"{aproject}/lineage/{kind}/{artifact}/{n}/{project}/{run_id}"


# -- registry collections (artfs._registry) ---------------------------------------------------------
def collections_prefix(project: str) -> str:
    return f"{project}/collections/"


def collection_links_prefix(project: str, collection: str) -> str:
    return f"{project}/collections/{collection}/links/"


def collection_link_key(project: str, collection: str, n: int) -> str:
    return f"{project}/collections/{collection}/links/{n}.json"


def collection_aliases_prefix(project: str, collection: str) -> str:
    return f"{project}/collections/{collection}/aliases/"


def collection_alias_key(project: str, collection: str, alias: str) -> str:
    return f"{project}/collections/{collection}/aliases/{alias}"


def version_links_prefix(aproject: str, artifact: str, n: int) -> str:
    return f"{aproject}/lineage/linked/{artifact}/{n}/"


def version_link_key(aproject: str, artifact: str, n: int, project: str, collection: str, m: int) -> str:
    return f"{aproject}/lineage/linked/{artifact}/{n}/{project}/{collection}/{m}"


# -- index documents (what a store that cannot list reads instead; written by artfs._index) ----------
FORMAT = 1


def _names(values: Any, *, alias: bool = False) -> list[str]:
    out = []
    for v in values if isinstance(values, list) else []:
        try:
            out.append(check_alias(v) if alias else check_name(v))
        except InvalidName:
            continue
    return sorted(set(out))


def parse_index(data: bytes, *, where: str = "index") -> dict[str, Any] | None:
    """A cleaned index document (invalid names dropped), or None if it is not an index at all.

    Index files come from the store, so they are untrusted input like manifests.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        log.warning("%s: not valid JSON; ignoring it", where)
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        log.warning("%s: unknown index format; ignoring it", where)
        return None
    out: dict[str, Any] = {"format": FORMAT}
    if "projects" in doc:
        out["projects"] = _names(doc["projects"])
    if "artifacts" in doc:
        out["artifacts"] = _names(doc["artifacts"])
    if "versions" in doc:
        vs = doc["versions"] if isinstance(doc["versions"], list) else []
        out["versions"] = sorted({v for v in vs if isinstance(v, int) and not isinstance(v, bool) and v >= 0})
    if isinstance(doc.get("aliases"), dict):
        names = set(_names(list(doc["aliases"]), alias=True))
        out["aliases"] = {k: v for k, v in doc["aliases"].items() if k in names and isinstance(v, int)}
    for k in ("latest", "next"):
        if isinstance(doc.get(k), int) and not isinstance(doc[k], bool) and doc[k] >= 0:
            out[k] = doc[k]
    return out
