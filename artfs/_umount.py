"""The result of a commit of a draft (:class:`DraftCommit`) and the unmount report
(:class:`UnmountReport`): what a mount daemon committed, for ``artfs commit`` and ``artfs umount``
to print.

A :class:`DraftCommit` is built once, by :func:`artfs._draft.commit_draft` (or as a failure or a
commit still running), and travels as JSON: ``user.artfs.last_commit`` of ``draft/`` (what
``artfs commit MNT/.../draft`` polls) and each entry of an unmount report's ``commits``.
:meth:`DraftCommit.to_dict` spells the document of each case, :meth:`DraftCommit.from_dict` reads
it back (also from an older daemon: missing keys take their defaults).

The daemon writes it to its results file (:func:`artfs._mounts.results_path`, named by the
mount root's ``user.artfs.results``) twice: before the first commit starts, a
``"state": "committing"`` report naming the drafts with changes; then the ``"finished"`` one
with every commit, every unchanged draft and every failure. A daemon that dies in between
(SIGKILL, OOM) leaves the first, so ``artfs umount`` can say which drafts were not committed.
Like :mod:`artfs._xattrs`, this is a protocol between the daemon and the command line, which
may be of different versions: the JSON of each state is spelt here alone (:meth:`UnmountReport.to_dict`,
:meth:`UnmountReport.from_dict`, and the same for :class:`DraftCommit`), and its keys must not change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

COMMITTING = "committing"
FINISHED = "finished"


@dataclass
class DraftCommit:
    """What one commit of a draft did, or that it failed, or that it still runs (module docstring)."""

    name: str  #: PROJECT/ARTIFACT
    #: True: done (see ``committed``); False: failed (``error``); None: still running
    ok: bool | None = True
    #: a version was created or matched, or (``group``) a part recorded; False: the draft equals its base
    committed: bool = False
    #: the version created or matched; not committed: the base version the draft equals (None: none)
    version: int | None = None
    created: bool = False
    files: int = 0
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    aliases: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: ``artfs mount --group``: the group the draft became a part of, and its writer id
    group: str | None = None
    writer: str | None = None
    error: str | None = None
    #: the id of the request (``user.artfs.commit``), echoed so the caller knows its answer
    id: str | None = None
    #: where this process committed: the library's own result (a CommitResult or PartResult;
    #: None: nothing committed). Not part of the document
    result: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def running(cls, name: str, id: str | None = None) -> "DraftCommit":
        return cls(name, ok=None, id=id)

    @classmethod
    def failure(cls, name: str, error: str, id: str | None = None) -> "DraftCommit":
        return cls(name, ok=False, error=error, id=id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (the keys of each case, in this order; ``id`` when there is one)."""
        d: dict[str, Any]
        if self.ok is None:
            d = {"name": self.name, "ok": None, "running": True}
        elif self.ok is False:
            d = {"name": self.name, "ok": False, "error": self.error}
        elif self.group is not None:
            d = {"name": self.name, "ok": True, "committed": True, "version": None, "created": False,
                 "group": self.group, "writer": self.writer, "files": self.files,
                 "uploaded_blobs": self.uploaded_blobs, "uploaded_bytes": self.uploaded_bytes, "aliases": [],
                 "seconds": self.seconds}
        elif not self.committed:
            d = {"name": self.name, "ok": True, "committed": False, "version": self.version, "created": False,
                 "seconds": self.seconds}
        else:
            d = {"name": self.name, "ok": True, "committed": True, "version": self.version, "created": self.created,
                 "files": self.files, "uploaded_blobs": self.uploaded_blobs, "uploaded_bytes": self.uploaded_bytes,
                 "aliases": list(self.aliases), "seconds": self.seconds}
        if self.id is not None:
            d["id"] = self.id
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: object) -> "DraftCommit | None":
        """The result of a parsed document; None if it is not one (not an object, wrong types)."""
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            return None
        try:
            return cls(d["name"], ok=d.get("ok", True),
                       committed=bool(d.get("committed", False)), version=d.get("version"),
                       created=bool(d.get("created", False)), files=int(d.get("files") or 0),
                       uploaded_blobs=int(d.get("uploaded_blobs") or 0),
                       uploaded_bytes=int(d.get("uploaded_bytes") or 0), aliases=list(d.get("aliases") or []),
                       seconds=float(d.get("seconds") or 0.0), group=d.get("group"), writer=d.get("writer"),
                       error=d.get("error"), id=d.get("id"))
        except (TypeError, ValueError):
            return None


@dataclass
class Failure:
    """A draft not committed at unmount, and why."""

    name: str  #: PROJECT/ARTIFACT, or ``*``: the commit of every draft failed
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "error": self.error}

    @classmethod
    def from_dict(cls, d: object) -> "Failure | None":
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            return None
        return cls(d["name"], str(d.get("error") or ""))


@dataclass
class UnmountReport:
    """One unmount report (see the module docstring)."""

    pid: int = 0
    mountpoint: str = ""
    store: str = ""
    state: str = FINISHED
    #: each commit's result (``artfs umount`` prints them: ``artfs.cli.output.commit_text``)
    commits: list[DraftCommit] = field(default_factory=list)
    #: drafts that equal their base
    unchanged: list[str] = field(default_factory=list)
    #: each draft not committed
    failed: list[Failure] = field(default_factory=list)
    #: committing: the drafts with changes, which the daemon is about to commit
    drafts: list[str] = field(default_factory=list)
    started: float | None = None  # committing: when (time.time())
    finished: float | None = None  # finished: when

    def fail(self, name: str, error: str) -> None:
        self.failed.append(Failure(name, error))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of the report's state (the keys of each state, in this order)."""
        head = {"pid": self.pid, "mountpoint": self.mountpoint, "store": self.store, "state": self.state}
        if self.state == COMMITTING:
            return {**head, "drafts": list(self.drafts), "started": self.started}
        return {"commits": [c.to_dict() for c in self.commits], "unchanged": list(self.unchanged),
                "failed": [f.to_dict() for f in self.failed],
                **head, "finished": self.finished}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: object) -> "UnmountReport | None":
        """The report of a parsed document; None if it is not one (not an object, wrong types)."""
        if not isinstance(d, dict):
            return None
        try:
            return cls(pid=d.get("pid") or 0, mountpoint=d.get("mountpoint") or "", store=d.get("store") or "",
                       state=d.get("state") or FINISHED,
                       commits=[c for c in map(DraftCommit.from_dict, d.get("commits") or []) if c is not None],
                       unchanged=list(d.get("unchanged") or []),
                       failed=[f for f in map(Failure.from_dict, d.get("failed") or []) if f is not None],
                       drafts=list(d.get("drafts") or []), started=d.get("started"), finished=d.get("finished"))
        except TypeError:  # a list field that is not a list
            return None

    @classmethod
    def read(cls, path: str) -> "UnmountReport | None":
        """The report in the file ``path``; None if there is none or it cannot be parsed."""
        try:
            with open(path) as f:
                return cls.from_dict(json.load(f))
        except (OSError, ValueError):
            return None
