"""Placing a version's files under a directory (``Artifact.download``, ``get_path(...).download``,
``checkout``): each verified on the way, placed by reflink or copied (never hard-linked), files
already there and unchanged kept without being read (the record of what was hashed).

Into a root this download made (or found empty) each file is written in place, as ``cp`` does,
and removed if it fails verification; into a root that holds files, each goes beside its target
(``.artfs-tmp-*``) and is renamed over it, so a failed download never leaves a half-written file
under a name of the version.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
import uuid
from typing import TYPE_CHECKING, Callable, Sequence

from ._errors import SizeMismatch
from ._hashes import RecordView, hash_path
from ._layout import blob_key
from ._manifest import Entry
from ._parallel import pmap
from ._place import place_blob, safe_target
from ._refs import RefReader

if TYPE_CHECKING:
    from ._store import Store

_WORKERS = 8
_TMP_ID = uuid.uuid4().hex[:12]  # temp names: this, and a counter (no uuid4 per file)
_tmp_seq = itertools.count()


def place_entries(store: "Store", entries: Sequence[Entry], root: str, *, project: str, name: str,
                  progress: Callable[[int], None] | None = None, allow_file: bool = False,
                  file_roots: list[str] | tuple[str, ...] = ()) -> None:
    """Place ``entries`` (of a version of ``project``'s blobs; ``name`` names it in errors) under
    the absolute directory ``root``, made if missing. References are read from where they live,
    exactly as recorded; ``file://`` ones only where ``allow_file``/``file_roots`` allow."""
    try:
        with os.scandir(root) as it:
            new_root = next(it, None) is None
    except (FileNotFoundError, NotADirectoryError):  # the latter: makedirs says it below
        new_root = True
    os.makedirs(root, exist_ok=True)
    reader = RefReader(allow_file=allow_file, file_roots=file_roots) if any(e.ref for e in entries) else None

    checked: set[str] = set()  # directories under root known not to be symlinks
    made: set[str] = set()  # directories known to exist
    fetched = False
    record = store.cache.hash_record()  # files already there: read only if changed since recorded
    view = RecordView(record) if not new_root else None

    def one(e: Entry) -> None:
        nonlocal fetched
        target = safe_target(root, e.path, checked)
        mode = 0o755 if e.executable else 0o644
        if reader is not None and e.ref is not None and e.digest is None:
            _download_ref(reader, e, target, mode)  # no digest to cache it under
            if progress:
                progress(e.size)
            return
        try:
            st = os.lstat(target) if not new_root else None
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == e.size:
            if hash_path(target, view).digest == e.digest:  # unchanged since recorded: not read
                if (st.st_mode & 0o111 != 0) != e.executable:
                    os.chmod(target, mode)
                if progress:
                    progress(e.size)
                return
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        # into a root this download made (or found empty) each file is written in place, as
        # cp does (removed if it fails verification); elsewhere beside it, then renamed over it
        tmp = target if new_root else os.path.join(parent, f".artfs-tmp-{os.getpid()}-{_TMP_ID}-{next(_tmp_seq)}")
        digest = e.digest or ""
        if reader is not None and e.ref is not None:  # a reference with a digest
            def fetch(t: str) -> object:
                return reader.download(e, t)
        else:
            def fetch(t: str) -> object:
                return store.backend.download_file(blob_key(project, digest), t)
        blob = store.backend.local_path(blob_key(project, digest)) if e.ref is None else None
        try:
            if blob is not None:  # a local store is its own cache: placed from its blob, verified
                place_blob(blob, tmp, digest, mode, e.size)
            # from the cache (verified), or fetched into it and copied here in one pass
            elif store.cache.fetch_copy(digest, fetch, tmp, mode=mode, size=e.size):
                fetched = True
            if tmp != target:
                os.replace(tmp, target)
        except BaseException as ex:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(ex, SizeMismatch):
                raise SizeMismatch(f"{name}: entry {e.path!r}: {ex}") from None
            raise
        if progress:
            progress(e.size)

    try:
        pmap(one, entries, _WORKERS)
    finally:
        if reader is not None:
            reader.close()
        if view is not None:
            view.save()
        record.close()
    if fetched:  # only a download that grew the cache can have pushed it over its bound
        store.cache.cleanup()


def _download_ref(reader: RefReader, e: Entry, target: str, mode: int) -> None:
    """Fetch a reference without a digest straight to ``target`` (via a temp name beside it)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = os.path.join(os.path.dirname(target), f".artfs-tmp-{uuid.uuid4().hex}")
    try:
        reader.download(e, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
