"""Benchmark: ``finish`` of a distributed group of many parts (issue 9). Not part of the test run.

``.venv/bin/python tests/bench/bench_finish.py [--parts 100] [--files 1000] [--runs 3] [--s3] [--profile]``

Sets up ``--runs`` groups of ``--parts`` parts with ``--files`` files each (every file its own
path; part 0 of each group also holds one file naming the run, so each finish makes a new
version instead of matching the previous one), then times ``finish`` of each group in process:
read every part, merge, write the version's manifest. Aim: under 3 s for 100 x 1,000 on the
local store.

Setup writes the blobs and the part objects directly, in the format ``upsert`` writes (an upsert
per part would time the setup, not the finish). On the local store every file has its own blob;
on S3 (``--s3``: a moto server on 127.0.0.1, started and stopped here) the parts share
``--files`` blobs (100,000 PUTs to moto would take most of an hour), which changes nothing for
``finish``: it never reads or checks a blob of a part.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from artfs import Cache, Entry, Store, digest_bytes  # noqa: E402
from artfs import _distributed  # noqa: E402
from artfs._layout import blob_key  # noqa: E402
from artfs._parallel import pmap  # noqa: E402


def setup(store: Store, runs: int, parts: int, files: int, distinct: bool) -> None:
    local = getattr(store.backend, "local_path", None)
    blobs: dict[str, bytes] = {}

    def content(p: int, j: int) -> bytes:
        return f"part {p} file {j}\n".encode() if distinct else f"file {j}\n".encode()

    part_entries = []
    for p in range(parts):
        es = []
        for j in range(files):
            data = content(p, j)
            d = digest_bytes(data)
            blobs[d] = data
            es.append(Entry(f"shard-{p:03d}/class{j % 10}/img{j:06d}.png", d, len(data)))
        part_entries.append(es)
    t0 = time.monotonic()
    if local is not None:
        for d, data in blobs.items():
            f = local(blob_key("bench", d))
            os.makedirs(os.path.dirname(f), exist_ok=True)
            with open(f, "wb") as fh:
                fh.write(data)
    else:
        pmap(lambda kv: store.backend.put(blob_key("bench", kv[0]), kv[1]), list(blobs.items()), 16)
    keys = []
    for r in range(runs):
        for p in range(parts):
            es = list(part_entries[p])
            if p == 0:
                data = f"run {r}\n".encode()
                d = digest_bytes(data)
                store.backend.put(blob_key("bench", d), data)
                es.append(Entry(f"run-{r}.txt", d, len(data)))
            doc = {"format": _distributed.FORMAT, "writer": f"w{p:03d}", "part_id": uuid.uuid4().hex,
                   "created": time.time(), "host": "bench", "pid": os.getpid(), "type": "dataset",
                   "description": None, "metadata": {}, "run": None}
            keys.append((f"bench/groups/ds/g{r}/parts/w{p:03d}.json", _distributed._part_bytes(doc, sorted(es))))
    pmap(lambda kv: store.backend.put(*kv), keys, 16)
    print(f"setup: {runs} groups x {parts} parts x {files} files, {len(blobs)} blobs, "
          f"{time.monotonic() - t0:.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=100)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--s3", action="store_true", help="also on S3 (a moto server on 127.0.0.1)")
    ap.add_argument("--no-local", action="store_true", help="only on S3")
    ap.add_argument("--profile", action="store_true", help="cProfile the last finish")
    ap.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bench-finish-", dir=args.dir)
    try:
        targets = [] if args.no_local else [("local", os.path.join(base, "store"))]
        server = None
        if args.s3:
            from artfs.testing import CONFLICTING_ENV, S3Server

            server = S3Server()
            endpoint = server.__enter__()
            for k in CONFLICTING_ENV:
                os.environ.pop(k, None)
            os.environ.update(server.env())
            from artfs.backends.s3 import S3Backend

            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            S3Backend(f"s3://{bucket}").ensure_bucket()
            targets.append(("s3", f"s3://{bucket}/store"))
            print(f"moto at {endpoint}")
        try:
            for name, url in targets:
                store = Store(url, cache=Cache(os.path.join(base, f"cache-{name}")))
                setup(store, args.runs, args.parts, args.files, distinct=(name == "local"))
                times = []
                for r in range(args.runs):
                    prof = cProfile.Profile() if args.profile and r == args.runs - 1 else None
                    t0 = time.perf_counter()
                    if prof:
                        prof.enable()
                    res = _distributed.finish(store, "bench", "ds", f"g{r}")
                    if prof:
                        prof.disable()
                    times.append(time.perf_counter() - t0)
                    assert res.created and res.files == args.parts * args.files + 1, res
                    if prof:
                        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
                print(f"{name}: finish of {args.parts} parts x {args.files} files: best {min(times):.2f} s, "
                      f"all {', '.join(f'{t:.2f}' for t in times)} s", flush=True)
        finally:
            if server is not None:
                server.__exit__(None, None, None)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
