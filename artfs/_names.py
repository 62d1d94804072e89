"""Validation of names, entry paths and version specs.

Every name or path that reaches a store key or a local file name passes through here, whether it
came from a user, a manifest read back from a store, or a reference listing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ._errors import InvalidName, InvalidPath

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_VERSION_RE = re.compile(r"v(0|[1-9][0-9]{0,17})")
_LOOKS_LIKE_VERSION_RE = re.compile(r"v[0-9]+")
RESERVED = frozenset({"draft"})


def check_name(name: object, what: str = "name") -> str:
    """Project and artifact names: letters, digits, ``.``, ``_``, ``-``; not starting with ``.``/``-``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"invalid {what} {name!r}: use letters, digits, '.', '_' and '-', "
            "not starting with '.' or '-', at most 128 characters"
        )
    if name in RESERVED or _VERSION_RE.fullmatch(name):
        raise InvalidName(f"invalid {what} {name!r}: reserved name")
    return name


def valid_name(name: str, *, alias: bool = False) -> bool:
    """Whether ``name`` passes :func:`check_name` (:func:`check_alias` with ``alias``): for
    listings, which skip what is not theirs instead of failing on it."""
    try:
        (check_alias if alias else check_name)(name)
        return True
    except InvalidName:
        return False


def check_alias(alias: object) -> str:
    if isinstance(alias, str) and _LOOKS_LIKE_VERSION_RE.fullmatch(alias):
        raise InvalidName(f"invalid alias {alias!r}: an alias may not look like a version")
    if isinstance(alias, str) and alias in RESERVED:
        raise InvalidName(f"invalid alias {alias!r}: {alias!r} is reserved")
    return check_name(alias, "alias")


def is_version(s: str) -> bool:
    return bool(_VERSION_RE.fullmatch(s))


def parse_version(s: str) -> int:
    if not _VERSION_RE.fullmatch(s):
        raise InvalidName(f"invalid version {s!r}: expected v0, v1, ...")
    return int(s[1:])


def check_path(path: object) -> str:
    """A relative POSIX entry path: no ``..``/``.``/empty parts, not absolute, no NUL, valid UTF-8."""
    if isinstance(path, bytes):
        try:
            path = path.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPath(f"invalid path {path!r}: not UTF-8") from None
    if not isinstance(path, str) or not path:
        raise InvalidPath(f"invalid path {path!r}: empty")
    if "\x00" in path:
        raise InvalidPath(f"invalid path {path!r}: contains NUL")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath(f"invalid path {path!r}: not valid UTF-8") from None
    if path.startswith("/"):
        raise InvalidPath(f"invalid path {path!r}: absolute paths are not allowed")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidPath(f"invalid path {path!r}: empty, '.' or '..' component")
        if len(part.encode("utf-8")) > 255:
            raise InvalidPath(f"invalid path {path!r}: component longer than 255 bytes")
    return path


#: a component of more than 255 UTF-8 bytes has more than 63 characters (at most 4 bytes each)
_SHORT = 63
_DOT_PART_RE = re.compile(rb"\x00\.\.?\x00")


def check_paths(paths: Sequence[object]) -> None:
    """:func:`check_path` for every item, in bulk; raises what ``check_path`` raises for the first bad one.

    For a manifest of millions of entries. All paths are joined with NUL (which no valid path
    contains: a NUL count tells if one does) and every ``/`` becomes NUL too, so each component
    lies between two NULs: one UTF-8 encoding (which refuses lone surrogates) and two scans of
    the joined bytes find empty, ``.`` and ``..`` components, an absolute path and an empty path;
    a component over 255 bytes needs a path over 63 characters, and only such paths are split.
    Whenever the bulk check is not sure, each path goes through ``check_path``, which names the
    problem, so the two accept exactly the same paths.
    """
    if not _paths_ok(paths):
        for p in paths:
            check_path(p)


def _paths_ok(paths: Sequence[object]) -> bool:
    n = len(paths)
    if n == 0:
        return True
    try:
        joined = "\x00".join(paths)  # type: ignore[arg-type]  # TypeError unless all are str
    except TypeError:
        return False
    if joined.count("\x00") != n - 1:  # a NUL inside a path
        return False
    try:
        b = b"".join((b"\x00", joined.replace("/", "\x00").encode("utf-8"), b"\x00"))
    except UnicodeEncodeError:  # a lone surrogate: not valid UTF-8
        return False
    del joined
    # empty path, absolute path, trailing '/', '//'; then '.' and '..' components
    if b"\x00\x00" in b or _DOT_PART_RE.search(b):
        return False
    del b
    if max(map(len, paths)) > _SHORT:  # type: ignore[arg-type]
        long = [p for p in paths if len(p) > _SHORT]  # type: ignore[arg-type]
        parts = "/".join(long).encode("utf-8").split(b"/")  # type: ignore[arg-type]
        if max(map(len, parts)) > 255:
            return False
    return True


def join_path(prefix: str | None, rel: str) -> str:
    if not prefix:
        return check_path(rel)
    return check_path(prefix.strip("/") + "/" + rel)


def _is_name(s: str) -> bool:
    try:
        check_name(s, "name")
        return True
    except InvalidName:
        return False


@dataclass(frozen=True)
class Spec:
    """``project/artifact[:version-or-alias]``; ``version`` is an int, ``alias`` a name.

    Made by :func:`parse_spec`, which validates every part (``InvalidName``).
    """

    project: str
    artifact: str
    version: int | None = None
    alias: str | None = None

    @property
    def ref(self) -> str:
        """``v3``, the alias, or ``latest`` when the spec names neither."""
        return f"v{self.version}" if self.version is not None else (self.alias or "latest")

    def __str__(self) -> str:
        return f"{self.project}/{self.artifact}:{self.ref}"


def parse_spec(spec: str, *, default_project: str | None = None, need_ref: bool = False) -> Spec:
    """Parse ``proj/art``, ``proj/art:v3``, ``proj/art:best``; a bare ``art`` needs a default project.

    Raises ``InvalidName`` for anything else, including W&B's ``entity/project/artifact`` (artfs
    has no entity; the message names the spec to use instead).
    """
    if not isinstance(spec, str) or not spec:
        raise InvalidName(f"invalid artifact spec {spec!r}")
    name, sep, ref = spec.partition(":")
    if need_ref and not sep:
        ref = "latest"
    if name.count("/") == 2 and all(_is_name(part) for part in name.split("/")):
        # W&B's entity/project/artifact: artfs has no entity (a store is one namespace); say what works
        rest = spec.split("/", 1)[1]
        raise InvalidName(f"invalid artifact spec {spec!r}: artfs has no entity (W&B's entity/project/artifact); "
                          f"name it project/artifact, e.g. {rest}")
    if "/" in name:
        project, _, artifact = name.partition("/")
    elif default_project:
        project, artifact = default_project, name
    else:
        raise InvalidName(f"invalid artifact spec {spec!r}: expected project/artifact[:version]")
    check_name(project, "project")
    check_name(artifact, "artifact")
    if not sep or not ref:
        if sep:
            raise InvalidName(f"invalid artifact spec {spec!r}: empty version after ':'")
        return Spec(project, artifact, None, "latest" if need_ref else None)
    if is_version(ref):
        return Spec(project, artifact, int(ref[1:]), None)
    return Spec(project, artifact, None, check_alias(ref))


def make_artifact_name_safe(name: str) -> str:
    """W&B's ``wandb.util.make_artifact_name_safe``: other characters become ``_``; names longer
    than 128 keep their first and last 63 characters around ``..``."""
    cleaned = re.sub(r"[^a-zA-Z0-9_\-.]", "_", name)
    if len(cleaned) <= 128:
        return cleaned
    return re.sub(r"(^.{63}).*(.{63}$)", r"\g<1>..\g<2>", cleaned)
