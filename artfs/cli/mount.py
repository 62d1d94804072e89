"""``artfs mount``, ``artfs umount`` and ``mount.artfs`` (``mount -t artfs``, fstab lines).

The mount daemon lives in the ``artfsd`` package, which imports artfs and never the other way
round: ``artfs mount`` therefore *execs* the daemon (``python -P -c`` ``DAEMON_BOOT``, which runs
``artfsd.main``) with the options it parsed (same process id, so ``artfs mount -f`` under
systemd is the unit's main process). ``-P`` keeps the current directory off ``sys.path``: a folder
named ``artfs`` where the user stands (a fresh clone) must not shadow the installed package, while
``$PYTHONPATH`` still counts. The options are defined once, in :mod:`artfs._mounts` (the one
argparse code outside this package, because the daemon's own parser uses it too and must not
import the CLI).

Before the exec, ``artfs mount`` refuses what the daemon would only discover later or never: a
mountpoint that is missing or not empty (unless ``--allow-non-empty``/``-o nonempty``: the mount
would hide its files), a local store that does not exist (a typo) unless the mount is writable,
which creates the store and says so, and a machine where no mount can work (``/dev/fuse`` this
user may not open, no setuid ``fusermount3``, no right to mount: :func:`artfs._doctor.mount_blockers`),
naming the cause and ``artfs doctor``. Once mounted, the daemon's parent prints one line naming the
fast paths that are off and why (:func:`artfs._doctor.mount_note`).

``artfs umount MNT`` finds the daemon of the mount (its ``user.artfs.pid`` attribute on the mount
root, else the pidfile ``<cache>/run/<key>.pid`` the daemon writes), runs ``fusermount3 -u MNT``
and waits until the daemon process has exited, so that whatever the daemon does at unmount is
finished when the command returns; then it prints what the daemon committed.

This module is imported with :mod:`artfs.cli` (for :func:`mount_args`), so it imports nothing
heavy: no store, no drafts.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shlex
import sys
import threading
from typing import Any, Sequence

from .. import _xattrs
from .._cache import default_cache_dir
from .._errors import ArtfsError, NotFound
from .._umount import COMMITTING, Failure, UnmountReport
from .._mounts import (
    DAEMON_BOOT, FSTYPE, is_generic, MountUsageError, add_mount_arguments, apply_mount_options,
    daemon_argv, find_mount, parse_seconds, results_path, unmount,
)
from ..backends import default_store_url
from .context import Context, UsageError, missing_store_message
from .output import commit_text


# -- artfs mount -----------------------------------------------------------------------------------
def cmd_mount(ctx: Context) -> int:
    args = apply_mount_options(ctx.args)
    if getattr(args, "no_sign_request", False):
        os.environ["ARTFS_NO_SIGN_REQUEST"] = "1"  # the daemon (exec'd below) sends unsigned requests

    store = args.store_url or getattr(args, "store", None) or default_store_url()
    if "://" not in store:
        store = os.path.abspath(os.path.expanduser(store))
    args.mountpoint = os.path.abspath(args.mountpoint)
    _check_mountpoint(args.mountpoint, allow_non_empty=args.allow_non_empty)
    from .._doctor import check_can_mount  # here: `artfs --version` imports this module

    check_can_mount()  # /dev/fuse, fusermount3, the right to mount: say which, and `artfs doctor`
    if "://" not in store and not os.path.isdir(store):
        explicit = bool(args.store_url or getattr(args, "store", None) or os.environ.get("ARTFS_STORE"))
        if args.read_only or os.path.exists(store):
            raise NotFound(missing_store_message(store, explicit=explicit))
        os.makedirs(store)
        ctx.note(f"created the store {store}")
    if importlib.util.find_spec("artfsd") is None:
        raise ArtfsError("the mount daemon (the artfsd package) is not installed")
    argv = [sys.executable, "-P", "-c", DAEMON_BOOT, *daemon_argv(args, store)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
    return 1  # not reached


def _check_mountpoint(mnt: str, *, allow_non_empty: bool) -> None:
    """Refuse a missing mountpoint, a file, an artfs mount already there, and files a mount would hide."""
    if not os.path.exists(mnt):
        raise NotFound(f"mountpoint {mnt} does not exist (mkdir -p {mnt})")
    if not os.path.isdir(mnt):
        raise MountUsageError(f"mountpoint {mnt} is not a directory")
    info = find_mount(mnt)
    if info is not None and info.fstype == FSTYPE:
        raise MountUsageError(f"{mnt} is already an artfs mount (artfs umount {mnt} first)")
    if not allow_non_empty:
        try:
            with os.scandir(mnt) as it:
                first = next(it, None)
        except OSError:
            return  # the daemon reports what it cannot do with the directory
        if first is not None:
            raise MountUsageError(f"mountpoint {mnt} is not empty (it holds {first.name!r}, which the mount would "
                                  "hide): use an empty directory, or --allow-non-empty (-o nonempty)")


# -- artfs umount ----------------------------------------------------------------------------------
def _xattr_text(mountpoint: str, name: str, wait: float = 3.0) -> str | None:
    """An attribute of the mount root (in a thread: a hung daemon must not hang us)."""
    out: list[str] = []

    def ask() -> None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            out.append(os.getxattr(mountpoint, name).decode())

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(wait)
    return out[0] if out else None


def cmd_umount(ctx: Context) -> int:
    """Unmount, wait for the daemon (which commits every changed draft first), print what it made."""
    args = ctx.args
    dirs = [d for d in (getattr(args, "cache_dir", None), default_cache_dir()) if d]
    mnt = os.path.abspath(args.mountpoint)
    info = find_mount(mnt)
    report = _xattr_text(mnt, _xattrs.full(_xattrs.RESULTS)) if info is not None and info.fstype == FSTYPE else None
    pid = unmount(args.mountpoint, lazy=args.lazy, timeout=args.timeout, cache_dirs=dirs, note=ctx.note)
    return report_unmount(ctx, mnt, pid, report, [results_path(d, mnt) for d in dirs])


def report_unmount(ctx: Context, mountpoint: str, pid: int | None, report: str | None, fallbacks: list[str]) -> int:
    """Print what the daemon committed at unmount (its report file, written just before it exits).

    ``report`` is the path the mount named (``user.artfs.results``; None for a read-only mount or
    a daemon that did not answer), ``fallbacks`` where else to look. Exit code 1 if a commit failed,
    or if the daemon died before reporting (its ``"state": "committing"`` report names the drafts
    it did not finish: they are kept, and the message says how to commit them).
    """
    doc: UnmountReport | None = None
    for path in ([report] if report else []) + fallbacks:
        d = UnmountReport.read(path)
        if d is not None and d.mountpoint == mountpoint and (pid is None or d.pid == pid):
            doc = d
            break
    if doc is None or doc.state == COMMITTING:
        # The daemon died before it reported (SIGKILL, OOM, a crash): nothing it was to commit can be
        # counted as committed. Its first report, if any, names the drafts it was committing.
        if not report and doc is None:
            return 0  # a read-only mount (or a daemon that cannot say): nothing to commit
        names = list(doc.drafts) if doc is not None else []
        store = doc.store if doc is not None else None
        opt = f" --store {shlex.quote(store)}" if store else ""
        failed = [Failure(n, f"{n}: not committed: the mount daemon died while committing the drafts; "
                             f"the draft is kept; commit it with `artfs commit{opt} {n}`") for n in names]
        if ctx.json:
            ctx.emit({"mountpoint": mountpoint, "commits": [], "unchanged": [],
                      "failed": [f.to_dict() for f in failed], "daemon_died": True}, None)
        for fail in failed:
            ctx.note(f"artfs: error: {fail.error}")
        if not names:
            ctx.note("artfs: error: the mount daemon exited without reporting its commits, so drafts may not be "
                     "committed; they are kept: `artfs status` lists them and `artfs commit PROJECT/ARTIFACT` "
                     "commits one")
        return 1
    lines = [commit_text(c) for c in doc.commits]
    ctx.emit(doc.to_dict(), "\n".join(lines) if lines else None)
    for f in doc.failed:
        ctx.note(f"artfs: error: {f.error or f.name}")
    if doc.failed:
        ctx.note("the drafts above are kept; `artfs status` lists them, and `artfs commit PROJECT/ARTIFACT` "
                 "commits one once the store can be reached (or mount and unmount again)")
        return 1
    return 0


# -- mount.artfs -----------------------------------------------------------------------------------
def mount_args(argv: Sequence[str]) -> list[str] | None:
    """Translate ``mount.artfs STORE MNT [-sfnv] [-o opts]`` into ``artfs`` arguments (None: fake mount).

    ``ro`` becomes ``--read-only``; ``cache_dir=D`` and ``debug`` become global options; options of
    mount(8) itself (``rw``, ``noauto``, ``_netdev``, ``x-systemd.*``, ...) are dropped; any other
    ``key=value`` becomes ``--key value`` and a bare ``key`` becomes ``--key`` (``_`` read as ``-``).
    """
    positional: list[str] = []
    opts: list[str] = []
    fake = False
    it = iter(argv)
    for arg in it:
        if arg == "-o":
            opts += next(it, "").split(",")
        elif arg.startswith("-o"):
            opts += arg[2:].split(",")
        elif arg in ("-N", "-t"):
            next(it, None)
        elif arg.startswith("-") and len(arg) > 1 and not arg.startswith("--"):
            fake = fake or "f" in arg[1:]  # -s sloppy, -n no mtab, -v verbose: nothing to do
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise UsageError("usage: mount.artfs STORE MOUNTPOINT [-o OPTIONS]")
    glob: list[str] = []
    own: list[str] = []
    for o in filter(None, (o.strip() for o in opts)):
        key, sep, value = o.partition("=")
        if is_generic(key, value) or key.startswith(("x-", "comment")):
            continue
        if key == "ro":
            own.append("--read-only")
        elif key == "debug":
            glob.append("--debug")
        elif key in ("cache_dir", "cache-dir"):
            glob += ["--cache-dir", value]
        else:
            own += [f"--{key.replace('_', '-')}"] + ([value] if sep else [])
    return None if fake else [*glob, "mount", positional[0], positional[1], *own]


# -- parsers ---------------------------------------------------------------------------------------
def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "mount", parents=[common], help="mount a store: MNT/<project>/<artifact>/vN/...",
        description="Mount a store as a directory tree: MNT/<project>/<artifact>/vN/... (read-only versions) "
                    "and MNT/<project>/<artifact>/<alias> -> vN, plus a writable MNT/<project>/<artifact>/draft/ "
                    "that 'artfs umount MNT' commits as the next version. Returns once the mount is ready; the "
                    "daemon keeps running in the background until 'artfs umount MNT'.",
    )
    add_mount_arguments(p, daemon=False)
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser("umount", parents=[common], help="unmount, commit the drafts and wait for the daemon",
                       description="Unmount MNT (fusermount3 -u) and wait until its daemon has committed every "
                                   "draft that changed (each becomes the next version, tagged latest) and exited; "
                                   "prints the versions it created.")
    p.add_argument("mountpoint", metavar="MNT")
    p.add_argument("-z", "--lazy", action="store_true", help="detach now even if busy (fusermount3 -z)")
    p.add_argument("--timeout", type=parse_seconds, default=600.0, metavar="SECONDS",
                   help="how long to wait for the daemon to finish (default 600)")
    p.add_argument("--json", action="store_true", help="print what the unmount committed as JSON")
    p.set_defaults(func=cmd_umount)
