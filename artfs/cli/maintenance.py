"""Keeping a store and the local cache in shape: ``gc``, ``cache info|cleanup``, ``reindex``, ``warmup``.

``gc`` and ``cache`` are also registered under ``artfs artifact ...`` (W&B's ``wandb artifact
cache cleanup``); the library side is ``Store.gc``, :mod:`artfs._cache`, :mod:`artfs._index` and
:mod:`artfs._warmup`.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._cache import Cache
from .._index import rebuild_index
from .._names import check_name
from .._errors import NotFound
from .._warmup import DEFAULT_THREADS, select, warmup
from .context import Context, did_you_mean, json_option, size
from .output import human_size, plural


# -- gc and the cache ------------------------------------------------------------------------------
def cmd_gc(ctx: Context) -> None:
    project = check_name(ctx.args.project, "project")
    store = ctx.store
    if project not in store.backend.list_dirs(""):
        raise NotFound(f"{project}: no such project in {store.url}{did_you_mean(project, store.projects())}")
    r = store.gc(project, dry_run=ctx.args.dry_run)
    verb = "would remove" if ctx.args.dry_run else "removed"
    text = (f"{project}: {verb} {plural(r['blobs_removed'], 'unreferenced blob')} "
            f"({human_size(r['bytes_freed'])}) and {plural(r['stale_removed'], 'stale file')}")
    if r.get("groups_removed"):
        text += f"; {plural(r['groups_removed'], 'abandoned or finished group')} cleaned up"
    ctx.emit({"project": project, "dry_run": ctx.args.dry_run, **r}, text)


def _cache_doc(cache: Cache) -> dict[str, Any]:
    i = cache.info()
    return {"path": i.path, "blobs": i.blobs, "bytes": i.bytes, "partial": i.partial,
            "partial_bytes": i.partial_bytes, "limit": i.limit}


def cmd_cache_info(ctx: Context) -> None:
    d = _cache_doc(ctx.cache)
    text = "\n".join([
        f"path     {d['path']}",
        f"blobs    {d['blobs']} ({human_size(d['bytes'])})",
        f"partial  {d['partial']} ({human_size(d['partial_bytes'])})",
        f"limit    {human_size(d['limit'])}",
    ])
    ctx.emit(d, text)


def cmd_cache_cleanup(ctx: Context) -> None:
    target = size(ctx.args.size)
    removed, freed = ctx.cache.cleanup(target, remove_temp=ctx.args.remove_temp)
    d = _cache_doc(ctx.cache)
    text = (f"removed {plural(removed, 'file')} ({human_size(freed)}); the cache holds "
            f"{human_size(d['bytes'] + d['partial_bytes'])} in {d['path']}")
    ctx.emit({"removed": removed, "bytes_freed": freed, **d}, text)


def register_gc_and_cache(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("gc", parents=[common], help="remove blobs no version needs, and leftovers of crashes")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("--dry-run", action="store_true", help="only report what would be removed")
    json_option(p)
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("cache", parents=[common], help="inspect or shrink the local cache")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    q = csub.add_parser("info", parents=[common], help="where the cache is and what it holds")
    json_option(q)
    q.set_defaults(func=cmd_cache_info)
    q = csub.add_parser("cleanup", parents=[common], help="evict least recently used blobs down to SIZE")
    q.add_argument("size", metavar="SIZE", help="e.g. 1GB, 500M, 0")
    q.add_argument("--remove-temp", action="store_true",
                   help="also remove every temp file not written to for a minute (W&B's flag; without it, "
                        "those over an hour old)")
    json_option(q)
    q.set_defaults(func=cmd_cache_cleanup)


# -- reindex ---------------------------------------------------------------------------------------
def cmd_reindex(ctx: Context) -> None:
    store = ctx.store
    keys = rebuild_index(store, ctx.args.project)
    ctx.emit({"store": store.url, "written": keys}, f"{store.url}: wrote {len(keys)} index files")


def register_reindex(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "reindex", parents=[common], help="rebuild the index files that an HTTP(S) copy of the store lists from",
        description="Rebuild index.json files (projects, artifacts, versions, aliases) from a listing of the "
                    "store. Writers keep them up to date; run this after copying a store by hand, or when a "
                    "failed update was logged.",
    )
    p.add_argument("project", nargs="?", default=None,
                   help="only this project (default: every project, and the root index)")
    json_option(p)
    p.set_defaults(func=cmd_reindex)


# -- warmup ----------------------------------------------------------------------------------------
def cmd_warmup(ctx: Context) -> None:
    a = ctx.args
    art = ctx.store.artifact(a.spec)
    entries = select(art.manifest.entries, a.paths)
    total = sum({e.digest: e.size for e in entries if e.digest}.values())
    with ctx.progress(total, "warmup") as cb:
        r = warmup(art, a.paths, threads=a.threads, progress=cb, allow_file=a.allow_file)
    limit = ctx.store.cache.max_size
    text = (f"{art.qualified_name}: {r.files} files, {r.blobs} blobs; fetched {r.fetched} "
            f"({human_size(r.fetched_bytes)}), {human_size(r.cached_bytes)} were cached already")
    if limit and total > limit:
        text += f"\nwarning: {human_size(total)} do not fit in the cache's bound of {human_size(limit)}"
    ctx.emit({"name": art.qualified_name, **r.__dict__, "size": total, "cache_limit": limit}, text)


def register_warmup(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "warmup", parents=[common], help="fill the local cache with a version's files ahead of a job",
        description="Fetch the files of a version (or of the given paths in it) into the local cache, many "
                    "at once, so that a mount or `artfs get` then reads them locally.",
    )
    p.add_argument("spec", metavar="PROJECT/ARTIFACT[:VERSION]", help="the version (default: latest)")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories of the version (default: all)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=f"blobs fetched at once (default {DEFAULT_THREADS})")
    p.add_argument("--allow-file", action="store_true", help="read file:// references of this machine")
    json_option(p)
    p.set_defaults(func=cmd_warmup)
