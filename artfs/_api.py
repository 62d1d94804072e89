"""``artfs.Api()``: W&B's public API (read artifacts and runs outside a run), over one store."""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any

from ._aliaslog import AliasMove, moves
from ._artifact import Artifact
from ._asof import ns_of, parse_time, timeline
from ._errors import NotFound
from ._lineage import list_runs, parse_run_path, read_record
from ._names import check_name, parse_spec
from ._run import Run, _open_store, _strip_entity, default_project

if TYPE_CHECKING:
    from ._store import Store


class Api:
    """``Api(overrides={"project": "p"}, store=...)``; names without a project use that project."""

    def __init__(self, overrides: dict[str, Any] | None = None, *, store: "Store | str | None" = None,
                 **wandb_options: Any) -> None:
        """An API object over ``store`` (default: the default store); ``overrides={"project": P}``
        sets the project for names without one; W&B's other options (``api_key``, ``timeout``) are
        accepted and ignored."""
        self.store = _open_store(store)
        self.project = check_name((overrides or {}).get("project") or default_project(), "project")

    def artifact(self, name: str, type: str | None = None, *, as_of: "str | _dt.datetime | None" = None) -> "Artifact":
        """``"project/name:alias"`` (or ``"name:v3"`` in the default project; ``entity/`` is ignored).

        ``as_of`` (ISO 8601 text, or an aware datetime): the version the name named then (as
        ``artfs get --as-of``); ``NotFound`` if it named none, or one deleted since."""
        spec = parse_spec(_strip_entity(name), default_project=self.project, need_ref=True)
        if as_of is None:
            project, artifact, n = self.store.resolve(spec)
        else:
            t = ns_of(as_of) if isinstance(as_of, _dt.datetime) else parse_time(as_of)
            project, artifact = spec.project, spec.artifact
            n = timeline(self.store, project, artifact).resolve(spec, t)
        art = Artifact._logged(self.store, project, artifact, n)
        if type is not None and art.type != type:
            raise NotFound(f"{spec}: has type {art.type!r}, not {type!r}")
        return art

    def artifact_versions(self, type_name: str, name: str, per_page: int = 50) -> list["Artifact"]:
        """Every existing version of ``[project/]name`` (of type ``type_name``), oldest first."""
        spec = parse_spec(_strip_entity(name), default_project=self.project)
        versions = self.store.versions(spec.project, spec.artifact)
        if not versions and spec.artifact not in self.store.artifacts(spec.project):
            raise NotFound(f"{spec.project}/{spec.artifact}: no such artifact in {self.store.url}")
        out = []
        for n in versions:
            try:
                art = Artifact._logged(self.store, spec.project, spec.artifact, n)
            except NotFound:  # deleted meanwhile
                continue
            if art.type != type_name:
                raise NotFound(f"{spec.project}/{spec.artifact} has type {art.type!r}, not {type_name!r}")
            out.append(art)
        return out

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every recorded move of the aliases of ``[project/]name`` (or of one alias), oldest first:
        who moved it, when, from which version to which (``artfs alias log``)."""
        spec = parse_spec(_strip_entity(name), default_project=self.project)
        return moves(self.store, spec.project, spec.artifact, alias)

    def run(self, path: str) -> Run:
        """``"project/run_id"``: the run, its record read and validated now."""
        project, run_id = parse_run_path(path, default_project=self.project)
        return Run(self.store, project, run_id, record=read_record(self.store, project, run_id))

    def runs(self, path: str | None = None) -> list[Run]:
        """The runs of a project (``"project"`` or W&B's ``"entity/project"``)."""
        project = (path or self.project).split("/")[-1]
        return [Run(self.store, project, r) for r in list_runs(self.store, project)]
