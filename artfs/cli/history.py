"""Time and change: ``diff`` (what changed between two versions), ``alias log`` (who moved which
alias when), and the ``--as-of TIME`` of ``ls`` and ``get`` (the store as it was then).

``artfs diff OLD NEW`` reads the two manifests and nothing else (:mod:`artfs._diff`); with one
version it compares it with the version before it (the highest existing number below it).
``alias log`` lists the recorded moves (:mod:`artfs._aliaslog`) and, for ``latest``, the
automatic moves that follow from versions logged and deleted (:mod:`artfs._asof`).
"""

from __future__ import annotations

import argparse
from typing import Any

from .._aliaslog import iso_ns, moves
from .._asof import Timeline, latest_changes, parse_time, timeline
from .._diff import ArtifactDiff, FileChange
from .._errors import NotFound
from .._names import Spec, check_alias, is_version, parse_spec, valid_name
from .context import Context, UsageError, json_option, spec
from .output import human_size, plural, table, when


def _second(old: Spec, s: str) -> Spec:
    """NEW as given: a full spec, or ``v4``/``:v4``/``:best`` meaning a version of OLD's artifact."""
    ref = s[1:] if s.startswith(":") else s
    if "/" not in s and (is_version(ref) or valid_name(ref, alias=True)):
        return parse_spec(f"{old.project}/{old.artifact}:{ref}")
    return spec(s)


def previous_version(versions: list[int], n: int) -> int | None:
    """The highest existing version below vN (what ``diff_parent`` compares with), or None."""
    below = [x for x in versions if x < n]
    return below[-1] if below else None


def _detail(c: FileChange) -> str:
    notes = []
    if "executable" in c.aspects and c.old is not None and c.new is not None:
        notes.append(f"executable {'yes' if c.old.executable else 'no'} -> {'yes' if c.new.executable else 'no'}")
    if "reference" in c.aspects and c.old is not None and c.new is not None:
        if c.old.ref != c.new.ref:
            notes.append(f"reference {c.old.ref or '(none)'} -> {c.new.ref or '(none)'}")
        else:
            notes.append(f"reference {c.new.ref}: its object changed")
    return "; ".join(notes)


def _row(c: FileChange) -> tuple[str, str, str, str]:
    if c.status == "changed" and c.old is not None and c.new is not None and c.old.size != c.new.size:
        size = f"{human_size(c.old.size)} -> {human_size(c.new.size)}"
    else:
        size = human_size(c.size)
    path = f"{c.old_path} -> {c.path}" if c.status == "moved" else c.path
    return c.status, size, path, _detail(c)


def summary(d: ArtifactDiff) -> str:
    """``v0 -> v1: 1 added, 2 changed`` (or ``no changes``)."""
    counts = [f"{len(getattr(d, s))} {s}" for s in ("added", "removed", "changed", "moved") if getattr(d, s)]
    return f"{d.old} -> {d.new}: {', '.join(counts) if counts else 'no changes'}"


def stat_text(d: ArtifactDiff) -> str:
    st = d.stat()
    ch = st["changed"]
    extra = [plural(ch[a], f"{a} change") for a in ("executable", "reference") if ch[a]]
    rows = [
        ("added", plural(st["added"]["files"], "file"), human_size(st["added"]["bytes"]), ""),
        ("removed", plural(st["removed"]["files"], "file"), human_size(st["removed"]["bytes"]), ""),
        ("changed", plural(ch["files"], "file"), f"{human_size(ch['bytes_before'])} -> {human_size(ch['bytes_after'])}",
         ", ".join(extra)),
        ("moved", plural(st["moved"]["files"], "file"), human_size(st["moved"]["bytes"]), ""),
    ]
    lines = [summary(d)]
    lines += ["  " + line for line in table(("", "FILES", "BYTES", ""), rows).splitlines()[1:]]
    lines.append(f"  {d.old}: {plural(d.old_files, 'file')}, {human_size(d.old_size)}; "
                 f"{d.new}: {plural(d.new_files, 'file')}, {human_size(d.new_size)}")
    return "\n".join(lines)


def cmd_diff(ctx: Context) -> int:
    a = ctx.args
    if a.stat and a.name_only:
        raise UsageError("--stat and --name-only: choose one")
    old_s = spec(a.old)
    new_s = _second(old_s, a.new) if a.new else None
    store = ctx.store
    if new_s is None:
        p, art, n = store.resolve(old_s)
        before = previous_version(store.versions(p, art), n)
        if before is None:
            raise NotFound(f"{p}/{art}:v{n} is the first version: nothing to compare it with; "
                           f"name two versions, e.g. artfs diff {p}/{art}:v{n} {p}/{art}:latest")
        old_art, new_art = store.artifact(f"{p}/{art}:v{before}"), store.artifact(f"{p}/{art}:v{n}")
    else:
        old_art, new_art = store.artifact(str(old_s)), store.artifact(str(new_s))
    d = old_art.diff(new_art)
    if a.name_only:
        names = [c.path for c in d.changes]
        ctx.emit(names, "\n".join(names) if names else None)
    elif a.stat:
        ctx.emit(d.stat(), stat_text(d))
    else:
        doc: dict[str, Any] = d.to_json()
        doc.pop("truncated")
        if not ctx.json:
            ctx.note(summary(d))
        ctx.emit(doc, table(("STATUS", "SIZE", "PATH", "DETAIL"), [_row(c) for c in d.changes]) if d else None)
    return 1 if a.exit_code and d else 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("diff", parents=[common], help="what changed between two versions",
                       description="List the files added, removed, changed (content, executable bit, reference) "
                                   "and moved (same content, new path) from OLD to NEW, from their manifests alone "
                                   "(no file is read). NEW may be a version or alias of OLD's artifact (v4, :best) "
                                   "or any other artifact's; without NEW, OLD is compared with the version before it.")
    p.add_argument("old", metavar="OLD", help="PROJECT/ARTIFACT[:VERSION|:ALIAS]")
    p.add_argument("new", metavar="NEW", nargs="?", help="PROJECT/ARTIFACT[:VERSION|:ALIAS], or VERSION|ALIAS of OLD's")
    p.add_argument("--stat", action="store_true", help="only counts and bytes per kind of change")
    p.add_argument("--name-only", action="store_true", help="only the changed paths (the new path of a moved file)")
    p.add_argument("--exit-code", action="store_true", help="exit with 1 when the versions differ, 0 when not (as git)")
    json_option(p)
    p.set_defaults(func=cmd_diff)


# -- alias log ---------------------------------------------------------------------------------------
def _v(n: int | None, deleted: set[int]) -> str:
    if n is None:
        return "-"
    return f"v{n} (deleted)" if n in deleted else f"v{n}"


def cmd_alias_log(ctx: Context) -> None:
    s = spec(ctx.args.spec, ref="none")
    alias = check_alias(ctx.args.alias) if ctx.args.alias else None
    store = ctx.store
    tl: Timeline | None = None
    if alias in (None, "latest"):
        tl = timeline(store, s.project, s.artifact)  # the automatic moves of latest need the versions' times
        recorded = [m for m in tl.moves if alias is None or m.alias == alias]
    else:
        recorded = moves(store, s.project, s.artifact, alias)
    existing = set(store.versions(s.project, s.artifact))
    if not existing and not recorded and (tl is None or not tl.spans):
        store.resolve(Spec(s.project, s.artifact, None, "latest"))  # the precise NotFound
    docs: list[dict[str, Any]] = []
    for m in recorded:
        docs.append({**m.to_json(), "automatic": False})
    if tl is not None:
        for t, old, new, cause in latest_changes(tl):
            if cause == "latest set":
                continue  # a recorded move, listed already
            if cause == "latest remove":
                cause = "latest is automatic again"
            docs.append({"project": s.project, "artifact": s.artifact, "alias": "latest",
                         "action": "set" if new is not None else "remove", "from": old, "to": new,
                         "time": iso_ns(t), "time_ns": t, "user": None, "host": None, "pid": None, "run": None,
                         "reason": cause, "automatic": True})
    docs.sort(key=lambda d: (d["time_ns"], d["automatic"]))
    deleted = {n for d in docs for n in (d["from"], d["to"]) if n is not None and n not in existing}
    for d in docs:
        d["from_deleted"] = d["from"] in deleted
        d["to_deleted"] = d["to"] in deleted
    rows = []
    for d in docs:
        move = (f"{_v(d['from'], deleted)} -> {_v(d['to'], deleted)}" if d["action"] == "set"
                else f"removed, was {_v(d['from'], deleted)}")
        why = "automatic: " + d["reason"] if d["automatic"] else (d["reason"] or "")
        rows.append((when(d["time"]), d["alias"], move, d["user"] or "-", d["host"] or "-", d["run"] or "-", why))
    if not docs and not ctx.json:
        ctx.note(f"{s.project}/{s.artifact}: no recorded alias moves" + (f" of {alias}" if alias else ""))
    ctx.emit(docs, table(("TIME", "ALIAS", "MOVE", "USER", "HOST", "RUN", "NOTE"), rows) if docs else None)


def register_alias_log(asub: Any, common: argparse.ArgumentParser) -> None:
    """``artfs alias log`` (a subcommand of :mod:`artfs.cli.artifacts`' ``alias``)."""
    q = asub.add_parser("log", parents=[common], help="who moved which alias when (every move is recorded)",
                        description="Every recorded move of the artifact's aliases (or of ALIAS), oldest first, "
                                    "with the user, host and run that made it; for latest also its automatic "
                                    "moves (a version logged or deleted). Deleted versions are marked.")
    q.add_argument("spec", metavar="PROJECT/ARTIFACT")
    q.add_argument("alias", metavar="ALIAS", nargs="?")
    json_option(q)
    q.set_defaults(func=cmd_alias_log)


# -- --as-of TIME ------------------------------------------------------------------------------------
def as_of_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--as-of", metavar="TIME",
                   help=f"{what} as it was at TIME (ISO 8601: 2026-11-30T12:00Z; without a zone, local time): "
                        "only versions that existed then, aliases where they pointed")


def as_of(ctx: Context) -> int | None:
    """The ``--as-of`` time in ns, or None."""
    text = getattr(ctx.args, "as_of", None)
    return parse_time(text) if text else None
