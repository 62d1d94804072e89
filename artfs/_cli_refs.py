"""``artfs reindex [PROJECT]``: rebuild the index files a read-only HTTP(S) copy of a store lists from.

Registered through :data:`artfs.cli.COMMAND_MODULES`. (``artfs put --reference`` lives in
``cli.py`` itself, with its options from :func:`artfs._refs.add_reference_args`.)
"""

from __future__ import annotations

import argparse
from typing import Any

from ._index import add_reindex_args, rebuild_index


def cmd_reindex(ctx: Any) -> None:
    store = ctx.store
    keys = rebuild_index(store, ctx.args.project)
    ctx.emit({"store": store.url, "written": keys}, f"{store.url}: wrote {len(keys)} index files")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "reindex", parents=[common], help="rebuild the index files that an HTTP(S) copy of the store lists from",
        description="Rebuild index.json files (projects, artifacts, versions, aliases) from a listing of the "
                    "store. Writers keep them up to date; run this after copying a store by hand, or when a "
                    "failed update was logged.",
    )
    add_reindex_args(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_reindex)
