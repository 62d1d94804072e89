"""The read-only directory tree of one version, indexed compactly from its manifest.

Two kinds: :class:`VersionTree`, the whole index of a format-1 manifest, built at once (below);
and :class:`LazyTree`, the tree of a sharded version (artfs/_pieces.py), which reads one
directory's piece at a time, when the directory is first asked for (its docstring says how its
node ids are fixed up front). :func:`tree_for` picks one; the handlers use the same methods on both.

A version is immutable, so its index is built once (on first access, in a worker thread) and
never changes. Memory matters: a version may have millions of entries, so the index holds no
Python object per entry, only a few large arrays (about 45 bytes per entry plus its name's
UTF-8 bytes; measured 1M entries -> ~60 MB). Without small objects it also leaves no
fragmentation behind: the memory of the parsed manifest, dropped once the index is built, goes
back to the allocator whole.

Layout. Every directory's children are sorted by name (UTF-8 bytes, i.e. code point order) and
stored one directory after the other in "slots": slot ``i`` has the name
``names[name_off[i]:name_off[i + 1]]`` and the node ``child_node[i]``; directory ``d`` owns slots
``dir_start[d]:dir_start[d + 1]``, so a lookup is a binary search over its slots and readdir
offsets are slot positions.

Nodes. File ``j`` (the j-th manifest entry, in path order) is node ``j``; directory ``d`` is node
``nfiles + d``, directory 0 being the version's root. The inode of node ``k`` is ``base + k``
(``base`` is reserved once per version for the mount's lifetime, so rebuilding an unloaded index
gives the same inode numbers), except the root, whose inode belongs to the version directory at
the artifact level.
"""

from __future__ import annotations

import bisect
from array import array
from typing import Any, Sequence

from artfs import Entry, Manifest
from artfs.lowlevel import gc_paused, tree_of

EXECUTABLE = 1
HAS_DIGEST = 2


class VersionTree:
    lazy = False

    __slots__ = (
        "nfiles", "ndirs", "sizes", "digests", "flags", "refs",
        "names", "name_off", "child_node", "dir_start", "dir_parent", "dir_slot", "dir_nsub", "_file_dir",
    )

    def __init__(self, manifest: Manifest) -> None:
        self._file_dir: array[int] | None = None  # built on first use by file_dir()
        with gc_paused():  # a million temporary tuples, no cycles: collections would only cost
            self._build(manifest)

    def _build(self, manifest: Manifest) -> None:
        entries = manifest.entries
        n = len(entries)
        self.nfiles = n
        self.sizes = array("Q", (e.size for e in entries))
        digests = bytearray(16 * n)
        flags = bytearray(n)
        self.refs: dict[int, Entry] = {}  # references are rare: their whole entries in a dict
        # building blocks (temporary)
        dir_ids: dict[str, int] = {"": 0}
        dir_parent = array("q", [0])
        kids: list[list[tuple[bytes, int]]] = [[]]

        for j, e in enumerate(entries):
            f = EXECUTABLE if e.executable else 0
            if e.digest:
                f |= HAS_DIGEST
                digests[16 * j : 16 * j + 16] = bytes.fromhex(e.digest.split(":", 1)[1])
            flags[j] = f
            if e.ref is not None:
                self.refs[j] = e
            parent_path, _, name = e.path.rpartition("/")
            d = dir_ids.get(parent_path)
            if d is None:  # create the missing ancestors, outermost first
                d, acc = 0, ""
                for part in parent_path.split("/"):
                    acc = f"{acc}/{part}" if acc else part
                    nd = dir_ids.get(acc)
                    if nd is None:
                        nd = len(kids)
                        dir_ids[acc] = nd
                        dir_parent.append(d)
                        kids.append([])
                        kids[d].append((part.encode(), n + nd))
                    d = nd
            kids[d].append((name.encode(), j))
        del dir_ids

        self.ndirs = nd_total = len(kids)
        self.digests = bytes(digests)
        self.flags = bytes(flags)
        del digests, flags
        self.dir_parent = dir_parent
        self.dir_nsub = array("l", [0]) * nd_total
        for d in range(1, nd_total):
            self.dir_nsub[dir_parent[d]] += 1
        names = bytearray()
        name_off = array("Q", [0])
        child_node = array("q")
        dir_start = array("Q")
        dir_slot = array("q", [-1]) * nd_total
        for d in range(nd_total):
            ks = kids[d]
            kids[d] = []  # free as we go
            ks.sort()
            dir_start.append(len(child_node))
            for name_b, node in ks:
                if node >= n:
                    dir_slot[node - n] = len(child_node)
                names += name_b
                name_off.append(len(names))
                child_node.append(node)
        dir_start.append(len(child_node))
        self.names = bytes(names)
        self.name_off = name_off
        self.child_node = child_node
        self.dir_start = dir_start
        self.dir_slot = dir_slot

    # -- nodes ---------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """How many inode numbers the tree needs (files, directories, the root's unused slot)."""
        return self.nfiles + self.ndirs

    @property
    def root(self) -> int:
        return self.nfiles

    def is_dir(self, node: int) -> bool:
        return node >= self.nfiles

    def dir_of(self, node: int) -> int:
        return node - self.nfiles

    def dir_node(self, d: int) -> int:
        return self.nfiles + d

    def parent(self, d: int) -> int:
        return self.dir_parent[d]

    def nlink(self, node: int) -> int:
        return 2 + self.dir_nsub[self.dir_of(node)]

    def loaded(self, node: int) -> bool:
        return True

    def loaded_dir(self, node: int) -> bool:
        return True

    def load_dir(self, node: int) -> None:
        pass

    def slots(self, d: int) -> range:
        """The slots of directory ``d``'s children, in name order."""
        return range(self.dir_start[d], self.dir_start[d + 1])

    def slot_name(self, i: int) -> bytes:
        return self.names[self.name_off[i] : self.name_off[i + 1]]

    def slot_node(self, i: int) -> int:
        return self.child_node[i]

    def lookup(self, d: int, name: bytes) -> int | None:
        """The node of ``name`` in directory ``d``, or None."""
        slots = self.slots(d)
        k = bisect.bisect_left(slots, name, key=self.slot_name)
        if k < len(slots) and self.slot_name(slots[k]) == name:
            return self.child_node[slots[k]]
        return None

    # -- files ---------------------------------------------------------------------------------
    def file_dir(self, j: int) -> int:
        """The directory holding file ``j`` (an index of every file's directory, built once: 8 B/file)."""
        if self._file_dir is None:
            fd = array("q", bytes(8 * self.nfiles))
            child, nfiles = self.child_node, self.nfiles
            for d in range(self.ndirs):
                for i in self.slots(d):
                    node = child[i]
                    if node < nfiles:
                        fd[node] = d
            self._file_dir = fd
        return self._file_dir[j]

    def digest(self, j: int) -> str | None:
        if not self.flags[j] & HAS_DIGEST:
            return None
        return "xxh128:" + self.digests[16 * j : 16 * j + 16].hex()

    def executable(self, j: int) -> bool:
        return bool(self.flags[j] & EXECUTABLE)

    def path(self, node: int) -> str:
        """The entry path of a node, for log lines (the root is ``""``)."""
        if self.is_dir(node):
            slot = self.dir_slot[self.dir_of(node)]
        else:
            slot = self.child_node.index(node)  # rare: error messages only
        parts = []
        while slot >= 0:
            parts.append(self.slot_name(slot).decode("utf-8", "replace"))
            d = bisect.bisect_right(self.dir_start, slot) - 1  # the directory owning the slot
            slot = self.dir_slot[d] if d else -1
        return "/".join(reversed(parts))


# -- a sharded version, read piece by piece ---------------------------------------------------------
class _Dir:
    """One loaded directory of a :class:`LazyTree`: its children sorted by name (bytes), their
    node ids (increasing in that order) and, by position, a file's size, digest and flags (arrays:
    about 70 B per child with its name, no Python object per child but its name)."""

    __slots__ = ("node", "parent", "path", "names", "ids", "subs", "sizes", "digests", "flags", "refs")

    def __init__(self, node: int, parent: int, path: str, piece: Any) -> None:
        self.node, self.parent, self.path = node, parent, path
        kids: list[tuple[bytes, int, Any]] = [(e.path.encode(), 0, e) for e in piece.files]
        kids += [(s.name.encode(), 1, s) for s in piece.dirs]
        kids.sort(key=_first)
        n = len(kids)
        self.names = [k[0] for k in kids]
        self.ids = array("q", bytes(8 * n))
        self.sizes = array("Q", bytes(8 * n))
        digests = bytearray(16 * n)
        flags = bytearray(n)
        self.subs: dict[int, Any] = {}  # child node -> its SubDir record
        self.refs: dict[int, Entry] = {}  # references are rare: their whole entries
        nxt = node + 1
        for k, (_, kind, x) in enumerate(kids):
            self.ids[k] = nxt
            if kind:
                self.subs[nxt] = x
                nxt += 1 + x.nfiles + x.ndirs
                continue
            self.sizes[k] = x.size
            f = EXECUTABLE if x.executable else 0
            if x.digest:
                f |= HAS_DIGEST
                digests[16 * k:16 * k + 16] = bytes.fromhex(x.digest[7:])
            flags[k] = f
            if x.ref is not None:
                self.refs[nxt] = x
            nxt += 1
        self.digests = bytes(digests)
        self.flags = bytes(flags)

    def at(self, node: int) -> int:
        """The position of child ``node``."""
        return bisect.bisect_left(self.ids, node)


def _first(t: tuple[bytes, int, Any]) -> bytes:
    return t[0]


class _Sizes:
    """``tree.sizes[node]`` of a :class:`LazyTree` (0 for a directory)."""

    def __init__(self, tree: "LazyTree") -> None:
        self._tree = tree

    def __getitem__(self, node: int) -> int:
        d = self._tree.holder(node)
        if d is None:
            raise IndexError(node)
        return d.sizes[d.at(node)]


class _Refs:
    """``tree.refs.get(node)``, ``node in tree.refs`` of a :class:`LazyTree`."""

    def __init__(self, tree: "LazyTree") -> None:
        self._tree = tree

    def get(self, node: int, default: Any = None) -> Any:
        d = self._tree.holder(node)
        return d.refs.get(node, default) if d is not None else default

    def __contains__(self, node: object) -> bool:
        return isinstance(node, int) and self.get(node) is not None


class LazyTree:
    """The tree of a sharded version (artfs/_pieces.py): directories are loaded as they are asked
    for, each from one piece (:meth:`load_dir`, in a worker thread; the handlers await it first).

    Node ids are fixed without reading anything below the root: the root is node 0, and the
    children of a directory with id ``k`` follow in name order from ``k + 1``, a file taking one
    id and a subdirectory ``1 + the files and directories below it`` (its parent's piece records
    both), so ``size`` (the inode range reserved) is the head's totals + 1 and a directory's ids
    are known once its parent is loaded. A node is located from the root down (bisecting each
    level's ids), loading what is missing on the way (:meth:`locate`). Memory is what has been
    visited: a directory's names and attributes (arrays: under 100 B per entry loaded), nothing
    for the rest. The tree is unloaded whole when idle, as a VersionTree is (artfsd/namespace.py
    counts its root's entries against the budget). A directory's link count (2 + its own
    subdirectories) comes from its parent's piece, which records it.
    """

    lazy = True

    def __init__(self, manifest: Manifest) -> None:
        t = tree_of(manifest)
        assert t is not None
        self._entries = t
        self.ndirs = t.root.ndirs + 1
        self.size = 1 + t.root.nfiles + t.root.ndirs
        self.root = 0
        self._dirs: dict[int, _Dir] = {}
        self.sizes = _Sizes(self)
        self.refs = _Refs(self)
        self.loaded_entries = 0
        self._dirs[0] = _Dir(0, -1, "", t.root_piece())
        self.loaded_entries += len(self._dirs[0].names)
        #: what the mount's budget of loaded trees counts (artfsd/namespace.py): the entries of the
        #: root's piece, fixed once built (a VersionTree counts all its files)
        self.nfiles = self.loaded_entries

    # -- loading ---------------------------------------------------------------------------------
    def loaded(self, node: int) -> bool:
        """Whether ``node`` can be answered without reading a piece (a loaded directory, or a child of one)."""
        if node in self._dirs:
            return True
        d = self.holder(node)
        return d is not None and (node not in d.subs or node in self._dirs)

    def loaded_dir(self, node: int) -> bool:
        return node in self._dirs

    def load_dir(self, node: int) -> None:
        """Load the directory ``node`` (and, from the root down, whatever holds it): blocking I/O."""
        self.locate(node)
        if node in self._dirs:
            return
        d = self.holder(node)
        if d is not None and node in d.subs:
            self._load_child(d, node)

    def locate(self, node: int) -> _Dir | None:
        """The loaded directory holding ``node`` as a direct child (loading pieces on the way), or
        None for the root or a node outside the tree."""
        return self._walk(node, load=True) if node < self.size else None

    def _walk(self, node: int, *, load: bool) -> _Dir | None:
        """From the root down to the directory holding ``node``: each directory's ids are sorted
        and a subdirectory's range starts at its own id, so the holder is under the last id at or
        below ``node``. A directory not loaded yet is read when ``load``, else the walk gives None."""
        if node <= 0:
            return None
        d = self._dirs[0]
        while True:
            k = bisect.bisect_right(d.ids, node) - 1
            if k < 0:
                return None
            child = d.ids[k]
            if child == node:
                return d
            nxt = self._dirs.get(child)
            if nxt is None:
                if not load or child not in d.subs:
                    return None
                nxt = self._load_child(d, child)
            d = nxt

    def _load_child(self, d: _Dir, child: int) -> _Dir:
        sd = d.subs[child]
        path = f"{d.path}/{sd.name}" if d.path else sd.name
        loaded = _Dir(child, d.node, path, self._entries.piece(path, sd))
        self._dirs[child] = loaded
        self.loaded_entries += len(loaded.names)
        return loaded

    def holder(self, node: int) -> _Dir | None:
        """The loaded directory holding ``node``, without reading (None if it is not loaded)."""
        return self._walk(node, load=False)

    # -- the VersionTree interface ------------------------------------------------------------------
    def is_dir(self, node: int) -> bool:
        if node in self._dirs or node == 0:
            return True
        d = self.holder(node)
        return d is not None and node in d.subs

    def dir_of(self, node: int) -> int:
        return node

    def dir_node(self, d: int) -> int:
        return d

    def parent(self, d: int) -> int:
        return max(self._dirs[d].parent, 0)

    def nlink(self, node: int) -> int:
        """2 + the directory's own subdirectories (its parent's piece, or the head, records them)."""
        if node == 0:
            return 2 + self._entries.root.nsub
        d = self.holder(node)
        sd = d.subs.get(node) if d is not None else None
        return 2 + (sd.nsub if sd is not None else 0)

    def slots(self, d: int) -> Sequence[int]:
        return self._dirs[d].ids

    def slot_name(self, i: int) -> bytes:
        d = self.holder(i)
        assert d is not None
        return d.names[d.at(i)]

    def slot_node(self, i: int) -> int:
        return i

    def lookup(self, d: int, name: bytes) -> int | None:
        ld = self._dirs[d]
        k = bisect.bisect_left(ld.names, name)
        if k < len(ld.names) and ld.names[k] == name:
            return ld.ids[k]
        return None

    def file_dir(self, j: int) -> int:
        d = self.holder(j)
        return d.node if d is not None else 0

    def digest(self, j: int) -> str | None:
        d = self.holder(j)
        if d is None:
            return None
        k = d.at(j)
        if not d.flags[k] & HAS_DIGEST:
            return None
        return "xxh128:" + d.digests[16 * k:16 * k + 16].hex()

    def executable(self, j: int) -> bool:
        d = self.holder(j)
        return bool(d is not None and d.flags[d.at(j)] & EXECUTABLE)

    def path(self, node: int) -> str:
        if node in self._dirs:
            return self._dirs[node].path
        d = self.holder(node)
        if d is None:
            return f"<node {node}>"
        name = d.names[d.at(node)].decode("utf-8", "replace")
        return f"{d.path}/{name}" if d.path else name


def tree_for(manifest: Manifest) -> "VersionTree | LazyTree":
    """The mount's tree of a version: read lazily when the version is sharded, else indexed whole."""
    return LazyTree(manifest) if tree_of(manifest) is not None else VersionTree(manifest)


#: what the mount's handlers take: either kind of version tree
Tree = VersionTree | LazyTree
