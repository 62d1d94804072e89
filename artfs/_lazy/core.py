"""The state every part of :class:`artfs._lazy.LazyBlobs` shares: its settings, the open entries,
the one registry of fetches in flight, the worker pool, and the bookkeeping of entries and running work (the invariants are in the
package's docstring, :mod:`artfs._lazy`).
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING

from .._fetchpool import _InFlight, _Pool
from .._mountconfig import DEFAULT_TIMEOUT
from .._partial import _Entry

if TYPE_CHECKING:
    from .._store import Store


#: blobs up to this size are fetched whole in one request when opened (``LazyBlobs(small_max=...)``)
SMALL = 1 << 20


class _Core:
    """Settings, entries and the pool of a :class:`~artfs._lazy.LazyBlobs`; the release of entries."""

    def __init__(self, store: "Store", *, chunk_size: int = 1 << 20, max_workers: int = 16,
                 timeout: float = DEFAULT_TIMEOUT, readahead_max: int = 64 << 20, direct_max: int | None = None,
                 small_max: int = SMALL) -> None:
        if chunk_size <= 0 or timeout <= 0:
            raise ValueError("chunk_size and timeout must be positive")
        self.store = store
        self.chunk_size = int(chunk_size)
        self.max_workers = max(1, int(max_workers))
        self.timeout = float(timeout)
        self.readahead_max = int(readahead_max)
        # random reads up to this size are fetched exactly, not by chunks ("Random reads" above)
        self.direct_max = self.chunk_size if direct_max is None else int(direct_max)
        # a run of adjoining reads after a random one is the rest of that read up to this length,
        # a sequential reader beyond it (BlobHandle._continues; what the kernel asks for a 1 MiB
        # random read is shorter)
        self.run_min = max(2 * self.chunk_size, 2 << 20)
        # blobs up to this size are fetched whole in one GET when opened, never chunk by chunk
        self.small_max = int(small_max)
        # joined_fetches: reads (and opens) that waited for a fetch already in flight, not their own
        self.stats = {"fetched_bytes": 0, "direct_reads": 0, "small_fetches": 0, "prefetched": 0,
                      "prefetch_errors": 0, "joined_fetches": 0}
        self._stats_lock = threading.Lock()
        self.prefetch_limit = max(2 * self.readahead_max, 2 * self.chunk_size)
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        # handles of complete blobs, which have no entry (BlobHandle's own descriptor), by digest:
        # only for open_digests; its own lock, never held across I/O (taken on the mount's loop)
        self._held: collections.Counter[str] = collections.Counter()
        self._held_lock = threading.Lock()
        self._flights = _InFlight()  # every fetch into the cache in flight (artfs._fetchpool)
        self._pool = _Pool(self.max_workers)
        self._busy = threading.Condition()
        self._active = 0  # jobs and verifications not finished (for drain)
        self._pf_bytes = 0  # read-ahead bytes queued or in flight
        self._closed = False
        # Blobs larger than half the cache's bound are streamed through a private window of a
        # quarter of the bound (4 chunks to 2 read-ahead windows) instead of being cached whole:
        # one big read must neither fail on a small cache disk nor push every other file out.
        bound = getattr(store.cache, "max_size", None)
        self.stream_over: int | None = bound // 2 if bound else None
        self.stream_window = max(4 * self.chunk_size, min(bound // 4 if bound else 0, 2 * self.readahead_max))

    def _release(self, e: _Entry) -> None:
        with e.lock:
            e.refs -= 1
        self._maybe_free(e)

    def _maybe_free(self, e: _Entry) -> None:
        with self._lock:
            with e.lock:
                if e.refs > 0 or e.jobs > 0 or self._entries.get(e.digest) is not e:
                    return
                del self._entries[e.digest]
                e.close_fds()

    def _count(self, what: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[what] += n

    def _hold(self, digest: str, delta: int) -> None:
        with self._held_lock:
            self._held[digest] += delta
            if self._held[digest] <= 0:
                del self._held[digest]

    def _activity(self, delta: int) -> None:
        with self._busy:
            self._active += delta
            if self._active == 0:
                self._busy.notify_all()
