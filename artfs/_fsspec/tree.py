"""One version's files and directories, indexed once from its manifest, for listings and lookups.

A manifest lists files only, sorted by path; directories are the prefixes of those paths. The
index keeps the entries by path, the children of every directory, and the sorted path list, so
``ls`` of a directory costs its children, ``info`` a dict lookup, and ``find`` below a directory
one bisection and a slice (every path under ``d/`` is one contiguous run of the sorted list).
Versions never change, so an index is valid for as long as anyone keeps it.
"""

from __future__ import annotations

import bisect
import datetime as _dt
from typing import Any

from .._manifest import Entry, Manifest


class VersionIndex:
    """The files of one version (``vN``) and the directories they imply."""

    def __init__(self, project: str, artifact: str, version: int | None, entries: list[Entry], *,
                 digest: str | None = None, type: str = "unspecified", created: float = 0.0) -> None:
        self.project, self.artifact, self.version = project, artifact, version
        self.digest, self.type, self.created = digest, type, created
        self.paths = [e.path for e in entries]
        self.files: dict[str, Entry] = dict(zip(self.paths, entries))
        self.dirs: dict[str, set[str]] = {"": set()}
        for p in self.paths:
            child = p
            while True:
                parent, _, name = child.rpartition("/")
                known = parent in self.dirs
                self.dirs.setdefault(parent, set()).add(name)
                if known or not parent:
                    break
                child = parent

    def kind(self, rel: str) -> str | None:
        """``file``, ``directory`` or None for a path that the version does not have."""
        if rel in self.files:
            return "file"
        return "directory" if rel in self.dirs else None

    def children(self, rel: str) -> list[str]:
        """Entry paths of the files and directories directly in directory ``rel``."""
        return [f"{rel}/{n}" if rel else n for n in sorted(self.dirs[rel])]

    def below(self, rel: str) -> list[str]:
        """Every file path below directory ``rel`` (all of them for the root), sorted."""
        if not rel:
            return list(self.paths)
        lo = bisect.bisect_left(self.paths, rel + "/")
        hi = bisect.bisect_left(self.paths, rel + "0")  # "0" sorts right after "/"
        return self.paths[lo:hi]

    def dirs_below(self, rel: str) -> list[str]:
        """Every directory path below directory ``rel``, sorted."""
        prefix = rel + "/" if rel else ""
        return sorted(d for d in self.dirs if d and d.startswith(prefix))

    def close_names(self, rel: str) -> list[str]:
        """Names in ``rel``'s directory (for a "did you mean"), when that directory exists."""
        parent = rel.rpartition("/")[0]
        return sorted(self.dirs.get(parent, ()))

    def file_info(self, name: str, rel: str) -> dict[str, Any]:
        e = self.files[rel]
        out: dict[str, Any] = {"name": name, "size": e.size, "type": "file", "digest": e.digest,
                               "executable": e.executable, "version": self.ref, "mtime": self.created,
                               "created": self.created}
        if e.ref is not None:
            out["ref"] = e.ref
        return out

    def dir_info(self, name: str) -> dict[str, Any]:
        return {"name": name, "size": 0, "type": "directory", "version": self.ref, "mtime": self.created,
                "created": self.created}

    @property
    def ref(self) -> str:
        """``p/a:vN`` (``p/a:draft`` for a draft's view)."""
        return f"{self.project}/{self.artifact}:" + ("draft" if self.version is None else f"v{self.version}")

    @classmethod
    def of(cls, m: Manifest) -> "VersionIndex":
        """The index of a logged version (its entries are sorted by path: the manifest's invariant)."""
        try:
            created = _dt.datetime.fromisoformat(m.created).timestamp()
        except (TypeError, ValueError):
            created = 0.0
        return cls(m.project, m.artifact, m.version, list(m.entries), digest=m.digest, type=m.type, created=created)
