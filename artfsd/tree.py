"""The read-only directory tree of one version, indexed compactly from its manifest.

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

from artfs import Entry, Manifest
from artfs.lowlevel import gc_paused

EXECUTABLE = 1
HAS_DIGEST = 2


class VersionTree:
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
