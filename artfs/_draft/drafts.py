"""The drafts of a store in a staging directory: where they live, enumerating them, opening one
(started from the artifact's latest version, or moved to it while clean), and the ``fetch``
function that copies a base blob through the verified cache into a draft (a copy-up).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._cache import make_private_dir
from .._errors import ArtfsError, CorruptData, NotFound, StoreUnavailable
from .._manifest import Entry, Manifest
from .._names import check_name
from .draft import Draft, DraftBusy
from .schema import Fetch, read_owner
from .snapshot import DraftStatus

if TYPE_CHECKING:
    from .._store import Store


def default_staging_root() -> str:
    env = os.environ.get("ARTFS_STAGING_DIR")
    if env:
        return env
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "artfs", "staging")


def store_fetch(store: "Store", project: str) -> Fetch:
    """A fetch function that copies a base blob from the store through the verified cache."""

    def fetch(entry: Entry, dst: str) -> None:
        if entry.ref is not None or not entry.digest:
            raise ArtfsError(f"{entry.path}: copying a reference into a draft is not supported yet")
        for attempt in (1, 2):
            store.fetch_blob(project, entry.digest)
            try:
                store.cache.copy_verified(entry.digest, dst, size=entry.size)
                return
            except CorruptData:
                if attempt == 2:
                    raise

    return fetch


@dataclass(frozen=True)
class DraftRef:
    """A draft on disk (not opened)."""

    store_id: str
    project: str
    artifact: str
    path: str

    def busy(self) -> dict[str, Any] | None:
        """The owner if a process has the draft open, else None."""
        try:
            fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return read_owner(self.path) or {"pid": None, "what": "unknown process"}
        finally:
            os.close(fd)
        return None

    def status(self, *, hash: bool = True, all: bool = False) -> DraftStatus | None:
        """How the draft differs from its base; None for a clean draft unless ``all``.

        A draft another process holds (a running mount) is read without taking it over and
        without hashing: files written since their last hash count as ``unhashed``.
        """
        owner = self.busy()
        try:
            if owner is None:
                with Draft.open(self.path) as d:
                    return d.status(hash=hash) if all or d.dirty else None
        except DraftBusy as e:
            owner = e.owner or {"pid": None}
        with Draft.open(self.path, readonly=True) as d:
            if not all and not d.dirty:
                return None
            st = d.status(hash=False)
        st.busy = owner
        return st


def list_drafts(root: str | None = None, *, store_id: str | None = None) -> list[DraftRef]:
    """Every draft under the staging root (of one store if ``store_id``), clean ones included."""
    root = os.path.abspath(root or default_staging_root())
    out = []
    with contextlib.suppress(FileNotFoundError):
        for sid in sorted(os.listdir(root)) if store_id is None else [store_id]:
            sd = os.path.join(root, sid)
            if not os.path.isdir(sd):
                continue
            for p in sorted(os.listdir(sd)):
                pd = os.path.join(sd, p)
                if not os.path.isdir(pd):
                    continue
                for a in sorted(os.listdir(pd)):
                    if os.path.exists(os.path.join(pd, a, "draft.db")):
                        out.append(DraftRef(sid, p, a, os.path.join(pd, a)))
    return out


class Drafts:
    """The drafts of one store in a staging directory: enumerate them, open one."""

    def __init__(self, store: "Store", *, root: str | None = None) -> None:
        self.store = store
        self.root = os.path.abspath(root or default_staging_root())
        self.dir = os.path.join(self.root, store.id)

    def path(self, project: str, artifact: str) -> str:
        return os.path.join(self.dir, check_name(project, "project"), check_name(artifact, "artifact"))

    def list(self) -> list[DraftRef]:
        """Every draft of this store on disk (clean ones included), sorted."""
        return list_drafts(self.root, store_id=self.store.id)

    def _latest(self, project: str, artifact: str) -> Manifest | None:
        versions = self.store.versions(project, artifact)
        if not versions:
            return None
        _, _, n = self.store.resolve(f"{project}/{artifact}:latest")
        return self.store.manifest(project, artifact, n)

    def open(self, project: str, artifact: str, *, create: bool = True, fetch: Fetch | None = None,
             owner: str | dict[str, Any] | None = None, refresh: bool = True) -> Draft:
        """Open the draft of ``project/artifact``, starting it from the latest version if needed.

        A clean draft is moved to the current latest first (when the store can be reached).
        Raises :class:`DraftBusy` if another process has it open.
        """
        path = self.path(project, artifact)
        fetch = fetch or store_fetch(self.store, project)
        try:
            d = Draft.open(path, fetch=fetch, owner=owner)
        except NotFound:
            if not create:
                raise NotFound(f"{project}/{artifact}: no draft of {self.store.url} in {self.root}") from None
            latest = self._latest(project, artifact)
            make_private_dir(self.root)  # drafts hold bytes of private projects: 0700 for other local users
            os.makedirs(path, exist_ok=True)
            return Draft(path, fetch=fetch, owner=owner, _init={
                "store_url": self.store.url, "store_id": self.store.id, "project": project, "artifact": artifact,
                "base": latest, "type": latest.type if latest else "unspecified"})
        if refresh and not d.dirty:
            try:
                d.refresh(self._latest(project, artifact))
            except StoreUnavailable:
                pass
            except BaseException:
                d.close()
                raise
        return d

    def status(self, *, hash: bool = True, all: bool = False) -> builtins.list[DraftStatus]:
        """Status of every dirty draft of this store (``all``: clean ones too)."""
        return [st for ref in self.list() if (st := ref.status(hash=hash, all=all)) is not None]
