"""Distributed writers on the command line (registered into :mod:`artfs.cli`).

``artfs put -n P/A --upsert GROUP DIR`` records DIR as one writer's part of GROUP (the pending
version), ``artfs finish P/A --group GROUP`` merges every part into the next version, and
``artfs status`` also lists the pending groups of the store. The store side is
:mod:`artfs._distributed`. This module adds its options to the ``put`` and ``status`` parsers
that other modules registered, and wraps their functions, so they keep working unchanged.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
from typing import Any, Callable

from ._distributed import WAIT_TIMEOUT, GroupInfo, artifact_entries, finish, groups, upsert
from ._errors import ArtfsError, StoreUnavailable
from ._names import check_alias, check_name, parse_spec


def _put_upsert(ctx: Any) -> None:
    """``artfs put --upsert GROUP``: like put, but the files become a part of GROUP."""
    from ._artifact import Artifact
    from ._refs import add_references_from_args
    from .cli import UsageError, _metadata, _plural, human_size

    a = ctx.args
    spec = parse_spec(a.name)
    if spec.version is not None or spec.alias is not None:
        raise UsageError(f"-n {a.name}: give project/artifact")
    if a.alias:
        raise UsageError("--alias goes with `artfs finish`, which makes the version")
    group = check_name(a.upsert, "group")
    if a.dir is None and not a.references:
        raise UsageError("put: give a DIR to log, --reference URI, or both")
    if a.dir is not None and not os.path.exists(a.dir):
        raise FileNotFoundError(2, "No such file or directory", a.dir)
    if a.dir is not None and not os.path.isdir(a.dir):
        raise NotADirectoryError(20, "Not a directory", a.dir)
    art = Artifact(spec.artifact, type=a.type or "unspecified", description=a.description,
                   metadata=_metadata(a.metadata, a.metadata_json))
    added = art.add_dir(a.dir) if a.dir is not None else []
    if not added and not a.references:
        raise ArtfsError(f"{a.dir}: no files to log")
    add_references_from_args(art, a)
    entries, sources = artifact_entries(art)
    total = sum(e.size for e in entries if e.ref is None)
    with ctx.progress(total, "upload") as cb:
        r = upsert(ctx.store, spec.project, spec.artifact, group, entries=entries, sources=sources,
                   writer=a.writer, type=art.type, description=art.description, metadata=art.metadata, progress=cb)
    ctx.emit(vars(r), f"{r.project}/{r.artifact}: part of writer {r.writer} recorded in group {r.group} "
                      f"({_plural(r.files, 'file')}, {_plural(r.uploaded_blobs, 'new blob')}, "
                      f"{human_size(r.uploaded_bytes)} uploaded); `artfs finish {r.project}/{r.artifact} "
                      f"--group {r.group}` makes the version")


def _wrap_put(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def cmd(ctx: Any) -> Any:
        if getattr(ctx.args, "upsert", None):
            return _put_upsert(ctx)
        if getattr(ctx.args, "writer", None):
            from .cli import UsageError

            raise UsageError("--writer goes with --upsert GROUP")
        return original(ctx)
    return cmd


def cmd_finish(ctx: Any) -> None:
    from .cli import UsageError, _metadata, _plural

    a = ctx.args
    spec = parse_spec(a.name)
    if spec.version is not None or spec.alias is not None:
        raise UsageError(f"{a.name}: give project/artifact (the group's version is numbered by the store)")
    aliases = [check_alias(x) for x in a.alias or []]
    r = finish(ctx.store, spec.project, spec.artifact, check_name(a.group, "group"), type=a.type or "unspecified",
               description=a.description, metadata=_metadata(a.metadata) if a.metadata else None,
               aliases=aliases, timeout=a.timeout)
    name = f"{r.project}/{r.artifact}:v{r.version}"
    if r.created:
        text = f"{name} created from group {a.group} ({_plural(r.files, 'file')})"
    else:
        text = f"{name}: group {a.group} was finished as this version ({_plural(r.files, 'file')})"
    if r.aliases:
        text += f"; aliases: {', '.join(r.aliases)}"
    ctx.emit({"name": name, "group": a.group, **vars(r)}, text)


def _when(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def group_text(g: GroupInfo) -> str:
    from .cli import _plural, human_size

    state = " (a finish is running)" if g.finishing else ""
    lines = [f"{g.project}/{g.artifact}  group {g.group}{state}  {_plural(len(g.parts), 'part')}, "
             f"{_plural(g.files, 'file')}, {human_size(g.size)}; last written {_when(g.updated)}"]
    for p in g.parts:
        who = f" on {p.host} (pid {p.pid})" if p.host else ""
        lines.append(f"    writer {p.writer}{who}: {_plural(p.files, 'file')}, {human_size(p.size)}, {_when(p.created)}")
    if g.parts:
        lines.append(f"    `artfs finish {g.project}/{g.artifact} --group {g.group}` makes the version")
    return "\n".join(lines)


def pending_groups(ctx: Any) -> list[GroupInfo]:
    """The pending groups of every project of the store ``artfs status`` looks at."""
    store = ctx.store
    out: list[GroupInfo] = []
    for p in store.backend.list_dirs(""):
        try:
            check_name(p, "project")
        except ArtfsError:
            continue
        if store.backend.list_dirs(f"{p}/groups/"):
            out += groups(store, p)
    return out


def _wrap_status(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``artfs status``: the drafts (as before), then the pending groups of the store."""
    def cmd(ctx: Any) -> Any:
        import contextlib
        import io
        import json

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = original(ctx)
        out = buf.getvalue()
        try:
            found = pending_groups(ctx)
        except (StoreUnavailable, ArtfsError) as e:
            ctx.note(f"artfs: cannot list the pending groups of the store: {e}")
            found = []
        if not found:
            print(out, end="")
            return code
        if ctx.json:
            doc = json.loads(out) if out.strip() else []
            doc += [{"kind": "group", **g.to_json()} for g in found]
            print(json.dumps(doc, indent=2, ensure_ascii=False))
            return code
        if out.strip() != "no drafts with changes to commit":
            print(out, end="")
        print("\n".join(group_text(g) for g in found))
        return code
    return cmd


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    put = sub.choices.get("put")
    if put is not None:
        put.add_argument("--upsert", metavar="GROUP",
                         help="record DIR as one writer's part of GROUP, a pending version that "
                              "`artfs finish --group GROUP` makes (writers on many machines, one version)")
        put.add_argument("--writer", metavar="ID",
                         help="with --upsert: the writer's id; upserting again with the same id replaces its part "
                              "(default: a new id for this process)")
        put.set_defaults(func=_wrap_put(put.get_default("func")))
    status = sub.choices.get("status")
    if status is not None:
        status.set_defaults(func=_wrap_status(status.get_default("func")))

    p = sub.add_parser(
        "finish", parents=[common], help="merge the parts of a group into the next version",
        description="Merge every part that `artfs put --upsert GROUP` (or a mount with --group GROUP) recorded "
                    "into the next version of PROJECT/ARTIFACT, exactly once: racing finishers make one version "
                    "and all print it; finishing a finished group prints its version. Parts that give one path "
                    "different content make it fail, naming the paths; nothing is committed and the parts stay.")
    p.add_argument("name", metavar="PROJECT/ARTIFACT")
    p.add_argument("--group", required=True, metavar="GROUP", help="the pending group to finish (its distributed id)")
    p.add_argument("-a", "--alias", action="append", metavar="ALIAS", help="alias for the version (repeatable)")
    p.add_argument("-t", "--type", metavar="TYPE", help="dataset, model, ... (default: the parts' type)")
    p.add_argument("-d", "--description", help="description (default: the first part's)")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE",
                   help="metadata on top of the parts' (VALUE parsed as JSON when it parses; repeatable)")
    p.add_argument("--timeout", type=float, default=WAIT_TIMEOUT, metavar="SECONDS",
                   help=f"how long to wait for another finisher of the group (default {WAIT_TIMEOUT:.0f})")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_finish)
