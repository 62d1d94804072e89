"""Distributed writers on the command line: ``put --upsert``, ``finish``, groups in ``status``.

``artfs put -n P/A --upsert GROUP DIR`` records DIR as one writer's part of GROUP (the pending
version), ``artfs finish P/A --group GROUP`` merges every part into the next version, and
``artfs status`` also lists the pending groups of the store (:func:`pending_groups`,
:func:`group_text`). The store side is :mod:`artfs._distributed`. ``--upsert`` and ``--writer``
are options of the top-level ``put`` only (not of ``artfs artifact put``), added by
:func:`register` to the parser :mod:`artfs.cli.artifacts` made.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._artifact import Artifact
from .._distributed import WAIT_TIMEOUT, GroupInfo, artifact_entries, finish, groups, upsert
from .._errors import ArtfsError
from .._layout import groups_prefix
from .._names import check_alias, check_name, parse_spec
from .context import Context, UsageError, json_option, metadata
from .output import human_size, plural, uploaded, when_epoch
from .references import check_sources, fill


def put_upsert(ctx: Context) -> None:
    """``artfs put --upsert GROUP``: like put, but the files become a part of GROUP."""
    a = ctx.args
    if a.name is None:
        raise UsageError("put --upsert needs -n PROJECT/ARTIFACT")
    spec = parse_spec(a.name)
    if spec.version is not None or spec.alias is not None:
        raise UsageError(f"-n {a.name}: give project/artifact")
    if a.alias:
        raise UsageError("--alias goes with `artfs finish`, which makes the version")
    group = check_name(a.upsert, "group")
    check_sources(a)
    art = Artifact(spec.artifact, type=a.type or "unspecified", description=a.description,
                   metadata=metadata(a.metadata, a.metadata_json))
    fill(art, a)
    entries, sources = artifact_entries(art, ctx.store)
    total = sum(e.size for e in entries if e.ref is None)
    with ctx.progress(total, "upload") as cb:
        r = upsert(ctx.store, spec.project, spec.artifact, group, entries=entries, sources=sources,
                   writer=a.writer, type=art.type, description=art.description, metadata=art.metadata, progress=cb)
    ctx.emit(vars(r), f"{r.project}/{r.artifact}: part of writer {r.writer} recorded in group {r.group} "
                      f"({uploaded(r.files, r.uploaded_blobs, r.uploaded_bytes)}); `artfs finish "
                      f"{r.project}/{r.artifact} --group {r.group}` makes the version")


def cmd_finish(ctx: Context) -> None:
    a = ctx.args
    spec = parse_spec(a.name)
    if spec.version is not None or spec.alias is not None:
        raise UsageError(f"{a.name}: give project/artifact (the group's version is numbered by the store)")
    aliases = [check_alias(x) for x in a.alias or []]
    r = finish(ctx.store, spec.project, spec.artifact, check_name(a.group, "group"), type=a.type or "unspecified",
               description=a.description, metadata=metadata(a.metadata) if a.metadata else None,
               aliases=aliases, timeout=a.timeout)
    name = f"{r.project}/{r.artifact}:v{r.version}"
    if r.created:
        text = f"{name} created from group {a.group} ({plural(r.files, 'file')})"
    else:
        text = f"{name}: group {a.group} was finished as this version ({plural(r.files, 'file')})"
    if r.aliases:
        text += f"; aliases: {', '.join(r.aliases)}"
    ctx.emit({"name": name, "group": a.group, **vars(r)}, text)


def group_text(g: GroupInfo) -> str:
    """A pending group as ``artfs status`` lists it: the group, then one line per writer's part."""
    state = " (a finish is running)" if g.finishing else ""
    lines = [f"{g.project}/{g.artifact}  group {g.group}{state}  {plural(len(g.parts), 'part')}, "
             f"{plural(g.files, 'file')}, {human_size(g.size)}; last written {when_epoch(g.updated)}"]
    for p in g.parts:
        who = f" on {p.host} (pid {p.pid})" if p.host else ""
        lines.append(f"    writer {p.writer}{who}: {plural(p.files, 'file')}, {human_size(p.size)}, "
                     f"{when_epoch(p.created)}")
    if g.parts:
        lines.append(f"    `artfs finish {g.project}/{g.artifact} --group {g.group}` makes the version")
    return "\n".join(lines)


def pending_groups(ctx: Context) -> list[GroupInfo]:
    """The pending groups of every project of the store ``artfs status`` looks at."""
    store = ctx.store
    out: list[GroupInfo] = []
    for p in store.backend.list_dirs(""):
        try:
            check_name(p, "project")
        except ArtfsError:
            continue
        if store.backend.list_dirs(groups_prefix(p)):
            out += groups(store, p)
    return out


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    put = sub.choices.get("put")
    if put is not None:
        put.add_argument("--upsert", metavar="GROUP",
                         help="record DIR as one writer's part of GROUP, a pending version that "
                              "`artfs finish --group GROUP` makes (writers on many machines, one version)")
        put.add_argument("--writer", metavar="ID",
                         help="with --upsert: the writer's id; upserting again with the same id replaces its part "
                              "(default: a new id for this process)")

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
    json_option(p)
    p.set_defaults(func=cmd_finish)
