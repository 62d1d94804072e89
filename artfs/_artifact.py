"""The Python API's ``Artifact``, named after Weights & Biases Artifacts.

An ``Artifact`` is either a *draft* being assembled (``add_file``, ``add_dir``, ``new_file``) and
logged with ``Store.log_artifact``, or a *logged version* returned by ``Store.artifact`` /
``log_artifact`` (``download``, ``checkout``, ``verify``, ``get_path``, ``save``, ``delete``).
"""

from __future__ import annotations

import contextlib
import operator
import os
import shutil
import tempfile
import uuid
import weakref
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ._artifact_extras import ArtifactExtras, check_tags
from ._digest import digest_file
from ._download import place_entries
from ._errors import ArtfsError, CorruptData, InvalidName, InvalidPath
from ._hashes import HashRecord
from ._manifest import Entry, Manifest
from ._names import check_alias, check_name, check_path, check_paths
from ._puttree import EXEC, Sources, hash_files
from ._refs import is_pinned, resolve_reference

if TYPE_CHECKING:
    from ._diff import ArtifactDiff
    from .backends.base import Staging
    from ._run import Run
    from ._results import CommitResult
    from ._store import Store

_WORKERS = 8


class ArtifactManifestEntry:
    """One file of a logged version (W&B's name): ``path``, ``digest``, ``size``, and ``download()``."""

    def __init__(self, artifact: "Artifact", entry: Entry) -> None:
        self._artifact = artifact
        self.entry = entry

    path = property(lambda self: self.entry.path, doc="The file's path inside the version (``a/b.txt``).")
    digest = property(lambda self: self.entry.digest,
                      doc="``xxh128:<32 hex>`` of the contents (None for a reference recorded without a checksum).")
    size = property(lambda self: self.entry.size, doc="Size in bytes.")

    def ref(self) -> str | None:
        """The URI a reference entry points to; None for a file stored in the store."""
        return self.entry.ref

    def download(self, root: str | None = None, *, allow_file: bool = False,
                 file_roots: list[str] | tuple[str, ...] = ()) -> str:
        """Download this one file under ``root`` (default: the artifact's download dir); returns its path."""
        root = self._artifact._download(root, path_prefix=self.entry.path, exact=True, allow_file=allow_file,
                                        file_roots=file_roots)
        return os.path.join(root, *self.entry.path.split("/"))

    def __repr__(self) -> str:
        return f"ArtifactManifestEntry({self.entry.path!r}, {self.entry.digest!r}, size={self.entry.size})"


class Artifact(ArtifactExtras):
    """A version of a dataset or model, as in W&B: a draft to fill and log, or a logged version.

    ``Artifact(name, type=...)`` starts a draft: ``add_file``, ``add_dir``, ``new_file``,
    ``add_reference``, ``remove``, then ``store.log_artifact(art, project=...)``.
    ``store.artifact("project/name:v3")`` (or ``:latest``, ``:best``) returns a logged version:
    ``files``, ``get_path``, ``download``, ``checkout``, ``verify``, and ``save``/``delete``.
    Calling a draft-only method on a logged version (or the reverse) raises ``ArtfsError``;
    an invalid name or type raises ``InvalidName``.
    """

    def __init__(self, name: str, type: str = "unspecified", description: str | None = None,
                 metadata: dict[str, Any] | None = None, incremental: bool = False, use_as: str | None = None) -> None:
        self._name = check_name(name, "artifact")
        self._copies_init()
        self.type = check_name(type, "type") if type != "unspecified" else type
        self.description = description
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.aliases: list[str] = []
        self._files: dict[str, str] = {}  # entry path -> local file
        self._roots: list[str] = []  # add_dir's directories (the hash record reads each one's rows at once)
        self.hashed_files = 0  # files read to hash them at the last log (the others: from the hash record)
        self._refs: dict[str, Entry] = {}  # entry path -> reference entry (add_reference)
        self._tmpdir: str | None = None  # new_file()'s files; removed once logged, or with the draft
        self._tmp_cleanup: weakref.finalize[..., Any] | None = None
        # logged state
        self._store: Store | None = None
        self.project: str | None = None
        self._version: int | None = None
        self._manifest: Manifest | None = None
        self._saved_aliases: list[str] = []
        self.commit_result: CommitResult | None = None
        self._source: tuple[str, str, int] | None = None  # a registry link: the version it names

    # -- identity ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """``bike-dataset`` for a draft, ``bike-dataset:v3`` once logged (as in W&B)."""
        return f"{self._name}:v{self._version}" if self._version is not None else self._name

    @property
    def qualified_name(self) -> str:
        """``project/artifact:vN`` of a logged version."""
        return f"{self.project}/{self.name}"

    @property
    def version(self) -> str | None:
        """``"v3"`` once logged, None for a draft."""
        return f"v{self._version}" if self._version is not None else None

    @property
    def is_draft(self) -> bool:
        """True until the artifact is logged."""
        return self._version is None

    def __repr__(self) -> str:
        return f"<Artifact {self.qualified_name if self.project else self.name} ({self.type})>"

    # -- building a draft ----------------------------------------------------------------------
    def _need_draft(self) -> None:
        if not self.is_draft:
            raise ArtfsError(f"{self.qualified_name} is logged and immutable; start a new Artifact to change files")

    def add_file(self, local_path: str, name: str | None = None, *, overwrite: bool = False, is_tmp: bool = False,
                 skip_cache: bool = False, policy: str = "mutable") -> str:
        """Add one local file as ``name`` (default: its base name); returns the entry path. W&B's
        ``policy``/``skip_cache``/``is_tmp`` are accepted: the file is hashed now and read at log time."""
        self._need_draft()
        if not os.path.isfile(local_path):
            raise ArtfsError(f"{local_path}: not a file")
        path = check_path(name if name is not None else os.path.basename(local_path))
        if path in self._files and not overwrite:
            raise InvalidPath(f"{path!r} is already in the artifact (pass overwrite=True to replace it)")
        self._files[path] = os.path.abspath(local_path)
        return path

    def add_dir(self, local_path: str, name: str | None = None) -> list[str]:
        """Add every file under ``local_path``, placed under ``name`` (default: the root)."""
        self._need_draft()
        if not os.path.isdir(local_path):
            raise ArtfsError(f"{local_path}: not a directory")
        root = os.path.abspath(local_path)
        self._roots.append(root)
        head = name.strip("/") + "/" if name else ""
        found = [(head + rel, full) for full, rel in _walk_files(root)]
        added = [p for p, _ in found]
        check_paths(added)  # what add_file(full, path, overwrite=True) checks, in bulk
        self._files.update(found)
        return added

    @contextlib.contextmanager
    def new_file(self, name: str, mode: str = "x", encoding: str | None = None) -> Iterator[IO[Any]]:
        """Write a new file straight into the artifact: ``with art.new_file("notes.txt") as f: ...``."""
        self._need_draft()
        path = check_path(name)
        if path in self._files:
            raise InvalidPath(f"{path!r} is already in the artifact")
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="artfs-new-")
            # a draft dropped without being logged (or a process that exits) leaves nothing behind
            self._tmp_cleanup = weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
        local = os.path.join(self._tmpdir, uuid.uuid4().hex)
        with open(local, mode if mode != "x" else "x", encoding=encoding if "b" not in mode else None) as f:
            yield f
        self._files[path] = local

    def add_reference(self, uri: "str | ArtifactManifestEntry", name: str | None = None, checksum: bool = True,
                      max_objects: int | None = None) -> list[Entry]:
        """Add the object(s) at ``uri`` by reference: the bytes stay where they are.

        ``s3://bucket/key`` or a prefix, ``gs://bucket/key`` or a prefix, ``http(s)://…``, or
        ``file:///path`` (a file or a directory). ``name`` is the entry path of a single object
        (default: its base name) or the directory for a prefix's objects (default: the root).
        With ``checksum`` (the default) each entry records what identifies its object (ETag,
        version id, generation, or a content digest) and later reads fail with ReferenceChanged
        rather than serve other bytes; without it only the URI is recorded. A prefix of more than
        ``max_objects`` (default 10000) objects is refused. Returns the entries added.
        An entry of another logged artifact (``other.get_entry("x")``) adds that same file.
        """
        if isinstance(uri, ArtifactManifestEntry):
            return self._add_entry_of(uri, name)
        self._need_draft()
        entries = resolve_reference(uri, name=name, checksum=checksum, max_objects=max_objects)
        for e in entries:
            if e.path in self._files or e.path in self._refs or e.path in self._copies:
                raise InvalidPath(f"{e.path!r} is already in the artifact")
        self._refs.update((e.path, e) for e in entries)
        return entries

    def remove(self, name: str) -> None:
        """Take a file, or a directory and everything below it, out of the draft.

        Raises ``ArtfsError`` when nothing of that name was added, ``InvalidPath`` for a bad name.
        """
        self._need_draft()
        path = check_path(name)
        if path in self._files:
            del self._files[path]
            return
        if path in self._refs:
            del self._refs[path]
            return
        if self._remove_copy(path):
            return
        prefix = path + "/"
        gone = [p for p in self._files if p.startswith(prefix)]
        gone_refs = [p for p in self._refs if p.startswith(prefix)]
        if not gone and not gone_refs:
            raise ArtfsError(f"{path!r} is not in the artifact")
        for p in gone:
            del self._files[p]
        for p in gone_refs:
            del self._refs[p]

    def _entries(self, record: HashRecord | None = None, *, staging: "Staging | None" = None, project: str = ""
                 ) -> tuple[list[Entry], Sources, Callable[[], None]]:
        """This draft's entries (its files hashed, in parallel; references as they are), the
        source of each blob (references have nothing to upload), and a function removing the
        staged copies the commit did not place (call it whatever the commit did).

        ``record``: the local record of what was hashed (:mod:`artfs._hashes`): a file unchanged
        since it was recorded is not read again. ``new_file()``'s files are hashed without it
        (they are removed once logged). ``hashed_files`` counts the files read.
        ``staging``: the store's (the local one, :meth:`~artfs.backends.base.Backend.staging`):
        each file read is copied beside its blob as it is hashed, and that copy is its blob's
        source (:mod:`artfs._puttree`). One read per file instead of one to hash and one to
        upload, and the bytes stored are the bytes hashed even if the file changes meanwhile.
        """
        tmp = self._tmpdir + os.sep if self._tmpdir else None
        index: dict[str, int] = {}  # local file -> its place in ours + theirs (one hash per file)
        for local in self._files.values():
            if not (tmp and local.startswith(tmp)):
                index.setdefault(local, len(index))
        n_ours = len(index)
        if tmp:
            for local in self._files.values():
                if local.startswith(tmp):
                    index.setdefault(local, len(index))
        paths = list(index)
        ours = hash_files(record, paths[:n_ours], whole=self._roots, workers=_WORKERS, staging=staging,
                          project=project)
        parts = [(ours, paths[:n_ours])]
        try:
            if n_ours < len(paths):
                parts.append((hash_files(None, paths[n_ours:], workers=_WORKERS, staging=staging, project=project),
                              paths[n_ours:]))
        except BaseException:
            if staging is not None:
                ours.discard(staging, project)
            raise
        self.hashed_files = sum(got.read() for got, _ in parts)
        entries = []
        for path, local in self._files.items():
            i = index[local]
            got = ours if i < n_ours else parts[1][0]
            j = i if i < n_ours else i - n_ours
            entries.append(Entry(path, got.digest(j), got.sizes[j], bool(got.flags[j] & EXEC)))
        del index
        entries.sort(key=_PATH)

        def leftover() -> None:
            if staging is not None:
                for got, _ in parts:
                    got.discard(staging, project)

        return entries + list(self._refs.values()), Sources(parts, staging, project), leftover

    def draft_entries(self, record: HashRecord | None = None) -> tuple[list[Entry], dict[str, str | Callable[[str], None]]]:
        """The entries of this draft, its files hashed now (through ``record``), and where each blob's
        bytes are: what a distributed writer's part holds (``artfs._groups_parts``)."""
        self._need_draft()
        entries, sources, _ = self._entries(record)
        return entries, dict(sources)

    def draft_files(self) -> dict[str, str]:
        """The local files added to this draft: entry path -> local path (read at log time)."""
        return dict(self._files)

    def log_to(self, store: "Store", project: str, aliases: list[str],
               progress: Callable[[int], None] | None = None, run: str | None = None) -> "Artifact":
        """Commit this draft to ``store`` as a version of ``project`` (or match identical content):
        the seam of ``Store.log_artifact``, ``Run.log_artifact`` and ``artfs put`` (which passes
        ``progress``). Returns the logged version as a new Artifact, with ``commit_result`` set."""
        self._need_draft()
        check_name(project, "project")
        aliases = [check_alias(a) for a in list(self.aliases) + aliases]

        staging = store.backend.staging(project) if store.backend.stages else None
        entries, sources, leftover = self._entries(store.cache.hash_record(), staging=staging, project=project)
        try:
            copied, copy_sources = self._copied(store, project)  # entries of other artifacts (add_reference)
            entries += copied
            if staging is not None:  # their bytes durable before a blob is named by one (the store syncs the names)
                staging.sync()
            sources.extra = copy_sources
            result = store.commit(project, self._name, type=self.type, entries=entries, sources=sources,
                                  description=self.description, metadata=self.metadata, aliases=aliases,
                                  progress=progress, run=run)
        finally:
            leftover()  # the copies not placed: blobs the store had, or a failed commit's
        if self._tmp_cleanup is not None:
            self._tmp_cleanup()  # removes the directory of new_file()'s files
            self._tmpdir = self._tmp_cleanup = None
        result.hashed_files = self.hashed_files
        if self._tags or self._ttl is not None:
            store.set_info(project, self._name, result.version, description=self.description,
                           metadata=self.metadata, tags=self._tags, ttl=self._ttl)
        logged = Artifact.of_version(store, project, self._name, result.version)
        logged.commit_result = result
        return logged

    # -- logged versions -----------------------------------------------------------------------
    @classmethod
    def of_version(cls, store: "Store", project: str, artifact: str, n: int) -> "Artifact":
        """The logged version ``project/artifact:vN`` of ``store`` (its manifest, info and aliases
        read now): what ``Store.artifact`` and the run and registry modules return."""
        m = store.manifest(project, artifact, n)
        info = store.info(project, artifact, n)
        self = cls(artifact, m.type, info.get("description"), info.get("metadata") or {})
        try:
            self._tags = check_tags(info.get("tags") or [])
        except InvalidName:
            raise CorruptData(f"{project}/{artifact}:v{n}: invalid tags in its info") from None
        ttl = info.get("ttl")
        self._ttl = float(ttl) if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > 0 else None
        self._store, self.project, self._version, self._manifest = store, project, n, m
        self.aliases = sorted(a for a, v in store.aliases(project, artifact).items() if v == n)
        self._saved_aliases = list(self.aliases)
        return self

    def logged_in(self) -> tuple["Store", Manifest]:
        """The store and manifest of a logged version; ``ArtfsError`` for a draft."""
        if self._store is None or self._manifest is None:
            raise ArtfsError(f"{self.name} is not logged yet; use store.log_artifact(artifact, project=...)")
        return self._store, self._manifest

    @property
    def manifest(self) -> Manifest:
        """The logged version's manifest (every entry); ``ArtfsError`` for a draft."""
        return self.logged_in()[1]

    @property
    def digest(self) -> str:
        """The version digest: equal digests mean identical content."""
        return self.manifest.digest

    @property
    def size(self) -> int:
        """Total bytes of the version's files."""
        return self.manifest.size

    @property
    def created_at(self) -> str:
        """When the version was logged (ISO 8601, UTC)."""
        return self.manifest.created

    @property
    def file_count(self) -> int:
        """Number of files in the version."""
        return len(self.manifest.entries)

    def files(self) -> list[ArtifactManifestEntry]:
        """Every file of the logged version, sorted by path; ``ArtfsError`` for a draft."""
        return [ArtifactManifestEntry(self, e) for e in self.manifest.entries]

    def get_path(self, name: str) -> ArtifactManifestEntry:
        """One file of the logged version (``get_entry`` is the same); ``ArtfsError`` if it has none of that
        path, ``InvalidPath`` for a bad one."""
        path = check_path(name)
        for e in self.manifest.entries:
            if e.path == path:
                return ArtifactManifestEntry(self, e)
        raise ArtfsError(f"{self.qualified_name} has no file {path!r}")

    get_entry = get_path

    def _default_root(self) -> str:
        return os.path.join("artifacts", self.name)

    def download(self, root: str | None = None, *, path_prefix: str | None = None,
                 progress: Callable[[int], None] | None = None,
                 allow_file: bool = False, file_roots: list[str] | tuple[str, ...] = ()) -> str:
        """Place the version's files (or those under ``path_prefix``) under ``root``; returns ``root``.

        ``root`` defaults to ``./artifacts/<name>:vN``. Files already there and identical are kept
        (read only if they changed since the local record of what was hashed last saw them);
        every file is verified against its digest on the way (``CorruptData`` otherwise). Files
        are placed by reflink where the file system has them, else copied; never hard-linked, so
        writing into a downloaded file changes no cached or stored blob. From a local store they
        are placed straight from its blobs (it is its own cache); from others through the cache.
        References are read from where they live, exactly as recorded (``ReferenceChanged``
        otherwise); ``file://`` references raise ``PermissionDenied`` unless ``allow_file`` or
        ``file_roots`` allow them. ``StoreUnavailable`` when the store cannot be reached.
        """
        return self._download(root, path_prefix=path_prefix, progress=progress, allow_file=allow_file,
                              file_roots=file_roots)

    def _download(self, root: str | None = None, *, path_prefix: str | None = None,
                  progress: Callable[[int], None] | None = None, exact: bool = False,
                  allow_file: bool = False, file_roots: list[str] | tuple[str, ...] = ()) -> str:
        """Place the version's files under ``root``; files already there and identical are kept.

        Every file is verified against its digest on the way. References are read from where
        they live, exactly as recorded (ReferenceChanged otherwise); those with a content digest
        go through the cache, the others straight to ``root``. ``file://`` references are refused
        (PermissionDenied) unless ``allow_file`` or ``file_roots`` allow them: a manifest must not
        make this machine copy its own files. Returns ``root``.
        """
        store, m = self.logged_in()
        root = os.path.abspath(root or self._default_root())
        entries = m.entries
        if path_prefix is not None:
            p = check_path(path_prefix)
            entries = [e for e in entries if e.path == p or (not exact and e.path.startswith(p + "/"))]
        place_entries(store, entries, root, project=self.source_coords()[0], name=self.qualified_name,
                      progress=progress, allow_file=allow_file, file_roots=file_roots)
        return root

    def checkout(self, root: str | None = None, *, allow_file: bool = False,
                 file_roots: list[str] | tuple[str, ...] = ()) -> str:
        """Make ``root`` hold exactly this version: download, then remove every other file."""
        root = self.download(root, allow_file=allow_file, file_roots=file_roots)
        wanted = {os.path.join(root, *e.path.split("/")) for e in self.manifest.entries}
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            for fn in filenames:
                p = os.path.join(dirpath, fn)
                if p not in wanted:
                    os.unlink(p)
            if dirpath != root and not os.listdir(dirpath):
                os.rmdir(dirpath)
        return root

    def verify(self, root: str | None = None) -> None:
        """Raise CorruptData unless ``root`` holds exactly this version's files, byte for byte."""
        root = os.path.abspath(root or self._default_root())
        problems = []
        wanted = set()
        for e in self.manifest.entries:
            p = os.path.join(root, *e.path.split("/"))
            wanted.add(p)
            if not os.path.isfile(p):
                problems.append(f"missing {e.path}")
            elif e.digest is None:  # a reference pinned by ETag/version id: only its size is known
                if is_pinned(e) and os.path.getsize(p) != e.size:
                    problems.append(f"changed {e.path}")
            elif os.path.getsize(p) != e.size:  # before hashing: the size says it at once
                problems.append(f"changed {e.path} (size {os.path.getsize(p)}, the manifest says {e.size})")
            elif digest_file(p)[0] != e.digest:
                problems.append(f"changed {e.path}")
        for dirpath, _, filenames in os.walk(root):
            for fn in filenames:
                p = os.path.join(dirpath, fn)
                if p not in wanted:
                    problems.append(f"extra {os.path.relpath(p, root)}")
        if problems:
            raise CorruptData(f"{root} does not match {self.qualified_name}: " + "; ".join(sorted(problems)[:20]))

    def save(self, project: str | None = None, settings: Any = None) -> None:
        """Write description, metadata, tags, TTL and alias changes of a logged version to the store.

        A draft is logged instead (as W&B does): by the current run, else by a run of job type
        ``auto`` in ``project`` (default: the default project) made for it.
        """
        from ._run import save_draft, save_link

        if self.is_draft:
            save_draft(self, project)
            return
        if self._source is not None:
            self.aliases = save_link(self, self._saved_aliases)
            self._saved_aliases = list(self.aliases)
            return
        store, m = self.logged_in()
        project, art, n = self.project or "", self._name, self._version or 0
        new = [check_alias(a) for a in dict.fromkeys(self.aliases)]
        store.set_info(project, art, n, description=self.description, metadata=self.metadata, tags=self._tags,
                       ttl=self._ttl)
        for a in new:
            # only aliases added since loading: re-writing an automatic ``latest`` would pin it here
            # and, racing a commit of v(N+1), keep pointing at vN after that commit
            if a not in self._saved_aliases:
                store.set_alias(project, art, a, n)
        for a in self._saved_aliases:
            if a not in new and a != "latest":
                store.remove_alias(project, art, a)
        self.aliases = sorted(a for a, v in store.aliases(project, art).items() if v == n)
        self._saved_aliases = list(self.aliases)

    def diff(self, other: "Artifact") -> "ArtifactDiff":
        """What changed from this logged version to ``other`` (another version of this artifact or
        of any other): added, removed, changed and moved files, from the two manifests alone (no
        file is read). ``ArtfsError`` if either is not logged."""
        from ._diff import diff_entries

        _, mine = self.logged_in()
        _, theirs = other.logged_in()
        return diff_entries(mine.entries, theirs.entries, old_name=self.qualified_name,
                            new_name=other.qualified_name)

    # -- lineage (artfs._run) --------------------------------------------------------------------
    def source_artifact(self) -> "Artifact":
        """The version a link names (the artifact itself if it is no link)."""
        if self._source is None:
            return self
        from ._run import source_of

        return source_of(self)

    def link(self, target_path: str, aliases: list[str] | None = None) -> "Artifact":
        """Link this version into a registry collection (``"wandb-registry-model/bike-models"``) with
        ``aliases`` there; a draft is logged first (``save()``). Returns the linked version."""
        from ._run import link_to

        return link_to(self, target_path, aliases)

    def unlink(self) -> None:
        """Remove a linked version from its collection (the source version stays)."""
        if self._source is None:
            raise ArtfsError(f"{self._name} is not a linked version; delete() deletes a version")
        from ._run import unlink_version

        unlink_version(self)

    def linked_artifacts(self) -> list[str]:
        """``registry/collection:vN`` of every collection that links this version."""
        from ._run import links_of

        return links_of(self)

    def logged_by(self) -> "Run | None":
        """The run that logged this version (None if it was logged outside any run)."""
        from ._run import logged_by

        return logged_by(self)

    def used_by(self) -> "list[Run]":
        """The runs that used this version."""
        from ._run import used_by

        return used_by(self)

    def delete(self, delete_aliases: bool = False) -> None:
        """Delete this version from the store, and the blobs no other version needs.

        A version that has aliases (other than ``latest``) is kept and ``ArtfsError`` raised unless
        ``delete_aliases=True``, which removes them with it. The number is never reused.
        """
        store, _ = self.logged_in()
        if self._source is not None:  # W&B: deleting a linked version removes the link only
            self.unlink()
            return
        store.delete_version(self.project or "", self._name, self._version or 0, delete_aliases=delete_aliases)


def _unlink_all(paths: "Iterable[str | None]") -> None:
    for p in paths:
        if p is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


_NAME = operator.attrgetter("name")
_PATH = operator.attrgetter("path")


def _walk_files(root: str) -> Iterator[tuple[str, str]]:
    """(full path, path relative to ``root`` with ``/``) of every file below ``root``, sorted by
    directory then name; as ``os.walk`` would give them (symlinks to files included, symlinked
    directories not entered, dangling links, FIFOs and sockets left out) but without a ``stat``
    per file: the directory listing's type says what a regular file is.
    """
    stack = [(root, "")]
    while stack:
        d, prefix = stack.pop()
        try:
            with os.scandir(d) as it:
                found = sorted(it, key=_NAME)
        except OSError:
            continue  # as os.walk: an unreadable directory is skipped
        subdirs = []
        for e in found:
            try:
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(e)
                    continue
                if not e.is_file():  # follows a symlink; a dangling one is not a file
                    continue
            except OSError:
                continue
            yield e.path, prefix + e.name  # names that are not UTF-8: refused by the caller's check_paths
        stack.extend((e.path, prefix + e.name + "/") for e in reversed(subdirs))
