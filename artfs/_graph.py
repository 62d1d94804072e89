"""The artifact graph around one version (``artfs lineage``): walk it, print it as a tree, DOT or Mermaid.

The graph is bipartite like W&B's: versions and runs. ``up`` follows a version to the run(s)
that logged it and on to what those runs used; ``down`` follows a version to the runs that used
it and on to what they logged. ``depth`` counts runs along a path. Each version's edges come from
one listing of its keys (:mod:`artfs._lineage`), each run's from one listing too. Downstream,
a version also leads to the registry collections that link it (``linked``, :mod:`artfs._registry`):
nodes of kind ``link``, named ``registry/collection:vM``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import ArtfsError, NotFound
from ._lineage import parse_version_ref, read_record, run_edges, version_edges, version_exists, version_ref
from ._registry import links_of_version

if TYPE_CHECKING:
    from ._store import Store


@dataclass
class Graph:
    root: str
    #: node id -> attributes; version ids are ``p/a:vN``, run ids ``run:p/id``
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (from, to, label): version -> run for ``used``, run -> version for ``logger``/``contributor``/``matched``
    edges: list[tuple[str, str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "nodes": [{"id": k, **v} for k, v in self.nodes.items()],
                "edges": [{"from": a, "to": b, "kind": k} for a, b, k in self.edges]}


def _run_node(store: "Store", g: Graph, rp: str, rid: str) -> str:
    nid = f"run:{rp}/{rid}"
    if nid not in g.nodes:
        attrs: dict[str, Any] = {"kind": "run", "run": f"{rp}/{rid}"}
        try:
            rec = read_record(store, rp, rid)
            attrs.update(name=rec.name, job_type=rec.job_type, state=rec.state, source=rec.source,
                         command=rec.command, replay_of=rec.replay_of)
        except ArtfsError as e:  # a missing or damaged record: the edge is still shown
            attrs.update(error=str(e))
        g.nodes[nid] = attrs
    return nid


def _version_node(store: "Store", g: Graph, ap: str, art: str, n: int) -> str:
    nid = version_ref(ap, art, n)
    if nid not in g.nodes:
        g.nodes[nid] = {"kind": "version", "deleted": not version_exists(store, ap, art, n)}
    return nid


def lineage(store: "Store", ref: str, *, up: bool = True, down: bool = True, depth: int = 5) -> Graph:
    ap, art, n = parse_version_ref(ref)
    g = Graph(version_ref(ap, art, n))
    _version_node(store, g, ap, art, n)
    if g.nodes[g.root]["deleted"] and not (version_edges(store, ap, art, n, "used")
                                           or version_edges(store, ap, art, n, "logged")):
        raise NotFound(f"{g.root}: no such version and no lineage recorded for it")
    seen: set[tuple[str, str]] = set()
    edges: set[tuple[str, str, str]] = set()

    def walk(v: tuple[str, str, int], d: int, direction: str) -> None:
        vid = _version_node(store, g, *v)
        if d >= depth or (vid, direction) in seen:
            return
        seen.add((vid, direction))
        if direction == "up":
            for rp, rid, role in version_edges(store, v[0], v[1], v[2], "logged", roles=True):
                rnode = _run_node(store, g, rp, rid)
                edges.add((rnode, vid, role))
                for p, a, m, _ in run_edges(store, rp, rid, "used"):
                    edges.add((_version_node(store, g, p, a, m), rnode, "used"))
                    walk((p, a, m), d + 1, "up")
        else:
            for lid in links_of_version(store, *v):
                g.nodes.setdefault(lid, {"kind": "link"})
                edges.add((vid, lid, "linked"))
            for rp, rid, _ in version_edges(store, v[0], v[1], v[2], "used"):
                rnode = _run_node(store, g, rp, rid)
                edges.add((vid, rnode, "used"))
                for p, a, m, role in run_edges(store, rp, rid, "logged", roles=True):
                    edges.add((rnode, _version_node(store, g, p, a, m), role))
                    walk((p, a, m), d + 1, "down")

    if up:
        walk((ap, art, n), 0, "up")
    if down:
        walk((ap, art, n), 0, "down")
    g.edges = sorted(edges)
    return g


# -- rendering -------------------------------------------------------------------------------------------
def _label(g: Graph, nid: str) -> str:
    a = g.nodes[nid]
    if a["kind"] == "version":
        return nid + (" (deleted)" if a.get("deleted") else "")
    if a["kind"] == "link":
        return nid
    bits = [x for x in (a.get("job_type"), a.get("name")) if x]
    extra = f" ({', '.join(bits)})" if bits else ""
    if a.get("replay_of"):
        extra += f" [replay of {a['replay_of']}]"
    if a.get("error"):
        extra += " [record unreadable]"
    return f"run {a['run']}{extra}"


def render_tree(g: Graph, *, up: bool = True, down: bool = True) -> str:
    """The graph as indented trees from the root: upstream (where it came from), downstream (where it went)."""
    out_of: dict[str, list[tuple[str, str]]] = {}
    into: dict[str, list[tuple[str, str]]] = {}
    for a, b, k in g.edges:
        out_of.setdefault(a, []).append((b, k))
        into.setdefault(b, []).append((a, k))
    lines: list[str] = []

    def verb(k: str, upward: bool, to_run: bool) -> str:
        if upward:
            return {"logger": "logged by", "contributor": "contributed to by", "matched": "also logged by",
                    "used": "used"}.get(k, k) if to_run or k != "used" else "used"
        return {"used": "used by", "logger": "logged", "contributor": "contributed to",
                "matched": "logged (identical)", "linked": "linked as"}.get(k, k)

    def tree(nid: str, prefix: str, upward: bool, path: set[str]) -> None:
        nxt = into.get(nid, []) if upward else out_of.get(nid, [])
        for i, (m, k) in enumerate(sorted(nxt)):
            last = i == len(nxt) - 1
            cyc = " (see above)" if m in path else ""
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{verb(k, upward, g.nodes[m]['kind'] == 'run')} "
                         f"{_label(g, m)}{cyc}")
            if not cyc:
                tree(m, prefix + ("   " if last else "│  "), upward, path | {m})

    lines.append(_label(g, g.root))
    if up:
        before = len(lines)
        tree(g.root, "", True, {g.root})
        if len(lines) == before:
            lines.append("└─ logged by: no run recorded")
    if down:
        if up:
            lines.append("")
            lines.append(_label(g, g.root))
        before = len(lines)
        tree(g.root, "", False, {g.root})
        if len(lines) == before:
            lines.append("└─ used by: no run recorded")
    return "\n".join(lines)


#: how an edge is drawn in a picture (JSON keeps the role names)
_PICTURE = {"used": "used", "logger": "logged", "contributor": "contributed", "matched": "logged again",
            "linked": "linked as"}


def _ident(g: Graph) -> dict[str, str]:
    return {nid: f"n{i}" for i, nid in enumerate(g.nodes)}


def render_dot(g: Graph) -> str:
    ids = _ident(g)
    out = ["digraph lineage {", "  rankdir=LR;"]
    for nid, a in g.nodes.items():
        label = _label(g, nid).replace('"', '\\"')
        if a["kind"] == "link":
            out.append(f'  {ids[nid]} [shape=note, label="{label}"];')
        elif a["kind"] == "version":
            style = ', style="dashed"' if a.get("deleted") else ""
            bold = ", penwidth=2" if nid == g.root else ""
            out.append(f'  {ids[nid]} [shape=box, label="{label}"{style}{bold}];')
        else:
            out.append(f'  {ids[nid]} [shape=ellipse, label="{label}"];')
    for src, dst, k in g.edges:
        style = ', style="dashed"' if k in ("contributor", "matched") else ""
        out.append(f'  {ids[src]} -> {ids[dst]} [label="{_PICTURE.get(k, k)}"{style}];')
    out.append("}")
    return "\n".join(out)


def render_mermaid(g: Graph) -> str:
    ids = _ident(g)
    out = ["flowchart LR"]
    for nid, a in g.nodes.items():
        label = _label(g, nid).replace('"', "#quot;")
        out.append(f'  {ids[nid]}["{label}"]' if a["kind"] != "run" else f'  {ids[nid]}(["{label}"])')
    for src, dst, k in g.edges:
        arrow = "-.->" if k in ("contributor", "matched") else "-->"
        out.append(f"  {ids[src]} {arrow}|{_PICTURE.get(k, k)}| {ids[dst]}")
    return "\n".join(out)
