"""artfs as a user installs it: the sdist built from this checkout, the wheel built from that
sdist, installed into a fresh venv outside the checkout, readable by every uid.

Built once per content of the package (a hash of what goes into it) and shared by the test
processes of a run and by later runs: the first caller builds under an exclusive lock, the others
wait for it and reuse the result. The venv is made by the system's Python (``/usr/bin/python3``
where there is one: a Python under ``/root`` cannot be run by other uids), with artfs's runtime
dependencies from the package index (and the ``fsspec`` extra), so it holds stock pyfuse3, as
``pip install 'artfs[fsspec]'`` gives a user.

:func:`normal_host` makes this host "normal" for the length of a test (``/dev/fuse`` mode 0666,
as udev sets it on desktops and servers; it is 0600 in this workplace) and restores it; every test
that depends on ``/dev/fuse``'s mode takes the same lock, so none sees another's change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
#: what goes into the sdist (MANIFEST.in) besides the packages
_INPUTS = ("pyproject.toml", "MANIFEST.in", "README.md", "CHANGELOG.md")
_TREES = ("artfs", "artfsd", "systemd", "docs")
HOST_LOCK = "/tmp/artfs-tests-host.lock"


def _key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())  # how it is built is part of what it is
    for rel in _INPUTS:
        p = ROOT / rel
        if p.exists():
            h.update(rel.encode() + b"\0" + p.read_bytes())
    for tree in _TREES:
        for p in sorted((ROOT / tree).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def system_python() -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


class Installed:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.venv = base / "venv"
        self.bin = self.venv / "bin"
        self.python = str(self.bin / "python")
        self.artfs = str(self.bin / "artfs")
        self.sdist = next((base / "dist").glob("artfs-*.tar.gz"))
        self.wheel = next((base / "dist").glob("artfs-*.whl"))

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """A user's environment: this venv's bin first on PATH, no PYTHONPATH, a HOME of its own."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ARTFS_", "XDG_", "PYTHON", "VIRTUAL_ENV", "AWS_"))}
        env.update(HOME=str(home), PATH=f"{self.bin}:/usr/local/bin:/usr/bin:/bin", **extra)
        return env


def _run(cmd: list[str], **kw: object) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def installed() -> Installed:
    base = Path("/tmp") / f"artfs-test-install-{_key()}"
    with open(f"{base}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (base / "ok").exists():
            return Installed(base)
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(mode=0o755)
        base.chmod(0o755)
        src = base / "src"  # a copy: the build writes build/ and *.egg-info beside its sources
        src.mkdir()
        for rel in _INPUTS:
            if (ROOT / rel).exists():
                shutil.copy2(ROOT / rel, src / rel)
        for tree in _TREES:
            if (ROOT / tree).exists():
                shutil.copytree(ROOT / tree, src / tree, ignore=shutil.ignore_patterns("__pycache__"))
        # python -m build: the sdist, then the wheel built from the unpacked sdist (so a file the
        # sdist lacks is missing from the wheel too, as for a user who builds from the sdist)
        _run([sys.executable, "-m", "build", "-q", "-o", str(base / "dist"), str(src)])
        _run([system_python(), "-m", "venv", str(base / "venv")])
        wheel = next((base / "dist").glob("artfs-*.whl"))
        _run([str(base / "venv" / "bin" / "pip"), "install", "-q", f"{wheel}[fsspec]"])
        shutil.rmtree(src)
        for p in [base, *base.rglob("*")]:  # every uid may read and run it, none may change it
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
                        | (stat.S_IXGRP | stat.S_IXOTH if p.is_dir() or p.stat().st_mode & stat.S_IXUSR else 0))
        (base / "ok").touch()
        return Installed(base)


def wheel_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        return z.namelist()


def sdist_names(path: Path) -> list[str]:
    with tarfile.open(path) as t:
        return [n.split("/", 1)[1] for n in t.getnames() if "/" in n]


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """Held by every test that changes or depends on ``/dev/fuse``'s mode."""
    with open(HOST_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def devfuse_mode(mode: int) -> Iterator[None]:
    """``/dev/fuse`` with ``mode`` for the block (under :func:`host_lock`), then as it was."""
    with host_lock():
        before = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
        os.chmod("/dev/fuse", mode)
        try:
            yield
        finally:
            os.chmod("/dev/fuse", before)


def normal_host() -> contextlib.AbstractContextManager[None]:
    """A host as most are: ``/dev/fuse`` open to every user (``fusermount3`` is setuid root)."""
    return devfuse_mode(0o666)
