"""Time and change: ``diff`` (what changed between two versions).

``artfs diff OLD NEW`` reads the two manifests and nothing else (:mod:`artfs._diff`); with one
version it compares it with the version before it (the highest existing number below it).
"""

from __future__ import annotations

import argparse
from typing import Any

from .._diff import ArtifactDiff, FileChange
from .._errors import NotFound
from .._names import Spec, is_version, parse_spec, valid_name
from .context import Context, UsageError, json_option, spec
from .output import human_size, plural, table


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
