"""``artfs replay P/RUN_ID [-- CMD]``: run a past run's command again, on exactly what it read.

The run's view (:mod:`artfs._replay`: the versions it used, its aliases pinned where it read
them) is mounted read-only at a new temporary directory (or ``--mountpoint``), by the same daemon
as ``artfs mount --run``; then the command runs as a new run whose record names the run it
replays (``replay_of``), so ``artfs lineage`` and ``artfs runs show`` show the pair, and its reads
through the mount are its inputs. The mount is unmounted when the command ends, whatever happens.

Without CMD the recorded command runs, in the recorded directory when it still exists; each of
its arguments that names a path in a mount (``.../<project>/<artifact>/...`` of an artifact the
run used) is pointed at the replay's mount instead. ``$ARTFS_MOUNT`` names the mount for a CMD
given explicitly (``-- sh -c 'python train.py $ARTFS_MOUNT/p/ds/latest'``).

A run whose inputs were deleted since is not replayed: the command refuses, naming them.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from typing import Any

from .._errors import ArtfsError, NotFound
from .._lineage import parse_run_path
from .._mounts import DAEMON_BOOT, default_log_path, find_mount, unmount
from .._replay import RunView, run_view
from .._run import RUN_ENV, Run, start_run
from .context import Context, UsageError


def rewrite(cmd: list[str], view: RunView, mountpoint: str) -> list[str]:
    """``cmd`` with every path into a mount of an artifact the run used moved to ``mountpoint``."""
    out = []
    for arg in cmd:
        for ap, art in view.artifacts:
            m = re.search(rf"(/[^\s=:,]*?)/{re.escape(ap)}/{re.escape(art)}(?=/|$)", arg)
            if m and m.group(1) != mountpoint:
                arg = arg[:m.start(1)] + mountpoint + arg[m.end(1):]
                break
        out.append(arg)
    return out


def cmd_replay(ctx: Context) -> int:
    a = ctx.args
    project, rid = parse_run_path(a.run)
    store = ctx.store
    view = run_view(store, project, rid)
    if view.missing:
        raise NotFound(f"{view.run} cannot be replayed: it read {', '.join(view.missing)}, deleted since "
                       "(their files are gone)")
    if not view.artifacts:
        raise NotFound(f"{view.run} used no artifact: there is nothing to replay it on")
    cmd = list(a.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    rec = view.record
    recorded = not cmd
    if recorded:
        if not rec.command:
            raise UsageError(f"{view.run} recorded no command; give one: artfs replay {view.run} -- CMD ...")
        cmd = list(rec.command)
    made = not a.mountpoint
    mnt = tempfile.mkdtemp(prefix="artfs-replay-") if made else os.path.abspath(a.mountpoint)
    argv = [sys.executable, "-P", "-c", DAEMON_BOOT, store.url, mnt, "--run", view.run,
            "--log-file", default_log_path(mnt)]
    if a.cache_dir:
        argv += ["--cache-dir", os.path.abspath(a.cache_dir)]
    try:
        if subprocess.run(argv).returncode != 0:  # returns once mounted; the daemon stays in the background
            raise ArtfsError(f"cannot mount the inputs of {view.run} at {mnt} (see {default_log_path(mnt)})")
        run = None
        try:
            run, code = _run(ctx, view, rewrite(cmd, view, mnt) if recorded else cmd, mnt,
                             rec.cwd if recorded and rec.cwd and os.path.isdir(rec.cwd) else None)
        finally:
            # first: the daemon writes the replay's last edges at unmount, and the final record lists them
            unmount(mnt, cache_dirs=[os.path.abspath(a.cache_dir)] if a.cache_dir else None, note=ctx.note)
            if run is not None:
                run.close_record(code)
        return code
    finally:
        if made and find_mount(mnt) is None:
            os.rmdir(mnt)


def _run(ctx: Context, view: RunView, cmd: list[str], mnt: str, cwd: str | None) -> tuple[Run, int]:
    """Start the new run and its command; (the run, its exit code): the caller closes the record."""
    rec = view.record
    run = start_run(ctx.store, rec.project, name=rec.name, job_type=rec.job_type, group=rec.group,
                    config=rec.config, source="replay", command=cmd, replay_of=view.run)
    ctx.note(f"artfs: replaying {view.run} as run {run.path}; its inputs are mounted at {mnt}")
    env = dict(os.environ, **{RUN_ENV: run.path, "ARTFS_PROJECT": rec.project, "ARTFS_MOUNT": mnt})
    if ctx.args.store:
        env["ARTFS_STORE"] = ctx.args.store
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd)
    except OSError as e:  # like a shell: 127 for a command that cannot be started
        ctx.note(f"artfs: error: {cmd[0]}: {e.strerror or e}")
        return run, 127
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches CMD; we record how it ended
    try:
        rc = proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)
    return run, rc if rc >= 0 else 128 - rc


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("replay", parents=[common], help="run a past run's command again on exactly what it read",
                       description="Mount what run PROJECT/RUN_ID read (artfs mount --run: the versions it used, "
                                   "its aliases pinned where it read them) and run its recorded command (or CMD) "
                                   "as a new run that names the run it replays. Refuses when an input was deleted.")
    p.add_argument("run", metavar="PROJECT/RUN_ID")
    p.add_argument("--mountpoint", metavar="DIR", help="an empty directory to mount at (default: a new temporary one)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    p.set_defaults(func=cmd_replay)
