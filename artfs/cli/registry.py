"""The model registry on the command line: ``link``, ``unlink``, and what ``ls`` shows of collections.

The library side is :mod:`artfs._registry` (collections whose versions link other versions).
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import _registry as registry
from .._artifact import Artifact
from .._lineage import version_ref
from .._names import check_alias
from .._run import link_to
from .._store import Store
from .context import Context, json_option, spec
from .output import table, when


def registry_docs(store: Store, project: str) -> list[dict[str, Any]]:
    """The collections of ``project`` as ``ls PROJECT`` lists them beside its artifacts."""
    docs = []
    for c in registry.collections(store, project):
        live = registry.links(store, project, c)
        kind = live[0].type if live else None
        latest = registry.aliases(store, project, c, live).get("latest")
        docs.append({"artifact": c, "type": kind, "versions": len(live), "latest": latest, "collection": True})
    return docs


def ls_collection(ctx: Context, project: str, collection: str) -> None:
    """``ls REGISTRY/COLLECTION``: each linked version, its aliases and the version it links."""
    store = ctx.store
    live = registry.links(store, project, collection)
    aliases = registry.aliases(store, project, collection, live)
    docs: list[dict[str, Any]] = [{"name": lk.name, "version": lk.n, "type": lk.type, "source": version_ref(*lk.source),
             "aliases": sorted(a for a, v in aliases.items() if v == lk.n), "linked": lk.created, "run": lk.run}
            for lk in live]
    ctx.emit(docs, table(("VERSION", "ALIASES", "LINKS", "LINKED"), [
        (f"v{d['version']}", ",".join(d["aliases"]), d["source"], when(d["linked"]) if d["linked"] else "")
        for d in docs]) if docs else f"{project}/{collection}: no linked versions")


def cmd_link(ctx: Context) -> None:
    a = ctx.args
    s = spec(a.spec)
    art = Artifact.of_version(ctx.store, *ctx.store.resolve(s))
    aliases = [check_alias(x) for x in a.alias or []]
    linked = link_to(art, a.target, aliases)
    text = f"{linked.qualified_name} links {art.qualified_name}" + (
        f"; aliases: {', '.join(linked.aliases)}" if linked.aliases else "")
    ctx.emit({"name": linked.qualified_name, "source": art.qualified_name, "aliases": linked.aliases}, text)


def cmd_unlink(ctx: Context) -> None:
    s = spec(ctx.args.spec)
    lk = registry.resolve(ctx.store, s.project, s.artifact, s.version, s.alias)
    registry.unlink(ctx.store, lk)
    ctx.emit({"name": lk.name, "source": version_ref(*lk.source)},
             f"{lk.name} unlinked ({version_ref(*lk.source)} is kept)")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("link", parents=[common], help="link a version into a registry collection",
                       description="W&B's model registry: make the next version of REGISTRY/COLLECTION point at "
                                   "a version (no bytes are copied), with aliases of its own there.")
    p.add_argument("spec", metavar="PROJECT/ARTIFACT[:VERSION|:ALIAS]")
    p.add_argument("target", metavar="REGISTRY/COLLECTION", help="e.g. wandb-registry-model/bike-models")
    p.add_argument("-a", "--alias", action="append", metavar="ALIAS", help="alias in the collection (repeatable)")
    json_option(p)
    p.set_defaults(func=cmd_link)
    p = sub.add_parser("unlink", parents=[common], help="remove a linked version from its collection")
    p.add_argument("spec", metavar="REGISTRY/COLLECTION:VERSION|ALIAS")
    json_option(p)
    p.set_defaults(func=cmd_unlink)
