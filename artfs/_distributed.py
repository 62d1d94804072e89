"""Distributed writers: many processes on many machines build one version (upsert, finish).

W&B's ``run.upsert_artifact`` / ``run.finish_artifact``, with no server: every writer adds its
files to a *pending group* of an artifact, and one ``finish`` merges all of them into the next
version. The store's own guarantees (exclusive creates, the commit/deletion ordering of
:mod:`artfs._store`) keep concurrent writers and finishers safe.

The code is in three modules, one per responsibility; this module re-exports their names (the
callers and :mod:`artfs._store` import from here):

* :mod:`artfs._groups_parts` -- the store layout of a group, parts (their format, reading and
  checking them), ``upsert`` (its steps 0-6 and what a killed writer leaves); the mount's
  drafts become parts through it (:meth:`artfs._draft.commit.Commit.part`);
* :mod:`artfs._groups_finish` -- ``finish``: claims, heartbeat, takeover of a dead finisher,
  merging, protecting the merged blobs, exactly-once commit;
* :mod:`artfs._groups_status` -- the groups as a whole: ``groups`` (``artfs status``),
  ``pending_blobs`` (protection from deletion), ``gc_groups`` (abandoned groups).

Tests that change a module-level setting (``CLAIM_STALE``...) or wrap a function (the crash
points) do it on the module that defines it: a name re-exported here is a second binding.
"""

from __future__ import annotations

from ._groups_parts import (_after_upsert, artifact_entries, _check, _claims, default_writer, FORMAT, _G,
                            GROUP_GRACE, GroupFinished, GroupInfo, _parse_part, _Part, _part_bytes, PartInfo,
                            PartResult, PartsConflict, _POLL, _PROCESS_WRITER, _read_json, _read_parts,
                            _refuse_finished, upsert, upsert_artifact, _valid_alias, _valid_name,
                            WAIT_TIMEOUT, _WORKERS)
from ._groups_finish import (CLAIM_STALE, _commit_claim, _content, _contributors, finish, finish_artifact,
                             _finished_result, HEARTBEAT, _Heartbeat, _landed, merge, _merged_type, _PART_ID,
                             _path_of, _protect, _raise_conflict, _record)
from ._groups_status import (gc_groups, groups, pending_blobs, _scan)

__all__ = [
    "FORMAT",
    "GROUP_GRACE",
    "WAIT_TIMEOUT",
    "_WORKERS",
    "_POLL",
    "_PROCESS_WRITER",
    "PartsConflict",
    "GroupFinished",
    "default_writer",
    "PartResult",
    "PartInfo",
    "GroupInfo",
    "_G",
    "_check",
    "_part_bytes",
    "_Part",
    "_parse_part",
    "_read_parts",
    "_valid_alias",
    "_valid_name",
    "_read_json",
    "upsert",
    "_refuse_finished",
    "_after_upsert",
    "_claims",
    "upsert_artifact",
    "artifact_entries",
    "HEARTBEAT",
    "CLAIM_STALE",
    "merge",
    "_path_of",
    "_PART_ID",
    "_content",
    "_raise_conflict",
    "_Heartbeat",
    "finish",
    "_commit_claim",
    "_protect",
    "_contributors",
    "_merged_type",
    "_landed",
    "_record",
    "_finished_result",
    "finish_artifact",
    "groups",
    "_scan",
    "pending_blobs",
    "gc_groups",
]
