"""The :class:`Draft` itself: opening a draft (its lock and owner), creating one, closing and
discarding it, the description its next version will get, and its commit. Everything else is done
by the parts it holds (:mod:`artfs._draft`'s docstring lists them): ``draft.namespace``
(:class:`Namespace`), ``draft.staging`` (:class:`Staging`), ``draft.snapshot``
(:class:`Snapshot`) and ``draft.commits`` (:class:`Commit`), all over one :class:`DraftDB`
(``draft.db``).

Concurrency: one process owns a draft: an exclusive ``flock`` on ``lock`` for as long as the
:class:`Draft` is open (the daemon holds it for the mount's lifetime; others get
:class:`DraftBusy` naming the owner from the ``owner`` file, and may still look with
``Draft.open(path, readonly=True)``, which takes no lock and never writes). Inside the owner every
method may be called from any thread (see :mod:`artfs._draft.schema`, "Threads").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .._errors import AlreadyExists, ArtfsError, CorruptData, NotFound
from .._manifest import Entry, Manifest
from .._names import check_alias, check_name
from .._results import CommitResult
from .._umount import DraftCommit
from .commit import Commit
from .namespace import Namespace
from .schema import ROOT, _ACOLS, _ACOLS_V1, _POSIX_COLUMNS, FORMATS, DraftDB, Fetch, read_owner
from .snapshot import DraftStatus, Snapshot
from .staging import Staging

if TYPE_CHECKING:
    from .._distributed import PartResult
    from .._store import Store


class DraftBusy(ArtfsError):
    """Another process (usually a running ``artfs mount``) has the draft open."""

    exit_code = 8

    def __init__(self, message: str, owner: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.owner = owner or {}


class Draft:
    """The staging tree of one artifact. Open with :meth:`open`/:meth:`start` or :class:`Drafts`."""

    def __init__(self, path: str, *, fetch: Fetch | None = None, readonly: bool = False,
                 owner: str | dict[str, Any] | None = None, _init: dict[str, Any] | None = None) -> None:
        self.db = db = DraftDB(path, fetch=fetch, readonly=readonly)
        self.namespace = Namespace(db)
        self.staging = Staging(db, self.namespace)
        self.snapshot = Snapshot(db)
        self.commits = Commit(db, self.snapshot)
        self._lockfd: int | None = None
        if readonly:
            self._open_readonly()
        else:
            self._open_owned(owner, _init)

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, *, fetch: Fetch | None = None, readonly: bool = False,
             owner: str | dict[str, Any] | None = None) -> "Draft":
        """Open an existing draft. ``readonly`` takes no lock (to look at a draft a daemon holds).

        ``owner`` describes this process for the "draft is busy" message others get: a string,
        or a dict such as ``{"what": "artfs mount", "mountpoint": "/mnt/a"}``.
        """
        return cls(path, fetch=fetch, readonly=readonly, owner=owner)

    @classmethod
    def start(cls, path: str, *, store_url: str, store_id: str, project: str, artifact: str,
               base: Manifest | None, type: str | None = None, fetch: Fetch | None = None,
               owner: str | dict[str, Any] | None = None) -> "Draft":
        """Start a draft at ``path`` as a copy-on-write view of ``base`` (None: a new artifact)."""
        check_name(project, "project")
        check_name(artifact, "artifact")
        init = {"store_url": store_url, "store_id": store_id, "project": project, "artifact": artifact,
                "base": base, "type": type or (base.type if base else "unspecified")}
        return cls(path, fetch=fetch, owner=owner, _init=init)

    def _open_owned(self, owner: str | dict[str, Any] | None, init: dict[str, Any] | None) -> None:
        db = self.db
        if init is None and not os.path.exists(os.path.join(self.path, "draft.db")):
            raise NotFound(f"{self.path}: no draft here")
        os.makedirs(db.files, exist_ok=True)
        fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                info = read_owner(self.path)
                raise DraftBusy(f"{self.path}: the draft is already open ({_describe(info)})", info) from None
            raise
        self._lockfd = fd
        try:
            who = dict(owner) if isinstance(owner, dict) else {"what": owner or " ".join(sys.argv)[:300]}
            with open(os.path.join(self.path, "owner"), "w") as f:
                json.dump({"pid": os.getpid(), "since": time.time(), **who}, f)
            db.attach(db.connect(os.path.join(self.path, "draft.db"), readonly=False), acols=_ACOLS)
            ready = db.meta("ready", False)
            if init is not None:
                if ready:
                    raise AlreadyExists(f"{self.path}: a draft already exists here")
                db.initialise(init)
            elif not ready:
                raise NotFound(f"{self.path}: the draft was never completely created; remove it and start again")
            if db.meta("format") not in FORMATS:
                raise CorruptData(f"{self.path}: unknown draft format {db.meta('format')!r}")
            db.reload_dirty()
            db.invalid = {r[0] for r in db.q("SELECT ino FROM nodes WHERE fid IS NOT NULL AND digest IS NULL")}
            db.sweep(tmp=True)
            db.make_reserve()
        except BaseException:
            self.close()
            raise

    def _open_readonly(self) -> None:
        db = os.path.join(self.path, "draft.db")
        if not os.path.exists(db):
            raise NotFound(f"{self.path}: no draft here")
        con = self.db.connect(db, readonly=True)
        have = {r[1] for r in con.execute("PRAGMA table_info(nodes)")}
        self.db.attach(con, acols=_ACOLS if have.issuperset(_POSIX_COLUMNS) else _ACOLS_V1)
        if not self.db.meta("ready", False):
            raise NotFound(f"{self.path}: the draft was never completely created")

    def close(self) -> None:
        with self.db.lock:
            self.db.detach()
            if self._lockfd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, "owner"))
                os.close(self._lockfd)  # releases the flock
                self._lockfd = None

    def __enter__(self) -> "Draft":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Draft {self.project}/{self.artifact} base={self.base_version} at {self.path}>"

    def discard(self) -> None:
        """Throw the draft away (every change in it is lost) and close it."""
        if self.readonly:
            raise ArtfsError("cannot discard a draft opened read-only")
        path = self.path
        with self.db.lock:
            self.close()
            shutil.rmtree(path, ignore_errors=True)

    # -- what it is ----------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.db.path

    @property
    def readonly(self) -> bool:
        return self.db.readonly

    @property
    def project(self) -> str:
        return self.db.project

    @property
    def artifact(self) -> str:
        return self.db.artifact

    @property
    def store_url(self) -> str:
        return self.db.store_url

    @property
    def store_id(self) -> str:
        return self.db.store_id

    @property
    def base_version(self) -> int | None:
        return self.db.base_version

    @property
    def dirty(self) -> bool:
        return self.db.dirty

    def discard_if_empty(self) -> bool:
        """Discard the draft of a new artifact that holds nothing at all (not even an empty
        directory): there is nothing to keep. True if it was discarded (and closed)."""
        if self.base_version is None and not self.namespace.readdir(ROOT, limit=1):
            self.discard()
            return True
        return False

    def status(self, *, hash: bool = True) -> DraftStatus:
        """What differs from the base version (:meth:`Snapshot.status`)."""
        return self.snapshot.status(hash=hash)

    def entries(self) -> list[Entry]:
        """The files the next version would hold (:meth:`Snapshot.entries`)."""
        return self.snapshot.entries()

    def disk_full(self) -> OSError:
        """ENOSPC naming the staging disk (:meth:`DraftDB.disk_full`)."""
        return self.db.disk_full()

    # -- commit ----------------------------------------------------------------------------------
    def commit(self, store: "Store", *, description: str | None = None, metadata: dict[str, Any] | None = None,
               type: str | None = None, aliases: Iterable[str] = (), run: str | None = None,
               progress: Callable[[int], None] | None = None, group: str | None = None,
               keep: bool = False) -> "CommitResult | PartResult | None":
        """Commit the draft as the next version; None if it equals its base (nothing is created).

        Exactly once across crashes (:mod:`artfs._draft.commit`). Arguments override what was set
        with :meth:`set_description` etc. On failure the draft is kept and the error says how to
        retry.

        ``group`` (or a group an earlier commit of this draft recorded): record the draft as a
        part of that pending group instead (:meth:`Commit.part`); ``keep`` keeps the draft
        afterwards, else it is discarded once its part is recorded (its files are in the group
        now, and the next mount starts a fresh draft from ``latest``).
        """
        if self.readonly:
            raise ArtfsError("cannot commit a draft opened read-only")
        group = group or self.db.meta("group")
        if group is None:
            return self.commits.commit(store, description=description, metadata=metadata, type=type,
                                       aliases=aliases, run=run, progress=progress)
        part = self.commits.part(store, group, description=description, metadata=metadata, type=type,
                                 progress=progress)
        if part is not None and not keep:
            self.discard()
        return part

    def refresh(self, latest: Manifest | None) -> bool:
        """Rebase a *clean* draft onto ``latest`` (:meth:`Commit.refresh`); True if it moved."""
        return self.commits.refresh(latest)

    # -- the next version's description --------------------------------------------------------
    def pending(self) -> dict[str, Any]:
        """Description, type, metadata and aliases the next version will get."""
        with self.db.lock:
            return {k: self.db.meta(k) for k in ("description", "type", "metadata", "aliases")}

    def set_description(self, description: str | None) -> None:
        with self.db.lock, self.db.tx() as con:
            self.db.set_meta(con, description=description)

    def set_type(self, type: str) -> None:
        if type != "unspecified":
            check_name(type, "type")
        with self.db.lock, self.db.tx() as con:
            self.db.set_meta(con, type=type)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        if not isinstance(metadata, dict):
            raise ArtfsError("metadata must be a JSON object")
        json.dumps(metadata)  # must be JSON
        with self.db.lock, self.db.tx() as con:
            self.db.set_meta(con, metadata=metadata)

    def set_aliases(self, aliases: Iterable[str]) -> None:
        al = list(dict.fromkeys(check_alias(a) for a in aliases))
        with self.db.lock, self.db.tx() as con:
            self.db.set_meta(con, aliases=al)


def commit_draft(draft: Draft, store: "Store", *, group: str | None = None, keep: bool = False,
                 run: str | None = None, description: str | None = None, metadata: dict[str, Any] | None = None,
                 type: str | None = None, aliases: Iterable[str] = (), progress: Callable[[int], None] | None = None,
                 id: str | None = None) -> DraftCommit:
    """Commit ``draft`` (:meth:`Draft.commit`: a version, or a part of ``group``) and say what it
    did: the one commit of the mount's ``user.artfs.commit``, its unmount and ``artfs commit``.

    Raises what the commit raised (the draft is kept; the error says how to retry). ``id`` is
    echoed in the result (the request's, for ``user.artfs.last_commit``)."""
    name = f"{draft.project}/{draft.artifact}"
    t0 = time.monotonic()
    result = draft.commit(store, group=group, keep=keep, run=run, description=description, metadata=metadata,
                          type=type, aliases=aliases, progress=progress)
    seconds = round(time.monotonic() - t0, 3)
    if result is None:  # nothing committed: the draft is still open
        return DraftCommit(name, committed=False, version=draft.base_version, seconds=seconds, id=id)
    if isinstance(result, CommitResult):
        return DraftCommit(name, committed=True, version=result.version, created=result.created, files=result.files,
                           uploaded_blobs=result.uploaded_blobs, uploaded_bytes=result.uploaded_bytes,
                           aliases=list(result.aliases), seconds=seconds, id=id, result=result)
    return DraftCommit(name, committed=True, files=result.files, uploaded_blobs=result.uploaded_blobs,
                       uploaded_bytes=result.uploaded_bytes, seconds=seconds, group=result.group,
                       writer=result.writer, id=id, result=result)


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "by an unknown process"
    who = "by this process" if info.get("pid") == os.getpid() else f"by pid {info.get('pid')}"
    at = f" mounted at {info['mountpoint']}" if info.get("mountpoint") else ""
    return f"{who}: {info.get('what') or '?'}{at}"
