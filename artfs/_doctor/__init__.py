"""What a mount needs and what makes it fast, each checked (the facade of the checks):
``artfs doctor``, and the one line a mount prints about the fast paths it runs without or the
cause it failed of.

Every check is a function returning a :class:`Check` (``check``, ``verdict``, ``detail``, ``fix``):

    fuse-device       /dev/fuse exists and this user may read and write it (``os.access``)
    fusermount3       installed, and setuid root (what mounts for a user who is not root)
    mount-permission  someone may call mount(2): CAP_SYS_ADMIN here, or a setuid fusermount3 that
                      gets it (not under ``no_new_privs``, not without it in the bounding set)
    user-allow-other  ``user_allow_other`` in /etc/fuse.conf (only ``--allow-other``/``--allow-group``)
    kernel            the running Linux (passthrough needs >= 6.9)
    pyfuse3           importable; patched (``pyfuse3.kernel_features()``) or stock
    libfuse           the libfuse that pyfuse3 has loaded (``fuse_pkgversion()``; passthrough >= 3.16)
    cached-listings   the kernel keeps directory listings (patched pyfuse3)
    readdir-names     opendir skipped, every listing cached (pyfuse3's readdir-inode patch)
    passthrough       reads of cached files served by the kernel (patched pyfuse3 on libfuse >= 3.16,
                      Linux >= 6.9, CAP_SYS_ADMIN)
    cap-sys-admin     CapEff of /proc/self/status (passthrough's ``backing_open`` needs it)
    mount-daemon      the ``artfsd`` package is installed (found, not imported: the library never
                      imports the daemon)
    cache             the cache directory: writable (or creatable) and its free space
    cache-xattrs      ``user.*`` attributes on the cache's file system (the verification record of
                      blobs: without it the mount hashes a blob again on each open)
    staging           the drafts' staging directory: writable and its free space
    store             the store: it answers a listing within the time budget
    credentials       which credentials a request to the store would carry (S3: boto3's source)

Verdicts: ``ok``; ``warn``: a mount works, with less (a fast path off, no ``allow_other``,
little space, no store yet); ``fail``: a mount cannot work, or cannot read the store. A mount
works when no check fails (:func:`works`), which is ``artfs doctor``'s exit code.

Invariants: a check changes nothing on the machine (the attribute probe writes one temporary
file in the cache directory, or its nearest existing parent, and removes it); it never prints a
secret (credentials are named by their source, never shown); each is bounded in time (the store
is asked from a thread that is abandoned, not waited for, once the budget is spent).

Modules: ``check.py`` (:class:`Check`, the verdicts), ``fuse.py`` (the device, fusermount3, the
right to mount, the kernel, pyfuse3 and libfuse, the fast paths), ``storage.py`` (the cache, the
staging directory, the store and its credentials); this module runs them all and holds what the
mount takes from them.

The mount reuses these: ``artfs mount`` refuses up front what :func:`mount_blockers` finds, the
daemon names a failed mount's cause with :func:`mount_failure_cause` (libfuse's own line from the
log, else the blockers), and says once which fast paths are off and why (:func:`mount_note`).
"""

from __future__ import annotations

import contextlib
import re

from .._errors import ArtfsError
from .check import BUILD_FUSE, DOCTOR, FAIL, OK, WARN, Check, works
from .fuse import (FAST_PATHS, allow_other, cap_sys_admin, fast_paths, fuse_device, fusermount, has_cap_sys_admin,
                   kernel, libfuse, mount_daemon, mount_permission, pyfuse3_check, pyfuse3_info)
from .storage import cache, cache_xattrs, credentials, staging, store

__all__ = ["BUILD_FUSE", "DOCTOR", "FAIL", "OK", "WARN", "Check", "works", "FAST_PATHS", "allow_other",
           "cap_sys_admin", "fast_paths", "fuse_device", "fusermount", "has_cap_sys_admin", "kernel", "libfuse",
           "mount_daemon", "mount_permission", "pyfuse3_check", "pyfuse3_info", "cache", "cache_xattrs",
           "credentials", "staging", "store", "run_all", "mount_blockers", "check_can_mount", "mount_failure_cause",
           "mount_note"]


def run_all(*, store_url: str | None = None, cache_dir: str | None = None, timeout: float = 5.0) -> list[Check]:
    """Every check, in the order ``artfs doctor`` prints them."""
    from ..backends import default_store_url

    url = store_url or default_store_url()
    paths = fast_paths()
    return [
        fuse_device(), fusermount(), mount_permission(), allow_other(), kernel(), pyfuse3_check(), libfuse(),
        paths["cached-listings"], paths["readdir-names"], paths["passthrough"], cap_sys_admin(), mount_daemon(),
        cache(cache_dir), cache_xattrs(cache_dir), staging(), credentials(url, timeout=timeout),
        store(url, timeout=timeout),
    ]


def mount_blockers() -> list[Check]:
    """The failed checks that make any mount impossible from this process (cheap: no store, no import)."""
    return [c for c in (fuse_device(), fusermount(), mount_permission()) if c.verdict == FAIL]


def check_can_mount() -> None:
    """Raise :class:`ArtfsError` naming the first reason a mount cannot work, and the doctor."""
    blockers = mount_blockers()
    if blockers:
        raise ArtfsError(f"{blockers[0].detail}; {DOCTOR}")


_LIBFUSE_LINE = re.compile(r"^(fuse|fusermount3?): (.+)$")


def mount_failure_cause(log_path: str | None = None, offset: int = 0) -> str | None:
    """Why a mount failed: libfuse's (or fusermount3's) last complaint in the log from ``offset``
    on, else the first blocker the checks find; None when neither says."""
    if log_path:
        with contextlib.suppress(OSError), open(log_path, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            said = [m for m in (_LIBFUSE_LINE.match(line.strip()) for line in f) if m]
            if said:
                tool, text = said[-1].groups()
                return text if tool == "fuse" else f"{tool}: {text}"
    blockers = mount_blockers()
    return blockers[0].detail if blockers else None


def mount_note(got: dict[str, bool], why: dict[str, str]) -> str | None:
    """One line for the mount's stderr: which fast paths are off and why (None: all on).

    ``got`` holds the fast paths the daemon asked for (names of :data:`FAST_PATHS`; those turned
    off on purpose left out) and whether it got each; ``why`` the daemon's reasons. A fast path
    is off when the daemon did not get it, or when the checks here say it cannot work (the daemon
    may only learn that at the first open); the reason given is the checks' when they have one.
    """
    predicted = fast_paths()
    groups: dict[str, list[str]] = {}
    for key, on in got.items():
        p = predicted.get(key)
        if on and (p is None or p.verdict == OK):
            continue
        if p is not None and p.verdict != OK:
            reason = p.detail.removeprefix("off: ") + (f" ({p.fix})" if p.fix else "")
        else:
            reason = why.get(key) or "the kernel did not offer it"
        groups.setdefault(reason, []).append(FAST_PATHS.get(key, key))
    if not groups:
        return None
    parts = []
    for reason, names in groups.items():
        said = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        parts.append(f"{said} off: {reason}")
    return "artfs: " + "; ".join(parts)
