"""Benchmark: reading through the mount versus reading the cache file directly; index memory.

Not part of the test run. ``.venv/bin/python tests/bench/bench_mount.py [--size-mb 1024] [--entries 1000000]``
(as root, so the mount's read-ahead can be set). Prints:

* sequential read throughput of one large file: cold (fetched lazily from a local store into the
  cache), warm (complete in the cache, the mount's page cache dropped) at several read-ahead
  settings, a page-cache re-read (``keep_cache``), and a plain read of the cache file for scale;
* memory and build time of the directory index of a version with ``--entries`` files.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from artfs import Artifact, Cache, Entry, Manifest, Store  # noqa: E402
from artfs._mounts import find_mount  # noqa: E402
from artfsd.testing import MountProcess  # noqa: E402
from artfsd.tree import VersionTree  # noqa: E402

MiB = 1 << 20


def read_all(path: str, bufsize: int = MiB) -> float:
    """Seconds to read ``path`` sequentially with ``bufsize`` reads."""
    buf = bytearray(bufsize)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t0


def drop(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def set_read_ahead(mnt: str, kb: int) -> bool:
    info = find_mount(mnt)
    try:
        with open(f"/sys/class/bdi/{info.device}/read_ahead_kb", "w") as f:  # type: ignore[union-attr]
            f.write(str(kb))
        return True
    except OSError:
        return False


def bench_reads(size: int, tmp: str) -> None:
    src = os.path.join(tmp, "src")
    os.makedirs(src)
    block = os.urandom(4 * MiB)
    with open(os.path.join(src, "big.bin"), "wb") as f:
        for i in range(size // len(block)):
            f.write(i.to_bytes(8, "little") + block[8:])
    store = Store(os.path.join(tmp, "store"), cache=Cache(os.path.join(tmp, "wcache")))
    art = Artifact("big", type="model")
    art.add_dir(src)
    store.log_artifact(art, project="bench")
    mcache = os.path.join(tmp, "mcache")
    gb = size / 1e9
    with MountProcess(store.url, os.path.join(tmp, "mnt"), cache_dir=mcache) as m:
        path = m.path("bench", "big", "v0", "big.bin")
        digest = os.getxattr(path, "user.artfs.digest").decode()
        blob = Cache(mcache).path(digest)
        print(f"file: {size / MiB:.0f} MiB")
        t = read_all(path)
        print(f"  cold, fetched lazily from a local store  {gb / t:6.2f} GB/s")
        for _ in range(100):  # the verification after the last chunk
            if os.path.exists(blob):
                break
            time.sleep(0.1)
        read_all(blob)
        t = read_all(blob)
        print(f"  the cache file read directly (warm)      {gb / t:6.2f} GB/s")
        for kb in (128, 1024, 4096, 16384):
            if not set_read_ahead(m.mountpoint, kb):
                print("  (cannot set read_ahead_kb: not root)")
                break
            best = 0.0
            r0 = m.stats()["reads"]
            for _ in range(5):
                drop(path)
                best = max(best, gb / read_all(path))
            per = size * 5 / max(1, m.stats()["reads"] - r0) / 1024
            print(f"  mount, warm cache, read_ahead_kb={kb:<6}  {best:6.2f} GB/s  (best of 5; {per:.0f} KiB per request)")
        read_all(path)
        t = read_all(path)
        print(f"  mount, page-cache re-read (keep_cache)   {gb / t:6.2f} GB/s")
        print(f"  daemon: {m.stats()}")


def bench_index(n: int) -> None:
    entries = []
    for i in range(n):
        entries.append(Entry(f"train/shard{i % 100:03d}/class{i % 7}/img{i:08d}.png",
                             f"xxh128:{i:032x}", 1000 + i % 5000, False))
    m = Manifest("p", "a", 0, "dataset", entries, "xxh128:" + "0" * 32, "2024-01-01T00:00:00Z")
    gc.collect()
    t0 = time.perf_counter()
    tree = VersionTree(m)
    t = time.perf_counter() - t0
    del tree
    gc.collect()
    tracemalloc.start()
    tree = VersionTree(m)
    del m, entries
    gc.collect()
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"index of {n} entries ({tree.ndirs} dirs): built in {t:.2f} s, {cur / n:.0f} bytes/entry "
          f"({cur / MiB:.0f} MiB; peak while building {peak / MiB:.0f} MiB, besides the manifest)")
    t0 = time.perf_counter()
    for i in range(0, n, max(1, n // 100_000)):
        d = tree.lookup(0, b"train")
        assert d is not None
    print(f"  lookup: {(time.perf_counter() - t0) / (n // max(1, n // 100_000)) * 1e6:.2f} µs")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--dir", default=None)
    a = p.parse_args()
    bench_index(a.entries)
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        bench_reads(a.size_mb * MiB, tmp)


if __name__ == "__main__":
    main()
