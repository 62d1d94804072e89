"""``artfs://`` paths: the mount's layout, parsed and validated before any request.

    ""                               the store: its projects
    PROJECT                          its artifacts
    PROJECT/ARTIFACT                 its versions (``v0``, ``v1``, ...) and aliases
    PROJECT/ARTIFACT/vN/PATH         a file or directory of version N
    PROJECT/ARTIFACT/ALIAS/PATH      the same through an alias (``latest``, ``best``, ...)
    PROJECT/ARTIFACT:REF/PATH        W&B's spelling of the two above (``cycling/bike-dataset:v3/x``)
    PROJECT/ARTIFACT/draft/PATH      the next version, written inside ``with fs.transaction:``

Every part goes through :mod:`artfs._names` (``InvalidName``, ``InvalidPath``: both are
``ValueError``), so ``..``, empty components and bad names never reach a store key. Names that
come back out of the filesystem keep the spelling the caller used up to the version
(:attr:`Where.head`): a listing of ``p/a/latest`` names ``p/a/latest/x``, not ``p/a/v3/x``, because
fsspec's ``glob`` matches the names it lists against the caller's pattern.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from .._errors import InvalidName, InvalidPath, NotFound, PermissionDenied
from .._names import check_alias, check_name, check_path, is_version

DRAFT = "draft"
PROTOCOL = "artfs"


@dataclass(frozen=True)
class Where:
    """A parsed path. ``ref`` is ``vN``, an alias or ``draft``; ``path`` the entry path below it."""

    project: str | None = None
    artifact: str | None = None
    ref: str | None = None
    path: str = ""
    colon: bool = False  # spelt PROJECT/ARTIFACT:REF

    @property
    def level(self) -> str:
        """``store``, ``project``, ``artifact``, ``version`` (a version or alias) or ``draft``."""
        if self.project is None:
            return "store"
        if self.artifact is None:
            return "project"
        if self.ref is None:
            return "artifact"
        return "draft" if self.ref == DRAFT else "version"

    @property
    def version(self) -> int | None:
        """N of ``vN``; None for an alias, a draft or a level above versions."""
        return int(self.ref[1:]) if self.ref is not None and is_version(self.ref) else None

    @property
    def head(self) -> str:
        """The path up to and including the version, as the caller spelt it."""
        if self.artifact is None:
            return self.project or ""
        base = f"{self.project}/{self.artifact}"
        if self.ref is None:
            return base
        return f"{base}:{self.ref}" if self.colon else f"{base}/{self.ref}"

    @property
    def name(self) -> str:
        """The whole path (without the protocol)."""
        return f"{self.head}/{self.path}" if self.path else self.head

    def child(self, rel: str) -> str:
        """The name of ``rel`` (an entry path) below this version."""
        return f"{self.head}/{rel}" if rel else self.head

    @property
    def what(self) -> str:
        """``p/a:v3`` (or ``p/a:latest``): the version as artfs's messages name it."""
        return f"{self.project}/{self.artifact}:{self.ref}"


def strip(path: str) -> str:
    """``artfs://p/a/v1/x/`` -> ``p/a/v1/x``."""
    if path.startswith(PROTOCOL + "://"):
        path = path[len(PROTOCOL) + 3:]
    elif path.startswith(PROTOCOL + "::"):
        path = path[len(PROTOCOL) + 2:]
    return path.strip("/")


def parse(path: str) -> Where:
    """Parse a path (protocol already stripped); ``InvalidName``/``InvalidPath`` for anything unsafe."""
    if not isinstance(path, str):
        raise InvalidPath(f"invalid path {path!r}")
    path = path.strip("/")
    if not path:
        return Where()
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\x00" in path:
        raise InvalidPath(f"invalid path {path!r}: empty, '.' or '..' component")
    project = check_name(parts[0], "project")
    if len(parts) == 1:
        return Where(project)
    name, colon, ref = parts[1].partition(":")
    if colon:
        artifact = check_name(name, "artifact")
        if not ref:
            raise InvalidName(f"invalid path {path!r}: empty version after ':'")
        rest = parts[2:]
    else:
        artifact = check_name(parts[1], "artifact")
        if len(parts) == 2:
            return Where(project, artifact)
        ref, rest = parts[2], parts[3:]
        if ":" in ref:
            # W&B's entity/project/artifact:alias: artfs has no entity (a store is one namespace)
            raise InvalidName(f"invalid path {path!r}: artfs has no entity (W&B's entity/project/artifact); "
                              f"name it project/artifact, e.g. {'/'.join(parts[1:])}")
    if not is_version(ref) and ref != DRAFT:
        check_alias(ref)
    entry = "/".join(rest)
    if entry:
        check_path(entry)
    return Where(project, artifact, ref, entry, bool(colon))


@contextmanager
def fs_errors(name: str) -> Iterator[None]:
    """artfs's NotFound as fsspec's FileNotFoundError (the message keeps artfs's "did you mean")."""
    try:
        yield
    except NotFound as e:
        raise FileNotFoundError(f"artfs://{name}: {e}") from None


def refuse_write(w: Where, in_transaction: bool) -> None:
    """PermissionDenied unless ``w`` is a file under a draft and a transaction is open."""
    if w.level == "version":
        raise PermissionDenied(f"artfs://{w.name}: {w.what} is read-only (versions never change); write "
                               f"into artfs://{w.project}/{w.artifact}/{DRAFT}/... inside `with fs.transaction:`")
    if w.level != "draft" or not w.path:
        raise PermissionDenied(f"artfs://{w.name}: only files under PROJECT/ARTIFACT/{DRAFT}/ can be written")
    if not in_transaction:
        raise PermissionDenied(
            f"artfs://{w.name}: writes become a new version only inside a transaction: "
            f"`with fs.transaction: ...` (fs = fsspec.filesystem('artfs')); the version is created when it ends")
