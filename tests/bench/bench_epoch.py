"""A training-style epoch: many small files read in random order by several processes.

    .venv/bin/python tests/bench/bench_epoch.py [--files 10000] [--kib 100] [--workers 4] [--rounds 2]

N files of K KiB in one directory of an artfs version in an ``s3rver`` bucket, read whole, in a
random order split over W processes (what a PyTorch DataLoader with W workers does), in
interleaved rounds; files/s of the best round, and the ratio to the reference measured in the
same run:

* cold, the cache empty: artfs mount vs a boto3 download of the same objects with 16 threads
  into memory (the server's pace), beside s3fs and rclone mounts of the same bytes;
* warm, artfs's cache complete, the kernel's caches dropped (``--drop all``: pages, dentries
  and inodes; ``--drop data``: pages only): artfs mount vs the same files on local disk;
* the daemon's CPU time per file (utime + stime from /proc), cold and warm.

Run as root (dropping the page cache; the mount sets its read-ahead). Needs s3rver (npm), and
s3fs/rclone for the peers (reported, not skipped silently, when missing). Cleans up after itself.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bench_read import PeerMount, S3rver, Table, wait_for  # noqa: E402

from artfs import Artifact, Cache, Store  # noqa: E402
from artfs._layout import blob_key  # noqa: E402
from artfsd.testing import MountProcess  # noqa: E402

PROJECT = "bench"

READER = r"""
import sys
paths = sys.stdin.read().split("\n")
n = 0
for p in paths:
    if p:
        with open(p, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass
        n += 1
print(n)
"""


def requests_per_file(before: dict[str, Any], after: dict[str, Any], files: int) -> str:
    """The requests the daemon answered between two of its stats, per file read."""
    kinds = ("lookups", "getattrs", "opens", "releases", "reads", "forgets")
    return ", ".join(f"{k} {(after.get(k, 0) - before.get(k, 0)) / files:.2f}" for k in kinds)


DROP = {"all": "3", "data": "1"}
drop_what = ["all"]  # --drop


def drop_caches() -> None:
    """Drop the kernel's caches as ``--drop`` says: ``all`` (pages, dentries and inodes) or ``data``
    (pages only: names and inodes stay in memory, as in a training job whose data outgrows RAM)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write(DROP[drop_what[0]] + "\n")
    except OSError as e:
        print(f"  (cannot drop the page cache: {e})", flush=True)


def epoch(paths: list[str], workers: int, seed: int) -> float:
    """Read every path once, shuffled and split over ``workers`` processes; returns files/s."""
    t, _ = run_readers(paths, workers, seed)
    return len(paths) / t


def run_readers(paths: list[str], workers: int, seed: int, reader: str = READER) -> tuple[float, list[list[bytes]]]:
    """Read every path once, shuffled and split over ``workers`` processes running ``reader`` (the
    paths on its stdin; it prints the number of files it read, then anything else): (seconds, each
    reader's printed fields)."""
    order = list(paths)
    random.Random(seed).shuffle(order)
    parts = [order[i::workers] for i in range(workers)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", reader], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for _ in parts]
    for p, part in zip(procs, parts):
        assert p.stdin is not None
        p.stdin.write("\n".join(part).encode())
        p.stdin.close()
    outs = []
    for p in procs:
        out = p.stdout.read() if p.stdout else b""
        if p.wait() != 0:
            raise RuntimeError("a reader failed")
        outs.append(out.split())
    t = time.perf_counter() - t0
    done = sum(int(o[0]) for o in outs)
    if done != len(paths):
        raise RuntimeError(f"read {done} of {len(paths)} files")
    return t, outs


class Profiler:
    """A sampler attached to the daemon for one epoch, stopped with SIGINT at its end.

    ``--profile DIR``: ``py-spy record`` (collapsed stacks, one file per epoch); ``--attach CMD``: any
    command, ``{pid}`` and ``{name}`` filled in (``strace -c -f -p {pid} -o /tmp/{name}.txt``, ``perf
    record -g -p {pid} -o /tmp/{name}.data``).
    """

    def __init__(self, out_dir: str | None, name: str, pid: int, spy_args: str = "--gil",
                 attach: str | None = None) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        if out_dir is not None:
            spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
            os.makedirs(out_dir, exist_ok=True)
            self.procs.append(subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--threads", *spy_args.split(),
                 "--output", os.path.join(out_dir, f"{name}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if attach:
            self.procs.append(subprocess.Popen(shlex.split(attach.format(pid=pid, name=name)),
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if self.procs:
            time.sleep(1.0)  # the samplers attach

    def __enter__(self) -> "Profiler":
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(2)  # SIGINT: the sampler writes what it saw
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_seconds(pid: int, *, thread: int | None = None, split: bool = False) -> Any:
    """utime + stime of process ``pid`` (all its threads, also those that ended), or of one thread;
    ``split``: (utime, stime)."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    if split:
        return int(fields[11]) / tick, int(fields[12]) / tick
    return (int(fields[11]) + int(fields[12])) / tick


class CpuPerFile:
    """The daemon's CPU per file over one epoch: all of it, and its event loop's (the main thread)."""

    def __init__(self, pid: int, files: int) -> None:
        self.pid, self.files = pid, files
        self.t0 = cpu_seconds(pid)
        self.l0 = cpu_seconds(pid, thread=pid)
        self.s0 = cpu_seconds(pid, split=True)

    def done(self) -> tuple[float, float]:
        u, s = cpu_seconds(self.pid, split=True)
        self.user_sys = ((u - self.s0[0]) / self.files, (s - self.s0[1]) / self.files)
        return ((cpu_seconds(self.pid) - self.t0) / self.files,
                (cpu_seconds(self.pid, thread=self.pid) - self.l0) / self.files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--kib", type=int, default=100)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", default=None, help="where stores, caches and mounts go (default: a temp dir)")
    ap.add_argument("--peers", default="s3fs,rclone", help="comma-separated peers to measure ('' for none): s3fs, "
                    "rclone (no cache of their own), s3fs-cache, rclone-full (a disk cache: also measured warm)")
    ap.add_argument("--profile", default=None, metavar="DIR",
                    help="sample the daemon with py-spy during each artfs epoch; collapsed stacks go to DIR")
    ap.add_argument("--spy-args", default="--gil", metavar="ARGS",
                    help="py-spy record's sampling options for --profile (default '--gil'; e.g. '--native', or '' "
                         "for every thread whether or not it holds the GIL)")
    ap.add_argument("--attach", default=None, metavar="CMD",
                    help="run CMD during each artfs epoch, '{pid}' the daemon's and '{name}' the epoch's "
                         "(e.g. 'strace -c -f -p {pid} -o /tmp/{name}.txt'); stopped with SIGINT")
    ap.add_argument("--drop", choices=sorted(DROP), default="all",
                    help="what is dropped before each epoch: 'all' kernel caches (pages, dentries, inodes; the "
                         "default) or 'data' (the page cache only)")
    ap.add_argument("--read-only", action="store_true",
                    help="mount read-only, as the README recommends for training jobs (no draft/; the kernel "
                         "then has no atime to refresh after a passthrough read)")
    ap.add_argument("--cold-only", action="store_true",
                    help="measure the cold epoch only (no warm epoch, no local-disk reference)")
    a = ap.parse_args()
    drop_what[0] = a.drop

    import boto3

    base = tempfile.mkdtemp(prefix="artfs-epoch-", dir=a.dir)
    table = Table()
    names = [f"{i:06d}.jpg" for i in range(a.files)]
    print(f"[epoch] {a.files} files of {a.kib} KiB, {a.workers} readers, {a.rounds} rounds, caches dropped before each epoch: {a.drop}"
          f"{', read-only mount' if a.read_only else ''}", flush=True)
    server = S3rver(base).__enter__()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
        client.create_bucket(Bucket="bench")
        client.create_bucket(Bucket="peers")
        local = os.path.join(base, "local", "train")
        os.makedirs(local)
        for n in names:
            with open(os.path.join(local, n), "wb") as f:
                f.write(os.urandom(a.kib * 1024))
        from artfs.backends.s3 import S3Backend

        store = Store(backend=S3Backend("s3://bench/store", timeout=300), cache=Cache(os.path.join(base, "wcache")))
        t0 = time.perf_counter()
        art = Artifact("data", type="dataset")
        art.add_dir(os.path.dirname(local))
        store.log_artifact(art, project=PROJECT)
        keys = ["store/" + blob_key(PROJECT, e.digest) for e in store.artifact(f"{PROJECT}/data:v0").manifest.entries]
        peers = [p for p in a.peers.split(",") if p]
        if peers:  # s3rver lists without CommonPrefixes: the peers read copies at a bucket's root
            with concurrent.futures.ThreadPoolExecutor(16) as ex:
                list(ex.map(lambda n: client.upload_file(os.path.join(local, n), "peers", n), names))
        print(f"  (uploaded in {time.perf_counter() - t0:.1f} s)", flush=True)

        def boto() -> float:
            def get(k: str) -> int:
                return len(client.get_object(Bucket="bench", Key=k)["Body"].read())

            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(16) as ex:
                sizes = list(ex.map(get, keys))
            assert sum(sizes) == a.files * a.kib * 1024
            return a.files / (time.perf_counter() - t0)

        cpu: dict[str, tuple[float, float]] = {}  # (all, event loop) seconds per file, best round
        rnd = [0]

        def artfs_rounds() -> tuple[float, float]:
            """(cold files/s, warm files/s) in one mount with a fresh cache."""
            rnd[0] += 1
            cache_dir = os.path.join(base, f"mcache{rnd[0]}")
            mnt = os.path.join(base, "mnt")
            with MountProcess(store.url, mnt, cache_dir=cache_dir, env=dict(os.environ),
                              args=["--read-only"] if a.read_only else ()) as m:
                paths = [m.path(PROJECT, "data", "v0", "train", n) for n in names]
                os.listdir(m.path(PROJECT, "data", "v0", "train"))
                drop_caches()
                with Profiler(a.profile, f"cold{rnd[0]}", m.pid, a.spy_args, a.attach):
                    c = CpuPerFile(m.pid, a.files)
                    cold = epoch(paths, a.workers, rnd[0])
                    cpu["cold"] = min(cpu.get("cold", (1e9, 0.0)), c.done())
                    print(f"  (daemon CPU per cold file {c.done()[0] * 1000:.2f} ms: user {c.user_sys[0] * 1000:.2f}, "
                          f"system {c.user_sys[1] * 1000:.2f}; event loop {c.done()[1] * 1000:.2f})", flush=True)
                if a.cold_only:
                    stats = m.stats()
                    table.note(f"artfs round {rnd[0]}: small fetches {stats.get('small_fetches')}, "
                               f"prefetched {stats.get('prefetched')}, backend {stats.get('backend')}")
                    shutil.rmtree(cache_dir, ignore_errors=True)
                    return cold, 0.0
                cache = Cache(cache_dir)
                wait_for(lambda: all(cache.has(e.digest) for e in store.artifact(f"{PROJECT}/data:v0").manifest.entries),
                         120, "every blob to be complete in the cache")
                drop_caches()
                before = m.stats()
                with Profiler(a.profile, f"warm{rnd[0]}", m.pid, a.spy_args, a.attach):
                    c = CpuPerFile(m.pid, a.files)
                    warm = epoch(paths, a.workers, rnd[0] + 100)
                    per_file = c.done()
                    cpu["warm"] = min(cpu.get("warm", (1e9, 0.0)), per_file)
                stats = m.stats()
                print(f"  (daemon CPU per warm file {per_file[0] * 1000:.2f} ms; requests per warm file: "
                      + requests_per_file(before, stats, a.files) + ")", flush=True)
                table.note(f"artfs round {rnd[0]}: kernel {stats.get('kernel')}, passthrough opens "
                           f"{stats.get('passthrough_opens')}, small fetches {stats.get('small_fetches')}, "
                           f"prefetched {stats.get('prefetched')}, backend {stats.get('backend')}")
            shutil.rmtree(cache_dir, ignore_errors=True)
            return cold, warm

        def disk() -> float:
            drop_caches()
            return epoch([os.path.join(local, n) for n in names], a.workers, 7)

        failed: dict[str, str] = {}

        def peer(kind: str) -> float:
            """The peer's cold epoch (files/s); for a peer with a disk cache, its warm epoch as well,
            into ``warm_of[kind]``."""
            if kind in failed:
                return 0.0
            try:
                with PeerMount(kind, server, "peers", os.path.join(base, f"mnt-{kind}"), base) as pm:
                    paths = [os.path.join(pm.mnt, n) for n in names]
                    wait_for(lambda: os.path.exists(paths[-1]), 60, f"the files to show up in the {kind} mount")
                    drop_caches()
                    cold = epoch(paths, a.workers, 3)
                    if kind in PeerMount.CACHING and not a.cold_only:
                        drop_caches()
                        warm_of[kind] = epoch(paths, a.workers, 4)
                shutil.rmtree(pm.cache, ignore_errors=True)
                return cold
            except Exception as e:
                failed[kind] = f"{type(e).__name__}: {e}"
                return 0.0

        warm_of: dict[str, float] = {}

        best: dict[str, float] = {}
        for r in range(a.rounds):
            fns: dict[str, Callable[[], Any]] = {"boto3": boto, **({} if a.cold_only else {"disk": disk}),
                                                 **{k: (lambda k=k: peer(k)) for k in peers}}
            for name, fn in fns.items():
                v = fn()
                best[name] = max(best.get(name, 0.0), v)
                print(f"  round {r + 1}: {name} {v:,.0f} files/s", flush=True)
                if name in warm_of:
                    best[f"{name} warm"] = max(best.get(f"{name} warm", 0.0), warm_of.pop(name))
                    print(f"  round {r + 1}: {name} warm {best[f'{name} warm']:,.0f} files/s", flush=True)
            cold, warm = artfs_rounds()
            best["cold"] = max(best.get("cold", 0.0), cold)
            best["warm"] = max(best.get("warm", 0.0), warm)
            print(f"  round {r + 1}: artfs cold {cold:,.0f} files/s, warm {warm:,.0f} files/s", flush=True)

        table.add("small-file epoch, cold: artfs mount vs boto3 (16 threads)", best["cold"], best["boto3"],
                  unit="files/s", aim=">= 0.9", ref_name="boto3")
        for k in peers:
            if k in failed:
                table.note(f"{k}: could not be measured here: {failed[k]}")
            else:
                table.add(f"small-file epoch, cold: {k} mount vs boto3", best[k], best["boto3"], unit="files/s",
                          ref_name="boto3")
        if a.cold_only:
            table.note(f"daemon CPU per file: cold {cpu['cold'][0] * 1000:.2f} ms (event loop "
                       f"{cpu['cold'][1] * 1000:.2f}) (aim: under 1 ms)")
        else:
            dropped = "page cache dropped" if a.drop == "data" else "page cache, dentries and inodes dropped"
            table.add(f"small-file epoch, warm (cache complete, {dropped}): artfs vs local disk", best["warm"],
                      best["disk"], unit="files/s", aim=">= 0.5", ref_name="local disk")
            for k in peers:
                if f"{k} warm" in best:
                    table.add(f"small-file epoch, warm ({dropped}): {k} mount vs local disk", best[f"{k} warm"],
                              best["disk"], unit="files/s", ref_name="local disk")
            table.note(f"daemon CPU per file: cold {cpu['cold'][0] * 1000:.2f} ms (event loop "
                       f"{cpu['cold'][1] * 1000:.2f}), warm {cpu['warm'][0] * 1000:.2f} ms (event loop "
                       f"{cpu['warm'][1] * 1000:.2f}) (aim: under 1 ms cold)")
    finally:
        server.__exit__()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(base, ignore_errors=True)
    print()
    print(table.markdown())


if __name__ == "__main__":
    main()
