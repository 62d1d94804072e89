"""Every ``user.artfs.*`` extended attribute the mount answers, and how its value is spelt.

One module so that a name is defined once: the handlers of :mod:`artfsd.fs` (and the draft
modules) build their values with the functions below and qualify keys with :data:`PREFIX`;
nothing else in the daemon spells an attribute's name. The names themselves come from the
library (``artfs/_xattrs.py``, through :mod:`artfs.lowlevel`), because the command line reads
some of them through the kernel (``artfs umount`` reads ``pid`` and ``results``, ``artfs commit``
writes ``commit`` and polls ``last_commit``) and may not import the daemon: they are the
protocol between the two and must not change.

=================  ====================  ==========================================================
where              name                  value
=================  ====================  ==========================================================
mount root         ``store``             the store's URL
                   ``pid``               the daemon's pid, decimal (``artfs umount``)
                   ``results``           path of the commit report written at unmount (writable)
                   ``stats``             JSON object of counters (:meth:`Operations.stats_doc`)
``vN/``            ``type``              the artifact type (read-only: EPERM)
                   ``description``       text; set/removed with setfattr (writable mounts)
                   ``metadata``          JSON object (sorted keys, UTF-8); set/removed likewise
                   ``aliases``           comma-separated aliases of vN; set/removed likewise
                   ``created``           ISO 8601 time of the commit (read-only)
                   ``digest``            the version digest (read-only)
                   ``logged_by``         ``project/run_id`` of the run that logged vN, if any
                   ``diff_parent``       JSON: what changed since the previous existing version
                                         (``artfs diff``'s, at most :data:`DIFF_PARENT_MAX` bytes:
                                         counts always, then changes while they fit, ``truncated``)
a file in ``vN/``  ``digest``            the content digest (none for unpinned references)
                   ``size``              bytes, decimal
                   ``ref``               the URI of a reference entry
``draft/``         ``description``, ``type``, ``metadata``, ``aliases``: what the next commit
                   will say (writable); ``base`` (``vN`` or empty), ``group``, ``status`` (JSON),
                   ``last_commit`` (JSON); ``commit`` (write only: commits, see drafts.py)
=================  ====================  ==========================================================

Reading an attribute that is not ``user.*`` answers ENOTSUP (``ls -l`` then stops asking for
every file); a ``user.*`` name that is not one of these answers ENOATTR.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from artfs.lowlevel import xattrs

# The names are the library's (artfs/_xattrs.py: the command line reads some of them too).
PREFIX = xattrs.PREFIX
# the mount root
STORE, PID, RESULTS, STATS = xattrs.STORE, xattrs.PID, xattrs.RESULTS, xattrs.STATS
# a version directory vN/
TYPE, DESCRIPTION, METADATA, ALIASES = xattrs.TYPE, xattrs.DESCRIPTION, xattrs.METADATA, xattrs.ALIASES
CREATED, DIGEST, LOGGED_BY, DIFF_PARENT = xattrs.CREATED, xattrs.DIGEST, xattrs.LOGGED_BY, xattrs.DIFF_PARENT
#: the largest ``diff_parent`` value: under the kernel's bound for any attribute (XATTR_SIZE_MAX, 64 KiB)
DIFF_PARENT_MAX = 64_000
# a file of a version (and a file of a draft that has a base entry)
SIZE, REF = xattrs.SIZE, xattrs.REF
# draft/ (answered by artfsd.draft_commits)
BASE, GROUP, STATUS, LAST_COMMIT, COMMIT = xattrs.BASE, xattrs.GROUP, xattrs.STATUS, xattrs.LAST_COMMIT, xattrs.COMMIT

#: what setfattr/removexattr may change on ``vN/`` (as ``Artifact.save``)
VERSION_WRITABLE = (DESCRIPTION, METADATA, ALIASES)
#: what a version says about itself that never changes (a setfattr gets EPERM)
VERSION_FIXED = (TYPE, DIGEST, CREATED, DIFF_PARENT)


def full(key: str) -> str:
    """``user.artfs.<key>``."""
    return PREFIX + key


def key_of(name: str) -> str | None:
    """The key of ``user.artfs.<key>``, None for any other name."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else None


def qualify(values: dict[str, bytes]) -> dict[str, bytes]:
    """Keys -> full attribute names (the order is kept: it is the order of listxattr)."""
    return {PREFIX + k: v for k, v in values.items()}


def text(value: str) -> bytes:
    """A text value (UTF-8)."""
    return value.encode()


def number(value: int) -> bytes:
    """A decimal number."""
    return str(value).encode()


def json_value(doc: Any) -> bytes:
    """A JSON value: keys sorted, UTF-8 (``metadata``, ``stats``)."""
    return json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()


def aliases_value(aliases: Iterable[str]) -> bytes:
    """``a,b,c``."""
    return ",".join(aliases).encode()


def parse_aliases(value: str) -> list[str]:
    """The aliases of a value written with setfattr: separated by commas and/or whitespace."""
    return [a for a in re.split(r"[,\s]+", value) if a]


def parse_metadata(value: str) -> dict[str, Any]:
    """The metadata of a value written with setfattr: a JSON object (empty text: ``{}``).

    Raises ``ValueError`` for anything else.
    """
    try:
        doc = json.loads(value) if value.strip() else {}
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ValueError("user.artfs.metadata must be a JSON object")
    return doc
