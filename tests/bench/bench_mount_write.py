"""Benchmark: the write side of the mount. Not part of the test run.

``.venv/bin/python tests/bench/bench_mount_write.py [--size-mb 1024] [--entries 10000,100000] [--no-s3]``
(as root: it drops the page cache between runs). Prints, each as a ratio where there is a baseline:

* writing ``--size-mb`` into a draft versus into a file on the disk that holds the staging
  directory, with 1 MiB ``write`` calls: until ``close`` returns (the bytes are in the page cache),
  and until ``fsync`` returns (they are on the disk); best of 3 each, the page cache dropped before
  every run;
* the time ``artfs commit MNT/<p>/<a>/draft`` takes after changing one file of an artifact of
  ``--entries`` files (it must not grow with the artifact), and what the first access of that
  draft/ costs (materialising the base in the draft's database);
* unmount-to-committed for ``--size-mb`` of new data on an S3 store (moto's server on 127.0.0.1,
  in a child process) versus a plain boto3 ``upload_file`` of the same bytes to the same server.
  moto is slow and keeps objects in memory; both sides pay that, so the ratio is the figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from artfs import Cache, Entry, Store, digest_bytes  # noqa: E402
from artfs.testing import CONFLICTING_ENV, S3Server  # noqa: E402
from artfsd.testing import MountProcess  # noqa: E402

MiB = 1 << 20
CLI = [sys.executable, "-m", "artfs.cli"]


def drop_caches() -> None:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError:
        pass


def write_file(path: str, size: int, *, fsync: bool, bs: int = MiB) -> float:
    """Seconds to create ``path`` with ``size`` bytes in ``bs`` writes (and fsync), until close returns."""
    buf = os.urandom(bs)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // bs):
            os.write(fd, buf)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def bench_write(size: int, tmp: str) -> None:
    store = Store(os.path.join(tmp, "store"), cache=Cache(os.path.join(tmp, "wc")))
    env = {**os.environ, "ARTFS_STAGING_DIR": os.path.join(tmp, "staging")}
    local = os.path.join(tmp, "local.bin")
    gib = size / (1 << 30)
    print(f"writing {size / MiB:.0f} MiB in 1 MiB writes (best of 3, page cache dropped before each run):")
    with MountProcess(store.url, os.path.join(tmp, "mnt"), cache_dir=os.path.join(tmp, "mc"), env=env) as m:
        os.mkdir(m.path("bench"))
        os.mkdir(m.path("bench", "w"))
        target = m.path("bench", "w", "draft", "big.bin")
        for fsync in (False, True):
            res: dict[str, list[float]] = {"local": [], "draft": []}
            for _ in range(3):
                for name, path in (("local", local), ("draft", target)):
                    drop_caches()
                    res[name].append(write_file(path, size, fsync=fsync))
                    os.unlink(path)
            lo, dr = min(res["local"]), min(res["draft"])
            what = "write + fsync (on the disk)" if fsync else "write + close (in the page cache)"
            print(f"  {what:34}  local disk {gib / lo:5.2f} GiB/s   draft {gib / dr:5.2f} GiB/s   "
                  f"ratio {lo / dr:.2f}   (draft runs: {', '.join(f'{gib / t:.2f}' for t in res['draft'])})")
        m.stop()


def bench_commit(n: int, tmp: str) -> None:
    """Commit after changing 1 file of an artifact of ``n`` files (shared blobs: the store is not the point)."""
    root = os.path.join(tmp, f"commit{n}")
    os.makedirs(root)
    store = Store(os.path.join(root, "store"), cache=Cache(os.path.join(root, "wc")))
    blob = os.path.join(root, "blob")
    with open(blob, "wb") as f:
        f.write(b"same bytes\n")
    d = digest_bytes(b"same bytes\n")
    entries = [Entry(f"shard{i % 100:03d}/class{i % 7}/img{i:08d}.png", d, 11) for i in range(n)]
    store.commit("bench", "many", type="dataset", entries=entries, sources={d: blob})
    env = {**os.environ, "ARTFS_STAGING_DIR": os.path.join(root, "staging")}
    with MountProcess(store.url, os.path.join(root, "mnt"), cache_dir=os.path.join(root, "mc"), env=env) as m:
        draft = m.path("bench", "many", "draft")
        t0 = time.perf_counter()
        os.stat(draft)
        first = time.perf_counter() - t0
        times = []
        for k in range(3):
            with open(os.path.join(draft, "shard000", "class0", "img00000000.png"), "ab") as f:
                f.write(f"change {k}\n".encode())
            t0 = time.perf_counter()
            r = subprocess.run([*CLI, "commit", draft], env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            assert r.returncode == 0 and "created" in r.stdout, r.stdout + r.stderr
        t0 = time.perf_counter()
        os.setxattr(draft, "user.artfs.commit", b"1")  # nothing changed: the cost of looking
        idle = time.perf_counter() - t0
        m.stop()
    print(f"  {n:>7} files: commit after changing 1 file {statistics.median(times):5.2f} s (median of 3, with the "
          f"CLI's start), unchanged {idle:5.2f} s; first access of draft/ {first:5.2f} s")


def bench_s3(size: int, tmp: str) -> None:
    import boto3

    server = S3Server(use_env=False)
    endpoint = server.__enter__()
    try:
        s3env = {k: v for k, v in os.environ.items() if k not in CONFLICTING_ENV}
        s3env.update(server.env())
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(s3env)
        try:
            client = boto3.client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket="bench")
            src = os.path.join(tmp, "upload.bin")
            with open(src, "wb") as f:
                for _ in range(size // MiB):
                    f.write(os.urandom(MiB))
            t0 = time.perf_counter()
            client.upload_file(src, "bench", "raw/upload.bin")
            raw = time.perf_counter() - t0
            client.delete_object(Bucket="bench", Key="raw/upload.bin")
        finally:
            os.environ.clear()
            os.environ.update(saved)
        url = "s3://bench/store"
        env = {**s3env, "ARTFS_STAGING_DIR": os.path.join(tmp, "s3staging"), "ARTFS_CACHE_DIR": os.path.join(tmp, "s3mc")}
        m = MountProcess(url, os.path.join(tmp, "s3mnt"), cache_dir=os.path.join(tmp, "s3mc"), env=env)
        with m:
            os.mkdir(m.path("bench"))
            os.mkdir(m.path("bench", "upload"))
            with open(src, "rb") as fsrc, open(m.path("bench", "upload", "draft", "upload.bin"), "wb") as fdst:
                while b := fsrc.read(MiB):
                    fdst.write(b)
            t0 = time.perf_counter()
            r = subprocess.run([*CLI, "umount", m.mountpoint], env=env, capture_output=True, text=True)
            took = time.perf_counter() - t0
            assert r.returncode == 0 and "created" in r.stdout, r.stdout + r.stderr
        log = m.log
    finally:
        server.__exit__(None, None, None)
    mb = size / 1e6
    print(f"unmount-to-committed, {size / MiB:.0f} MiB of new data on S3 (moto): artfs umount {took:6.2f} s "
          f"({mb / took:5.0f} MB/s), boto3 upload_file {raw:6.2f} s ({mb / raw:5.0f} MB/s): ratio {raw / took:.2f}")
    commit = next((ln.split("artfsd: ", 1)[1] for ln in log.splitlines() if " created (" in ln), "?")
    print(f"  (the daemon: {commit})")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--entries", default="10000,100000")
    p.add_argument("--no-s3", action="store_true")
    p.add_argument("--dir", default=None, help="where to work (default: the system's temp dir)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        bench_write(a.size_mb * MiB, tmp)
    print("commit through the mount after changing 1 file:")
    for n in (int(x) for x in a.entries.split(",") if x):
        with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
            bench_commit(n, tmp)
    if not a.no_s3:
        with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
            bench_s3(a.size_mb * MiB, tmp)


if __name__ == "__main__":
    main()
