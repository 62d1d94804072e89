"""The store as it was at a time: which versions existed, and where every alias pointed.

An artifact's :class:`Timeline` is built from what the store keeps anyway, plus the history of
aliases (:mod:`artfs._aliaslog`):

* a version existed from its creation (its manifest's ``created``; a deleted version's tombstone
  keeps the same ``created``) until its deletion (the tombstone's ``deleted``; a tombstone written
  before that field existed: the tombstone object's modification time in the store);
* an alias pointed where its last recorded move before the time put it (nowhere after a
  ``remove``); before its first recorded move, where that move found it (``from``). An alias with
  no record at all (set before its history was kept) is taken to have pointed where it points
  now ever since that version was created. An alias of a version that did not exist at the time
  is not shown, as :meth:`Store.aliases` drops aliases of deleted versions;
* the automatic ``latest`` is the highest version that existed. An explicit ``latest`` counts
  from its recorded ``set`` until a newer version was created (logging a version clears it) or
  it was removed; an explicit ``latest`` with no record, from the newest version's creation.

Times are the writers' clocks (a commit's, a mover's): an answer about a moment within the
clock skew between two machines of an event may place that event on either side of it.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import _layout as L
from ._aliaslog import AliasMove, iso_ns, moves
from ._errors import InvalidName, NotFound
from ._names import Spec
from ._parallel import STORE_WORKERS, pmap

if TYPE_CHECKING:
    from ._store import Store

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def ns_of(dt: _dt.datetime) -> int:
    """An aware datetime as integer nanoseconds since the epoch (exact: no float on the way)."""
    return (dt - _EPOCH) // _dt.timedelta(microseconds=1) * 1000


def parse_time(text: str) -> int:
    """ISO 8601 (``2026-11-30T12:00Z``, ``2026-11-30T13:00:00.5+01:00``, ``2026-11-30``) as ns since
    the epoch; without a zone, the local time (as ``date`` and ``artfs ls`` print times).
    ``InvalidName`` for anything else."""
    s = text.strip()
    try:
        dt = _dt.datetime.fromisoformat(s[:-1] + "+00:00" if s[-1:] in "zZ" and s else s)
    except ValueError:
        raise InvalidName(f"{text!r}: not an ISO 8601 time (e.g. 2026-11-30T12:00Z, "
                          "2026-11-30T12:00:00+01:00)") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time
    return ns_of(dt)


def _iso_ns(text: object) -> int | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_time(text)
    except InvalidName:
        return None


@dataclass(frozen=True)
class VersionSpan:
    """When vN existed: from ``created_ns`` until ``deleted_ns`` (None: it exists now)."""

    n: int
    created_ns: int
    deleted_ns: int | None = None

    def existed(self, t: int) -> bool:
        """Whether vN existed at ``t`` (ns)."""
        return self.created_ns <= t and (self.deleted_ns is None or t < self.deleted_ns)


@dataclass
class Timeline:
    """What an artifact's versions and aliases were at any time (see the module's docstring)."""

    project: str
    artifact: str
    spans: dict[int, VersionSpan]
    moves: list[AliasMove]
    now: dict[str, int] = field(default_factory=dict)  # the alias files as they are (``latest`` when explicit)

    def versions_at(self, t: int) -> list[int]:
        """The versions that existed at ``t``, ascending (some may have been deleted since)."""
        return sorted(n for n, s in self.spans.items() if s.existed(t))

    def _existed(self, n: int | None, t: int) -> bool:
        return n is not None and n in self.spans and self.spans[n].existed(t)

    def _of(self, alias: str) -> list[AliasMove]:
        return [m for m in self.moves if m.alias == alias]

    def latest_at(self, t: int) -> int | None:
        """Where ``latest`` pointed at ``t``."""
        ms = self._of("latest")
        past = [m for m in ms if m.time_ns <= t]
        explicit: tuple[int, int] | None = None
        if past:
            last = past[-1]
            if last.action == "set" and last.to is not None:
                explicit = (last.to, last.time_ns)
        elif not ms and "latest" in self.now and self.spans:
            explicit = (self.now["latest"], max(s.created_ns for s in self.spans.values()))
        if explicit is not None:
            k, since = explicit
            cleared = any(since < s.created_ns <= t for s in self.spans.values())
            if not cleared and self._existed(k, t):
                return k
        existing = self.versions_at(t)
        return existing[-1] if existing else None

    def alias_at(self, alias: str, t: int) -> int | None:
        """Where ``alias`` pointed at ``t`` (None: nowhere, or at a version that did not exist then)."""
        if alias == "latest":
            return self.latest_at(t)
        ms = self._of(alias)
        past = [m for m in ms if m.time_ns <= t]
        if past:
            k = past[-1].to if past[-1].action == "set" else None
        elif ms:
            k = ms[0].from_
        else:
            k = self.now.get(alias)
        return k if self._existed(k, t) else None

    def aliases_at(self, t: int) -> dict[str, int]:
        """Alias -> version at ``t``, including ``latest`` (as :meth:`Store.aliases` now)."""
        names = {m.alias for m in self.moves} | set(self.now) | {"latest"}
        out = {}
        for a in sorted(names):
            k = self.alias_at(a, t)
            if k is not None:
                out[a] = k
        return out

    def resolve(self, s: Spec, t: int) -> int:
        """The version ``s`` named at ``t``; ``NotFound`` if it named none, or one deleted since."""
        when = iso_ns(t)
        if s.version is not None:
            n: int | None = s.version
            if not self._existed(n, t):
                raise NotFound(f"{s}: did not exist at {when}")
        else:
            alias = s.alias or "latest"
            n = self.alias_at(alias, t)
            if n is None:
                raise NotFound(f"{self.project}/{self.artifact}:{alias}: no such alias at {when}")
        assert n is not None
        gone = self.spans[n].deleted_ns
        if gone is not None:
            raise NotFound(f"{s} was {self.project}/{self.artifact}:v{n} at {when}, deleted since "
                           f"(at {iso_ns(gone)}): its files are gone")
        return n


def timeline(store: Store, project: str, artifact: str) -> Timeline:
    """The timeline of ``project/artifact``: its manifests' and tombstones' times, its alias history."""
    versions = store.versions(project, artifact)
    created = pmap(lambda n: _iso_ns(store.manifest(project, artifact, n).created), versions, STORE_WORKERS)
    spans = {n: VersionSpan(n, c if c is not None else 0) for n, c in zip(versions, created)}
    tombs = [(o.key, o.mtime) for o in store.backend.list(L.deleted_prefix(project, artifact))
             if o.key.rsplit("/", 1)[-1].isdigit()]

    def tomb(item: tuple[str, float]) -> VersionSpan | None:
        key, mtime = item
        n = int(key.rsplit("/", 1)[-1])
        try:
            doc = json.loads(store.backend.get(key))
        except (NotFound, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        c = _iso_ns(doc.get("created"))
        d = _iso_ns(doc.get("deleted"))
        if c is None:
            return None
        return VersionSpan(n, c, d if d is not None else int(mtime * 1e9))

    for span in pmap(tomb, tombs, STORE_WORKERS):
        if span is not None and span.n not in spans:
            spans[span.n] = span
    now = {a: n for a, n in store.aliases(project, artifact, versions=versions).items()
           if a != "latest" or store.backend.exists(L.alias_key(project, artifact, "latest"))}
    return Timeline(project, artifact, spans, moves(store, project, artifact), now)


def latest_changes(tl: Timeline) -> list[tuple[int, int | None, int | None, str]]:
    """Every change of where ``latest`` pointed, (time, from, to, cause) oldest first: the causes
    are ``vN logged``, ``vN deleted`` and the recorded moves of ``latest`` (``set``, ``remove``)."""
    events: list[tuple[int, str]] = []
    for s in tl.spans.values():
        events.append((s.created_ns, f"v{s.n} logged"))
        if s.deleted_ns is not None:
            events.append((s.deleted_ns, f"v{s.n} deleted"))
    events += [(m.time_ns, f"latest {m.action}") for m in tl.moves if m.alias == "latest"]
    out: list[tuple[int, int | None, int | None, str]] = []
    prev: int | None = None
    for t, cause in sorted(events):
        now = tl.latest_at(t)
        if now != prev:
            out.append((t, prev, now, cause))
            prev = now
    return out
