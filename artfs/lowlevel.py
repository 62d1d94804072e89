"""The lower-level surface of artfs, for the mount daemon (``artfsd``) and other tools built on it.

``import artfs`` is the API for users (W&B's names). The daemon needs more: the draft engine,
the lazy reader of cache blobs, the names and keys the store uses, the lineage records, and the
mount's shared options and bookkeeping. Those live in private modules; this module is the one
place that publishes them, as ``trio.lowlevel`` does for trio's internals, so the daemon imports
no ``_private`` module and no CLI module (``tests/test_layering.py`` checks both, and guards the
list below: a name added or removed here is a decision, not an accident).

These names are stable within a release of artfs, not across releases.
"""

from __future__ import annotations

from ._access import list_projects
from ._asof import parse_time, timeline
from ._cache import stamp_ok
from ._diff import bounded_json, diff_entries
from ._doctor import mount_failure_cause, mount_note
from ._draft import ROOT, Attr, Draft, DraftBusy, Drafts, commit_draft
from ._layout import blob_key
from ._lazy import LazyBlobs
from ._lineage import (
    RunRecord,
    logger_of_version,
    now_iso,
    parse_run_path,
    record_edge,
    version_ref,
    write_record,
)
from ._manifest import gc_paused
from ._pieces import tree_of
from ._mountconfig import MountConfig
from ._mounts import (
    FSTYPE,
    add_mount_arguments,
    apply_mount_options,
    default_log_path,
    find_mount,
    pidfile_path,
    results_path,
)
from . import _xattrs as xattrs
from ._names import check_alias, check_name, is_version, parse_version
from ._refs import is_pinned
from ._registry import collection_symlinks, collections
from ._replay import run_view
from ._run import RUN_ENV, new_run_id
from ._umount import COMMITTING, FINISHED, DraftCommit, UnmountReport
from .backends import default_store_url

__all__ = [
    # drafts: the writable staging tree of an artifact (artfs/_draft/)
    "ROOT", "Attr", "Draft", "DraftBusy", "Drafts", "commit_draft",
    # cache blobs read lazily, chunk by chunk, verified when complete (artfs/_lazy/, _cache.py)
    "LazyBlobs", "stamp_ok", "blob_key",
    # names, versions, references
    "check_alias", "check_name", "is_version", "parse_version", "is_pinned",
    # manifests, and what changed between two (artfs/_diff.py)
    "gc_paused", "bounded_json", "diff_entries", "tree_of",
    # what a caller may see of a store (artfs/_access.py)
    "list_projects",
    # registry collections, as the mount shows them (artfs/_registry.py)
    "collections", "collection_symlinks",
    # runs and lineage (artfs/_lineage.py, _run.py)
    "RUN_ENV", "RunRecord", "logger_of_version", "new_run_id", "now_iso", "parse_run_path", "record_edge",
    "version_ref", "write_record", "run_view",
    # mounts: options shared with `artfs mount`, the mount table, pid and report files (artfs/_mounts.py)
    "FSTYPE", "add_mount_arguments", "apply_mount_options", "default_log_path", "find_mount", "pidfile_path",
    "results_path",
    # one mount's configuration, built once from its options and passed down (artfs/_mountconfig.py)
    "MountConfig",
    # why a mount failed, and which of its fast paths are off and why (artfs/_doctor.py: artfs doctor)
    "mount_failure_cause", "mount_note",
    # stores, and what they held at a time (artfs/_asof.py)
    "default_store_url", "parse_time", "timeline",
    # the names of the mount's user.artfs.* attributes, shared with the command line (artfs/_xattrs.py)
    "xattrs",
    # the result of a commit of a draft and the report of a daemon's commits at unmount, which
    # `artfs commit` and `artfs umount` read (artfs/_umount.py)
    "COMMITTING", "FINISHED", "DraftCommit", "UnmountReport",
]
