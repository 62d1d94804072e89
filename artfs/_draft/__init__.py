"""Drafts: the persistent, crash-safe staging tree of an artifact's next version.

A draft is what the mount shows at ``MNT/<project>/<artifact>/draft/``: a writable,
copy-on-write view of a *base* version (the artifact's latest when the draft was started, or
nothing for a new artifact). This package owns its on-disk state and every operation on it, and
has no FUSE dependency: the daemon is a thin adapter over :class:`Draft`, and ``artfs commit``
commits a draft when no daemon runs. Everything other modules use is imported from here.

:class:`Draft` holds its parts (one object each, all over the same :class:`DraftDB`), each a
module that knows only those above it in this list:

    schema.py     DraftDB (``draft.db``): draft.db's tables, columns and states, schema migration,
                  transactions, the reserve for a full disk, the sweep of unreferenced staged files
    namespace.py  Namespace (``draft.namespace``): lookup/readdir/mkdir/rename/... (POSIX rules,
                  errnos), Attr
    staging.py    Staging (``draft.staging``): staged files (copy-up, the write gate, truncate, fsync)
    snapshot.py   Snapshot (``draft.snapshot``): what the draft holds, symlinks resolved; status
                  and DraftStatus
    commit.py     Commit (``draft.commits``): the exactly-once commit, step by step, and what a
                  crash at each leaves; a draft as a part of a group; the rebase of a clean draft
    draft.py      Draft: opening (lock, owner), creating, discarding; the next version's
                  description; ``commit``; and :func:`commit_draft`, the one commit every caller
                  that reports one uses (the mount's ``user.artfs.commit``, its unmount,
                  ``artfs commit``), with its typed result :class:`artfs._umount.DraftCommit`
    drafts.py     Drafts, DraftRef, list_drafts: the drafts of a store in a staging directory

Layout (never in the cache: a draft is user data)::

    $ARTFS_STAGING_DIR (default $XDG_DATA_HOME/artfs/staging)
      <store-id>/<project>/<artifact>/
        draft.db          sqlite3, WAL, synchronous=NORMAL: the namespace and the pending commit
        base-v<N>.json    the base version's manifest (written once; for status: removed files)
        files/<fid>       contents of staged files (fid: a uuid), written in place by the caller
        files/<fid>.tmp   a copy-up in progress
        lock              flock'ed exclusively by the one process that has the draft open
        reserve           RESERVE bytes kept allocated for the journal (full disk: see schema.py)
        owner             who holds the lock (pid, what, mountpoint) for the "draft is busy" message

Where each invariant is written down: the tables, their columns, the states of a file node and
of the draft, the schema's versions, durability and a full disk in :mod:`artfs._draft.schema`;
staged files and the write gate in :mod:`artfs._draft.staging`; symlinks and equality in
:mod:`artfs._draft.snapshot`; the commit's steps, what a crash at each leaves and how the next
commit finishes it exactly once in :mod:`artfs._draft.commit`; the lock and the owner in
:mod:`artfs._draft.draft`.

What the FUSE adapter does (draft inodes are per draft; map them into the daemon's inode space)
    lookup/getattr/readdir/mkdir/rmdir/unlink/rename/symlink/readlink/chmod/utimens/statfs:
        call the method of the same name of ``draft.namespace``; ``readdir(ino, after=cookie)``
        pages by inode number.
    create: ``namespace.create()`` then ``staging.open_for_write(ino)``; open for writing:
        ``staging.open_for_write(ino, truncate=O_TRUNC)``; keep an fd on the returned path;
        ``staging.release(ino)`` when the handle is released (a file with an open write handle
        stays staged across a commit, so its fd stays valid).
    write: ``with draft.staging.writing(ino): os.pwrite(fd, data, offset)``.
    read: staged -> ``namespace.staged_path(ino)``; base -> ``namespace.base_entry(ino)``
        (digest/reference) through the cache, like a version's file.
    setattr size: ``staging.truncate(ino, size)``; fsync/fsyncdir: ``staging.fsync(ino, datasync)``.
    errors: OSError carries the errno to pass on; InvalidPath (a name a version cannot hold)
        -> EINVAL; DraftBusy only at open. Hard links are not supported (EPERM).
    xattrs user.artfs.description/type/metadata/aliases on draft/: ``set_description`` etc.
    commit (a request, unmount): ``commit_draft(draft, store, name=...)``; on error log it and
        keep the draft (``artfs commit`` later).
"""

from __future__ import annotations

from .draft import Draft, DraftBusy, commit_draft
from .drafts import DraftRef, Drafts, default_staging_root, list_drafts, store_fetch
from .namespace import RENAME_EXCHANGE, RENAME_NOREPLACE, Attr
from .schema import ROOT, Fetch, read_owner
from .snapshot import DraftStatus

__all__ = [
    "Attr", "Draft", "DraftBusy", "DraftRef", "DraftStatus", "Drafts", "Fetch", "RENAME_EXCHANGE",
    "RENAME_NOREPLACE", "ROOT", "commit_draft", "default_staging_root", "list_drafts", "read_owner",
    "store_fetch",
]
