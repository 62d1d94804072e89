"""Benchmark: the manifest-only steps of a version of many entries, sharded (format 2) against
one format-1 manifest of the same entries, in the same run.

Not part of the test run. ``.venv/bin/python tests/bench/bench_shards.py --entries 1000000
[--flat-max 1000000] [--dir D]`` (as root, for FUSE). Every entry names the same small blob, so
the store holds little but the manifest: what is measured is what a manifest costs. The entries
are ``d<k>/f<j>.bin``, 1,000 per directory. For each format (format 1 only up to ``--flat-max``
entries: a 10M-entry format-1 manifest is 450 MB, and its mounted index several GB):

* ``commit``: ``Store.commit`` of all the entries into a new store (entries already in memory);
* ``commit 1 change``: the next version with one entry's digest changed (what is written: keys);
* ``open``: a fresh ``Store`` (fresh cache) reads the version's manifest and its ``len``;
* ``diff 1 change``: a fresh ``Store`` diffs the two versions (what it read from the store);
* ``mount first stat``: from a mounted (fresh cache) daemon, the first ``stat`` of a file of v1,
  and the daemon's resident memory after it;
* ``ls``: then the listing of that file's directory, and of the version's root;
* with ``--find``: ``find`` over the whole version, and the daemon's memory per entry after it
  (the kernel then holds an inode for every entry).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from artfs import Cache, Entry, Store  # noqa: E402
from artfs._digest import digest_bytes  # noqa: E402
from artfsd.testing import MountProcess  # noqa: E402


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def keys_under(root: str) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs}


def one_format(work: str, entries: list[Entry], blob: str, sharded: bool, find: bool) -> dict[str, object]:
    os.environ["ARTFS_SHARD_MIN"] = "1" if sharded else str(len(entries) + 1)
    tag = "sharded" if sharded else "flat"
    url = os.path.join(work, f"store-{tag}")
    d = entries[0].digest
    assert d is not None
    out: dict[str, object] = {}
    store = Store(url, cache=Cache(os.path.join(work, f"wc-{tag}")))
    t0 = time.perf_counter()
    store.commit("proj", "many", type="dataset", entries=entries, sources={d: blob})
    out["commit"] = time.perf_counter() - t0
    before = keys_under(url)
    k = len(entries) // 2
    other = os.path.join(work, "blob2")
    with open(other, "wb") as f:
        f.write(b"the one change\n")
    d2 = digest_bytes(b"the one change\n")
    changed = list(entries)
    changed[k] = Entry(changed[k].path, d2, 15)
    t0 = time.perf_counter()
    store.commit("proj", "many", type="dataset", entries=changed, sources={d: blob, d2: other})
    out["commit 1 change"] = time.perf_counter() - t0
    new = keys_under(url) - before
    out["keys written by it"] = len([x for x in new if "/index.json" not in x])
    del changed
    fresh = Store(url, cache=Cache(os.path.join(work, f"rc-{tag}")))
    t0 = time.perf_counter()
    n = len(fresh.manifest("proj", "many", 1).entries)
    out["open"] = time.perf_counter() - t0
    assert n == len(entries)
    fresh = Store(url, cache=Cache(os.path.join(work, f"dc-{tag}")))
    t0 = time.perf_counter()
    diff = fresh.artifact("proj/many:v0").diff(fresh.artifact("proj/many:v1"))
    out["diff 1 change"] = time.perf_counter() - t0
    assert [c.path for c in diff.changes] == [entries[k].path]
    mc = os.path.join(work, f"mc-{tag}")
    with MountProcess(url, os.path.join(work, f"mnt-{tag}"), cache_dir=mc, args=["--timeout", "600"]) as m:
        path = entries[k].path
        r0 = rss(m.pid)
        t0 = time.perf_counter()
        st = os.stat(m.path("proj", "many", "v1", *path.split("/")))
        out["mount first stat"] = time.perf_counter() - t0
        assert st.st_size == 15
        out["daemon RSS growth (MB)"] = (rss(m.pid) - r0) / 1e6
        t0 = time.perf_counter()
        names = os.listdir(m.path("proj", "many", "v1", path.split("/")[0]))
        out["ls of its directory"] = time.perf_counter() - t0
        assert len(names) == 1000
        t0 = time.perf_counter()
        top = os.listdir(m.path("proj", "many", "v1"))
        out["ls of the root"] = time.perf_counter() - t0
        assert len(top) == (len(entries) + 999) // 1000
        out["daemon RSS growth after ls (MB)"] = (rss(m.pid) - r0) / 1e6
        if find:
            t0 = time.perf_counter()
            found = subprocess.run(["find", m.path("proj", "many", "v1"), "-type", "f"], check=True,
                                   capture_output=True).stdout.count(b"\n")
            out["find over the version"] = time.perf_counter() - t0
            assert found == len(entries)
            out["daemon RSS per entry after find (B)"] = (rss(m.pid) - r0) / len(entries)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--flat-max", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--find", action="store_true", help="also find over the mounted version, and memory after")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-shards-", dir=a.dir)
    try:
        blob = os.path.join(work, "blob")
        with open(blob, "wb") as f:
            f.write(b"same bytes\n")
        d = digest_bytes(b"same bytes\n")
        t0 = time.perf_counter()
        entries = [Entry(f"d{i // 1000:05d}/f{i % 1000:04d}.bin", d, 11) for i in range(a.entries)]
        print(f"{a.entries:,} entries made in {time.perf_counter() - t0:.1f} s; "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}")
        results = {"sharded": one_format(work, entries, blob, True, a.find)}
        if a.entries <= a.flat_max:
            results["flat"] = one_format(work, entries, blob, False, a.find)
        for step in results["sharded"]:
            row = [f"{step:32s}"]
            for tag in results:
                v = results[tag][step]
                row.append(f"{tag} {v:10.3f}" if isinstance(v, float) else f"{tag} {v:>10}")
            if "flat" in results and isinstance(results["flat"][step], float) and results["flat"][step]:
                row.append(f"sharded/flat {results['sharded'][step] / results['flat'][step]:.3f}")  # type: ignore[operator]
            print("  ".join(row))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
