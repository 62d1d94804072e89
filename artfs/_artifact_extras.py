"""W&B's Artifact features beyond files: objects, tags, TTL, ``wait``, entries of other artifacts.

:class:`ArtifactExtras` is a base class of :class:`artfs._artifact.Artifact`; everything it
keeps is on the instance (the draft's files, the logged version's store and manifest).

* ``add(obj, name)`` / ``get(name)``: Tables, Images and PartitionedTables as files of the
  version (:mod:`artfs.data_types` has the layout).
* ``tags`` (W&B's rule: words of letters, digits, ``_`` and ``-``, separated by spaces) and
  ``ttl`` (a ``timedelta``, or None) are kept in the version's ``info`` object beside its
  description and metadata, so they can be changed later with ``save()``. artfs deletes nothing
  by itself: the TTL is recorded and shown (``artfs show``), and ``expired`` says whether it has
  passed; a clean-up job deletes what it finds expired.
* ``add_reference(entry)`` with an entry of another logged artifact (W&B's
  ``artifact.add_reference(other.get_entry("x"))``) puts the same file in this draft: within one
  project no byte moves (the blob is already there); into another project the blob is copied
  once at log time, because each project keeps its own blobs (projects are the unit of access).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from typing import TYPE_CHECKING, Any

from . import data_types
from ._errors import ArtfsError, CorruptData, InvalidName, InvalidPath
from ._layout import blob_key
from ._manifest import Entry, Manifest
from ._names import check_path

if TYPE_CHECKING:
    from typing import IO, Callable, ContextManager

    from ._store import Store

#: W&B's ``TAG_REGEX`` (``wandb/sdk/artifacts/_validators.py``)
TAG_RE = re.compile(r"^[-\w]+( +[-\w]+)*$")


def check_tags(tags: Any) -> list[str]:
    """W&B's ``validate_tags``: a list of valid tags, duplicates dropped (the first kept)."""
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise InvalidName(f"tags are a list of strings, not {tags!r}")
    bad = [t for t in tags if not TAG_RE.match(t)]
    if bad:
        raise InvalidName(f"invalid tag(s) {bad}: tags are letters, digits, '-' and '_', words separated by spaces")
    return list(dict.fromkeys(tags))


def ttl_seconds(ttl: Any) -> float | None:
    """A TTL as seconds (a positive ``timedelta``), None for no TTL."""
    if ttl is None or (isinstance(ttl, str) and ttl.upper() == "INHERIT"):
        return None
    if getattr(ttl, "name", None) == "INHERIT":  # W&B's ArtifactTTL.INHERIT
        return None
    if not isinstance(ttl, _dt.timedelta):
        raise ArtfsError(f"ttl is a datetime.timedelta or None, not {ttl!r}")
    if ttl.total_seconds() <= 0:
        raise ArtfsError("ttl must be positive")
    return ttl.total_seconds()


def _copy_blob(store: "Store", src: "Store", src_project: str, digest: str, key: str) -> None:
    """Upload a blob of another project (fetched into the cache first) under ``key``."""
    store.backend.put_file(key, src.fetch_blob(src_project, digest))


class ArtifactExtras:
    """Objects, tags, TTL, ``wait`` and copied entries of an Artifact (see the module docstring)."""

    _name: str
    _version: int | None
    _store: "Store | None"
    project: str | None
    _files: dict[str, str]
    _refs: dict[str, Entry]
    _tags: list[str]
    _ttl: float | None
    _source: tuple[str, str, int] | None
    _saved_aliases: list[str]
    aliases: list[str]

    if TYPE_CHECKING:
        @property
        def is_draft(self) -> bool: ...

        @property
        def qualified_name(self) -> str: ...

        def _need_draft(self) -> None: ...

        def logged_in(self) -> tuple["Store", Manifest]: ...

        def new_file(self, name: str, mode: str = "x", encoding: str | None = None) -> ContextManager[IO[Any]]: ...

        def _download(self, root: str | None = None, *, path_prefix: str | None = None,
                      exact: bool = False) -> str: ...

    # -- tags and TTL ------------------------------------------------------------------------------
    @property
    def tags(self) -> list[str]:
        """W&B's artifact tags (stored with the version; change them, then ``save()``)."""
        return self._tags

    @tags.setter
    def tags(self, tags: list[str]) -> None:
        self._tags = check_tags(tags)

    @property
    def ttl(self) -> _dt.timedelta | None:
        """How long the version is meant to live after it was logged (None: for ever)."""
        return None if self._ttl is None else _dt.timedelta(seconds=self._ttl)

    @ttl.setter
    def ttl(self, ttl: _dt.timedelta | None) -> None:
        self._ttl = ttl_seconds(ttl)

    @property
    def expired(self) -> bool:
        """Whether the version's TTL has passed (artfs records a TTL; it deletes nothing by itself)."""
        if self._ttl is None or self.is_draft:
            return False
        created = _dt.datetime.fromisoformat(self.logged_in()[1].created.replace("Z", "+00:00"))
        return _dt.datetime.now(_dt.timezone.utc) > created + _dt.timedelta(seconds=self._ttl)

    def _copies_init(self) -> None:
        self._tags, self._ttl = [], None
        self._copies: dict[str, tuple[Entry, "Store", str]] = {}  # path -> entry, its store and project

    def wait(self, timeout: int | None = None) -> "ArtifactExtras":
        """W&B waits for an upload to finish; artfs logs synchronously, so a logged version is done."""
        if self.is_draft:
            raise ArtfsError(f"{self._name} is not logged yet: wait() follows log_artifact() or save()")
        return self

    # -- registry links (artfs._registry) ----------------------------------------------------------
    @property
    def is_link(self) -> bool:
        """True for a version read through a registry collection (``registry/collection:vN``)."""
        return self._source is not None

    def coords(self) -> tuple[str, str, int]:
        """(project, artifact, N) of this version as it is named (a link's: its collection and number)."""
        return self.project or "", self._name, self._version or 0

    def as_link(self, project: str, collection: str, n: int, aliases: list[str]) -> None:
        """Make this logged version the link ``project/collection:vN`` with the collection's
        ``aliases`` (the registry builds links this way: :func:`artfs._registry.linked_artifact`)."""
        self._source = self.source_coords()
        self.project, self._name, self._version = project, collection, n
        self.aliases = sorted(aliases)
        self._saved_aliases = list(self.aliases)

    def source_coords(self) -> tuple[str, str, int]:
        """(project, artifact, N) of the version whose files these are (a link's source)."""
        if self._source is not None:
            return self._source
        return self.project or "", self._name, self._version or 0

    @property
    def source_project(self) -> str | None:
        """The project of the version a link names (the artifact's own project if it is no link)."""
        return self.source_coords()[0] if not self.is_draft else None

    @property
    def source_name(self) -> str | None:
        """``artifact:vN`` of the version a link names (the artifact's own name if it is no link)."""
        return None if self.is_draft else f"{self.source_coords()[1]}:v{self.source_coords()[2]}"

    @property
    def source_qualified_name(self) -> str | None:
        """``project/artifact:vN`` of the version a link names."""
        return None if self.is_draft else f"{self.source_project}/{self.source_name}"

    @property
    def source_version(self) -> str | None:
        """``vN`` of the version a link names."""
        return None if self.is_draft else f"v{self.source_coords()[2]}"

    # -- objects -----------------------------------------------------------------------------------
    def add(self, obj: Any, name: str, overwrite: bool = False) -> str:
        """Add a ``Table``, ``Image`` or ``PartitionedTable`` (:mod:`artfs.data_types`) as
        ``name.<type>.json`` (W&B's ``artifact.add(table, "predictions")``); an Image's file (also
        one in a Table's cell) goes to ``media/images/<hash>.<ext>``. Returns the entry path;
        ``get(name)`` of the logged version reads the object back."""
        self._need_draft()
        path = data_types.file_name(obj, name)
        if overwrite and path in self._files:
            del self._files[path]

        def media(img: data_types.Image) -> dict[str, Any]:
            data, ext = img._png_bytes()
            mpath = f"media/images/{data_types.short_hash(data)}.{ext}"
            if mpath not in self._files:
                with self.new_file(mpath, "wb") as f:
                    f.write(data)
            return img.to_json(mpath)

        text = data_types.dumps(obj, media)
        with self.new_file(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def get(self, name: str) -> Any:
        """The Table, Image or PartitionedTable added as ``name`` (W&B's ``artifact.get``), read
        from the logged version; None when the version has no such object."""
        _, m = self.logged_in()
        paths = {e.path for e in m.entries}
        found = next((c for c in ([name] if name.endswith(".json") else [name + s for s in data_types.SUFFIXES])
                      if c in paths), None)
        if found is None:
            return None

        def local(p: str) -> str:
            p = check_path(p)
            if p not in paths:
                raise CorruptData(f"{self.qualified_name}: {found!r} names {p!r}, which is not in the version")
            return os.path.join(self._download(None, path_prefix=p, exact=True), *p.split("/"))

        def media(doc: dict[str, Any]) -> data_types.Image:
            return data_types.Image(local(str(doc.get("path"))), caption=doc.get("caption"))

        with open(local(found), "rb") as f:
            return data_types.load(f.read(), media)

    # -- entries of other artifacts ------------------------------------------------------------------
    def _add_entry_of(self, entry: Any, name: str | None) -> list[Entry]:
        """``add_reference(other.get_entry(p))``: the same file under ``name`` (default: its path)."""
        self._need_draft()
        src = entry._artifact
        src_store, _ = src.logged_in()
        e: Entry = entry.entry
        path = check_path(name if name is not None else e.path)
        if path in self._files or path in self._refs or path in self._copies:
            raise InvalidPath(f"{path!r} is already in the artifact")
        new = e._replace(path=path)
        if e.ref is not None:  # a reference stays a reference to the same place
            self._refs[path] = new
        else:
            self._copies[path] = (new, src_store, src.project or "")
        return [new]

    def _copied(self, store: "Store", project: str) -> "tuple[list[Entry], dict[str, Callable[[str], None] | str]]":
        """The copied entries and, per digest, how to put its blob into ``project`` of ``store``."""
        entries: list[Entry] = []
        sources: "dict[str, Callable[[str], None] | str]" = {}
        for e, src, sp in self._copies.values():
            entries.append(e)
            assert e.digest is not None
            if src.url == store.url and sp == project:
                continue  # the blob is there already
            local = store.backend.local_path(blob_key(sp, e.digest)) if src.url == store.url else None
            if local is not None:
                sources[e.digest] = local
            else:
                sources[e.digest] = _partial_copy(store, src, sp, e.digest)
        return entries, sources

    def _remove_copy(self, path: str) -> bool:
        gone = [p for p in self._copies if p == path or p.startswith(path + "/")]
        for p in gone:
            del self._copies[p]
        return bool(gone)


def _partial_copy(store: "Store", src: "Store", sp: str, digest: str) -> "Callable[[str], None]":
    return lambda key: _copy_blob(store, src, sp, digest, key)
