"""Streamed entries: blobs larger than the cache allows, hashed in order through a private window
(see "Streamed entries" in :mod:`artfs._lazy`).
"""

from __future__ import annotations

import contextlib
import os

import logging

from .._digest import finish
from .._partial import _HDR, _Entry, _pread_full, _punch

from .core import _Core

log = logging.getLogger("artfs.lazy")


class _Streaming(_Core):
    """The window of a streamed entry: hashing in order, eviction, pins of chunks being copied."""

    def _unpin(self, e: _Entry, gen: int, offset: int, end: int) -> None:
        with e.lock:
            st = e.stream
            if st is None or e.gen != gen:
                return
            cs = e.cs
            for i in range(offset // cs, (end - 1) // cs + 1):
                n = st.pins.get(i, 0) - 1
                if n > 0:
                    st.pins[i] = n
                else:
                    st.pins.pop(i, None)
            self._stream_evict(e)

    def _stream_advance(self, e: _Entry) -> str | None:
        """Hash the streamed entry's chunks in order, then evict down to its window (``e.lock`` held).

        Returns the digest found if a complete pass did not match (the entry is reset then).
        """
        st = e.stream
        assert st is not None
        cs = e.cs
        while st.hash_ok and st.hash_off < e.size and e.present[st.hash_off // cs]:
            n = min(cs - st.hash_off % cs, e.size - st.hash_off)
            b = _pread_full(e.fd, n, st.hash_off)
            if len(b) != n:
                st.hash_ok = False
                break
            st.hasher.update(b)
            st.hash_off += n
        bad = None
        if st.hash_ok and st.hash_off == e.size and not st.hash_done:
            st.hash_done = True
            got = finish(st.hasher)
            if got != e.digest:
                bad = got
                log.warning("blob %s streamed from the store does not match its digest (got %s); dropping what "
                            "was fetched", e.digest, got)
                e.restart(self.chunk_size)  # a new private pair and window, a new generation
                return bad
        self._stream_evict(e)
        return bad

    def _stream_evict(self, e: _Entry) -> None:
        """Punch chunks out while the streamed entry holds more than its window (``e.lock`` held).

        The oldest first, except chunks a read is copying right now (``pins``) and, while a pass
        is being verified, chunks copied by a reader but not hashed yet or hashed but not copied
        yet: the bytes hashed must be the bytes served. (A chunk neither hashed nor copied may go:
        the hash waits until it is fetched again.) If those kept chunks alone fill the window
        (only a reader that jumps around gets there), the pass gives up verifying (``hash_ok``
        False) rather than grow the window or evict what a reader waits for.
        """
        st = e.stream
        assert st is not None
        if st.nbytes <= st.window:
            return
        cs = e.cs
        h0 = st.hash_off // cs  # chunks from h0 on are not hashed in this pass
        if st.hash_ok and not st.hash_done:
            held = sum(min(e.size, (i + 1) * cs) - i * cs for i in st.resident
                       if e.present[i] and (st.pins.get(i) or (i >= h0) == (i in st.served)))
            if held >= st.window:
                st.hash_ok = False  # this pass is not verified as a whole
        verifying = st.hash_ok and not st.hash_done
        kept: list[int] = []
        while st.nbytes > st.window and st.resident:
            i = st.resident.popleft()
            if not e.present[i]:
                continue
            if st.pins.get(i) or (verifying and (i >= h0) == (i in st.served)):
                kept.append(i)
                continue
            self._stream_punch(e, i)
        st.resident.extendleft(reversed(kept))

    def _stream_punch(self, e: _Entry, i: int) -> None:
        """Mark chunk ``i`` of a streamed entry absent and free its bytes (``e.lock`` held)."""
        st = e.stream
        assert st is not None
        cs = e.cs
        n = min(e.size, (i + 1) * cs) - i * cs
        e.present[i] = 0
        e.npresent -= 1
        st.nbytes -= n
        with contextlib.suppress(OSError):
            os.pwrite(e.map_fd, b"\x00", _HDR.size + i)
        if not _punch(e.fd, i * cs, n):
            log.debug("cannot punch chunk %d out of the streamed copy of %s", i, e.digest)
