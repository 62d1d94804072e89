"""The one exception tree of artfs.

    ArtfsError                      base of everything artfs raises on purpose
    ├── InvalidName                 a project/artifact/alias name or version spec is malformed
    ├── InvalidPath                 an entry path is unsafe (``..``, absolute, NUL, empty part, ...)
    ├── NotFound                    a project, artifact, version, alias, blob or key does not exist
    ├── AlreadyExists               an exclusive create found the key already there
    ├── CorruptData                 bytes or a manifest do not match what was recorded
    │   └── SizeMismatch            a blob matches its digest but not its entry's size
    ├── StoreUnavailable            the store cannot be reached (after bounded retries)
    ├── ReferenceChanged            a reference's target no longer is what was recorded
    └── PermissionDenied            an operation the store, mount or options do not allow

Backends normalise their failures to these, so callers never catch ``botocore``,
``httpx`` or ``OSError`` types coming out of a store.
"""

from __future__ import annotations


class ArtfsError(Exception):
    """Base of every error artfs raises on purpose."""

    #: exit code used by the CLI for this kind of error
    exit_code = 1


class InvalidName(ArtfsError, ValueError):
    exit_code = 2


class InvalidPath(ArtfsError, ValueError):
    exit_code = 2


class NotFound(ArtfsError, KeyError):
    exit_code = 3

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else "not found"


class AlreadyExists(ArtfsError):
    exit_code = 4


class CorruptData(ArtfsError):
    exit_code = 5


class SizeMismatch(CorruptData):
    """A blob matches its digest but not the size its manifest entry gives (a broken manifest)."""

    exit_code = 5


class StoreUnavailable(ArtfsError):
    exit_code = 6


class ReferenceChanged(CorruptData):
    exit_code = 5


class PermissionDenied(ArtfsError, PermissionError):
    exit_code = 7
