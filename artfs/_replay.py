"""What a past run read, as a view to mount again: ``artfs mount --run`` and ``artfs replay``.

A run's inputs are its ``used`` edges (and the ``inputs`` of its record): the versions it read,
through the API or through a mount (:mod:`artfs._lineage`). Which *alias* it read them through is
not recorded (a read of ``latest/x`` reaches the daemon as a read of ``vN/x``), so the view pins
each alias by time: an alias is shown, pointing at a version the run used, if it pointed at that
version when the run started or when it ended (:mod:`artfs._asof`); an alias that pointed at no
version the run used at either time is not shown (the run cannot have read through it, unless
it moved during the run). ``latest`` is pinned the same way.

A version the run used that has been deleted since is *missing*: a mount of the view leaves it
out, and a replay refuses to start, naming it (its bytes are gone, so the replay could not read
what the run read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._asof import parse_time, timeline
from ._lineage import parse_version_ref, read_record, run_edges, version_exists, version_ref

if TYPE_CHECKING:
    from ._lineage import RunRecord
    from ._store import Store


@dataclass
class RunView:
    """The artifacts a run used: (project, artifact) -> (versions, alias -> version), and the
    versions it used that are deleted since (``project/artifact:vN``)."""

    run: str
    record: "RunRecord"
    artifacts: dict[tuple[str, str], tuple[list[int], dict[str, int]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def run_view(store: Store, project: str, run_id: str) -> RunView:
    """The view of what run ``project/run_id`` read (``NotFound`` if there is no such run)."""
    rec = read_record(store, project, run_id)
    used: dict[tuple[str, str], set[int]] = {}
    for ap, art, n, _ in run_edges(store, project, run_id, "used"):
        used.setdefault((ap, art), set()).add(n)
    for ref in rec.inputs:
        ap, art, n = parse_version_ref(ref)
        used.setdefault((ap, art), set()).add(n)
    view = RunView(f"{project}/{run_id}", rec)
    times = [t for t in (rec.started, rec.ended) if t]
    for (ap, art), ns in sorted(used.items()):
        present = sorted(n for n in ns if version_exists(store, ap, art, n))
        view.missing += [version_ref(ap, art, n) for n in sorted(ns) if n not in present]
        if not present:
            continue
        tl = timeline(store, ap, art)
        aliases: dict[str, int] = {}
        for t in (parse_time(x) for x in times):
            for a, n in tl.aliases_at(t).items():
                if n in present:
                    aliases.setdefault(a, n)  # the run's start first, then its end
        view.artifacts[(ap, art)] = (present, aliases)
    return view
