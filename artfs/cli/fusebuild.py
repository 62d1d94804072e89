"""``artfs build-fuse``: the fast FUSE build (patched pyfuse3) into the environment artfs runs in.

The steps are :mod:`artfs._fusebuild`'s ``build-fuse.sh``; this command only runs it with this
Python, so a ``pip install``-ed, ``pipx``- or ``uv tool``-installed artfs gets the build in its own
environment. Exit codes: the script's (0 built or up to date, 1 failed with the reason on stderr).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

from .context import Context


def cmd_build_fuse(ctx: Context) -> int:
    from .._fusebuild import SCRIPT

    env = dict(os.environ, ARTFS_PYTHON=sys.executable)
    if ctx.args.cache:
        env["ARTFS_BUILD_CACHE"] = ctx.args.cache
    return subprocess.run(["bash", str(SCRIPT)], env=env, stdin=subprocess.DEVNULL).returncode


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "build-fuse", parents=[common], help="build the patched pyfuse3 (passthrough, cached listings) into this environment",
        description="Build pyfuse3 with artfs's patches against libfuse >= 3.17 and install it into the Python "
                    "environment artfs runs in: reads of cached files at the local disk's speed (FUSE "
                    "passthrough, kernel 6.9+) and listings cached by the kernel. Needs gcc, pkg-config, patch, "
                    "python3-dev and libfuse3-dev; where the system's libfuse is older than 3.17 (Debian 12, "
                    "Ubuntu 24.04) the first run must be as root, to build libfuse 3.17 from Debian's source "
                    "package. If any step fails, the pyfuse3 installed before stays and the mount works as "
                    "before. 'artfs doctor' says which fast paths are on.",
    )
    p.add_argument("--cache", metavar="DIR", default=None,
                   help="where builds are kept for reuse (default: /var/cache/artfs-build as root, else "
                        "~/.cache/artfs-build; $ARTFS_BUILD_CACHE)")
    p.set_defaults(func=cmd_build_fuse)
