"""Benchmark: sequential reads of one large blob through ``LazyBlobs`` vs reading the store file.

Not part of the test run. ``.venv/bin/python tests/bench/bench_lazy.py [--size-mb 512] [--dir D]``

For each read size (128 KiB, as FUSE sends with the default read-ahead, and 1 MiB, as it sends
with ``read_ahead_kb=1024``) it prints MB/s of:

* ``copy``       copying the store file to a new file in the cache (the floor of any cold read:
                 the bytes must be written into the cache once),
* ``direct``     ``pread`` of the blob's file in the local store (the ceiling),
* ``lazy cold``  LazyBlobs with an empty cache: chunks are fetched with range reads, written to the
                 partial file and read back, then verified into a complete cache blob,
* ``lazy warm``  LazyBlobs once the blob is complete in the cache (the hot path).

The store file is in the page cache for every row (it was just written), so the numbers compare
software paths, not the disk; but a cold read writes the blob into the cache, and once the kernel's
dirty-page limit is reached that runs at the disk's write speed. Each phase starts after ``sync``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import artfs  # noqa: E402
from artfs._layout import blob_key  # noqa: E402
from artfs._lazy import LazyBlobs  # noqa: E402

MB = 1_000_000


def read_direct(path: str, size: int, step: int) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        off = 0
        while off < size:
            off += len(os.pread(fd, step, off))
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def read_lazy(lb: LazyBlobs, digest: str, size: int, step: int) -> float:
    t0 = time.perf_counter()
    with lb.open("bench", digest, size) as h:
        off = 0
        while off < size:
            n = len(h.read(off, step))
            if not n:
                raise RuntimeError(f"short read at {off}")
            off += n
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=512, help="blob size in MiB (default 512)")
    ap.add_argument("--dir", default=None, help="where to put the store and cache (default: a temp dir)")
    args = ap.parse_args()
    size = args.size_mb << 20
    base = tempfile.mkdtemp(prefix="artfs-bench-lazy-", dir=args.dir)
    try:
        store = artfs.Store(os.path.join(base, "store"), cache=artfs.Cache(os.path.join(base, "cache")))
        block = os.urandom(4 << 20)
        data = bytearray()
        for i in range(size // len(block)):
            data += i.to_bytes(8, "little") + block[8:]
        data += block[: size - len(data)]
        data = bytes(data)
        digest = artfs.digest_bytes(data)
        store.backend.put(blob_key("bench", digest), data)
        del data
        src = store.backend._path(blob_key("bench", digest))
        read_direct(src, size, 1 << 20)  # warm the page cache

        print(f"sequential read of a {args.size_mb} MiB blob from a local store ({os.cpu_count()} CPUs)")
        print(f"{'read size':>10} {'path':>10} {'MB/s':>8} {'range GETs':>11}")
        os.sync()
        tmp = store.cache.tmp_path()
        t0 = time.perf_counter()
        shutil.copyfile(src, tmp)  # what fetching a whole blob into the cache costs at least
        t = time.perf_counter() - t0
        os.unlink(tmp)
        print(f"{'-':>10} {'copy':>10} {size / t / MB:8.0f} {'':>11}   (store file -> new cache file)")
        for step in [int(x) << 10 for x in os.environ.get("BENCH_STEPS_KIB", "128,1024").split(",")]:
            label = f"{step >> 10} KiB"
            os.sync()  # start each phase without a backlog of dirty pages to write back
            t = read_direct(src, size, step)
            print(f"{label:>10} {'direct':>10} {size / t / MB:8.0f} {'':>11}")
            store.cache.cleanup(0)  # cold cache
            assert not store.cache.has(digest)
            os.sync()
            with LazyBlobs(store) as lb:
                before = store.backend.counter["range"]
                t = read_lazy(lb, digest, size, step)
                gets = store.backend.counter["range"] - before
                t1 = time.perf_counter()
                lb.drain(120)
                verify = time.perf_counter() - t1
                assert lb.is_complete(digest)
                print(f"{label:>10} {'lazy cold':>10} {size / t / MB:8.0f} {gets:>11}"
                      f"   (+{verify:.2f} s to finish verifying in the background)")
                os.sync()
                t = read_lazy(lb, digest, size, step)
                print(f"{label:>10} {'lazy warm':>10} {size / t / MB:8.0f} {0:>11}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
