"""``artfs status`` and ``artfs commit``: drafts from the command line.

Drafts live in the staging directory (see :mod:`artfs._draft`), so both commands work without a
running mount: ``artfs status`` lists the drafts that differ from their base (and the pending
groups of distributed writers, :mod:`artfs.cli.groups`), ``artfs commit PROJECT/ARTIFACT``
commits one as the next version. A draft a running mount holds is the daemon's to commit:
``artfs commit`` says so and names the mount. ``artfs commit MNT/<project>/<artifact>/draft``
(a path inside an artfs mount) goes through the daemon: see :func:`commit_through_mount`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

from .. import _xattrs
from .._draft import Draft, DraftBusy, DraftStatus, Drafts, commit_draft, default_staging_root, list_drafts
from .._errors import ArtfsError, NotFound
from .._mounts import FSTYPE, find_mount
from .._names import check_alias, parse_spec
from .._store import Store
from . import groups
from .context import Context, json_option, metadata
from .._umount import DraftCommit
from .output import commit_text

_SHOW_PATHS = 10


def _staging(ctx: Context) -> str:
    return os.path.abspath(getattr(ctx.args, "staging_dir", None) or default_staging_root())


def _offline_store_id(ctx: Context) -> str:
    """The id of the named store, without requiring that it exists or answers (opening a Store
    does not contact it)."""
    return Store(ctx.args.store or os.environ["ARTFS_STORE"], cache=ctx.cache).id


# -- artfs status ----------------------------------------------------------------------------------
def _owner_text(owner: dict[str, Any]) -> str:
    at = f", mounted at {owner['mountpoint']}" if owner.get("mountpoint") else ""
    return f"open in pid {owner.get('pid')} ({owner.get('what') or '?'}{at})"




def _status_text(st: DraftStatus, *, show_store: bool) -> str:
    base = f"v{st.base_version}" if st.base_version is not None else "new artifact"
    head = f"{st.project}/{st.artifact}  (base {base})  {st.summary()}"
    if show_store:
        head += f"  [{st.store_url}]"
    lines = [head]
    if st.busy:
        lines.append(f"    {_owner_text(st.busy)}")
    if st.commit_pending:
        lines.append("    an interrupted commit is pending; `artfs commit` finishes it")
    for mark, paths in (("+", st.added), ("~", st.changed), ("-", st.removed)):
        for p in paths[:_SHOW_PATHS]:
            lines.append(f"    {mark} {p}")
        if len(paths) > _SHOW_PATHS:
            lines.append(f"    {mark} ... and {len(paths) - _SHOW_PATHS} more")
    for p in st.problems:
        lines.append(f"    ! {p}")
    return "\n".join(lines)


def cmd_status(ctx: Context) -> int:
    """The drafts with changes (local: listed even while their store is missing or down), then
    the pending groups of the store (a note on stderr if the store cannot list them)."""
    root = _staging(ctx)
    store_id = _offline_store_id(ctx) if ctx.store_given else None
    out = [st for ref in list_drafts(root, store_id=store_id)
           if (st := ref.status(all=ctx.args.all)) is not None]
    doc: list[dict[str, Any]] = [st.to_json() for st in out]
    stores = {st.store_url for st in out}
    texts = [_status_text(st, show_store=len(stores) > 1) for st in out]
    try:
        found = groups.pending_groups(ctx)
    except ArtfsError as e:
        ctx.note(f"artfs: cannot list the pending groups of the store: {e}")
        found = []
    doc += [{"kind": "group", **g.to_json()} for g in found]
    texts += [groups.group_text(g) for g in found]
    ctx.emit(doc, "\n".join(texts) if texts else "no drafts with changes to commit")
    return 0


# -- artfs commit ----------------------------------------------------------------------------------
def artfs_mount_of(path: str) -> tuple[str, str] | None:
    """(mountpoint, path inside it) if ``path`` lies in an artfs FUSE mount, else None.

    Looks only at /proc/self/mountinfo and at the path's text (no stat through the mount, which
    could hang on a stuck daemon).
    """
    p = os.path.abspath(path)
    while True:
        m = find_mount(p)
        if m is not None:
            if m.fstype != FSTYPE:
                return None
            return m.mountpoint, os.path.relpath(os.path.abspath(path), m.mountpoint)
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent


def commit_through_mount(ctx: Context, mountpoint: str, project: str, artifact: str) -> int:
    """Commit ``MNT/<project>/<artifact>/draft`` by asking the mount's daemon, which owns the draft.

    The control channel is the draft directory's extended attributes: ``setxattr
    user.artfs.commit`` with a JSON request (description, metadata, type, aliases, and an id)
    returns once the daemon has committed (or failed: an errno), and ``user.artfs.last_commit``
    then holds the result, or the error message, as JSON.
    """
    a = ctx.args
    draft = os.path.join(mountpoint, project, artifact, "draft")
    request: dict[str, Any] = {"id": uuid.uuid4().hex}
    if a.description is not None:
        request["description"] = a.description
    if a.type:
        request["type"] = a.type
    if a.alias:
        request["aliases"] = [check_alias(x) for x in a.alias]
    if a.metadata:
        request["metadata"] = metadata(a.metadata)
    # "wait": false: the daemon answers at once and commits in the background (a setxattr that
    # lasts the whole commit would hold draft/'s inode lock in the kernel, blocking every listing
    # of draft/); we poll user.artfs.last_commit until it carries our id and a result.
    request["wait"] = False
    failed: OSError | None = None
    doc: DraftCommit | None = None
    try:
        os.setxattr(draft, _xattrs.full(_xattrs.COMMIT), json.dumps(request).encode())
    except OSError as e:
        failed = e
    while True:
        try:
            doc = DraftCommit.from_dict(json.loads(os.getxattr(draft, _xattrs.full(_xattrs.LAST_COMMIT))))
            if doc is None:
                raise ValueError("not a commit result")
        except (OSError, ValueError) as e:
            if failed is None:
                failed = e if isinstance(e, OSError) else OSError(0, str(e))
            doc = None
        if doc is not None and doc.id != request["id"]:
            doc = None  # someone else's commit (or a daemon that does not know "wait")
        if failed is not None or doc is None or doc.ok is not None:
            break
        time.sleep(0.1)
    if doc is not None and doc.ok is False and failed is None:
        failed = OSError(0, str(doc.error))
    name = f"{project}/{artifact}"
    if failed is not None:
        why = doc.error if doc and doc.error else (failed.strerror or str(failed))
        raise ArtfsError(f"{name}: the mount at {mountpoint} could not commit the draft: {why} "
                         f"(its log has details)")
    if doc is None:
        raise ArtfsError(f"{name}: the mount at {mountpoint} committed, but did not say what (is its daemon older?)")
    ctx.emit(doc.to_dict(), commit_text(doc))
    return 0


def _busy_message(project: str, artifact: str, e: DraftBusy) -> str:
    mnt = e.owner.get("mountpoint")
    if mnt:
        return (f"{project}/{artifact}: the draft is held by the mount at {mnt} (pid {e.owner.get('pid')}); "
                f"commit it through the mount with `artfs commit {os.path.join(mnt, project, artifact, 'draft')}`, "
                f"or unmount (`artfs umount {mnt}`), which commits it")
    return f"{project}/{artifact}: {e}; close that process (or unmount) and try again"


def _open_target(ctx: Context) -> tuple[Draft | None, int | None]:
    """The draft named by the command line (or the exit code of handing it to the daemon).

    ``PROJECT/ARTIFACT``: the draft of that artifact in the store (--store, default store).
    ``MNT/PROJECT/ARTIFACT/draft`` inside a running artfs mount: the daemon commits it. The same
    path when nothing is mounted there any more (a crashed daemon): the staged draft of
    PROJECT/ARTIFACT, of whichever store has one. A draft directory of the staging area: that one.
    """
    target: str = ctx.args.target
    path = os.path.expanduser(target)
    parts = [p for p in os.path.abspath(path).split(os.sep) if p]
    is_path = target.startswith(("/", ".", "~")) or target.count("/") != 1 or parts[-1:] == ["draft"]
    if is_path:
        inside = artfs_mount_of(path)
        if inside is not None:
            mnt, rel = inside
            rparts = [p for p in rel.split(os.sep) if p not in ("", ".")]
            if len(rparts) != 3 or rparts[2] != "draft":
                raise ArtfsError(f"{target}: not a draft; expected {mnt}/<project>/<artifact>/draft")
            return None, commit_through_mount(ctx, mnt, rparts[0], rparts[1])
        if os.path.exists(os.path.join(path, "draft.db")):  # a draft directory of the staging area
            return _open_dir(path), None
        if len(parts) < 3 or parts[-1] != "draft":
            raise ArtfsError(f"{target}: expected PROJECT/ARTIFACT or MNT/PROJECT/ARTIFACT/draft")
        project, artifact = parts[-3], parts[-2]
        store_id = ctx.store.id if ctx.store_given else None
        found = [r for r in list_drafts(_staging(ctx), store_id=store_id) if (r.project, r.artifact) == (project, artifact)]
        if len(found) > 1:
            raise ArtfsError(f"{target} is not mounted, and {project}/{artifact} has drafts for "
                             f"{len(found)} stores in {_staging(ctx)}: name one with --store")
        if not found:
            raise NotFound(f"{target}: not mounted, and no draft of {project}/{artifact} in {_staging(ctx)}")
        return _open_dir(found[0].path), None
    spec = parse_spec(target.rstrip("/"))
    if spec.version is not None or spec.alias is not None:
        raise ArtfsError(f"{target}: a draft is committed as the next version; give PROJECT/ARTIFACT")
    drafts = Drafts(ctx.store, root=_staging(ctx))
    try:
        return drafts.open(spec.project, spec.artifact, create=False, refresh=False), None
    except DraftBusy as e:
        raise DraftBusy(_busy_message(spec.project, spec.artifact, e), e.owner) from None
    except NotFound:
        others = [r for r in list_drafts(drafts.root) if (r.project, r.artifact) == (spec.project, spec.artifact)]
        hint = ""
        if others:
            with Draft.open(others[0].path, readonly=True) as d:
                hint = f"; there is one for the store {d.store_url}: pass --store {d.store_url}"
        raise NotFound(f"{spec.project}/{spec.artifact}: no draft of the store {ctx.store.url} in {drafts.root}{hint}") from None


def _open_dir(path: str) -> Draft:
    try:
        return Draft.open(path)
    except DraftBusy as e:
        with Draft.open(path, readonly=True) as d:
            raise DraftBusy(_busy_message(d.project, d.artifact, e), e.owner) from None


def cmd_commit(ctx: Context) -> int:
    a = ctx.args
    aliases = [check_alias(x) for x in a.alias or []]
    md = metadata(a.metadata) if a.metadata else None
    draft, code = _open_target(ctx)
    if draft is None:
        return code or 0
    with draft:
        store = ctx.store
        if store.id != draft.store_id:
            store = Store(draft.store_url, cache=ctx.cache)
        name = f"{draft.project}/{draft.artifact}"
        total = sum(e.size for e in draft.entries())
        base = draft.base_version
        with ctx.progress(total, "upload") as cb:
            r = commit_draft(draft, store, description=a.description, metadata=md, type=a.type,
                             aliases=aliases, progress=cb)
        doc: dict[str, Any] = {"name": name, "created": False, "version": base, "committed": False}
        if r.result is not None:  # the library's result, as `artfs commit --json` always printed it
            doc = {"name": name if r.group else f"{name}:v{r.version}", "committed": True, **vars(r.result)}
        ctx.emit(doc, commit_text(r))
    return 0


# -- parsers ---------------------------------------------------------------------------------------
def register(sub: Any, common: argparse.ArgumentParser) -> None:
    def staging(p: argparse.ArgumentParser) -> None:
        p.add_argument("--staging-dir", metavar="DIR",
                       help="where drafts live (default: $ARTFS_STAGING_DIR, else $XDG_DATA_HOME/artfs/staging)")

    p = sub.add_parser(
        "status", parents=[common], help="list drafts with changes not yet committed",
        description="List the drafts (the draft/ directories of mounts, kept in the staging directory) that "
                    "differ from their base version: files added (+), changed (~) and removed (-). Drafts of "
                    "every store are shown unless --store (or $ARTFS_STORE) names one.")
    p.add_argument("--all", action="store_true", help="also list drafts without changes")
    staging(p)
    json_option(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "commit", parents=[common], help="commit a draft as the next version",
        description="Commit the draft of PROJECT/ARTIFACT from the staging directory as the next version "
                    "(tagged latest) when no mount holds it; a draft equal to its base commits nothing. "
                    "MNT/PROJECT/ARTIFACT/draft (inside a running mount) is committed by the mount's daemon.")
    p.add_argument("target", metavar="PROJECT/ARTIFACT | MNT/PROJECT/ARTIFACT/draft")
    p.add_argument("-d", "--description", help="description of the new version (default: what was set on the draft)")
    p.add_argument("-t", "--type", help="type of a new artifact (dataset, model, ...)")
    p.add_argument("-a", "--alias", action="append", metavar="ALIAS", help="alias for the new version (repeatable)")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE",
                   help="metadata of the new version; VALUE is parsed as JSON when it parses (repeatable)")
    staging(p)
    json_option(p)
    p.set_defaults(func=cmd_commit)
