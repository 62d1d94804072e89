"""Aliases and their history: every move of an alias is one object, written once, never rewritten.

``Store.set_alias``/``remove_alias``/``rename_alias`` and a deletion's removal of the aliases of
the version it deletes come here. Each move first creates its record (exclusively, under a key
no other writer can make: the time in nanoseconds and a random tag)::

    <project>/aliases-log/<artifact>/<alias>/<time-ns, 20 digits>-<random>.json
    {"format": 1, "project", "artifact", "alias", "action": "set" | "remove", "from": N | null,
     "to": N | null, "time": ISO 8601 (UTC, µs), "time_ns", "user", "host", "pid", "run": "p/id" | null,
     "reason": null | "v3 deleted"}

then writes the alias file itself. Writers on many machines therefore never read, change and
write back a shared object: no move is lost however many race (each has its own key), and a
listing of the prefix, in key order, is the history in time order.

What this does not decide:

* ``from`` is the alias as the mover read it just before; two movers racing may both name the
  same ``from``. Informational only: the answer to "where did it point" comes from ``to``.
* The order of two moves of one alias a few milliseconds apart on different machines is their
  clocks' (the records'), while the alias file keeps whichever write reached the store last; the
  two can disagree for moves closer together than the clocks' skew plus a request's time.
* A record whose alias write then fails is removed again (best effort); a process killed in
  between leaves a record of a move that did not happen.
* The automatic ``latest`` (the highest version, no alias file) is not recorded on commit: where
  it pointed follows from the versions' creation and deletion times (:mod:`artfs._asof`), and so
  does the end of an explicit ``latest``, which logging a new version clears.

Records are read back as untrusted input: one that does not parse, or whose alias or time does
not match its key, is skipped.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import _layout as L
from ._errors import ArtfsError, InvalidName, NotFound, PermissionDenied
from ._index import update_index
from ._names import check_alias, check_name
from ._parallel import STORE_WORKERS, pmap

if TYPE_CHECKING:
    from ._store import Store

log = logging.getLogger("artfs")

FORMAT = 1
ACTIONS = ("set", "remove")


def _env_run() -> str | None:
    return os.environ.get("ARTFS_RUN_ID") or None


#: the run a move belongs to when the mover names none: ``project/run_id``. ``artfs._run`` (above
#: this module) replaces it with one that also knows the process's current ``artfs.init()`` run.
current_run: Callable[[], str | None] = _env_run


@dataclass(frozen=True)
class AliasMove:
    """One recorded move of an alias: ``action`` ``set`` (to ``to``) or ``remove``; ``from_`` is
    where the mover saw it before (None: nowhere). ``time`` is ISO 8601 UTC, ``time_ns`` the same."""

    project: str
    artifact: str
    alias: str
    action: str
    from_: int | None
    to: int | None
    time: str
    time_ns: int
    user: str | None = None
    host: str | None = None
    pid: int | None = None
    run: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as stored (and as ``artfs alias log --json`` prints it)."""
        d = asdict(self)
        head = {k: d.pop(k) for k in ("project", "artifact", "alias", "action")}
        return {"format": FORMAT, **head, "from": d.pop("from_"), **d}

    @classmethod
    def from_json(cls, doc: Any, *, project: str, artifact: str, alias: str, time_ns: int) -> "AliasMove | None":
        """A record read back, checked against its key; None when it is not a valid one."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            return None

        def version(v: Any) -> bool:
            return v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)

        def text(v: Any) -> bool:
            return v is None or isinstance(v, str)

        ok = (doc.get("project") == project and doc.get("artifact") == artifact and doc.get("alias") == alias
              and doc.get("time_ns") == time_ns and doc.get("action") in ACTIONS
              and version(doc.get("from")) and version(doc.get("to")) and isinstance(doc.get("time"), str)
              and all(text(doc.get(k)) for k in ("user", "host", "run", "reason"))
              and (doc.get("pid") is None or isinstance(doc.get("pid"), int))
              and (doc.get("action") != "set" or doc.get("to") is not None))
        if not ok:
            return None
        return cls(project, artifact, alias, doc["action"], doc.get("from"), doc.get("to"), doc["time"], time_ns,
                   doc.get("user"), doc.get("host"), doc.get("pid"), doc.get("run"), doc.get("reason"))


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def iso_ns(t_ns: int) -> str:
    """A time in ns since the epoch as ISO 8601 UTC with microseconds (``...T12:00:00.123456Z``)."""
    dt = _dt.datetime.fromtimestamp(t_ns // 1000 / 1e6, _dt.timezone.utc)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


def record(store: Store, project: str, artifact: str, alias: str, action: str, old: int | None, new: int | None,
           *, run: str | None = None, reason: str | None = None) -> str:
    """Create the record of one move (exclusively, under a key of its own); returns its key."""
    t = time.time_ns()
    move = AliasMove(project, artifact, alias, action, old, new, iso_ns(t), t, _user(), socket.gethostname(),
                     os.getpid(), run or current_run(), reason)
    key = L.alias_log_key(project, artifact, alias, t, secrets.token_hex(6))
    store.backend.put(key, json.dumps(move.to_json(), ensure_ascii=False).encode(), exclusive=True)
    return key


def _current(store: Store, project: str, artifact: str, alias: str) -> int | None:
    """Where ``alias`` points now, as a mover sees it (the automatic ``latest``: the highest version)."""
    try:
        return int(store.backend.get(L.alias_key(project, artifact, alias)).decode().strip())
    except (NotFound, ValueError):
        pass
    if alias == "latest":
        versions = store.versions(project, artifact)
        return versions[-1] if versions else None
    return None


def _move(store: Store, project: str, artifact: str, alias: str, action: str, old: int | None, new: int | None,
          write: Callable[[], None], *, run: str | None = None, reason: str | None = None) -> None:
    """Record the move, then make it; a move that fails takes its record back (best effort).

    A store that lets a writer create the record but refuses the move and the record's removal
    (a policy that grants exclusive creates only; moto lets an unsigned conditional PUT through
    where it refuses a plain one) keeps a record of a move that did not happen, as a crash between
    the two writes does. The refusal itself is what the caller reports; the stale record is logged
    at info level (``--debug`` shows it), not as a second error line of a refused command.
    """
    key = record(store, project, artifact, alias, action, old, new, run=run, reason=reason)
    try:
        write()
    except BaseException as failed:
        try:
            store.backend.delete(key)
        except ArtfsError as e:
            level = logging.INFO if isinstance(failed, PermissionDenied) else logging.WARNING
            log.log(level, "%s/%s:%s: the record of a failed move stays (%s)", project, artifact, alias, e)
        raise


def set_alias(store: Store, project: str, artifact: str, alias: str, n: int, *, run: str | None = None) -> None:
    """Point ``alias`` at vN (moving it if it exists), recorded; ``NotFound`` if vN does not exist."""
    check_alias(alias)
    if not store.backend.exists(L.version_key(project, artifact, n)):
        raise NotFound(f"{project}/{artifact}:v{n}: no such version")
    old = _current(store, project, artifact, alias)
    _move(store, project, artifact, alias, "set", old, n,
          lambda: store.backend.put(L.alias_key(project, artifact, alias), str(n).encode()), run=run)
    update_index(store, project, artifact)


def remove_alias(store: Store, project: str, artifact: str, alias: str, *, reason: str | None = None,
                 index: bool = True) -> None:
    """Remove an alias, recorded; ``NotFound`` if there is none, ``InvalidName`` for the automatic ``latest``."""
    check_alias(alias)
    key = L.alias_key(project, artifact, alias)
    try:
        old: int | None = int(store.backend.get(key).decode().strip())
    except NotFound:
        if alias == "latest":
            raise InvalidName("'latest' is automatic; it can be moved but not removed") from None
        raise NotFound(f"{project}/{artifact}:{alias}: no such alias") from None
    except ValueError:
        old = None
    _move(store, project, artifact, alias, "remove", old, None, lambda: store.backend.delete(key), reason=reason)
    if index:
        update_index(store, project, artifact)


def moves(store: Store, project: str, artifact: str, alias: str | None = None) -> list[AliasMove]:
    """Every recorded move of the artifact's aliases (or of one), oldest first."""
    check_name(project, "project")
    check_name(artifact, "artifact")
    if alias is not None:
        check_alias(alias)
    keys = []
    for o in store.backend.list(L.alias_log_prefix(project, artifact, alias)):
        parsed = L.parse_alias_log_key(project, artifact, o.key)
        if parsed is not None and (alias is None or parsed[0] == alias):
            keys.append((parsed[1], o.key, parsed[0]))
    keys.sort()

    def read(item: tuple[int, str, str]) -> AliasMove | None:
        t, key, name = item
        try:
            doc = json.loads(store.backend.get(key))
        except (NotFound, ValueError):
            return None
        m = AliasMove.from_json(doc, project=project, artifact=artifact, alias=name, time_ns=t)
        if m is None:
            log.warning("%s: not a valid record of an alias move; ignoring it", key)
        return m

    return [m for m in pmap(read, keys, STORE_WORKERS) if m is not None]
