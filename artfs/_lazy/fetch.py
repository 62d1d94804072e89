"""Fetch jobs of chunks: registering them, running them on the pool, and what a finished job
leaves (the pool and the jobs themselves are :mod:`artfs._fetchpool`).
"""

from __future__ import annotations

import os

import logging

from .._errors import ArtfsError, CorruptData, NotFound, StoreUnavailable
from .._fetchpool import _DEMAND, _Dropped, _Job
from .._partial import _HDR, _Entry, _pwrite_full

from .stream import _Streaming
from .verify import _Verifying

log = logging.getLogger("artfs.lazy")


class _Fetching(_Streaming, _Verifying):
    """Chunks fetched into an entry by jobs on the pool; one job in flight per chunk (the registry)."""

    def _new_job(self, e: _Entry, c0: int, c1: int, prio: int, reserved: int) -> _Job:
        """Register a fetch of chunks ``[c0, c1)`` (caller holds ``e.lock``)."""
        job = _Job(c0, c1, prio, e.gen, e.fd, e.map_fd, reserved)
        self._flights.add(e.digest, e.gen, job)
        e.jobs += 1
        return job

    def _submit(self, e: _Entry, job: _Job) -> None:
        self._activity(+1)
        try:
            self._pool.submit(job.prio, lambda: self._run_job(e, job))
        except BaseException as ex:
            self._finish_job(e, job, ex, False)

    def _run_job(self, e: _Entry, job: _Job) -> None:
        err: BaseException | None = None
        verify = False
        try:
            if self._closed:
                raise StoreUnavailable(f"the lazy reader was closed before {e.digest} was fetched")
            if job.gen != e.gen or (job.prio != _DEMAND and e.refs == 0):
                raise _Dropped()
            cs = e.cs
            off = job.c0 * cs
            n = min(e.size, job.c1 * cs) - off
            data: bytes | None = None
            try:
                if e.fetch is None:  # straight into the partial file (in the kernel for a local store)
                    got = self.store.backend.fetch_range_into(e.key, off, n, job.fd, off)
                else:
                    data = e.fetch(off, n)
                    got = len(data)
            except NotFound as ex:  # listed in a manifest, gone from the store: EIO, not ENOENT
                if e.fetch is not None:  # a pinned reference whose target is gone
                    raise CorruptData(f"{ex} (a file listed in the version; its bytes are gone)") from None
                raise CorruptData(
                    f"blob {e.digest} (project {e.project}) is missing from {self.store.url} although a "
                    f"manifest lists it: {ex}") from None
            except ArtfsError as ex:
                if e.fetch is not None:
                    raise  # a reference (open_ref): the reader's message names the entry and its URI
                raise type(ex)(f"fetching {e.digest} (project {e.project}) from {self.store.url}: {ex}") from None
            except OSError as ex:  # writing into the partial file (a full disk, ...)
                raise ArtfsError(f"fetching {e.digest} (project {e.project}) from {self.store.url} into the cache: {ex}") from None
            except Exception as ex:  # a backend bug or library error: still an artfs error
                raise StoreUnavailable(f"fetching {e.digest} (project {e.project}) from {self.store.url}: {ex!r}") from None
            self._count("fetched_bytes", got)
            if got != n:
                raise CorruptData(
                    f"the store returned {got} bytes of {e.digest} at offset {off}, expected {n}"
                    " (the blob is shorter than its manifest says)"
                )
            try:
                if data is not None:
                    _pwrite_full(job.fd, data, off)
                    del data
                os.pwrite(job.map_fd, b"\x01" * (job.c1 - job.c0), _HDR.size + job.c0)  # after the data
            except OSError as ex:
                raise ArtfsError(f"writing fetched chunks of {e.digest} to the cache: {ex}") from None
            bad: str | None = None
            with e.lock:
                if job.gen == e.gen:
                    st = e.stream
                    for i in range(job.c0, job.c1):
                        if not e.present[i]:
                            e.present[i] = 1
                            e.npresent += 1
                            if st is not None:
                                st.resident.append(i)
                                st.nbytes += min(e.size, (i + 1) * e.cs) - i * e.cs
                    if st is not None:
                        bad = self._stream_advance(e)
                    elif e.npresent == e.nchunks and not e.complete and not e.finalizing and e.verify:
                        e.finalizing = verify = True
            if bad is not None:
                raise CorruptData(
                    f"blob {e.digest} (project {e.project}) streamed from {self.store.url} does not match its "
                    f"digest (got {bad}); dropped what was fetched, reads will fetch it again")
        except BaseException as ex:
            err = ex
            if not isinstance(ex, _Dropped):
                log.warning("%s", ex)
        self._finish_job(e, job, err, verify)

    def _finish_job(self, e: _Entry, job: _Job, err: BaseException | None, verify: bool) -> None:
        with e.lock:
            self._flights.remove(e.digest, job.gen, job)
            e.jobs -= 1
        job.finish(err)
        if job.reserved:
            with self._busy:
                self._pf_bytes -= job.reserved
        if verify:
            self._start_finalize(e)
        self._maybe_free(e)
        self._activity(-1)
