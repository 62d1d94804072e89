"""The exactly-once commit of a draft: its steps, what a crash at each leaves, and how the next
commit finishes it.

Each step is a method of :class:`Commit` (the part a :class:`artfs._draft.Draft` holds as
``commits``; :meth:`Draft.commit` calls it; the sweep is its :class:`DraftDB`'s), so that what a step does, and where a crash can fall
between two of them, can be read (and tested: ``tests/crashpoints.py`` stops a process at these
boundaries) one by one::

    0 commit            read the namespace under the lock; refuse symlinks that cannot be
                        committed (before any hashing)
    1 _hash_deferred    hash staged files whose cached digest is invalid; store the digests
                                                                            (one transaction)
      _settle_pending   a pending id recorded for other content: adopt the version that attempt
                        created, if any, as the base; drop the id          (one transaction)
    2 _record_commit_id record commit_id (uuid) + commit_vdigest           (one transaction)
    3 _store_commit     Store.commit(..., commit_id, base_version): intent, upload, manifest
                        carrying commit_id
    4 _reset_to_version base := the new version, staged files become base nodes, commit_id :=
                        NULL, description/metadata/aliases cleared          (one transaction)
    5 DraftDB.sweep     delete the staged files no node references any more

What a crash (SIGKILL) at each point leaves, and how it is recovered
    before 2        a dirty draft, maybe with digests cached: commit again.
    after 2         *pending* (``meta.commit_id`` set), no version: the next commit passes the same
                    id; Store.commit finds no version carrying it and creates one.
    during/after 3  *pending*, and the version may exist: the next commit passes the same id, and
                    if step 3 got as far as the manifest, Store.commit finds the version newer
                    than the base that carries the id and returns it (``created=False``) instead of
                    creating a second one; the draft then resets to it (step 4). If the content was
                    changed after the crash (``commit_vdigest`` differs), :meth:`Commit._settle_pending`
                    first adopts the version that attempt created (if any) as the base, then the
                    new content is committed under a fresh id: two versions, both real.
    after 4         staged files no node references: swept at the next open (or commit).
One version per content, never two. A commit that fails (store down) raises an error saying how
to retry and changes nothing but cached digests and the pending id.

Equality: a draft whose files equal its base commits nothing and ``commit`` returns None; its
staged copies are dropped. A new artifact's draft without files commits nothing either.

Concurrency: the write gate is held for the whole commit (writes and truncates wait: the bytes
hashed are the bytes uploaded); the lock only to read the namespace (step 0) and to record
results, so lookups, reads, even creating or renaming files are answered meanwhile. What changes
meanwhile goes to the next version: the commit counts changes (``_gen``), and if any happened the
draft stays dirty after it; a staged file becomes a base node only if the new version holds its
bytes. A staged file unlinked during a commit is deleted after it (``DraftDB.committing``: the
upload reads it).
"""

from __future__ import annotations

import os
import stat
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .._digest import digest_file
from .._distributed import upsert
from .._errors import ArtfsError, InvalidPath, StoreUnavailable
from .._manifest import Entry, Manifest, check_entries, version_digest
from .._names import check_alias
from .schema import ROOT, DraftDB, _Base, _Node
from .snapshot import Snapshot

if TYPE_CHECKING:
    from .._distributed import PartResult
    from .._results import CommitResult
    from .._store import Store


class Commit:
    """The commit protocol (module docstring), a draft's part as a group's part, and the rebase
    of a clean draft: ``draft.commits``."""

    def __init__(self, db: DraftDB, snapshot: Snapshot) -> None:
        self.db = db
        self.snapshot = snapshot

    # -- commit --------------------------------------------------------------------------------
    def commit(self, store: "Store", *, description: str | None = None, metadata: dict[str, Any] | None = None,
               type: str | None = None, aliases: Iterable[str] = (), run: str | None = None,
               progress: Callable[[int], None] | None = None) -> "CommitResult | None":
        """Commit the draft as the next version; None if it equals its base (nothing is created).

        Exactly once across crashes (see the module docstring). Arguments override what was set
        with :meth:`Draft.set_description` etc. On failure the draft is kept and the error says
        how to retry. :meth:`Draft.commit` sends a draft of a group to :meth:`part` instead.
        """
        if self.db.readonly:
            raise ArtfsError("cannot commit a draft opened read-only")
        extra_aliases = [check_alias(a) for a in aliases]
        # The gate is held for the whole commit: no byte of a staged file changes (writes and
        # truncates wait), so the bytes hashed are the bytes uploaded. The lock is held only to
        # read the namespace (step 0) and to record results: lookups, stat, readdir, reads, even
        # creating or renaming files are answered meanwhile (what changes goes to the next version).
        with self.db.gate.exclusive():
            deferred: list[tuple[str, _Node]] = []
            with self.db.lock:
                project, artifact = self.db.project, self.db.artifact
                self._check_store(store)
                entries, sources, problems, _ = self.snapshot.take(hash=False, defer=deferred)
                if problems:  # before hashing anything: the commit cannot succeed
                    raise InvalidPath(self.snapshot.problems_message(problems))
                gen = self.db.gen
                self.db.committing = {n.fid for n in self.db.staged_nodes() if n.fid}
            try:
                return self._commit(store, project, artifact, entries, sources, deferred, gen, extra_aliases,
                                    description=description, metadata=metadata, type=type, run=run,
                                    progress=progress)
            finally:
                self.db.committing = set()

    def _check_store(self, store: "Store") -> None:
        if store.id != self.db.store_id:
            raise ArtfsError(f"{self.db.path} is a draft of {self.db.store_url}, not of {store.url}")

    def part(self, store: "Store", group: str, *, description: str | None = None,
             metadata: dict[str, Any] | None = None, type: str | None = None,
             progress: Callable[[int], None] | None = None) -> "PartResult | None":
        """Record the draft's files as its part of ``group`` instead of committing a version.

        ``artfs mount --group GROUP`` commits drafts this way (:func:`artfs._distributed.upsert`
        does the store's side). The draft's writer id is recorded in the draft
        (``meta.group``/``meta.group_writer``, one transaction) before anything is uploaded, so a
        retry after a crash replaces the same part rather than adding a second one; any later
        commit of that draft goes to the same group (a draft is never both a version and a part).
        The part holds every file of the draft, its base version's files included (the draft is a
        copy-on-write view of ``latest``). Returns None, writing nothing, when the draft equals its
        base and no part was recorded from it yet. Discarding the draft afterwards is the caller's
        (:meth:`Draft.commit`).
        """
        if self.db.readonly:
            raise ArtfsError("cannot commit a draft opened read-only")
        with self.db.gate.exclusive(), self.db.lock:
            project, artifact = self.db.project, self.db.artifact
            self._check_store(store)
            entries, sources, problems, _ = self.snapshot.take(hash=True)
            if problems:
                raise InvalidPath(self.snapshot.problems_message(problems))
            recorded = self.db.meta("group") == group and self.db.meta("group_writer")
            if not recorded and version_digest(check_entries(entries)) == self.db.meta("base_digest"):
                return None
            writer = recorded or f"draft-{uuid.uuid4().hex[:16]}"
            if not recorded:
                with self.db.tx() as con:
                    self.db.set_meta(con, group=group, group_writer=writer)
            meta = {k: self.db.meta(k) for k in ("description", "metadata", "type")}
            try:
                return upsert(store, project, artifact, group, entries=entries, sources=sources, writer=writer,
                              type=type or meta["type"] or "unspecified",
                              description=description if description is not None else meta["description"],
                              metadata=metadata if metadata is not None else (meta["metadata"] or {}),
                              progress=progress)
            except (ArtfsError, OSError) as e:
                raise self.failed(e) from e

    def _hash_deferred(self, deferred: list[tuple[str, _Node]], entries: list[Entry],
                       sources: dict[str, Callable[[str], None] | str]) -> None:
        """Hash the staged files :meth:`Snapshot.take` deferred (without the lock; the caller holds the
        gate) and add their entries; the digests are stored as the snapshot would have."""
        hashed: dict[int, tuple[str, int]] = {}
        updates: list[tuple[str, int, int, int, str]] = []
        for path, n in deferred:
            got = hashed.get(n.ino)
            if got is None:
                p = self.db.fpath(n.fid or "")
                st = os.stat(p)  # the file stays (deletion waits for the commit) and cannot change
                got = hashed[n.ino] = digest_file(p)
                after = os.stat(p)
                if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                    updates.append((got[0], got[1], after.st_mtime_ns, n.ino, n.fid or ""))
            digest, size = got
            sources[digest] = self.db.fpath(n.fid or "")
            entries.append(Entry(path, digest, size, bool(n.mode & stat.S_IXUSR)))
        entries.sort(key=lambda e: e.path)
        if updates:
            with self.db.lock, self.db.tx() as con:  # only where the node still has that staged file
                con.executemany("UPDATE nodes SET digest = ?, size = ?, hmtime = ? WHERE ino = ? AND fid = ?", updates)
                for u in updates:
                    self.db.invalid.discard(u[3])

    def _commit(self, store: "Store", project: str, artifact: str, entries: list[Entry],
                sources: dict[str, Callable[[str], None] | str], deferred: list[tuple[str, _Node]], gen: int,
                extra_aliases: list[str], *, description: str | None, metadata: dict[str, Any] | None,
                type: str | None, run: str | None, progress: Callable[[int], None] | None) -> "CommitResult | None":
        """Steps 1-5 of a commit (module docstring), from the namespace :meth:`commit` read at ``gen``."""
        try:
            self._hash_deferred(deferred, entries, sources)  # step 1
            vdigest = version_digest(check_entries(entries))
            digests = {e.digest for e in entries if e.digest}
            pending = self._settle_pending(store, project, artifact, vdigest)
            if pending is None:
                base_digest = self.db.meta("base_digest")
                if vdigest == base_digest or (base_digest is None and not entries):
                    with self.db.lock:
                        self._unstage(committed=digests, changed=self.db.gen != gen)
                    return None
                pending = self._record_commit_id(vdigest)  # step 2
            result = self._store_commit(  # step 3
                store, project, artifact, entries, sources, pending, vdigest, extra_aliases,
                description=description, metadata=metadata, type=type, run=run, progress=progress)
        except (ArtfsError, OSError) as e:
            raise self.failed(e) from e
        try:  # in the local cache already: Store.commit wrote or read it
            base = _committed(store, project, artifact, result.version, vdigest)
        except (ArtfsError, OSError) as e:
            raise self.failed(e) from e
        with self.db.lock:
            self.db.committing = set()
            self._reset_to_version(base, committed=digests, changed=self.db.gen != gen)  # step 4
            self.db.sweep()  # step 5
        return result

    def _settle_pending(self, store: "Store", project: str, artifact: str, vdigest: str) -> str | None:
        """The pending commit id to finish (same content as now), or None to start afresh.

        A pending id recorded for other content (the draft changed after a crash) is dropped; if
        that attempt created a version, the version becomes the draft's base first (one
        transaction), so the new content is committed on top of it."""
        pending: str | None = self.db.meta("commit_id")
        if pending is None or self.db.meta("commit_vdigest") == vdigest:
            return pending
        done = store.find_commit(project, artifact, pending, after=self.db.base_version)
        landed = store.manifest(project, artifact, done) if done is not None else None
        with self.db.lock, self.db.tx() as con:
            if landed is not None:
                self.db.set_base(con, landed)
            self.db.set_meta(con, commit_id=None, commit_vdigest=None)
        return None

    def _record_commit_id(self, vdigest: str) -> str:
        """Step 2: a new commit id and the content it commits, in one transaction; from here on the
        draft is *pending* and every retry passes this id to the store."""
        pending = uuid.uuid4().hex
        with self.db.lock, self.db.tx() as con:
            self.db.set_meta(con, commit_id=pending, commit_vdigest=vdigest)
        return pending

    def _store_commit(self, store: "Store", project: str, artifact: str, entries: list[Entry],
                      sources: dict[str, Callable[[str], None] | str], commit_id: str, vdigest: str,
                      extra_aliases: list[str], *, description: str | None, metadata: dict[str, Any] | None,
                      type: str | None, run: str | None, progress: Callable[[int], None] | None) -> "CommitResult":
        """Step 3: :meth:`Store.commit` under ``commit_id`` on top of the base version: it finds the
        version an earlier attempt with this id created (``created=False``) or creates one."""
        meta = {k: self.db.meta(k) for k in ("description", "metadata", "type", "aliases")}
        al = list(dict.fromkeys(list(meta["aliases"] or []) + extra_aliases))
        return store.commit(
            project, artifact, type=type or meta["type"] or "unspecified", entries=entries,
            sources=sources,
            description=description if description is not None else meta["description"],
            metadata=metadata if metadata is not None else (meta["metadata"] or {}),
            aliases=al, run=run, progress=progress, commit_id=commit_id, base_version=self.db.base_version,
            vdigest=vdigest)

    def failed(self, e: BaseException) -> ArtfsError:
        how = (f"the draft is kept; retry with `artfs commit {self.db.project}/{self.db.artifact}` "
               f"(or `artfs commit MNT/{self.db.project}/{self.db.artifact}/draft` while mounted, or unmount again)")
        msg = f"{self.db.project}/{self.db.artifact}: commit failed: {e}; {how}"
        if isinstance(e, ArtfsError):
            try:
                err = type(e)(msg)
            except TypeError:
                err = ArtfsError(msg)
        else:
            err = StoreUnavailable(msg) if isinstance(e, (ConnectionError, TimeoutError)) else ArtfsError(msg)
        return err

    def _reset_to_version(self, base: "Manifest | _Base", *, committed: set[str], changed: bool) -> None:
        """Step 4: the version just committed becomes the draft's base, its staged files base nodes,
        and the pending commit id and description are cleared (one transaction). The caller holds
        the lock and sweeps the staged files no node references any more afterwards (step 5)."""
        self._reset(base, committed=committed, changed=changed)

    def _unstage(self, *, committed: set[str], changed: bool) -> None:
        """The draft equals its base: its staged copies are dropped (the base has those bytes)."""
        self._reset(None, committed=committed, changed=changed)
        self.db.sweep()

    def _reset(self, base: "Manifest | _Base | None", *, committed: set[str] | None, changed: bool) -> None:
        """After a commit (or finding the draft equal to its base): staged files become base nodes.

        Files with an open write handle stay staged (their bytes equal the new base anyway), and
        so do files whose bytes the new base does not hold (``committed``: its digests; a file
        created while the commit ran). ``changed``: the namespace changed while the commit ran,
        so the draft stays dirty (those changes are the next version's). The caller holds the lock.
        """
        staged = self.db.staged_nodes()
        updates = []
        for n in staged:
            if n.ino in self.db.writers or n.digest is None or n.ino in self.db.invalid:
                continue
            if committed is not None and n.digest not in committed:
                continue
            try:
                fst = os.stat(self.db.fpath(n.fid or ""))
            except FileNotFoundError:
                continue
            # the row takes over the staged file's times (a ctime never goes back)
            updates.append((fst.st_mtime_ns, fst.st_atime_ns, fst.st_ctime_ns, n.ino))
        links_or_empty = self.db.q(
            "SELECT 1 FROM nodes d WHERE d.kind NOT IN ('f', 'd') OR (d.kind = 'd' AND d.ino != 1 AND NOT EXISTS "
            "(SELECT 1 FROM nodes c WHERE c.parent = d.ino)) LIMIT 1")
        with self.db.tx() as con:
            con.executemany("UPDATE nodes SET fid = NULL, hmtime = NULL, mtime = ?, atime = ?, "
                            "ctime = max(coalesce(ctime, 0), ?) WHERE ino = ?", updates)
            if base is not None:  # a commit: the version is the new base; its description is used up
                self.db.set_base(con, base)
                self.db.set_meta(con, commit_id=None, commit_vdigest=None, description=None, metadata={}, aliases=[])
            # Clean again unless something a version does not hold is left (symlinks, empty
            # directories) or a file stays staged because a write handle is open.
            self.db.set_meta(con, dirty=bool(links_or_empty) or len(updates) < len(staged) or changed)
        self.db.reload_dirty()

    def refresh(self, latest: Manifest | None) -> bool:
        """Rebase a *clean* draft onto ``latest`` (the artifact's current latest); True if it moved.

        A dirty draft keeps its base: the commit records whatever the user made of it.
        """
        with self.db.gate.exclusive(), self.db.lock:
            if self.db.meta("dirty", False) or self.db.meta("commit_id") is not None:
                return False
            if latest is None or latest.version == self.db.base_version:
                return False
            with self.db.tx() as con:
                con.execute("DELETE FROM nodes WHERE ino != ?", (ROOT,))
                self.db.set_base(con, latest)
                self.db.materialise(con, latest)
            self.db.invalid.clear()
            self.db.sweep()
            return True


def _committed(store: "Store", project: str, artifact: str, n: int, vdigest: str) -> "Manifest | _Base":
    """The version a commit made (or matched), as the draft's next base.

    Its manifest is in the local cache (``Store.commit`` wrote or read it); its bytes are taken
    as they are, without parsing a manifest of maybe millions of entries again, and its digest
    is the one just committed (the version carries that content, whichever way it was found).
    """
    try:
        with open(store.cache.manifest_path(store.id, project, artifact, n), "rb") as f:
            return _Base(n, vdigest, f.read())
    except FileNotFoundError:
        return store.manifest(project, artifact, n)
