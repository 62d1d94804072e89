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
    """A project, artifact, alias or type name, or a version spec, is malformed."""

    exit_code = 2


class InvalidPath(ArtfsError, ValueError):
    """An entry path is unsafe (``..``, absolute, NUL, an empty part, ...)."""

    exit_code = 2


class NotFound(ArtfsError, KeyError):
    """A store, project, artifact, version, alias, blob or key does not exist."""

    exit_code = 3

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else "not found"


class AlreadyExists(ArtfsError):
    """An exclusive create found the key already there."""

    exit_code = 4


class CorruptData(ArtfsError):
    """Bytes or a manifest do not match what was recorded."""

    exit_code = 5


class SizeMismatch(CorruptData):
    """A blob matches its digest but not the size its manifest entry gives (a broken manifest)."""

    exit_code = 5


class StoreUnavailable(ArtfsError):
    """The store cannot be reached (after bounded retries)."""

    exit_code = 6


class ReferenceChanged(CorruptData):
    """A reference's target is no longer the object that was recorded."""

    exit_code = 5


class PermissionDenied(ArtfsError, PermissionError):
    """The store, the mount or the options do not allow this (e.g. reading a ``file://`` reference)."""

    exit_code = 7
