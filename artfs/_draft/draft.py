"""The :class:`Draft` itself: opening a draft (its lock and owner), creating one, closing and
discarding it, and the description its next version will get. Everything else is inherited from
the layers below (:mod:`artfs._draft`'s docstring lists them).

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
from typing import Any, Iterable

from .._errors import AlreadyExists, ArtfsError, CorruptData, NotFound
from .._manifest import Manifest
from .._names import check_alias, check_name
from .commit import Commit
from .schema import _ACOLS, _ACOLS_V1, _POSIX_COLUMNS, FORMATS, Fetch, read_owner


class DraftBusy(ArtfsError):
    """Another process (usually a running ``artfs mount``) has the draft open."""

    exit_code = 8

    def __init__(self, message: str, owner: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.owner = owner or {}


class Draft(Commit):
    """The staging tree of one artifact. Open with :meth:`open`/:meth:`start` or :class:`Drafts`."""

    def __init__(self, path: str, *, fetch: Fetch | None = None, readonly: bool = False,
                 owner: str | dict[str, Any] | None = None, _init: dict[str, Any] | None = None) -> None:
        super().__init__(path, fetch=fetch, readonly=readonly)
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
        if init is None and not os.path.exists(os.path.join(self.path, "draft.db")):
            raise NotFound(f"{self.path}: no draft here")
        os.makedirs(self._files, exist_ok=True)
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
            self._con = self._connect(os.path.join(self.path, "draft.db"), readonly=False)
            self._acols = _ACOLS
            ready = self._meta("ready", False)
            if init is not None:
                if ready:
                    raise AlreadyExists(f"{self.path}: a draft already exists here")
                self._initialise(init)
            elif not ready:
                raise NotFound(f"{self.path}: the draft was never completely created; remove it and start again")
            if self._meta("format") not in FORMATS:
                raise CorruptData(f"{self.path}: unknown draft format {self._meta('format')!r}")
            self._dirty = bool(self._meta("dirty", False))
            self._invalid = {r[0] for r in self._q("SELECT ino FROM nodes WHERE fid IS NOT NULL AND digest IS NULL")}
            self._sweep(tmp=True)
            self._make_reserve()
        except BaseException:
            self.close()
            raise

    def _open_readonly(self) -> None:
        db = os.path.join(self.path, "draft.db")
        if not os.path.exists(db):
            raise NotFound(f"{self.path}: no draft here")
        self._con = self._connect(db, readonly=True)
        have = {r[1] for r in self._con.execute("PRAGMA table_info(nodes)")}
        self._acols = _ACOLS if have.issuperset(_POSIX_COLUMNS) else _ACOLS_V1
        if not self._meta("ready", False):
            raise NotFound(f"{self.path}: the draft was never completely created")

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
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
        with self._lock:
            self.close()
            shutil.rmtree(path, ignore_errors=True)

    # -- the next version's description --------------------------------------------------------
    def pending(self) -> dict[str, Any]:
        """Description, type, metadata and aliases the next version will get."""
        with self._lock:
            return {k: self._meta(k) for k in ("description", "type", "metadata", "aliases")}

    def set_description(self, description: str | None) -> None:
        with self._lock, self._tx() as con:
            self._set(con, description=description)

    def set_type(self, type: str) -> None:
        if type != "unspecified":
            check_name(type, "type")
        with self._lock, self._tx() as con:
            self._set(con, type=type)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        if not isinstance(metadata, dict):
            raise ArtfsError("metadata must be a JSON object")
        json.dumps(metadata)  # must be JSON
        with self._lock, self._tx() as con:
            self._set(con, metadata=metadata)

    def set_aliases(self, aliases: Iterable[str]) -> None:
        al = list(dict.fromkeys(check_alias(a) for a in aliases))
        with self._lock, self._tx() as con:
            self._set(con, aliases=al)


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "by an unknown process"
    who = "by this process" if info.get("pid") == os.getpid() else f"by pid {info.get('pid')}"
    at = f" mounted at {info['mountpoint']}" if info.get("mountpoint") else ""
    return f"{who}: {info.get('what') or '?'}{at}"
