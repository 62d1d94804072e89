"""Benchmark: listing and metadata through the mount, and the daemon's memory per entry.

Not part of the test run. ``.venv/bin/python tests/bench/bench_listing.py [--files 100000]
[--entries 1000000] [--reps 3] [--dir D]`` (as root, for FUSE). Prints:

* ``find`` and ``ls -lR`` over a version of ``--files`` files, through the mount (by ``v0/`` and by
  ``latest/``, the alias symlink: ``--via``) and over the same tree on the local disk it was
  logged from, with the requests per repeated pass that reached the daemon (READLINK of the
  alias on every path walk unless the kernel caches symlinks), as seconds and as a ratio (mount / disk; 1.0 would
  be as fast as the disk). The first pass through the mount meets a cold kernel (no entries or
  attributes cached yet); the best of ``--reps`` passes is the steady state. The disk's tree is
  in the page and dentry caches from being written, so both sides are warm.
* the time from starting the mount to the first listing of that version (the daemon starts,
  lists the store, reads the manifest, builds the version's index);
* a version of ``--entries`` entries (one small blob, so the store holds just its manifest): the
  time to its first listing, and the daemon's resident memory (``VmRSS`` of ``/proc/<pid>/status``)
  when mounted, after that first listing, and after ``find`` has listed and looked up every entry
  (the kernel then holds an inode for each), with the peak (``VmHWM``) while the index was built.
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

from artfs import Artifact, Cache, Entry, Store  # noqa: E402
from artfs._digest import digest_bytes  # noqa: E402
from artfs._manifest import version_digest  # noqa: E402
from artfsd.testing import MountProcess  # noqa: E402

MiB = 1 << 20


def make_tree(root: str, n: int) -> None:
    """``n`` small files, 100 per directory, two levels deep (like a sharded image dataset)."""
    for i in range(n):
        d = os.path.join(root, f"shard{i // 10_000:03d}", f"class{i // 100 % 100:02d}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"img{i:07d}.png"), "wb") as f:
            f.write(b"x" * (i % 97))  # 97 distinct contents: few blobs, sizes that differ


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def bench_listing(n: int, reps: int, tmp: str, vias: list[str]) -> list[str]:
    src = os.path.join(tmp, "tree")
    t0 = time.perf_counter()
    make_tree(src, n)
    store = Store(os.path.join(tmp, "store"), cache=Cache(os.path.join(tmp, "wcache")))
    art = Artifact("files", type="dataset")
    art.add_dir(src)
    t1 = time.perf_counter()
    store.log_artifact(art, project="bench")
    t_log = time.perf_counter() - t1
    print(f"  ({n} files made in {t1 - t0:.1f} s, logged through the API in {t_log:.1f} s)", flush=True)
    lines = []
    t_start = time.perf_counter()
    with MountProcess(store.url, os.path.join(tmp, "mnt"), cache_dir=os.path.join(tmp, "mcache"),
                      args=["--read-only"]) as m:
        t_up = time.perf_counter() - t_start
        v0 = m.path("bench", "files", "v0")
        t_first = run(["ls", v0])
        lines.append(f"mount start -> mounted: {t_up:.2f} s; -> first listing of the version: "
                     f"{t_up + t_first:.2f} s (its manifest read and indexed: {t_first:.2f} s)")
        rows = []
        for via in vias:
            # through an alias symlink: every path walk passes it (the path training code uses)
            top = v0 if via == "v0" else m.path("bench", "files", via) + "/"
            for name, cmd in (("find", ["find"]), ("ls -lR", ["ls", "-lR"])):
                first = run(cmd + [top])
                s0 = m.stats()
                mnt = [run(cmd + [top]) for _ in range(reps)]
                s1 = m.stats()
                disk = [run(cmd + [src]) for _ in range(reps)]
                asked = {k: (s1.get(k, 0) - s0.get(k, 0)) // reps for k in ("lookups", "getattrs", "readlinks",
                                                                              "readdirs")}
                rows.append((f"{name} {via}/", first, min(mnt), min(disk), asked))
        lines.append(f"{'':16} {'mount, first':>13} {'mount, best':>12} {'local disk':>11} {'ratio':>7}  "
                     "requests per repeated pass")
        for name, first, best, disk, asked in rows:
            lines.append(f"{name:16} {first:12.2f}s {best:11.2f}s {disk:10.2f}s {best / disk:6.1f}x  "
                         + ", ".join(f"{k} {v}" for k, v in asked.items()))
        k = m.stats()["kernel"]
        lines.append(f"  (mount/disk of the best of {reps}; {n} files in {n // 100 + n // 10_000 + 1} directories; "
                     f"kernel: {k})")
    return lines


def bench_memory(n: int, tmp: str) -> list[str]:
    store = Store(os.path.join(tmp, "store-big"), cache=Cache(os.path.join(tmp, "wcache-big")))
    blob = os.path.join(tmp, "blob")
    with open(blob, "wb") as f:
        f.write(b"same bytes for every entry")
    d = digest_bytes(b"same bytes for every entry")
    entries = [Entry(f"train/shard{i // 10_000:03d}/class{i // 100 % 100:02d}/img{i:08d}.png", d, 26)
               for i in range(n)]
    t0 = time.perf_counter()
    store.commit("bench", "big", type="dataset", entries=entries, sources={d: blob})
    print(f"  ({n} entries committed in {time.perf_counter() - t0:.1f} s; manifest "
          f"{os.path.getsize(os.path.join(store.backend.root, 'bench/artifacts/big/versions/0.json')) / MiB:.0f} MiB)",
          flush=True)
    del entries
    lines = []
    with MountProcess(store.url, os.path.join(tmp, "mnt-big"), cache_dir=os.path.join(tmp, "mcache-big"),
                      args=["--read-only"], startup_timeout=60) as m:
        v0 = m.path("bench", "big", "v0")
        run(["ls", m.path("bench", "big")])
        time.sleep(0.5)
        base = proc_status(m.pid)
        t_first = run(["ls", v0])
        loaded = proc_status(m.pid)
        t_find = run(["find", v0])
        listed = proc_status(m.pid)
        t_find2 = run(["find", v0])
        per = (listed["VmRSS"] - base["VmRSS"]) / n
        lines.append(f"{n} entries: first listing of the version {t_first:.2f} s; find over it {t_find:.1f} s "
                     f"(again: {t_find2:.1f} s)")
        lines.append(f"daemon RSS: mounted {base['VmRSS'] / MiB:.0f} MiB; index loaded {loaded['VmRSS'] / MiB:.0f} MiB; "
                     f"all listed and looked up {listed['VmRSS'] / MiB:.0f} MiB -> {per:.0f} bytes per entry; "
                     f"peak while loading {listed['VmHWM'] / MiB:.0f} MiB")
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--via", default="v0,latest",
                   help="walk the version through these names of its artifact (default v0,latest: the version "
                        "directory and the alias symlink every path walk then passes)")
    p.add_argument("--dir", default=None, help="work directory (default: a temp dir on /tmp's disk)")
    a = p.parse_args()
    print(f"# {datetime.date.today()}, {platform.node()}: {os.cpu_count()} cores, kernel {platform.release()}, "
          f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f}")
    tmp = tempfile.mkdtemp(prefix="artfs-bench-listing-", dir=a.dir)
    try:
        out = []
        if a.files:
            out += bench_listing(a.files, a.reps, tmp, [v for v in a.via.split(",") if v])
            shutil.rmtree(os.path.join(tmp, "tree"), ignore_errors=True)
        if a.entries:
            out += bench_memory(a.entries, tmp)
        print("\n".join(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
