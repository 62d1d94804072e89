"""``artfs warmup``: fill the local cache with a version's blobs ahead of a job (as ``juicefs warmup``).

A training job's workers open thousands of small files cold; each first open through the mount
costs a store round trip on the reader's critical path. Warming the cache first moves every
fetch off that path and runs them at full parallelism: many blobs at once, each fetched whole
into a temp file, verified, and renamed into the cache (the same :meth:`Cache.ensure` every
reader uses, so a concurrent mount or ``artfs get`` sees either nothing or the whole verified
blob). A mount then opens these files from the cache (in passthrough where the kernel allows).

What is fetched: every distinct digest among the selected entries that the cache lacks, stored
blobs and references with a content digest alike (references read exactly as recorded, like
``Artifact.download``). References without a digest have nothing to cache under and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ._layout import blob_key
from ._errors import NotFound
from ._manifest import Entry
from ._names import check_path
from ._parallel import pmap
from ._refs import RefReader

#: blobs fetched at once: store round trips overlap, the disk absorbs the rest
DEFAULT_THREADS = 16


@dataclass(frozen=True)
class WarmupResult:
    files: int  # entries selected
    blobs: int  # distinct blobs among them (with a digest)
    fetched: int  # blobs that were missing and are now in the cache
    fetched_bytes: int
    cached_bytes: int  # bytes of the selected blobs that were already cached


def select(entries: Iterable[Entry], paths: Iterable[str] = ()) -> list[Entry]:
    """The entries under any of ``paths`` (files or directories); all of them without paths."""
    prefixes = [check_path(p.strip("/")) for p in paths if p.strip("/")]
    chosen = [e for e in entries
              if not prefixes or any(e.path == p or e.path.startswith(p + "/") for p in prefixes)]
    if prefixes and not chosen:
        raise NotFound(f"no file or directory {', '.join(map(repr, prefixes))} in this version")
    return chosen


def warmup(artifact: Any, paths: Iterable[str] = (), *, threads: int = DEFAULT_THREADS,
           progress: Callable[[int], None] | None = None, allow_file: bool = False,
           file_roots: list[str] | tuple[str, ...] = ()) -> WarmupResult:
    """Fetch the blobs of ``artifact`` (a logged :class:`Artifact`) under ``paths`` into the cache.

    Raises what a download raises (StoreUnavailable, CorruptData, ReferenceChanged, ...); blobs
    fetched before the error stay cached. ``progress`` gets the bytes of each blob as it is done.
    """
    store, manifest = artifact.logged_in()
    cache = store.cache
    project = artifact.project or ""
    entries = select(manifest.entries, paths)
    blobs: dict[str, Entry] = {}
    for e in entries:
        if e.digest is not None and e.digest not in blobs:
            blobs[e.digest] = e
    todo = [e for d, e in blobs.items() if not cache.has(d)]
    cached_bytes = sum(e.size for d, e in blobs.items() if d not in {t.digest for t in todo})
    if progress and cached_bytes:
        progress(cached_bytes)
    reader = RefReader(allow_file=allow_file, file_roots=file_roots) if any(e.ref for e in todo) else None

    def one(e: Entry) -> int:
        digest = e.digest
        assert digest is not None
        if reader is not None and e.ref is not None:
            def fetch(t: str) -> object:
                return reader.download(e, t)
        else:
            def fetch(t: str) -> object:
                return store.backend.download_file(blob_key(project, digest), t)
        cache.ensure(digest, fetch)
        if progress:
            progress(e.size)
        return e.size

    try:
        sizes = pmap(one, todo, max(1, threads))
    finally:
        if reader is not None:
            reader.close()
    if todo:
        cache.cleanup()  # keep the cache's bound (what did not fit is evicted, least recent first)
    return WarmupResult(files=len(entries), blobs=len(blobs), fetched=len(todo), fetched_bytes=sum(sizes),
                        cached_bytes=cached_bytes)
