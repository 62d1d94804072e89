"""Benchmark: ``artfs put`` / ``artfs get`` on the local store versus ``cp -r`` of the same tree.

Not part of the test run. ``.venv/bin/python tests/bench/bench_put_get.py [--scale 1.0] [--reps 3]
[--dir D]`` prints, for (a) a 1 GiB tree of mixed sizes and (b) 10,000 files of 4 KiB:

* ``cp -r`` of the tree on this disk, and ``put`` / ``get`` (cache cold: fetched from the store
  into the cache and placed; cache warm: placed from the cache) through the CLI (a new process
  each time, as a user runs it: its start-up is included) and through the Python API (in this
  process), as seconds, throughput and ratio to ``cp -r`` (1.0 = as fast as ``cp -r``; higher
  is better). Every ``put`` goes to a new, empty store, every ``get`` to a new directory;
* the digest's throughput (XXH3-128) beside MD5's (what W&B hashes with) and SHA-256's.

``--many N`` instead times the case of issue 27: N files of a few bytes in ``--dirs`` (300)
directories, through the CLI only: ``cp -r`` and ``rsync -a`` of the tree, ``put`` into a new
store, ``put`` again after one file changed (the record of what was hashed makes it read one
file), ``get`` into a new directory; the median of ``--reps`` rounds, and the median of the
ratios to ``cp -r`` and ``rsync -a`` of the same round. Peak memory of each CLI step is printed
too (from ``wait4``'s rusage: the largest resident set of the step's process).

Each figure is the best of ``--reps`` rounds (the machine may be shared); the rounds interleave
the cases so that a slow moment hurts them alike. The page cache is warm for everyone (the source
tree was just written), and ``sync`` runs before each timed step, so no step pays for writing
back the previous one's data. Each ``get`` is checked against the source once (file count and bytes).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import xxhash  # noqa: E402

import artfs  # noqa: E402


def make_mixed_tree(root: str, total: int) -> int:
    """A tree of mixed sizes: a few large files, many medium, many small, in nested folders."""
    rng = random.Random(1)
    sizes = []
    plan = [(0.5, 64 << 20), (0.3, 1 << 20), (0.15, 64 << 10), (0.05, 4 << 10)]
    for share, size in plan:
        n = max(1, int(total * share) // size)
        sizes += [size] * n
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


def tree_summary(root: str) -> tuple[int, int]:
    files = nbytes = 0
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            files += 1
            nbytes += os.path.getsize(os.path.join(dirpath, fn))
    return files, nbytes


def timed(fn: Callable[[], object]) -> float:
    os.sync()  # write back what earlier steps left dirty, outside the timing
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cli(*args: str, env: dict[str, str]) -> None:
    r = subprocess.run([sys.executable, "-m", "artfs.cli", *args], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    if r.returncode:
        raise SystemExit(f"artfs {args[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")


def bench_tree(label: str, src: str, nbytes: int, work: str, reps: int) -> list[tuple[str, float, float, float]]:
    os.makedirs(work, exist_ok=True)
    expect = tree_summary(src)
    times: dict[str, list[float]] = {}
    checked: set[str] = set()

    def note(name: str, t: float, out: str | None = None) -> None:
        times.setdefault(name, []).append(t)
        if out is not None and name not in checked:
            got = tree_summary(out)
            if got != expect:
                raise SystemExit(f"{label}: {name} placed {got} (files, bytes), expected {expect}")
            checked.add(name)

    for r in range(reps):
        d = os.path.join(work, f"round{r}")
        os.makedirs(d)
        note("cp -r", timed(lambda: subprocess.run(["cp", "-r", src, os.path.join(d, "cp")], check=True)),
             os.path.join(d, "cp"))
        # the CLI, as a user runs it
        env = dict(os.environ, ARTFS_STORE=os.path.join(d, "store-cli"), ARTFS_CACHE_DIR=os.path.join(d, "cache-cli"))
        note("put (CLI)", timed(lambda: cli("put", "-n", "bench/tree", "-t", "dataset", src, env=env)))
        shutil.rmtree(env["ARTFS_CACHE_DIR"])
        for name, out in (("get, cache cold (CLI)", "get-cli-1"), ("get, cache warm (CLI)", "get-cli-2")):
            root = os.path.join(d, out)
            note(name, timed(lambda: cli("get", "bench/tree:latest", "--root", root, env=env)), root)
        # the Python API, in this process
        store_dir, cache_dir = os.path.join(d, "store-api"), os.path.join(d, "cache-api")

        def put() -> None:
            store = artfs.Store(store_dir, cache=artfs.Cache(cache_dir))
            art = artfs.Artifact("tree", type="dataset")
            art.add_dir(src)
            store.log_artifact(art, project="bench")

        note("put (API)", timed(put))
        shutil.rmtree(cache_dir)
        for name, out in (("get, cache cold (API)", "get-api-1"), ("get, cache warm (API)", "get-api-2")):
            root = os.path.join(d, out)

            def get() -> None:
                store = artfs.Store(store_dir, cache=artfs.Cache(cache_dir))
                store.artifact("bench/tree:latest").download(root)

            note(name, timed(get), root)
        shutil.rmtree(d)
    t_cp = min(times["cp -r"])
    return [(f"{label}: {name}", min(ts), nbytes / min(ts) / 1e6, t_cp / min(ts)) for name, ts in times.items()]


def bench_digest() -> list[tuple[str, float, float, float]]:
    buf = os.urandom(256 << 20)
    t_x = min(timed(lambda: xxhash.xxh3_128(buf).hexdigest()) for _ in range(3))
    t_m = min(timed(lambda: hashlib.md5(buf).hexdigest()) for _ in range(3))
    t_s = min(timed(lambda: hashlib.sha256(buf).hexdigest()) for _ in range(3))
    return [("digest xxh128 (artfs)", t_x, len(buf) / t_x / 1e6, t_m / t_x),
            ("digest md5 (W&B)", t_m, len(buf) / t_m / 1e6, 1.0),
            ("digest sha256", t_s, len(buf) / t_s / 1e6, t_m / t_s)]


def make_many(root: str, n: int, dirs: int) -> None:
    for i in range(n):
        d = os.path.join(root, f"d{i % dirs:04d}")
        if i < dirs:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:07d}.txt"), "wb") as f:
            f.write(b"file %d\n" % i)


def timed_rss(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak resident MiB) of one process run to its end."""
    os.sync()
    t = time.perf_counter()
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{args[:4]} failed ({p.returncode}): {p.stderr.read().decode(errors='replace') if p.stderr else ''}")
    return dt, ru.ru_maxrss / 1024


def bench_many(n: int, dirs: int, work: str, reps: int) -> None:
    """Each round, in turn: ``cp -r`` and ``rsync -a`` of the tree, ``put`` into a new store, ``put``
    again after one file changed, ``get`` into a new directory. Nothing is deleted until the
    end (a deletion just before a step would slow that step's file creations: the file system
    skips inodes freed in the last minute), and ``sync`` runs before each step."""
    src = os.path.join(work, "src")
    make_many(src, n, dirs)
    time.sleep(0.2)  # older than the record's granularity: the first put records every file
    times: dict[str, list[tuple[float, float]]] = {}
    artfs_cli = [sys.executable, "-m", "artfs.cli"]
    rsync = shutil.which("rsync")
    ratios: dict[str, list[float]] = {}
    for r in range(reps):
        d = os.path.join(work, f"round{r}")
        os.makedirs(d)
        env = dict(os.environ, ARTFS_STORE=os.path.join(d, "store"), ARTFS_CACHE_DIR=os.path.join(d, "cache"))
        row: dict[str, float] = {}

        def step(name: str, args: list[str], e: dict[str, str] | None = None) -> None:
            t = timed_rss(args, e)
            times.setdefault(name, []).append(t)
            row[name] = t[0]

        step("cp -r", ["cp", "-r", src, os.path.join(d, "cp")])
        if rsync:
            step("rsync -a", [rsync, "-a", src + "/", os.path.join(d, "rsync")])
        step("artfs put", [*artfs_cli, "put", "-n", "bench/many", src], env)
        one = os.path.join(src, "d0000", "f0000000.txt")
        with open(one, "ab") as f:
            f.write(b"%d" % r)
        step("artfs put again, one file changed", [*artfs_cli, "put", "-n", "bench/many", src], env)
        out = os.path.join(d, "get")
        step("artfs get", [*artfs_cli, "get", "bench/many", "--root", out], env)
        if r == 0 and tree_summary(out) != tree_summary(src):
            raise SystemExit(f"get placed {tree_summary(out)} (files, bytes), expected {tree_summary(src)}")
        for name in ("artfs put", "artfs get"):
            ratios.setdefault(f"{name} / cp -r", []).append(row[name] / row["cp -r"])
            if rsync:
                ratios.setdefault(f"{name} / rsync -a", []).append(row[name] / row["rsync -a"])
        print(f"# round {r}: " + ", ".join(f"{k} {v:.2f} s" for k, v in row.items()), flush=True)
    print(f"{n} files of a few bytes in {dirs} directories, local store, the CLI; median of {reps}")
    print(f"{'step':40} {'seconds':>8} {'peak MiB':>9}")
    for name, ts in times.items():
        t = statistics.median(x for x, _ in ts)
        rss = max(m for _, m in ts)
        print(f"{name:40} {t:8.2f} {rss:9.0f}")
    for name, rs in ratios.items():
        print(f"{name:40} {statistics.median(rs):8.2f}  ({min(rs):.2f}-{max(rs):.2f}, pairwise in each round)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 1 GiB / 10,000-file sizes")
    ap.add_argument("--reps", type=int, default=3, help="rounds; each figure is the best one")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir on /tmp's disk)")
    ap.add_argument("--many", type=int, default=0, metavar="N",
                    help="only the case of N tiny files (issue 27): put, re-put, get against cp -r")
    ap.add_argument("--dirs", type=int, default=300, help="directories of --many's files")
    a = ap.parse_args()
    if a.many:
        work = tempfile.mkdtemp(prefix="artfs-bench-", dir=a.dir)
        try:
            print(f"# {datetime.date.today()}, {platform.node()}: {os.cpu_count()} cores, kernel {platform.release()}, "
                  f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f}")
            bench_many(a.many, a.dirs, work, a.reps)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    print(f"# {datetime.date.today()}, {platform.node()}: {os.cpu_count()} cores, kernel {platform.release()}, "
          f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f}; best of {a.reps}")
    work = tempfile.mkdtemp(prefix="artfs-bench-", dir=a.dir)
    try:
        rows = bench_digest()
        big = os.path.join(work, "big-src")
        nb = make_mixed_tree(big, int((1 << 30) * a.scale))
        nfiles = tree_summary(big)[0]
        rows += bench_tree(f"mixed {nb / 2**30:.2f} GiB, {nfiles} files", big, nb, os.path.join(work, "big"), a.reps)
        shutil.rmtree(big)
        small = os.path.join(work, "small-src")
        n = int(10000 * a.scale)
        ns = make_small_tree(small, n)
        rows += bench_tree(f"{n} x 4 KiB", small, ns, os.path.join(work, "small"), a.reps)
        print(f"{'case':52} {'seconds':>8} {'MB/s':>8} {'ratio':>6}")
        for name, t, mbs, ratio in rows:
            print(f"{name:52} {t:8.2f} {mbs:8.0f} {ratio:6.2f}")
        print("ratio: against cp -r of the same tree (tree cases) or MD5 (digests); higher is better")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
