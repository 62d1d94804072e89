"""The listings above the version trees (:class:`Listings`): the mount root, projects, artifacts,
versions, aliases, kept fresh from the store.

What lives here changes while mounted (another process or machine logs a version or moves an
alias), so each listing directory remembers when it was last listed and is listed again in a
worker thread when it is older than the refresh interval:

* a lookup or readdir of a directory whose listing is stale starts a refresh and waits for it up
  to ``stale_wait`` seconds; if the store is slow or down, the old listing is served (a mount must
  stay usable offline), the refresh carries on in the background; once a refresh failed (the
  store unreachable), known listings are served at once until one succeeds or ``refresh`` seconds
  pass (their refreshes still start): ``ls`` of a path three listings deep with the store down
  waits for none of them, not up to ``stale_wait`` for each;
* a lookup of a valid name that is missing re-lists the directory if its listing is older than
  ``miss_age`` (so ``artfs put`` followed at once by ``cat MNT/p/a/v7/x`` works);
* a background task refreshes the artifacts used recently every interval;
* a failed refresh never drops what is known; it is retried after the next interval.

When an alias moves or a version or name disappears, the kernel is told to drop its cached
entry (``invalidate_entry_async``), so the ``latest`` symlink never points at a stale version for
longer than the refresh interval. An alias keeps its inode when it moves, and the kernel may
cache its target (``FUSE_CACHE_SYMLINKS``, :mod:`artfsd.kernel`) and attributes: a move also
invalidates the link's inode (page and attributes, ``invalidate_inode``), in a worker thread,
and the refresh that saw the move completes (and a lookup waiting for it answers) only after
the kernel dropped them. So alias nodes get long kernel timeouts (:attr:`Listings.keep_fresh`),
as long as the background refresh keeps their artifact listed: handing an alias's attributes
to the kernel counts as a use of its artifact (``used_at``), and the refresh loop lists every
artifact used within ``keep_fresh``, so no alias the kernel may still trust goes unwatched.

Inode numbers are stable for the mount's lifetime: every name seen at these levels keeps its
inode even after it disappears, and every version reserves a contiguous range for its tree once
(see :mod:`artfsd.tree`). Nothing here is ever freed but version indexes, which are unloaded when
the kernel has forgotten every inode of a version and the memory budget is exceeded.

A mount ``--as-of`` a time lists in each artifact the versions that existed then (and still
exist: a deleted version's files are gone) and the aliases where they pointed then
(:func:`artfs.lowlevel.timeline`); it is read-only and never probes for newer versions. A mount
``--run`` of a past run shows only the artifacts the run used, each with the versions it used and
its aliases pinned where the run read them (:func:`artfs.lowlevel.run_view`), read-only too.

A writable mount adds ``draft`` to every artifact (a :class:`DraftRoot`, whose inodes live in the
draft space of :mod:`artfsd.drafts`) and *local* names: projects and artifacts that exist only
here so far, because they were made with ``mkdir`` or because the staging area holds a draft for
them with changes not committed yet. Listings show the store's names plus the local ones.

The node types and the inode table are in :mod:`artfsd.nodes`; requests about these levels are
answered by :class:`artfsd.listing.ListingHandler` (``vN/`` by :mod:`artfsd.versions`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import time
from collections import OrderedDict
from typing import Any, Callable

import pyfuse3
import trio

from artfs import InvalidName, PermissionDenied, Store, StoreUnavailable
from artfs.lowlevel import collection_symlinks, collections
from artfs.lowlevel import MountConfig, check_alias, check_name, is_version, list_projects, parse_version, timeline

from .errors import Timeout, errno_for
# the node types live in nodes.py; ArtifactDir and DraftRoot are re-exported for drafts.py
from .nodes import AliasLink, CollectionDir, Inodes, ListingDir, Node, ProjectDir, RootDir, VersionDir, now
from .nodes import ArtifactDir as ArtifactDir
from .nodes import DraftRoot as DraftRoot
from .tree import LazyTree, VersionTree, tree_for

log = logging.getLogger("artfsd")

ROOT_INODE = pyfuse3.ROOT_INODE
STALE_WAIT = 2.0  # seconds a lookup waits for the refresh of a listing it knows (module docstring)
TREE_BUDGET = 4_000_000  # entries of version trees kept loaded while unreferenced


_now = now


def _ns(created: str, default: int) -> int:
    try:
        t = _dt.datetime.fromisoformat(created)
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        return int(t.timestamp() * 1e9)
    except (ValueError, TypeError):
        return default


# -- the listings --------------------------------------------------------------------------------
class Listings:
    """Everything above the version trees, kept fresh from the store."""

    def __init__(
        self,
        store: Store,
        config: MountConfig,
        *,
        limiter: trio.CapacityLimiter,
        invalidate: Callable[[int, bytes], None] | None = None,
        invalidate_inode: Callable[[int], None] | None = None,
        drafts: Callable[[ArtifactDir], DraftRoot] | None = None,
    ) -> None:
        self.store = store
        self.limiter = limiter
        refresh = self.refresh = config.refresh
        self.timeout = config.timeout
        self.stale_wait = min(STALE_WAIT, config.timeout)
        self.miss_age = min(1.0, refresh)
        self.tree_budget = TREE_BUDGET
        self.inodes = Inodes()
        self.root = RootDir(ROOT_INODE, None, "")
        self.inodes.add(self.root)
        self.started_ns = time.time_ns()
        self._invalidate = invalidate or _invalidate_entry
        self._invalidate_inode = invalidate_inode or _invalidate_inode
        self._moved: list[int] = []  # alias links whose target changed: their inodes to invalidate
        #: how long a listing is kept fresh after its last use, and the kernel timeout of alias nodes
        self.keep_fresh = max(600.0, 10 * refresh)
        self._make_draft = drafts  # None: a read-only mount (no draft/)
        self.local: dict[str, set[str]] = {}  # project -> artifacts that exist only locally so far
        self.denied_projects: set[str] = set()  # the store refuses to show these (a lookup: EACCES)
        self._nursery: trio.Nursery | None = None
        self._idle_trees: OrderedDict[VersionDir, None] = OrderedDict()  # loaded, unreferenced
        self._loaded_entries = 0
        self._store_failing_until = -math.inf  # a refresh failed lately: known listings don't wait
        self.stats = {"refreshes": 0, "refresh_failures": 0, "trees_loaded": 0, "trees_unloaded": 0,
                      "alias_invalidations": 0}
        #: ``--as-of``: the time (ns) whose versions and aliases artifacts list (None: now)
        self.as_of = config.as_of_ns
        #: ``--run``: the only artifacts shown, each with its versions and pinned aliases (None: all)
        self.pinned = config.pinned

    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        nursery.start_soon(self._refresh_loop)

    async def run_sync(self, fn: Callable[..., Any], *args: Any, what: str, limit: float | None = None) -> Any:
        """Run a blocking store call in a worker thread, giving up after ``limit`` (the timeout) seconds."""
        limit = self.timeout + 1.0 if limit is None else limit
        with trio.move_on_after(limit):
            return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter, abandon_on_cancel=True)
        raise Timeout(f"{what}: no answer within {limit:g} s")

    # -- listing -------------------------------------------------------------------------------
    async def ensure_fresh(self, d: ListingDir, max_age: float | None = None) -> None:
        """Re-list ``d`` if its listing is older than ``max_age`` (default: the refresh interval).

        Waits for the refresh up to ``stale_wait`` seconds when a listing is known, up to the
        timeout when there is none. Raises (EIO) only when nothing was ever listed.
        """
        d.used_at = _now()
        age = _now() - d.listed_at
        if age <= (self.refresh if max_age is None else max_age):
            return
        ev = d.inflight
        if ev is None:
            ev = d.inflight = trio.Event()
            if self._nursery is not None:
                self._nursery.start_soon(self._refresh, d, ev)
            else:  # not started (tests): refresh inline
                await self._refresh(d, ev)
        if d.ok and max_age is None and _now() < self._store_failing_until:
            return  # a refresh failed lately: the known listing now, this refresh goes on
        with trio.move_on_after(self.stale_wait if d.ok else self.timeout + 2.0):
            await ev.wait()
        if not d.ok:
            if d.denied:
                raise PermissionDenied(f"{self._where(d)}: the store refuses to list it")
            raise StoreUnavailable(f"{self._where(d)}: cannot list it (the store is unreachable; see the log)")

    def _where(self, d: Node) -> str:
        parts = []
        n: Node | None = d
        while n is not None and n.name:
            parts.append(n.name)
            n = n.parent
        return "/".join(reversed(parts)) or self.store.url

    async def _refresh(self, d: ListingDir, ev: trio.Event) -> None:
        self.stats["refreshes"] += 1
        try:
            if self.pinned is not None and not isinstance(d, ArtifactDir):  # --run: what the run used
                names = sorted({p if isinstance(d, RootDir) else a for p, a in self.pinned
                                if isinstance(d, RootDir) or p == d.name})
                self._apply_names(d, names, ProjectDir if isinstance(d, RootDir) else ArtifactDir)
            elif isinstance(d, RootDir):
                # only the projects this mount's credentials may read; the others answer EACCES
                names, denied = await self.run_sync(list_projects, self.store, what="list projects")
                self.denied_projects = set(denied)
                self._apply_names(d, names, ProjectDir)
            elif isinstance(d, ProjectDir):
                names, colls = await self.run_sync(self._list_project, d.name, what=f"list {d.name}")
                self._apply_names(d, names, ArtifactDir, colls=colls)
            elif isinstance(d, CollectionDir):
                links = await self.run_sync(collection_symlinks, self.store, d.project, d.name,
                                            what=f"list {d.project}/{d.name}")
                self._apply_collection(d, links)
            elif isinstance(d, ArtifactDir):
                versions, aliases = await self.run_sync(self._list_artifact, d.project, d.name,
                                                        what=f"list {d.project}/{d.name}")
                self._apply_artifact(d, versions, aliases)
            d.listed_at = _now()
            d.ok = True
            d.denied = False
            self._store_failing_until = -math.inf
            if d.failing:
                log.info("%s: listing works again", self._where(d))
                d.failing = False
        except Exception as e:
            self.stats["refresh_failures"] += 1
            # keep what we know; try again after the next interval
            d.listed_at = _now()
            if not isinstance(e, PermissionDenied):
                self._store_failing_until = _now() + self.refresh
            d.denied = isinstance(e, PermissionDenied)
            if not d.failing:
                errno_for(e, f"refresh {self._where(d)}")
                d.failing = True
                if d.ok:
                    log.warning("%s: serving the last known listing until the store answers again", self._where(d))
                elif not d.denied and self._list_offline(d):
                    log.warning("%s: listing what the local cache holds until the store answers", self._where(d))
        finally:
            if self._moved:  # before anyone waiting for this refresh goes on (module docstring)
                with trio.move_on_after(self.stale_wait) as cs:
                    cs.shield = True
                    await self.flush_moved()
            d.inflight = None
            ev.set()

    def _list_project(self, project: str) -> tuple[list[str], list[str]]:
        """Its artifacts, and the registry collections that are no artifact's name."""
        names = self.store.artifacts(project)
        return names, [c for c in collections(self.store, project) if c not in names]

    def _apply_collection(self, d: CollectionDir, links: dict[str, str]) -> None:
        new: dict[str, Node] = {}
        for name, target in sorted(links.items()):
            node = d.seen.get(name)
            raw = target.encode()
            if not isinstance(node, AliasLink) or node.raw != raw:
                if node is not None:
                    self._invalidate(d.ino, name.encode())
                node = d.seen[name] = self.inodes.add(AliasLink(self.inodes.allocate(), d, name, 0, raw))
            new[name] = node
        for name in d.children:
            if name not in new:
                self._invalidate(d.ino, name.encode())
        d.children = new

    def _list_offline(self, d: ListingDir) -> bool:
        """Never listed and the store is down: list the manifests cached locally (all readable)."""
        if isinstance(d, CollectionDir):
            return False  # links are not cached
        if self.as_of is not None or self.pinned is not None:
            return False  # which of them to show needs the store
        base = os.path.join(self.store.cache.root, "manifests", self.store.id)

        def subdirs(path: str) -> list[str]:
            return sorted(e.name for e in os.scandir(path) if e.is_dir() and _valid_child(d, e.name))

        try:
            if isinstance(d, RootDir):
                self._apply_names(d, subdirs(base), ProjectDir)
            elif isinstance(d, ProjectDir):
                self._apply_names(d, subdirs(os.path.join(base, d.name)), ArtifactDir)
            elif isinstance(d, ArtifactDir):
                versions = sorted({int(e.name.split(".")[0]) for e in os.scandir(os.path.join(base, d.project, d.name))
                                   if e.name.split(".")[0].isdigit() and e.name.split(".", 1)[1] in ("json", "head.json")})
                self._apply_artifact(d, versions, {"latest": versions[-1]} if versions else {})
        except FileNotFoundError:
            if not self._is_local(d):
                return False
            # made here (mkdir) or kept in staging: nothing cached, but its local names and draft/ exist
            if isinstance(d, ArtifactDir):
                self._apply_artifact(d, [], {})
            else:
                self._apply_names(d, [], ProjectDir if isinstance(d, RootDir) else ArtifactDir)
        except OSError:
            return False
        d.ok = True
        return True

    def _is_local(self, d: ListingDir) -> bool:
        if isinstance(d, RootDir):
            return bool(self.local)
        if isinstance(d, ProjectDir):
            return d.name in self.local
        return isinstance(d, ArtifactDir) and d.name in self.local.get(d.project, ())

    def _list_artifact(self, project: str, artifact: str) -> tuple[list[int], dict[str, int]]:
        if self.pinned is not None:
            versions, aliases = self.pinned.get((project, artifact), ([], {}))
            return list(versions), dict(aliases)
        if self.as_of is not None:  # the versions of then that still exist, the aliases of then
            tl = timeline(self.store, project, artifact)
            versions = [n for n in tl.versions_at(self.as_of) if tl.spans[n].deleted_ns is None]
            return versions, {a: n for a, n in tl.aliases_at(self.as_of).items() if n in versions}
        versions = self.store.versions(project, artifact)
        return versions, self.store.aliases(project, artifact, versions=versions)

    def _apply_names(self, d: ListingDir, names: list[str], cls: type[ListingDir],
                     colls: tuple[str, ...] | list[str] = ()) -> None:
        local = self.local if isinstance(d, RootDir) else self.local.get(d.name, ()) if isinstance(d, ProjectDir) else ()
        if local:
            names = sorted(set(names).union(local))
        kinds: dict[str, type[ListingDir]] = {c: CollectionDir for c in colls}
        kinds.update((n, cls) for n in names)
        new: dict[str, Node] = {}
        for name in sorted(kinds):
            node = d.seen.get(name)
            if node is None or type(node) is not kinds[name]:  # an artifact now, a collection before
                node = d.seen[name] = self.inodes.add(kinds[name](self.inodes.allocate(), d, name))
            new[name] = node
        for name in d.children:
            if name not in new:
                self._invalidate(d.ino, name.encode())
        d.children = new

    def _apply_artifact(self, d: ArtifactDir, versions: list[int], aliases: dict[str, int]) -> None:
        new: dict[str, Node] = {}
        for n in versions:
            v = d.versions.get(n)
            if v is None:
                v = d.versions[n] = VersionDir(self.inodes.allocate(), d, n)
                self.inodes.add(v)
            new[v.name] = v
        for a, n in sorted(aliases.items()):
            if n not in d.versions:
                continue
            link = d.alias_nodes.get(a)
            if link is None:
                link = d.alias_nodes[a] = AliasLink(self.inodes.allocate(), d, a, n)
                self.inodes.add(link)
            elif link.target != n or a not in d.aliases:
                if a in d.aliases:
                    log.info("%s/%s: %s moved from v%d to v%d", d.project, d.name, a, link.target, n)
                link.target = n
                self._moved.append(link.ino)
                self._invalidate(d.ino, a.encode())
            new[a] = link
        if self._make_draft is not None:
            if d.draft is None:
                d.draft = self._make_draft(d)
            new["draft"] = d.draft
        for name in d.children:
            if name not in new:
                if is_version(name):
                    log.info("%s/%s: %s was deleted", d.project, d.name, name)
                self._invalidate(d.ino, name.encode())
        d.aliases = {a: n for a, n in aliases.items() if n in d.versions}
        d.children = new

    # -- local changes ---------------------------------------------------------------------------
    def add_local(self, project: str, artifact: str | None = None) -> None:
        """Show ``project`` (and ``project/artifact``) even before the store has them."""
        arts = self.local.setdefault(project, set())
        if artifact is not None:
            arts.add(artifact)
        p = self.root.seen.get(project)
        if p is None or project not in self.root.children:
            p = self.root.seen.get(project) or self.inodes.add(ProjectDir(self.inodes.allocate(), self.root, project))
            self.root.seen[project] = p
            self.root.children = dict(sorted({**self.root.children, project: p}.items()))
        if artifact is not None:
            assert isinstance(p, ProjectDir)
            a = p.seen.get(artifact)
            if a is None:
                a = p.seen[artifact] = self.inodes.add(ArtifactDir(self.inodes.allocate(), p, artifact))
            if artifact not in p.children:
                p.children = dict(sorted({**p.children, artifact: a}.items()))

    def drop_local(self, project: str, artifact: str | None = None) -> None:
        """Forget a local name again (``rmdir`` of a project or artifact that only existed here)."""
        if artifact is None:
            self.local.pop(project, None)
            self.root.children.pop(project, None)
            self._invalidate(self.root.ino, project.encode())
            return
        self.local.get(project, set()).discard(artifact)
        p = self.root.children.get(project)
        if isinstance(p, ProjectDir):
            p.children.pop(artifact, None)
            self._invalidate(p.ino, artifact.encode())

    async def relist(self, d: ListingDir) -> None:
        """List ``d`` again now, after a change made through the mount (a commit, an alias)."""
        while d.inflight is not None:  # a listing that started before the change may miss it
            await d.inflight.wait()
        d.listed_at = -math.inf
        await self.ensure_fresh(d)

    async def flush_moved(self) -> None:
        """Have the kernel drop what it cached of the alias links that moved (in a worker thread:
        the kernel may wait for a READLINK of that link, which this loop must stay free to answer)."""
        inodes, self._moved = self._moved, []
        if inodes:
            self.stats["alias_invalidations"] += len(inodes)
            await trio.to_thread.run_sync(lambda: [self._invalidate_inode(i) for i in inodes],
                                          abandon_on_cancel=True)

    async def set_alias(self, d: ArtifactDir, alias: str, n: int | None) -> None:
        """Show an alias change made through the mount at once (the store has it already)."""
        aliases = dict(d.aliases)
        if n is None:
            aliases.pop(alias, None)
        else:
            aliases[alias] = n
        versions = sorted(v.n for v in d.children.values() if isinstance(v, VersionDir))
        if "latest" not in aliases and versions:
            aliases["latest"] = versions[-1]
        self._apply_artifact(d, versions, aliases)
        await self.flush_moved()

    async def lookup(self, d: ListingDir, name: str) -> Node | None:
        """The child ``name`` of ``d``, re-listing ``d`` when stale or when a valid name misses."""
        if not _valid_child(d, name):
            return None
        await self.ensure_fresh(d)
        node = d.children.get(name)
        if node is None and _now() - d.listed_at > self.miss_age:
            await self.ensure_fresh(d, self.miss_age)
            node = d.children.get(name)
        if node is None and isinstance(d, ArtifactDir) and is_version(name):
            node = await self._probe_version(d, parse_version(name))
        if node is None and isinstance(d, RootDir) and name in self.denied_projects:
            raise PermissionDenied(f"{name}: the store refuses access to this project")
        return node

    async def _probe_version(self, d: ArtifactDir, n: int) -> Node | None:
        """A version newer than the listing: ask for its manifest (which loading needs anyway)."""
        if not d.ok or n <= max(d.versions, default=-1) or self.as_of is not None or self.pinned is not None:
            return None  # older numbers were deleted or never existed, newer ones were not there then
        try:
            await self.run_sync(self.store.manifest, d.project, d.name, n, what=f"probe {d.project}/{d.name}:v{n}")
        except Exception:
            return None
        v = d.versions.get(n)
        if v is None:
            v = d.versions[n] = VersionDir(self.inodes.allocate(), d, n)
            self.inodes.add(v)
        d.children[v.name] = v
        d.listed_at = -math.inf  # aliases (latest) changed too: re-list on the next access
        return v

    async def _refresh_loop(self) -> None:
        """Keep recently used listings fresh, so changes show up without being asked for."""
        while True:
            await trio.sleep(self.refresh)
            horizon = _now() - self.keep_fresh
            for node in list(self.inodes.meta.values()):
                if isinstance(node, ListingDir) and node.ok and node.used_at > horizon:
                    if _now() - node.listed_at > self.refresh and node.inflight is None:
                        ev = node.inflight = trio.Event()
                        await self._refresh(node, ev)

    # -- versions ------------------------------------------------------------------------------
    async def load(self, v: VersionDir) -> VersionTree | LazyTree:
        """The index of ``v``, building it from the (locally cached) manifest if needed."""
        tree = v.tree
        if tree is not None:
            self._idle_trees.pop(v, None)
            if v.nlookup == 0 and v.nopen == 0:
                self._idle_trees[v] = None
            return tree
        async with v.loading:
            if v.tree is not None:  # loaded by another request while this one waited
                return v.tree
            built: VersionTree | LazyTree
            p, a, n = v.key
            # parsing a manifest of millions of entries takes a while: CPU, not the store
            m, built = await self.run_sync(self._build, p, a, n, what=f"load {v.spec}",
                                           limit=max(300.0, 4 * self.timeout))
            v.created = m.created
            v.created_ns = _ns(m.created, self.started_ns)
            v.type = m.type
            v.digest = m.digest
            if v.info_at == -math.inf:
                v.description, v.metadata = m.description, dict(m.metadata)
            if v.base == 0:
                v.base = self.inodes.reserve(v, built.size)
            elif built.size > self._range(v):  # cannot happen: manifests never change
                raise RuntimeError(f"{v.spec}: manifest changed size")
            v.tree = built
            self._loaded_entries += built.nfiles
            self.stats["trees_loaded"] += 1
            self._idle_trees[v] = None
            self._trim()  # may unload it at once (over the budget, unreferenced): answer with it
            return built

    def _range(self, v: VersionDir) -> int:
        return self.inodes.range_end(v) - v.base

    def _build(self, project: str, artifact: str, n: int) -> tuple[Any, VersionTree | LazyTree]:
        m = self.store.manifest(project, artifact, n)
        return m, tree_for(m)  # a sharded version: read piece by piece (artfsd/tree.py)

    def referenced(self, v: VersionDir, delta: int) -> None:
        """The kernel took (``delta`` > 0) or dropped references to inodes of ``v``'s tree."""
        v.nlookup = max(0, v.nlookup + delta)
        self._idle(v)

    def opened(self, v: VersionDir, delta: int) -> None:
        v.nopen = max(0, v.nopen + delta)
        self._idle(v)

    def _idle(self, v: VersionDir) -> None:
        if v.tree is None:
            return
        if v.nlookup == 0 and v.nopen == 0:
            self._idle_trees[v] = None
            self._idle_trees.move_to_end(v)
            self._trim()
        else:
            self._idle_trees.pop(v, None)

    def _trim(self) -> None:
        """Unload unreferenced indexes, least recently used first, while over the budget."""
        while self._loaded_entries > self.tree_budget and self._idle_trees:
            v, _ = self._idle_trees.popitem(last=False)
            if v.tree is None or v.nlookup or v.nopen:
                continue
            self._loaded_entries -= v.tree.nfiles
            v.tree = None
            self.stats["trees_unloaded"] += 1
            log.debug("%s: unloaded its index", v.spec)

    async def version_info(self, v: VersionDir) -> None:
        """Refresh the mutable description/metadata of ``v`` (kept on failure)."""
        if _now() - v.info_at <= self.refresh:
            return
        p, a, n = v.key
        try:
            doc = await self.run_sync(self.store.info, p, a, n, what=f"info of {v.spec}")
            v.description = doc.get("description")
            md = doc.get("metadata")
            v.metadata = md if isinstance(md, dict) else {}
        except Exception as e:
            errno_for(e, f"info of {v.spec}")
        v.info_at = _now()

    @property
    def loaded_entries(self) -> int:
        return self._loaded_entries


def _valid_child(d: ListingDir, name: str) -> bool:
    try:
        if isinstance(d, (ArtifactDir, CollectionDir)):
            if name == "draft" and isinstance(d, ArtifactDir):
                return True
            if is_version(name):
                parse_version(name)
            else:
                check_alias(name)
        else:
            check_name(name)
    except InvalidName:
        return False
    return True


def _invalidate_inode(inode: int) -> None:
    """Drop the kernel's cached attributes and pages of ``inode`` (blocking: a worker thread)."""
    try:
        pyfuse3.invalidate_inode(inode, attr_only=False)
    except Exception as e:  # not cached in the kernel (ENOENT), or not mounted (unit tests)
        log.debug("invalidate inode %d: %s", inode, e)


def _invalidate_entry(parent: int, name: bytes) -> None:
    try:
        pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)
    except Exception as e:  # not mounted (unit tests) or the kernel refused: nothing cached then
        log.debug("invalidate %d/%r: %s", parent, name, e)
