"""Benchmark: what automatic lineage costs the mount, and how fast ``used_by`` answers.

Not part of the test run. ``.venv/bin/python tests/bench/bench_lineage.py [--size-mb 1024]
[--files 10000] [--runs 10000] [--reps 3] [--dir D]`` (as root, for FUSE). Prints:

* the mount's read throughput with lineage recording on and off (``--no-lineage``), for one
  sequential file of ``--size-mb`` MiB and for ``--files`` small files (4 KiB each, every one
  opened, read and closed: lineage is paid per open, so this is its worst case). Mounts with
  and without lineage are interleaved, each pass runs in a fresh process (a fresh run for the
  daemon), and the best of ``--reps`` is kept. The cache is complete (a first pass fills it):
  what is left is the FUSE and daemon path, which is where lineage sits;
* ``used_by()`` of a version used by ``--runs`` runs on a local store: the runs' edges are
  written as runs write them (one key per edge on each side), then ``used_by`` is timed, and
  the time to read every one of those runs' records is given beside it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from artfs import Api, Artifact, Cache, Store  # noqa: E402
from artfs._lineage import RunRecord, now_iso, record_edge, write_record  # noqa: E402
from artfsd.testing import MountProcess  # noqa: E402

MiB = 1 << 20

READER = r'''
import os, sys, time
root = sys.argv[1]
paths = []
for d, _, files in os.walk(root):
    paths += [os.path.join(d, f) for f in files]
paths.sort()
t0 = time.perf_counter()
n = 0
for p in paths:
    with open(p, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            n += len(b)
print(n, time.perf_counter() - t0)
'''


def read_pass(path: str) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", READER, path], check=True, capture_output=True, text=True).stdout
    n, t = out.split()
    return int(n), float(t)


def drop_caches() -> None:
    if os.geteuid() == 0:
        subprocess.run(["sync"], check=False)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")


def bench_reads(tmp: str, size_mb: int, files: int, reps: int) -> list[str]:
    src = os.path.join(tmp, "src")
    os.makedirs(os.path.join(src, "big"))
    with open(os.path.join(src, "big", "blob.bin"), "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(MiB))
    for i in range(files):
        d = os.path.join(src, "small", f"d{i // 1000:03d}")
        if i % 1000 == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
            f.write(i.to_bytes(4, "little") * 1024)
    store = Store(os.path.join(tmp, "store"), cache=Cache(os.path.join(tmp, "wcache")))
    for name in ("big", "small"):
        art = Artifact(name, type="dataset")
        art.add_dir(os.path.join(src, name))
        store.log_artifact(art, project="bench")
    shutil.rmtree(src)
    cache = os.path.join(tmp, "cache")
    best: dict[tuple[str, bool], float] = {}
    sizes: dict[str, int] = {}
    for rep in range(reps + 1):  # the first round fills the cache and is not counted
        for lineage in (True, False) if rep % 2 == 0 else (False, True):
            args = ["--refresh", "60"] + ([] if lineage else ["--no-lineage"])
            with MountProcess(store.url, os.path.join(tmp, "mnt"), cache_dir=cache, args=args) as m:
                for name in ("big", "small"):
                    drop_caches()
                    n, t = read_pass(m.path("bench", name, "v0"))
                    sizes[name] = n
                    if rep:
                        best[(name, lineage)] = min(best.get((name, lineage), 1e9), t)
                stats = m.stats()["lineage"]
            print(f"  round {rep}, lineage {'on ' if lineage else 'off'}: {stats}", flush=True)
    lines = ["| read through the mount | lineage on | lineage off | on / off |", "| --- | --- | --- | --- |"]
    for name, what in (("big", f"1 file of {size_mb} MiB, sequential"), ("small", f"{files} files of 4 KiB")):
        on, off = best[(name, True)], best[(name, False)]
        if name == "big":
            lines.append(f"| {what} | {sizes[name] / on / 1e9:.2f} GB/s | {sizes[name] / off / 1e9:.2f} GB/s "
                         f"| {off / on:.3f} |")
        else:
            lines.append(f"| {what} | {files / on:,.0f} files/s | {files / off:,.0f} files/s | {off / on:.3f} |")
    return lines


def bench_per_open(tmp: str, n: int = 200_000) -> list[str]:
    """What ``Lineage.opened`` costs the FUSE loop per open, in process (robust on a loaded machine)."""
    from artfsd.lineage import Lineage

    store = Store(os.path.join(tmp, "ostore"), cache=Cache(os.path.join(tmp, "ocache")))
    lin = Lineage(store)
    pid = os.getpid()
    keys = [("p", "data", i % 50) for i in range(n)]
    lin.opened(pid, keys[0])  # learn the pid
    best_hit = best_miss = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        for k in keys:
            lin.opened(pid, k)
        best_hit = min(best_hit, (time.perf_counter() - t0) / n)
        t0 = time.perf_counter()
        for _ in range(2000):
            lin._pids.clear()  # a pid never seen: /proc/<pid>/stat and environ are read
            lin.opened(pid, keys[0])
        best_miss = min(best_miss, (time.perf_counter() - t0) / 2000)
    return ["| lineage per open, in process | time |", "| --- | --- |",
            f"| a known pid, a version it opened before (every later open) | {best_hit * 1e6:.2f} µs |",
            f"| a pid not seen for {5:g} s (reads /proc/PID/stat and environ) | {best_miss * 1e6:.1f} µs |"]


def bench_used_by(tmp: str, runs: int) -> list[str]:
    store = Store(os.path.join(tmp, "lstore"), cache=Cache(os.path.join(tmp, "lcache")))
    art = Artifact("data", type="dataset")
    with art.new_file("a.txt") as f:
        f.write("a")
    store.log_artifact(art, project="p")
    t0 = time.perf_counter()
    for i in range(runs):
        rid = f"r{i:07d}"
        write_record(store, RunRecord(id=rid, project="p", started=now_iso(), state="finished",
                                      inputs=["p/data:v0"]), exclusive=True)
        record_edge(store, "used", "p", rid, "p", "data", 0)
    t_write = time.perf_counter() - t0
    api = Api(store=store)
    a = api.artifact("p/data:v0")
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        users = a.used_by()
        best = min(best, time.perf_counter() - t0)
    assert len(users) == runs
    t0 = time.perf_counter()
    jobs = {r.job_type for r in users}  # reads every record
    t_records = time.perf_counter() - t0
    assert jobs == {None}
    return ["| lineage on a local store | time |", "| --- | --- |",
            f"| record {runs:,} runs that use one version (a record and 2 edge keys each) | {t_write:.2f} s |",
            f"| `used_by()` of that version ({runs:,} runs) | {best:.3f} s |",
            f"| ... and reading all {runs:,} run records | {t_records:.2f} s |"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--only", default="per_open,reads,used_by")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="artfs-bench-lineage-", dir=args.dir)
    print(f"# bench_lineage {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    try:
        out: list[str] = []
        if "per_open" in args.only:
            out += bench_per_open(tmp) + [""]
        if "used_by" in args.only:
            out += bench_used_by(tmp, args.runs) + [""]
        if "reads" in args.only:
            out += bench_reads(tmp, args.size_mb, args.files, args.reps)
        print("\n".join(out))
        print(f"(load at the end {os.getloadavg()[0]:.1f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
