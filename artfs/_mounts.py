"""Mounts of artfs, shared by ``artfs mount``/``umount`` and the mount daemon (``artfsd``).

The options of a mount are defined once, here (:func:`add_mount_arguments`), because two
programs parse them: ``artfs mount`` (which checks them and then execs the daemon) and the daemon
itself (``python -m artfsd.main``, as the tests and systemd start it), which turns them into one
:class:`artfs._mountconfig.MountConfig` (the defaults live there). The rest is the mount
table (:func:`find_mount`), where a mount's daemon leaves its pid and its commit report
(:func:`pidfile_path`, :func:`results_path`), its log (:func:`default_log_path`), and the
unmount that waits for the daemon (:func:`unmount`). The daemon reaches all of it through
:mod:`artfs.lowlevel`; nothing here is a command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

import xxhash

from ._asof import parse_time
from ._lineage import parse_run_path
from ._cache import default_cache_dir, parse_size
from . import _xattrs
from ._errors import ArtfsError, NotFound
from ._mountconfig import DEFAULT_REFRESH, DEFAULT_TIMEOUT

FSTYPE = "fuse.artfs"

# options of mount(8)/fstab that are not artfs's business (mount.artfs drops them too)
GENERIC_MOUNT_OPTIONS = frozenset({
    "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev", "nofail",
    "exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync", "async", "atime", "noatime", "relatime",
    "norelatime", "strictatime", "diratime", "nodiratime", "lazytime", "nolazytime", "loud", "silent",
})


def is_generic(key: str, value: str) -> bool:
    """An option of mount(8) itself, which artfs ignores. ``group`` bare is mount(8)'s (members of
    the device's group may mount); ``group=G`` is artfs's (drafts become parts of group G)."""
    return key in GENERIC_MOUNT_OPTIONS and not (key == "group" and value)


class MountUsageError(ArtfsError):
    """A mount command line that cannot work (unknown ``-o`` option, a non-empty mountpoint, ...)."""

    exit_code = 2


#: What ``artfs mount`` runs with ``python -P -c``: the daemon's ``main``, and if even importing it
#: fails (a broken installation), one ``artfs: error:`` line naming the log, the traceback in the log.
DAEMON_BOOT = """\
import sys
try:
    from artfsd.main import main
except BaseException as e:
    import os, traceback
    log = sys.argv[sys.argv.index("--log-file") + 1] if "--log-file" in sys.argv[:-1] else None
    where = ""
    if log:
        try:
            os.makedirs(os.path.dirname(log), exist_ok=True)
            with open(log, "a") as f:
                traceback.print_exc(file=f)
            where = f" (log: {log})"
        except OSError:
            pass
    print(f"artfs: error: cannot start the mount daemon: {type(e).__name__}: {e}{where}", file=sys.stderr)
    sys.exit(1)
sys.exit(main(sys.argv[1:]))
"""


# -- options -------------------------------------------------------------------------------------
def parse_seconds(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number of seconds") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{s!r}: must be positive")
    return v


def _size(s: str) -> int:
    try:
        return parse_size(s)
    except ArtfsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _time(s: str) -> str:
    """``--as-of``'s TIME, checked here (a usage error) and passed on as given."""
    try:
        parse_time(s)
    except ArtfsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return s


def _run_path(s: str) -> str:
    try:
        return "/".join(parse_run_path(s))
    except ArtfsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_mount_arguments(p: argparse.ArgumentParser, *, daemon: bool) -> None:
    """The options of ``artfs mount`` (``daemon``: also those the CLI has as global options)."""
    p.add_argument("store_url", nargs="?", metavar="STORE",
                   help="a directory, s3://bucket/prefix or https://... (default: --store, $ARTFS_STORE, "
                        "else ~/.local/share/artfs/store)")
    p.add_argument("mountpoint", metavar="MNT", help="an existing directory")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground and log to stderr (default: return once mounted, log to a file)")
    p.add_argument("--read-only", action="store_true", help="mount read-only (no draft/ for writing)")
    p.add_argument("--as-of", type=_time, metavar="TIME",
                   help="show the store as it was at TIME (ISO 8601: 2026-11-30T12:00Z; without a zone, local "
                        "time): only versions that existed then and still exist, aliases where they pointed; "
                        "read-only")
    p.add_argument("--run", dest="replay_run", type=_run_path, metavar="PROJECT/RUN_ID",
                   help="show only what the run read: each artifact it used with the versions it used, and the "
                        "aliases it could have read them through pinned there; read-only")
    p.add_argument("--cache-size", type=_size, metavar="SIZE",
                   help="bound of the local cache, enforced while mounted (e.g. 20G; default: 10%% of its disk)")
    p.add_argument("--refresh", type=parse_seconds, default=DEFAULT_REFRESH, metavar="SECONDS",
                   help=f"new versions and moved aliases show up within this time (default {DEFAULT_REFRESH:g})")
    p.add_argument("--timeout", type=parse_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"a read the store cannot serve fails with EIO after this time (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users access the mount (needs user_allow_other in /etc/fuse.conf)")
    p.add_argument("--allow-group", metavar="GROUP",
                   help="let only the members of GROUP (and you) use the mount: implies --allow-other; every "
                        "file shows GROUP as its group and no permissions for others (default_permissions)")
    p.add_argument("--allow-file", action="store_true",
                   help="let file:// references be read (off by default: a manifest in a shared store must not "
                        "make the mount read this machine's files; reading one gives EACCES)")
    p.add_argument("--file-root", dest="file_roots", action="append", default=[], metavar="DIR",
                   help="let file:// references below DIR be read (after following symlinks; repeatable)")
    p.add_argument("--allow-non-empty", action="store_true",
                   help="mount even if MNT holds files (they are hidden while mounted; refused by default)")
    p.add_argument("--group", metavar="GROUP",
                   help="distributed writers: commit each draft at unmount as a part of GROUP (a pending version "
                        "that `artfs finish PROJECT/ARTIFACT --group GROUP` makes) instead of as a version")
    p.add_argument("--no-lineage", action="store_true",
                   help="do not record which runs read and wrote what through the mount (see 'artfs lineage')")
    p.add_argument("--no-passthrough", action="store_true",
                   help="serve every read through the daemon, never by FUSE passthrough of the cache file "
                        "(what a machine without passthrough gets: to test or measure that path)")
    p.add_argument("--log-file", metavar="FILE",
                   help="log here in background mode (default: $XDG_STATE_HOME/artfs/mount-<MNT>.log)")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                   help="options as in fstab: ro, allow_other, cache_size=20G, cache_dir=D, refresh=S, timeout=S, "
                        "allow_file, file_root=DIR, nonempty, allow_group=GROUP, no_sign_request, no_passthrough, debug; mount(8)'s "
                        "own (rw, nodev, _netdev, x-systemd.*, ...) are ignored")
    if daemon:
        p.add_argument("--cache-dir", metavar="DIR", help="the local cache (default: $ARTFS_CACHE_DIR or ~/.cache/artfs)")
        p.add_argument("--debug", action="store_true", help="log details")


def apply_mount_options(args: argparse.Namespace) -> argparse.Namespace:
    """Fold ``-o a,b=c`` into ``args`` (``args.options`` is emptied)."""
    for group in args.options:
        for opt in filter(None, (o.strip() for o in group.split(","))):
            key, sep, value = opt.partition("=")
            key = key.replace("-", "_")
            if is_generic(key, value) or key.startswith(("x_", "comment")) or opt.startswith("x-"):
                continue
            if key in ("ro", "read_only"):
                args.read_only = True
            elif key in ("allow_other", "allow_file", "debug", "foreground", "no_lineage", "no_passthrough") and not sep:
                setattr(args, key, True)
            elif key in ("nonempty", "allow_non_empty") and not sep:
                args.allow_non_empty = True
            elif key == "no_sign_request" and not sep:
                # unsigned S3 requests (public projects without credentials): the backend reads the
                # variable, and the daemon inherits it
                args.no_sign_request = True
                os.environ["ARTFS_NO_SIGN_REQUEST"] = "1"
            elif key == "allow_group" and sep and value:
                args.allow_group = value
            elif key == "nolineage" and not sep:
                args.no_lineage = True
            elif key == "file_root" and sep and value:
                args.file_roots = [*(getattr(args, "file_roots", None) or []), value]
            elif key in ("cache_size", "refresh", "timeout", "cache_dir", "log_file", "group", "as_of") and sep and value:
                try:
                    conv = {"cache_size": _size, "refresh": parse_seconds, "timeout": parse_seconds,
                            "as_of": _time}.get(key, str)
                    setattr(args, key, conv(value))
                except argparse.ArgumentTypeError as e:
                    raise MountUsageError(f"-o {opt}: {e}") from None
            else:
                raise MountUsageError(
                    f"unknown mount option {opt!r} (artfs knows ro, allow_other, cache_size=SIZE, cache_dir=DIR, "
                    "refresh=S, timeout=S, log_file=FILE, allow_file, file_root=DIR, nonempty, allow_group=GROUP, as_of=TIME, "
                    "no_sign_request, no_passthrough, debug)"
                )
    args.options = []
    return args


def daemon_argv(args: argparse.Namespace, store: str) -> list[str]:
    """Arguments of ``python -m artfsd.main`` for parsed ``artfs mount`` options."""
    argv = [store, args.mountpoint, "--refresh", repr(args.refresh), "--timeout", repr(args.timeout)]
    if args.foreground:
        argv.append("-f")
    if args.read_only:
        argv.append("--read-only")
    if getattr(args, "as_of", None):
        argv += ["--as-of", args.as_of]
    if getattr(args, "replay_run", None):
        argv += ["--run", args.replay_run]
    if args.allow_other:
        argv.append("--allow-other")
    if getattr(args, "allow_file", False):
        argv.append("--allow-file")
    if getattr(args, "allow_group", None):
        argv += ["--allow-group", args.allow_group]
    if getattr(args, "no_lineage", False):
        argv.append("--no-lineage")
    if getattr(args, "no_passthrough", False):
        argv.append("--no-passthrough")
    for root in getattr(args, "file_roots", None) or []:
        argv += ["--file-root", os.path.abspath(os.path.expanduser(root))]
    if args.cache_size is not None:
        argv += ["--cache-size", str(args.cache_size)]
    if getattr(args, "cache_dir", None):
        argv += ["--cache-dir", os.path.abspath(args.cache_dir)]
    if getattr(args, "log_file", None):
        argv += ["--log-file", os.path.abspath(args.log_file)]
    elif not args.foreground:  # named here so that even a daemon that cannot start logs there
        argv += ["--log-file", default_log_path(args.mountpoint)]
    if getattr(args, "debug", False):
        argv.append("--debug")
    if getattr(args, "group", None):
        argv += ["--group", args.group]
    return argv


def default_log_path(mountpoint: str) -> str:
    """``$XDG_STATE_HOME/artfs/mount-<mountpoint>.log``: where a background daemon logs."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    slug = os.path.abspath(mountpoint).strip("/").replace("/", "-") or "root"
    return os.path.join(base, "artfs", f"mount-{slug}.log")


# -- mounts --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MountInfo:
    mountpoint: str
    fstype: str
    source: str
    device: str  # "major:minor"


def _unescape(s: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def find_mount(path: str) -> MountInfo | None:
    """The mount at exactly ``path`` (the last one stacked there), from /proc/self/mountinfo."""
    path = os.path.abspath(path)
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                rfields = right.split()
                if len(fields) >= 5 and _unescape(fields[4]) == path:
                    found = MountInfo(path, rfields[0] if rfields else "", _unescape(rfields[1]) if len(rfields) > 1 else "",
                                      fields[2])
    except OSError:
        return None
    return found


def pidfile_path(cache_root: str, mountpoint: str) -> str:
    key = xxhash.xxh64_hexdigest(os.path.abspath(mountpoint).encode())
    return os.path.join(cache_root, "run", f"{key}.pid")


def results_path(cache_root: str, mountpoint: str) -> str:
    """Where the daemon reports what it committed at unmount (JSON, written just before it exits)."""
    return pidfile_path(cache_root, mountpoint)[: -len(".pid")] + ".result.json"


def _is_daemon(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"artfsd" in cmd or b"artfs\x00mount" in cmd


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _xattr_pid(mountpoint: str, wait: float = 3.0) -> int | None:
    """The daemon's pid from the mount root (in a thread: a hung daemon must not hang us)."""
    out: list[int] = []

    def ask() -> None:
        try:
            out.append(int(os.getxattr(mountpoint, _xattrs.full(_xattrs.PID))))
        except (OSError, ValueError):
            pass

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(wait)
    return out[0] if out else None


def daemon_pid(mountpoint: str, cache_dirs: list[str]) -> int | None:
    pid = _xattr_pid(mountpoint)
    if pid and _is_daemon(pid):
        return pid
    for root in cache_dirs:
        try:
            with open(pidfile_path(root, mountpoint)) as f:
                pid = int(f.readline())
        except (OSError, ValueError):
            continue
        if _is_daemon(pid):
            return pid
    return None


def holders(mountpoint: str) -> list[tuple[int, str, str]]:
    """Processes that keep ``mountpoint`` busy: ``(pid, command name, what)`` from ``/proc``.

    Looks at each process's working directory, root and open files (``/proc/PID/{cwd,root,fd/*}``;
    reading these links never enters the mount, so a hung daemon cannot hang this). Processes of
    other users are seen only by root, as with ``fuser``.
    """
    mnt = os.path.abspath(mountpoint)

    def under(p: str) -> bool:
        return p == mnt or p.startswith(mnt + "/")

    out: list[tuple[int, str, str]] = []
    me = os.getpid()
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return out
    for pid in sorted(pids):
        if pid == me:
            continue
        base = f"/proc/{pid}"
        found: str | None = None
        for link, what in (("cwd", "has its working directory in"), ("root", "has its root in")):
            with contextlib.suppress(OSError):
                target = os.readlink(f"{base}/{link}")
                if under(target):
                    found = f"{what} {target}"
                    break
        if found is None:
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"{base}/fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(f"{base}/fd/{fd}")
                        if under(target):
                            found = f"has {target} open"
                            break
        if found is None:
            continue
        comm = "?"
        with contextlib.suppress(OSError):
            with open(f"{base}/comm") as f:
                comm = f.read().strip()
        out.append((pid, comm, found))
    return out


def unmount(mountpoint: str, *, lazy: bool = False, timeout: float = 600.0, cache_dirs: list[str] | None = None,
            note: Any = None) -> int | None:
    """Unmount an artfs mount and wait for its daemon to exit; returns the daemon's pid if known."""
    mnt = os.path.abspath(mountpoint)
    info = find_mount(mnt)
    if info is None:
        raise NotFound(f"{mnt} is not mounted")
    if info.fstype != FSTYPE:
        raise MountUsageError(f"{mnt} is not an artfs mount (it is {info.fstype})")
    pid = daemon_pid(mnt, cache_dirs or [default_cache_dir()])
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool:
        cmd = [tool, "-u", *(["-z"] if lazy else []), mnt]
    elif os.geteuid() == 0:
        cmd = ["umount", *(["-l"] if lazy else []), mnt]
    else:
        raise ArtfsError("cannot unmount: fusermount3 is not installed")
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip() or f"{cmd[0]} exited with {r.returncode}"
        if not lazy and ("busy" in msg.lower() or "EBUSY" in msg):
            held = holders(mnt)
            who = "; ".join(f"pid {pid} ({comm}) {what}" for pid, comm, what in held[:5])
            if len(held) > 5:
                who += f"; and {len(held) - 5} more"
            raise ArtfsError(f"cannot unmount {mnt}: it is busy" + (f": {who}" if who else "") +
                             f". Close those, or 'artfs umount --lazy {mnt}': it detaches the mount at once "
                             "and waits until they have closed their files and the daemon has finished")
        raise ArtfsError(f"cannot unmount {mnt}: {msg}")
    if pid is not None:
        deadline = time.monotonic() + timeout
        said = False
        while _alive(pid):
            if time.monotonic() > deadline:
                raise ArtfsError(f"{mnt} is unmounted, but its daemon (pid {pid}) is still running after {timeout:g} s")
            if not said and note is not None and time.monotonic() > deadline - timeout + 2.0:
                note(f"waiting for the mount daemon (pid {pid}) to commit the drafts and exit"
                     + (" (after the last file open under the mount is closed)..." if lazy else "..."))
                said = True
            time.sleep(0.05)
    return pid


