"""``artfs mount`` and ``artfs umount`` (registered into :mod:`artfs.cli`).

The mount daemon lives in the ``artfsd`` package, which imports artfs and never the other way
round: ``artfs mount`` therefore *execs* the daemon (``python -P -c`` :data:`DAEMON_BOOT`, which
runs ``artfsd.main``) with the options it parsed (same process id, so ``artfs mount -f`` under
systemd is the unit's main process). ``-P`` keeps the current directory off ``sys.path``: a folder
named ``artfs`` where the user stands (a fresh clone) must not shadow the installed package, while
``$PYTHONPATH`` still counts. The options are defined once, here, and the daemon's own parser uses
:func:`add_mount_arguments` too.

Before the exec, ``artfs mount`` refuses what the daemon would only discover later or never: a
mountpoint that is missing or not empty (unless ``--allow-non-empty``/``-o nonempty``: the mount
would hide its files) and a local store that does not exist (a typo) unless the mount is writable,
which creates the store and says so.

``artfs umount MNT`` finds the daemon of the mount (its ``user.artfs.pid`` attribute on the mount
root, else the pidfile ``<cache>/run/<key>.pid`` the daemon writes), runs ``fusermount3 -u MNT``
and waits until the daemon process has exited, so that whatever the daemon does at unmount is
finished when the command returns.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import threading
from typing import Any

from ._cache import default_cache_dir
from ._errors import ArtfsError, NotFound
from ._mounts import (  # noqa: F401  (also re-exported: the names the CLI module always had)
    DAEMON_BOOT, FSTYPE, MountUsageError, add_mount_arguments, apply_mount_options, daemon_argv, find_mount,
    parse_seconds, results_path, unmount,
)


# -- commands ------------------------------------------------------------------------------------
def cmd_mount(ctx: Any) -> int:
    args = apply_mount_options(ctx.args)
    from .backends import default_store_url

    if getattr(args, "no_sign_request", False):
        os.environ["ARTFS_NO_SIGN_REQUEST"] = "1"  # the daemon (exec'd below) sends unsigned requests

    store = args.store_url or getattr(args, "store", None) or default_store_url()
    if "://" not in store:
        store = os.path.abspath(os.path.expanduser(store))
    args.mountpoint = os.path.abspath(args.mountpoint)
    _check_mountpoint(args.mountpoint, allow_non_empty=args.allow_non_empty)
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


def missing_store_message(path: str, *, explicit: bool) -> str:
    """What to say about a local store directory that does not exist."""
    if explicit:
        return f"no store at {path} (check the path; 'artfs put' or a writable 'artfs mount' creates a new one)"
    return f"no store yet at {path}; 'artfs put' (or a writable 'artfs mount') creates it"


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


def cmd_umount(ctx: Any) -> int:
    """Unmount, wait for the daemon (which commits every changed draft first), print what it made."""
    from ._cli_draft import report_unmount

    args = ctx.args
    dirs = [d for d in (getattr(args, "cache_dir", None), default_cache_dir()) if d]
    mnt = os.path.abspath(args.mountpoint)
    info = find_mount(mnt)
    report = _xattr_text(mnt, "user.artfs.results") if info is not None and info.fstype == FSTYPE else None
    pid = unmount(args.mountpoint, lazy=args.lazy, timeout=args.timeout, cache_dirs=dirs, note=ctx.note)
    return report_unmount(ctx, mnt, pid, report, [results_path(d, mnt) for d in dirs])


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
