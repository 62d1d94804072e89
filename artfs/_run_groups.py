"""``Run.upsert_artifact`` and ``Run.finish_artifact`` (W&B's distributed writers), added to :class:`Run`.

The store side is :mod:`artfs._distributed`. A run is one writer: its part's key is its run id,
so upserting again from the same run replaces its files. The pending version is named by
``distributed_id``, by default the run's ``group`` (``artfs.init(group=...)``), as in W&B.
Lineage: each writer run becomes a ``contributor`` of the version ``finish`` makes, the finishing
run its ``logger``.
"""

from __future__ import annotations

import os

from ._artifact import Artifact
from ._distributed import finish_artifact as finish
from ._distributed import upsert_artifact as upsert
from ._errors import ArtfsError
from ._run import Run, _become


def _group(run: Run, distributed_id: str | None, what: str) -> str:
    group = distributed_id or run.group
    if not group:
        raise ArtfsError(f"{what} needs a distributed_id, or a run started with artfs.init(group=...)")
    return group


def _artifact(artifact_or_path: "Artifact | str", name: str | None, type: str | None) -> "Artifact":
    """W&B accepts a path too (a file or a directory; ``name`` defaults to its base name)."""
    if not isinstance(artifact_or_path, str):
        return artifact_or_path
    p = artifact_or_path
    art = Artifact(name or os.path.basename(os.path.abspath(p)).replace(" ", "_"), type or "unspecified")
    (art.add_dir if os.path.isdir(p) else art.add_file)(p)
    return art


def upsert_artifact(self: Run, artifact_or_path: "Artifact | str", name: str | None = None,
                    type: str | None = None, aliases: list[str] | None = None,
                    distributed_id: str | None = None) -> "Artifact":
    """Add the artifact's files to the pending version ``distributed_id`` (default: the run's group).

    Only blobs the store lacks are uploaded; the run's earlier part of that version, if any, is
    replaced. ``aliases`` are given to the version when it is finished. Returns the artifact
    (still a draft: the version exists once ``finish_artifact`` ran).
    """
    self._need_live("upsert_artifact")
    artifact = _artifact(artifact_or_path, name, type)
    upsert(self.store, artifact, self.project, _group(self, distributed_id, "upsert_artifact"), writer=self.id,
           run=self.path, aliases=aliases or [])
    return artifact


def finish_artifact(self: Run, artifact_or_path: "Artifact | str", name: str | None = None,
                    type: str | None = None, aliases: list[str] | None = None,
                    distributed_id: str | None = None) -> "Artifact":
    """Make the pending version ``distributed_id`` (default: the run's group) from every part, plus
    the artifact's own files, exactly once. The artifact becomes that version and is returned."""
    self._need_live("finish_artifact")
    artifact = _artifact(artifact_or_path, name, type)
    r = finish(self.store, artifact, self.project, _group(self, distributed_id, "finish_artifact"),
               aliases=aliases or [], run=self.path)
    self._edge("logged", self.project, artifact._name, r.version, "logger" if r.created else "matched")
    logged = Artifact._logged(self.store, self.project, r.artifact, r.version)
    logged.commit_result = r
    _become(artifact, logged)
    return artifact


Run.upsert_artifact = upsert_artifact  # type: ignore[attr-defined]
Run.finish_artifact = finish_artifact  # type: ignore[attr-defined]
