"""The lazy, chunked, verified reader the mount uses for file contents (artfs._lazy)."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

import artfs
from artfs import ArtfsError, CorruptData, StoreUnavailable
from artfs._layout import blob_key
from artfs._lazy import LazyBlobs
from artfs.backends.local import LocalBackend

MiB = 1 << 20
PROJECT = "proj"


# --------------------------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------------------------


def _data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _put(store: artfs.Store, data: bytes) -> str:
    d = artfs.digest_bytes(data)
    store.backend.put(blob_key(PROJECT, d), data)
    return d


def _ranges(store: artfs.Store) -> int:
    return store.backend.counter["range"]


def _partial(cache: artfs.Cache, digest: str) -> str:
    return os.path.join(cache.root, "partial", digest.split(":")[1])


@pytest.fixture
def cache(tmp_path):
    return artfs.Cache(str(tmp_path / "cache"))


@pytest.fixture
def lstore(tmp_path, cache):
    return artfs.Store(str(tmp_path / "store"), cache=cache)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, cache):
    """A local store and an S3 store (moto), each with a fresh cache."""
    if request.param == "local":
        yield artfs.Store(str(tmp_path / "store"), cache=cache)
        return
    s = artfs.Store(request.getfixturevalue("s3_url"), cache=cache)
    yield s
    s.backend.close()


@pytest.fixture
def lazies():
    made: list[LazyBlobs] = []

    def make(store: artfs.Store, **kw) -> LazyBlobs:
        lb = LazyBlobs(store, **kw)
        made.append(lb)
        return lb

    yield make
    for lb in made:
        lb.close()


def _read_all(h, size: int, step: int) -> bytes:
    return b"".join(h.read(off, step) for off in range(0, size, step))


# --------------------------------------------------------------------------------------------
# correctness against every backend
# --------------------------------------------------------------------------------------------


def test_random_reads_equal_source(store, lazies):
    size = 5 * MiB + 12345
    data = _data(size)
    d = _put(store, data)
    lb = lazies(store, chunk_size=256 << 10)
    rng = random.Random(1)
    with lb.open(PROJECT, d, size) as h:
        for _ in range(150):
            off = rng.randrange(0, size + 10)
            n = rng.choice([1, 100, 4096, 128 << 10, 1 << 20, 3 << 20])
            assert h.read(off, n) == data[off : off + n]
        assert h.read(size, 10) == b""
        assert h.read(size - 3, 10) == data[-3:]
        assert h.read(0, 0) == b""


def test_head_fetches_at_most_two_chunks(store, lazies):
    size = 50 * MiB if store.url.startswith("file:") else 20 * MiB  # moto stores in memory: keep it light
    data = _data(size)
    d = _put(store, data)
    lb = lazies(store)
    before = _ranges(store)
    with lb.open(PROJECT, d, size) as h:
        assert h.read(0, 1024) == data[:1024]
    lb.drain(10)
    assert _ranges(store) - before <= 2
    # a random read in the middle fetches just its chunk
    before = _ranges(store)
    with lb.open(PROJECT, d, size) as h:
        assert h.read(15 * MiB + 5, 4096) == data[15 * MiB + 5 : 15 * MiB + 5 + 4096]
    lb.drain(10)
    assert _ranges(store) - before == 1


def test_sequential_read_makes_verified_blob(store, lazies):
    size = 12 * MiB + 777
    data = _data(size, 3)
    d = _put(store, data)
    lb = lazies(store, chunk_size=512 << 10)
    with lb.open(PROJECT, d, size) as h:
        assert _read_all(h, size, 128 << 10) == data
    assert lb.drain(10)
    assert lb.is_complete(d)
    p = store.cache.path(d)
    with open(p, "rb") as f:
        assert f.read() == data
    assert not os.path.exists(_partial(store.cache, d))
    assert not os.path.exists(_partial(store.cache, d) + ".map")
    assert store.cache.verify(d)
    # later opens (also by another LazyBlobs, i.e. another process) read the blob directly
    before = _ranges(store)
    lb2 = lazies(store)
    with lb2.open(PROJECT, d, size) as h:
        assert h.read(0, size) == data
        assert h.read(5 * MiB, 3) == data[5 * MiB : 5 * MiB + 3]
    assert _ranges(store) == before


def test_concurrent_readers_fetch_each_chunk_once(store, lazies):
    cs = 256 << 10
    size = 8 * MiB + 99
    nchunks = -(-size // cs)
    data = _data(size, 4)
    d = _put(store, data)
    lb = lazies(store, chunk_size=cs)
    before = _ranges(store)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def reader(k: int) -> None:
        try:
            rng = random.Random(k)
            with lb.open(PROJECT, d, size) as h:
                start.wait()
                if k % 2:  # sequential with various read sizes
                    step = [64 << 10, 128 << 10, 1 << 20, 300_000][k // 2 % 4]
                    assert _read_all(h, size, step) == data
                else:  # random
                    for _ in range(60):
                        off = rng.randrange(size)
                        n = rng.randrange(1, 600_000)
                        assert h.read(off, n) == data[off : off + n]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert lb.drain(10)
    assert _ranges(store) - before - lb.stats["direct_reads"] <= nchunks  # and small random reads' own GETs
    assert lb.is_complete(d)


def test_shared_handles_one_entry(lstore, lazies):
    size = 3 * MiB
    data = _data(size)
    d = _put(lstore, data)
    lb = lazies(lstore)
    h1 = lb.open(PROJECT, d, size)
    h2 = lb.open(PROJECT, d, size)
    assert lb.open_digests() == {d}
    assert h1.read(MiB, MiB) == data[MiB : 2 * MiB]  # a whole chunk: fetched into the cache
    n = _ranges(lstore)
    assert h2.read(MiB + 100, 10) == data[MiB + 100 : MiB + 110]
    assert _ranges(lstore) == n
    h1.close()
    assert lb.open_digests() == {d}
    h2.close()
    lb.drain(5)
    assert lb.open_digests() == set()
    with pytest.raises(ArtfsError):
        h2.read(0, 1)


# --------------------------------------------------------------------------------------------
# read-ahead
# --------------------------------------------------------------------------------------------


def test_sequential_reads_use_growing_parallel_readahead(lstore, lazies):
    size = 48 * MiB
    data = _data(size, 5)
    d = _put(lstore, data)
    lb = lazies(lstore)
    with lb.open(PROJECT, d, size) as h:
        assert _read_all(h, size, 128 << 10) == data
    lb.drain(10)
    # requests grow to several chunks each: far fewer GETs than chunks
    assert _ranges(lstore) < 48 // 2
    assert lb.is_complete(d)


def test_out_of_order_sequential_reads_still_read_ahead(lstore, lazies):
    size = 32 * MiB
    data = _data(size, 6)
    d = _put(lstore, data)
    lb = lazies(lstore)
    step = 128 << 10
    offs = list(range(0, size, step))
    for i in range(0, len(offs) - 1, 2):  # swap neighbours, as parallel kernel reads may arrive
        offs[i], offs[i + 1] = offs[i + 1], offs[i]
    with lb.open(PROJECT, d, size) as h:
        for off in offs:
            assert h.read(off, step) == data[off : off + step]
    lb.drain(10)
    assert _ranges(lstore) < 32 // 2


def test_random_reader_gets_no_big_readahead(lstore, lazies):
    size = 64 * MiB
    data = _data(size, 7)
    d = _put(lstore, data)
    lb = lazies(lstore)
    rng = random.Random(3)
    with lb.open(PROJECT, d, size) as h:
        for _ in range(10):
            off = rng.randrange(1, size - 4096)
            assert h.read(off, 4096) == data[off : off + 4096]
    lb.drain(10)
    assert _ranges(lstore) <= 20  # each random read: its chunk (maybe one neighbour), no window


def _read_like_the_mount(h, offset: int, length: int) -> bytes:
    """What the daemon does: ``readinto_nowait`` on its event loop, else ``read`` in a thread."""
    buf = bytearray(length)
    n = h.readinto_nowait(offset, memoryview(buf))
    if n is not None:
        return bytes(buf[:n])
    return h.read(offset, length)


def test_readinto_nowait_serves_only_what_is_cached(lstore, lazies):
    size = 6 * MiB + 7
    data = _data(size, 30)
    d = _put(lstore, data)
    lb = lazies(lstore, readahead_max=0)
    with lb.open(PROJECT, d, size) as h:
        buf = memoryview(bytearray(MiB))
        assert h.readinto_nowait(0, buf) is None  # nothing cached: no fetch from the loop either
        assert h.readinto_nowait(-1, buf) is None
        assert _ranges(lstore) == 0
        assert h.read(MiB, 2 * MiB) == data[MiB : 3 * MiB]  # chunks 1 and 2
        assert h.readinto_nowait(MiB + 5, buf) == MiB and bytes(buf) == data[MiB + 5 : 2 * MiB + 5]
        assert h.readinto_nowait(2 * MiB + 5, buf) is None  # chunk 3 is not there
        assert h.readinto_nowait(size, buf) is None  # at the end: read() answers b""
        assert h.read(5 * MiB, MiB + 7) == data[5 * MiB :]
        assert h.readinto_nowait(size - 3, buf) == 3 and bytes(buf[:3]) == data[-3:]  # short at the end
        assert _ranges(lstore) == 4
    h.close()
    assert h.readinto_nowait(0, buf) is None  # a closed handle: read() reports it


def test_readinto_nowait_sequential_reader_reads_ahead_and_completes(lstore, lazies):
    """A sequential reader served from the loop still drives read-ahead and ends with a blob."""
    size = 40 * MiB + 3
    data = _data(size, 31)
    d = _put(lstore, data)
    lb = lazies(lstore)
    step = MiB
    nowait = 0
    with lb.open(PROJECT, d, size) as h:
        out = []
        for off in range(0, size, step):
            buf = bytearray(step)
            n = h.readinto_nowait(off, memoryview(buf))
            if n is None:
                out.append(h.read(off, step))
            else:
                nowait += 1
                out.append(bytes(buf[:n]))
                time.sleep(0.002)  # leave the read-ahead time to stay in front
        assert b"".join(out) == data
        assert lb.drain(10)
        assert lb.is_complete(d)
        assert _read_like_the_mount(h, 7, 100) == data[7:107]  # a complete blob, from the loop too
    assert nowait > 10  # most reads found their chunks fetched ahead
    assert _ranges(lstore) < 40 // 2


def test_readinto_nowait_never_serves_a_dropped_entry(lstore, lazies):
    cs = 256 << 10
    size = 2 * MiB
    data = _data(size, 32)
    d = _put(lstore, data)
    lb = lazies(lstore, chunk_size=cs, readahead_max=0)
    h = lb.open(PROJECT, d, size)
    assert h.read(0, cs) == data[:cs]
    with open(_partial(lstore.cache, d), "r+b") as f:  # damage the fetched chunk
        f.write(b"garbage!")
    errors = 0
    for off in range(cs, size, cs):
        try:
            h.read(off, cs)
        except CorruptData:
            errors += 1  # the last chunk's read may already see the failed verification
    assert lb.drain(10)
    assert h.readinto_nowait(0, memoryview(bytearray(100))) is None  # never the dropped bytes
    if not errors:  # the handle is told once, on its next read
        with pytest.raises(CorruptData):
            h.read(0, 100)
        errors += 1
    assert errors == 1
    assert _read_like_the_mount(h, 0, 100) == data[:100]
    h.close()


def test_sequential_read_of_a_complete_blob_hints_the_page_cache(lstore, lazies, monkeypatch):
    """Pages of the cache file are asked for ahead of a sequential reader, not of a random one."""
    size = 100 * MiB
    d = _put(lstore, bytes(size))
    lstore.fetch_blob(PROJECT, d)
    calls: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def spy(fd, off, n, advice):
        if advice == os.POSIX_FADV_WILLNEED:
            calls.append((off, n))
        return real(fd, off, n, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    lb = lazies(lstore, readahead_max=16 * MiB)
    with lb.open(PROJECT, d, size) as h:
        for off in range(0, 64 * MiB, MiB):
            assert h.read(off, MiB) == bytes(MiB)
        assert calls[0] == (MiB, 16 * MiB)
        # hinted in windows, each once, always ahead of the reader, never far
        assert all(a[0] + a[1] == b[0] for a, b in zip(calls, calls[1:]))
        assert 4 <= len(calls) <= 9 and calls[-1][0] + calls[-1][1] <= 64 * MiB + 16 * MiB
        calls.clear()
        for off in (90 * MiB, 20 * MiB, 75 * MiB, 40 * MiB):  # random reads: no hints
            assert h.read(off, 4096) == bytes(4096)
        assert calls == []


# --------------------------------------------------------------------------------------------
# verification and crash leftovers
# --------------------------------------------------------------------------------------------


def test_corrupted_partial_chunk_is_detected_and_refetched(lstore, lazies):
    cs = 256 << 10
    size = 4 * MiB + 5
    data = _data(size, 8)
    d = _put(lstore, data)
    lb = lazies(lstore, chunk_size=cs)
    h = lb.open(PROJECT, d, size)
    assert h.read(0, cs) == data[:cs]
    lb.drain(10)
    with open(_partial(lstore.cache, d), "r+b") as f:  # damage the chunk already fetched
        f.seek(10)
        f.write(b"garbage!")
    raised = False
    try:
        for off in range(cs, size, cs):
            assert h.read(off, cs) == data[off : off + cs]
    except CorruptData:
        raised = True
    assert lb.drain(10)
    if not raised:
        with pytest.raises(CorruptData):
            h.read(0, 100)
    assert not lb.is_complete(d)
    # a retry reads correct bytes (fetched again) and ends with a verified blob
    assert _read_all(h, size, cs) == data
    assert lb.drain(10)
    assert lb.is_complete(d)
    assert lstore.cache.verify(d)
    h.close()


def test_store_returning_short_blob_is_corrupt(lstore, lazies):
    data = _data(3 * MiB)
    d = _put(lstore, data)
    lb = lazies(lstore)
    with lb.open(PROJECT, d, len(data) + MiB) as h:  # the manifest claims more bytes
        with pytest.raises(CorruptData):
            h.read(len(data), 100)


def test_all_chunks_present_but_unverified_is_verified_on_open(lstore, lazies, monkeypatch):
    size = 3 * MiB + 1
    data = _data(size, 9)
    d = _put(lstore, data)
    lb = lazies(lstore)
    monkeypatch.setattr(LazyBlobs, "_start_finalize", lambda self, e: None)  # a crash before verifying
    with lb.open(PROJECT, d, size) as h:
        assert h.read(0, size) == data
    lb.drain(10)
    monkeypatch.undo()
    assert not lb.is_complete(d)
    n = _ranges(lstore)
    lb2 = lazies(lstore)
    with lb2.open(PROJECT, d, size) as h:
        assert lb2.drain(10)
        assert lb2.is_complete(d)
        assert h.read(0, size) == data
    assert _ranges(lstore) == n


def test_unmarked_chunks_are_refetched_and_foreign_maps_reset(lstore, lazies):
    size = 4 * MiB
    data = _data(size, 10)
    d = _put(lstore, data)
    part = _partial(lstore.cache, d)
    # a crash after writing chunk data but before marking it: data there, map byte 0
    lb = lazies(lstore)
    with lb.open(PROJECT, d, size) as h:
        assert h.read(0, 10) == data[:10]
    lb.drain(10)
    with open(part + ".map", "r+b") as f:
        f.seek(40)
        f.write(b"\x00")
    n = _ranges(lstore)
    lb2 = lazies(lstore)
    with lb2.open(PROJECT, d, size) as h:
        assert h.read(0, 10) == data[:10]
    lb2.drain(10)
    assert _ranges(lstore) > n
    # a map left from another partial file (another inode) is not trusted
    os.unlink(part)
    with open(part, "wb") as f:
        f.truncate(size)  # holes: zeros
    lb3 = lazies(lstore)
    with lb3.open(PROJECT, d, size) as h:
        assert h.read(0, 2 * MiB) == data[: 2 * MiB]


# --------------------------------------------------------------------------------------------
# failing stores
# --------------------------------------------------------------------------------------------


class _SlowBackend(LocalBackend):
    """A local store whose range reads hang (a store that stopped answering)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.release = threading.Event()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self.release.wait(30)
        return super().get_range(key, offset, length)

    def fetch_range_into(self, key: str, offset: int, length: int, fd: int, fd_offset: int) -> int:
        self.release.wait(30)
        return super().fetch_range_into(key, offset, length, fd, fd_offset)


def test_hanging_store_times_out(tmp_path, cache, lazies):
    data = _data(3 * MiB)
    good = artfs.Store(str(tmp_path / "store"), cache=cache)
    d = _put(good, data)
    # chunk 0 is cached already
    with lazies(good).open(PROJECT, d, len(data)) as h:
        assert h.read(0, 100) == data[:100]
    backend = _SlowBackend(str(tmp_path / "store"))
    slow = artfs.Store(backend=backend, cache=cache)
    lb = lazies(slow, timeout=1.0, max_workers=4)
    try:
        with lb.open(PROJECT, d, len(data)) as h:
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable) as ei:
                h.read(2 * MiB, 100)
            assert time.monotonic() - t0 < 3
            assert d in str(ei.value)
            assert h.read(5, 100) == data[5:105]  # cached chunks stay readable
            backend.release.set()  # the store answers again: the next read succeeds
            assert h.read(2 * MiB, 100) == data[2 * MiB : 2 * MiB + 100]
    finally:
        backend.release.set()


def test_store_gone_local(tmp_path, cache, lazies):
    data = _data(6 * MiB)
    st = artfs.Store(str(tmp_path / "store"), cache=cache)
    d = _put(st, data)
    lb = lazies(st, timeout=5.0)
    other = _data(MiB, 1)
    d2 = _put(st, other)
    with lb.open(PROJECT, d2, len(other)) as h:
        assert h.read(0, len(other)) == other
    lb.drain(10)
    h = lb.open(PROJECT, d, len(data))
    assert h.read(0, 100) == data[:100]
    lb.drain(10)
    os.rename(tmp_path / "store", tmp_path / "gone")
    t0 = time.monotonic()
    with pytest.raises(ArtfsError) as ei:
        h.read(4 * MiB, 100)
    assert time.monotonic() - t0 < 5
    assert d in str(ei.value)
    assert h.read(10, 1000) == data[10:1010]  # a cached chunk
    h.close()
    with lb.open(PROJECT, d2, len(other)) as h2:  # a complete blob
        assert h2.read(0, len(other)) == other
    # the store comes back: reads work again
    os.rename(tmp_path / "gone", tmp_path / "store")
    with lb.open(PROJECT, d, len(data)) as h:
        assert h.read(4 * MiB, 100) == data[4 * MiB : 4 * MiB + 100]


def test_s3_unreachable_errors_within_timeout(s3_server, tmp_path, cache, lazies):
    from artfs.backends.s3 import S3Backend
    from artfs.testing import free_port

    data = _data(3 * MiB, 2)
    local = artfs.Store(str(tmp_path / "store"), cache=cache)
    d = _put(local, data)
    with lazies(local).open(PROJECT, d, len(data)) as h:  # cache chunk 0 (+ read-ahead)
        assert h.read(0, 10) == data[:10]
    dead = S3Backend("s3://nobucket/x", endpoint_url=f"http://127.0.0.1:{free_port()}", timeout=2)
    st = artfs.Store(backend=dead, cache=cache)
    lb = lazies(st, timeout=10.0)
    with lb.open(PROJECT, d, len(data)) as h:
        assert h.read(100, 1000) == data[100:1100]
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as ei:
            h.read(2 * MiB + 5, 10)
        assert time.monotonic() - t0 < 8
        assert d in str(ei.value)
    dead.close()


# --------------------------------------------------------------------------------------------
# cache interplay
# --------------------------------------------------------------------------------------------


def test_open_entries_survive_cleanup(lstore, lazies):
    size = 4 * MiB
    a, b = _data(size, 11), _data(size, 12)
    da, db = _put(lstore, a), _put(lstore, b)
    lb = lazies(lstore)
    with lb.open(PROJECT, db, size) as h:
        h.read(0, size)
    lb.drain(10)
    assert lb.is_complete(db)
    ha = lb.open(PROJECT, da, size)  # partial, open
    assert ha.read(0, 10) == a[:10]
    hb = lb.open(PROJECT, db, size)  # complete, open
    lb.drain(10)
    assert lb.open_digests() == {da, db}
    lstore.cache.cleanup(0)
    assert os.path.exists(_partial(lstore.cache, da))
    assert lb.is_complete(db)
    assert ha.read(MiB, 10) == a[MiB : MiB + 10]
    assert hb.read(MiB, 10) == b[MiB : MiB + 10]
    ha.close()
    hb.close()
    lb.drain(10)
    lstore.cache.cleanup(0)
    assert not os.path.exists(_partial(lstore.cache, da))
    assert not lb.is_complete(db)
    with lb.open(PROJECT, da, size) as h:  # fetched again
        assert h.read(0, size) == a


def test_two_readers_on_one_cache_share_chunks(tmp_path, cache, lazies):
    """Two LazyBlobs (as two mounts/processes would) on one cache: chunks are fetched once."""
    data = _data(8 * MiB, 13)
    s1 = artfs.Store(str(tmp_path / "store"), cache=cache)
    s2 = artfs.Store(str(tmp_path / "store"), cache=cache)
    d = _put(s1, data)
    lb1, lb2 = lazies(s1, chunk_size=MiB), lazies(s2, chunk_size=512 << 10)  # lb2 adopts 1 MiB
    h1 = lb1.open(PROJECT, d, len(data))
    h2 = lb2.open(PROJECT, d, len(data))
    assert h1.read(3 * MiB, MiB) == data[3 * MiB : 4 * MiB]  # a whole chunk: into the shared cache
    lb1.drain(10)
    assert h2.read(3 * MiB + 200, 100) == data[3 * MiB + 200 : 3 * MiB + 300]
    assert _ranges(s2) == 0
    assert _read_all(h2, len(data), MiB) == data
    assert _read_all(h1, len(data), 300_000) == data
    lb1.drain(10)
    lb2.drain(10)
    assert lb1.is_complete(d)
    assert _ranges(s1) + _ranges(s2) <= 8 + 2  # at most a couple of duplicated chunks
    h1.close()
    h2.close()


def test_empty_blob(lstore, lazies):
    d = _put(lstore, b"")
    lb = lazies(lstore)
    with lb.open(PROJECT, d, 0) as h:
        assert h.read(0, 100) == b""
    assert lb.drain(5)
    assert lb.is_complete(d)


def test_complete_blob_hot_path_concurrent(lstore, lazies):
    size = 4 * MiB
    data = _data(size, 14)
    d = _put(lstore, data)
    lstore.fetch_blob(PROJECT, d)  # complete in the cache already (as after `artfs get`)
    lb = lazies(lstore)
    n = _ranges(lstore)
    with lb.open(PROJECT, d, size) as h:
        def reader(k: int) -> None:
            rng = random.Random(k)
            for _ in range(500):
                off = rng.randrange(size)
                assert h.read(off, 65536) == data[off : off + 65536]

        ts = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert _ranges(lstore) == n


def test_bad_arguments_raise_artfs_errors(lstore, lazies):
    data = _data(MiB)
    d = _put(lstore, data)
    lb = lazies(lstore)
    with pytest.raises(ArtfsError):
        lb.open(PROJECT, "md5:abc", 10)
    with lb.open(PROJECT, d, len(data)) as h:
        with pytest.raises(ArtfsError):
            h.read(-1, 10)
        assert h.read(0, len(data)) == data
        lb.drain(10)
        assert lb.is_complete(d)
        with pytest.raises(ArtfsError):
            h.read(-1, 10)  # also on the hot path of a complete blob


def test_readahead_can_be_disabled(lstore, lazies):
    data = _data(8 * MiB)
    d = _put(lstore, data)
    lb = lazies(lstore, readahead_max=0)
    with lb.open(PROJECT, d, len(data)) as h:
        for off in range(0, 4 * MiB, 128 << 10):
            assert h.read(off, 128 << 10) == data[off : off + (128 << 10)]
    lb.drain(10)
    assert _ranges(lstore) == 4


_CHILD = r"""
import sys, artfs
from artfs._lazy import LazyBlobs
store_dir, cache_dir, digest, size, expect = sys.argv[1:6]
size = int(size)
data = open(expect, "rb").read()
store = artfs.Store(store_dir, cache=artfs.Cache(cache_dir))
with LazyBlobs(store, chunk_size=256 << 10) as lb:
    with lb.open("proj", digest, size) as h:
        for step in (300_000, 1 << 20):
            for off in range(0, size, step):
                assert h.read(off, step) == data[off:off + step], off
    lb.drain(30)
print(store.backend.counter["range"])
"""


def test_two_processes_share_one_cache(tmp_path, cache, lazies):
    import subprocess
    import sys

    size = 16 * MiB + 3
    data = _data(size, 15)
    st = artfs.Store(str(tmp_path / "store"), cache=cache)
    d = _put(st, data)
    expect = tmp_path / "expect"
    expect.write_bytes(data)
    args = [sys.executable, "-c", _CHILD, str(tmp_path / "store"), cache.root, d, str(size), str(expect)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    lb = lazies(st, chunk_size=256 << 10)
    with lb.open(PROJECT, d, size) as h:  # and this process too, at the same time
        assert _read_all(h, size, 200_000) == data
    lb.drain(30)
    counts = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        counts.append(int(out.split()[-1]))
    assert lb.is_complete(d)
    assert cache.verify(d)
    nchunks = -(-size // (256 << 10))
    assert sum(counts) + _ranges(st) <= 3 * nchunks  # never worse than each fetching it alone
    assert os.listdir(os.path.join(cache.root, "partial")) == []


def test_two_instances_race_to_completion(tmp_path, cache, lazies):
    size = 6 * MiB + 1
    data = _data(size, 16)
    stores = [artfs.Store(str(tmp_path / "store"), cache=cache) for _ in range(2)]
    d = _put(stores[0], data)
    lbs = [lazies(s, chunk_size=128 << 10) for s in stores]
    errors: list[BaseException] = []

    def reader(lb: LazyBlobs, k: int) -> None:
        try:
            with lb.open(PROJECT, d, size) as h:
                offs = list(range(0, size, 64 << 10))
                random.Random(k).shuffle(offs)
                for off in offs:
                    assert h.read(off, 64 << 10) == data[off : off + (64 << 10)]
                # keep the handle open until the blob is complete, reading through the switch
                deadline = time.monotonic() + 10
                while not lb.is_complete(d) and time.monotonic() < deadline:
                    assert h.read(size - 10, 10) == data[-10:]
                assert h.read(0, size) == data
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=reader, args=(lbs[k % 2], k)) for k in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors
    for lb in lbs:
        assert lb.drain(10)
    assert cache.verify(d)
    assert os.listdir(os.path.join(cache.root, "partial")) == []


# --------------------------------------------------------------------------------------------
# random reads in big files (HDF5, LMDB, parquet row groups, zarr chunks)
# --------------------------------------------------------------------------------------------


def test_small_random_reads_fetch_what_they_read(lstore, lazies):
    """A small read at a random offset costs one ranged GET of its own bytes, not its chunk; once
    a chunk's worth of one chunk was read that way, it is fetched whole and served from the cache."""
    size = 128 * MiB
    data = _data(size, 40)
    d = _put(lstore, data)
    lb = lazies(lstore)
    rng = random.Random(4)
    read = 0
    with lb.open(PROJECT, d, size) as h:
        # distinct chunks 8 MiB apart or more (closer reads count as sequential), not the start
        for c in rng.sample(range(8, 128, 8), 15):
            n = rng.choice([4096, 16 << 10, 100_000, 256 << 10])
            off = c * MiB + rng.randrange(0, MiB - n)
            before = _ranges(lstore)
            assert h.read(off, n) == data[off : off + n]
            assert _ranges(lstore) - before == 1
            read += n
        lb.drain(10)
        assert lb.stats["direct_reads"] == 15
        assert lb.stats["fetched_bytes"] == read  # <= 2x the bytes read: here exactly them
    with lb.open(PROJECT, d, size) as h:
        # a hot region read at random (two far chunks in turn): once random reads fetched a
        # chunk's worth of one chunk, the next read of it fetches the chunk into the cache
        a, b, k = 60 * MiB, 100 * MiB, 256 << 10
        for i in range(4):
            assert h.read(a + i * k, k) == data[a + i * k : a + (i + 1) * k]
            assert h.read(b + i * k, 1000) == data[b + i * k : b + i * k + 1000]
        assert lb.stats["direct_reads"] == 15 + 8
        assert h.read(a + 100, 1000) == data[a + 100 : a + 1100]  # the chunk, fetched whole
        lb.drain(10)
        assert lb.stats["fetched_bytes"] <= read + 4 * k + 4 * 1000 + 2 * MiB  # the chunk (and one ahead)
        before = _ranges(lstore)
        assert h.read(b + 5000, 1000) == data[b + 5000 : b + 6000]  # far away: random again
        assert h.read(a + 5000, 1000) == data[a + 5000 : a + 6000]
        assert _ranges(lstore) == before + 1  # chunk a from the cache now, b one GET


def test_reads_at_every_offset_return_the_right_bytes(store, lazies):
    """Reads of one page and a bit at every offset a prime apart, in random order: small random
    reads (fetched exactly), reads of chunks already cached or being fetched, across chunk edges."""
    size = MiB + 999
    data = _data(size, 41)
    d = _put(store, data)
    lb = lazies(store, chunk_size=128 << 10)
    offsets = list(range(0, size, 4093))
    random.Random(5).shuffle(offsets)
    with lb.open(PROJECT, d, size) as h:
        for off in offsets:
            assert h.read(off, 4097) == data[off : off + 4097], off
    lb.drain(10)
    assert 0 < lb.stats["direct_reads"] < len(offsets)
