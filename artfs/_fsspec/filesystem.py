"""``ArtfsFileSystem``: artfs versions as an fsspec filesystem (protocol ``artfs``).

What an instance owns: the :class:`~artfs.Store` it reads (from ``store=``, else ``$ARTFS_STORE``,
else the default store), the shared cache, one :class:`~artfs._lazy.LazyBlobs` reader (started on
the first read), the indexes of the versions it has read, and its **pins**: an alias (``latest``,
``best``) resolves once per instance and keeps naming that version, so a job never sees half of
v3 and half of v4 while someone logs v4. ``invalidate_cache()`` forgets the pins (and
``invalidate_cache("p/a")`` those of one artifact); a transaction that logs a version of an
artifact drops that artifact's pins, so the writer sees its own version next. fsspec keeps one
instance per set of storage options (per thread), and a pickled instance (a Dask task, a
DataLoader worker) carries its pins to the process that unpickles it.

Errors in fsspec's terms: anything missing is ``FileNotFoundError`` with artfs's "did you mean";
a store refusal, a write to a version or alias, or a write outside a transaction is
``PermissionError`` (:class:`artfs.PermissionDenied`); malformed names and ``..`` are refused
before any request (:class:`artfs.InvalidName`/:class:`artfs.InvalidPath`, ``ValueError``s).
"""

from __future__ import annotations

import difflib
import os
import secrets
import socket
import threading
import weakref
from collections import OrderedDict
from typing import Any, Iterator

from fsspec.spec import AbstractFileSystem, make_instance

from .._errors import NotFound, PermissionDenied
from .._names import Spec, valid_name
from . import lineage
from .drafts import ArtfsTransaction, StagedDraft, draft_base, finish_drafts
from .files import DraftFile, complete_fd, open_entry, pread_range
from .paths import DRAFT, PROTOCOL, Where, fs_errors, parse, refuse_write, strip
from .tree import VersionIndex

_INDEXES = 8  # version indexes kept per instance (a version's manifest stays in the cache anyway)
#: every live instance, by id (an instance hashes by its fsspec token, which is set after __init__)
_instances: "weakref.WeakValueDictionary[int, ArtfsFileSystem]" = weakref.WeakValueDictionary()


def _reset_after_fork() -> None:
    for fs in list(_instances.values()):
        fs._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


class ArtfsFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Versions of an artfs store as files: ``artfs://PROJECT/ARTIFACT/vN/PATH`` (or ``.../ALIAS/...``,
    ``PROJECT/ARTIFACT:ALIAS/...``).

    Storage options: ``store`` (a directory, ``s3://bucket/prefix`` or ``https://...``; default
    ``$ARTFS_STORE`` or the default store), ``cache_dir``, ``no_sign_request``, ``group`` (writes
    become parts of that distributed version), ``allow_file``/``file_roots`` (reading ``file://``
    references), ``timeout`` (seconds a read waits for the store), ``cache_size`` (the cache's bound,
    default 10% of its disk), ``staging_dir``, ``lineage`` (False: record no runs, as the mount's
    ``--no-lineage``).
    """

    protocol = PROTOCOL
    root_marker = ""
    transaction_type = ArtfsTransaction

    def __init__(self, store: str | None = None, *, cache_dir: str | None = None, no_sign_request: bool = False,
                 group: str | None = None, allow_file: bool = False, file_roots: list[str] | tuple[str, ...] = (),
                 timeout: float = 30.0, staging_dir: str | None = None, pins: dict[str, int] | None = None,
                 cache_size: int | str | None = None, lineage: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from .._cache import Cache
        from .._store import Store

        url = store or os.environ.get("ARTFS_STORE") or None
        if no_sign_request:
            from ..backends import default_store_url

            url = url or default_store_url()
            if not url.startswith("s3://"):
                raise ValueError(f"no_sign_request is for s3:// stores, not {url!r}")

        def open_store() -> Store:
            backend = None
            if no_sign_request:
                from ..backends.s3 import S3Backend

                backend = S3Backend(url or "", unsigned=True)
            return Store(url, cache=Cache(cache_dir, max_size=cache_size), backend=backend)

        self._open_store = open_store
        self.store = open_store()
        if group is not None:
            from .._names import check_name

            check_name(group, "group")
        self.group = group
        self.allow_file, self.file_roots, self.timeout = allow_file, tuple(file_roots), float(timeout)
        self.staging_dir = staging_dir
        self.lineage = lineage  # False: record no runs (the mount's --no-lineage)
        self._lock = threading.Lock()
        self._pins: dict[tuple[str, str, str], int] = {}
        for spec, n in (pins or {}).items():
            p, _, rest = spec.partition("/")
            a, _, alias = rest.partition(":")
            self._pins[(p, a, alias)] = int(n)
        self._indexes: OrderedDict[tuple[str, str, int], VersionIndex] = OrderedDict()
        self._blobs: Any = None
        self._refs: Any = None
        self._drafts: dict[tuple[str, str], StagedDraft] = {}
        self._parts: dict[tuple[str, str], list[Any]] = {}  # group mode: this instance's part so far
        self._fetched = 0  # bytes fetched into the cache since its last cleanup (an upper bound)
        self._writer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"[-100:].lstrip(".-")
        #: what the last transaction made: CommitResult (or PartResult with ``group``) per artifact
        self.committed: list[Any] = []
        _instances[id(self)] = self

    def _after_fork(self) -> None:
        """In a forked child (a DataLoader worker): the parent's reader threads, locks and store
        clients are not the child's. Start afresh; pins and version indexes (plain data) stay."""
        self._lock = threading.Lock()
        self._blobs = self._refs = None
        self.store = self._open_store()
        self._drafts = {}

    # -- fsspec plumbing ------------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return strip(str(path))

    def unstrip_protocol(self, name: str) -> str:
        return name if name.startswith(f"{PROTOCOL}://") else f"{PROTOCOL}://{name}"

    def __reduce__(self) -> Any:
        """Pickled with its pins: a worker that unpickles it reads the versions this instance resolved."""
        opts = dict(self.storage_options)
        with self._lock:
            pins = {f"{p}/{a}:{alias}": n for (p, a, alias), n in self._pins.items()}
        if pins:
            opts["pins"] = {**opts.get("pins", {}), **pins}
        return make_instance, (type(self), self.storage_args, opts)

    @property
    def fsid(self) -> str:
        return f"artfs_{self.store.id}"

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget pinned aliases (all, or those of the project or artifact ``path`` names): the next
        use resolves them again. Paths of files (fsspec calls this after every write) change nothing."""
        super().invalidate_cache(path)
        w = parse(strip(path or ""))
        if w.level == "draft" or (w.level == "version" and w.path):
            return
        with self._lock:
            for key in list(self._pins):
                if (w.project is None or key[0] == w.project) and (w.artifact is None or key[1] == w.artifact) \
                        and (w.level != "version" or key[2] == w.ref):
                    del self._pins[key]

    @property
    def blobs(self) -> Any:
        """The lazy reader of blobs (artfs._lazy.LazyBlobs), started on first use."""
        with self._lock:
            if self._blobs is None:
                from .._lazy import LazyBlobs

                self._blobs = LazyBlobs(self.store, timeout=self.timeout)
            return self._blobs

    @property
    def refs(self) -> Any:
        with self._lock:
            if self._refs is None:
                from .._refs import RefReader

                self._refs = RefReader(allow_file=self.allow_file, file_roots=self.file_roots, timeout=self.timeout)
            return self._refs

    # -- resolving ------------------------------------------------------------------------------------
    def _where(self, path: str) -> Where:
        return parse(strip(path))

    def resolve(self, path: str) -> str:
        """The version a path reads (``p/a:v3``), pinning its alias; ``FileNotFoundError`` if none."""
        w = self._where(path)
        if w.level != "version":
            raise ValueError(f"artfs://{w.name} names no version")
        with fs_errors(w.name):
            return self._index(w).ref

    def _resolve(self, w: Where) -> int:
        assert w.project is not None and w.artifact is not None and w.ref is not None
        n = w.version
        if n is not None:
            return n
        key = (w.project, w.artifact, w.ref)
        with self._lock:
            n = self._pins.get(key)
        if n is None:
            _, _, n = self.store.resolve(Spec(w.project, w.artifact, None, w.ref))
            with self._lock:
                n = self._pins.setdefault(key, n)
        return n

    def _index(self, w: Where) -> VersionIndex:
        assert w.project is not None and w.artifact is not None
        n = self._resolve(w)
        key = (w.project, w.artifact, n)
        with self._lock:
            idx = self._indexes.get(key)
            if idx is not None:
                self._indexes.move_to_end(key)
                return idx
        try:
            m = self.store.manifest(*key)
        except NotFound:
            versions = self.store.versions(w.project, w.artifact)
            if versions:
                have = ", ".join(f"v{v}" for v in versions[-5:])
                raise NotFound(f"{w.project}/{w.artifact}:v{n}: no such version; it has "
                               f"{'..., ' if len(versions) > 5 else ''}{have}") from None
            self.store.resolve(Spec(w.project, w.artifact, n, None))  # the message with a "did you mean"
            raise
        idx = VersionIndex.of(m)
        with self._lock:
            self._indexes[key] = idx
            while len(self._indexes) > _INDEXES:
                self._indexes.popitem(last=False)
        return idx

    def _tree(self, w: Where) -> VersionIndex:
        """The tree a version or draft path lives in."""
        if w.level == "draft":
            return self._draft(w).view()
        return self._index(w)

    def _missing(self, w: Where, idx: VersionIndex) -> NotFound:
        names = idx.close_names(w.path)
        base = w.path.rpartition("/")[2]
        close = difflib.get_close_matches(base, names, n=1)
        hint = f"; did you mean {w.child(w.path.rpartition('/')[0] + '/' + close[0] if '/' in w.path else close[0])}?" \
            if close else ""
        return NotFound(f"{idx.ref} has no file or directory {w.path!r}{hint}")

    def _projects(self) -> list[str]:
        return [p for p in self.store.backend.list_dirs("") if valid_name(p)]

    def _need_project(self, w: Where) -> list[str]:
        assert w.project is not None
        arts = self.store.artifacts(w.project)
        if not arts:
            close = difflib.get_close_matches(w.project, self._projects(), n=1)
            raise NotFound(f"no project {w.project} in {self.store.url}" + (f"; did you mean {close[0]}?" if close else ""))
        return arts

    def _need_artifact(self, w: Where) -> list[int]:
        assert w.project is not None and w.artifact is not None
        versions = self.store.versions(w.project, w.artifact)
        if not versions:
            self.store.resolve(Spec(w.project, w.artifact, None, "latest"))  # raises with a "did you mean"
        return versions

    # -- listing --------------------------------------------------------------------------------------
    def _dir(self, name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "size": 0, "type": "directory", **extra}

    def _artifact_listing(self, w: Where) -> list[dict[str, Any]]:
        assert w.project is not None and w.artifact is not None
        versions = self._need_artifact(w)
        aliases = self.store.aliases(w.project, w.artifact, versions=versions)
        base = w.head
        out = [self._dir(f"{base}/v{n}", version=f"{w.project}/{w.artifact}:v{n}") for n in versions]
        with self._lock:
            for alias, n in sorted(aliases.items()):
                n = self._pins.setdefault((w.project, w.artifact, alias), n)
                out.append(self._dir(f"{base}/{alias}", islink=True, destination=f"{base}/v{n}",
                                     version=f"{w.project}/{w.artifact}:v{n}"))
            if (w.project, w.artifact) in self._drafts:
                out.append(self._dir(f"{base}/{DRAFT}"))
        return out

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """The entries of a directory (or ``[info]`` of a file), names without the protocol."""
        w = self._where(path)
        with fs_errors(w.name):
            out = self._ls(w)
        return out if detail else [o["name"] for o in out]

    def _ls(self, w: Where) -> list[dict[str, Any]]:
        level = w.level
        if level == "store":
            return [self._dir(p) for p in self.store.projects()]
        if level == "project":
            return [self._dir(f"{w.project}/{a}") for a in self._need_project(w)]
        if level == "artifact":
            return self._artifact_listing(w)
        idx = self._tree(w)
        kind = idx.kind(w.path)
        if kind is None:
            raise self._missing(w, idx)
        if kind == "file":
            return [idx.file_info(w.name, w.path)]
        return [idx.file_info(w.child(c), c) if c in idx.files else idx.dir_info(w.child(c))
                for c in idx.children(w.path)]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """What a path is: ``type``, ``size``, and for files ``digest`` (``xxh128:...``), ``version`` (``p/a:vN``)."""
        w = self._where(path)
        with fs_errors(w.name):
            return self._info(w)

    def _info(self, w: Where) -> dict[str, Any]:
        level = w.level
        if level == "store":
            return self._dir("")
        if level == "project":
            self._need_project(w)
            return self._dir(w.name)
        if level == "artifact":
            self._need_artifact(w)
            return self._dir(w.name)
        idx = self._tree(w)
        kind = idx.kind(w.path)
        if kind is None:
            raise self._missing(w, idx)
        if kind == "file":
            return idx.file_info(w.name, w.path)
        out = idx.dir_info(w.name)
        if not w.path and idx.version is not None:
            out["digest"] = idx.digest
            if w.version is None:
                out.update(islink=True, destination=f"{w.project}/{w.artifact}/v{idx.version}")
        return out

    def walk(self, path: str, maxdepth: int | None = None, topdown: bool = True, on_error: str = "omit",
             **kwargs: Any) -> Iterator[Any]:
        """As fsspec's, except that aliases are listed but not descended into (each version once)."""
        for root, dirs, files in super().walk(path, maxdepth=maxdepth, topdown=topdown, on_error=on_error,
                                              **kwargs):
            yield root, dirs, files
            if topdown and root.count("/") == 1 and ":" not in root:
                for name in [n for n in dirs if not (n.startswith("v") and n[1:].isdigit()) and n != DRAFT]:
                    if isinstance(dirs, dict):
                        del dirs[name]
                    else:
                        dirs.remove(name)

    def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False,
             **kwargs: Any) -> Any:
        """Every file below ``path``; inside a version, from its index in one pass (no listing per directory)."""
        w = self._where(path)
        if w.level not in ("version", "draft"):
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        if maxdepth is not None and maxdepth < 1:
            raise ValueError("maxdepth must be at least 1")
        with fs_errors(w.name):
            idx = self._tree(w)
        rel = w.path
        kind = idx.kind(rel)
        out: dict[str, dict[str, Any]] = {}
        if kind == "file":
            out[w.name] = idx.file_info(w.name, rel)
        elif kind == "directory":
            depth0 = rel.count("/") + 1 if rel else 0
            if withdirs:
                out[w.name] = idx.dir_info(w.name)
            for f in idx.below(rel):
                if maxdepth is None or f.count("/") + 1 - depth0 <= maxdepth:
                    out[w.child(f)] = idx.file_info(w.child(f), f)
            if withdirs:
                for d in idx.dirs_below(rel):
                    if maxdepth is None or d.count("/") + 1 - depth0 <= maxdepth:
                        out[w.child(d)] = idx.dir_info(w.child(d))
        names = sorted(out)
        return {n: out[n] for n in names} if detail else names

    def ukey(self, path: str) -> str:
        """The content digest of a file (``xxh128:...``); for a directory, its version's digest and path."""
        info = self.info(path)
        if info["type"] == "file" and info.get("digest"):
            return str(info["digest"])
        return f"{info.get('version')}:{info['name']}"

    def checksum(self, path: str) -> int:
        """The file's content digest as an integer: equal means equal bytes."""
        key = self.ukey(path)
        if key.startswith("xxh128:"):
            return int(key[7:], 16)
        return super().checksum(path)  # type: ignore[no-any-return]

    def created(self, path: str) -> Any:
        """When the version holding ``path`` was logged (a UTC datetime)."""
        import datetime as _dt

        return _dt.datetime.fromtimestamp(self.info(path).get("created") or 0.0, _dt.timezone.utc)

    modified = created

    # -- reading --------------------------------------------------------------------------------------
    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        w = self._where(path)
        if mode != "rb":
            return self._open_write(w, mode, block_size, autocommit)
        with fs_errors(w.name):
            if w.level not in ("version", "draft"):
                self._info(w)
                raise IsADirectoryError(f"artfs://{w.name} is a directory")
            idx = self._tree(w)
            kind = idx.kind(w.path)
            if kind is None:
                raise self._missing(w, idx)
            if kind == "directory":
                raise IsADirectoryError(f"artfs://{w.name} is a directory")
            details = idx.file_info(w.name, w.path)
            assert w.project is not None and w.artifact is not None
            if w.level == "draft":
                src = self._draft(w).source(w.path)
                if isinstance(src, str):
                    return open(src, "rb")
                assert src is not None
                entry = src
            else:
                entry = idx.files[w.path]
            f, warm = open_entry(self, w.name, w.project, entry, details, block_size=block_size,
                                 cache_type=kwargs.get("cache_type", "none"), cache_options=cache_options)
            if not warm:
                self._fetching(entry.size)
        if w.level == "version":
            self._used(w, idx)
        return f

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        """As fsspec's; a file of a version whose blob is complete in the cache is read with
        ``pread`` of the verified cache file (as :func:`complete_fd` checks it for ``open``),
        without a file object: a warm epoch of small files pays a handful of system calls per file."""
        w = self._where(path)
        if w.level == "version" and w.path and not kwargs:
            with fs_errors(w.name):
                idx = self._index(w)
            entry = idx.files.get(w.path)
            if entry is not None and entry.ref is None and entry.digest is not None and entry.size:
                fd = complete_fd(self.store, entry.digest, entry.size)
                if fd is not None:
                    try:
                        data = pread_range(fd, entry.size, start, end)
                    finally:
                        os.close(fd)
                    self._used(w, idx)
                    return data
        return super().cat_file(path, start=start, end=end, **kwargs)  # type: ignore[no-any-return]

    def _used(self, w: Where, idx: VersionIndex) -> None:
        """File this process's ``used`` edge of the version read, before the read returns: a worker
        that is killed (``Pool.terminate``, what ``with Pool()`` does) loses no edge. Once per
        process, run and version (:mod:`.lineage`), so a warm epoch pays it once per worker."""
        if idx.version is not None and self.lineage:
            assert w.project is not None and w.artifact is not None
            lineage.record(self.store, "used", w.project, w.artifact, idx.version)

    def _fetching(self, size: int) -> None:
        """Keep the cache within its bound (``cache_size``, default: 10% of its disk), as the mount
        does: after a tenth of the bound was fetched, evict least recently used blobs, sparing
        those open here (and, through their locks, those open in any process)."""
        cache = self.store.cache
        with self._lock:
            self._fetched += size
            if self._fetched < cache.max_size // 10:
                return
            self._fetched = 0
        blobs = self._blobs
        cache.cleanup(keep=blobs.keep_path if blobs is not None else None)

    # -- writing --------------------------------------------------------------------------------------
    def _refuse_write(self, w: Where) -> None:
        refuse_write(w, self._intrans)

    def _open_write(self, w: Where, mode: str, block_size: int | None, autocommit: bool) -> Any:
        if mode not in ("wb", "xb"):
            raise NotImplementedError(f"artfs://{w.name}: mode {mode!r} (files are written whole: 'wb' or 'xb')")
        self._refuse_write(w)
        d = self._draft(w)
        kind = d.view().kind(w.path)
        if kind == "directory":
            raise IsADirectoryError(f"artfs://{w.name} is a directory")
        if mode == "xb" and kind == "file":
            raise FileExistsError(f"artfs://{w.name} exists")
        return DraftFile(self, w.name, mode, d, w.path, block_size=block_size, autocommit=False)

    def _draft(self, w: Where) -> StagedDraft:
        """This transaction's draft of ``w``'s artifact, started on first touch."""
        assert w.project is not None and w.artifact is not None
        key = (w.project, w.artifact)
        with self._lock:
            d = self._drafts.get(key)
        if d is not None:
            return d
        if not self._intrans:
            raise NotFound(f"{w.project}/{w.artifact} has a {DRAFT}/ only inside a transaction "
                           "(`with fs.transaction:`)")
        base, entries, type_ = draft_base(self, w.project, w.artifact)
        d = StagedDraft(w.project, w.artifact, base, entries, type=type_, root=self.staging_dir)
        with self._lock:
            d = self._drafts.setdefault(key, d)
        return d

    def describe_draft(self, path: str, *, type: str | None = None, description: str | None = None,
                       metadata: dict[str, Any] | None = None, aliases: list[str] | None = None) -> None:
        """Type, description, metadata and aliases of the version this transaction's draft becomes."""
        from .._names import check_alias, check_name

        w = self._where(path)
        if w.level not in ("artifact", "draft"):
            raise ValueError(f"artfs://{w.name}: name an artifact (PROJECT/ARTIFACT)")
        if not self._intrans:
            raise PermissionDenied(f"artfs://{w.name}: describe_draft needs a transaction (`with fs.transaction:`)")
        d = self._draft(Where(w.project, w.artifact, DRAFT))
        if type is not None:
            d.type = check_name(type, "type")
        if description is not None:
            d.description = description
        if metadata is not None:
            d.metadata = dict(metadata)
        if aliases is not None:
            d.aliases = [check_alias(a) for a in aliases]

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Directories exist through their files: nothing to do in a draft (or for a new project/artifact)."""
        w = self._where(path)
        if w.level == "version":
            self._refuse_write(w)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.mkdir(path)

    def rmdir(self, path: str) -> None:
        w = self._where(path)
        if w.level != "draft":
            self._refuse_write(w)

    def rm_file(self, path: str) -> None:
        w = self._where(path)
        self._refuse_write(w)
        with fs_errors(w.name):
            if not self._draft(w).remove(w.path):
                raise NotFound(f"{w.project}/{w.artifact}:{DRAFT} has no file {w.path!r}")

    _rm = rm_file

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        paths = [path] if isinstance(path, str) else list(path)
        for p in paths:
            w = self._where(p)
            if w.level != "draft":
                self._refuse_write(w)
        for p in self.expand_path(paths, recursive=recursive, maxdepth=maxdepth):
            if self.isfile(p):
                self.rm_file(p)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy a file into a draft; one of the same project is added by its digest (no bytes copied)."""
        src, dst = self._where(path1), self._where(path2)
        self._refuse_write(dst)
        with fs_errors(src.name):
            if src.level in ("version", "draft") and src.project == dst.project:
                idx = self._tree(src)
                if src.path in idx.files:
                    source = self._draft(src).source(src.path) if src.level == "draft" else idx.files[src.path]
                    if source is not None and not isinstance(source, str):
                        self._draft(dst).stage(dst.path, source)
                        return
        with self.open(path1, "rb") as fi, self.open(path2, "wb") as fo:
            while True:
                block = fi.read(1 << 22)
                if not block:
                    break
                fo.write(block)

    # -- transactions ---------------------------------------------------------------------------------
    def _drafts_start(self) -> None:
        with self._lock:
            old, self._drafts = list(self._drafts.values()), {}
        for d in old:
            d.discard()

    def _drafts_end(self, commit: bool) -> None:
        """The end of a transaction: each draft with changes becomes a version (or a part), or all go."""
        with self._lock:
            drafts, self._drafts = list(self._drafts.values()), {}
        try:
            self.committed = finish_drafts(self, drafts) if commit else []
        finally:
            for d in drafts:
                d.discard()
