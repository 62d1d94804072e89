"""The fetch jobs of :mod:`artfs._lazy` and the worker pool that runs them.

A :class:`_Job` is one range GET covering a run of chunks of one entry; every reader of those
chunks waits on its ``done`` event (so within a process each chunk has at most one fetch in
flight). :class:`_Pool` runs jobs on up to ``max_workers`` threads, started lazily, by priority:
demand reads (``_DEMAND``) before read-ahead (``_PREFETCH``). Read-ahead jobs request at most
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
_DEMAND, _PREFETCH, _STOP = 0, 1, 9  # job priorities


class _Job:
    """One range GET covering chunks ``[c0, c1)``; readers of those chunks wait on ``done``."""

    __slots__ = ("c0", "c1", "prio", "gen", "fd", "map_fd", "reserved", "done", "error")

    def __init__(self, c0: int, c1: int, prio: int, gen: int, fd: int, map_fd: int, reserved: int) -> None:
        self.c0, self.c1, self.prio, self.gen = c0, c1, prio, gen
        self.fd, self.map_fd, self.reserved = fd, map_fd, reserved
        self.done = threading.Event()
        self.error: BaseException | None = None


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
