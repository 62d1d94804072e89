"""Stock pyfuse3 (what ``pip install`` gives a user), built into a directory for ``PYTHONPATH``.

Tests and benchmarks that compare the two builds run the daemon of this checkout with
``PYTHONPATH=<dir>``: pyfuse3 3.5.0 from its sdist, unpatched, against the system's libfuse
(Debian 12: 3.14), with the other packages from the project's venv. Built once per Python
version into ``$ARTFS_BUILD_CACHE`` (default ``/var/cache/artfs-build`` as root, else
``~/.cache/artfs-build``) under a lock, then reused (about a minute the first time).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile

VERSION = "3.5.0"


def _cache() -> str:
    default = "/var/cache/artfs-build" if os.geteuid() == 0 else os.path.expanduser("~/.cache/artfs-build")
    return os.environ.get("ARTFS_BUILD_CACHE", default)


def stock_pyfuse3_dir() -> str:
    """The directory (built if missing); raises RuntimeError with pip's output if the build fails."""
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    target = os.path.join(_cache(), f"pyfuse3-stock-{VERSION}-{tag}")
    os.makedirs(_cache(), exist_ok=True)
    with open(target + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(os.path.join(target, "pyfuse3", "__init__.pyi")):
            return target
        tmp = tempfile.mkdtemp(prefix="pyfuse3-stock-", dir=_cache())
        env = dict(os.environ, SETUPTOOLS_SCM_PRETEND_VERSION=VERSION)
        env.pop("PKG_CONFIG_PATH", None)  # the system's libfuse, as pip install gives it
        p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-binary", "pyfuse3",
                            "--target", tmp, f"pyfuse3=={VERSION}"], env=env, capture_output=True, text=True)
        if p.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"building stock pyfuse3 failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
        return target


def stock_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the stock pyfuse3 first on ``PYTHONPATH``."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join(x for x in (stock_pyfuse3_dir(), out.get("PYTHONPATH", "")) if x)
    return out


if __name__ == "__main__":
    print(stock_pyfuse3_dir())
