"""Crash points: stop a child process at a named step boundary of the library, so that a crash
test can SIGKILL it exactly there, with no hook in production code.

A test starts the child (a script, or the mount daemon) with :func:`crash_env` (or adds
:func:`crash_vars` to the environment it builds). That puts ``tests/crashsite`` first on
``PYTHONPATH``: its ``sitecustomize.py`` is imported by every Python process at startup (``-P``
drops only the script's directory from ``sys.path``, not ``PYTHONPATH``; only ``-I``/``-E`` or
``-S`` would skip it) and calls :func:`install`, which wraps the library function or method at
the boundary :data:`STEPS` names for ``$ARTFS_TEST_CRASHPOINT``. When the step is reached, the
process writes :func:`marker` as one line to stderr and stops itself with SIGSTOP: no other thread
of it runs on, so nothing happens between the step and the test's SIGKILL.

The steps are the real functions of the protocols under test, so a step that is renamed or
moved makes the child say so on stderr (the test then fails showing that line) instead of
silently never stopping.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import time
from typing import Any, Callable, NamedTuple

ENV = "ARTFS_TEST_CRASHPOINT"
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crashsite")


class Step(NamedTuple):
    module: str
    attr: str  # "function" or "Class.method"
    when: str  # "before" (the call) or "after" (it returned)


STEPS = {
    # the draft's commit protocol (artfs/_draft/commit.py: steps 2 and 3, 3 and 4, 4 and 5)
    "after-commit-id": Step("artfs._draft.commit", "Commit._store_commit", "before"),
    "after-store-commit": Step("artfs._draft.commit", "Commit._store_commit", "after"),
    "after-reset": Step("artfs._draft.commit", "Commit._reset_to_version", "after"),
    # distributed writers (artfs/_groups_parts.py, artfs/_groups_finish.py, where the functions
    # are called from): an upsert whose blobs are uploaded and whose part is not written yet; a finisher holding its claim (heartbeat started) that has done
    # nothing else; a finisher whose version exists (contributors recorded), not yet recorded
    # as the group's result
    "upsert-after-upload": Step("artfs._groups_parts", "_part_bytes", "after"),
    "finish-after-claim": Step("artfs._groups_finish", "_Heartbeat.__init__", "after"),
    "finish-after-commit": Step("artfs._groups_finish", "_contributors", "after"),
    # a sharded commit (artfs/_shards.py) that has written its version's pieces, not the head
    "shard-after-piece": Step("artfs._shards", "put_pieces", "after"),
}


def marker(step: str) -> str:
    """The line a stopped process writes to stderr."""
    return f"artfs-crashpoint:{step}"


def crash_vars(step: str, pythonpath: str | None = None) -> dict[str, str]:
    """The environment variables that make a child stop at ``step`` (``pythonpath``: the child's
    PYTHONPATH otherwise, by default this process's)."""
    if step not in STEPS:
        raise KeyError(f"unknown crash point {step!r}: one of {sorted(STEPS)}")
    rest = os.environ.get("PYTHONPATH", "") if pythonpath is None else pythonpath
    return {ENV: step, "PYTHONPATH": os.pathsep.join([SITE_DIR, *(p for p in rest.split(os.pathsep) if p)])}


def crash_env(step: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) plus :func:`crash_vars`."""
    env = dict(os.environ if env is None else env)
    env.update(crash_vars(step, env.get("PYTHONPATH", "")))
    return env


def install() -> None:
    """In the child (from ``sitecustomize``): wrap the step ``$ARTFS_TEST_CRASHPOINT`` names."""
    step = os.environ.get(ENV)
    if not step:
        return
    try:
        where = STEPS[step]
        owner: Any = importlib.import_module(where.module)
        *path, name = where.attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        fn = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        if not callable(fn) or isinstance(fn, (staticmethod, classmethod)):
            raise TypeError(f"{where.module}.{where.attr} is not a plain function")
    except Exception as e:
        os.write(2, f"crashpoints: cannot install {step!r}: {type(e).__name__}: {e}\n".encode())
        raise
    setattr(owner, name, _wrap(step, where.when, fn))


def _wrap(step: str, when: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def at_step(*args: Any, **kwargs: Any) -> Any:
        if when == "before":
            _stop(step)
        result = fn(*args, **kwargs)
        if when == "after":
            _stop(step)
        return result

    return at_step


def _stop(step: str) -> None:
    sys.stderr.flush()
    os.write(2, (marker(step) + "\n").encode())
    os.kill(os.getpid(), signal.SIGSTOP)
    while True:  # continued by someone else: still never past the step
        time.sleep(3600)
