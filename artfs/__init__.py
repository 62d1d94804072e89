"""artfs: versioned datasets and models, mounted as plain directories.

The public surface; implementation lives in private modules.
"""

from __future__ import annotations

from ._api import Api
from ._artifact import Artifact, ArtifactManifestEntry
from ._cache import Cache, parse_size
from ._digest import digest_bytes, digest_file
from ._distributed import GroupFinished, GroupInfo, PartResult, PartsConflict
from ._errors import (
    AlreadyExists,
    ArtfsError,
    CorruptData,
    InvalidName,
    InvalidPath,
    NotFound,
    PermissionDenied,
    ReferenceChanged,
    StoreUnavailable,
)
from ._manifest import Entry, Manifest
from ._names import Spec, parse_spec
from ._refs import RefReader, resolve_reference
from ._run import Run, finish, init, log_artifact, use_artifact
from . import _run_groups  # noqa: F401  (adds Run.upsert_artifact and Run.finish_artifact)
from . import data_types
from .data_types import PartitionedTable, Table
from ._store import CommitResult, Store

__version__ = "0.1.0"

__all__ = [
    "Api", "Run", "finish", "init", "log_artifact", "use_artifact", "PartitionedTable", "Table", "data_types",
    "AlreadyExists", "Artifact", "ArtifactManifestEntry", "ArtfsError", "Cache", "CommitResult",
    "CorruptData", "Entry", "GroupFinished", "GroupInfo", "PartResult", "PartsConflict", "InvalidName", "InvalidPath", "Manifest", "NotFound", "PermissionDenied",
    "RefReader", "ReferenceChanged", "Spec", "Store", "StoreUnavailable", "digest_bytes", "digest_file",
    "parse_size", "parse_spec", "resolve_reference",
]


def __getattr__(name: str) -> object:
    """``artfs.run``: the current run (like ``wandb.run``), None outside ``artfs.init()``."""
    if name == "run":
        from . import _run

        return _run.current()
    raise AttributeError(f"module 'artfs' has no attribute {name!r}")
