"""Every ``user.artfs.*`` extended attribute the mount answers, and how its value is spelt.

One module so that a name is defined once: the handlers of :mod:`artfsd.fs` build their values
with the functions below and qualify keys with :data:`PREFIX`; nothing else in the daemon writes
``"user.artfs."``. (:mod:`artfsd.drafts` takes the prefix from here but still spells the keys of
``draft/`` itself, with the constants below as their reference: it is being split into modules
by another change, after which its keys come from here too.) (The command line reads some of these names through the kernel, e.g. ``artfs
umount`` reads ``pid`` and ``results``, ``artfs commit`` writes ``commit`` and polls
``last_commit``; it cannot import the daemon, so it spells them itself: they are the protocol
between the two and must not change.)

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

PREFIX = "user.artfs."

# the mount root
STORE = "store"
PID = "pid"
RESULTS = "results"
STATS = "stats"
# a version directory vN/
TYPE = "type"
DESCRIPTION = "description"
METADATA = "metadata"
ALIASES = "aliases"
CREATED = "created"
DIGEST = "digest"
LOGGED_BY = "logged_by"
# a file of a version (and a file of a draft that has a base entry)
SIZE = "size"
REF = "ref"
# draft/ (answered by artfsd.drafts)
BASE = "base"
GROUP = "group"
STATUS = "status"
LAST_COMMIT = "last_commit"
COMMIT = "commit"

#: what setfattr/removexattr may change on ``vN/`` (as ``Artifact.save``)
VERSION_WRITABLE = (DESCRIPTION, METADATA, ALIASES)
#: what a version says about itself that never changes (a setfattr gets EPERM)
VERSION_FIXED = (TYPE, DIGEST, CREATED)


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
