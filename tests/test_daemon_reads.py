"""The mount's read side in-process, without a kernel mount (beside tests/test_daemon_inprocess.py).

``Operations`` as ``artfsd.main`` builds them, over a real local store written with the library
and the mount's own cache; requests go through the router as pyfuse3 would send them, under trio.
What is checked is what a reader of the mount would see (the bytes, the errno) and what
``user.artfs.stats`` reports (what was fetched, how the file was opened): opens and reads of
blobs complete in the cache, partial and missing; a cache file changed on disk, dropped and
fetched again; small files fetched whole and a directory's prefetch; and the one registry of
fetches in flight (two readers of one chunk, or of one small file, fetch it once). The store's
backend is the real local one; where a test must catch two readers while a fetch is in flight,
the backend's fetches wait for the test to let them go (:class:`GatedBackend`).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio
import trio.testing

from artfs import Artifact, Cache, CorruptData, Store
from artfs.backends.local import LocalBackend
from artfs.lowlevel import LazyBlobs, MountConfig, blob_key
from artfsd.fs import Operations
from artfsd.prefetch import DirPrefetch, small_files_of
from artfsd.tree import VersionTree

MiB = 1 << 20
SMALL_FILES = {f"shard-{i:02d}.bin": os.urandom(1000 + i) for i in range(12)}
BIG = os.urandom(3 * MiB + 12345)  # chunked: larger than the small-file rule's 1 MiB


class Ctx:
    """What pyfuse3 passes as the request context."""

    uid, gid, pid, umask = os.getuid(), os.getgid(), os.getpid(), 0o022


CTX = Ctx()


class GatedBackend(LocalBackend):
    """The local store; while ``gate`` is clear, its fetches wait (a store that is slow to answer).
    ``calls`` lists each fetch as (kind, key, offset) as it starts."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[tuple[str, str, int]] = []
        self.entered = threading.Event()

    def _enter(self, what: tuple[str, str, int]) -> None:
        self.calls.append(what)
        self.entered.set()
        self.gate.wait(30)

    def get_blob(self, key: str) -> bytes:
        self._enter(("blob", key, 0))
        return super().get_blob(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._enter(("range", key, offset))
        return super().get_range(key, offset, length)

    def fetch_range_into(self, key: str, offset: int, length: int, fd: int, fd_offset: int) -> int:
        self._enter(("range", key, offset))
        return super().fetch_range_into(key, offset, length, fd, fd_offset)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "writer-cache")))
    src = tmp_path / "src"
    for rel, data in {"README.md": b"# bikes\n", "big.bin": BIG,
                      **{f"train/{k}": v for k, v in SMALL_FILES.items()}}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    art = Artifact("bikes", type="dataset")
    art.add_dir(str(src))
    s.log_artifact(art, project="cycling")
    return s


def make_ops(store: Store, tmp_path: Path, *, backend: LocalBackend | None = None, **config: Any) -> Operations:
    """Operations as ``artfsd.main`` builds them, over the mount's own cache."""
    mstore = Store(backend=backend, cache=Cache(str(tmp_path / "mount-cache"))) if backend is not None else \
        Store(store.url, cache=Cache(str(tmp_path / "mount-cache")))
    cfg = MountConfig(**{"store_url": store.url, "mountpoint": str(tmp_path / "mnt"), "read_only": True,
                         "refresh": 0.0, "timeout": 10.0, "lineage": False, **config})
    return Operations(mstore, LazyBlobs(mstore, timeout=cfg.timeout), cfg)


async def walk(ops: Operations, path: str) -> pyfuse3.EntryAttributes:
    attr = await ops.getattr(pyfuse3.ROOT_INODE, CTX)
    for part in filter(None, path.split("/")):
        attr = await ops.lookup(attr.st_ino, part.encode(), CTX)
    return attr


async def open_file(ops: Operations, path: str) -> int:
    info = await ops.open((await walk(ops, path)).st_ino, os.O_RDONLY, CTX)
    return int(info.fh)


async def read_all(ops: Operations, fh: int, size: int, step: int = 128 << 10) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = await ops.read(fh, len(out), step)
        if not chunk:
            break
        out += bytes(chunk)
    return bytes(out)


async def cat(ops: Operations, path: str) -> bytes:
    fh = await open_file(ops, path)
    try:
        return await read_all(ops, fh, 1 << 40)
    finally:
        await ops.release(fh)


def digest_of(store: Store, path: str) -> str:
    (e,) = [e for e in store.manifest("cycling", "bikes", 0).entries if e.path == path]
    assert e.digest is not None
    return e.digest


async def until(cond: Any) -> None:
    """Wait (on the loop) until ``cond()``, within the test's own bound."""
    with trio.fail_after(20):
        while not cond():
            await trio.sleep(0.005)


# -- complete, partial and missing blobs ----------------------------------------------------------------
def test_a_complete_blob_opens_on_the_loop_and_is_read_without_the_store(store: Store, tmp_path: Path) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path)
        assert await cat(ops, "cycling/bikes/v0/big.bin") == BIG  # cold: fetched in chunks
        assert ops.blobs.drain(10) and ops.blobs.is_complete(digest_of(store, "big.bin"))
        before = ops.stats_doc()["fetched_bytes"]
        loop_opens = ops.stats_doc()["loop_opens"]
        fh = await open_file(ops, "cycling/bikes/v0/big.bin")
        f = ops.files[fh]
        assert f.warm and f.handle.fd >= 0 and not f.handle.blocking_close  # its own descriptor
        assert await read_all(ops, fh, len(BIG), 1 << 20) == BIG
        await ops.release(fh)
        assert ops.stats_doc()["loop_opens"] == loop_opens + 1
        assert ops.stats_doc()["fetched_bytes"] == before  # nothing fetched
        assert ops.blobs.open_digests() == set()

    trio.run(main)


def test_a_partial_blob_reads_through_its_entry_and_becomes_complete(store: Store, tmp_path: Path) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path)
        d = digest_of(store, "big.bin")
        fh = await open_file(ops, "cycling/bikes/v0/big.bin")
        f = ops.files[fh]
        assert not f.warm and f.handle.fd == -1 and f.handle.blocking_close  # the blob's shared entry
        assert bytes(await ops.read(fh, 2 * MiB + 7, 4096)) == BIG[2 * MiB + 7: 2 * MiB + 7 + 4096]
        assert ops.blobs.open_digests() == {d} and not ops.blobs.is_complete(d)
        assert await read_all(ops, fh, len(BIG)) == BIG
        assert ops.blobs.drain(10) and ops.blobs.is_complete(d)
        assert f.handle.fd >= 0  # complete now: the entry's descriptor is the verified blob's
        await ops.release(fh)
        assert ops.blobs.open_digests() == set()
        fetched = ops.stats_doc()["fetched_bytes"]
        assert len(BIG) <= fetched < 2 * len(BIG)  # the random read's bytes, then every chunk once

    trio.run(main)


def test_a_cold_sequential_read_fetches_each_byte_once(store: Store, tmp_path: Path) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path)
        fh = await open_file(ops, "cycling/bikes/v0/big.bin")
        assert await read_all(ops, fh, len(BIG), 128 << 10) == BIG  # the kernel's request size
        await ops.release(fh)
        assert ops.blobs.drain(10)
        stats = ops.stats_doc()
        assert stats["fetched_bytes"] == len(BIG) and stats["direct_reads"] == 0

    trio.run(main)


@pytest.mark.parametrize("path", ["big.bin", "train/shard-03.bin"])
def test_a_blob_missing_from_the_store_gives_eio_and_names_it(store: Store, tmp_path: Path, path: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    d = digest_of(store, path)
    store.backend.delete(blob_key("cycling", d))  # the store lost it; the manifest still lists it

    async def main() -> None:
        ops = make_ops(store, tmp_path)
        with pytest.raises(pyfuse3.FUSEError) as ei:
            fh = await open_file(ops, f"cycling/bikes/v0/{path}")  # a small file is fetched at open
            try:
                await ops.read(fh, 0, 4096)
            finally:
                await ops.release(fh)
        assert ei.value.errno == errno.EIO
        assert not ops.store.cache.has(d)

    with caplog.at_level(logging.WARNING):
        trio.run(main)
    assert d in caplog.text and "missing" in caplog.text


def test_a_cache_file_changed_on_disk_is_dropped_and_fetched_again(store: Store, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path)
        d = digest_of(store, "big.bin")
        assert await cat(ops, "cycling/bikes/v0/big.bin") == BIG
        assert ops.blobs.drain(10)
        path = ops.store.cache.path(d)
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:  # damage it (the mtime moves: its record no longer matches)
            f.seek(MiB)
            f.write(b"garbage!")
        ranges = ops.store.backend.counter["range"]
        loop_opens = ops.stats_doc()["loop_opens"]
        assert await cat(ops, "cycling/bikes/v0/big.bin") == BIG  # hashed, dropped, fetched again
        assert ops.stats_doc()["loop_opens"] == loop_opens  # not served as it was
        assert ops.store.backend.counter["range"] > ranges
        assert ops.blobs.drain(10) and ops.store.cache.verify(d)

    with caplog.at_level(logging.WARNING):
        trio.run(main)
    assert "changed on disk after it was verified" in caplog.text


def test_an_unchanged_blob_with_a_stale_record_is_hashed_once_and_served(store: Store, tmp_path: Path) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path)
        d = digest_of(store, "big.bin")
        assert await cat(ops, "cycling/bikes/v0/big.bin") == BIG
        assert ops.blobs.drain(10)
        path = ops.store.cache.path(d)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: the record is stale
        before = ops.stats_doc()["fetched_bytes"]
        assert await cat(ops, "cycling/bikes/v0/big.bin") == BIG  # hashed again in a thread, kept
        assert ops.stats_doc()["fetched_bytes"] == before
        loop_opens = ops.stats_doc()["loop_opens"]
        assert await cat(ops, "cycling/bikes/v0/big.bin") == BIG  # re-recorded: on the loop again
        assert ops.stats_doc()["loop_opens"] == loop_opens + 1

    trio.run(main)


# -- small files fetched whole, and a directory's ahead of its reader -------------------------------------
def _small(store: Store) -> list[tuple[str, int]]:
    m = store.manifest("cycling", "bikes", 0)
    return [(e.digest, e.size) for e in m.entries if e.path.startswith("train/") and e.digest]


def test_a_small_blob_is_fetched_once_whole_and_verified(store: Store, tmp_path: Path) -> None:
    mstore = Store(store.url, cache=Cache(str(tmp_path / "mount-cache")))
    with LazyBlobs(mstore, timeout=10.0) as lb:
        (digest, size), *_ = _small(store)
        results: list[bool] = []
        threads = [threading.Thread(target=lambda: results.append(lb.fetch_whole("cycling", digest, size)))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False] * 7 + [True]  # one fetch; the others waited for it or found it
        assert lb.stats["small_fetches"] == 1 and mstore.cache.has(digest)
        assert lb.fetch_whole("cycling", digest, size) is False  # cached: no store request
        other, other_size = _small(store)[1]
        with pytest.raises(CorruptData, match="manifest says"):  # a manifest that lies about the size
            lb.fetch_whole("cycling", other, other_size + 100)
        assert not mstore.cache.has(other)
        with pytest.raises(CorruptData, match="missing"):
            lb.fetch_whole("cycling", "xxh128:" + "ab" * 16, 10)
        assert not mstore.cache.has("xxh128:" + "ab" * 16)
        with lb.open("cycling", other, other_size) as h:  # the open fetches it whole (one GET)
            assert h.fd >= 0 and lb.stats["small_fetches"] == 2


def test_prefetch_fetches_a_directory_once_and_within_its_budget(store: Store, tmp_path: Path) -> None:
    mstore = Store(store.url, cache=Cache(str(tmp_path / "mount-cache")))
    tree = VersionTree(store.manifest("cycling", "bikes", 0))
    train = tree.dir_of(tree.lookup(0, b"train"))  # type: ignore[arg-type]
    files = small_files_of(tree, train, 1 << 20)
    assert sorted(files) == sorted(_small(store))

    class V:
        key = ("cycling", "bikes", 0)

    with LazyBlobs(mstore, timeout=10.0) as lb:
        dirs = DirPrefetch(lb)
        assert dirs.start(V, tree, train) == len(SMALL_FILES)
        assert dirs.start(V, tree, train) == 0  # once per directory
        assert lb.drain(20)
        assert lb.stats["prefetched"] == len(SMALL_FILES) and lb.stats["prefetch_errors"] == 0
        assert all(mstore.cache.has(d) for d, _ in files)

    tight = Store(store.url, cache=Cache(str(tmp_path / "tight-cache"), max_size=4 * 1024 * 4))
    with LazyBlobs(tight, timeout=10.0) as lb:
        lb.prefetch("cycling", files)  # a quarter of the bound: 4 KiB of the 12 KiB
        assert lb.drain(20)
        fetched = sum(size for d, size in files if tight.cache.has(d))
        assert 0 < fetched <= 4 * 1024 and lb.stats["prefetched"] < len(SMALL_FILES)


@pytest.mark.parametrize("prefetch", [True, False])
def test_reading_one_small_file_prefetches_its_directory_unless_turned_off(store: Store, tmp_path: Path,
                                                                          prefetch: bool) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path, prefetch=prefetch)
        assert await cat(ops, "cycling/bikes/v0/train/shard-00.bin") == SMALL_FILES["shard-00.bin"]
        assert ops.blobs.drain(20)
        stats = ops.stats_doc()
        assert stats["prefetched"] == (len(SMALL_FILES) - 1 if prefetch else 0)
        assert stats["small_fetches"] == (len(SMALL_FILES) if prefetch else 1)  # each blob once
        cached = [d for d, _ in _small(store) if ops.store.cache.has(d)]
        assert len(cached) == (len(SMALL_FILES) if prefetch else 1)
        for name, data in SMALL_FILES.items():  # the epoch goes on from the cache, on the loop
            assert await cat(ops, f"cycling/bikes/v0/train/{name}") == data
        assert ops.stats_doc()["small_fetches"] == len(SMALL_FILES)

    trio.run(main)


# -- one fetch in flight per chunk or small blob ----------------------------------------------------------
def test_two_readers_of_one_chunk_fetch_it_once(store: Store, tmp_path: Path) -> None:
    backend = GatedBackend(store.backend.root)  # type: ignore[attr-defined]
    off = 2 * MiB  # a whole chunk: fetched into the cache (a small random read would be one exact GET each)

    async def main() -> None:
        ops = make_ops(store, tmp_path, backend=backend)
        fa = await open_file(ops, "cycling/bikes/v0/big.bin")
        fb = await open_file(ops, "cycling/bikes/v0/big.bin")
        got: dict[str, bytes] = {}

        async def read(name: str, fh: int) -> None:
            got[name] = bytes(await ops.read(fh, off, MiB))

        backend.gate.clear()
        async with trio.open_nursery() as n:
            n.start_soon(read, "a", fa)
            await until(backend.entered.is_set)  # a's fetch of the chunk is at the store
            n.start_soon(read, "b", fb)
            await until(lambda: ops.blobs.stats["joined_fetches"] >= 1)  # b waits for a's fetch
            backend.gate.set()
        assert got["a"] == got["b"] == BIG[off: off + MiB]
        key = backend.calls[0][1]
        assert [c for c in backend.calls if c == ("range", key, 2 * MiB)] == [("range", key, 2 * MiB)]
        await ops.release(fa)
        await ops.release(fb)

    trio.run(main)


def test_a_reader_of_a_small_file_being_fetched_waits_for_that_fetch_on_the_loop(store: Store,
                                                                                 tmp_path: Path) -> None:
    backend = GatedBackend(store.backend.root)  # type: ignore[attr-defined]

    async def main() -> None:
        ops = make_ops(store, tmp_path, backend=backend, prefetch=False)
        path = "cycling/bikes/v0/train/shard-05.bin"
        got: list[bytes] = []

        async def reader() -> None:
            got.append(await cat(ops, path))

        backend.gate.clear()
        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await until(backend.entered.is_set)  # the first open's whole fetch is at the store
            threads = ops.versions.files.read_limiter.borrowed_tokens
            n.start_soon(reader)
            await until(lambda: ops.blobs.stats["joined_fetches"] >= 1)
            await trio.testing.wait_all_tasks_blocked()
            # the second open waits on the loop: no worker thread of its own
            assert ops.versions.files.read_limiter.borrowed_tokens == threads
            backend.gate.set()
        assert got == [SMALL_FILES["shard-05.bin"]] * 2
        assert [c[0] for c in backend.calls] == ["blob"]  # fetched once
        assert ops.stats_doc()["small_fetches"] == 1

    trio.run(main)
