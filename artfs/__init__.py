"""artfs: versioned datasets and models, mounted as plain directories.

The public surface; implementation lives in private modules. Names are imported when first
used (PEP 562), so that ``import artfs`` (and ``artfs --version``) does not pay for httpx,
boto3 and the rest until a name that needs them is touched; ``from artfs import X`` and
``artfs.X`` behave exactly as eager imports would.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the private module that defines it
_EXPORTS: dict[str, str] = {
    "Api": "_api", "AliasMove": "_aliaslog",
    "Artifact": "_artifact", "ArtifactManifestEntry": "_artifact",
    "Cache": "_cache", "parse_size": "_cache",
    "digest_bytes": "_digest", "digest_file": "_digest",
    "ArtifactDiff": "_diff", "FileChange": "_diff",
    "GroupFinished": "_distributed", "GroupInfo": "_distributed", "PartResult": "_distributed",
    "PartsConflict": "_distributed",
    "AlreadyExists": "_errors", "ArtfsError": "_errors", "CorruptData": "_errors", "InvalidName": "_errors",
    "InvalidPath": "_errors", "NotFound": "_errors", "PermissionDenied": "_errors",
    "ReferenceChanged": "_errors", "StoreUnavailable": "_errors",
    "Entry": "_manifest", "Manifest": "_manifest",
    "Spec": "_names", "parse_spec": "_names",
    "RefReader": "_refs", "resolve_reference": "_refs",
    "Run": "_run", "finish": "_run", "init": "_run", "log_artifact": "_run", "use_artifact": "_run",
    "Config": "_config", "ConfigError": "_config", "Summary": "_history", "Metric": "_history",
    "termlog": "_term", "termwarn": "_term", "termerror": "_term",
    "login": "_wandb", "define_metric": "_wandb", "log_code": "_wandb", "watch": "_wandb", "unwatch": "_wandb",
    "alert": "_wandb", "save": "_wandb", "sweep": "_wandb", "agent": "_wandb", "controller": "_wandb",
    "setup": "_wandb", "teardown": "_wandb", "Settings": "_wandb",
    "Image": "data_types", "PartitionedTable": "data_types", "Table": "data_types", "Video": "data_types",
    "Audio": "data_types", "Html": "data_types", "Histogram": "data_types", "Object3D": "data_types",
    "CommitResult": "_store", "Store": "_store",
}

__all__ = [
    "Api", "Run", "finish", "init", "log_artifact", "use_artifact", "PartitionedTable", "Table", "data_types",
    "Image", "Video", "Audio", "Html", "Histogram", "Object3D", "Config", "ConfigError", "Summary", "Metric",
    "termlog", "termwarn", "termerror", "login", "log", "define_metric", "log_code", "watch", "unwatch", "alert",
    "save", "sweep", "agent", "controller", "setup", "teardown", "Settings", "util",
    "AliasMove", "AlreadyExists", "Artifact", "ArtifactDiff", "ArtifactManifestEntry", "FileChange", "ArtfsError",
    "Cache", "CommitResult",
    "CorruptData", "Entry", "GroupFinished", "GroupInfo", "PartResult", "PartsConflict", "InvalidName",
    "InvalidPath", "Manifest", "NotFound", "PermissionDenied", "RefReader", "ReferenceChanged", "Spec", "Store",
    "StoreUnavailable", "digest_bytes", "digest_file", "parse_size", "parse_spec", "resolve_reference",
]

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from . import data_types, util
    from ._aliaslog import AliasMove
    from ._api import Api
    from ._config import Config, ConfigError
    from ._history import Metric, Summary
    from ._term import termerror, termlog, termwarn
    from ._wandb import (
        Settings,
        agent,
        alert,
        controller,
        define_metric,
        log_code,
        login,
        save,
        setup,
        sweep,
        teardown,
        unwatch,
        watch,
    )
    from ._wandb import log_metrics as log
    from ._artifact import Artifact, ArtifactManifestEntry
    from ._cache import Cache, parse_size
    from ._diff import ArtifactDiff, FileChange
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
    from ._store import CommitResult, Store
    from .data_types import Audio, Histogram, Html, Image, Object3D, PartitionedTable, Table, Video
    config: Any  # the current run's Config (artfs.__getattr__)
    summary: Any


def __getattr__(name: str) -> Any:
    """The public names, imported on first use; ``artfs.run``, ``artfs.config``, ``artfs.summary``:
    the current run's (like ``wandb.run``; before ``init()`` a placeholder that says to call it)."""
    if name in ("run", "config", "summary"):
        from . import _run

        run = _run.current()
        if name == "run":
            return run
        if run is None:
            from ._config import PreInit

            return PreInit(name)
        return getattr(run, name)
    if name == "log":
        from ._wandb import log_metrics

        globals()["log"] = log_metrics
        return log_metrics
    if name in ("data_types", "util"):
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        if name.startswith("_") and not name.startswith("__"):  # artfs._run etc., as eager imports had them
            try:
                return importlib.import_module(f".{name}", __name__)
            except ModuleNotFoundError:
                pass
        raise AttributeError(f"module 'artfs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "run", "config", "summary"})
