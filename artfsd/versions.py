"""The version-tree handler: ``MNT/<project>/<artifact>/vN/`` and everything below it.

A version never changes, so the kernel may keep its entries, attributes and pages for a day
(``keep_cache`` on open; cached listings where the kernel can). Every write answers EROFS, but
for what a version says about itself, which a writable mount lets ``setfattr`` change on ``vN/``
(``user.artfs.description``, ``metadata``, ``aliases``: through the library's ``Artifact.save``,
as a script would); its files, type and digest never change (EPERM).

Handlers never block the trio loop: store calls and blob reads run in worker threads behind
capacity limiters, each bounded by the mount's ``--timeout``. The one exception is a read of a
complete cache blob whose pages are in the page cache: ``preadv(RWF_NOWAIT)`` serves it on the
loop (it cannot block), because the thread hop costs more than the copy (measured: 128 KiB
requests 0.36 -> 0.77 GB/s); so do the open and release of a file whose blob is complete and
verified in the cache (:mod:`artfsd.openfiles`: a few metadata system calls). Reference entries read like blobs, through the lazy reader and the
cache, each fetch pinned to what was recorded (:func:`artfsd.openfiles.open_reference`). A
complete, verified blob can back the file in the kernel instead (passthrough, artfsd/kernel.py):
reads and mmap then never reach the daemon.

The open/read/release of version files are :meth:`VersionHandler.open`, :meth:`read` and
:meth:`release`, served by :class:`artfsd.openfiles.VersionFiles`, and nothing else: a faster way
to serve complete blobs belongs there.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import pyfuse3

from artfs import ArtfsError
from artfs.lowlevel import bounded_json, check_alias, diff_entries, logger_of_version

from . import attrs
from .errors import Timeout
from .handler import IMMUTABLE, Handler, Mount, enoent, erofs, fuse_text
from .kernel import Backings
from .nodes import VersionDir
from .openfiles import VersionFiles
from .tree import Tree

log = logging.getLogger("artfsd")


@dataclass
class TreeDir:
    """An open directory of a version tree."""

    vdir: VersionDir
    tree: Tree
    d: int


class VersionHandler(Handler):
    """Inodes of :class:`VersionDir` nodes and of the ranges their trees reserve."""

    def __init__(self, m: Mount, blobs: Any, *, refs: Callable[[], Any], backings: Backings) -> None:
        self.m = m
        self.ns = m.ns
        # the open, read and release of its files, one lazy-reader handle each (artfsd/openfiles.py)
        self.files = VersionFiles(m, blobs, refs=refs, backings=backings)
        self._logged_by: dict[tuple[str, str, int], str] = {}
        #: ``diff_parent`` values by (vN, the version it was compared with): a few, the last asked
        self._diffs: OrderedDict[tuple[tuple[str, str, int], int | None], bytes] = OrderedDict()

    # -- inodes and attributes --------------------------------------------------------------------
    async def resolve(self, ino: int) -> tuple[VersionDir, Tree, int]:
        """(vN, its tree, the node): ``vN/`` itself resolves to its tree's root (loading the index).

        In the tree of a sharded version a directory's piece is read here, in a worker thread,
        the first time the directory (or a node below it) is asked for: every other handler then
        answers from memory."""
        meta = self.ns.inodes.meta.get(ino)
        if isinstance(meta, VersionDir):
            tree = await self.ns.load(meta)
            return meta, tree, tree.root
        v = self.ns.inodes.tree_owner(ino) if meta is None else None
        if v is None:
            raise enoent()
        tree = await self.ns.load(v)
        node = ino - v.base
        if node < 0 or node >= tree.size or node == tree.root:
            raise enoent()
        if not tree.loaded(node) or (tree.lazy and tree.is_dir(node) and not tree.loaded_dir(node)):
            await self.ns.run_sync(tree.load_dir, node, what=f"load a directory of {v.spec}")
            if not tree.loaded(node):
                raise enoent()
        return v, tree, node

    @staticmethod
    def ino(v: VersionDir, tree: Tree, node: int) -> int:
        return v.ino if node == tree.root else v.base + node

    def tree_attr(self, v: VersionDir, tree: Tree, node: int) -> pyfuse3.EntryAttributes:
        ino = self.ino(v, tree, node)
        if tree.is_dir(node):
            d = tree.dir_of(node)
            # a writable mount lets setfattr through to vN/ itself (description, metadata, aliases)
            mode = 0o755 if node == tree.root and self.m.writable else 0o555
            return self.m.attr(ino, stat.S_IFDIR | mode, 0, tree.nlink(node), v.created_ns, IMMUTABLE,
                               self.ns.refresh if node == tree.root else None)
        mode = stat.S_IFREG | (0o555 if tree.executable(node) else 0o444)
        return self.m.attr(ino, mode, tree.sizes[node], 1, v.created_ns, IMMUTABLE)

    def entry(self, v: VersionDir) -> pyfuse3.EntryAttributes:
        """Attributes of ``vN/`` without store I/O (provisional ones while its index is not loaded)."""
        tree = v.tree
        if tree is not None:
            return self.tree_attr(v, tree, tree.root)
        # mtime and link count need the manifest: tell the kernel to ask again (getattr)
        return self.m.attr(v.ino, stat.S_IFDIR | 0o555, 0, 2, self.ns.started_ns, 0.0, self.ns.refresh)

    # -- names -----------------------------------------------------------------------------------
    async def lookup(self, parent: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        v, tree, node = await self.resolve(parent)
        if not tree.is_dir(node):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        d = tree.dir_of(node)
        if name == b".":
            child: int | None = node
        elif name == b"..":
            if d == 0:
                return self.m.entry_of(v.artifact)
            child = tree.dir_node(tree.parent(d))
        else:
            child = tree.lookup(d, name)
        if child is None:
            raise enoent()
        if child != tree.root:
            self.ns.referenced(v, +1)
        return self.tree_attr(v, tree, child)

    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self.tree_attr(*await self.resolve(inode))

    def forget(self, inode: int, nlookup: int) -> None:
        if inode in self.ns.inodes.meta:
            return  # vN/ keeps its inode for the mount's lifetime
        v = self.ns.inodes.tree_owner(inode)
        if v is not None:
            self.ns.referenced(v, -nlookup)

    # -- directories -----------------------------------------------------------------------------
    async def opendir(self, inode: int, ctx: Any) -> tuple[Any, bool]:
        v, tree, node = await self.resolve(inode)
        if not tree.is_dir(node):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        # a version's listing never changes (stable order and offsets): the kernel may keep it
        return TreeDir(v, tree, tree.dir_of(node)), True

    async def readdir(self, dir: Any, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        h: TreeDir = dir
        v, tree = h.vdir, h.tree
        slots = tree.slots(h.d)
        given = 0
        for k in range(start_id, len(slots)):
            i = slots[k]
            if not pyfuse3.readdir_reply(token, tree.slot_name(i), self.tree_attr(v, tree, tree.slot_node(i)), k + 1):
                break
            given += 1
        if given:
            self.ns.referenced(v, given)

    # -- files: open, read, release of version files (artfsd/openfiles.py) ---------------------------
    async def open(self, inode: int, flags: int, ctx: Any, fh: int) -> tuple[Any, pyfuse3.FileInfo]:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise erofs()
        v, tree, node = await self.resolve(inode)
        if tree.is_dir(node):
            raise pyfuse3.FUSEError(errno.EISDIR if node == tree.root else errno.EINVAL)
        of_tree: Any = tree  # artfsd/openfiles.py takes either kind of tree (it asks sizes, digest, refs, path)
        return await self.files.open(v, of_tree, node, inode, ctx, fh)

    async def read(self, file: Any, off: int, size: int) -> bytes:
        return await self.files.read(file, off, size)

    async def release(self, file: Any) -> None:
        await self.files.release(file)

    # -- extended attributes ---------------------------------------------------------------------
    async def xattrs(self, inode: int) -> dict[str, bytes]:
        v, tree, node = await self.resolve(inode)
        out: dict[str, bytes] = {}
        if node == tree.root:
            await self.ns.version_info(v)
            out[attrs.TYPE] = attrs.text(v.type)
            if v.description is not None:
                out[attrs.DESCRIPTION] = attrs.text(v.description)
            out[attrs.METADATA] = attrs.json_value(v.metadata)
            out[attrs.ALIASES] = attrs.aliases_value(v.artifact.aliases_of(v.n))
            out[attrs.CREATED] = attrs.text(v.created)
            out[attrs.DIGEST] = attrs.text(v.digest)
            by = await self._logged_by_run(v)
            if by:
                out[attrs.LOGGED_BY] = attrs.text(by)
            out[attrs.DIFF_PARENT] = b""  # listed here; its value is getxattr's (computed on demand)
        elif not tree.is_dir(node):
            d = tree.digest(node)
            if d is not None:
                out[attrs.DIGEST] = attrs.text(d)
            out[attrs.SIZE] = attrs.number(tree.sizes[node])
            ref = tree.refs.get(node)
            if ref is not None and ref.ref is not None:
                out[attrs.REF] = attrs.text(ref.ref)
        return attrs.qualify(out)

    async def getxattr(self, inode: int, name: str) -> bytes | None:
        if name == attrs.full(attrs.DIFF_PARENT):
            v = self.ns.inodes.meta.get(inode)
            return await self._diff_parent(v) if isinstance(v, VersionDir) else None
        return (await self.xattrs(inode)).get(name)

    async def _diff_parent(self, v: VersionDir) -> bytes:
        """``user.artfs.diff_parent`` of vN: the diff from the highest version below N that exists
        (from nothing for the first), read from the two manifests in a worker thread."""
        below = [x.n for x in v.artifact.children.values() if isinstance(x, VersionDir) and x.n < v.n]
        parent = max(below, default=None)
        key = (v.key, parent)
        value = self._diffs.get(key)
        if value is not None:
            self._diffs.move_to_end(key)
            return value
        store = self.m.store
        p, a, n = v.key

        def work() -> bytes:
            new = store.manifest(p, a, n).entries
            old = store.manifest(p, a, parent).entries if parent is not None else []
            d = diff_entries(old, new, old_name=f"{p}/{a}:v{parent}" if parent is not None else "",
                             new_name=v.spec)
            return bounded_json(d, attrs.DIFF_PARENT_MAX, parent=None if parent is None else f"v{parent}")

        value = bytes(await self.ns.run_sync(work, what=f"diff of {v.spec}"))
        self._diffs[key] = value
        while len(self._diffs) > 16:
            self._diffs.popitem(last=False)
        return value

    async def _logged_by_run(self, v: VersionDir) -> str | None:
        """``project/run_id`` that logged vN (``user.artfs.logged_by``); remembered once known."""
        by = self._logged_by.get(v.key)
        if by is None:
            try:
                by = await self.ns.run_sync(logger_of_version, self.m.store, *v.key, what=f"lineage of {v.spec}")
            except (ArtfsError, Timeout) as e:  # lineage is an extra: the version's other attributes still answer
                log.warning("%s: cannot read its lineage: %s", v.spec, e)
                return None
            if by:
                self._logged_by[v.key] = by
        return by

    def _writable_version(self, inode: int) -> VersionDir | None:
        v = self.ns.inodes.meta.get(inode)
        return v if isinstance(v, VersionDir) and self.m.writable else None

    async def setxattr(self, inode: int, name: str, value: bytes, ctx: Any) -> None:
        v = self._writable_version(inode)
        key = attrs.key_of(name)
        if v is None or key is None:
            raise erofs()
        await self._set_version_attr(v, key, value)

    async def removexattr(self, inode: int, name: str, ctx: Any) -> None:
        v = self._writable_version(inode)
        key = attrs.key_of(name)
        if v is None or key not in attrs.VERSION_WRITABLE:
            raise erofs()
        assert key is not None
        await self._set_version_attr(v, key, None)

    async def _set_version_attr(self, v: VersionDir, key: str, value: bytes | None) -> None:
        """``description``/``metadata``/``aliases`` of vN: what the version says about itself,
        changed as ``Artifact.save`` does (the library writes the store)."""
        if key in attrs.VERSION_FIXED:
            raise pyfuse3.FUSEError(errno.EPERM)
        if key not in attrs.VERSION_WRITABLE:
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        text = None if value is None else fuse_text(value)
        metadata: dict[str, Any] = {}
        aliases: list[str] = []
        if key == attrs.METADATA:
            try:
                metadata = attrs.parse_metadata(text or "")
            except ValueError as e:
                log.error("%s: %s", v.spec, e)
                raise pyfuse3.FUSEError(errno.EINVAL) from None
        elif key == attrs.ALIASES:
            aliases = [check_alias(x) for x in attrs.parse_aliases(text or "")]
        store = self.m.store

        def work() -> None:
            art = store.artifact(v.spec)
            if key == attrs.DESCRIPTION:
                art.description = text or None
            elif key == attrs.METADATA:
                art.metadata = metadata
            else:
                art.aliases = aliases
            art.save()

        await self.ns.run_sync(work, what=f"update {v.spec}")
        log.info("%s: %s updated", v.spec, key)
        v.info_at = -math.inf  # read it again on the next getxattr
        if key == attrs.ALIASES:
            await self.ns.relist(v.artifact)
