"""Reads: an open file's handle (:class:`BlobHandle`) and the policy that serves its reads: waiting
for the chunks of a read, read-ahead of sequential readers, and random reads fetched exactly
("Read-ahead" and "Random reads" in :mod:`artfs._lazy`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import threading
import time
from typing import Callable

from .._errors import ArtfsError, CorruptData, NotFound, StoreUnavailable
from .._fetchpool import MAX_REQUEST, _DEMAND, _PREFETCH, _Dropped, _fresh, _Job
from .._partial import _Entry, _pread_full, _Stream

from .fetch import _Fetching


_fallback_lock = threading.Lock()  # a handle's switch from its own descriptor to the entry (rare)


class BlobHandle:
    """One open file's view of a blob: the one handle of an open file, with one descriptor of it.

    ``read`` is blocking and thread-safe; :meth:`readinto_nowait` never blocks. Two kinds, one face:

    * **a complete, verified blob** (:meth:`LazyBlobs.open_complete`, or :meth:`LazyBlobs.open`
      finding it complete): the handle holds its own descriptor from
      :meth:`artfs._cache.Cache.open_verified` (with its shared ``flock``) and no entry, so
      nothing of the reader is locked to open, read or close it (the mount does all three on its
      event loop);
    * **any other blob**: the shared entry of the blob (:class:`artfs._partial._Entry`, one
      descriptor for every handle of it), its chunks fetched on demand; once the entry is
      complete, its descriptor is the blob's.

    :attr:`fd` is the complete blob's descriptor (-1 while it is not complete): what the mount
    hands the kernel for passthrough. If a read of its own descriptor fails or comes back short,
    the handle switches to the entry, which checks the blob again (hashes, drops, fetches) and
    reports what is wrong; the old descriptor stays open until :meth:`close`, since a read in
    another thread may still be using it.
    """

    uncached = False  # read through the cache (an unpinned reference's reader says True)

    def __init__(self, lb: "_Reads", project: str, digest: str, size: int, *, entry: _Entry | None = None,
                 fd: int = -1) -> None:
        self._lb = lb
        self._e: _Entry | None = entry
        self._fd = fd  # our own descriptor of the complete blob (no entry), else -1
        self._old = -1  # our descriptor replaced by the entry after a failed read: closed at close()
        self._held = fd >= 0  # counted in LazyBlobs.open_digests while open
        self._closed = False
        self._gen = entry.gen if entry is not None else 0
        self.project, self.digest, self.size = project, digest, size
        # read-ahead state (guarded by the entry's lock)
        self._last_end = -1  # end of the furthest sequential read, -1 before the first read
        self._last_c0 = -1
        self._window = 0  # read-ahead bytes beyond the read, 0 = random access
        self._run_start = 0  # start of the run of adjoining reads since the last random read (_continues)
        self._pf_next = 0  # first chunk not yet considered for read-ahead
        # page-cache read-ahead of bytes already in the cache file (no lock: a race costs a hint)
        self._h_end = 0  # end of the furthest sequential read
        self._h_to = 0  # the cache file is hinted (WILLNEED) up to here

    def __enter__(self) -> "BlobHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fd(self) -> int:
        """The descriptor of the complete, verified blob, or -1 while it is not complete."""
        if self._fd >= 0:
            return self._fd
        e = self._e
        if e is not None and e.complete and e.gen == self._gen and e.stream is None:
            return e.fd
        return -1

    @property
    def blocking_close(self) -> bool:
        """Whether :meth:`close` may wait (for the reader's locks): False for a handle of its own
        descriptor, which the mount closes on its event loop."""
        return self._e is not None

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; fewer only at the end of the blob."""
        fd = self._fd
        if fd >= 0 and offset >= 0:  # our own descriptor of a verified blob
            n = min(length, self.size - offset)
            if n <= 0:
                return b""
            try:
                b = os.pread(fd, n, offset)
            except OSError:
                b = b""
            if len(b) == n:
                self._hint(self.size, fd, offset, offset + n)
                return b
            self._fall_back()  # changed under us or failing: the entry checks it and says what is wrong
        e = self._e
        if e is not None and e.complete and self._gen == e.gen and offset >= 0:  # a verified blob
            n = min(length, e.size - offset)
            if n <= 0:
                return b""
            try:
                b = os.pread(e.fd, n, offset)
            except OSError:
                b = b""  # the slow path reports it as an artfs error
            if len(b) == n:
                self._hint(e.size, e.fd, offset, offset + n)
                return b
        return self._read_slow(offset, length)

    def _fall_back(self) -> _Entry:
        """Switch from our own descriptor to the blob's entry (opened, and so checked, now)."""
        with _fallback_lock:
            e = self._e
            if e is None:
                if self._closed:
                    raise ArtfsError(f"{self.digest}: read from a closed handle")
                e = self._lb._acquire(self.project, self.digest, self.size)
                self._e, self._gen = e, e.gen
                self._old, self._fd = self._fd, -1
            return e

    def will_need(self) -> None:
        """Have the kernel start reading a complete blob into the page cache (a small file, read
        whole right after it is opened: its read then finds the bytes there)."""
        fd = self.fd
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, self.size, os.POSIX_FADV_WILLNEED)
            self._h_to = self.size

    def _hint(self, size: int, fd: int, offset: int, end: int) -> None:
        """Have the kernel read the cache file ahead of a sequential reader (``WILLNEED``).

        Bytes already in the cache file but not in the page cache (a complete blob read again
        after its pages were dropped) would otherwise come from the disk one request at a time
        and, through the mount, one request behind the other: the kernel's own read-ahead of the
        cache file is small. ``readahead_max`` bytes past the read are hinted, the next ones once
        the reader is half-way through them.
        """
        ahead = self._lb.readahead_max
        if ahead <= 0:
            return
        if offset == 0 or self._h_end - (4 << 20) <= offset <= self._h_end + (4 << 20):
            self._h_end = max(self._h_end, end)
        else:  # a random read: no hint
            self._h_end = self._h_to = end
            return
        if self._h_to - end >= ahead // 2:
            return
        start, stop = max(self._h_to, end), min(size, end + ahead)
        self._h_to = stop
        if stop > start:
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, start, stop - start, os.POSIX_FADV_WILLNEED)

    def readinto_nowait(self, offset: int, buf: memoryview) -> int | None:
        """Fill ``buf`` with the bytes at ``offset`` if that cannot block; else None.

        For the mount's event loop, where a thread hop per request costs more than the copy: it
        succeeds only if every chunk of the range is already in the cache, the pages are in the
        page cache (``preadv(RWF_NOWAIT)``) and the entry's lock is free. It never waits for the
        store, the disk or another thread. The read counts for read-ahead like :meth:`read` (a
        sequential reader's next chunks are queued). Returns the number of bytes, fewer than
        ``len(buf)`` only at the end of the blob; None means "call :meth:`read` (in a worker
        thread)", which also reports any error.
        """
        fd = self._fd
        if fd >= 0:  # our own descriptor of a verified blob
            end = min(self.size, offset + len(buf))
            if offset < 0 or offset >= end:
                return None
            try:
                n = os.preadv(fd, [buf[: end - offset]], offset, os.RWF_NOWAIT)
            except OSError:  # EAGAIN: not (all) in the page cache; anything else: read() reports it
                return None
            return n if n == end - offset else None
        e = self._e
        if e is None or offset < 0 or self._gen != e.gen or not hasattr(os, "RWF_NOWAIT") or e.stream is not None:
            return None  # a streamed entry's chunks may be punched out: read() pins them
        end = min(e.size, offset + len(buf))
        if offset >= end:
            return None
        submit: list[_Job] = []
        if e.complete:
            fd, gen = e.fd, e.gen
        else:
            if not e.lock.acquire(blocking=False):
                return None
            try:
                if self._gen != e.gen:
                    return None
                fd, gen = e.fd, e.gen
                if not e.complete:
                    cs = e.cs
                    c0, c1 = offset // cs, (end - 1) // cs + 1
                    if e.present.find(0, c0, c1) >= 0:
                        return None  # not fetched yet: read() waits for it (and plans read-ahead)
                    p0, p1 = self._readahead(e, offset, end, c0, c1 - 1)
                    if p1 > p0:
                        submit = self._lb._plan_prefetch(self, e, c1, p0, p1)
            finally:
                e.lock.release()
            for job in submit:  # every job registered above must run (or fail) to be released
                self._lb._submit(e, job)
        try:
            n = os.preadv(fd, [buf[: end - offset]], offset, os.RWF_NOWAIT)
        except OSError:  # EAGAIN: not (all) in the page cache; anything else: read() reports it
            return None
        if n != end - offset or e.gen != gen:
            return None
        return n

    def _read_slow(self, offset: int, length: int) -> bytes:
        if self._closed:
            raise ArtfsError(f"{self.digest}: read from a closed handle")
        if offset < 0 or length < 0:
            raise ArtfsError(f"invalid read of {self.digest}: offset {offset}, length {length}")
        e = self._e if self._e is not None else self._fall_back()
        end = min(e.size, offset + length)
        if offset >= end:
            self._check_gen(e)
            return b""
        direct = self._lb._read_direct(self, e, offset, end)
        if direct is not None:
            return direct
        fd, gen, pinned = self._lb._ensure(self, e, offset, end)
        try:
            b = _pread_full(fd, end - offset, offset)
        except OSError as ex:
            raise ArtfsError(f"reading the cached copy of {self.digest}: {ex}") from None
        finally:
            if pinned:
                self._lb._unpin(e, gen, offset, end)
        if e.gen != gen:  # dropped as corrupt while we read; do not trust what we got
            self._check_gen(e)
        if len(b) != end - offset:
            raise CorruptData(f"the cached copy of {self.digest} is shorter than its size {e.size}")
        self._hint(e.size, fd, offset, end)
        return b

    def _check_gen(self, e: _Entry) -> None:
        if self._gen != e.gen:
            with e.lock:
                self._gen = e.gen
                self._last_end, self._window, self._pf_next = -1, 0, 0
            raise CorruptData(
                f"{self.digest}: chunks fetched for this open file failed verification and were "
                "dropped; data read before may be wrong (read again to fetch them anew)"
            )

    def _continues(self, offset: int, end: int) -> bool:
        """Whether a read adjoins the run of reads since the last random one (within its own length,
        either side) and the run is still shorter than ``run_min``: the rest of that random read
        (the kernel splits a large read and reads a little beyond it, its requests in parallel and
        out of order), not a sequential reader yet. Such a read starts no read-ahead. A read at
        offset 0 never continues a run (the start of a file: a sequential reader, maybe).

        Called with the entry's lock held.
        """
        le, n = self._last_end, end - offset
        return (le >= 0 and self._window == 0 and offset > 0 and self._run_start - n <= end
                and offset <= le + n and max(le, end) - min(self._run_start, offset) < self._lb.run_min)

    def _readahead(self, e: _Entry, offset: int, end: int, c0: int, c1: int) -> tuple[int, int]:
        """Update the sequential-read detector; the chunk range ``[p0, p1)`` to read ahead.

        Called with ``e.lock`` held.
        """
        cs = e.cs
        le = self._last_end
        if le < 0:
            seq = offset == 0
        else:
            tol = max(2 * cs, 4 << 20)
            seq = le - tol <= offset <= le + tol + self._window
        if seq and self._continues(offset, end):
            self._run_start, self._last_end, self._last_c0 = min(self._run_start, offset), max(le, end), c0
            return 0, 0
        if seq:
            if self._window == 0:
                self._window = cs
            elif c0 != self._last_c0:
                ra = self._lb.readahead_max if e.stream is None else min(self._lb.readahead_max, e.stream.window // 2)
                self._window = min(self._window * 2, max(cs, ra))
            self._last_end = max(le, end)
        else:
            self._window = 0
            self._pf_next = 0
            self._last_end = end
            self._run_start = offset
        self._last_c0 = c0
        if not self._window or self._lb.readahead_max <= 0:
            return 0, 0
        p0 = max(c1 + 1, self._pf_next)
        p1 = min(e.nchunks, (self._last_end + self._window + cs - 1) // cs)
        return p0, p1

    def close(self) -> None:
        self._closed = True
        e, self._e = self._e, None
        for fd in (self._fd, self._old):
            if fd >= 0:
                os.close(fd)
        self._fd = self._old = -1
        if self._held:
            self._held = False
            self._lb._hold(self.digest, -1)
        if e is not None:
            self._lb._release(e)


class _Reads(_Fetching):
    """What a handle's reads ask of the entry: its chunks present, read-ahead planned, exact reads."""

    def _acquire(self, project: str, digest: str, size: int, *,
                 fetch: Callable[[int, int], bytes] | None = None, verify: bool = True) -> _Entry:
        """The entry of ``digest`` (opened if none is), with one more reference for a handle."""
        start_verify = None
        with self._lock:
            e = self._entries.get(digest)
            if e is None:
                e = _Entry(project, digest, size, self.store.cache)
                e.fetch, e.verify = fetch, verify
                if self.stream_over is not None and size > self.stream_over:
                    e.stream = _Stream(self.stream_window)
                try:
                    e.open_any(self.chunk_size)
                except OSError as ex:
                    e.close_fds()
                    raise ArtfsError(f"opening the cache entry of {digest}: {ex}") from None
                self._entries[digest] = e
                if not e.complete and e.npresent == e.nchunks and e.verify and e.stream is None:
                    e.finalizing = True  # every chunk arrived earlier, verification never ran
                    start_verify = e
            elif e.size != size:
                raise CorruptData(f"{digest} opened with size {size}, but already open with size {e.size}")
            with e.lock:
                e.refs += 1
        if start_verify is not None:
            self._start_finalize(start_verify)
        return e

    def _ensure(self, h: BlobHandle, e: _Entry, offset: int, end: int) -> tuple[int, int, bool]:
        """Wait until the chunks of ``[offset, end)`` are present; (fd, gen, pinned) to read them.

        ``pinned``: the chunks of a streamed entry are pinned against eviction; the caller
        unpins them (:meth:`_unpin`) once it copied them.
        """
        deadline = time.monotonic() + self.timeout
        mine: set[_Job] = set()
        joined: set[_Job] = set()  # fetches of others (a read-ahead, another reader) this read waits for
        retried: set[_Job] = set()
        first = True
        while True:
            waits: list[_Job] = []
            submit: list[_Job] = []
            stale = False
            with e.lock:
                if h._gen != e.gen:
                    stale = True  # raised below, outside the lock
                elif e.complete:
                    return e.fd, e.gen, False
                else:
                    cs = e.cs
                    c0, c1 = offset // cs, (end - 1) // cs + 1
                    if first:
                        p0, p1 = h._readahead(e, offset, end, c0, c1 - 1)
                        st = e.stream
                        if st is not None and offset == 0 and (st.hash_done or not st.hash_ok):
                            st.reset_hash()  # a new pass from the start: verify it as a whole
                            self._stream_advance(e)
                    if e.present.find(0, c0, c1) >= 0:
                        e.refresh(c0, c1)  # another process may have fetched them
                    i = e.present.find(0, c0, c1)
                    while 0 <= i < c1:
                        job = self._flights.get(e.digest, e.gen, i)
                        if job is None:
                            job = self._new_job(e, i, i + 1, _DEMAND, 0)
                            mine.add(job)
                            submit.append(job)
                        elif job not in mine and job not in joined:
                            joined.add(job)
                            self._count("joined_fetches")
                        if not waits or waits[-1] is not job:
                            waits.append(job)
                        i = e.present.find(0, i + 1, c1)
                    if first:
                        first = False
                        if p1 > p0:
                            submit.extend(self._plan_prefetch(h, e, c1, p0, p1))
                    if not waits:
                        fd, gen = e.fd, e.gen
                        st = e.stream
                        if st is not None:
                            pins = st.pins
                            for i in range(c0, c1):
                                pins[i] = pins.get(i, 0) + 1
                            st.served.update(range(c0, c1))  # see _stream_evict
            if e.finalize_due:
                with e.lock:
                    due, e.finalize_due = e.finalize_due, False
                if due:
                    self._start_finalize(e)
            for job in submit:  # every job registered above must run (or fail) to be released
                self._submit(e, job)
            if stale:
                h._check_gen(e)
            if not waits:
                return fd, gen, e.stream is not None
            for job in waits:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not job.done.wait(remaining):
                    raise StoreUnavailable(
                        f"timed out after {self.timeout:g} s waiting for the store {self.store.url} "
                        f"to deliver bytes {offset}-{end} of blob {e.digest} (project {e.project})"
                    )
                err = job.error
                if err is None:
                    continue
                if isinstance(err, _Dropped):
                    break  # look again: a dropped read-ahead or a reset entry
                if job in mine or job in retried or job.prio == _DEMAND:
                    raise _fresh(err)
                retried.add(job)  # a read-ahead failed: fetch those chunks ourselves, once
                break

    def _plan_prefetch(self, h: BlobHandle, e: _Entry, c1: int, p0: int, p1: int) -> list[_Job]:
        """Jobs for the missing chunks of ``[p0, p1)`` within the global budget (``e.lock`` held).

        ``c1`` is the chunk after the read. Requests are ``window / 4`` (1 chunk to 16 MiB) long; a
        shorter tail of the window waits for the window to move on unless the reader is close.
        """
        cs = e.cs
        per_job = max(1, min(MAX_REQUEST // cs, h._window // 4 // cs))
        if e.present.find(0, p0, p1) >= 0:
            e.refresh(p0, p1)
        jobs: list[_Job] = []
        digest, gen, inflight = e.digest, e.gen, self._flights.get
        i = p0
        while i < p1:
            if e.present[i] or inflight(digest, gen, i) is not None:
                i += 1
                continue
            j = i + 1
            while j < p1 and j - i < per_job and not e.present[j] and inflight(digest, gen, j) is None:
                j += 1
            if j - i < per_job and j == p1 < e.nchunks and (i - c1) * cs >= h._window // 2:
                break  # a short tail: schedule it with the next part of the window
            nbytes = min(e.size, j * cs) - i * cs
            with self._busy:
                if self._pf_bytes + nbytes > self.prefetch_limit:
                    break
                self._pf_bytes += nbytes
            jobs.append(self._new_job(e, i, j, _PREFETCH, nbytes))
            i = j
        h._pf_next = i
        return jobs

    def _direct_ok(self, h: BlobHandle, e: _Entry, offset: int, end: int, n: int) -> bool:
        """Whether a read is served by :meth:`_read_direct`; if so, records it (under ``e.lock``)."""
        if n > self.direct_max or h._gen != e.gen or e.complete or e.stream is not None:
            return False
        cs = e.cs
        c0, c1 = offset // cs, (end - 1) // cs + 1
        if (c1 - c0) * cs < 2 * n:
            return False  # its chunks cost less than twice its bytes: fetch and cache them
        le = h._last_end
        if le < 0 and offset == 0:
            return False  # the start of a file: a sequential reader, maybe
        # Sequential (chunks and read-ahead, BlobHandle._readahead) if near the last read: for a
        # small read, nearer than the detector's tolerance (a few MiB, for the kernel's parallel
        # read-ahead requests arriving out of order, which are that many requests of their own
        # size), so that a random read landing a few MiB from the last starts no read-ahead.
        # The rest of a random read (BlobHandle._continues) is direct too.
        tol = min(max(2 * cs, 4 << 20), max(16 * n, 256 << 10))
        run = h._continues(offset, end)
        if offset == 0 or (not run and le >= 0 and le - tol <= offset <= le + tol + h._window):
            return False
        if e.present.find(0, c0, c1) >= 0:
            e.refresh(c0, c1)  # another process may have fetched them
        touched = e.touched
        if e.present.find(1, c0, c1) >= 0 or any(
                self._flights.get(e.digest, e.gen, i) is not None or touched.get(i, 0) >= cs for i in range(c0, c1)):
            return False  # (partly) there or coming, or read a chunk's worth already: cache it
        for i in range(c0, c1):
            touched[i] = touched.get(i, 0) + min(end, (i + 1) * cs) - max(offset, i * cs)
        if run:
            h._run_start, h._last_end, h._last_c0 = min(h._run_start, offset), max(le, end), c0
        else:  # a random read (as _readahead)
            h._window, h._pf_next, h._last_end, h._last_c0, h._run_start = 0, 0, end, c0, offset
        return True

    def _read_direct(self, h: BlobHandle, e: _Entry, offset: int, end: int) -> bytes | None:
        """A small random read of chunks nobody has or fetches: exactly its bytes in one GET, not
        cached ("Random reads" in the module docstring); None: take the chunked path."""
        n = end - offset
        with e.lock:
            if not self._direct_ok(h, e, offset, end, n):
                return None
        fetch = e.fetch if e.fetch is not None else functools.partial(self.store.backend.get_range, e.key)
        done: concurrent.futures.Future[bytes] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fetch(offset, n))
            except BaseException as ex:
                done.set_exception(ex)

        try:  # by a worker, as a demand read: the read waits at most `timeout` for the store
            self._pool.submit(_DEMAND, run)
            data = done.result(self.timeout)
        except concurrent.futures.TimeoutError:
            raise StoreUnavailable(
                f"timed out after {self.timeout:g} s waiting for the store {self.store.url} "
                f"to deliver bytes {offset}-{end} of blob {e.digest} (project {e.project})") from None
        except NotFound as ex:
            raise CorruptData(f"blob {e.digest} (project {e.project}) is missing from {self.store.url} although a "
                              f"manifest lists it: {ex}") from None
        except ArtfsError as ex:
            if e.fetch is not None:
                raise
            raise type(ex)(f"fetching {e.digest} (project {e.project}) from {self.store.url}: {ex}") from None
        except Exception as ex:  # a backend bug or library error: still an artfs error
            raise StoreUnavailable(f"fetching {e.digest} (project {e.project}) from {self.store.url}: {ex!r}") from None
        if len(data) != n:
            raise CorruptData(f"the store returned {len(data)} bytes of {e.digest} at offset {offset}, expected {n}"
                              " (the blob is shorter than its manifest says)")
        self._count("fetched_bytes", n)
        self._count("direct_reads")
        return bytes(data)
