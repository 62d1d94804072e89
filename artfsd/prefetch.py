"""Small files: fetched whole at open, and a directory's small files fetched ahead of its reader.

A training epoch opens thousands of small files in random order. Through the chunked lazy
reader each cold file costs a partial cache file, a chunk map under ``flock``, a range GET, a
verification pass and a rename, plus a thread hop for the open and another for the read. For a
blob of at most :data:`SMALL` bytes none of that machinery pays: :meth:`SmallBlobs.ensure` GETs
it whole in one request (``S3Backend.get_blob``: without botocore's per-request machinery), and
the cache verifies it in memory (size and digest) before it appears under its final name
(``Cache.insert_bytes``). The open then finds a complete blob and takes it on the event loop
(:mod:`artfsd.complete`), so its reads are served by passthrough without reaching the daemon or,
without passthrough, from the page cache on the event loop.

Read-ahead for directories: the first cold open of a small file in a version directory starts
one background task that fetches that directory's other small files the cache lacks, many at
once (:data:`PREFETCH_THREADS` threads working through one queue), within a byte budget (a
quarter of the cache's bound, at most :data:`PREFETCH_MAX_BYTES`) so that prefetching never
evicts what the reader is using. A reader that opens a file being prefetched waits for that
fetch instead of starting a second one (on the event loop: :meth:`SmallBlobs.wait`): at most one
fetch per blob is in flight in this daemon (other processes may fetch the same blob at once; the
cache's temp-and-rename keeps that safe, only wasteful).

Invariant: nothing here makes a blob visible in the cache except :meth:`Cache.insert_bytes`,
which verifies before the rename; a failed or corrupted fetch leaves no cache file, and the
reader's own open reports it (EIO with a log line).
"""

from __future__ import annotations

import collections
import functools
import logging
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


class _Flight:
    """One fetch in flight: threads wait on ``done``; tasks on the loop register ``waiters``."""

    __slots__ = ("done", "waiters")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.waiters: list[trio.Event] = []


class SmallBlobs:
    """Whole fetches of small blobs into the cache; one in flight per blob (thread-safe)."""

    def __init__(self, store: Any, *, timeout: float) -> None:
        self.store = store
        self.timeout = timeout
        self._lock = threading.Lock()
        self._inflight: dict[str, _Flight] = {}
        self._token: trio.lowlevel.TrioToken | None = None  # of the loop whose tasks wait (wait())
        self._started: set[tuple[Any, int]] = set()  # (version key, directory) prefetched once
        self.stats = {"small_fetches": 0, "prefetched": 0, "prefetch_errors": 0}

    def _add(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    def ensure(self, project: str, digest: str, size: int, *, wait: bool = True) -> bool:
        """Make the blob complete in the cache (blocking); True if this call fetched it.

        A fetch of the same blob in flight in this daemon is waited for (``wait=False``: return
        False at once instead, as the prefetch does). Raises what the fetch raised.
        """
        cache = self.store.cache
        if wait and cache.has(digest):  # (the prefetch looks once, below, with the flight taken)
            return False
        with self._lock:
            fl = self._inflight.get(digest)
            mine = fl is None
            if fl is None:
                fl = self._inflight[digest] = _Flight()
        if not mine:
            if not wait:
                return False
            fl.done.wait(self.timeout)
            if cache.has(digest):
                return False
            # the other fetch failed or is slow: fetch ourselves (its error was its own)
        try:
            if mine and cache.has(digest):  # landed between our first look and taking the flight
                return False
            backend = self.store.backend
            try:
                data = backend.get_blob(blob_key(project, digest))  # S3: one GET without botocore's path
            except NotFound:  # listed in a manifest, gone from the store: EIO, not ENOENT
                raise CorruptData(
                    f"blob {digest} (project {project}) is missing from {self.store.url} although a "
                    "version lists it") from None
            if len(data) != size:
                raise CorruptData(f"{digest}: the store has {len(data)} bytes, the manifest says {size}")
            cache.insert_bytes(digest, data)  # verified (digest) before it appears under its name
            self._add("small_fetches")
            return True
        finally:
            if mine:
                self._land(digest, fl)

    def _land(self, digest: str, fl: _Flight) -> None:
        """The fetch of ``digest`` ended (either way): wake its waiters, threads and tasks."""
        with self._lock:
            self._inflight.pop(digest, None)
            waiters, fl.waiters = fl.waiters, []
            token = self._token
        fl.done.set()
        for ev in waiters:
            assert token is not None
            try:
                token.run_sync_soon(ev.set)
            except trio.RunFinishedError:  # the loop is gone (unmounted): nobody waits any more
                break

    async def wait(self, digest: str) -> bool:
        """On the loop: wait (at most ``timeout``) for a fetch of ``digest`` in flight in this
        daemon, without a worker thread; False at once if none is."""
        with self._lock:
            fl = self._inflight.get(digest)
            if fl is None:
                return False
            if self._token is None:
                self._token = trio.lowlevel.current_trio_token()
            ev = trio.Event()
            fl.waiters.append(ev)
        with trio.move_on_after(self.timeout):
            await ev.wait()
        return True

    def want_prefetch(self, vkey: Any, d: int) -> bool:
        """True once per (version, directory): the caller starts :meth:`prefetch_dir`."""
        with self._lock:
            if (vkey, d) in self._started:
                return False
            self._started.add((vkey, d))
            return True

    async def prefetch_dir(self, project: str, files: list[tuple[str, int]]) -> None:
        """Fetch ``files`` ((digest, size), small ones) the cache lacks, many at once, in the background.

        :data:`PREFETCH_THREADS` worker threads take the blobs one after the other from one
        queue: one hand-off to a thread per worker, not per blob. A blob a reader is fetching
        already is skipped; one that fails is left to the reader's own open, which reports it.
        """
        cache = self.store.cache
        budget = min(PREFETCH_MAX_BYTES, cache.max_size // 4)
        todo: collections.deque[tuple[str, int]] = collections.deque()
        seen: set[str] = set()
        for digest, size in files:
            if digest in seen or size > budget:
                continue
            seen.add(digest)
            budget -= size
            todo.append((digest, size))
        stop = threading.Event()  # set when the task ends (cancelled at unmount): the threads stop

        def worker() -> None:
            while not stop.is_set():
                try:
                    digest, size = todo.popleft()  # atomic: each blob taken by one worker
                except IndexError:
                    return
                try:
                    if self.ensure(project, digest, size, wait=False):
                        self._add("prefetched")
                except Exception as e:  # the reader's own open will report it
                    self._add("prefetch_errors")
                    log.debug("prefetch of %s: %s", digest, e)

        try:
            async with trio.open_nursery() as n:
                for _ in range(min(PREFETCH_THREADS, len(todo))):
                    n.start_soon(functools.partial(trio.to_thread.run_sync, worker, abandon_on_cancel=True))
        finally:
            stop.set()


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
