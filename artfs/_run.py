"""Runs, named after W&B's: ``artfs.init()``, ``Run.log_artifact``/``use_artifact``, the current run.

A run is one step of a pipeline (a process, a command started by ``artfs run``, or a process tree
reading through the mount). It writes its own record and one key per edge (see
:mod:`artfs._lineage`); nothing here ever rewrites an object another run writes.

Joining: ``artfs run -- CMD`` puts ``ARTFS_RUN_ID=<project>/<id>`` in CMD's environment. An
``artfs.init()`` inside CMD (with no other id) joins that run: it writes edges under the same
id but leaves the record to ``artfs run``, its one writer. The mount daemon reads the same
variable from ``/proc/<pid>/environ`` and files what those processes read under that run.

The Run class is meant to be extended: other modules add methods to it (e.g.
``upsert_artifact``/``finish_artifact``); everything they need is on the instance
(``store``, ``project``, ``id``, ``path``, :meth:`Run._edge`).
"""

from __future__ import annotations

import atexit
import getpass
import os
import secrets
import socket
import string
import sys
import threading
from types import TracebackType
from typing import Any

from . import _aliaslog
from ._artifact import Artifact
from ._config import json_friendly, to_dict
from ._errors import AlreadyExists, ArtfsError, InvalidName, NotFound
from ._lineage import (
    RunRecord,
    check_run_id,
    now_iso,
    parse_run_path,
    read_record,
    record_edge,
    run_edges,
    version_edges,
    version_exists,
    version_ref,
    write_record,
)
from ._history import read_summary_doc
from ._names import Spec, check_name, parse_spec
from . import _registry as registry
from ._run_groups import artifact_from, finish_version, group_of
from ._distributed import upsert_artifact
from ._run_metrics import RunData
from ._store import Store

#: the environment variable that names the run a process belongs to (``project/run_id``)
RUN_ENV = "ARTFS_RUN_ID"
DEFAULT_PROJECT = "uncategorized"

_current: "Run | None" = None
_current_lock = threading.Lock()


def _current_run_path() -> str | None:
    """The run an alias move belongs to: the current run, else the one ``artfs run`` names."""
    run = _current
    return run.path if run is not None else os.environ.get(RUN_ENV) or None


_aliaslog.current_run = _current_run_path  # alias moves name the current run (artfs._aliaslog)


def new_run_id() -> str:
    """Eight lowercase letters and digits, like W&B's run ids."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def default_project() -> str:
    return os.environ.get("ARTFS_PROJECT") or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT


def _open_store(store: "Store | str | None") -> "Store":
    if isinstance(store, Store):
        return store
    return Store(store)


def _strip_entity(name: str) -> str:
    """W&B's ``entity/project/name:alias``: artfs has no entities, the first part is dropped."""
    head, sep, ref = name.partition(":")
    parts = head.split("/")
    if len(parts) == 3:
        check_name(parts[0], "entity")
        head = "/".join(parts[1:])
    return head + sep + ref


class Run(RunData):
    """One run: its record, what it used and logged, and (:class:`RunData`) its config and metrics.

    Live runs come from :func:`init`; runs read back (``Api().run``, ``Artifact.used_by``) load
    their record on first use of an attribute that needs it (``used_by`` of a version used by
    10,000 runs lists keys, it does not read 10,000 records).
    """

    def __init__(self, store: "Store", project: str, run_id: str, *, record: RunRecord | None = None,
                 live: bool = False, owner: bool = True) -> None:
        self.store = store
        self.project = check_name(project, "project")
        self.id = check_run_id(run_id)
        self._record = record
        self._live = live
        self._owner = owner  # False when joining a run whose record another process writes
        self._lock = threading.Lock()

    # -- identity ----------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """``project/run_id`` (what ``Api().run`` takes)."""
        return f"{self.project}/{self.id}"

    @property
    def record(self) -> RunRecord:
        """The run's record as stored (read on first use; CorruptData if it was tampered with)."""
        if self._record is None:
            self._record = read_record(self.store, self.project, self.id)
        return self._record

    @property
    def name(self) -> str:
        """The run's display name (its id if it has none)."""
        return self.record.name or self.id

    @property
    def job_type(self) -> str | None:
        """W&B's job type (``train``, ``eval``, ...), or None."""
        return self.record.job_type

    @property
    def group(self) -> str | None:
        """The run's group (distributed writers default to it), or None."""
        return self.record.group

    @property
    def state(self) -> str:
        """``running``, ``finished`` or ``failed``."""
        return self.record.state

    def __repr__(self) -> str:
        return f"<Run {self.path}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and (other.store.url, other.path) == (self.store.url, self.path)

    def __hash__(self) -> int:
        return hash((self.store.url, self.path))

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> "Run":
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.finish(exit_code=0 if et is None else 1)

    def finish(self, exit_code: int | None = None) -> None:
        """End the run: write its final record (state, end time, exit status, inputs, outputs).

        Idempotent. A run that joined another process's run (``ARTFS_RUN_ID``) writes nothing here.
        """
        global _current
        with _current_lock:
            if _current is self:
                _current = None
        with self._lock:
            if not self._live:
                return
            self._live = False
        self._flush_data(final=True)
        if self._owner:
            self.close_record(exit_code if exit_code is not None else 0)

    def close_record(self, exit_code: int) -> None:
        """Write the final record; inputs and outputs are every edge of the run, whoever wrote it."""
        rec = self.record
        doc = read_summary_doc(self.store, self.project, self.id)  # what a process that joined the run set
        if doc and doc.get("config"):
            rec.config.update(doc["config"])
        rec.state = "finished" if exit_code == 0 else "failed"
        rec.exit_status = exit_code
        rec.ended = now_iso()
        rec.inputs = [version_ref(p, a, n) for p, a, n, _ in run_edges(self.store, self.project, self.id, "used")]
        rec.outputs = [version_ref(p, a, n) for p, a, n, _ in run_edges(self.store, self.project, self.id, "logged")]
        write_record(self.store, rec)

    # -- edges -------------------------------------------------------------------------------------
    def _edge(self, kind: str, aproject: str, artifact: str, n: int, role: str | None = None) -> None:
        record_edge(self.store, kind, self.project, self.id, aproject, artifact, n, role=role)

    def _need_live(self, what: str) -> None:
        if not self._live:
            raise ArtfsError(f"run {self.path} is finished (or read back); {what} needs a live run from artfs.init()")

    def log_artifact(self, artifact_or_path: "Artifact | str", name: str | None = None, type: str | None = None,
                     aliases: list[str] | None = None) -> "Artifact":
        """Log a new version (or match identical content) in the run's project, as output of this run.

        Like W&B, a path is accepted too (``name`` defaults to its base name). The artifact
        passed in becomes the logged version (``artifact.version`` is then ``"v3"``) and is returned.
        """
        self._need_live("log_artifact")
        art = artifact_from(artifact_or_path, name, type)
        logged = art.log_to(self.store, self.project, list(aliases or []), run=self.path)
        created = bool(logged.commit_result and logged.commit_result.created)
        self._edge("logged", *logged.coords(), "logger" if created else "matched")
        _become(art, logged)
        return art

    # -- distributed writers (W&B's upsert/finish; the store side is artfs._run_groups) ---------
    def upsert_artifact(self, artifact_or_path: "Artifact | str", name: str | None = None,
                        type: str | None = None, aliases: list[str] | None = None,
                        distributed_id: str | None = None) -> "Artifact":
        """Add the artifact's files to the pending version ``distributed_id`` (default: the run's group).

        Only blobs the store lacks are uploaded; the run's earlier part of that version, if any, is
        replaced. ``aliases`` are given to the version when it is finished. Returns the artifact
        (still a draft: the version exists once ``finish_artifact`` ran).
        """
        self._need_live("upsert_artifact")
        artifact = artifact_from(artifact_or_path, name, type)
        upsert_artifact(self.store, artifact, self.project, group_of(distributed_id, self.group, "upsert_artifact"),
                        writer=self.id, run=self.path, aliases=aliases or [])
        return artifact

    def finish_artifact(self, artifact_or_path: "Artifact | str", name: str | None = None,
                        type: str | None = None, aliases: list[str] | None = None,
                        distributed_id: str | None = None) -> "Artifact":
        """Make the pending version ``distributed_id`` (default: the run's group) from every part, plus
        the artifact's own files, exactly once. The artifact becomes that version and is returned."""
        self._need_live("finish_artifact")
        artifact = artifact_from(artifact_or_path, name, type)
        r, logged = finish_version(self.store, self.project, group_of(distributed_id, self.group, "finish_artifact"),
                                   artifact, run=self.path, aliases=aliases or [])
        self._edge("logged", *logged.coords(), "logger" if r.created else "matched")
        _become(artifact, logged)
        return artifact

    def use_artifact(self, artifact_or_name: "Artifact | str", type: str | None = None,
                     aliases: list[str] | None = None) -> "Artifact":
        """Mark a version as input of this run and return it.

        ``"name:alias"`` is looked up in the run's project, ``"project/name:alias"`` across
        projects (``"entity/project/name:alias"`` too; artfs has no entities). A constructed
        Artifact is logged first if its content is new, and matched otherwise (idempotent).
        """
        self._need_live("use_artifact")
        if isinstance(artifact_or_name, Artifact):
            art = artifact_or_name
            if art.is_draft:
                logged = art.log_to(self.store, self.project, list(aliases or []), run=self.path)
                if logged.commit_result and logged.commit_result.created:
                    self._edge("logged", *logged.coords(), "logger")
                _become(art, logged)
            store, _ = art.logged_in()
            if store.url != self.store.url:
                raise ArtfsError(f"{art.qualified_name} is in {store.url}, not in the run's store {self.store.url}")
        elif isinstance(artifact_or_name, str):
            spec = parse_spec(_strip_entity(artifact_or_name), default_project=self.project, need_ref=True)
            art = resolve_any(self.store, spec)
            if type is not None and art.type != type:
                raise InvalidName(f"{art.qualified_name} has type {art.type!r}, not {type!r}")
        else:
            raise ArtfsError(f"use_artifact takes a name or an Artifact, not {artifact_or_name!r}")
        self._edge("used", *art.source_coords())  # a registry link: its source version is what was used
        return art

    def link_artifact(self, artifact: "Artifact", target_path: str, aliases: list[str] | None = None) -> "Artifact":
        """W&B's model registry: link a version into ``registry/collection`` with ``aliases`` there
        (a draft is logged by this run first). Returns the linked version (``registry/coll:vN``)."""
        self._need_live("link_artifact")
        if artifact.is_draft:
            self.log_artifact(artifact)
        return link_to(artifact, target_path, aliases, run=self.path)

    def link_model(self, path: str, registered_model_name: str, name: str | None = None,
                   aliases: list[str] | None = None) -> "Artifact":
        """W&B's ``link_model``: log the model at ``path`` (type ``model``) and link it into
        ``model-registry/<registered_model_name>``."""
        art = self.log_artifact(path, name=name, type="model")
        return self.link_artifact(art, f"model-registry/{registered_model_name}", aliases)

    def log_model(self, path: str, name: str | None = None, aliases: list[str] | None = None) -> "Artifact":
        """W&B's ``log_model``: ``log_artifact`` of type ``model``."""
        return self.log_artifact(path, name=name, type="model", aliases=aliases)

    def use_model(self, name: str) -> str:
        """W&B's ``use_model``: use the model version and return the directory it was downloaded to."""
        return self.use_artifact(name).download()

    # -- the graph ---------------------------------------------------------------------------------
    def _artifacts(self, kind: str) -> list["Artifact"]:
        out = []
        for p, a, n, _ in run_edges(self.store, self.project, self.id, kind):
            if not version_exists(self.store, p, a, n):  # the cache may still hold its manifest
                continue
            try:
                out.append(Artifact.of_version(self.store, p, a, n))
            except NotFound:  # deleted since: lineage keeps the edge, see lineage_of()
                continue
        return out

    def logged_artifacts(self) -> list["Artifact"]:
        """Versions this run logged (or contributed to through a mount draft) that still exist."""
        return self._artifacts("logged")

    def used_artifacts(self) -> list["Artifact"]:
        """Versions this run used that still exist."""
        return self._artifacts("used")

    def edges(self, kind: str) -> list[dict[str, Any]]:
        """Every edge of ``kind`` (``used``/``logged``) with role and whether the version was deleted."""
        return [{"artifact": version_ref(p, a, n), "role": r or None, "deleted": not version_exists(self.store, p, a, n)}
                for p, a, n, r in run_edges(self.store, self.project, self.id, kind, roles=kind == "logged")]


def _become(art: "Artifact", logged: "Artifact") -> None:
    """Turn the draft ``art`` into the logged version (W&B users keep using the object they logged)."""
    if art is not logged:
        art.__dict__.update(logged.__dict__)


# -- the version side --------------------------------------------------------------------------------
def logged_by(art: "Artifact") -> Run | None:
    """The run that created this version (its ``logger`` edge, else the run its manifest names)."""
    store, m = art.logged_in()
    edges = version_edges(store, *art.source_coords(), "logged", roles=True)
    for rp, rid, role in edges:
        if role == "logger":
            return Run(store, rp, rid)
    if m.run:
        try:
            rp, rid = parse_run_path(m.run)
            return Run(store, rp, rid)
        except InvalidName:
            return None
    return None


def contributors(art: "Artifact") -> list[Run]:
    """Runs that wrote into the draft this version came from, other than its logger."""
    store, _ = art.logged_in()
    edges = version_edges(store, *art.source_coords(), "logged", roles=True)
    return [Run(store, rp, rid) for rp, rid, role in edges if role == "contributor"]


def used_by(art: "Artifact") -> list[Run]:
    """Runs that used this version: one listing of its edges (records are read when needed)."""
    store, _ = art.logged_in()
    return [Run(store, rp, rid) for rp, rid, _ in version_edges(store, *art.source_coords(), "used")]


# -- the current run ---------------------------------------------------------------------------------
def current() -> Run | None:
    return _current


def init(project: str | None = None, job_type: str | None = None, group: str | None = None,
         name: str | None = None, config: Any = None, id: str | None = None,
         store: "Store | str | None" = None, resume: str | bool | None = None,
         config_exclude_keys: list[str] | None = None, config_include_keys: list[str] | None = None,
         **wandb_options: Any) -> Run:
    """Start a run (W&B's ``wandb.init``); it becomes the current run until ``finish()``.

    Inside ``artfs run`` (``ARTFS_RUN_ID`` set) and with no other ``id``, the run of that command
    is joined. With an ``id`` whose record exists, that run is resumed (W&B's ``resume="allow"``).
    W&B options that have no meaning here (``entity``, ``tags``, ``notes``, ``reinit``, ``mode``,
    ...) are accepted and ignored, so scripts port unchanged. ``config`` is a dict, an
    ``argparse.Namespace``, a ``SimpleNamespace`` or a YAML/JSON file name (see :mod:`artfs._config`).
    A run not finished when the process exits is finished then (failed if an exception ended it).
    """
    cfg = {k.strip("-"): json_friendly(v) for k, v in to_dict(config).items()}
    if config_include_keys:
        cfg = {k: v for k, v in cfg.items() if k in config_include_keys}
    if config_exclude_keys:
        cfg = {k: v for k, v in cfg.items() if k not in config_exclude_keys}
    config = cfg
    st = _open_store(store)
    project = check_name(project or default_project(), "project")
    previous = _current
    if previous is not None:
        previous.finish()
    owner, resumed = True, False
    record: RunRecord | None = None
    env = os.environ.get(RUN_ENV)
    if id is None and env:
        ep, eid = parse_run_path(env)
        if ep == project or project == default_project():
            project, id, owner = ep, eid, False
    if id is not None:
        check_run_id(id)
        if not owner:
            try:
                record = read_record(st, project, id)
            except NotFound:
                record = None
        else:
            try:
                record = read_record(st, project, id)  # resume
                record.state, record.ended, record.exit_status = "running", None, None
                record.config.update(config)
                write_record(st, record)
                resumed = True
            except NotFound:
                record = None
    if record is None:
        if owner:
            return _make_current(start_run(st, project, name=name, job_type=job_type, group=group, config=config,
                                           run_id=id), resumed=False)
        record = RunRecord(id=id or new_run_id(), project=project, name=name, job_type=job_type, group=group,
                           config=dict(config), started=now_iso())
    elif not owner and config:
        record.config.update(config)
    return _make_current(Run(st, project, record.id, record=record, live=True, owner=owner), resumed=resumed)


def _make_current(run: Run, *, resumed: bool) -> Run:
    global _current, _atexit_registered
    run._start_data(resume=resumed)
    run.resumed = resumed
    with _current_lock:
        _current = run
        if not _atexit_registered:
            atexit.register(_finish_at_exit)
            _atexit_registered = True
    return run


_atexit_registered = False


def _finish_at_exit() -> None:
    """W&B finishes the run when the script ends; an uncaught exception (``sys.last_value``,
    set when the interpreter printed its traceback) marks it failed."""
    run = _current
    if run is not None:
        run.finish(exit_code=1 if getattr(sys, "last_value", None) is not None else 0)


def start_run(store: "Store", project: str, *, name: str | None = None, job_type: str | None = None,
              group: str | None = None, config: dict[str, Any] | None = None, run_id: str | None = None,
              source: str = "api", command: list[str] | None = None, pid: int | None = None,
              replay_of: str | None = None) -> Run:
    """Create a run's record (exclusively: a new id never takes over another run) and return it live.

    With an explicit ``run_id`` created by another process at the same moment, that run is joined.
    """
    check_name(project, "project")
    rec = RunRecord(id=check_run_id(run_id) if run_id else new_run_id(), project=project, name=name,
                    job_type=job_type, group=group, config=json_friendly(dict(config or {})),
                    command=list(sys.argv if command is None else command), cwd=os.getcwd(),
                    host=socket.gethostname(), user=_user(), pid=os.getpid() if pid is None else pid,
                    source=source, started=now_iso(), replay_of=replay_of)
    while True:
        try:
            write_record(store, rec, exclusive=True)
            break
        except AlreadyExists:
            if run_id is not None:
                rec = read_record(store, project, run_id)
                break
            rec.id = new_run_id()
    return Run(store, project, rec.id, record=rec, live=True)


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _need_current(what: str) -> Run:
    run = _current
    if run is None:
        raise ArtfsError(f"call artfs.init() before artfs.{what}()")
    return run


def log_artifact(artifact_or_path: "Artifact | str", name: str | None = None, type: str | None = None,
                 aliases: list[str] | None = None) -> "Artifact":
    """``Run.log_artifact`` of the current run."""
    return _need_current("log_artifact").log_artifact(artifact_or_path, name, type, aliases)


def use_artifact(artifact_or_name: "Artifact | str", type: str | None = None,
                 aliases: list[str] | None = None) -> "Artifact":
    """``Run.use_artifact`` of the current run."""
    return _need_current("use_artifact").use_artifact(artifact_or_name, type, aliases)


# -- the registry (artfs._registry) ----------------------------------------------------------------
def resolve_any(store: "Store", spec: Spec) -> "Artifact":
    """The version a spec names: an artifact's, else a registry collection's link."""
    try:
        return Artifact.of_version(store, *store.resolve(spec))
    except NotFound:
        if spec.artifact not in registry.collections(store, spec.project):
            raise
    return registry.linked_artifact(store, registry.resolve(store, spec.project, spec.artifact, spec.version,
                                                            spec.alias))


def link_to(art: "Artifact", target_path: str, aliases: list[str] | None, run: str | None = None) -> "Artifact":
    """``Artifact.link``: a draft is saved (logged) first; a link is linked as its source."""
    if art.is_draft:
        art.save()
    store, _ = art.logged_in()
    if run is None and _current is not None and _current.store.url == store.url:
        run = _current.path
    project, collection = registry.parse_target(target_path, art.project or default_project())
    source = art.source_coords()
    lk = registry.link(store, source, art.type, project, collection, list(aliases or []), run=run)
    return registry.linked_artifact(store, lk)


def _link_of(art: "Artifact") -> registry.Link:
    store, _ = art.logged_in()
    return registry.read_link(store, *art.coords())


def save_link(art: "Artifact", saved: list[str]) -> list[str]:
    """``save()`` of a linked version: aliases are the collection's (``saved``: those it had when
    loaded or last saved), description and metadata the source's. Returns the link's aliases now."""
    store, _ = art.logged_in()
    lk = _link_of(art)
    src = source_of(art)
    if (src.description, src.metadata, src.tags, src.ttl) != (art.description, art.metadata, art.tags, art.ttl):
        src.description, src.metadata, src.tags, src.ttl = art.description, art.metadata, art.tags, art.ttl
        src.save()
    new = list(dict.fromkeys(art.aliases))
    for a in new:
        if a not in saved:
            registry.set_alias(store, lk.project, lk.collection, a, lk.n)
    for a in saved:
        if a not in new and a != "latest":
            registry.remove_alias(store, lk.project, lk.collection, a)
    return sorted(a for a, v in registry.aliases(store, lk.project, lk.collection).items() if v == lk.n)


def source_of(art: "Artifact") -> "Artifact":
    store, _ = art.logged_in()
    return Artifact.of_version(store, *art.source_coords())


def unlink_version(art: "Artifact") -> None:
    store, _ = art.logged_in()
    registry.unlink(store, _link_of(art))


def links_of(art: "Artifact") -> list[str]:
    store, _ = art.logged_in()
    return registry.links_of_version(store, *art.source_coords())


def link_artifact(artifact: "Artifact", target_path: str, aliases: list[str] | None = None) -> "Artifact":
    """``Run.link_artifact`` of the current run."""
    return _need_current("link_artifact").link_artifact(artifact, target_path, aliases)


def save_draft(art: "Artifact", project: str | None) -> None:
    """``Artifact.save()`` of a draft (W&B): logged by the current run, else by a run of job type
    ``auto`` made for it in ``project``."""
    run = _current
    if run is not None:
        run.log_artifact(art)
        return
    with init(project=project, job_type="auto") as auto:
        auto.log_artifact(art)


def finish(exit_code: int | None = None) -> None:
    """Finish the current run (nothing to do without one)."""
    run = _current
    if run is not None:
        run.finish(exit_code)
