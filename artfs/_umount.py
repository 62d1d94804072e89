"""The unmount report: what a mount daemon committed at unmount, for ``artfs umount`` to print.

The daemon writes it to its results file (:func:`artfs._mounts.results_path`, named by the
mount root's ``user.artfs.results``) twice: before the first commit starts, a
``"state": "committing"`` report naming the drafts with changes; then the ``"finished"`` one
with every commit, every unchanged draft and every failure. A daemon that dies in between
(SIGKILL, OOM) leaves the first, so ``artfs umount`` can say which drafts were not committed.
Like :mod:`artfs._xattrs`, this is a protocol between the daemon and the command line, which
may be of different versions: the JSON of each state is spelt here alone (:meth:`UnmountReport.to_dict`,
:meth:`UnmountReport.from_dict`), and its keys must not change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

COMMITTING = "committing"
FINISHED = "finished"


@dataclass
class UnmountReport:
    """One unmount report (see the module docstring)."""

    pid: int = 0
    mountpoint: str = ""
    store: str = ""
    state: str = FINISHED
    #: each commit's result document (``artfs umount`` prints them; ``artfs.cli.render.commit_text``)
    commits: list[dict[str, Any]] = field(default_factory=list)
    #: drafts that equal their base
    unchanged: list[str] = field(default_factory=list)
    #: ``{"name": PROJECT/ARTIFACT (or "*"), "error": message}`` of each draft not committed
    failed: list[dict[str, str]] = field(default_factory=list)
    #: committing: the drafts with changes, which the daemon is about to commit
    drafts: list[str] = field(default_factory=list)
    started: float | None = None  # committing: when (time.time())
    finished: float | None = None  # finished: when

    def fail(self, name: str, error: str) -> None:
        self.failed.append({"name": name, "error": error})

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of the report's state (the keys of each state, in this order)."""
        head = {"pid": self.pid, "mountpoint": self.mountpoint, "store": self.store, "state": self.state}
        if self.state == COMMITTING:
            return {**head, "drafts": list(self.drafts), "started": self.started}
        return {"commits": list(self.commits), "unchanged": list(self.unchanged), "failed": list(self.failed),
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
                       state=d.get("state") or FINISHED, commits=list(d.get("commits") or []),
                       unchanged=list(d.get("unchanged") or []), failed=list(d.get("failed") or []),
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
