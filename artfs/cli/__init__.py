"""The ``artfs`` command line (and ``mount.artfs``): a leaf on top of the library, which never imports it.

    __init__.py     main(), mount_helper(): parse, then run; build_parser() assembles the commands
    context.py      Context (store and cache opened on first use), shared options and their values,
                    errors -> one line and an exit code (the table is in its docstring)
    output.py       how results print: JSON with --json, else text; sizes one way (1.5 MiB), times, tables
    artifacts.py    put, get, ls, show, alias, describe, delete
    references.py   what put logs: DIR and --reference [NAME=]URI
    maintenance.py  gc, cache info|cleanup, reindex, warmup
    mount.py        mount, umount, and mount.artfs's translation of mount(8) arguments
    drafts.py       status, commit
    groups.py       put --upsert, finish, pending groups in status (distributed writers)
    access.py       access show|set
    runs.py         run, runs ls|show, lineage
    fusebuild.py    build-fuse (the patched pyfuse3, artfs/_fusebuild)
    doctor.py       doctor: what a mount needs and what makes it fast (the checks: artfs._doctor)
    history.py      diff, alias log, --as-of (time and change);  replay.py  replay

A command is a function ``cmd_x(ctx) -> int | None`` set as ``func`` on its parser: it reads
``ctx.args``, writes its result to stdout through ``ctx.emit`` (text, or JSON with ``--json``),
notes and progress to stderr, and lets errors propagate to :func:`artfs.cli.context.run`.

Start-up: this module imports only :mod:`.context`, :mod:`.output` and :mod:`.mount`, which import
no store, so ``artfs --version`` answers before any command module (and httpx, boto3) is loaded;
:func:`build_parser` imports the command modules.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from .. import __version__
from .._errors import ArtfsError
from .context import Context, UsageError, fail, global_options, run
from .mount import mount_args
from .output import human_size

__all__ = ["Context", "UsageError", "build_parser", "command_names", "human_size", "main", "mount_args",
           "mount_helper"]


def _artifact_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """The commands W&B has under ``wandb artifact``: top-level, and again under ``artfs artifact``."""
    from . import artifacts, maintenance

    artifacts.register(sub, common)
    maintenance.register_gc_and_cache(sub, common)


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser; the order here is the order ``artfs -h`` lists them in."""
    from . import access, doctor, drafts, fusebuild, groups, history, maintenance, mount, registry, replay, runs  # on use

    common = argparse.ArgumentParser(add_help=False)
    global_options(common, suppress=True)
    parser = argparse.ArgumentParser(
        prog="artfs",
        description="Versioned datasets and models: log directories as versions, fetch them, mount them.",
        epilog="Run 'artfs COMMAND -h' for the options of a command. The options above may also follow "
               "the command.",
    )
    global_options(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"artfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _artifact_commands(sub, common)
    mount.register(sub, common)
    drafts.register(sub, common)
    maintenance.register_reindex(sub, common)
    maintenance.register_warmup(sub, common)
    access.register(sub, common)
    runs.register(sub, common)
    registry.register(sub, common)
    fusebuild.register(sub, common)
    doctor.register(sub, common)
    history.register(sub, common)
    replay.register(sub, common)
    p = sub.add_parser("artifact", parents=[common], help="W&B's spelling: artfs artifact put|get|ls|cache ...",
                       description="The same commands as 'artfs put', 'artfs get', ... so that scripts written "
                                   "for 'wandb artifact' port with a rename.")
    _artifact_commands(p.add_subparsers(dest="artifact_command", metavar="COMMAND", required=True), common)
    groups.register(sub, common)  # after put: it adds put's --upsert
    return parser


def command_names() -> list[str]:
    """The subcommands of ``artfs``."""
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(str(name) for name in action.choices or ())
    return []


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``artfs`` command line; returns the exit code."""
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:
        print(f"artfs {__version__}")  # before building every command's parser (and importing it)
        return 0
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage error (2) or --help/--version (0)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return run(args)


def mount_helper(argv: Sequence[str] | None = None) -> int:
    """``mount.artfs``: lets ``mount -t artfs STORE MNT`` and fstab lines start a mount."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        translated = mount_args(argv)
    except ArtfsError as e:
        return fail(str(e), e.exit_code, False)
    if translated is None:
        return 0
    return main(translated)
