"""Writes through ``artfs://``: ``PROJECT/ARTIFACT/draft/`` inside ``with fs.transaction:``.

fsspec's transaction model: files opened for writing inside a transaction are deferred, and
when the block ends they are all committed, or all discarded if it raised. Here each artifact
written to in a transaction has one :class:`StagedDraft`:

* it starts as the artifact's ``latest`` as the store has it when the transaction first touches
  the artifact (not as the filesystem pinned it for reading: a draft builds on the newest
  version; empty for a new artifact), as ``draft/`` does in the mount, so a path works both ways: files written replace
  or add entries, ``rm`` removes them, ``cp`` of a file of the same project adds an entry
  without copying bytes;
* written bytes go to staged files in a private directory under the staging root
  (``$ARTFS_STAGING_DIR/.fsspec/...``, which ``artfs status`` does not mistake for a mount
  draft); a file joins the draft when it is closed;
* at the end of the transaction every draft with changes becomes **one** new version
  (``Store.commit``: only blobs the store lacks are uploaded; a draft equal to its base makes
  none) tagged ``latest``, its run recorded as the logger; on an exception nothing is committed
  and the staged files are removed. The store's commit is atomic (its manifest is created last),
  so a failure half-way through a commit leaves no version either. A transaction over several
  artifacts commits them one after the other: one that fails stops the rest (those committed
  stay).
* with ``group=G`` in the storage options a draft starts as this filesystem's part of the
  distributed version G (empty at first) and the end of the transaction records it as that part
  (``upsert``: one writer id per filesystem instance, so each process is one part, replaced by
  its next transaction with everything it wrote so far); ``artfs finish PROJECT/ARTIFACT --group
  G`` makes the version.

A crash (SIGKILL) in the middle leaves nothing in the store, and its staged directory behind
until the next transaction on the same host removes it (its pid no longer runs).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from typing import TYPE_CHECKING, Any

from fsspec.transaction import Transaction

from .._digest import digest_file
from .._draft.drafts import default_staging_root
from .._errors import ArtfsError
from .._manifest import Entry
from .._names import Spec
from . import lineage
from .paths import Where
from .tree import VersionIndex

if TYPE_CHECKING:
    from .._store import Store


class StagedDraft:
    """The next version of one artifact, as written so far in a transaction."""

    def __init__(self, project: str, artifact: str, base: int | None, entries: list[Entry], *,
                 type: str = "unspecified", root: str | None = None) -> None:
        self.project, self.artifact, self.base = project, artifact, base
        self.type = type
        self.description: str | None = None
        self.metadata: dict[str, Any] | None = None
        self.aliases: list[str] = []
        self._base = {e.path: e for e in entries}
        self.staged: dict[str, str | Entry] = {}  # path -> staged local file, or an entry copied (cp)
        self.removed: set[str] = set()
        parent = os.path.join(root or default_staging_root(), ".fsspec")
        os.makedirs(parent, mode=0o700, exist_ok=True)
        _remove_leftovers(parent)
        self.dir = tempfile.mkdtemp(prefix=f"{socket.gethostname()}-{os.getpid()}-", dir=parent)
        self._lock = threading.Lock()
        self._view: VersionIndex | None = None

    @property
    def changed(self) -> bool:
        return bool(self.staged or self.removed)

    def new_temp(self) -> str:
        return os.path.join(self.dir, os.urandom(8).hex())

    def stage(self, rel: str, source: str | Entry) -> None:
        """``rel`` now holds the bytes of the staged file (or the entry) ``source``."""
        with self._lock:
            old = self.staged.get(rel)
            self.staged[rel] = source
            self.removed.discard(rel)
            self._view = None
        if isinstance(old, str) and old != source:
            _unlink(old)

    def unstage_temp(self, tmp: str) -> None:
        with self._lock:
            for rel, src in list(self.staged.items()):
                if src == tmp:
                    del self.staged[rel]
                    self._view = None
        _unlink(tmp)

    def remove(self, rel: str) -> bool:
        """Remove the file ``rel`` from the draft; False if the draft has no such file."""
        with self._lock:
            src = self.staged.pop(rel, None)
            had = src is not None or (rel in self._base and rel not in self.removed)
            if rel in self._base:
                self.removed.add(rel)
            self._view = None
        if isinstance(src, str):
            _unlink(src)
        return had

    def source(self, rel: str) -> str | Entry | None:
        """A staged local file, an entry (of the base or copied), or None if the draft lacks ``rel``."""
        with self._lock:
            if rel in self.staged:
                return self.staged[rel]
            if rel in self._base and rel not in self.removed:
                return self._base[rel]
        return None

    def view(self) -> VersionIndex:
        """The draft as a tree (rebuilt after changes, when asked: writes only mark it stale)."""
        with self._lock:
            if self._view is None:
                files: dict[str, Entry] = {p: e for p, e in self._base.items() if p not in self.removed}
                for p, src in self.staged.items():
                    files[p] = src if isinstance(src, Entry) else Entry(p, None, os.path.getsize(src))
                self._view = VersionIndex(self.project, self.artifact, None, [files[p] for p in sorted(files)],
                                          type=self.type)
            return self._view

    def entries(self, *, staged_only: bool = False) -> tuple[list[Entry], dict[str, Any]]:
        """The draft's entries (staged files hashed now) and the local file of each new blob."""
        with self._lock:
            staged = dict(self.staged)
            base = {} if staged_only else {p: e for p, e in self._base.items() if p not in self.removed}
        out = dict(base)
        sources: dict[str, Any] = {}
        for p, src in staged.items():
            if isinstance(src, Entry):
                out[p] = src._replace(path=p)
            else:
                digest, size = digest_file(src)
                out[p] = Entry(p, digest, size, bool(os.stat(src).st_mode & 0o100))
                sources[digest] = src
        return [out[p] for p in sorted(out)], sources

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _remove_leftovers(parent: str) -> None:
    """Remove the staged directories of processes of this host that died in a transaction (a
    SIGKILL, a crash): ``<host>-<pid>-<random>`` whose pid no longer runs. Nothing of them is in
    the store, so nothing is lost but their staged bytes."""
    host = socket.gethostname()
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        rest = name.rsplit("-", 2)
        if len(rest) != 3 or rest[0] != host or not rest[1].isdigit() or int(rest[1]) == os.getpid():
            continue
        try:
            os.kill(int(rest[1]), 0)
            continue  # alive (or not ours to signal): its transaction may be running
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        except OSError:
            continue


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class ArtfsTransaction(Transaction):  # type: ignore[misc]
    """fsspec's transaction, ending with one new version per artifact written (or none on error)."""

    def start(self) -> None:
        super().start()
        self.fs._drafts_start()

    def complete(self, commit: bool = True) -> None:
        fs = self.fs
        try:
            super().complete(commit)  # closes (or discards) the files still open
        except BaseException:
            fs._drafts_end(False)
            raise
        fs._drafts_end(commit)


def draft_base(fs: Any, project: str, artifact: str) -> tuple[int | None, list[Entry], str]:
    """What a new draft of ``project/artifact`` starts from: (base version, its entries, its type).

    The newest version as the store has it now, not as ``fs`` pinned it for reading (a draft
    builds on the newest version); with a group, this filesystem's part so far instead.
    """
    if fs.group is not None:
        return None, list(fs._parts.get((project, artifact), [])), "unspecified"
    if not fs.store.versions(project, artifact):
        return None, [], "unspecified"
    _, _, base = fs.store.resolve(Spec(project, artifact, None, "latest"))
    idx = fs._index(Where(project, artifact, f"v{base}"))
    return base, [idx.files[p] for p in idx.paths], idx.type


def finish_drafts(fs: Any, drafts: list[StagedDraft]) -> list[Any]:
    """Each draft with changes as its artifact's next version (or, with a group, as ``fs``'s part);
    what each made, in order. The first failure stops the rest (and is raised)."""
    results = []
    for d in drafts:
        if not d.changed:
            continue
        run = lineage.run_path(fs.store, d.project) if fs.lineage else None
        if fs.group is not None:
            res, entries = upsert_part(fs.store, d, fs.group, fs._writer, run=run)
            fs._parts[(d.project, d.artifact)] = entries
        else:
            res = commit_draft(fs.store, d, run=run)
            if fs.lineage:
                lineage.record(fs.store, "logged", d.project, d.artifact, res.version,
                               role="logger" if res.created else "matched")
            fs.invalidate_cache(f"{d.project}/{d.artifact}")  # the writer reads its own version next
        results.append(res)
    return results


def commit_draft(store: "Store", d: StagedDraft, *, run: str | None) -> Any:
    """One draft as the next version of its artifact (``CommitResult``)."""
    entries, sources = d.entries()
    return store.commit(d.project, d.artifact, type=d.type, entries=entries, sources=sources,
                        description=d.description, metadata=d.metadata, aliases=d.aliases, run=run,
                        base_version=d.base)


def upsert_part(store: "Store", d: StagedDraft, group: str, writer: str, *, run: str | None) -> Any:
    """A draft as ``writer``'s part of the distributed version ``group``: (``PartResult``, its entries)."""
    from .._distributed import upsert

    entries, sources = d.entries()
    if not entries:
        raise ArtfsError(f"{d.project}/{d.artifact}: nothing written for group {group}")
    res = upsert(store, d.project, d.artifact, group, entries=entries, sources=sources, writer=writer,
                 type=d.type, description=d.description, metadata=d.metadata, run=run, aliases=d.aliases)
    return res, entries
