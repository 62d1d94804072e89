"""Lineage in the store: run records and the edges between runs and versions.

Store layout (spelled by the ``run*``/``version_edge*`` functions of :mod:`artfs._layout`)::

    <rp>/runs/<run-id>/run.json                          the run record, written only by its run
    <rp>/runs/<run-id>/used/<ap>/<artifact>/<N>          run -> version it used     (run side)
    <rp>/runs/<run-id>/logged/<ap>/<artifact>/<N>        run -> version it logged   (run side)
    <ap>/lineage/used/<artifact>/<N>/<rp>/<run-id>       version -> run that used it (artifact side)
    <ap>/lineage/logged/<artifact>/<N>/<rp>/<run-id>     version -> run that logged it (artifact side)

``rp`` is the run's project, ``ap`` the artifact's (a run may use artifacts of other projects).

Invariants
* No object is ever read, changed and written back. Each key has exactly one writer: the run
  record belongs to its run, and every edge is its own key whose content is the same whoever
  writes it (the processes of one run may write the same edge twice; that is harmless). So runs
  on many machines record lineage at once on S3 without losing an edge.
* ``used_by`` / ``logged_by`` of a version list ``<ap>/lineage/{used,logged}/<artifact>/<N>/``:
  the cost is proportional to that version's edges, never to the number of runs.
* An edge is written run side first, then artifact side. A crash in between leaves a run that
  lists a version whose ``used_by`` misses the run (never the reverse); the run record, written
  at finish, lists the run's inputs and outputs too.
* Deleting a version removes none of this: the runs keep their edges and show the version as
  deleted (its manifest is gone, its ``deleted/<N>`` tombstone stays).
* Everything read back is validated like a manifest: names in keys are checked (a key that does
  not parse is ignored, it cannot name a path outside its prefix), a run record must be a JSON
  object of the expected format whose id and project match its key (CorruptData otherwise).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import CorruptData, InvalidName, NotFound
from ._layout import run_edge_key, run_edges_prefix, run_key, run_prefix, runs_prefix, version_edge_key
from ._layout import version_edges_prefix, version_key
from ._names import check_name

if TYPE_CHECKING:
    from ._store import Store

RUN_FORMAT = "artfs.run/1"
#: how a run came to touch a version it logged: it created it, it wrote into the draft the version
#: came from (but another run is the logger), or it logged content identical to an existing version
ROLES = ("logger", "contributor", "matched")
STATES = ("running", "finished", "failed", "crashed")

_RUN_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_run_id(run_id: object) -> str:
    """Run ids: letters, digits, ``_`` and ``-`` (no ``.``, so never ``..``), at most 64 characters."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise InvalidName(f"invalid run id {run_id!r}: use letters, digits, '_' and '-', at most 64 characters")
    return run_id


def parse_run_path(path: str, *, default_project: str | None = None) -> tuple[str, str]:
    """``project/run_id`` (or ``entity/project/run_id``, W&B's spelling; the entity is ignored)."""
    if not isinstance(path, str) or not path:
        raise InvalidName(f"invalid run {path!r}: expected PROJECT/RUN_ID")
    parts = path.split("/")
    if len(parts) == 3:
        check_name(parts[0], "entity")
        parts = parts[1:]
    if len(parts) == 1 and default_project:
        parts = [default_project, parts[0]]
    if len(parts) != 2:
        raise InvalidName(f"invalid run {path!r}: expected PROJECT/RUN_ID")
    return check_name(parts[0], "project"), check_run_id(parts[1])


# -- records ------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """What a run wrote about itself. ``inputs``/``outputs``: ``project/artifact:vN`` strings."""

    id: str
    project: str
    name: str | None = None
    job_type: str | None = None
    group: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    cwd: str | None = None
    host: str | None = None
    user: str | None = None
    pid: int | None = None
    source: str = "api"  # api | cli | mount
    state: str = "running"
    started: str = ""
    ended: str | None = None
    exit_status: int | None = None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    replay_of: str | None = None  # ``project/run_id`` of the run this one replays (``artfs replay``)

    def to_bytes(self) -> bytes:
        doc = {"format": RUN_FORMAT, **self.__dict__}
        return json.dumps(doc, ensure_ascii=False, indent=1, default=str).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, project: str, run_id: str) -> "RunRecord":
        """Parse and validate a record read back from a store (untrusted, like a manifest)."""
        where = run_prefix(project, run_id)
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptData(f"{where}: run record is not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
            raise CorruptData(f"{where}: unknown run record format")
        if doc.get("id") != run_id or doc.get("project") != project:
            raise CorruptData(f"{where}: record names run {doc.get('project')!r}/{doc.get('id')!r}")

        def opt_str(k: str) -> str | None:
            v = doc.get(k)
            if v is not None and not isinstance(v, str):
                raise CorruptData(f"{where}: {k} is not a string")
            return v

        def int_or_none(k: str) -> int | None:
            v = doc.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise CorruptData(f"{where}: {k} is not an integer")
            return v

        def specs(k: str) -> list[str]:
            v = doc.get(k) or []
            if not isinstance(v, list):
                raise CorruptData(f"{where}: {k} is not a list")
            for s in v:
                try:
                    parse_version_ref(s)
                except InvalidName:
                    raise CorruptData(f"{where}: {k} names {s!r}, not PROJECT/ARTIFACT:vN") from None
            return list(v)

        command = doc.get("command") or []
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
            raise CorruptData(f"{where}: command is not a list of strings")
        config = doc.get("config") or {}
        if not isinstance(config, dict):
            raise CorruptData(f"{where}: config is not an object")
        state = doc.get("state")
        if state not in STATES:
            raise CorruptData(f"{where}: unknown state {state!r}")
        return cls(
            id=run_id, project=project, name=opt_str("name"), job_type=opt_str("job_type"),
            group=opt_str("group"), config=config, command=command, cwd=opt_str("cwd"), host=opt_str("host"),
            user=opt_str("user"), pid=int_or_none("pid"), source=opt_str("source") or "api", state=state,
            started=opt_str("started") or "", ended=opt_str("ended"), exit_status=int_or_none("exit_status"),
            inputs=specs("inputs"), outputs=specs("outputs"), replay_of=opt_str("replay_of"),
        )


def parse_version_ref(s: object) -> tuple[str, str, int]:
    """``project/artifact:vN`` -> (project, artifact, N); InvalidName otherwise."""
    if not isinstance(s, str):
        raise InvalidName(f"invalid version {s!r}")
    m = re.fullmatch(r"([^/:]+)/([^/:]+):v(0|[1-9][0-9]{0,17})", s)
    if not m:
        raise InvalidName(f"invalid version {s!r}: expected PROJECT/ARTIFACT:vN")
    return check_name(m.group(1), "project"), check_name(m.group(2), "artifact"), int(m.group(3))


def version_ref(project: str, artifact: str, n: int) -> str:
    return f"{project}/{artifact}:v{n}"


# -- reading and writing ------------------------------------------------------------------------------
def write_record(store: "Store", rec: RunRecord, *, exclusive: bool = False) -> None:
    """Write a run record (``exclusive``: create it, AlreadyExists if it is there). Records and
    edges go through ``put_small``: on S3 a plain signed PUT, so a worker process that only
    records what it reads never loads boto3."""
    store.backend.put_small(run_key(rec.project, rec.id), rec.to_bytes(), exclusive=exclusive)


def read_record(store: "Store", project: str, run_id: str) -> RunRecord:
    check_name(project, "project")
    check_run_id(run_id)
    try:
        data = store.backend.get(run_key(project, run_id))
    except NotFound:
        raise NotFound(f"{project}/{run_id}: no such run in {store.url}") from None
    return RunRecord.from_bytes(data, project, run_id)


def record_edge(store: "Store", kind: str, project: str, run_id: str, aproject: str, artifact: str, n: int,
                *, role: str | None = None) -> None:
    """Write one edge, run side then artifact side (see the module's invariants)."""
    assert kind in ("used", "logged")
    body = json.dumps({"role": role} if role else {}).encode()
    store.backend.put_small(run_edge_key(project, run_id, kind, aproject, artifact, n), body)
    store.backend.put_small(version_edge_key(aproject, artifact, n, kind, project, run_id), body)


def _role(store: "Store", key: str) -> str:
    try:
        doc = json.loads(store.backend.get(key) or b"{}")
    except NotFound:
        return "logger"
    except (ValueError, UnicodeDecodeError):
        raise CorruptData(f"{key}: lineage edge is not valid JSON") from None
    role = doc.get("role", "logger") if isinstance(doc, dict) else None
    if role not in ROLES:
        raise CorruptData(f"{key}: unknown role {role!r}")
    return str(role)


def version_edges(store: "Store", aproject: str, artifact: str, n: int, kind: str,
                  *, roles: bool = False) -> list[tuple[str, str, str]]:
    """(run project, run id, role) of every edge of vN of ``kind``; keys that do not parse are ignored."""
    prefix = version_edges_prefix(aproject, artifact, n, kind)
    out = []
    for o in store.backend.list(prefix):
        parts = o.key[len(prefix):].split("/")
        if len(parts) != 2 or not _ok(parts[0], parts[1]):
            continue
        out.append((parts[0], parts[1], _role(store, o.key) if roles else ""))
    return sorted(out)


def run_edges(store: "Store", project: str, run_id: str, kind: str,
              *, roles: bool = False) -> list[tuple[str, str, int, str]]:
    """(artifact project, artifact, N, role) of every edge of a run of ``kind``."""
    prefix = run_edges_prefix(project, run_id, kind)
    out = []
    for o in store.backend.list(prefix):
        parts = o.key[len(prefix):].split("/")
        if len(parts) != 3 or not parts[2].isdigit() or not _ok(parts[0], None, parts[1]):
            continue
        out.append((parts[0], parts[1], int(parts[2]), _role(store, o.key) if roles else ""))
    return sorted(out)


def logger_of_version(store: "Store", aproject: str, artifact: str, n: int) -> str | None:
    """``project/run_id`` of the run that logged vN: its ``logger`` edge, else what its manifest names."""
    for rp, rid, role in version_edges(store, aproject, artifact, n, "logged", roles=True):
        if role == "logger":
            return f"{rp}/{rid}"
    try:
        run = store.manifest(aproject, artifact, n).run
    except NotFound:
        return None
    try:
        return "/".join(parse_run_path(run)) if run else None
    except InvalidName:
        return None


def list_runs(store: "Store", project: str) -> list[str]:
    check_name(project, "project")
    dirs = store.backend.list_dirs(runs_prefix(project))
    return sorted(r for r in dirs if _ok(None, r))


def version_exists(store: "Store", aproject: str, artifact: str, n: int) -> bool:
    """Whether vN's manifest is in the store (not whether a cache still holds it: it may be deleted)."""
    return store.backend.exists(version_key(aproject, artifact, n))


def _ok(project: str | None, run_id: str | None, artifact: str | None = None) -> bool:
    try:
        if project is not None:
            check_name(project, "project")
        if artifact is not None:
            check_name(artifact, "artifact")
        if run_id is not None:
            check_run_id(run_id)
        return True
    except InvalidName:
        return False
