"""``artfs access set|show``: who may read and write a project.

The store enforces the level (see :mod:`artfs._access`); these commands only read and change
what the store enforces.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._access import LEVELS, Access, set_level, show
from .context import Context, json_option


def _text(a: Access) -> str:
    mark = "" if a.managed or a.level == "private" else " (not set by artfs)"
    lines = [f"{a.project}  {a.level}{mark}", f"    {a.detail}"]
    lines += [f"    note: {n}" for n in a.notes]
    return "\n".join(lines)


def cmd_access_show(ctx: Context) -> int:
    out = show(ctx.store, ctx.args.project)
    doc = {"store": ctx.store.url, "projects": [a.to_json() for a in out]}
    if ctx.args.project:
        doc = {"store": ctx.store.url, **out[0].to_json()}
    text = "\n".join(_text(a) for a in out) if out else f"no projects in {ctx.store.url}"
    ctx.emit(doc, text)
    return 0


def cmd_access_set(ctx: Context) -> int:
    a = set_level(ctx.store, ctx.args.project, ctx.args.level)
    ctx.emit({"store": ctx.store.url, **a.to_json()}, _text(a))
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "access", parents=[common], help="who may read and write a project (private, public, open)",
        description="Show or set a project's access level, enforced by the store itself: private (only those "
                    "the store's owner granted), public (anyone lists and reads; the team writes), open (anyone "
                    "also writes). On S3 artfs writes bucket-policy statements of its own and keeps every other "
                    "statement; on a local store it sets the modes and group of the project's directory; an "
                    "HTTPS store is public.")
    asub = p.add_subparsers(dest="access_command", metavar="ACTION", required=True)
    q = asub.add_parser("show", parents=[common], help="the access level of a project (default: every project)")
    q.add_argument("project", nargs="?", metavar="PROJECT")
    json_option(q)
    q.set_defaults(func=cmd_access_show)
    q = asub.add_parser("set", parents=[common], help="make a project private, public or open")
    q.add_argument("project", metavar="PROJECT")
    q.add_argument("level", choices=LEVELS, metavar="LEVEL", help="private, public or open")
    json_option(q)
    q.set_defaults(func=cmd_access_set)
