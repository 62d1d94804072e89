"""Versions of artifacts: ``put``, ``get``, ``ls``, ``show``, ``alias``, ``describe``, ``delete``.

``alias log`` and the ``--as-of`` of ``ls`` and ``get`` are :mod:`artfs.cli.history`'s.

These (with ``gc`` and ``cache`` of :mod:`artfs.cli.maintenance`) are also registered under
``artfs artifact ...``, W&B's spelling. ``put --upsert GROUP`` is :mod:`artfs.cli.groups`'.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from typing import Any

from .._access import list_projects
from .._aliaslog import iso_ns
from .._asof import timeline
from .._artifact import Artifact
from .._errors import ArtfsError, NotFound
from .. import _registry as registry
from .._names import Spec, check_alias, check_name, check_path, make_artifact_name_safe, parse_spec
from .._run import default_project, resolve_any
from .._store import HasAliases, Store
from ..backends import default_store_url
from . import groups, history
from .context import (
    Context, UsageError, did_you_mean, json_option, metadata, metadata_options, missing_store_message, spec,
)
from .output import human_size, one_line, plural, table, uploaded, when
from .references import add_reference_args, check_sources, fill
from .registry import ls_collection, registry_docs


def version_doc(store: Store, project: str, artifact: str, n: int, *, aliases: dict[str, int] | None = None,
                files: bool = False) -> dict[str, Any]:
    """One version as ``ls``, ``show`` and ``describe`` print it with ``--json``."""
    m = store.manifest(project, artifact, n)
    info = store.info(project, artifact, n)
    if aliases is None:
        aliases = store.aliases(project, artifact)
    doc: dict[str, Any] = {
        "name": f"{project}/{artifact}:v{n}",
        "project": project,
        "artifact": artifact,
        "version": n,
        "type": m.type,
        "digest": m.digest,
        "size": m.size,
        "files": len(m.entries),
        "aliases": sorted(a for a, v in aliases.items() if v == n),
        "description": info.get("description"),
        "metadata": info.get("metadata") or {},
        "tags": info.get("tags") or [],
        "ttl_seconds": info.get("ttl"),
        "created": m.created,
    }
    if files:  # show: the registry collections that link it (one listing)
        doc["linked"] = registry.links_of_version(store, project, artifact, n)
    if files:
        doc["entries"] = [e.to_json() for e in m.entries]
    return doc


# -- commands --------------------------------------------------------------------------------------
def cmd_put(ctx: Context) -> None:
    a = ctx.args
    if getattr(a, "upsert", None):
        return groups.put_upsert(ctx)
    if getattr(a, "writer", None):
        raise UsageError("--writer goes with --upsert GROUP")
    s = put_spec(a)
    if s.version is not None:
        raise UsageError(f"-n {a.name}: versions are numbered by the store; give project/artifact")
    aliases = [check_alias(x) for x in dict.fromkeys((a.alias or []) + ([s.alias] if s.alias else []))]
    md = metadata(a.metadata, a.metadata_json)
    check_sources(a)
    art = Artifact(s.artifact, type=a.type or "unspecified", description=a.description, metadata=md)
    added = fill(art, a)  # before the store is opened (or created): bad input leaves nothing
    # the bar's total: a stat per file, paid only where a bar is drawn
    files = art.draft_files() if sys.stderr.isatty() else {}
    total = sum(os.path.getsize(files[p]) for p in added) if files else 0
    store = ctx.store
    if a.type is None and s.artifact not in store.artifacts(s.project):
        art.type = "dataset"  # W&B's CLI default for a new artifact; an existing one keeps its type
    with ctx.progress(total, "upload") as cb:
        # Store.log_artifact without the progress callback it does not take
        logged = art.log_to(store, s.project, aliases, progress=cb)
    r = logged.commit_result
    assert r is not None
    name = f"{r.project}/{r.artifact}:v{r.version}"
    doc = {"name": name, **vars(r)}
    if r.created:
        text = f"{name} created ({uploaded(r.files, r.uploaded_blobs, r.uploaded_bytes)})"
    else:
        text = f"{name} matched: identical content is already logged, no new version ({plural(r.files, 'file')})"
        if (a.description is not None and a.description != logged.description) or any(
                logged.metadata.get(k, object()) != v for k, v in md.items()):
            ctx.note(f"note: description and metadata of {name} were left as they are; use 'artfs describe' to change them")
    if r.aliases:
        text += f"; aliases: {', '.join(r.aliases)}"
    ctx.emit(doc, text)


def put_spec(a: argparse.Namespace) -> Spec:
    """``-n PROJECT/ARTIFACT``; without ``-n``, W&B's default: the file's or directory's name, in
    the default project ($ARTFS_PROJECT, $WANDB_PROJECT, else uncategorized)."""
    if a.name is not None:
        return parse_spec(a.name)
    if a.dir is None:
        raise UsageError("put: DIR (or FILE) is required, or -n PROJECT/ARTIFACT with --reference")
    return parse_spec(f"{default_project()}/{make_artifact_name_safe(os.path.basename(os.path.abspath(a.dir)))}")


def cmd_get(ctx: Context) -> None:
    a = ctx.args
    s = spec(a.spec)
    if a.checkout and a.path:
        raise UsageError("--checkout makes the root hold the whole version; it cannot be combined with --path")
    prefix = check_path(a.path.strip("/")) if a.path else None
    t = history.as_of(ctx)
    if t is None:
        art = resolve_any(ctx.store, s)  # a registry link too
    else:  # the version the spec named then (NotFound if it named none, or one deleted since)
        n = timeline(ctx.store, s.project, s.artifact).resolve(s, t)
        art = ctx.store.artifact(f"{s.project}/{s.artifact}:v{n}")
    if a.type is not None and art.type != a.type:
        raise NotFound(f"{art.qualified_name} has type {art.type!r}, not {a.type!r}")
    entries = art.manifest.entries
    if prefix is not None:
        entries = [e for e in entries if e.path == prefix or e.path.startswith(prefix + "/")]
        if not entries:
            hint = ""
            tail = prefix.split("/", 1)[1] if "/" in prefix else None
            if tail and any(e.path == tail or e.path.startswith(tail + "/") for e in art.manifest.entries):
                # `put -n x ./images` logs what is inside ./images: images/val is val in the version
                hint = f"; did you mean --path {tail}? ('put DIR' logs the contents of DIR at the version's root)"
            raise NotFound(f"{art.qualified_name} has no file or directory {prefix!r}{hint}")
    total = sum(e.size for e in entries)
    files = {"allow_file": a.allow_file, "file_roots": a.file_roots}
    if a.checkout:
        root = art.checkout(a.root, **files)
    else:
        with ctx.progress(total, "download") as cb:
            root = art.download(a.root, path_prefix=prefix, progress=cb, **files)
    if not ctx.json:
        ctx.note(f"{art.qualified_name}: {plural(len(entries), 'file')}, {human_size(total)} in {root}")
    ctx.emit({"name": art.qualified_name, "root": root, "files": len(entries), "size": total}, root)


def cmd_ls(ctx: Context) -> None:
    target = ctx.args.target
    url = default_store_url()
    if not target and not ctx.store_given and "://" not in url and not os.path.isdir(url):
        # a fresh machine: nothing logged yet is not an error (a --store that does not exist is)
        if not ctx.json:
            ctx.note(missing_store_message(url, explicit=False))
        ctx.emit([], None)
        return
    # names first: a malformed one is a usage error (2) even where no store is
    project = check_name(target, "project") if target and "/" not in target else None
    s = spec(target, ref="none") if target and "/" in target else None
    store = ctx.store
    if history.as_of(ctx) is not None:
        return _ls_as_of(ctx, project, s)
    if not target:
        # only what this caller may read: projects the store refuses are skipped
        counts = [(p, len(store.artifacts(p)) + len(registry.collections(store, p))) for p in list_projects(store)[0]]
        if not counts and not ctx.json:
            ctx.note(f"no projects in {store.url}")
        ctx.emit([{"project": p, "artifacts": n} for p, n in counts],
                 table(("PROJECT", "ARTIFACTS"), counts) if counts else None)
        return
    if project is not None:
        names = store.artifacts(project)
        if not names and not registry.collections(store, project):
            raise NotFound(f"{project}: no such project in {store.url}{did_you_mean(project, store.projects())}")
        docs: list[dict[str, Any]] = []
        for name in names:
            versions = store.versions(project, name)
            kind = store.manifest(project, name, versions[-1]).type if versions else None
            latest = store.aliases(project, name, versions=versions).get("latest")
            docs.append({"artifact": name, "type": kind, "versions": len(versions), "latest": latest})
        docs += registry_docs(store, project)
        if ctx.args.type:
            docs = [d for d in docs if d["type"] == ctx.args.type]
        ctx.emit(docs, table(("ARTIFACT", "TYPE", "VERSIONS", "LATEST"), [
            (d["artifact"], d["type"] or "-", d["versions"], "-" if d["latest"] is None else f"v{d['latest']}")
            for d in docs]))
        return
    assert s is not None
    if s.artifact not in store.artifacts(s.project) and s.artifact in registry.collections(store, s.project):
        return ls_collection(ctx, s.project, s.artifact)
    versions = store.versions(s.project, s.artifact)
    if not versions:
        store.resolve(Spec(s.project, s.artifact, None, "latest"))  # raises the precise NotFound
    aliases = store.aliases(s.project, s.artifact, versions=versions)
    vdocs = [version_doc(store, s.project, s.artifact, n, aliases=aliases) for n in versions]
    ctx.emit(vdocs, table(("VERSION", "ALIASES", "SIZE", "FILES", "CREATED", "DESCRIPTION"), [
        (f"v{d['version']}", ",".join(d["aliases"]), human_size(d["size"]), d["files"], when(d["created"]),
         one_line(d["description"])) for d in vdocs]))


def _ls_as_of(ctx: Context, project: str | None, s: Spec | None) -> None:
    """``ls --as-of TIME``: the versions that existed then (marked if deleted since), aliases then."""
    t = history.as_of(ctx)
    assert t is not None
    store = ctx.store
    if s is None:
        if project is None:
            raise UsageError("--as-of lists a project or an artifact: give PROJECT or PROJECT/ARTIFACT")
        docs: list[dict[str, Any]] = []
        for name in store.artifacts(project):
            tl = timeline(store, project, name)
            versions = tl.versions_at(t)
            if versions:
                kind = next((store.manifest(project, name, n).type for n in reversed(versions)
                             if tl.spans[n].deleted_ns is None), None)
                docs.append({"artifact": name, "type": kind, "versions": len(versions), "latest": tl.latest_at(t)})
        ctx.emit(docs, table(("ARTIFACT", "TYPE", "VERSIONS", "LATEST"), [
            (d["artifact"], d["type"] or "-", d["versions"], "-" if d["latest"] is None else f"v{d['latest']}")
            for d in docs]))
        return
    tl = timeline(store, s.project, s.artifact)
    if not tl.spans:
        store.resolve(Spec(s.project, s.artifact, None, "latest"))  # raises the precise NotFound
    aliases = tl.aliases_at(t)
    vdocs = []
    for n in tl.versions_at(t):
        gone = tl.spans[n].deleted_ns
        if gone is None:
            vdocs.append({**version_doc(store, s.project, s.artifact, n, aliases=aliases), "deleted": None})
        else:  # its manifest is gone: what the tombstone says
            vdocs.append({"name": f"{s.project}/{s.artifact}:v{n}", "project": s.project, "artifact": s.artifact,
                          "version": n, "aliases": sorted(a for a, v in aliases.items() if v == n),
                          "created": iso_ns(tl.spans[n].created_ns), "deleted": iso_ns(gone)})
    ctx.emit(vdocs, table(("VERSION", "ALIASES", "SIZE", "FILES", "CREATED", "DESCRIPTION"), [
        (f"v{d['version']}", ",".join(d["aliases"]), human_size(d["size"]) if "size" in d else "-",
         d.get("files", "-"), when(d["created"]),
         f"(deleted {when(d['deleted'])})" if d["deleted"] else one_line(d["description"])) for d in vdocs]))


def _show_text(doc: dict[str, Any]) -> str:
    lines = [
        doc["name"],
        f"  type         {doc['type']}",
        f"  digest       {doc['digest']}",
        f"  size         {human_size(doc['size'])} ({doc['size']} bytes)",
        f"  files        {doc['files']}",
        f"  aliases      {', '.join(doc['aliases']) or '-'}",
        f"  created      {when(doc['created'])}",
        f"  description  {doc['description'] if doc['description'] is not None else '-'}",
        f"  tags         {', '.join(doc['tags']) or '-'}",
    ]
    if doc.get("ttl_seconds"):
        lines.append(f"  ttl          {_dt.timedelta(seconds=doc['ttl_seconds'])}")
    if doc.get("link"):
        lines[0] = f"{doc['link']['name']} (links {doc['name']})"
        lines[5] = f"  aliases      {', '.join(doc['link']['aliases']) or '-'}"
    for name in doc.get("linked") or []:
        lines.append(f"  linked as    {name}")
    md = doc["metadata"]
    if md:
        lines.append("  metadata")
        lines += [f"    {k} = {json.dumps(v, ensure_ascii=False)}" for k, v in md.items()]
    else:
        lines.append("  metadata     -")
    if "entries" in doc:
        lines.append("  files:")
        rows = [(human_size(e["size"]), e["digest"] or e.get("ref") or "", e["path"]) for e in doc["entries"]]
        lines += ["    " + line for line in table(("SIZE", "DIGEST", "PATH"), rows).splitlines()]
    return "\n".join(lines)


def cmd_show(ctx: Context) -> None:
    s = spec(ctx.args.spec)  # a malformed spec is a usage error (2) even where no store is
    art = resolve_any(ctx.store, s)
    doc = version_doc(ctx.store, *art.source_coords(), files=True)
    if not ctx.args.files:
        del doc["entries"]
    if art.is_link:
        doc["link"] = {"name": art.qualified_name, "aliases": art.aliases}
    ctx.emit(doc, _show_text(doc))


def cmd_alias_set(ctx: Context) -> None:
    alias = check_alias(ctx.args.alias)
    s = spec(ctx.args.spec)
    project, artifact, n = ctx.store.resolve(s)
    ctx.store.set_alias(project, artifact, alias, n)
    ctx.emit({"project": project, "artifact": artifact, "alias": alias, "version": n},
             f"{project}/{artifact}:{alias} -> v{n}")


def cmd_alias_rm(ctx: Context) -> None:
    s = spec(ctx.args.spec, ref="none")
    alias = check_alias(ctx.args.alias)
    old = ctx.store.aliases(s.project, s.artifact).get(alias)
    ctx.store.remove_alias(s.project, s.artifact, alias)
    ctx.emit({"project": s.project, "artifact": s.artifact, "alias": alias, "version": old},
             f"removed {s.project}/{s.artifact}:{alias}" + (f" (was v{old})" if old is not None else ""))


def cmd_alias_ls(ctx: Context) -> None:
    s = spec(ctx.args.spec, ref="none")
    store = ctx.store
    versions = store.versions(s.project, s.artifact)
    if not versions:
        store.resolve(Spec(s.project, s.artifact, None, "latest"))
    aliases = store.aliases(s.project, s.artifact, versions=versions)
    ctx.emit(aliases, table(("ALIAS", "VERSION"), [(k, f"v{v}") for k, v in sorted(aliases.items())]))


_MISSING = object()


def cmd_describe(ctx: Context) -> None:
    a = ctx.args
    s = spec(a.spec)
    changes = metadata(a.metadata, a.metadata_json)
    if a.description is None and not changes and not a.unset:
        raise UsageError("nothing to change: give --description, --metadata, --metadata-json or --unset")
    project, artifact, n = ctx.store.resolve(s)
    art = ctx.store.artifact(f"{project}/{artifact}:v{n}")
    if a.description is not None:
        art.description = a.description or None
    art.metadata.update(changes)
    for k in a.unset or ():  # removing what is not there is done already: say so, apply the rest
        if art.metadata.pop(k, _MISSING) is _MISSING:
            ctx.note(f"note: --unset {k}: {art.qualified_name} has no such metadata key (nothing to remove)")
    art.save()
    doc = version_doc(ctx.store, project, artifact, n)
    ctx.emit(doc, f"{art.qualified_name} updated")


def cmd_delete(ctx: Context) -> None:
    s = spec(ctx.args.spec, ref="required")
    project, artifact, n = ctx.store.resolve(s)
    try:
        removed = ctx.store.delete_version(project, artifact, n, delete_aliases=ctx.args.delete_aliases)
    except HasAliases as e:  # the API's message names the keyword; here the flag is what to type
        raise ArtfsError(f"{e.name} has {'alias' if len(e.aliases) == 1 else 'aliases'} {', '.join(e.aliases)}; "
                         "add --delete-aliases to delete it with them") from None
    text = f"deleted {project}/{artifact}:v{n}"
    if removed:
        text += f" and its {'alias' if len(removed) == 1 else 'aliases'} {', '.join(removed)}"
    ctx.emit({"name": f"{project}/{artifact}:v{n}", "aliases_removed": removed}, text)


# -- parsers ---------------------------------------------------------------------------------------
def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("put", parents=[common], help="log a directory as a new version",
                       description="Log DIR as the next version of an artifact. Only blobs the store lacks are "
                                   "uploaded; identical content creates no new version.")
    p.add_argument("-n", "--name", metavar="PROJECT/ARTIFACT",
                   help="the artifact to log a version of (created with its first version; default: DIR's or "
                        "FILE's name, in $ARTFS_PROJECT or $WANDB_PROJECT, else 'uncategorized')")
    p.add_argument("-t", "--type", metavar="TYPE",
                   help="dataset, model, ... (default: the artifact's existing type, or 'dataset' as W&B's CLI)")
    p.add_argument("dir", metavar="DIR|FILE", nargs="?",
                   help="the directory (its contents) or the one file to log (optional with --reference)")
    p.add_argument("-a", "--alias", action="append", metavar="ALIAS", help="alias for the version (repeatable)")
    p.add_argument("-d", "--description", help="a description of the new version")
    metadata_options(p)
    add_reference_args(p)
    json_option(p)
    p.set_defaults(func=cmd_put, creates_store=True)

    p = sub.add_parser("get", parents=[common], help="download a version",
                       description="Place the files of a version under a directory (only what is not already "
                                   "there; every file is verified). Prints the directory.")
    p.add_argument("spec", metavar="PROJECT/ARTIFACT[:VERSION|:ALIAS]")
    p.add_argument("--root", metavar="DIR", help="target directory (default: ./artifacts/ARTIFACT:vN)")
    p.add_argument("--type", metavar="TYPE", help="refuse (not found, exit 3) a version of another type")
    p.add_argument("--path", metavar="PREFIX", help="only this file or directory of the version")
    p.add_argument("--checkout", action="store_true", help="also remove files under DIR that are not in the version")
    p.add_argument("--allow-file", action="store_true",
                   help="copy file:// references too (refused by default: a manifest in a shared store must not "
                        "make this machine copy its own files)")
    p.add_argument("--file-root", dest="file_roots", action="append", default=[], metavar="DIR",
                   help="copy file:// references below DIR (after following symlinks; repeatable)")
    history.as_of_option(p, "the version the alias named")
    json_option(p)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("ls", parents=[common], help="list projects, artifacts or versions")
    p.add_argument("target", nargs="?", metavar="PROJECT[/ARTIFACT]")
    p.add_argument("-t", "--type", metavar="TYPE", help="only artifacts of this type (with PROJECT)")
    history.as_of_option(p, "the project or artifact")
    json_option(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", parents=[common], help="show one version")
    p.add_argument("spec", metavar="PROJECT/ARTIFACT[:VERSION|:ALIAS]")
    p.add_argument("--files", action="store_true", help="list the files too")
    json_option(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("alias", parents=[common], help="set, remove or list aliases")
    asub = p.add_subparsers(dest="alias_command", metavar="ACTION", required=True)
    q = asub.add_parser("set", parents=[common], help="point ALIAS at a version (moving it if it exists)")
    q.add_argument("spec", metavar="PROJECT/ARTIFACT:VERSION")
    q.add_argument("alias", metavar="ALIAS")
    json_option(q)
    q.set_defaults(func=cmd_alias_set)
    q = asub.add_parser("rm", parents=[common], help="remove an alias")
    q.add_argument("spec", metavar="PROJECT/ARTIFACT")
    q.add_argument("alias", metavar="ALIAS")
    json_option(q)
    q.set_defaults(func=cmd_alias_rm)
    history.register_alias_log(asub, common)
    q = asub.add_parser("ls", parents=[common], help="list the aliases of an artifact")
    q.add_argument("spec", metavar="PROJECT/ARTIFACT")
    json_option(q)
    q.set_defaults(func=cmd_alias_ls)

    p = sub.add_parser("describe", parents=[common], help="change the description or metadata of a version")
    p.add_argument("spec", metavar="PROJECT/ARTIFACT:VERSION")
    p.add_argument("-d", "--description", help="the new description ('' clears it)")
    metadata_options(p)
    p.add_argument("--unset", action="append", metavar="KEY", help="remove a metadata key (repeatable)")
    json_option(p)
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("delete", parents=[common], help="delete a version and the blobs only it used")
    p.add_argument("spec", metavar="PROJECT/ARTIFACT:VERSION")
    p.add_argument("--delete-aliases", action="store_true", help="also remove the aliases pointing at it")
    json_option(p)
    p.set_defaults(func=cmd_delete)
