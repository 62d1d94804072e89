"""``artfs://`` (fsspec) against s3fs, boto3 and the local disk, on one S3 server (s3rver).

    .venv/bin/python tests/bench/bench_fsspec.py [--big-mib 1024] [--files 10000] [--kib 100]
        [--workers 4] [--parquet-mib 1024] [--rounds 2] [--s3fs-venv DIR] [--skip s3fs]

Measured in one run, contenders interleaved, the best round of each, every reader a process of
its own (its imports and setup before its clock starts):

* a file of ``--big-mib`` MiB read sequentially (4 MiB reads), cold: ``fsspec.open("artfs://...")``
  with an empty cache vs s3fs's ``open`` vs boto3's ``download_fileobj`` (s3transfer, 10 threads);
* ``--files`` files of ``--kib`` KiB read whole by ``--workers`` processes in random order (a
  DataLoader's epoch), cold vs s3fs and boto3 (``get_object``); warm (artfs's cache complete, the
  page cache dropped) vs the same files on the local disk;
* a ``pyarrow.dataset`` scan of one column of a ``--parquet-mib`` MiB parquet dataset, cold and
  warm (page cache dropped), vs s3fs.

s3fs needs aiobotocore, which pins a botocore older than the one artfs's boto3 needs, so it runs
from a venv of its own (``--s3fs-venv``, created with pip on first use). s3fs and boto3 read the
very objects artfs stores (its blobs, by key; for the parquet scan, server-side copies under a
plain prefix), so every contender reads the same bytes from the same server. Needs root (to drop
the page cache) and s3rver (``npm install -g s3rver``). Cleans up after itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bench_read import S3rver, Table  # noqa: E402

from artfs import Artifact, Cache, Store  # noqa: E402
from artfs._layout import blob_key  # noqa: E402

BUCKET = "bench"
PROJECT = "bench"
MiB = 1 << 20

#: one reader process: setup, then ``{"t0":..., "t1":..., "bytes":...}`` on stdout. argv: kind, mode, json args
READER = r"""
import json, os, sys, time
kind, mode, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
paths = [p for p in sys.stdin.read().split("\n") if p]
if kind == "artfs":
    import fsspec
    fs = fsspec.filesystem("artfs", store=args["store"], cache_dir=args["cache"], lineage=args.get("lineage", True))
    read = fs.cat_file
    opener = fs.open
    fs.info(paths[0])  # setup: the store's client, the version's manifest
elif kind == "s3fs":
    import s3fs
    fs = s3fs.S3FileSystem(endpoint_url=args["endpoint"], key="S3RVER", secret="S3RVER")
    read = fs.cat_file
    opener = fs.open
    fs.ls(paths[0].split("/", 1)[0])  # setup: the client
elif kind == "boto3":
    import boto3
    client = boto3.client("s3", endpoint_url=args["endpoint"], region_name="us-east-1")
    client.head_bucket(Bucket=paths[0].split("/", 1)[0])  # setup: the client
    def read(p):
        return client.get_object(Bucket=p.split("/", 1)[0], Key=p.split("/", 1)[1])["Body"].read()
else:
    def read(p):
        with open(p, "rb") as f:
            return f.read()
    opener = open
n = 0
if mode == "seq" and kind == "boto3":
    class Null:
        def write(self, b):
            global n
            n += len(b)
            return len(b)
    b, _, k = paths[0].partition("/")
    t0 = time.time()
    client.download_fileobj(b, k, Null())
elif mode == "seq":
    t0 = time.time()
    with opener(paths[0], "rb") as f:
        while True:
            b = f.read(4 << 20)
            if not b:
                break
            n += len(b)
elif mode == "scan":
    import pyarrow.dataset as ds
    t0 = time.time()
    t = ds.dataset(paths[0], filesystem=fs if kind != "local" else None, format="parquet").to_table(columns=["a"])
    n = t.nbytes
else:
    t0 = time.time()
    for p in paths:
        n += len(read(p))
print(json.dumps({"t0": t0, "t1": time.time(), "bytes": n}))
"""


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def s3fs_python(venv: str) -> str:
    py = os.path.join(venv, "bin", "python")
    ok = os.path.exists(py) and subprocess.run([py, "-c", "import s3fs, pyarrow"], capture_output=True).returncode == 0
    if not ok:
        print(f"  (creating {venv} with s3fs and pyarrow)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "s3fs", "pyarrow"], check=True)
    return py


def run_readers(py: str, kind: str, mode: str, args: dict[str, Any], shares: list[list[str]],
                env: dict[str, str]) -> tuple[float, int]:
    """Start one reader per share, wait for all; (wall seconds from the first start to the last end, bytes).

    The readers of one call are one process group of their own (the first one leads it), as the
    workers of one job are: one automatic run per call, so that no call finds the lineage of an
    earlier one already written."""
    procs: list[subprocess.Popen[bytes]] = []
    for _ in shares:
        group = {"process_group": procs[0].pid if procs else 0}
        procs.append(subprocess.Popen([py, "-c", READER, kind, mode, json.dumps(args)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **group))
    outs = []
    for p, share in zip(procs, shares):
        assert p.stdin is not None
        p.stdin.write("\n".join(share).encode())
        p.stdin.close()
    for p in procs:
        assert p.stdout is not None and p.stderr is not None
        out, err = p.stdout.read(), p.stderr.read()
        p.wait(3600)
        lines = out.decode().strip().splitlines()
        if not lines or not lines[-1].startswith("{"):
            raise RuntimeError(f"{kind} {mode} reader failed ({p.returncode}): {err.decode()[-2000:]}")
        # (a reader that printed its result and then crashed at its exit still measured: s3fs's
        # event loop thread and pyarrow's threads sometimes abort the interpreter's shutdown)
        outs.append(json.loads(lines[-1]))
    return max(o["t1"] for o in outs) - min(o["t0"] for o in outs), sum(o["bytes"] for o in outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--kib", type=int, default=100)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--parquet-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--s3fs-venv", default=os.path.join(tempfile.gettempdir(), "artfs-bench-s3fs-venv"))
    ap.add_argument("--skip", default="", help="comma-separated: s3fs, boto3, big, files, scan")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    table = Table()
    base = tempfile.mkdtemp(prefix="bench-fsspec-")
    try:
        with S3rver(base) as server:
            bench(a, skip, base, server, table)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("\n" + table.markdown())


def bench(a: argparse.Namespace, skip: set[str], base: str, server: S3rver, table: Table) -> None:
    import boto3

    os.environ.update(server.env())
    env = dict(os.environ)
    client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    from artfs.backends.s3 import S3Backend

    url = f"s3://{BUCKET}/store"
    store = Store(backend=S3Backend(url, timeout=300), cache=Cache(os.path.join(base, "wcache")))
    s3py = None if "s3fs" in skip else s3fs_python(a.s3fs_venv)
    src = os.path.join(base, "src")
    rnd = random.Random(1)

    def log(name: str, files: dict[str, bytes] | None = None, tree: str | None = None) -> dict[str, str]:
        art = Artifact(name, type="dataset")
        if tree is not None:
            art.add_dir(tree)
        t0 = time.perf_counter()
        store.log_artifact(art, project=PROJECT)
        print(f"  ({name} uploaded in {time.perf_counter() - t0:.1f} s)", flush=True)
        m = store.manifest(PROJECT, name, 0)
        return {e.path: f"{BUCKET}/store/{blob_key(PROJECT, e.digest or '')}" for e in m.entries}

    rounds = range(a.rounds)
    cache_n = [0]

    def fresh_cache() -> str:
        cache_n[0] += 1
        return os.path.join(base, f"cache{cache_n[0]}")

    def args(cache: str | None = None, lineage: bool = True) -> dict[str, Any]:
        return {"store": url, "cache": cache or fresh_cache(), "endpoint": server.url, "lineage": lineage}

    def best(fns: dict[str, Any]) -> dict[str, float]:
        out = {k: float("inf") for k in fns}
        for _ in rounds:
            for k, fn in fns.items():
                out[k] = min(out[k], fn())
        return out

    if "big" not in skip:
        size = a.big_mib * MiB
        os.makedirs(os.path.join(src, "big"))
        with open(os.path.join(src, "big", "big.bin"), "wb") as f:
            for _ in range(a.big_mib):
                f.write(rnd.randbytes(MiB))
        key = log("big", tree=os.path.join(src, "big"))["big.bin"]
        shutil.rmtree(os.path.join(src, "big"))
        path = f"artfs://{PROJECT}/big/v0/big.bin"

        def seq(py: str, kind: str, p: str) -> float:
            drop_caches()
            t, n = run_readers(py, kind, "seq", args(), [[p]], env)
            assert n == size, (kind, n)
            return t

        fns = {"artfs": lambda: seq(sys.executable, "artfs", path)}
        if "boto3" not in skip:
            fns["boto3"] = lambda: seq(sys.executable, "boto3", key)
        if s3py:
            fns["s3fs"] = lambda: seq(s3py, "s3fs", key)
        t = best(fns)
        for ref in ("boto3", "s3fs"):
            if ref in t:
                table.add(f"{a.big_mib} MiB sequential, cold: artfs:// vs {ref}", size / t["artfs"] / 1e9,
                          size / t[ref] / 1e9, aim=">= 0.9" if ref == "boto3" else "> 1", ref_name=ref)

    if "files" not in skip:
        tree = os.path.join(src, "small")
        os.makedirs(os.path.join(tree, "f"))
        for i in range(a.files):
            with open(os.path.join(tree, "f", f"{i:05d}.bin"), "wb") as f:
                f.write(rnd.randbytes(a.kib << 10))
        keys = log("small", tree=tree)
        names = sorted(keys)
        order = names[:]
        rnd.shuffle(order)

        def shares(paths: list[str]) -> list[list[str]]:
            return [paths[i::a.workers] for i in range(a.workers)]

        def files(py: str, kind: str, paths: list[str], cache: str | None = None, lineage: bool = True) -> float:
            drop_caches()
            t, n = run_readers(py, kind, "files", args(cache, lineage), shares(paths), env)
            assert n == a.files * (a.kib << 10), (kind, n)
            return t

        art_paths = [f"{PROJECT}/small/v0/{p}" for p in order]
        fns = {"artfs": lambda: files(sys.executable, "artfs", art_paths)}
        if "boto3" not in skip:
            fns["boto3"] = lambda: files(sys.executable, "boto3", [keys[p] for p in order])
        if s3py:
            fns["s3fs"] = lambda: files(s3py, "s3fs", [keys[p] for p in order])
        t = best(fns)
        n = a.files
        for ref in ("boto3", "s3fs"):
            if ref in t:
                table.add(f"{n} x {a.kib} KiB, {a.workers} processes, cold: artfs:// vs {ref}", n / t["artfs"],
                          n / t[ref], unit="files/s", aim=">= 0.9" if ref == "boto3" else "> 1", ref_name=ref)
        warm = fresh_cache()
        files(sys.executable, "artfs", art_paths, warm)  # fill the cache
        local = [os.path.join(tree, p) for p in order]
        t = best({"artfs": lambda: files(sys.executable, "artfs", art_paths, warm),
                  "artfs-nolineage": lambda: files(sys.executable, "artfs", art_paths, warm, lineage=False),
                  "local": lambda: files(sys.executable, "local", local)})
        table.add(f"{n} x {a.kib} KiB, {a.workers} processes, warm (page cache dropped): artfs:// vs local disk",
                  n / t["artfs"], n / t["local"], unit="files/s", aim=">= 0.8", ref_name="local disk")
        table.add("the same, lineage=False (no run recorded: no request to the store at all)",
                  n / t["artfs-nolineage"], n / t["local"], unit="files/s", ref_name="local disk")
        shutil.rmtree(tree)

    if "scan" not in skip:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tree = os.path.join(src, "table")
        os.makedirs(tree)
        parts = max(1, a.parquet_mib // 64)
        rows = (a.parquet_mib * MiB) // (parts * 16)  # two 8-byte columns
        for i in range(parts):
            t_ = pa.table({"a": pa.array(range(i * rows, (i + 1) * rows), pa.int64()),
                           "b": pa.array([rnd.random() for _ in range(rows)], pa.float64())})
            pq.write_table(t_, os.path.join(tree, f"part-{i:03d}.parquet"), compression="none")
        keys = log("table", tree=tree)
        for p, k in keys.items():  # a plain prefix for s3fs (a server-side copy of each blob)
            client.copy_object(Bucket=BUCKET, Key=f"plain/{p}", CopySource={"Bucket": BUCKET, "Key": k.split("/", 1)[1]})
        shutil.rmtree(tree)

        def scan(py: str, kind: str, p: str, cache: str | None = None) -> float:
            drop_caches()
            return run_readers(py, kind, "scan", args(cache), [[p]], env)[0]

        if s3py:
            cold = best({"artfs": lambda: scan(sys.executable, "artfs", f"{PROJECT}/table/v0"),
                         "s3fs": lambda: scan(s3py, "s3fs", f"{BUCKET}/plain")})
            size = a.parquet_mib * MiB / 1e9  # GB/s of the dataset's size (the scan reads about half of it)
            table.add(f"pyarrow.dataset scan of one column, {a.parquet_mib} MiB, cold: artfs:// vs s3fs",
                      size / cold["artfs"], size / cold["s3fs"], aim="> 1", ref_name="s3fs")
            warm = fresh_cache()
            scan(sys.executable, "artfs", f"{PROJECT}/table/v0", warm)
            w = best({"artfs": lambda: scan(sys.executable, "artfs", f"{PROJECT}/table/v0", warm),
                      "s3fs": lambda: scan(s3py, "s3fs", f"{BUCKET}/plain")})
            table.add(f"pyarrow.dataset scan of one column, {a.parquet_mib} MiB, warm: artfs:// vs s3fs",
                      size / w["artfs"], size / w["s3fs"], aim="> 1", ref_name="s3fs")
            table.note("scans: GB/s of the whole dataset's size per second of scan (one column of two is read)")


if __name__ == "__main__":
    main()
