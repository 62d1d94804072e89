"""Commits of drafts and the ``user.artfs.*`` attributes of ``draft/`` (:class:`DraftCommits`,
the part ``commits`` of :class:`artfsd.drafts.DraftSpace`, over its
:class:`artfsd.draft_slots.SlotSpace`).

Commit
    ``setxattr user.artfs.commit`` on ``draft/`` commits in a worker thread while the request
    waits; the result, or the error, is ``user.artfs.last_commit``. With ``"wait": false`` in the
    request (what ``artfs commit`` sends) the setxattr returns at once and the commit runs in the
    background: the kernel holds ``draft/``'s inode lock for as long as a setxattr runs, which
    would keep every lookup and listing in ``draft/`` waiting for the whole commit. At unmount
    (:meth:`DraftCommits.finish`, after the kernel has let go of the mount) every draft that
    differs from its base is committed: those opened in this session and those an earlier one
    left in staging (a SIGKILL, a store that was down). A draft equal to its base makes no
    version; a new artifact's draft that stayed empty is removed. Both commit through
    :meth:`DraftCommits.commit_one`, which calls the library's one commit
    (:func:`artfs.lowlevel.commit_draft`: a version, or a part of the mount's ``--group``) and
    records the lineage; its result (:class:`artfs.lowlevel.DraftCommit`) is what
    ``user.artfs.last_commit`` and the unmount report carry. What a crash at each step of a
    commit leaves, and how the next commit finishes it exactly once, is the draft library's
    business (:mod:`artfs._draft.commit`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import re
import time
from typing import Any, Iterable

import pyfuse3
import trio

from artfs import InvalidName
from artfs.lowlevel import ROOT, Draft, DraftBusy, DraftCommit, UnmountReport, commit_draft

from . import attrs
from .attrs import PREFIX as XATTR
from .draft_slots import DraftFile, DraftSlot, SlotSpace, _fuse, log


class DraftCommits:
    """Extended attributes and commits of the drafts (module docstring)."""

    def __init__(self, space: SlotSpace) -> None:
        self.space = space

    # -- extended attributes -------------------------------------------------------------------------
    async def xattrs(self, slot: DraftSlot, dino: int) -> dict[str, bytes]:
        d = await self.space.draft(slot)

        def work() -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            if dino == ROOT:
                p = d.pending()
                if p["description"] is not None:
                    out[attrs.DESCRIPTION] = str(p["description"]).encode()
                out[attrs.TYPE] = str(p["type"] or "unspecified").encode()
                out[attrs.METADATA] = json.dumps(p["metadata"] or {}, ensure_ascii=False, sort_keys=True).encode()
                out[attrs.ALIASES] = ",".join(p["aliases"] or []).encode()
                base = d.base_version
                out[attrs.BASE] = b"" if base is None else f"v{base}".encode()
                if self.space.group is not None:
                    out[attrs.GROUP] = self.space.group.encode()
                out[attrs.STATUS] = status_value(d.status(hash=False).to_json())
                if slot.last_commit is not None:
                    out[attrs.LAST_COMMIT] = slot.last_commit.to_json().encode()
                return out
            try:
                entry = d.namespace.base_entry(dino)
            except OSError:
                return out
            if entry is not None:
                if entry.digest:
                    out[attrs.DIGEST] = entry.digest.encode()
                out[attrs.SIZE] = str(entry.size).encode()
                if entry.ref is not None:
                    out[attrs.REF] = entry.ref.encode()
            return out

        got: dict[str, bytes] = await self.space.run(slot, work)
        return attrs.qualify(got)

    async def setxattr(self, slot: DraftSlot, dino: int, name: str, value: bytes) -> None:
        if dino != ROOT or not name.startswith(XATTR):
            raise _fuse(errno.ENOTSUP)  # a version keeps no extended attributes of files
        key = name[len(XATTR):]
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _fuse(errno.EINVAL) from None
        if key == attrs.COMMIT:
            request = _commit_request(text)
            if request.get("wait") is False and self.space.nursery is not None:
                # Answer now and commit in the background: the kernel holds draft/'s inode lock
                # for as long as a setxattr runs, which would block every lookup and listing of
                # draft/ for the whole commit. The caller polls user.artfs.last_commit for its id.
                slot.last_commit = DraftCommit.running(slot.name, request.get("id"))
                self.space.nursery.start_soon(self._commit_quietly, slot, request)
                return
            await self.commit(slot, request)
            return
        d = await self.space.draft(slot)
        try:
            if key == attrs.DESCRIPTION:
                await self.space.run(slot, d.set_description, text or None)
            elif key == attrs.TYPE:
                await self.space.run(slot, d.set_type, text.strip() or "unspecified")
            elif key == attrs.METADATA:
                md = json.loads(text) if text.strip() else {}
                if not isinstance(md, dict):
                    raise ValueError("metadata must be a JSON object")
                await self.space.run(slot, d.set_metadata, md)
            elif key == attrs.ALIASES:
                await self.space.run(slot, d.set_aliases, [a for a in re.split(r"[,\s]+", text) if a])
            elif key in (attrs.BASE, attrs.STATUS, attrs.LAST_COMMIT):
                raise _fuse(errno.EPERM)
            else:
                raise _fuse(errno.ENOTSUP)
        except (ValueError, InvalidName) as e:  # includes json.JSONDecodeError
            log.error("%s: setxattr %s: %s", slot.name, name, e)
            raise _fuse(errno.EINVAL) from None

    async def removexattr(self, slot: DraftSlot, dino: int, name: str) -> None:
        if dino != ROOT or not name.startswith(XATTR):
            raise _fuse(pyfuse3.ENOATTR)
        d = await self.space.draft(slot)
        key = name[len(XATTR):]
        if key == attrs.DESCRIPTION:
            await self.space.run(slot, d.set_description, None)
        elif key == attrs.METADATA:
            await self.space.run(slot, d.set_metadata, {})
        elif key == attrs.ALIASES:
            await self.space.run(slot, d.set_aliases, [])
        elif key == attrs.TYPE:
            await self.space.run(slot, d.set_type, "unspecified")
        else:
            raise _fuse(pyfuse3.ENOATTR)

    # -- commits ---------------------------------------------------------------------------------------
    def commit_one(self, d: Draft, *, keep: bool, id: str | None = None, **request: Any) -> DraftCommit:
        """Commit ``d`` (blocking: a worker thread, or after the FUSE loop ended) with the logger
        the lineage names, and tell the lineage what it made. The one commit of a request and of
        the unmount. ``request``: description, metadata, type, aliases overriding the draft's."""
        lineage = self.space.lineage
        run = lineage.logger_of(d.project, d.artifact) if lineage is not None else None
        result = commit_draft(d, self.space.store, group=self.space.group, keep=keep, run=run, id=id, **request)
        if lineage is not None and result.committed and result.group is None and result.version is not None:
            lineage.committed(d.project, d.artifact, result.version, result.created)
        log.info("%s", _result_text(result))
        return result

    async def commit(self, slot: DraftSlot, request: dict[str, Any]) -> DraftCommit:
        """Commit the slot's draft now (``user.artfs.commit``); the result is also ``last_commit``."""
        d = await self.space.draft(slot)
        if slot.committing is None:
            slot.committing = trio.Lock()
        async with slot.committing:
            slot.busy = True
            idle = slot.idle = trio.Event()
            try:
                kw = {k: request[k] for k in ("description", "metadata", "type", "aliases") if request.get(k) is not None}
                result: DraftCommit = await trio.to_thread.run_sync(
                    functools.partial(self.commit_one, d, keep=True, id=request.get("id"), **kw),
                    limiter=self.space.commit_limiter)
            except Exception as e:
                slot.last_commit = DraftCommit.failure(slot.name, str(e), request.get("id"))
                log.error("%s", e)
                raise
            finally:
                slot.busy = False
                idle.set()
                for st in slot.inodes.values():
                    st.marked = False  # a commit hashes: the next write must announce itself again
            slot.last_commit = result
            self.space.stats["commits"] += 1
        if self.space.on_commit is not None:
            await self.space.on_commit(slot)
        return result

    async def _commit_quietly(self, slot: DraftSlot, request: dict[str, Any]) -> None:
        """A commit requested with ``"wait": false``: its result (or error) is ``last_commit``."""
        try:
            await self.commit(slot, request)
        except Exception as e:  # logged by commit(); make sure the caller's id gets an answer
            if slot.last_commit is None or slot.last_commit.ok is not False:
                slot.last_commit = DraftCommit.failure(slot.name, str(e), request.get("id"))

    def last_commit_xattr(self, slot: DraftSlot, dino: int) -> bytes | None:
        """``user.artfs.last_commit`` of ``draft/`` without opening or reading the draft."""
        if dino != ROOT or slot.last_commit is None:
            return None
        return slot.last_commit.to_json().encode()

    def finish(self, handles: Iterable[Any] = ()) -> UnmountReport:
        """At unmount (the kernel has let go): commit every draft that differs from its base.

        Blocking; call after the FUSE loop has ended. Returns the report ``artfs umount`` prints
        (its commits, unchanged drafts and failures; the daemon adds who and when).
        """
        space = self.space
        for h in handles:  # nothing holds a file open any more
            if isinstance(h, DraftFile) and h.write and h.slot.draft is not None:
                with contextlib.suppress(Exception):
                    h.slot.draft.staging.release(h.dino)
        for each in space.slots:
            for st in each.inodes.values():
                st.close()
            each.inodes.clear()
        report = UnmountReport()
        opened = {(s.project, s.artifact): s for s in space.slots if s.draft is not None}
        try:
            refs = {(r.project, r.artifact): r for r in space.drafts.list()}
        except OSError as e:
            log.error("cannot list the drafts in %s: %s", space.drafts.root, e)
            refs = {}
        for key in sorted(set(opened) | set(refs)):
            slot: DraftSlot | None = opened.get(key)
            d = slot.draft if slot is not None else None
            if d is None:
                try:
                    d = Draft.open(refs[key].path, owner=space.owner)
                except DraftBusy:
                    continue  # another mount or an `artfs commit` has it: theirs to commit
                except Exception as e:
                    report.fail("/".join(key), str(e))
                    log.error("%s: cannot open the draft: %s", "/".join(key), e)
                    continue
            try:
                self._finish_one(d, report, opened=slot is not None)
            finally:
                with contextlib.suppress(Exception):
                    d.close()
                if slot is not None:
                    slot.draft = None
        return report

    def _finish_one(self, d: Draft, report: UnmountReport, *, opened: bool) -> None:
        """Commit one draft at unmount, if it changed; a new artifact's draft left empty is dropped."""
        name = f"{d.project}/{d.artifact}"
        result: DraftCommit | None = None
        if d.dirty:
            log.info("%s: committing the draft", name)
            try:
                result = self.commit_one(d, keep=False)
            except Exception as e:
                report.fail(name, str(e))
                log.error("%s", e)
                return
            if result.committed:
                report.commits.append(result)
                return
            report.unchanged.append(name)  # dirty, yet equal to its base by content
        elif opened:
            if d.base_version is not None or d.namespace.readdir(ROOT, limit=1):
                report.unchanged.append(name)
        d.discard_if_empty()  # a new artifact nothing was written into: nothing to keep


#: the longest ``user.artfs.status`` value: the kernel refuses values over 64 KiB (E2BIG)
STATUS_MAX = 60 * 1024
_STATUS_LISTS = ("added", "changed", "removed", "unhashed", "problems")


def status_value(doc: dict[str, Any], limit: int = STATUS_MAX) -> bytes:
    """``user.artfs.status``: the whole status while it fits in ``limit`` bytes; beyond that a
    summary: every count and size, the first paths of each list (as many as fit, the same number
    for each), ``"truncated": true`` and where the full list is (``artfs status --json``)."""
    value = json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()
    if len(value) <= limit:
        return value
    short = dict(doc)
    short["counts"] = {k: len(doc.get(k) or []) for k in _STATUS_LISTS}
    short["truncated"] = True
    short["full"] = "artfs status --json (the complete lists; works while mounted)"
    cap = max(len(doc.get(k) or []) for k in _STATUS_LISTS)
    while True:
        cap //= 2
        for k in _STATUS_LISTS:
            short[k] = list((doc.get(k) or [])[:cap])
        value = json.dumps(short, ensure_ascii=False, sort_keys=True).encode()
        if len(value) <= limit or cap == 0:
            return value


def _commit_request(text: str) -> dict[str, Any]:
    """The value of ``user.artfs.commit``: ``1`` or a JSON object (description, metadata, type,
    aliases overriding what the draft's attributes say, and an ``id`` echoed in the result)."""
    text = text.strip()
    if not text.startswith("{"):
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        raise _fuse(errno.EINVAL) from None
    if not isinstance(doc, dict) or (doc.get("metadata") is not None and not isinstance(doc["metadata"], dict)):
        raise _fuse(errno.EINVAL)
    return doc


def _result_text(r: DraftCommit) -> str:
    """The log line of a commit."""
    if r.group is not None:
        return (f"{r.name}: recorded as a part of group {r.group} ({r.files} files, "
                f"{r.uploaded_blobs} new blobs, {r.uploaded_bytes} bytes uploaded, {r.seconds:.2f} s)")
    if not r.committed:
        base = r.version
        return f"{r.name}: nothing to commit (the draft equals {'v%s' % base if base is not None else 'nothing'})"
    if not r.created:
        return f"{r.name}:v{r.version} matched: already in the store (identical content, or an interrupted commit)"
    return (f"{r.name}:v{r.version} created ({r.files} files, {r.uploaded_blobs} new blobs, "
            f"{r.uploaded_bytes} bytes uploaded, {r.seconds:.2f} s)")
