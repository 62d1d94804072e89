"""The fetch jobs of :mod:`artfs._lazy`, the one registry of those in flight, and the worker pool.

A :class:`_Job` is one fetch into the cache: a range GET covering a run of chunks of one entry,
or a small blob fetched whole (one GET). Every reader of what it fetches waits on its ``done``
event, or (the mount's event loop, which must not block) registers a callback
(:meth:`_Job.on_done`). :class:`_InFlight` is the one registry of the jobs running in a
:class:`~artfs._lazy.LazyBlobs`, keyed by what they fetch, so within a process each chunk and
each whole blob has at most one fetch in flight, whichever path asked for it (a read, read-ahead,
a directory's prefetch). :class:`_Pool` runs jobs on up to ``max_workers`` threads, started
lazily, by priority: demand reads (``_DEMAND``) before read-ahead (``_PREFETCH``) before the
background prefetch of small files (``_BACKGROUND``). Read-ahead jobs request at most
``MAX_REQUEST`` bytes each. A job's error is handed to each waiting reader as a fresh exception
(:func:`_fresh`): one exception instance must not be raised in several threads.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from typing import Any, Callable

from ._errors import ArtfsError, StoreUnavailable

log = logging.getLogger("artfs.lazy")

# Largest range GET of a read-ahead job. A sequential reader's 64 MiB window is then fetched by 4
# requests in flight: on the cold 1 GiB read from s3rver (one node.js process sharing 2 CPUs with
# the daemon and the reader) 16 MiB x 4 read at 0.19-0.23 GB/s, 8 MiB x 8 at 0.16-0.19 (boto3
# 0.19-0.31 in the same runs): half the requests, and each costs the server CPU of its own.
MAX_REQUEST = 16 << 20
_DEMAND, _PREFETCH, _BACKGROUND, _STOP = 0, 1, 2, 9  # job priorities
WHOLE = -1  # the chunk index under which a whole-blob fetch is registered (:class:`_InFlight`)

_callbacks_lock = threading.Lock()  # guards every job's callbacks against its finish


class _Job:
    """One fetch: chunks ``[c0, c1)`` of an entry (a range GET), or a whole blob (``c0 == c1 == 0``).

    Readers wait on ``done`` (threads) or :meth:`on_done` (a loop that must not block); whoever
    ran it calls :meth:`finish` once, with the error it ended with, if any.
    """

    __slots__ = ("c0", "c1", "prio", "gen", "fd", "map_fd", "reserved", "done", "error", "_callbacks")

    def __init__(self, c0: int, c1: int, prio: int, gen: int, fd: int, map_fd: int, reserved: int) -> None:
        self.c0, self.c1, self.prio, self.gen = c0, c1, prio, gen
        self.fd, self.map_fd, self.reserved = fd, map_fd, reserved
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = []

    def on_done(self, fn: Callable[[], None]) -> bool:
        """Call ``fn()`` (in the thread that finishes the job) once it is done; False if it is already."""
        with _callbacks_lock:
            if self.done.is_set():
                return False
            self._callbacks.append(fn)
            return True

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        with _callbacks_lock:
            self.done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception:  # a waiter's own failure (its loop ended): not the job's
                log.debug("a callback of a finished fetch failed", exc_info=True)


class _InFlight:
    """Every fetch into the cache running in one :class:`~artfs._lazy.LazyBlobs`, by what it fetches.

    Keys: ``(digest, gen, i)`` for chunk ``i`` of the entry of ``digest`` in its generation
    ``gen`` (a job of ``c1 - c0`` chunks is registered under each; a reset entry starts a new
    generation, so the jobs of the old one are simply never found again), and
    ``(digest, 0, WHOLE)`` for a small blob fetched whole. Whoever needs what a job fetches waits
    for it instead of fetching it again. Chunk keys are added and looked up under their entry's
    lock (which orders them); the registry's own lock makes each call atomic.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, int, int], _Job] = {}

    def get(self, digest: str, gen: int, i: int) -> _Job | None:
        return self._jobs.get((digest, gen, i))

    def add(self, digest: str, gen: int, job: _Job) -> None:
        with self._lock:
            for i in range(job.c0, job.c1):
                self._jobs[(digest, gen, i)] = job

    def remove(self, digest: str, gen: int, job: _Job) -> None:
        """Forget ``job`` (finished); keys another job took over stay."""
        with self._lock:
            for i in range(job.c0, job.c1) if job.c1 > job.c0 else (WHOLE,):
                k = (digest, gen, i)
                if self._jobs.get(k) is job:
                    del self._jobs[k]

    def claim_whole(self, digest: str, prio: int) -> tuple[_Job, bool]:
        """The whole-blob fetch of ``digest`` in flight, or a new one registered; whether it is new."""
        k = (digest, 0, WHOLE)
        with self._lock:
            job = self._jobs.get(k)
            if job is not None:
                return job, False
            job = self._jobs[k] = _Job(0, 0, prio, 0, -1, -1, 0)
            return job, True

    def whole(self, digest: str) -> _Job | None:
        """The whole-blob fetch of ``digest`` in flight, if any."""
        return self._jobs.get((digest, 0, WHOLE))

    def __len__(self) -> int:
        return len(self._jobs)


class _Pool:
    """Worker threads running jobs by priority (demand reads before read-ahead), started lazily."""

    def __init__(self, n: int) -> None:
        self._n = max(1, n)
        self._q: queue.PriorityQueue[Any] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, prio: int, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the lazy reader is closed")
            self._q.put((prio, next(self._seq), fn))
            if self._q.qsize() > self._idle and len(self._threads) < self._n:
                t = threading.Thread(target=self._run, name=f"artfs-lazy-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            _, _, fn = self._q.get()
            with self._lock:
                self._idle -= 1
            if fn is None:
                return
            try:
                fn()
            except BaseException:  # jobs report their own errors; never kill a worker
                log.exception("lazy reader job failed")

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._q.put((_STOP, next(self._seq), None))
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


def _fresh(err: BaseException) -> BaseException:
    """A new exception like ``err``: one instance must not be raised in several threads."""
    if isinstance(err, ArtfsError):
        with contextlib.suppress(Exception):
            return type(err)(*err.args)
        return ArtfsError(str(err))
    return StoreUnavailable(f"{err!r}")


class _Dropped(StoreUnavailable):
    """A read-ahead job skipped because nobody needs it any more (never reaches a reader as such)."""

    def __init__(self) -> None:
        super().__init__("read-ahead dropped")
