"""What a draft holds (its snapshot: the files the next version would have) and how it differs from
its base version (:class:`DraftStatus`).

Symlinks: a version has no symlinks. A symlink whose target resolves (relative to its directory,
through further symlinks, never leaving the draft) to a file is taken as a copy of that file (same
digest: no bytes are duplicated in the store); one resolving to a directory as a copy of every file
under it. Absolute, escaping, dangling and looping symlinks cannot be committed: they are
*problems*, and ``commit`` refuses with an error naming them and keeps the draft whole, so nothing
is dropped silently; ``status().problems`` lists them beforehand. Empty directories, FIFOs,
sockets and devices are not part of a version (a version is a list of files).

Equality is by content: a draft whose files equal its base (same paths, digests and executable
bits: a file rewritten with identical bytes, changes reverted, ...) does not differ from it.
Staged files whose cached digest is invalid are hashed here (and the digests stored), or reported
as *unhashed* when the caller must not hash (a look at a draft a mount holds).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Callable

from .._digest import digest_file
from .._errors import InvalidPath
from .._manifest import Entry, Manifest, gc_paused
from .._units import human_size
from .schema import _COLS, ROOT, DraftDB, _node_of_row, _Node, read_owner

_MAX_HOPS = 40


@dataclass
class DraftStatus:
    """How a draft differs from its base version."""

    project: str
    artifact: str
    store_url: str
    base_version: int | None
    path: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    added_bytes: int = 0
    changed_bytes: int = 0  # new sizes of changed files
    removed_bytes: int = 0
    unhashed: list[str] = field(default_factory=list)  # base files written since their last hash
    #                        (status(hash=False), e.g. a look at a draft a mount holds): maybe changed
    problems: list[str] = field(default_factory=list)  # symlinks that cannot be committed
    commit_pending: bool = False
    description: str | None = None
    type: str = "unspecified"
    metadata: dict[str, Any] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    busy: dict[str, Any] | None = None  # the owner, when another process holds the draft

    @property
    def differs(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.unhashed)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["differs"] = self.differs
        return d

    def summary(self) -> str:
        """``1 added (5 B), 2 changed (1.5 MiB)``, or ``no changes``."""
        parts = []
        if self.added:
            parts.append(f"{len(self.added)} added ({human_size(self.added_bytes)})")
        if self.changed:
            parts.append(f"{len(self.changed)} changed ({human_size(self.changed_bytes)})")
        if self.removed:
            parts.append(f"{len(self.removed)} removed ({human_size(self.removed_bytes)})")
        if self.unhashed:
            parts.append(f"{len(self.unhashed)} written, maybe changed")
        return ", ".join(parts) or "no changes"


class _Problem(Exception):
    pass


class Snapshot:
    """The files a draft holds now, and how they differ from its base: ``draft.snapshot``."""

    def __init__(self, db: DraftDB) -> None:
        self.db = db

    def base_manifest(self) -> Manifest | None:
        v = self.db.base_version
        if v is None:
            return None
        with open(os.path.join(self.db.path, f"base-v{v}.json"), "rb") as f:
            return Manifest.from_bytes(f.read(), where=f"{self.db.path} base v{v}")

    def _base_files(self) -> dict[str, tuple[str | None, bool, str | None, int]]:
        """path -> (digest, executable, ref, size) of the base version, read fast.

        base-v<N>.json was written by this module from a manifest already validated when it was
        read from the store, so it is not validated a second time (1M entries: seconds saved).
        """
        v = self.db.base_version
        if v is None:
            return {}
        with open(os.path.join(self.db.path, f"base-v{v}.json"), "rb") as f:
            doc = json.load(f)
        return {d["path"]: (d.get("digest"), bool(d.get("executable", False)), d.get("ref"), d.get("size") or 0)
                for d in doc["entries"]}

    @gc_paused()  # it builds a few objects per node of maybe millions, none in a cycle
    def take(self, *, hash: bool, defer: list[tuple[str, _Node]] | None = None) -> tuple[
            list[Entry], dict[str, Callable[[str], None] | str], list[str], list[tuple[str, int]]]:
        """(entries, {digest: staged path}, problems, unhashed (path, size)) of the draft as it is now.

        Staged files whose cached digest is invalid are hashed when ``hash``; the digests are
        stored (unless read-only). The caller holds the lock and, when hashing, the gate. With
        ``defer`` (and not ``hash``) such files are listed there as (path, node) instead, for the
        caller to hash without the lock (:meth:`Commit.commit`).
        """
        rows = list(map(_node_of_row, self.db.q(f"SELECT {_COLS} FROM nodes")))
        children: dict[int, dict[str, _Node]] = {}
        for r in rows:
            if r.ino != ROOT:
                children.setdefault(r.parent, {})[r.name] = r
        byino = {r.ino: r for r in rows}
        updates: list[tuple[str, int, int, int]] = []
        unhashed: list[tuple[str, int]] = []

        known: dict[int, tuple[str | None, int]] = {}

        def file_entry(n: _Node, path: str) -> Entry | None:
            if n.fid is None:
                return self.db.entry_of(n, path)
            p = self.db.fpath(n.fid)
            if n.ino in known:
                digest, size = known[n.ino]
            else:
                st = os.stat(p)
                if self.db.digest_valid(n, st):
                    digest, size = n.digest, n.size
                elif hash:
                    digest, size = digest_file(p)
                    after = os.stat(p)
                    if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                        updates.append((digest, size, after.st_mtime_ns, n.ino))
                else:
                    digest, size = None, st.st_size
                known[n.ino] = (digest, size)
            if digest is None:
                if defer is not None:
                    defer.append((path, n))
                unhashed.append((path, size))
                return None
            sources[digest] = p
            return Entry(path, digest, size, bool(n.mode & stat.S_IXUSR))

        entries: list[Entry] = []
        sources: dict[str, Callable[[str], None] | str] = {}
        problems: list[str] = []
        links: list[tuple[_Node, str, list[int]]] = []

        stack: list[tuple[int, str, list[int]]] = [(ROOT, "", [ROOT])]
        while stack:
            d, prefix, anc = stack.pop()
            for name, c in children.get(d, {}).items():
                path = prefix + name
                if c.kind == "d":
                    stack.append((c.ino, path + "/", anc + [c.ino]))
                elif c.kind == "f":
                    e = file_entry(c, path)
                    if e is not None:
                        entries.append(e)
                elif c.kind == "l":  # FIFOs, sockets, devices: not in a version
                    links.append((c, path, anc))

        def resolve(start: int, target: str, hops: int) -> _Node:
            if target.startswith("/"):
                raise _Problem("is absolute")
            cur = byino[start]
            parts = [p for p in target.split("/") if p not in ("", ".")]
            for i, part in enumerate(parts):
                if cur.kind != "d":
                    raise _Problem("is dangling")
                if part == "..":
                    if cur.ino == ROOT:
                        raise _Problem("points outside the draft")
                    cur = byino[cur.parent]
                    continue
                nxt = children.get(cur.ino, {}).get(part)
                if nxt is None:
                    raise _Problem("is dangling")
                if nxt.kind == "l":
                    if hops >= _MAX_HOPS:
                        raise _Problem("loops")
                    nxt = resolve(cur.ino, nxt.target or "", hops + 1)
                cur = nxt
            return cur

        def expand(link: _Node, path: str, anc: list[int]) -> None:
            t = resolve(link.parent, link.target or "", 0)
            if t.kind == "f":
                e = file_entry(t, path)
                if e is not None:
                    entries.append(e)
                return
            todo = [(t.ino, path + "/", anc)]
            while todo:
                d, prefix, seen = todo.pop()
                if d in seen:
                    raise _Problem("loops (it points to a directory that contains it)")
                for name, c in children.get(d, {}).items():
                    if c.kind == "d":
                        todo.append((c.ino, prefix + name + "/", seen + [d]))
                    elif c.kind == "f":
                        e = file_entry(c, prefix + name)
                        if e is not None:
                            entries.append(e)
                    elif c.kind == "l":
                        expand(c, prefix + name, seen + [d])

        for link, path, anc in links:
            try:
                expand(link, path, anc)
            except _Problem as e:
                problems.append(f"symlink {path!r} -> {link.target!r} {e}")
            except RecursionError:
                problems.append(f"symlink {path!r} -> {link.target!r} loops")
        if updates and not self.db.readonly:
            with self.db.tx() as con:
                con.executemany("UPDATE nodes SET digest = ?, size = ?, hmtime = ? WHERE ino = ?", updates)
            for u in updates:
                self.db.invalid.discard(u[3])
        entries.sort(key=lambda e: e.path)
        return entries, sources, problems, unhashed

    def entries(self) -> list[Entry]:
        """The files the next version would hold (hashing staged files as needed)."""
        with self.db.gate.exclusive(), self.db.lock:
            entries, _, problems, _ = self.take(hash=True)
            if problems:
                raise InvalidPath(self.problems_message(problems))
            return entries

    def status(self, *, hash: bool = True) -> DraftStatus:
        """What differs from the base version: added/changed/removed files and their bytes."""
        with contextlib.ExitStack() as stack:
            if hash:
                stack.enter_context(self.db.gate.exclusive())
            stack.enter_context(self.db.lock)
            entries, _, problems, unhashed = self.take(hash=hash)
            old = self._base_files()
            base_version = self.db.base_version
            meta = {k: self.db.meta(k) for k in ("project", "artifact", "store_url", "description", "type",
                                                "metadata", "aliases", "commit_id")}
        st = DraftStatus(meta["project"], meta["artifact"], meta["store_url"], base_version,
                         self.db.path, problems=problems,
                         commit_pending=meta["commit_id"] is not None, description=meta["description"],
                         type=meta["type"] or "unspecified", metadata=meta["metadata"] or {},
                         aliases=meta["aliases"] or [])
        for e in entries:
            b = old.pop(e.path, None)
            if b is None:
                st.added.append(e.path)
                st.added_bytes += e.size
            elif b[:3] != (e.digest, e.executable, e.ref):
                st.changed.append(e.path)
                st.changed_bytes += e.size
        for p, size in unhashed:  # written since hashed: new if the base lacks it, else maybe changed
            if old.pop(p, None) is None:
                st.added.append(p)
                st.added_bytes += size
            else:
                st.unhashed.append(p)
        st.added.sort()
        st.removed = sorted(old)
        st.removed_bytes = sum(b[3] for b in old.values())
        if self.db.readonly:
            st.busy = read_owner(self.db.path) or None
        return st

    def problems_message(self, problems: list[str]) -> str:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        return (f"{self.db.project}/{self.db.artifact}: cannot commit the draft: " + "; ".join(problems[:10]) + more
                + ". A version holds only files: replace these symlinks by files or remove them, then commit"
                " again; the draft is kept as it is.")
