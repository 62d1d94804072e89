"""Helpers for tests that need a real mount (shipped in the package, like ``trio.testing``).

:class:`MountProcess` runs the daemon in the foreground as a child process (``python -m
artfsd.main STORE MNT -f``) with its own cache directory, waits until the mountpoint shows up in
``/proc/self/mountinfo`` while the process is alive, and on exit *always* cleans up: it unmounts
(``fusermount3 -u``, then lazily with ``-uz``) only the mountpoint it mounted, and ends only the
process it started, by its PID. A failed or hung test therefore never leaves a mount behind::

    with MountProcess(store_url, tmp_path / "mnt", cache_dir=tmp_path / "cache") as m:
        open(m.path("proj/art/latest/file.txt")).read()
        m.stats()["backend"]["range"]

Drafts live in ``$ARTFS_STAGING_DIR`` (pass it in ``env``); :meth:`MountProcess.kill` crashes the
daemon with SIGKILL and cleans its mount, so a test can mount again on the same directories.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

from artfs.lowlevel import FSTYPE, find_mount

from . import attrs


def is_mounted(mountpoint: str | os.PathLike[str]) -> bool:
    info = find_mount(os.fspath(mountpoint))
    return info is not None and info.fstype == FSTYPE


def _fusermount(mountpoint: str, *flags: str) -> bool:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, *flags, mountpoint] if tool else ["umount", *(["-l"] if "-z" in "".join(flags) else []), mountpoint]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    return r.returncode == 0


class MountProcess:
    """A mount daemon running in the foreground as a child process, for the length of a ``with``."""

    def __init__(
        self,
        store_url: str,
        mountpoint: str | os.PathLike[str],
        *,
        cache_dir: str | os.PathLike[str],
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.store_url = store_url
        self.mountpoint = os.path.abspath(os.fspath(mountpoint))
        self.cache_dir = os.path.abspath(os.fspath(cache_dir))
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        self.env["ARTFS_CACHE_DIR"] = self.cache_dir
        # drafts: never the user's own staging directory unless a test asks for it
        self.env.setdefault("ARTFS_STAGING_DIR", self.cache_dir + "-staging")
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()
        self._final = b""

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "MountProcess":
        os.makedirs(self.mountpoint, exist_ok=True)
        if is_mounted(self.mountpoint):
            raise RuntimeError(f"{self.mountpoint} is already mounted")
        cmd = [sys.executable, "-m", "artfsd.main", self.store_url, self.mountpoint, "-f",
               "--cache-dir", self.cache_dir, *self.args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the mount daemon exited with {self.proc.returncode}:\n{self.log}")
            if is_mounted(self.mountpoint) and b"mounted " in self._read_log():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the mount did not come up within {self.startup_timeout:g} s:\n{self.log}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """Unmount (politely, then lazily) and end the daemon; returns its exit code."""
        p = self.proc
        if is_mounted(self.mountpoint) and p is not None:
            _fusermount(self.mountpoint, "-u")
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if is_mounted(self.mountpoint) and p is not None:
            _fusermount(self.mountpoint, "-uz")
        if p is not None and p.poll() is None:
            p.terminate()  # our own child, by its PID
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode if p is not None else None

    def kill(self) -> None:
        """Crash the daemon (SIGKILL, as the OOM killer would) and detach its dead mount lazily.

        What it leaves in the staging and cache directories stays for the next mount to find.
        """
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()  # our own child, by its PID
            p.wait(10)
        if is_mounted(self.mountpoint):
            _fusermount(self.mountpoint, "-uz")

    def __enter__(self) -> "MountProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self._final = self._read_log()
            self._log.close()

    # -- helpers ---------------------------------------------------------------------------------
    def _read_log(self) -> bytes:
        if self._log.closed:
            return self._final
        self._log.seek(0)
        return self._log.read()

    @property
    def log(self) -> str:
        """What the daemon logged so far."""
        return self._read_log().decode("utf-8", "replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def path(self, *parts: str) -> str:
        return os.path.join(self.mountpoint, *parts)

    def stats(self) -> dict[str, Any]:
        """The daemon's counters (``user.artfs.stats`` on the mount root)."""
        doc: dict[str, Any] = json.loads(os.getxattr(self.mountpoint, attrs.full(attrs.STATS)))
        return doc
