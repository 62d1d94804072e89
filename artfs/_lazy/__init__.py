"""Lazy, chunked, verified reads of store blobs through the shared cache (used by the mount).

The package, one module per part, each a layer over the ones before it (:class:`LazyBlobs`
and :class:`BlobHandle` are one state machine over each entry's lock, so the invariants below
hold across all of them):

* ``core``    the settings, the open entries, the registry of fetches in flight, the worker pool;
* ``stream``  streamed entries (their window, hashing in order, eviction);
* ``verify``  verification of complete entries;
* ``fetch``   fetch jobs of chunks on the pool;
* ``reads``   :class:`BlobHandle` and the read policy: waiting for chunks, read-ahead, random reads;
* ``whole``   small blobs fetched whole (one GET) and the background prefetch of many;
* ``blobs``   :class:`LazyBlobs`, the public face (open, what is open, close), and
  :class:`RefReads`, the reader of an unpinned reference with a handle's face.

The parts with their own state are beside the package: the partial file and map
(:mod:`artfs._partial`), the fetch jobs, their one registry and the pool (:mod:`artfs._fetchpool`),
and the answer to "is this cache blob complete and verified?" (:meth:`artfs._cache.Cache.open_verified`,
:mod:`artfs._verified`), which every open here asks and nothing here answers on its own.

One reader, one handle per open file
------------------------------------
Every fetch into the cache of a process goes through its :class:`LazyBlobs`: chunks (on demand
and read ahead), small blobs whole (``whole``: at most ``small_max`` bytes, 1 MiB, in one GET at
open), and a directory's prefetch. Every fetch in flight is in one registry
(:class:`artfs._fetchpool._InFlight`), keyed by what it fetches, so whoever needs it waits for it
(``joined_fetches`` in ``stats``). An open file is one :class:`BlobHandle` with one descriptor of
the blob: its own for a complete, verified blob (no entry: opened, read and closed without any
lock of the reader, so the mount does it on its event loop: :meth:`LazyBlobs.open_complete`), or
the blob's shared entry (one descriptor for every handle of it) while chunks arrive.

:class:`LazyBlobs` serves ``read(offset, length)`` of a blob without downloading all of it:
reading the first KiB of a 10 GiB checkpoint fetches one or two chunks, a sequential reader gets a
read-ahead window that doubles up to ``readahead_max`` and is fetched with parallel range GETs,
and a blob whose chunks have all arrived is verified against its digest and becomes an ordinary
complete cache blob (``blobs/…``), which later opens read directly with ``pread``.

It is synchronous and thread-safe: the mount daemon calls it from worker threads, and calls
:meth:`BlobHandle.readinto_nowait` on its event loop (bytes already fetched, served without a
thread hop; it never blocks and never waits for the store).

Files (in the shared cache, see :mod:`artfs._cache`)
-----------------------------------------------------
A blob being fetched is a partial file ``partial/<32 hex>`` and its chunk map
``partial/<32 hex>.map``; their format, the ``flock`` discipline that pairs them and the
write-order invariant (a map byte is set only after its chunk's bytes were written) are described
in :mod:`artfs._partial`, with the code that opens and loads them (:class:`_Entry`). The fetch
jobs and their worker pool are in :mod:`artfs._fetchpool`.

States of a blob in the cache
-----------------------------
absent -> partial (some map bytes set) -> all chunks present -> verifying -> complete
(``blobs/…``) or, on a digest mismatch, dropped (partial and map unlinked) and absent again.

Invariants
----------
* **A map byte is set only after its chunk's bytes were written** (see :mod:`artfs._partial`).
* **Nothing reaches ``blobs/`` unverified.** When every chunk is present the partial file is
  hashed (in a background thread); only if it matches the digest is it ``chmod 0444``-ed and
  renamed into ``blobs/`` (the same inode, so open handles keep reading it). On a mismatch the
  partial file and map are unlinked, a fresh entry starts, and every handle that was open on the
  bad one gets :class:`CorruptData` once on its next read (it may have been served bad bytes);
  reads after that fetch the chunks again.
* **Eviction never removes an open blob.** Every open entry holds a shared ``flock`` on its
  partial file or complete blob (cleanup skips files it cannot lock exclusively), and
  :meth:`LazyBlobs.open_digests` lists them for ``Cache.cleanup(keep=…)``. An fd is only used after
  checking, once locked, that the path still names the same inode.
* **Within a process, each chunk and each small blob is fetched once at a time**: a missing
  chunk gets one fetch job in the registry that every reader of that chunk waits on (a per-job
  event, not a global lock); a small blob's whole fetch likewise. **Across
  processes** (two mounts, a mount and a CLI) on one cache, chunks marked in the map by another
  process are picked up (the map is re-read for a chunk before fetching it); two processes may
  occasionally both fetch one chunk, writing identical bytes, which is harmless.
* A handle must not be closed while a read on it is still running (FUSE guarantees this:
  ``release`` comes after the last ``read``).
* A read waits at most ``timeout`` seconds in total for its chunks, then raises
  :class:`StoreUnavailable` naming the blob and the store; a fetch that failed is retried by the
  next read. Chunks already in the cache are read without asking the store, so everything cached
  stays readable when the store is unreachable.

Complete blobs opened again
---------------------------
A complete blob is served without hashing it if its verification record (``user.artfs.verified``,
see :mod:`artfs._verified`) matches its ``fstat``; otherwise :meth:`LazyBlobs.open` has it hashed
again (:meth:`Cache.open_verified` with ``rehash``) before taking any lock of its own: kept and
re-recorded, or dropped with a warning and fetched again. A handle whose own descriptor fails a
read switches to the blob's entry, which checks the blob again the same way.

Streamed entries (blobs larger than the cache allows)
-----------------------------------------------------
A blob larger than half the cache's bound is never cached whole: its entry uses an unnamed
partial file and map (``O_TMPFILE`` in ``tmp/``, private to this process, gone when the last
handle closes or the process dies) holding at most ``stream_window`` bytes of chunks. Chunks are
hashed in order as they arrive; beyond the window, the oldest chunks are punched out and marked
absent, except those being copied by a read right now (pinned between ``_ensure`` and the
``pread``) and those a reader copied but the hash has not reached or the hash passed but no
reader copied yet (the bytes hashed are the bytes served; see ``_stream_evict``). A chunk's map
byte is never picked up by ``refresh`` (the map is private), so a chunk is readable only once its
fetch marked it present and hashed what it could, in one hold of the entry's lock. A pass
that reaches the end with a wrong digest fails that fetch (CorruptData) and resets the entry (new
generation). See :class:`_Stream`. Such an entry never becomes a complete blob and is never
served by ``readinto_nowait`` (whose unlocked read could see a punched chunk).

Read-ahead
----------
Per handle: a read that starts at offset 0 or near the end of the previous reads (within a few
MiB either way, so the kernel's slightly out-of-order parallel reads still count) is sequential.
The window starts at one chunk and doubles each time a sequential read moves into a new chunk, up
to ``readahead_max``; a random read resets it. Window chunks are fetched by a pool of
``max_workers`` threads (demand reads before read-ahead, read-ahead before the background prefetch of small blobs) with range GETs of up to 16 MiB
(``MAX_REQUEST``), so one sequential reader keeps up to 4 requests in flight (see
:mod:`artfs._fetchpool` for why not more). Read-ahead bytes queued or in flight are bounded
globally (``2 * readahead_max``).

Fetched bytes go straight into the partial file with ``Backend.fetch_range_into``: a local store
copies file to file in the kernel (``copy_file_range``), S3 streams each response body into the
file 1 MiB at a time; no fetch holds a whole request in memory. (Measured on 2 CPUs: a cold
sequential read of 1 GiB from a local store went from 0.36-0.45 GB/s to 1.7-2.5 GB/s in process,
and through the mount from 0.16-0.57 to 0.8-1.3 GB/s with ``readinto_nowait``.) Verification
reads the file back through one reused 1 MiB buffer.

Random reads
------------
A read whose chunks would cost twice its bytes or more (a 4 KiB read, a 1 MiB read across a
chunk edge), that is not sequential (by the detector above) and whose chunks are neither present
nor being fetched is served by one ranged GET of exactly its bytes, not written to the cache
(:meth:`LazyBlobs._read_direct`): a 4 KiB read at a random offset of a 4 GiB HDF5/LMDB/parquet
file would otherwise fetch its whole 1 MiB chunk, 256 times the bytes read. Once random reads
have fetched a chunk's size of one chunk's bytes while the blob is open (a hot region), the next
read of it fetches the chunk whole into the cache: every chunk costs at most twice the bytes
read from it, and each random read one GET. Like chunks of an incomplete blob, such bytes are
not verified when served (nothing is, until a blob is complete); they never reach the cache, so
a blob read only at random never becomes complete. ``stats`` counts the bytes fetched from the
store (``fetched_bytes``) and these reads (``direct_reads``).

The kernel splits a large random read into requests and may read a little beyond it, in
parallel and out of order; to the sequential detector those look like a sequential reader. A read
that adjoins the run of reads since the last random one (within its own length, either side),
while that run is shorter than ``run_min`` (2 MiB, at least two chunks), is taken as the rest of
that random read (:meth:`BlobHandle._continues`): served direct as above (or by its chunks if
they cost less than twice its bytes) and starting no read-ahead. A reader going on past
``run_min``, or reading from offset 0, is sequential.

Bytes already in the cache but not in the page cache (a complete blob whose pages were dropped)
are read ahead by the kernel at a sequential reader's request: each read hints the next
``readahead_max`` bytes of the cache file (``POSIX_FADV_WILLNEED``) once the reader is half-way
through the previous hint, so the disk streams instead of answering one request at a time.
"""

from .blobs import LazyBlobs, RefReads
from .reads import BlobHandle

__all__ = ["BlobHandle", "LazyBlobs", "RefReads"]
