"""The store: projects, artifacts, versions, aliases, commits, deletion and gc.

Store layout (the same on a local disk, under an S3 prefix and behind a static HTTPS server)::

    <project>/blobs/xxh128/<2>/<32>                    file contents, immutable
    <project>/trees/xxh128/<2>/<32>                    a directory of a sharded manifest (artfs._pieces)
    <project>/artifacts/<artifact>/versions/<N>.json   manifest of vN (format 1), or its head naming its
                                                       root piece (format 2, sharded), created exclusively
    <project>/artifacts/<artifact>/info/<N>.json       mutable description/metadata of vN
    <project>/artifacts/<artifact>/aliases/<alias>     the version number an alias points to
    <project>/artifacts/<artifact>/digests/<32 hex>    version digest -> N (finds identical content)
    <project>/artifacts/<artifact>/deleted/<N>         tombstone of a deleted vN: N is never used again
    <project>/intents/<commit-id>.json                 a commit in flight: the blobs it will reference
    <project>/deleting/<id>.json                       a deletion or gc in flight
    <project>/groups/<artifact>/<group>/...            distributed writers' pending parts (artfs._distributed)

(the keys are spelled only in :mod:`artfs._layout`)

Invariants
* Every blob and piece named by an existing manifest exists. A commit uploads its blobs and
  writes its pieces before it creates its manifest; deletion removes a manifest before any blob
  or piece (:mod:`artfs._shards` says how a sharded commit is ordered).
* ``versions/<N>.json`` is only ever created with an exclusive create; racing writers for the same
  N see AlreadyExists and take the next number, so no version is overwritten or lost.
* A version number is never reused: deletion writes ``deleted/<N>`` before removing the manifest
  and a commit numbers past every tombstone (and re-checks the tombstone after its create), so a
  manifest cached anywhere under its number stays the truth forever.
* ``latest`` is the highest version unless ``aliases/latest`` was set explicitly; logging a new
  version removes an explicit ``latest``. Other aliases are one file each, so one version per alias.
  Every move of an alias is recorded first, one object per move (:mod:`artfs._aliaslog`).

Commit versus deletion: no locks, only ordering (a commit writes its intent, waits for the
deletions running now, then uploads blobs and creates its manifest); the protocol is described in
:mod:`artfs._gc`, with the deletion and gc code.
"""

from __future__ import annotations

import difflib
import datetime as _dt
import json
import os
import time
import uuid
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import xxhash

from . import _aliaslog
from . import _distributed
from . import _gc
from . import _layout as L
from ._artifact import Artifact
from ._cache import Cache
from ._errors import AlreadyExists, ArtfsError, CorruptData, InvalidName, NotFound, PermissionDenied
from ._gc import INTENT_GRACE as INTENT_GRACE, MARKER_STALE as MARKER_STALE, HasAliases as HasAliases  # re-exported
from ._index import update_index
from ._layout import blob_key
from ._manifest import Entry, Manifest, blob_digests, check_entries, gc_paused, version_digest
from ._memo import ManifestMemo, copy_manifest
from ._pieces import Piece, head_bytes, parse_manifest, shard_min
from ._shards import PieceReader, ShardedCommit
from ._names import Spec, check_alias, check_name, parse_spec
from ._names import valid_name as _valid
from ._parallel import STORE_WORKERS, pmap
from ._results import CommitResult as CommitResult  # re-exported: artfs.CommitResult, artfs._store.CommitResult
from .backends import Backend, open_backend

if TYPE_CHECKING:
    from ._distributed import GroupInfo, PartResult

_WORKERS = STORE_WORKERS


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """A store of artifacts: a local directory (default), ``s3://bucket/prefix`` or ``https://…``.

    ``Store()`` opens the default store (``$ARTFS_STORE``, else ``~/.local/share/artfs/store``);
    a local store directory is created by the first write. Opening does not contact the store:
    a store that cannot be reached raises ``StoreUnavailable`` on first use, a malformed URL
    ``ValueError``. Methods raise ``InvalidName`` for bad names and ``NotFound`` for what does
    not exist; ``https://`` stores are read-only (``PermissionDenied`` on writes).
    """

    def __init__(self, url: str | None = None, *, cache: Cache | None = None, backend: Backend | None = None) -> None:
        self.backend = backend or open_backend(url)
        self.url = self.backend.url
        self.cache = cache or Cache()
        self.id = xxhash.xxh64_hexdigest(self.url.encode())
        self._memo = ManifestMemo()  # the last few parsed manifests (artfs._memo)
        self._pieces = PieceReader(self)  # pieces of sharded manifests (artfs._shards)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- listing -------------------------------------------------------------------------------
    def projects(self) -> list[str]:
        """Projects with artifacts (or registry collections); a project the store refuses to list is
        skipped (see artfs._access)."""
        out = []
        for p in self.backend.list_dirs(""):
            try:
                if _valid(p) and (self.artifacts(p) or self.backend.list_dirs(L.collections_prefix(p))):
                    out.append(p)
            except PermissionDenied:
                continue
        return out

    def artifacts(self, project: str) -> list[str]:
        """The artifacts of ``project`` ([] for a project that does not exist); ``InvalidName`` for a bad name."""
        check_name(project, "project")
        return [a for a in self.backend.list_dirs(L.artifacts_prefix(project)) if _valid(a)]

    def versions(self, project: str, artifact: str) -> list[int]:
        """The version numbers of an artifact, ascending ([] if it does not exist); ``InvalidName`` for bad names."""
        check_name(project, "project")
        check_name(artifact, "artifact")
        out = []
        for o in self.backend.list(L.versions_prefix(project, artifact)):
            n = L.version_of_key(o.key)
            if n is not None:
                out.append(n)
        return sorted(out)

    def aliases(self, project: str, artifact: str, *, versions: list[int] | None = None) -> dict[str, int]:
        """Alias -> version, including the automatic ``latest``; aliases of deleted versions are dropped."""
        if versions is None:
            versions = self.versions(project, artifact)
        present = set(versions)
        out: dict[str, int] = {}
        prefix = L.aliases_prefix(project, artifact)
        for o in self.backend.list(prefix):
            name = o.key[len(prefix) :]
            if "/" in name or not _valid(name, alias=True):
                continue
            try:
                n = int(self.backend.get(o.key).decode().strip())
            except (NotFound, ValueError):
                continue
            if n in present:
                out[name] = n
        if "latest" not in out and versions:
            out["latest"] = versions[-1]
        return out

    def resolve(self, spec: str | Spec) -> tuple[str, str, int]:
        """``"p/a:best"`` -> ``("p", "a", 3)``: the version a spec names (``latest`` when it names none).

        Raises ``InvalidName`` for a malformed spec and ``NotFound`` (with a "did you mean" for a
        misspelt project, artifact or alias) when the version does not exist.
        """
        s = parse_spec(spec, need_ref=True) if isinstance(spec, str) else spec
        if s.version is not None:
            if not self.backend.exists(L.version_key(s.project, s.artifact, s.version)):
                raise NotFound(f"{s}: no such version{self._hint(s)}")
            return s.project, s.artifact, s.version
        alias = s.alias or "latest"
        versions = self.versions(s.project, s.artifact)
        if not versions:
            if s.artifact not in self.artifacts(s.project):
                raise NotFound(f"{s.project}/{s.artifact}: no such artifact in {self.url}{self._hint(s)}")
            raise NotFound(f"{s.project}/{s.artifact}: has no versions")
        aliases = self.aliases(s.project, s.artifact, versions=versions)
        if alias not in aliases:
            close = difflib.get_close_matches(alias, list(aliases), n=1)
            raise NotFound(f"{s}: no such alias" + (f"; did you mean {s.project}/{s.artifact}:{close[0]}?" if close else ""))
        return s.project, s.artifact, aliases[alias]

    def _hint(self, s: Spec) -> str:
        """``; did you mean p/a?`` for a misspelt project or artifact of ``s`` ("" when none is close)."""
        try:
            projects = self.backend.list_dirs("")
            project = s.project
            if project not in projects:
                close = difflib.get_close_matches(project, [p for p in projects if _valid(p)], n=1)
                if not close:
                    return ""
                project = close[0]
            artifact = s.artifact
            names = self.artifacts(project)
            if artifact not in names:
                close = difflib.get_close_matches(artifact, names, n=1)
                if not close:
                    return ""
                artifact = close[0]
        except ArtfsError:  # the hint is a courtesy; the NotFound it decorates is the answer
            return ""
        if (project, artifact) == (s.project, s.artifact):
            return ""
        return f"; did you mean {project}/{artifact}?"

    def manifest(self, project: str, artifact: str, n: int) -> Manifest:
        """The manifest of vN, from the local cache when read before (manifests never change).

        The last few parsed manifests are kept in memory too (a commit needs its base's several
        times, and parsing a million entries takes seconds); each call returns its own copy
        (the entry list and the metadata), so a caller may change what it gets.
        """
        m = self._memo.get(project, artifact, n)
        if m is None:
            m = self._read_manifest(project, artifact, n)
            self._memo.remember(m)
            m = copy_manifest(m)
        return m

    def forget_manifest(self, project: str, artifact: str, n: int) -> None:
        """Drop vN from this store's memo of parsed manifests: the deleter (artfs._gc) calls it
        once vN's manifest is gone, so this process does not answer from a memo of it."""
        self._memo.forget(project, artifact, n)

    def _read_manifest(self, project: str, artifact: str, n: int) -> Manifest:
        where = f"{project}/{artifact}:v{n}"
        m: Manifest | None = None
        for cpath in (self.cache.manifest_path(self.id, project, artifact, n),
                      self.cache.head_path(self.id, project, artifact, n)):
            try:
                with open(cpath, "rb") as f:
                    m = parse_manifest(f.read(), where=where, read_piece=self._pieces.read)
                break
            except (FileNotFoundError, CorruptData):
                continue
        if m is None:
            try:
                data = self.backend.get(L.version_key(project, artifact, n))
            except NotFound:
                raise NotFound(f"{where}: no such version") from None
            m = parse_manifest(data, where=where, read_piece=self._pieces.read)
            self.cache.write_small(self._cached_manifest_path(m), data)
        if (m.project, m.artifact, m.version) != (project, artifact, n):
            raise CorruptData(f"{where}: manifest names {m.project}/{m.artifact}:v{m.version}")
        return m

    def _cached_manifest_path(self, m: Manifest) -> str:
        """Where the cache keeps ``m``'s bytes: a sharded version's head apart (artfs._cache)."""
        path = self.cache.head_path if m.sharded else self.cache.manifest_path
        return path(self.id, m.project, m.artifact, m.version)

    def read_piece(self, project: str, digest: str, where: str) -> Piece:
        """One piece of a sharded manifest of ``project``, checked (``where``: for error messages)."""
        return self._pieces.read(project, digest, where)

    def info(self, project: str, artifact: str, n: int) -> dict[str, Any]:
        """Mutable description/metadata of vN (falls back to what the manifest recorded)."""
        try:
            doc = json.loads(self.backend.get(L.info_key(project, artifact, n)))
            if isinstance(doc, dict):
                return doc
        except (NotFound, ValueError):
            pass
        m = self.manifest(project, artifact, n)
        return {"description": m.description, "metadata": m.metadata}

    def artifact(self, spec: str) -> "Artifact":
        """A logged version: ``store.artifact("cycling/bike-dataset:latest")``."""
        project, artifact, n = self.resolve(spec)
        return Artifact.of_version(self, project, artifact, n)

    def artifact_versions(self, name: str) -> list["Artifact"]:
        """Every version of ``project/artifact`` as a logged :class:`Artifact`, oldest first ([] if none).

        Raises ``InvalidName`` for a malformed name.
        """
        s = parse_spec(name)
        return [Artifact.of_version(self, s.project, s.artifact, n) for n in self.versions(s.project, s.artifact)]

    # -- writing -------------------------------------------------------------------------------
    def log_artifact(self, art: "Artifact", project: str, *, aliases: Iterable[str] = (),
                     run: str | None = None) -> "Artifact":
        """Log a new version of ``art`` (or match an identical existing one); returns the logged version.

        ``run`` (``project/run_id``) is recorded in the manifest as the run that logged it.
        """
        return art.log_to(self, project, list(aliases), run=run)

    def upload_blobs(self, project: str, digests: list[str], missing: list[str],
                     sources: Mapping[str, Callable[[str], None] | str], sizes: Mapping[str, int],
                     progress: Callable[[int], None] | None, workers: int = _WORKERS) -> int:
        """Upload the blobs ``missing`` of ``digests`` (a local path, or a function that writes the
        key, per digest in ``sources``), several at once, and make them durable; ``progress``
        first gets the bytes of those already in the store. Returns the bytes uploaded (shared by
        commits and parts)."""
        if progress:
            absent = set(missing)
            progress(sum(sizes[d] for d in digests if d not in absent))

        def done(d: str) -> None:
            if progress:
                progress(sizes.get(d, 0))

        got = [sources.get(d) for d in missing]  # one question per blob (a source may be built on demand)
        unknown = [d for d, src in zip(missing, got) if src is None]
        if unknown:
            raise ArtfsError(f"no local source for blob {unknown[0]}")
        files = [(d, src) for d, src in zip(missing, got) if isinstance(src, str)]
        calls = [(d, src) for d, src in zip(missing, got) if src is not None and not isinstance(src, str)]
        del got

        def upload(item: tuple[str, Callable[[str], None]]) -> None:
            item[1](blob_key(project, item[0]))
            done(item[0])

        self.backend.put_files([(blob_key(project, d), src) for d, src in files], workers,
                               done=lambda i: done(files[i][0]))
        pmap(upload, calls, workers)
        del calls
        # durable before a manifest or a part names them (the local store syncs here, not per file)
        self.backend.flush([blob_key(project, d) for d in missing])
        return sum(sizes.get(d, 0) for d in missing)

    def commit(
        self,
        project: str,
        artifact: str,
        *,
        type: str,
        entries: list[Entry],
        sources: Mapping[str, Callable[[str], None] | str],
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        aliases: Iterable[str] = (),
        run: str | None = None,
        progress: Callable[[int], None] | None = None,
        commit_id: str | None = None,
        base_version: int | None = None,
        vdigest: str | None = None,
        known_blobs: Iterable[str] = (),
    ) -> CommitResult:
        """Create the next version of ``project/artifact`` from ``entries``.

        ``sources`` maps a digest to a local file path holding its bytes. Only blobs the store
        lacks are uploaded. Identical content (same version digest) creates no new version.

        ``commit_id`` makes a retried commit exactly-once: the caller records the id durably
        before the first attempt and passes the same id on every retry. If a version newer than
        ``base_version`` (all versions when None) already carries that id in its manifest, an
        earlier attempt got as far as creating it; that version is returned with
        ``created=False`` and nothing is uploaded again.

        ``vdigest`` is ``version_digest(entries)`` when the caller has it already (a draft
        computes it to compare with its base): hashing a million entries twice costs seconds.

        ``known_blobs``: digests the caller knows are in the store and protected from deletion
        (the blobs of pending parts a distributed ``finish`` merges, named by its own intent):
        not checked again, and not repeated in this commit's intent.
        """
        check_name(project, "project")
        check_name(artifact, "artifact")
        aliases = [check_alias(a) for a in aliases]
        with gc_paused():  # no cycles among entries; a collection would walk them all
            entries = check_entries(entries)
            vdigest = vdigest or version_digest(entries)
        versions = self.versions(project, artifact)
        if commit_id is not None:
            done = self.find_commit(project, artifact, commit_id, after=base_version, versions=versions)
            if done is not None:
                # Finish what the earlier attempt may not have reached after its manifest.
                self.backend.delete(L.intent_key(project, commit_id))
                m = self.manifest(project, artifact, done)
                self.backend.put(L.digest_key(project, artifact, m.digest), str(done).encode())
                for a in aliases:
                    self.set_alias(project, artifact, a, done, run=run)
                return CommitResult(project, artifact, done, False, len(m.entries), aliases=aliases)
        base: Manifest | None = None  # the latest version's manifest, parsed once for all uses below
        if versions:
            base = self.manifest(project, artifact, versions[-1])
            if base.type != type and type != "unspecified":
                raise InvalidName(f"{project}/{artifact} has type {base.type!r}, not {type!r}")
            type = base.type if type == "unspecified" else type
        same = self._find_digest(project, artifact, vdigest, versions, latest=base)
        if same is not None:
            for a in aliases:
                self.set_alias(project, artifact, a, same, run=run)
            return CommitResult(project, artifact, same, False, len(entries), aliases=aliases)

        with gc_paused():
            digests = blob_digests(entries)
            sharded = ShardedCommit(self, project, entries, base) if len(entries) >= shard_min() else None
        commit_id = commit_id or uuid.uuid4().hex
        ikey = L.intent_key(project, commit_id)
        protected = set(known_blobs)  # kept alive by their owner (pending parts): not repeated in the intent

        def intent(blobs: list[str]) -> None:
            doc: dict[str, Any] = {"created": time.time(), "artifact": artifact,
                                   "blobs": [d for d in blobs if d not in protected] if protected else blobs}
            if sharded is not None:
                doc["trees"] = sharded.trees()
            self.backend.put(ikey, json.dumps(doc).encode())

        intent(sharded.new_blobs() if sharded is not None and sharded.knows_base else digests)
        try:
            self.wait_for_deletions(project)
            # Blobs of a manifest that still exists after our intent are present (see invariants).
            known: set[str] = set()
            alive = base is not None and self.backend.exists(L.version_key(project, artifact, versions[-1]))
            if sharded is not None and sharded.knows_base:
                if not alive:  # the base was deleted meanwhile: know nothing (artfs._shards)
                    sharded.forget_base()
                    intent(digests)
                    self.wait_for_deletions(project)
                    to_check = digests
                else:
                    to_check = sharded.new_blobs()
            else:
                if alive and base is not None:
                    known = set(map(_digest_of, base.entries))
                    known.discard(None)
                to_check = digests
            known |= protected
            missing = self.missing_blobs(project, [d for d in to_check if d not in known])
            sizes = dict(zip(map(_digest_of, entries), map(_size_of, entries)))  # a None key is never asked

            up_bytes = self.upload_blobs(project, digests, missing, sources, sizes, progress)
            if sharded is not None:
                sharded.write_pieces()  # after the blobs they name, before the head naming them

            # A number is never handed out twice, not even after its version was deleted:
            # caches (ours and other machines') keep manifests forever, keyed by number.
            n = self._next_version(project, artifact, versions)
            created = _now()
            while True:
                m = Manifest(project, artifact, n, type, entries, vdigest, created,
                             description, dict(metadata or {}), run, commit_id)
                with gc_paused():
                    data = m.to_bytes() if sharded is None else head_bytes(m, sharded.root)
                try:
                    self.backend.put(L.version_key(project, artifact, n), data, exclusive=True)
                except AlreadyExists:
                    n = max(n + 1, self._next_version(project, artifact, self.versions(project, artifact)))
                    continue
                if self._deleted_other(project, artifact, n, m):
                    # vN was created and deleted by others between our listing and our create
                    self.backend.delete(L.version_key(project, artifact, n))
                    n = max(n + 1, self._next_version(project, artifact, self.versions(project, artifact)))
                    continue
                break
            if sharded is not None:
                m = sharded.lazy(m)
            self.cache.write_small(self._cached_manifest_path(m), data)
            self._memo.remember_written(m)
        finally:
            self.backend.delete(ikey)
        self.backend.put(L.digest_key(project, artifact, vdigest), str(n).encode())
        self.backend.delete(L.alias_key(project, artifact, "latest"))
        for a in aliases:
            self.set_alias(project, artifact, a, n, run=run)
        update_index(self, project, artifact)  # for stores that cannot list (HTTP); never raises
        return CommitResult(project, artifact, n, True, len(entries), len(missing), up_bytes, aliases)

    def find_commit(self, project: str, artifact: str, commit_id: str, *, after: int | None = None,
                    versions: list[int] | None = None) -> int | None:
        """The version whose manifest records ``commit_id``, searching versions newer than ``after``."""
        if versions is None:
            versions = self.versions(project, artifact)
        for n in reversed(versions):
            if after is not None and n <= after:
                break
            try:
                if self.manifest(project, artifact, n).commit_id == commit_id:
                    return n
            except NotFound:  # deleted meanwhile
                continue
        return None

    def _next_version(self, project: str, artifact: str, versions: list[int]) -> int:
        """One more than the highest version that exists or ever existed (see ``deleted/``)."""
        used = list(versions)
        for o in self.backend.list(L.deleted_prefix(project, artifact)):
            name = o.key.rsplit("/", 1)[-1]
            if name.isdigit():
                used.append(int(name))
        return max(used, default=-1) + 1

    def _deleted_other(self, project: str, artifact: str, n: int, m: Manifest) -> bool:
        """Whether ``deleted/<n>`` records the deletion of a vN other than ``m``."""
        try:
            doc = json.loads(self.backend.get(L.deleted_key(project, artifact, n)))
        except NotFound:
            return False
        except ValueError:
            return True
        return not (isinstance(doc, dict) and doc.get("commit_id") == m.commit_id and doc.get("created") == m.created)

    def _find_digest(self, project: str, artifact: str, vdigest: str, versions: list[int], *,
                     latest: Manifest | None = None) -> int | None:
        """The version with version digest ``vdigest``; ``latest``: the manifest of ``versions[-1]`` if read."""
        def digest_of(n: int) -> str:
            if latest is not None and n == versions[-1]:
                return latest.digest
            return self.manifest(project, artifact, n).digest

        try:
            n = int(self.backend.get(L.digest_key(project, artifact, vdigest)).decode())
            if n in versions and digest_of(n) == vdigest:
                return n
        except (NotFound, ValueError):
            pass
        if versions and digest_of(versions[-1]) == vdigest:
            return versions[-1]
        return None

    def missing_blobs(self, project: str, digests: list[str]) -> list[str]:
        """The ``digests`` whose blobs are not in the store's ``project``, asked in one batch (a
        commit and a distributed part upload only those: the seam they share)."""
        keys = [blob_key(project, d) for d in digests]
        gone = set(self.backend.missing(keys))
        return [d for d, k in zip(digests, keys) if k in gone]

    def wait_for_deletions(self, project: str, *, timeout: float = MARKER_STALE) -> None:
        """Wait until the deletions running now are done (see :func:`artfs._gc.wait_for_deletions`)."""
        _gc.wait_for_deletions(self, project, timeout=timeout)

    # -- aliases and info ----------------------------------------------------------------------
    def set_alias(self, project: str, artifact: str, alias: str, n: int, *, run: str | None = None) -> None:
        """Point ``alias`` at vN (moving it if it exists); ``NotFound`` if vN does not exist.

        The move is recorded in the alias's history (:mod:`artfs._aliaslog`), with ``run``
        (``project/run_id``; by default the current run, if any)."""
        _aliaslog.set_alias(self, project, artifact, alias, n, run=run)

    def remove_alias(self, project: str, artifact: str, alias: str) -> None:
        """Remove an alias (recorded); ``NotFound`` if there is none, ``InvalidName`` for the automatic ``latest``."""
        _aliaslog.remove_alias(self, project, artifact, alias)

    def rename_alias(self, project: str, artifact: str, old: str, new: str) -> int:
        """Move the alias ``old`` to the name ``new`` (the same version, replacing a ``new`` that
        exists); returns that version's number.

        ``NotFound`` if there is no ``old``; ``InvalidName`` for the automatic ``latest`` (one that
        was never set explicitly), which follows the newest version and cannot be removed.
        """
        check_alias(old)
        check_alias(new)
        if old == "latest" and not self.backend.exists(L.alias_key(project, artifact, "latest")):
            raise InvalidName("'latest' is automatic; it can be moved but not removed")
        n = self.aliases(project, artifact).get(old)
        if n is None:
            raise NotFound(f"{project}/{artifact}:{old}: no such alias")
        if new != old:
            self.set_alias(project, artifact, new, n)
            self.remove_alias(project, artifact, old)
        return n

    def set_info(self, project: str, artifact: str, n: int, *, description: str | None, metadata: dict[str, Any],
                 tags: list[str] | None = None, ttl: float | None | str = "keep") -> None:
        """Replace the description, metadata, tags and TTL (seconds) of vN (``Artifact.save`` does this);
        tags None and ttl ``"keep"`` keep what vN has (``artfs describe`` changes neither). ``NotFound`` if no vN."""
        self.manifest(project, artifact, n)  # must exist
        if tags is None or ttl == "keep":
            old = self.info(project, artifact, n)
            tags = old.get("tags") if tags is None else tags
            ttl = old.get("ttl") if ttl == "keep" else ttl
        doc: dict[str, Any] = {"description": description, "metadata": metadata, "updated": _now()}
        if tags:
            doc["tags"] = list(tags)
        if ttl is not None:
            doc["ttl"] = ttl
        self.backend.put(L.info_key(project, artifact, n), json.dumps(doc, ensure_ascii=False).encode())

    # -- deletion (see artfs._gc) ----------------------------------------------------------------
    def delete_version(self, project: str, artifact: str, n: int, *, delete_aliases: bool = False) -> list[str]:
        """Delete vN and at once every blob nothing else needs; returns the aliases removed."""
        return _gc.delete_version(self, project, artifact, n, delete_aliases=delete_aliases)

    def gc(self, project: str, *, dry_run: bool = False) -> dict[str, int]:
        """Remove blobs no version and no young intent needs, and stale intents/markers/temp files."""
        return _gc.gc(self, project, dry_run=dry_run)

    # -- distributed writers (see artfs._distributed) ---------------------------------------------
    def upsert_artifact(self, art: "Artifact", project: str, group: str, *, writer: str | None = None) -> "PartResult":
        """Add ``art``'s files to the pending version ``group`` as ``writer``'s part (W&B's upsert_artifact)."""
        return _distributed.upsert_artifact(self, art, project, group, writer=writer)

    def finish_artifact(self, art: "Artifact", project: str, group: str, *, aliases: Iterable[str] = ()) -> "Artifact":
        """Merge every part of ``group`` (and ``art``'s own files) into the next version, exactly once."""
        r = _distributed.finish_artifact(self, art, project, group, aliases=aliases)
        logged = Artifact.of_version(self, project, r.artifact, r.version)
        logged.commit_result = r
        return logged

    def groups(self, project: str, artifact: str | None = None) -> "list[GroupInfo]":
        """The pending groups of ``project`` (or of one artifact): parts, writers, sizes."""
        return _distributed.groups(self, project, artifact)

    # -- reading blobs -------------------------------------------------------------------------
    def fetch_blob(self, project: str, digest: str) -> str:
        """Path of the verified cached copy of a blob, fetching it from the store if needed."""
        return self.cache.ensure(digest, lambda tmp: self.backend.download_file(blob_key(project, digest), tmp))


_digest_of = attrgetter("digest")
_size_of = attrgetter("size")

