"""Small blobs fetched whole (one GET, verified in memory) and the background prefetch of many.

A blob of at most ``small_max`` bytes (1 MiB) is never fetched chunk by chunk: a partial file,
a chunk map under ``flock``, a range GET, a verification pass and a rename cost more than the
blob. :meth:`_Whole.fetch_whole` GETs it in one request (``Backend.get_blob``; from S3 a plain
signed GET without botocore's per-request machinery) and the cache verifies it in memory (size
and digest) before it appears under its name (``Cache.insert_bytes``). :meth:`LazyBlobs.open`
does that for a small blob missing from the cache, so every caller gets the same rule.

:meth:`_Whole.prefetch` queues such fetches for many blobs (a directory's small files, which a
training job's random-order epoch reads next) on the worker pool at the lowest priority
(``_BACKGROUND``: demand reads and read-ahead go first), within a byte budget (a quarter of the
cache's bound, at most :data:`PREFETCH_MAX_BYTES`) so prefetching never evicts what readers use.

Whole fetches are registered in the one registry of fetches in flight (:class:`_InFlight`, under
``(digest, 0, WHOLE)``): a reader opening a blob being prefetched waits for that fetch (a thread
on ``done``, the mount's event loop through :meth:`_Whole.flight`) instead of starting another.
Invariant: nothing here makes a blob visible in the cache except ``Cache.insert_bytes``, which
verifies before the rename; a failed or corrupted fetch leaves no cache file, and the reader's
own open reports it.
"""

from __future__ import annotations

import functools
import logging
from typing import Iterable

from .._errors import CorruptData, NotFound
from .._fetchpool import _BACKGROUND, _DEMAND, _Job
from .._layout import blob_key

from .reads import _Reads

log = logging.getLogger("artfs.lazy")

#: the most bytes one prefetch (of a directory) fetches ahead of its reader
PREFETCH_MAX_BYTES = 4 << 30


class _Whole(_Reads):
    """Whole fetches of small blobs into the cache, on demand and ahead of readers."""

    def fetch_whole(self, project: str, digest: str, size: int, *, wait: bool = True) -> bool:
        """Make the small blob complete in the cache (blocking); True if this call fetched it.

        A fetch of the same blob in flight here is waited for (at most ``timeout``; then, or if
        it failed, this call fetches it itself). ``wait=False``: return False at once instead
        (the prefetch). Raises what the fetch raised (CorruptData for a blob missing from the
        store or of another size than the manifest's).
        """
        cache = self.store.cache
        if wait and cache.has(digest):  # (the prefetch looks once, below, with the flight taken)
            return False
        job, mine = self._flights.claim_whole(digest, _DEMAND if wait else _BACKGROUND)
        if not mine:
            if not wait:
                return False
            self._count("joined_fetches")
            job.done.wait(self.timeout)
            if cache.has(digest):
                return False
            # the other fetch failed or is slow: fetch ourselves (its error was its own)
        err: BaseException | None = None
        try:
            if mine and cache.has(digest):  # landed between our first look and taking the flight
                return False
            try:
                data = self.store.backend.get_blob(blob_key(project, digest))
            except NotFound:  # listed in a manifest, gone from the store: EIO, not ENOENT
                raise CorruptData(f"blob {digest} (project {project}) is missing from {self.store.url} although "
                                  "a version lists it") from None
            self._count("fetched_bytes", len(data))
            if len(data) != size:
                raise CorruptData(f"{digest}: the store has {len(data)} bytes, the manifest says {size}")
            cache.insert_bytes(digest, data)  # verified (digest) before it appears under its name
            self._count("small_fetches")
            return True
        except BaseException as ex:
            err = ex
            raise
        finally:
            if mine:
                self._flights.remove(digest, 0, job)
                job.finish(err)

    def flight(self, digest: str) -> _Job | None:
        """The whole fetch of ``digest`` in flight here, if any: the caller waits on it (``done``,
        or :meth:`_Job.on_done` from a loop that must not block) rather than fetch it again."""
        job = self._flights.whole(digest)
        if job is not None:
            self._count("joined_fetches")
        return job

    def prefetch(self, project: str, files: Iterable[tuple[str, int]]) -> int:
        """Fetch ``files`` ((digest, size) of small blobs) the cache lacks, in the background.

        Queued on the worker pool behind every read; a blob a reader fetches already is skipped,
        one that fails is left to the reader's own open, which reports it. Returns how many were
        queued. :meth:`drain` waits for them; :meth:`close` drops those not started.
        """
        budget = min(PREFETCH_MAX_BYTES, self.store.cache.max_size // 4)
        seen: set[str] = set()
        queued = 0
        for digest, size in files:
            if digest in seen or not 0 < size <= self.small_max or size > budget:
                continue
            seen.add(digest)
            budget -= size
            self._activity(+1)
            try:
                self._pool.submit(_BACKGROUND, functools.partial(self._prefetch_one, project, digest, size))
            except Exception:  # closed: nothing more to queue
                self._activity(-1)
                break
            queued += 1
        return queued

    def _prefetch_one(self, project: str, digest: str, size: int) -> None:
        try:
            if not self._closed and self.fetch_whole(project, digest, size, wait=False):
                self._count("prefetched")
        except Exception as e:  # the reader's own open will report it
            self._count("prefetch_errors")
            log.debug("prefetch of %s: %s", digest, e)
        finally:
            self._activity(-1)
