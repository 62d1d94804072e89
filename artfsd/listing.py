"""The listing handler: the mount root, projects, artifacts and alias symlinks.

::

    MNT/                              RootDir      projects, re-listed when stale
    MNT/<project>/                    ProjectDir   artifacts, re-listed when stale
    MNT/<project>/<artifact>/         ArtifactDir  vN directories, alias symlinks, draft/
    MNT/<project>/<artifact>/latest   AliasLink    -> vN
    MNT/<registry>/<collection>/      CollectionDir  vN -> ../../<p>/<a>/vK, aliases -> vN (read-only)

What these levels show changes while mounted (:mod:`artfsd.listings` keeps it fresh), so the
kernel gets one-second timeouts. On a writable mount they take a few file operations:

    mkdir MNT/<project>, mkdir MNT/<project>/<artifact>   start a project / an artifact (local until committed)
    rmdir of either, while it exists only here and is empty
    ln -s v3 MNT/<p>/<a>/best, mv tmp best, rm best        set, move, remove an alias (in the store, at once)

Alias changes are the library's (``Store.set_alias``, ``rename_alias``, ``remove_alias``): this
module only maps them onto file operations and shows the result at once.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import stat
import time
from typing import Any, Callable

import pyfuse3
import trio

from artfs import InvalidName
from artfs.lowlevel import check_alias, check_name, is_version, parse_version

from . import attrs
from .handler import MUTABLE, Handler, Mount, enoent, erofs, fuse_text
from .nodes import AliasLink, ArtifactDir, DraftRoot, ListingDir, Node, ProjectDir, RootDir, VersionDir, now

log = logging.getLogger("artfsd")


class ListingHandler(Handler):
    """Inodes of :class:`ListingDir` and :class:`AliasLink` nodes (``Mount.ns.inodes.meta``)."""

    def __init__(self, m: Mount, drafts: Any, *, stats: Callable[[], dict[str, Any]],
                 results_path: str | None) -> None:
        self.m = m
        self.ns = m.ns
        self.drafts = drafts  # artfsd.drafts.DraftSpace, None on a read-only mount
        self.results_path = results_path  # where the daemon reports its commits at unmount
        self.stats_doc = stats  # the mount's counters (user.artfs.stats): Operations.stats_doc
        # The kernel caches these listings too (artfsd/kernel.py, ``no_opendir``): getattr then
        # re-lists a stale directory, as opendir does otherwise, so that the mtime it reports
        # (:meth:`changed_ns`) tells the kernel to drop a listing that changed.
        self.fresh_on_getattr = False
        self._names: dict[int, tuple[tuple[str, ...], int]] = {}  # ino -> (names, when they changed)

    def node(self, inode: int) -> Node:
        node = self.ns.inodes.meta.get(inode)
        if node is None:
            raise enoent()
        return node

    def entry(self, node: Node) -> pyfuse3.EntryAttributes:
        """Attributes of a listing directory or an alias symlink (no store I/O)."""
        t = self.ns.started_ns
        if isinstance(node, AliasLink):
            # Long timeouts: a move invalidates the link in the kernel, and handing it out keeps
            # its artifact refreshed while the kernel may trust it (artfsd.listings).
            if node.parent is not None:
                node.parent.used_at = now()
            keep = self.ns.keep_fresh
            return self.m.attr(node.ino, stat.S_IFLNK | 0o777, len(node.link), 1, t, keep, keep)
        assert isinstance(node, ListingDir)
        nsub = sum(1 for c in node.children.values() if not isinstance(c, AliasLink))
        return self.m.attr(node.ino, self.m.dir_mode(), 0, 2 + nsub, self.changed_ns(node), MUTABLE)

    def changed_ns(self, node: ListingDir) -> int:
        """A listing directory's mtime: when this mount last saw its names change.

        Before serving a cached listing from offset 0 the kernel refreshes the directory's
        attributes (every second, MUTABLE) and drops the listing if the mtime moved; so the mtime
        must move whenever the names do, and only then (strictly increasing, never repeated).
        """
        if not node.ok:  # never listed: what it holds so far is not a listing the kernel has seen
            return self.ns.started_ns
        names = tuple(node.children)
        seen = self._names.get(node.ino)
        if seen is None:
            self._names[node.ino] = (names, self.ns.started_ns)
            return self.ns.started_ns
        if seen[0] == names:
            return seen[1]
        t = max(time.time_ns(), seen[1] + 1)
        self._names[node.ino] = (names, t)
        return t

    # -- names -----------------------------------------------------------------------------------
    async def lookup(self, parent: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        meta = self.node(parent)
        if not isinstance(meta, ListingDir):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if name == b".":
            return self.entry(meta)
        if name == b"..":
            return self.entry(meta.parent or meta)
        try:
            sname = name.decode("utf-8")
        except UnicodeDecodeError:
            raise enoent() from None
        found = await self.ns.lookup(meta, sname)
        if found is None:
            raise enoent()
        if isinstance(found, VersionDir):
            await self.ns.load(found)  # its attributes come from the manifest
        if isinstance(found, DraftRoot):  # opens the draft (the first access of this draft/)
            assert self.drafts is not None
            attr: pyfuse3.EntryAttributes = await self.drafts.getattr(found.slot, 1)
            return attr
        return self.m.entry_of(found)

    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        node = self.node(inode)
        if self.fresh_on_getattr and isinstance(node, ListingDir) and node.ok:
            # Bounded by stale_wait; a directory never listed is listed by its first readdir
            # (which may fail), never by a stat (which must not).
            await self.ns.ensure_fresh(node)
        return self.entry(node)

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        node = self.node(inode)
        if not isinstance(node, AliasLink):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.link

    # -- listings --------------------------------------------------------------------------------
    async def opendir(self, inode: int, ctx: Any) -> tuple[Any, bool]:
        meta = self.node(inode)
        if not isinstance(meta, ListingDir):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        await self.ns.ensure_fresh(meta)
        return (meta, meta.sorted_children()), False

    async def readdir(self, dir: Any, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # Entries in name order; an entry's cookie is its inode, and a listing goes on after the
        # name of the entry it stopped at. So entries added or removed between two calls (a
        # refresh, or a new listing per call when the kernel opens directories itself) never make
        # another entry appear twice or go missing.
        meta, listing = dir
        k = self._resume(meta, listing, start_id)
        for name, node in listing[k:]:
            if not pyfuse3.readdir_reply(token, name.encode(), self.m.entry_of(node), node.ino):
                break

    def _resume(self, meta: ListingDir, listing: list[tuple[str, Node]], cookie: int) -> int:
        """Where a listing goes on after the entry whose inode is ``cookie`` (0: the start)."""
        if cookie == 0:
            return 0
        for k, (_, node) in enumerate(listing):
            if node.ino == cookie:
                return k + 1
        last = self.ns.inodes.meta.get(cookie)  # gone from the listing since: go on after its name
        if last is None and isinstance(meta, ArtifactDir) and meta.draft is not None and meta.draft.ino == cookie:
            last = meta.draft
        if last is None:
            return len(listing)  # not a cookie this directory handed out
        return bisect.bisect_right([name for name, _ in listing], last.name)

    async def open(self, inode: int, flags: int, ctx: Any, fh: int) -> tuple[Any, pyfuse3.FileInfo]:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise erofs()
        self.node(inode)
        raise pyfuse3.FUSEError(errno.EISDIR)

    # -- the mount root's attributes ------------------------------------------------------------
    async def xattrs(self, inode: int) -> dict[str, bytes]:
        self.node(inode)
        if inode != pyfuse3.ROOT_INODE:
            return {}
        out = {attrs.STORE: attrs.text(self.m.store.url), attrs.PID: attrs.number(os.getpid())}
        if self.results_path:
            out[attrs.RESULTS] = attrs.text(self.results_path)
        out[attrs.STATS] = attrs.json_value(self.stats_doc())
        return attrs.qualify(out)

    # -- changes on a writable mount: projects, artifacts, aliases --------------------------------
    def _writable(self, inode: int) -> Node | None:
        return self.ns.inodes.meta.get(inode) if self.drafts is not None else None

    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        node = self._writable(parent)
        if not isinstance(node, (RootDir, ProjectDir)):
            raise erofs()
        sname = check_name(fuse_text(name), "project" if isinstance(node, RootDir) else "artifact")
        await self.ns.ensure_fresh(node)
        if sname in node.children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        if isinstance(node, RootDir):  # a project exists in the store once it has an artifact
            self.ns.add_local(sname)
            return self.entry(self.ns.root.children[sname])
        self.ns.add_local(node.name, sname)
        art = node.children[sname]
        assert isinstance(art, ArtifactDir) and self.drafts is not None
        if art.draft is None:
            art.draft = self.drafts.node_for(art)
        try:  # start the draft now: staging keeps the new artifact across a remount
            await self.drafts.draft(art.draft.slot)
        except BaseException:
            self.ns.drop_local(node.name, sname)
            raise
        return self.entry(art)

    async def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
        node = self._writable(parent)
        if not isinstance(node, (RootDir, ProjectDir)):
            raise erofs()
        sname = fuse_text(name)
        child = node.children.get(sname)
        if child is None:
            raise enoent()
        assert isinstance(child, ListingDir)
        # Only what exists here alone can go: an empty project, or a new artifact with an empty draft.
        if isinstance(node, RootDir):
            if sname not in self.ns.local:
                raise erofs()
            await self.ns.ensure_fresh(child)
            if child.children:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            self.ns.drop_local(sname)
            return None
        if not isinstance(child, ArtifactDir) or sname not in self.ns.local.get(node.name, ()):
            raise erofs()  # a collection (artfs unlink removes its links), or an artifact of the store
        assert self.drafts is not None
        await self.ns.ensure_fresh(child)
        if any(isinstance(c, VersionDir) for c in child.children.values()):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        if child.draft is not None:
            slot = child.draft.slot
            d = await self.drafts.draft(slot)
            if slot.inodes or await trio.to_thread.run_sync(lambda: bool(d.namespace.readdir(1, limit=1))):
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            slot.draft = None
            await trio.to_thread.run_sync(d.discard)
        self.ns.drop_local(node.name, sname)
        return None

    def _alias_target(self, d: ArtifactDir, target: bytes) -> int:
        """The version an alias symlink's target names: ``v3`` (or ``./v3/``), or another alias."""
        t = fuse_text(target).strip()
        while t.startswith("./"):
            t = t[2:]
        t = t.rstrip("/")
        if is_version(t):
            return parse_version(t)
        if t in d.aliases:
            return d.aliases[t]
        log.error("%s/%s: an alias symlink must point to a version (vN) or another alias, not %r",
                  d.project, d.name, t)
        raise pyfuse3.FUSEError(errno.EINVAL)

    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        d = self._writable(parent)
        if not isinstance(d, ArtifactDir):
            raise erofs()
        alias = check_alias(fuse_text(name))
        await self.ns.ensure_fresh(d)
        if alias in d.children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        n = self._alias_target(d, target)
        await self.ns.run_sync(self.m.store.set_alias, d.project, d.name, alias, n,
                               what=f"set alias {d.project}/{d.name}:{alias}")
        log.info("%s/%s: alias %s -> v%d", d.project, d.name, alias, n)
        await self.ns.set_alias(d, alias, n)
        return self.entry(d.children[alias])

    async def unlink(self, parent: int, name: bytes, ctx: Any) -> None:
        d = self._writable(parent)
        if isinstance(d, ArtifactDir):
            alias = fuse_text(name)
            if isinstance(d.children.get(alias), AliasLink):
                await self._remove_alias(d, alias)
                return None
        raise erofs()

    async def _remove_alias(self, d: ArtifactDir, alias: str) -> None:
        try:
            await self.ns.run_sync(self.m.store.remove_alias, d.project, d.name, alias,
                                   what=f"remove alias {d.project}/{d.name}:{alias}")
        except InvalidName as e:  # the automatic 'latest'
            log.error("%s/%s: %s", d.project, d.name, e)
            raise pyfuse3.FUSEError(errno.EPERM) from None
        log.info("%s/%s: alias %s removed", d.project, d.name, alias)
        await self.ns.set_alias(d, alias, None)

    async def rename(self, old_parent: int, old: bytes, new_parent: int, new: bytes, flags: int, ctx: Any) -> None:
        d = self._writable(old_parent)
        if isinstance(d, ArtifactDir) and new_parent == old_parent:
            src = d.children.get(fuse_text(old))
            if isinstance(src, AliasLink):  # `ln -sfn v4 best`: a symlink to a temp name renamed over best
                await self._rename_alias(d, src, check_alias(fuse_text(new)), flags)
                return None
        raise erofs()

    async def _rename_alias(self, d: ArtifactDir, src: AliasLink, new: str, flags: int) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        if flags & pyfuse3.RENAME_NOREPLACE and new in d.children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        old = src.name
        if old == new:
            return
        p, a = d.project, d.name
        try:
            n = await self.ns.run_sync(self.m.store.rename_alias, p, a, old, new,
                                       what=f"rename alias {p}/{a}:{old} to {new}")
        except InvalidName as e:  # the automatic 'latest'
            log.error("%s/%s: %s", p, a, e)
            raise pyfuse3.FUSEError(errno.EPERM) from None
        log.info("%s/%s: alias %s -> v%d (was %s)", p, a, new, n, old)
        await self.ns.set_alias(d, new, n)
        await self.ns.set_alias(d, old, None)
