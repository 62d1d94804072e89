"""``artfs.Api()``: W&B's public API (read artifacts and runs outside a run), over one store.

Besides ``artifact``, ``artifact_versions`` (W&B's order: newest first), ``run`` and ``runs``, the
objects that W&B's clean-up scripts walk: ``api.project(name)`` and ``api.projects()``
(:class:`Project`), ``artifact_types`` (:class:`ArtifactType`), ``artifact_collections`` and
``artifact_collection`` (:class:`ArtifactCollection`: an artifact, or a registry collection).
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any, Iterator

from . import _registry as registry
from ._aliaslog import AliasMove, moves
from ._artifact import Artifact
from ._asof import ns_of, parse_time, timeline
from ._errors import NotFound
from ._lineage import list_runs, parse_run_path, read_record
from ._names import check_name, parse_spec
from ._run import Run, _open_store, _strip_entity, default_project, resolve_any

if TYPE_CHECKING:
    from ._store import Store


def _order(arts: list["Artifact"], order: str | None) -> list["Artifact"]:
    """Newest first (what W&B's server returns); ``order="+createdAt"`` (or ``"+"``) oldest first."""
    oldest_first = bool(order) and str(order).startswith("+")
    return sorted(arts, key=lambda a: a.coords()[2], reverse=not oldest_first)


class ArtifactCollection:
    """The versions of one artifact, or of a registry collection (``.is_link_collection``)."""

    def __init__(self, api: "Api", project: str, name: str, type: str) -> None:
        self._api, self.project, self.name, self.type = api, project, name, type
        self.entity = ""

    @property
    def is_link_collection(self) -> bool:
        """True for a registry collection (its versions link versions of other artifacts)."""
        return self.name in registry.collections(self._api.store, self.project)

    def artifacts(self, per_page: int = 50, order: str | None = None) -> list["Artifact"]:
        """Every version, newest first."""
        return self._api.artifacts(self.type, f"{self.project}/{self.name}", order=order)

    versions = artifacts

    @property
    def aliases(self) -> list[str]:
        """Every alias used in the collection."""
        store = self._api.store
        if self.is_link_collection:
            return sorted(registry.aliases(store, self.project, self.name))
        return sorted(store.aliases(self.project, self.name))

    def is_sequence(self) -> bool:
        """W&B: True for an artifact's versions, False for a registry collection (a "portfolio")."""
        return not self.is_link_collection

    def delete(self) -> None:
        """Delete every version (of a registry collection: every link) with its aliases."""
        for a in self.artifacts():
            a.delete(delete_aliases=True)

    def __repr__(self) -> str:
        return f"<ArtifactCollection {self.project}/{self.name} ({self.type})>"


class ArtifactType:
    """One artifact type of a project (``model``, ``dataset``, ...) and its collections."""

    def __init__(self, api: "Api", project: str, name: str) -> None:
        self._api, self.project, self.name = api, project, name
        self.type = name

    def collections(self, per_page: int = 50, order: str | None = None) -> list[ArtifactCollection]:
        """The artifacts (and registry collections) of this type in the project."""
        return [c for c in self._api._collections(self.project) if c.type == self.name]

    def collection(self, name: str) -> ArtifactCollection:
        """One collection of this type (NotFound if it has another type or does not exist)."""
        for c in self.collections():
            if c.name == name:
                return c
        raise NotFound(f"{self.project}/{name}: no {self.name!r} collection")

    def __repr__(self) -> str:
        return f"<ArtifactType {self.name} in {self.project}>"


class Project:
    """``api.project(name)``: a project of the store."""

    def __init__(self, api: "Api", name: str) -> None:
        self._api, self.name = api, check_name(name, "project")
        self.entity = ""

    @property
    def path(self) -> list[str]:
        """W&B's ``[entity, project]``; artfs has no entities."""
        return [self.entity, self.name]

    def artifacts_types(self, per_page: int = 50) -> list[ArtifactType]:
        """The artifact types used in the project (W&B spells this ``artifacts_types``)."""
        return self._api.artifact_types(self.name)

    artifact_types = artifacts_types

    def collections(self, filters: Any = None, order: str | None = None, per_page: int = 50) -> list[ArtifactCollection]:
        """Every artifact and registry collection of the project."""
        return self._api._collections(self.name)

    def runs(self) -> list[Run]:
        """The runs of the project."""
        return self._api.runs(self.name)

    def __repr__(self) -> str:
        return f"<Project {self.name}>"


class Api:
    """``Api(overrides={"project": "p"}, store=...)``; names without a project use that project."""

    def __init__(self, overrides: dict[str, Any] | None = None, *, store: "Store | str | None" = None,
                 **wandb_options: Any) -> None:
        """An API object over ``store`` (default: the default store); ``overrides={"project": P}``
        sets the project for names without one; W&B's other options (``api_key``, ``timeout``) are
        accepted and ignored."""
        self.store = _open_store(store)
        self.default_project = check_name((overrides or {}).get("project") or default_project(), "project")

    @property
    def settings(self) -> dict[str, Any]:
        """W&B's ``api.settings``: the project names go to (``entity`` is always empty)."""
        return {"project": self.default_project, "entity": "", "base_url": self.store.url}

    def artifact(self, name: str, type: str | None = None, *, as_of: "str | _dt.datetime | None" = None) -> "Artifact":
        """``"project/name:alias"`` (or ``"name:v3"`` in the default project; ``entity/`` is ignored);
        a registry collection's ``"registry/collection:production"`` too.

        ``as_of`` (ISO 8601 text, or an aware datetime): the version the name named then (as
        ``artfs get --as-of``); ``NotFound`` if it named none, or one deleted since."""
        spec = parse_spec(_strip_entity(name), default_project=self.default_project, need_ref=True)
        if as_of is None:
            art = resolve_any(self.store, spec)
        else:
            t = ns_of(as_of) if isinstance(as_of, _dt.datetime) else parse_time(as_of)
            n = timeline(self.store, spec.project, spec.artifact).resolve(spec, t)
            art = Artifact.of_version(self.store, spec.project, spec.artifact, n)
        if type is not None and art.type != type:
            raise NotFound(f"{spec}: has type {art.type!r}, not {type!r}")
        return art

    def artifact_exists(self, name: str, type: str | None = None) -> bool:
        """Whether ``artifact(name, type)`` would find a version."""
        try:
            self.artifact(name, type)
            return True
        except NotFound:
            return False

    def artifacts(self, type_name: str, name: str, per_page: int = 50, order: str | None = None,
                  tags: list[str] | None = None) -> list["Artifact"]:
        """Every existing version of ``[project/]name`` (of type ``type_name``), newest first as
        W&B's server returns them (``order="+createdAt"``: oldest first); ``tags``: only versions
        with all of them. A registry collection's versions are its links."""
        spec = parse_spec(_strip_entity(name), default_project=self.default_project)
        st = self.store
        out: list[Artifact] = []
        if spec.artifact not in st.artifacts(spec.project) and spec.artifact in registry.collections(st, spec.project):
            out = [registry.linked_artifact(st, lk) for lk in registry.links(st, spec.project, spec.artifact)]
        else:
            versions = st.versions(spec.project, spec.artifact)
            if not versions and spec.artifact not in st.artifacts(spec.project):
                raise NotFound(f"{spec.project}/{spec.artifact}: no such artifact in {st.url}")
            for n in versions:
                try:
                    out.append(Artifact.of_version(st, spec.project, spec.artifact, n))
                except NotFound:  # deleted meanwhile
                    continue
        for art in out:
            if art.type != type_name:
                raise NotFound(f"{spec.project}/{spec.artifact} has type {art.type!r}, not {type_name!r}")
        if tags:
            out = [a for a in out if set(tags) <= set(a.tags)]
        return _order(out, order)

    def artifact_versions(self, type_name: str, name: str, per_page: int = 50) -> list["Artifact"]:
        """W&B's older name of :meth:`artifacts`: every version, newest first."""
        return self.artifacts(type_name, name, per_page=per_page)

    def _collections(self, project: str) -> list[ArtifactCollection]:
        st = self.store
        out = []
        for a in st.artifacts(check_name(project.split("/")[-1], "project")):
            versions = st.versions(project, a)
            if versions:
                out.append(ArtifactCollection(self, project, a, st.manifest(project, a, versions[-1]).type))
        for c in registry.collections(st, project):
            live = registry.links(st, project, c, live=False)
            if live:
                out.append(ArtifactCollection(self, project, c, live[0].type))
        return out

    def artifact_types(self, project: str | None = None) -> list[ArtifactType]:
        """The artifact types used in ``project`` (default: the default project)."""
        p = (project or self.default_project).split("/")[-1]
        return [ArtifactType(self, p, t) for t in sorted({c.type for c in self._collections(p)})]

    def artifact_type(self, type_name: str, project: str | None = None) -> ArtifactType:
        """One artifact type of ``project``."""
        return ArtifactType(self, (project or self.default_project).split("/")[-1], type_name)

    def artifact_collections(self, project_name: str, type_name: str, per_page: int = 50,
                             order: str | None = None) -> list[ArtifactCollection]:
        """The artifacts (and registry collections) of one type in a project."""
        return self.artifact_type(type_name, project_name).collections()

    def artifact_collection(self, type_name: str, name: str) -> ArtifactCollection:
        """``"project/name"``: one artifact's (or registry collection's) versions."""
        spec = parse_spec(_strip_entity(name), default_project=self.default_project)
        return self.artifact_type(type_name, spec.project).collection(spec.artifact)

    def artifact_collection_exists(self, name: str, type: str) -> bool:
        """Whether ``artifact_collection(type, name)`` would find it."""
        try:
            self.artifact_collection(type, name)
            return True
        except NotFound:
            return False

    def project(self, name: str, entity: str | None = None) -> Project:
        """A project of the store (W&B's ``Api().project``; ``entity`` is ignored)."""
        return Project(self, name.split("/")[-1])

    def projects(self, entity: str | None = None, per_page: int = 200) -> Iterator[Project]:
        """Every project of the store."""
        return iter([Project(self, p) for p in self.store.projects()])

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every recorded move of the aliases of ``[project/]name`` (or of one alias), oldest first:
        who moved it, when, from which version to which (``artfs alias log``)."""
        spec = parse_spec(_strip_entity(name), default_project=self.default_project)
        return moves(self.store, spec.project, spec.artifact, alias)

    def run(self, path: str) -> Run:
        """``"project/run_id"``: the run, its record read and validated now."""
        project, run_id = parse_run_path(path, default_project=self.default_project)
        return Run(self.store, project, run_id, record=read_record(self.store, project, run_id))

    def runs(self, path: str | None = None, filters: Any = None, order: str | None = None,
             per_page: int = 50) -> list[Run]:
        """The runs of a project (``"project"`` or W&B's ``"entity/project"``)."""
        project = (path or self.default_project).split("/")[-1]
        return [Run(self.store, project, r) for r in list_runs(self.store, project)]
