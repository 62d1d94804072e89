"""Small files: fetched whole at open, and a directory's small files fetched ahead of its reader.

A training epoch opens thousands of small files in random order. Through the chunked lazy
reader each cold file costs a partial cache file, a chunk map under ``flock``, a range GET, a
verification pass and a rename, plus a thread hop for the open and another for the read. For a
blob of at most :data:`SMALL` bytes none of that machinery pays: :meth:`SmallBlobs.ensure` GETs
it whole in one request, and the cache verifies it (size and digest) before it appears under its
final name. The open then finds a complete blob, so its reads are served from the page cache on
the event loop or, where the kernel allows, by passthrough without reaching the daemon.

Read-ahead for directories: the first cold open of a small file in a version directory starts
one background task that fetches that directory's other small files the cache lacks, many at
once (:data:`PREFETCH_THREADS`), within a byte budget (a quarter of the cache's bound, at most
:data:`PREFETCH_MAX_BYTES`) so that prefetching never evicts what the reader is using. A reader
that opens a file being prefetched waits for that fetch instead of starting a second one: at
most one fetch per blob is in flight in this daemon (other processes may fetch the same blob at
once; the cache's temp-and-rename keeps that safe, only wasteful).

Invariant: nothing here makes a blob visible in the cache except :meth:`Cache.ensure`, which
verifies before the rename; a failed or corrupted fetch leaves no cache file, and the reader's
own open reports it (EIO with a log line).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import trio

from artfs import CorruptData, NotFound
from artfs.lowlevel import blob_key

log = logging.getLogger("artfsd")

#: blobs up to this size are fetched whole at open (one GET), never chunk by chunk
SMALL = 1 << 20
#: small blobs of one directory fetched at once, ahead of the reader
PREFETCH_THREADS = 16
PREFETCH_MAX_BYTES = 4 << 30


class SmallBlobs:
    """Whole fetches of small blobs into the cache; one in flight per blob (thread-safe)."""

    def __init__(self, store: Any, *, timeout: float) -> None:
        self.store = store
        self.timeout = timeout
        self._lock = threading.Lock()
        self._inflight: dict[str, threading.Event] = {}
        self._started: set[tuple[Any, int]] = set()  # (version key, directory) prefetched once
        self.stats = {"small_fetches": 0, "prefetched": 0, "prefetch_errors": 0}

    def ensure(self, project: str, digest: str, size: int) -> None:
        """Make the blob complete in the cache (blocking). Raises what the fetch raised."""
        cache = self.store.cache
        if cache.has(digest):
            return
        with self._lock:
            ev = self._inflight.get(digest)
            mine = ev is None
            if ev is None:
                ev = self._inflight[digest] = threading.Event()
        if not mine:
            ev.wait(self.timeout)
            if cache.has(digest):
                return
            # the other fetch failed or is slow: fetch ourselves (its error was its own)
        try:
            def fetch(tmp: str) -> None:
                try:
                    data = self.store.backend.get(blob_key(project, digest))
                except NotFound:  # listed in a manifest, gone from the store: EIO, not ENOENT
                    raise CorruptData(
                        f"blob {digest} (project {project}) is missing from {self.store.url} although a "
                        "version lists it") from None
                if len(data) != size:
                    raise CorruptData(f"{digest}: the store has {len(data)} bytes, the manifest says {size}")
                with open(tmp, "wb") as f:
                    f.write(data)

            cache.ensure(digest, fetch)
            self.stats["small_fetches"] += 1
        finally:
            if mine:
                with self._lock:
                    self._inflight.pop(digest, None)
                ev.set()

    def want_prefetch(self, vkey: Any, d: int) -> bool:
        """True once per (version, directory): the caller starts :meth:`prefetch_dir`."""
        with self._lock:
            if (vkey, d) in self._started:
                return False
            self._started.add((vkey, d))
            return True

    async def prefetch_dir(self, project: str, files: list[tuple[str, int]]) -> None:
        """Fetch ``files`` ((digest, size), small ones) the cache lacks, many at once, in the background."""
        cache = self.store.cache
        budget = min(PREFETCH_MAX_BYTES, cache.max_size // 4)
        todo: list[tuple[str, int]] = []
        seen: set[str] = set()
        for digest, size in files:
            if digest in seen or size > budget:
                continue
            seen.add(digest)
            budget -= size
            todo.append((digest, size))
        todo = await trio.to_thread.run_sync(lambda: [t for t in todo if not cache.has(t[0])])
        it = iter(todo)

        async def worker() -> None:
            for digest, size in it:  # one iterator shared by the workers: each blob taken once
                try:
                    await trio.to_thread.run_sync(self.ensure, project, digest, size, abandon_on_cancel=True)
                    self.stats["prefetched"] += 1
                except Exception as e:  # the reader's own open will report it
                    self.stats["prefetch_errors"] += 1
                    log.debug("prefetch of %s: %s", digest, e)

        async with trio.open_nursery() as n:
            for _ in range(min(PREFETCH_THREADS, len(todo))):
                n.start_soon(worker)


def small_files_of(tree: Any, d: int) -> list[tuple[str, int]]:
    """(digest, size) of the small stored files directly in directory ``d`` of a version tree."""
    out = []
    for i in tree.slots(d):
        node = tree.slot_node(i)
        if tree.is_dir(node) or node in tree.refs:
            continue
        size = tree.sizes[node]
        digest = tree.digest(node)
        if digest is not None and 0 < size <= SMALL:
            out.append((digest, size))
    return out


def enabled() -> bool:
    return os.environ.get("ARTFS_PREFETCH", "1") != "0"
