"""Verification: a blob whose chunks have all arrived is hashed and becomes a complete cache blob,
or is dropped ("Nothing reaches ``blobs/`` unverified" in :mod:`artfs._lazy`). (Whether a blob
already in ``blobs/`` may be served is :meth:`artfs._cache.Cache.open_verified`'s answer.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading

import logging

from .._partial import _Entry, _hash_file, _same, _unlink_if_same
from .._verified import stamp

from .core import _Core

log = logging.getLogger("artfs.lazy")


class _Verifying(_Core):
    """Verification of fully fetched entries (in a background thread)."""

    def _start_finalize(self, e: _Entry) -> None:
        with e.lock:
            e.jobs += 1
        self._activity(+1)
        threading.Thread(target=self._finalize, args=(e,), name="artfs-lazy-verify", daemon=True).start()

    def _finalize(self, e: _Entry) -> None:
        """Verify a fully fetched partial entry and move it into ``blobs/`` (or drop it)."""
        try:
            with e.lock:
                fd, map_fd, gen = e.fd, e.map_fd, e.gen
            if e.complete or gen != e.gen:
                return
            if self._adopt_existing(e, fd, map_fd, gen):
                return
            got, off = _hash_file(fd, e.size)
            if got == e.digest and off == e.size:
                published = False
                fcntl.flock(map_fd, fcntl.LOCK_EX)  # openers check the entry under this lock
                try:
                    if _same(e.partial_path, fd) and _same(e.map_path, map_fd):
                        os.ftruncate(fd, e.size)  # drop the nonce
                        stamp(fd, e.digest)  # what was verified: see artfs._cache
                        os.fchmod(fd, 0o444)
                        os.makedirs(os.path.dirname(e.blob_path), exist_ok=True)
                        os.replace(e.partial_path, e.blob_path)
                        os.unlink(e.map_path)
                        published = True
                    elif _same(e.blob_path, fd):
                        published = True  # another process sharing our partial file did it
                finally:
                    fcntl.flock(map_fd, fcntl.LOCK_UN)
                if not published:  # our partial file is no longer at its path: publish a copy
                    self._publish_copy(e, fd)
                with e.lock:
                    if e.gen == gen:
                        e.complete = True
                log.debug("%s complete and verified", e.digest)
                return
            log.warning("blob %s fetched into the cache does not match its digest (got %s); dropping it", e.digest, got)
            fcntl.flock(map_fd, fcntl.LOCK_EX)
            try:
                _unlink_if_same(e.partial_path, fd)
                _unlink_if_same(e.map_path, map_fd)
            finally:
                fcntl.flock(map_fd, fcntl.LOCK_UN)
            with e.lock:
                if e.gen == gen:
                    e.restart(self.chunk_size)
        except Exception:
            log.exception("verifying %s failed; it stays a partial cache entry", e.digest)
        finally:
            with e.lock:
                e.finalizing = False
                e.jobs -= 1
            self._maybe_free(e)
            self._activity(-1)

    def _adopt_existing(self, e: _Entry, fd: int, map_fd: int, gen: int) -> bool:
        """If another process completed the blob meanwhile, switch to its verified copy."""
        if _same(e.blob_path, fd):  # another process verified and renamed our very file
            with e.lock:
                if e.gen == gen:
                    e.complete = True
            return True
        nfd = self.store.cache.open_verified(e.digest, e.size, rehash=True)
        if nfd < 0:
            return False
        fcntl.flock(map_fd, fcntl.LOCK_EX)
        try:  # our partial copy is redundant now
            _unlink_if_same(e.partial_path, fd)
            _unlink_if_same(e.map_path, map_fd)
        finally:
            fcntl.flock(map_fd, fcntl.LOCK_UN)
        with e.lock:
            if e.gen == gen:
                e.old_fds.append(e.fd)
                e.fd = nfd
                e.complete = True
                return True
        os.close(nfd)
        return True

    def _publish_copy(self, e: _Entry, fd: int) -> None:
        tmp = self.store.cache.tmp_path()
        try:
            with open(tmp, "wb") as f:
                off = 0
                while off < e.size:
                    b = os.pread(fd, min(8 << 20, e.size - off), off)
                    if not b:
                        break
                    f.write(b)
                    off += len(b)
                f.flush()
                stamp(f.fileno(), e.digest)  # copied from bytes just verified
            os.chmod(tmp, 0o444)
            os.replace(tmp, e.blob_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
