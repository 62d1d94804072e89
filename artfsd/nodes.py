"""The nodes above the version trees, and the inode table (the data of :mod:`artfsd.listings`).

Node types: :class:`RootDir`, :class:`ProjectDir`, :class:`ArtifactDir` (listing directories),
:class:`AliasLink`, :class:`VersionDir` (``vN``: the root of a version tree), :class:`DraftRoot`
(``draft``, whose inodes lie in the draft space). Which handler answers for which node is
decided in one place, :meth:`artfsd.fs.Operations.route`.
"""

from __future__ import annotations

import bisect
import math
import time
from typing import Any

import pyfuse3
import trio

from .tree import LazyTree, VersionTree

ROOT_INODE = pyfuse3.ROOT_INODE


def now() -> float:
    """The clock of listing ages (monotonic)."""
    return time.monotonic()


# -- nodes ---------------------------------------------------------------------------------------
class Node:
    __slots__ = ("ino", "parent", "name")

    def __init__(self, ino: int, parent: "ListingDir | None", name: str) -> None:
        self.ino = ino
        self.parent = parent
        self.name = name


class ListingDir(Node):
    """A directory whose children come from listing the store."""

    __slots__ = ("children", "seen", "listed_at", "ok", "inflight", "used_at", "failing", "denied")

    def __init__(self, ino: int, parent: "ListingDir | None", name: str) -> None:
        super().__init__(ino, parent, name)
        self.children: dict[str, Node] = {}  # what the last listing found
        self.seen: dict[str, Node] = {}  # every child ever seen: a name that comes back keeps its inode
        self.listed_at = -math.inf  # monotonic time of the last successful listing
        self.ok = False  # listed successfully at least once
        self.inflight: trio.Event | None = None
        self.used_at = now()
        self.failing = False  # the last refresh failed (log once per failure streak)
        self.denied = False  # the last refresh was refused by the store (EACCES, not EIO)

    def sorted_children(self) -> list[tuple[str, Node]]:
        return sorted(self.children.items())


class RootDir(ListingDir):
    __slots__ = ()


class ProjectDir(ListingDir):
    __slots__ = ()

    @property
    def project(self) -> str:
        return self.name


class ArtifactDir(ListingDir):
    __slots__ = ("versions", "aliases", "alias_nodes", "draft")

    def __init__(self, ino: int, parent: ListingDir, name: str) -> None:
        super().__init__(ino, parent, name)
        self.versions: dict[int, VersionDir] = {}  # every version ever seen (stable inodes)
        self.aliases: dict[str, int] = {}  # current alias -> version
        self.alias_nodes: dict[str, AliasLink] = {}  # every alias ever seen
        self.draft: DraftRoot | None = None  # writable mounts: made on the first listing

    @property
    def project(self) -> str:
        assert self.parent is not None
        return self.parent.name

    def aliases_of(self, n: int) -> list[str]:
        return sorted(a for a, v in self.aliases.items() if v == n)


class DraftRoot(Node):
    """``MNT/<project>/<artifact>/draft``: the node the artifact lists; everything below it is
    served by :class:`artfsd.drafts.DraftSpace` (``slot`` is its :class:`artfsd.drafts.DraftSlot`)."""

    __slots__ = ("slot",)

    def __init__(self, ino: int, parent: "ArtifactDir", slot: Any) -> None:
        super().__init__(ino, parent, "draft")
        self.slot = slot


class CollectionDir(ListingDir):
    """``MNT/<registry>/<collection>/``: a registry collection (artfs._registry), read-only; each
    ``vN`` is a symlink to the linked version's directory, each alias a symlink to ``vN``."""

    __slots__ = ()

    @property
    def project(self) -> str:
        assert self.parent is not None
        return self.parent.name


class AliasLink(Node):
    """A symlink: an alias (``latest -> v3``), or a collection's entry (``raw``, any target)."""

    __slots__ = ("target", "raw")

    def __init__(self, ino: int, parent: ListingDir, name: str, target: int, raw: bytes | None = None) -> None:
        super().__init__(ino, parent, name)
        self.target = target
        self.raw = raw

    @property
    def link(self) -> bytes:
        return self.raw if self.raw is not None else f"v{self.target}".encode()


class VersionDir(Node):
    """``vN``: the root of a version tree. Its index is loaded on first use, unloadable later."""

    __slots__ = (
        "n", "tree", "base", "loading", "created", "created_ns", "type", "digest", "description", "metadata",
        "info_at", "nlookup", "nopen",
    )

    def __init__(self, ino: int, parent: ArtifactDir, n: int) -> None:
        super().__init__(ino, parent, f"v{n}")
        self.n = n
        self.tree: VersionTree | LazyTree | None = None
        self.base = 0  # first inode of the tree's range; 0 until first loaded
        self.loading: trio.Lock = trio.Lock()
        self.created = ""  # ISO 8601, as the manifest records it
        self.created_ns = 0
        self.type = ""
        self.digest = ""
        self.description: str | None = None
        self.metadata: dict[str, Any] = {}
        self.info_at = -math.inf
        self.nlookup = 0  # kernel references to inodes inside the tree
        self.nopen = 0  # open files inside the tree

    @property
    def artifact(self) -> ArtifactDir:
        assert isinstance(self.parent, ArtifactDir)
        return self.parent

    @property
    def key(self) -> tuple[str, str, int]:
        a = self.artifact
        return a.project, a.name, self.n

    @property
    def spec(self) -> str:
        p, a, n = self.key
        return f"{p}/{a}:v{n}"


# -- the inode table -----------------------------------------------------------------------------
class Inodes:
    """Inode numbers: one each for the nodes above, a contiguous range per version tree."""

    def __init__(self) -> None:
        self.next = ROOT_INODE + 1
        self.meta: dict[int, Node] = {}
        self._starts: list[int] = []
        self._owners: list[VersionDir] = []

    def allocate(self) -> int:
        ino = self.next
        self.next += 1
        return ino

    def add(self, node: Node) -> Node:
        self.meta[node.ino] = node
        return node

    def reserve(self, vdir: VersionDir, count: int) -> int:
        base = self.next
        self.next += max(count, 1)
        self._starts.append(base)
        self._owners.append(vdir)
        return base

    def range_end(self, vdir: VersionDir) -> int:
        """The first inode number after the range reserved for ``vdir``'s tree."""
        i = self._owners.index(vdir)
        return self._starts[i + 1] if i + 1 < len(self._starts) else self.next

    def tree_owner(self, ino: int) -> VersionDir | None:
        i = bisect.bisect_right(self._starts, ino) - 1
        if i < 0:
            return None
        v = self._owners[i]
        nxt = self._starts[i + 1] if i + 1 < len(self._starts) else self.next
        return v if ino < nxt else None
