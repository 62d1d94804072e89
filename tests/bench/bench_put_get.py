"""Benchmark: ``artfs put`` / ``artfs get`` on the local store versus ``cp -r`` of the same tree.

Not part of the test run. ``.venv/bin/python tests/bench/bench_put_get.py [--scale 1.0] [--dir D]``
prints a table of throughputs and ratios measured in one run, plus the digest's throughput beside
MD5's (what W&B hashes with). Everything is measured with a warm page cache, the same for artfs and
``cp``, so the ratios compare software, not the disk.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import xxhash


def make_mixed_tree(root: str, total: int) -> int:
    """A tree of mixed sizes: a few large files, many medium, many small, in nested folders."""
    rng = random.Random(1)
    sizes = []
    left = total
    plan = [(0.5, 64 << 20), (0.3, 1 << 20), (0.15, 64 << 10), (0.05, 4 << 10)]
    for share, size in plan:
        n = max(1, int(total * share) // size)
        sizes += [size] * n
        left -= n * size
    block = os.urandom(1 << 20)
    written = 0
    for i, size in enumerate(sizes):
        d = os.path.join(root, f"part{i % 10}", f"sub{i % 7}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06d}.bin"), "wb") as f:
            f.write(i.to_bytes(8, "little"))  # every file distinct
            left_f = size - 8
            while left_f > 0:
                off = rng.randrange(0, len(block) - 1)
                chunk = block[off : off + min(left_f, len(block) - off)]
                f.write(chunk)
                left_f -= len(chunk)
        written += size
    return written


def make_small_tree(root: str, n: int, size: int = 4096) -> int:
    for i in range(n):
        d = os.path.join(root, f"d{i // 500:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06d}.bin"), "wb") as f:
            f.write(i.to_bytes(8, "little") + os.urandom(size - 8))
    return n * size


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def artfs(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "artfs.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def bench_tree(label: str, src: str, nbytes: int, work: str) -> list[tuple[str, float, float]]:
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, ARTFS_STORE=os.path.join(work, "store"), ARTFS_CACHE_DIR=os.path.join(work, "cache"))
    # reference: cp -r of the same tree on this disk
    t_cp = min(timed(lambda: subprocess.run(["cp", "-r", src, os.path.join(work, f"cp{i}")], check=True))
               for i in range(2))
    t_put = timed(lambda: artfs("put", "-n", "bench/tree", "-t", "dataset", src, env=env))
    shutil.rmtree(env["ARTFS_CACHE_DIR"])
    t_get_cold = timed(lambda: artfs("get", "bench/tree:latest", "--root", os.path.join(work, "get1"), env=env))
    t_get_warm = timed(lambda: artfs("get", "bench/tree:latest", "--root", os.path.join(work, "get2"), env=env))
    rows = []
    for name, t in [("cp -r", t_cp), ("put", t_put), ("get (cache cold)", t_get_cold), ("get (cache warm)", t_get_warm)]:
        rows.append((f"{label}: {name}", nbytes / t / 1e6, t_cp / t))
    return rows


def bench_digest() -> list[tuple[str, float, float]]:
    buf = os.urandom(256 << 20)
    rows = []
    t_x = min(timed(lambda: xxhash.xxh3_128(buf).hexdigest()) for _ in range(3))
    t_m = min(timed(lambda: hashlib.md5(buf).hexdigest()) for _ in range(3))
    t_s = min(timed(lambda: hashlib.sha256(buf).hexdigest()) for _ in range(3))
    rows.append(("digest xxh128 (artfs)", len(buf) / t_x / 1e6, t_m / t_x))
    rows.append(("digest md5 (W&B)", len(buf) / t_m / 1e6, 1.0))
    rows.append(("digest sha256", len(buf) / t_s / 1e6, t_m / t_s))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 1 GiB / 10,000-file sizes")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir on /tmp's disk)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="artfs-bench-", dir=a.dir)
    try:
        rows = bench_digest()
        big = os.path.join(work, "big-src")
        nb = make_mixed_tree(big, int((1 << 30) * a.scale))
        rows += bench_tree(f"mixed {nb / 2**30:.2f} GiB", big, nb, os.path.join(work, "big"))
        small = os.path.join(work, "small-src")
        ns = make_small_tree(small, int(10000 * a.scale))
        rows += bench_tree(f"{int(10000 * a.scale)} x 4 KiB", small, ns, os.path.join(work, "small"))
        print(f"{'case':40} {'MB/s':>10} {'ratio':>8}")
        for name, mbs, ratio in rows:
            print(f"{name:40} {mbs:10.0f} {ratio:8.2f}")
        print("ratio: against cp -r of the same tree (tree cases) or MD5 (digests); higher is better")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
