"""``artfs doctor [--json]``: every check a mount needs and everything that makes it fast, each
with a verdict, a one-line detail and a fix (the checks are :mod:`artfs._doctor`'s).

Text: a table (CHECK, VERDICT, DETAIL), then the fix of each check that is not ``ok``, then one
line saying whether a mount would work. ``--json``: a list of ``{check, verdict, detail, fix}``.
Exit code 0 when a mount would work (no ``fail``), else 1 (the code of a plain ``ArtfsError``).
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import _doctor
from .._mounts import parse_seconds
from .context import Context, json_option
from .output import plural, table


def cmd_doctor(ctx: Context) -> int:
    checks = _doctor.run_all(store_url=ctx.args.store, cache_dir=ctx.args.cache_dir, timeout=ctx.args.timeout)
    ok = _doctor.works(checks)
    lines = [table(["CHECK", "VERDICT", "DETAIL"], [[c.check, c.verdict, c.detail] for c in checks])]
    fixes = [c for c in checks if c.verdict != _doctor.OK and c.fix]
    if fixes:
        lines += ["", "To fix:"] + [f"  {c.check}: {c.fix}" for c in fixes]
    failed = [c.check for c in checks if c.verdict == _doctor.FAIL]
    warned = sum(c.verdict == _doctor.WARN for c in checks)
    lines.append("")
    if failed:
        lines.append(f"a mount would not work: {', '.join(failed)} failed")
    else:
        lines.append("a mount would work" + (f" ({plural(warned, 'warning')})" if warned else ""))
    ctx.emit([c.doc() for c in checks], "\n".join(lines))
    return 0 if ok else 1


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "doctor", parents=[common], help="check what a mount needs and what makes it fast",
        description="Check everything a mount needs (/dev/fuse, fusermount3, the right to mount, pyfuse3, the "
                    "daemon, the cache, the store) and everything that makes it fast (passthrough, cached "
                    "listings, readdir names), each with a verdict (ok, warn, fail), a detail and a fix. Exits "
                    "0 when a mount would work, 1 when a check failed.",
    )
    p.add_argument("--timeout", type=parse_seconds, default=5.0, metavar="SECONDS",
                   help="how long the store may take to answer (default 5)")
    json_option(p, "print the checks as a JSON list of {check, verdict, detail, fix}")
    p.set_defaults(func=cmd_doctor)
