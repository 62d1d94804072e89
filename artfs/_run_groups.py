"""The store side of ``Run.upsert_artifact`` and ``Run.finish_artifact`` (W&B's distributed writers).

:class:`~artfs._run.Run`'s two methods check the run is live, record the lineage edge and make
the artifact become the logged version; these functions do the rest (the upsert is :func:`artfs._distributed.upsert_artifact`
itself) and take plain values, so
this module never imports :mod:`artfs._run` (no import cycle). The parts themselves are
:mod:`artfs._distributed`'s. A run is one writer: its part's key is its run id, so upserting
again from the same run replaces its files. The pending version is named by ``distributed_id``,
by default the run's ``group`` (``artfs.init(group=...)``), as in W&B. Lineage: each writer run
becomes a ``contributor`` of the version ``finish`` makes, the finishing run its ``logger``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ._artifact import Artifact
from ._distributed import finish_artifact as finish
from ._errors import ArtfsError

if TYPE_CHECKING:
    from ._results import CommitResult
    from ._store import Store


def group_of(distributed_id: str | None, run_group: str | None, what: str) -> str:
    """The pending version's name: ``distributed_id``, else the run's group (W&B's default)."""
    group = distributed_id or run_group
    if not group:
        raise ArtfsError(f"{what} needs a distributed_id, or a run started with artfs.init(group=...)")
    return group


def artifact_from(artifact_or_path: "Artifact | str", name: str | None, type: str | None) -> "Artifact":
    """W&B accepts a path too (a file or a directory; ``name`` defaults to its base name)."""
    if not isinstance(artifact_or_path, str):
        return artifact_or_path
    p = artifact_or_path
    art = Artifact(name or os.path.basename(os.path.abspath(p)).replace(" ", "_"), type or "unspecified")
    (art.add_dir if os.path.isdir(p) else art.add_file)(p)
    return art


def finish_version(store: "Store", project: str, group: str, artifact: "Artifact", *, run: str,
                   aliases: list[str]) -> "tuple[CommitResult, Artifact]":
    """Finish the pending version; returns its commit result and the logged version it made."""
    r = finish(store, artifact, project, group, aliases=aliases, run=run)
    logged = Artifact.of_version(store, project, r.artifact, r.version)
    logged.commit_result = r
    return r, logged
