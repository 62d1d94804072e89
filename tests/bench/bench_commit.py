"""Benchmark: an in-process draft commit after changing one file of a large artifact. Not part of the test run.

``.venv/bin/python tests/bench/bench_commit.py [--entries 100000] [--runs 3] [--profile] [--fresh-store]``

Logs a version of ``--entries`` tiny files (distinct contents), opens its draft, changes one file
and times ``Draft.commit`` (``--runs`` times, a different change each). ``--profile`` prints the
top functions of one commit by cumulative time (cProfile). The figure must stay small and must
not grow much with the artifact's size.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from artfs import Cache, Entry, Store, digest_bytes  # noqa: E402
from artfs._layout import blob_key  # noqa: E402
from artfs._draft import ROOT as DROOT, Drafts  # noqa: E402


def resolve(d, path: str) -> int:
    ino = DROOT
    for part in path.split("/"):
        ino = d.namespace.lookup(ino, part).ino
    return ino


def log_version(store: Store, n: int) -> str:
    entries, blobs = [], {}
    for i in range(n):
        data = f"file {i}\n".encode()
        dg = digest_bytes(data)
        blobs[dg] = data
        entries.append(Entry(f"shard{i % 100:03d}/class{i % 7}/img{i:08d}.png", dg, len(data)))
    local = getattr(store.backend, "local_path", None)
    if local is not None:  # setup only: write the blobs directly (no fsync each), the commit finds them
        for dg, data in blobs.items():
            f = local(blob_key("bench", dg))
            os.makedirs(os.path.dirname(f), exist_ok=True)
            with open(f, "wb") as fh:
                fh.write(data)
    sources = {dg: (lambda key, data=data: store.backend.put(key, data)) for dg, data in blobs.items()}
    store.commit("bench", "many", type="dataset", entries=entries, sources=sources)
    return entries[n // 2].path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--fresh-store", action="store_true",
                   help="a new Store object for every commit (as the CLI: nothing parsed in memory yet)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(os.path.join(tmp, "store"), cache=Cache(os.path.join(tmp, "cache")))
        t = time.perf_counter()
        path = log_version(store, a.entries)
        print(f"logged {a.entries} files in {time.perf_counter() - t:.2f} s")
        drafts = Drafts(store, root=os.path.join(tmp, "staging"))
        times = []
        for run in range(a.runs + (1 if a.profile else 0)):
            if a.fresh_store:
                store = Store(store.url, cache=Cache(store.cache.root))
                drafts = Drafts(store, root=drafts.root)
            t = time.perf_counter()
            d = drafts.open("bench", "many")
            t_open = time.perf_counter() - t
            try:
                d.staging.pwrite(resolve(d, path), f"changed {run}\n".encode(), 0)
                prof = cProfile.Profile() if a.profile and run == a.runs else None
                t = time.perf_counter()
                if prof:
                    prof.enable()
                r = d.commit(store)
                if prof:
                    prof.disable()
                dt = time.perf_counter() - t
            finally:
                d.close()
            assert r is not None and r.created, r
            if prof:
                pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
                pstats.Stats(prof).sort_stats("tottime").print_stats(20)
            else:
                times.append(dt)
                print(f"run {run}: open {t_open:.2f} s, commit {dt:.3f} s -> v{r.version}")
        print(f"commit after changing 1 of {a.entries} files: best {min(times):.3f} s, "
              f"median {sorted(times)[len(times) // 2]:.3f} s")


if __name__ == "__main__":
    main()
