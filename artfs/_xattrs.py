"""The names of artfs's ``user.artfs.*`` extended attributes: defined here, once.

They are the protocol between the mount daemon, which answers them, and the command line, which
reads some of them through the kernel (``artfs umount`` reads :data:`PID` and :data:`RESULTS` of
the mount root; ``artfs commit`` writes :data:`COMMIT` on ``draft/`` and polls
:data:`LAST_COMMIT`). The daemon cannot be imported by the library and the command line, so the
names live in the library's core; the daemon takes them through :mod:`artfs.lowlevel` and
:mod:`artfsd.attrs` says which object answers which name and how each value is spelt. A name
here must not change: mounts and command lines of different versions meet through it.
"""

from __future__ import annotations

PREFIX = "user.artfs."

# the mount root
STORE = "store"
PID = "pid"
RESULTS = "results"
STATS = "stats"
# a version directory vN/ (DESCRIPTION, METADATA, ALIASES, TYPE also on draft/)
TYPE = "type"
DESCRIPTION = "description"
METADATA = "metadata"
ALIASES = "aliases"
CREATED = "created"
DIGEST = "digest"
LOGGED_BY = "logged_by"
DIFF_PARENT = "diff_parent"
# a file of a version (and a file of a draft that has a base entry)
SIZE = "size"
REF = "ref"
# draft/
BASE = "base"
GROUP = "group"
STATUS = "status"
LAST_COMMIT = "last_commit"
COMMIT = "commit"

# not in the mount: on a blob of the local cache, its verification record (artfs/_cache.py)
VERIFIED = "verified"


def full(key: str) -> str:
    """``user.artfs.<key>``: the attribute's name as ``getxattr``/``setxattr`` take it."""
    return PREFIX + key
