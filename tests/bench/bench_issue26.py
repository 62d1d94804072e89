"""Issue 26's benchmark: every row of its table for stock pyfuse3 and the patched build, in one run.

    python tests/bench/bench_issue26.py [--sections setup,blob,listing,warm,s3,random,fsync] [--dir D]

Each section runs the scripts beside this one (their own references, interleaved rounds) once
per build, and prints their rows; ``--out FILE`` also writes everything to FILE. Builds:
``stock`` is pyfuse3 3.5.0 from its sdist against the system's libfuse (Debian 12: 3.14),
built into a directory (tests/stock_pyfuse3.py) that goes first on the daemon's
``PYTHONPATH``; ``patched`` is the pyfuse3 of this venv (``artfs build-fuse``), with
passthrough and with ``-o no_passthrough``. Sections:

``setup``    installs the peers (``apt-get install -y s3fs rclone``) when they are missing, and
             builds the stock pyfuse3 (about a minute, once).
``blob``     a complete cached blob read with the page cache dropped vs the cache file, and a
             page-cache re-read vs a native re-read (bench_read.py ``--only cache``).
``paths``    the same reads of a complete cached blob (pages dropped, and in memory) through every
             way the daemon can serve them, mounted side by side over one cache and interleaved
             in the same rounds: stock pyfuse3 through Python (``ARTFS_MAPPED_READS=0``) and from
             a mapping; the patched build with ``-o no_passthrough`` through Python, from a
             mapping (``ARTFS_SPLICED_READS=0``) and spliced; and with passthrough.
``folios``   why a page-cache re-read through the mount is slower than a native one: the sizes
             of the page-cache folios holding the file (``/proc/kpageflags``) through the mount,
             in the cache file (ext4), in a tmpfs with 4 KiB pages and one with 2 MiB pages, and
             the re-read speed of each (1 MiB reads, best of 7, no request reaches the daemon).
``listing``  second ``find`` and ``ls -lR`` through ``v0/`` and ``latest/`` vs local disk
             (bench_listing.py).
``warm``     the warm small-file epoch, caches dropped, vs local disk (bench_warm.py).
``s3``       a cold 1 GiB file from s3rver: artfs vs boto3, s3fs and rclone, interleaved
             (bench_read.py ``--only s3``; patched build: the chunked path does not depend on it).
``random``   cold reads at random offsets of a big object in s3rver (4 KiB, 64 KiB, 1 MiB):
             artfs vs s3fs and rclone, a fresh mount per round; time per read and bytes fetched
             per byte read (artfs: its ``fetched_bytes``; the peers: what their process read,
             ``rchar`` of /proc/PID/io, which is what came from the server: they cache nothing).
``fsync``    a draft written and fsync'ed vs the local disk (bench_mount_write.py).

Run as root (drop_caches, read-ahead). Every script cleans up after itself.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

MiB = 1 << 20
SECTIONS = ("setup", "blob", "paths", "folios", "listing", "warm", "s3", "random", "fsync")


class Out:
    """Everything printed, also kept for ``--out``."""

    def __init__(self, path: str | None) -> None:
        self.f = open(path, "w") if path else None

    def __call__(self, text: str) -> None:
        print(text, flush=True)
        if self.f is not None:
            self.f.write(text + "\n")
            self.f.flush()


def build_env(build: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if build == "stock":
        from stock_pyfuse3 import stock_env

        env = stock_env(env)
    return env


def run_script(out: Out, build: str, args: list[str], *, timeout: float = 1800) -> None:
    """Run a bench script of this directory for ``build``; its output goes to ``out`` as it comes."""
    cmd = [sys.executable, os.path.join(HERE, args[0]), *args[1:]]
    out(f"\n## {build}: {' '.join(['tests/bench/' + args[0], *args[1:]])}"
        f"  (load {os.getloadavg()[0]:.1f}, {datetime.datetime.now(datetime.timezone.utc):%H:%M} UTC)")
    p = subprocess.Popen(cmd, cwd=ROOT, env=build_env(build), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    for line in p.stdout:
        out("    " + line.rstrip())
        if time.monotonic() > deadline:
            p.kill()
            out("    (timed out)")
            break
    p.wait()
    if p.returncode:
        out(f"    (exit status {p.returncode})")


# -- setup ---------------------------------------------------------------------------------------
def setup(out: Out) -> None:
    missing = [t for t in ("s3fs", "rclone") if shutil.which(t) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        out(f"installing {', '.join(missing)} (apt-get)")
        subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                           capture_output=True, text=True)
        if r.returncode:
            out(f"apt-get install failed: {r.stderr[-500:]}")
    for t in ("s3fs", "rclone", "s3rver"):
        out(f"{t}: {shutil.which(t) or 'missing (its rows are reported as not measured)'}")
    from stock_pyfuse3 import stock_pyfuse3_dir

    out(f"stock pyfuse3: {stock_pyfuse3_dir()}")


# -- paths -----------------------------------------------------------------------------------------
def bench_paths(out: Out, a: argparse.Namespace, base: str) -> None:
    from bench_read import read_all, write_random

    from artfs import Artifact, Cache, Store
    from artfsd.testing import MountProcess

    size = a.blob_mb * MiB
    src = os.path.join(base, "src")
    os.makedirs(src)
    write_random(os.path.join(src, "big.bin"), size)
    store = Store(os.path.join(base, "store"))
    art = Artifact("big", type="dataset")
    art.add_dir(src)
    store.log_artifact(art, project="bench")
    shutil.rmtree(src)
    digest = store.artifact("bench/big:v0").get_path("big.bin").digest
    cache_dir = os.path.join(base, "cache")
    off = {"ARTFS_SPLICED_READS": "0", "ARTFS_MAPPED_READS": "0"}
    variants = {  # name -> (build, extra environment, mount arguments)
        "stock, through Python": ("stock", off, []),
        "stock, mapped": ("stock", {}, []),
        "no_passthrough, through Python": ("patched", off, ["-o", "no_passthrough"]),
        "no_passthrough, mapped": ("patched", {"ARTFS_SPLICED_READS": "0"}, ["-o", "no_passthrough"]),
        "no_passthrough, spliced": ("patched", {}, ["-o", "no_passthrough"]),
        "passthrough": ("patched", {}, []),
    }
    if "stock" not in a.builds:
        variants = {k: v for k, v in variants.items() if v[0] != "stock"}
    with contextlib.ExitStack() as stack:
        mounts = {}
        for i, (name, (build, extra, args)) in enumerate(variants.items()):
            env = build_env(build)
            env.update(extra)
            mounts[name] = stack.enter_context(MountProcess(store.url, os.path.join(base, f"mnt{i}"),
                                                            cache_dir=cache_dir, env=env, args=args))
        first = next(iter(mounts.values()))
        read_all(first.path("bench/big/v0/big.bin"))
        blob = Cache(cache_dir).path(digest)
        deadline = time.monotonic() + 60
        while not os.path.exists(blob) and time.monotonic() < deadline:
            time.sleep(0.1)
        paths = {name: m.path("bench/big/v0/big.bin") for name, m in mounts.items()}
        paths["the cache file"] = blob

        def drop(p: str) -> None:
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)

        best: dict[tuple[str, str], float] = {}
        names = list(paths)
        for r in range(a.rounds + 1):
            for name in names[r % len(names):] + names[:r % len(names)]:
                p = paths[name]
                os.sync()
                drop(blob)
                drop(p)
                t = read_all(p)[0]
                best[("dropped", name)] = min(best.get(("dropped", name), float("inf")), t)
                read_all(blob)
                if p != blob:  # the reference: the cache file read from memory
                    drop(p)
                t = read_all(p)[0]
                best[("memory", name)] = min(best.get(("memory", name), float("inf")), t)
        out(f"\n## paths: a complete cached blob of {a.blob_mb} MiB read with 1 MiB reads, every path mounted side by side, "
            f"{a.rounds + 1} interleaved rounds, best of each (load {os.getloadavg()[0]:.1f})")
        out("| path | pages dropped | vs the cache file | cache file in memory (mount's pages dropped) | vs the cache file |")
        out("| --- | --- | --- | --- | --- |")
        for name in names:
            d, m_ = best[("dropped", name)], best[("memory", name)]
            out(f"| {name} | {size / d / 1e9:.2f} GB/s | {best[('dropped', 'the cache file')] / d:.2f} | "
                f"{size / m_ / 1e9:.2f} GB/s | {best[('memory', 'the cache file')] / m_:.2f} |")
        for name, m in mounts.items():
            st = m.stats()
            out(f"- {name}: max_read {st.get('max_read', 0)}, reads {st['reads']}, spliced {st.get('spliced_reads', 0)}, "
                f"mapped {st.get('mapped_reads', 0)}, filled first {st.get('complete_fills', 0)}, "
                f"passthrough opens {st.get('passthrough_opens', 0)}")


# -- folios ----------------------------------------------------------------------------------------
def folio_pages(path: str) -> tuple[int, int]:
    """(pages of ``path`` in the page cache, how many of them are in folios larger than 4 KiB):
    the file is mapped (``MAP_PRIVATE``, read faults map the page-cache folios) and each page's
    flags read from ``/proc/kpageflags`` (root)."""
    import ctypes
    import mmap
    import struct

    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        mm = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        n = size // 4096
        for i in range(n):
            mm[i * 4096]
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        present = large = 0
        with open("/proc/self/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
            for i in range(n):
                pm.seek((addr // 4096 + i) * 8)
                e = struct.unpack("Q", pm.read(8))[0]
                if not e >> 63 & 1:
                    continue
                present += 1
                kf.seek((e & ((1 << 55) - 1)) * 8)
                flags = struct.unpack("Q", kf.read(8))[0]
                large += bool(flags >> 15 & 1 or flags >> 16 & 1)  # compound head or tail
        return present, large
    finally:
        os.close(fd)


def reread_gbs(path: str, reps: int = 7) -> float:
    buf = bytearray(MiB)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
        best = min(best, time.perf_counter() - t0)
    return os.path.getsize(path) / best / 1e9


def bench_folios(out: Out, a: argparse.Namespace, base: str) -> None:
    from bench_read import write_random

    from artfs import Artifact, Cache, Store
    from artfsd.testing import MountProcess

    size = a.blob_mb * MiB
    src = os.path.join(base, "src")
    os.makedirs(src)
    write_random(os.path.join(src, "big.bin"), size)
    store = Store(os.path.join(base, "store"))
    art = Artifact("big", type="dataset")
    art.add_dir(src)
    store.log_artifact(art, project="bench")
    digest = store.artifact("bench/big:v0").get_path("big.bin").digest
    small, huge = os.path.join(base, "tmpfs-4k"), os.path.join(base, "tmpfs-2m")
    mounted = []
    try:
        for d, opt in ((small, "huge=never"), (huge, "huge=always")):
            os.makedirs(d)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"{opt},size={2 * a.blob_mb}m", "tmpfs", d], check=True)
            mounted.append(d)
            shutil.copy(os.path.join(src, "big.bin"), os.path.join(d, "big.bin"))
        with MountProcess(store.url, os.path.join(base, "mnt"), cache_dir=os.path.join(base, "cache"),
                          args=["-o", "no_passthrough"]) as m:
            through = m.path("bench/big/v0/big.bin")
            reread_gbs(through, 1)
            blob = Cache(os.path.join(base, "cache")).path(digest)
            reads = m.stats()["reads"]
            files = {"through the mount (FUSE)": through, "the cache file (ext4)": blob,
                     "tmpfs, 4 KiB pages": os.path.join(small, "big.bin"), "tmpfs huge=always": os.path.join(huge, "big.bin")}
            speeds = {k: reread_gbs(p) for k, p in files.items()}
            out(f"\n## folios: a {a.blob_mb} MiB file re-read from the page cache (load {os.getloadavg()[0]:.1f}); "
                f"read requests reaching the daemon during the re-reads: {m.stats()['reads'] - reads}")
            out("| file | pages in the page cache | in folios > 4 KiB | re-read | vs the cache file |")
            out("| --- | --- | --- | --- | --- |")
            for k, p in files.items():
                present, large = folio_pages(p)
                out(f"| {k} | {present:,} | {large:,} | {speeds[k]:.2f} GB/s | "
                    f"{speeds[k] / speeds['the cache file (ext4)']:.2f} |")
    finally:
        for d in mounted:
            subprocess.run(["umount", d], check=False)


# -- random reads ----------------------------------------------------------------------------------
def _rchar(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def bench_random(out: Out, a: argparse.Namespace, base: str) -> None:
    """Cold random reads of an object in s3rver: artfs vs s3fs vs rclone (see the module docstring)."""
    import boto3

    from bench_read import FILE, PROJECT, PeerMount, S3rver, log_big_file, write_random

    from artfs import Cache, Store
    from artfs.backends.s3 import S3Backend
    from artfs.lowlevel import blob_key
    from artfsd.testing import MountProcess

    size = a.random_mb * MiB
    out(f"\n## random reads: {a.random_reads} cold preads per size at random offsets of a {a.random_mb} MiB "
        f"object in s3rver, {a.rounds} rounds (load {os.getloadavg()[0]:.1f})")
    server = S3rver(base).__enter__()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        bucket = "bench"
        client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        src = os.path.join(base, "src")
        os.makedirs(src)
        write_random(os.path.join(src, FILE), size)
        store = Store(backend=S3Backend(f"s3://{bucket}/store", timeout=300), cache=Cache(os.path.join(base, "wc")))
        rel, digest = log_big_file(store, src)
        with open(os.path.join(src, FILE), "rb") as f:
            want = f.read()
        shutil.rmtree(src)
        shutil.rmtree(os.path.join(base, "wc"))
        client.copy_object(Bucket=bucket, Key=FILE,
                           CopySource={"Bucket": bucket, "Key": "store/" + blob_key(PROJECT, digest)})
        sizes = (4096, 64 << 10, MiB)
        res: dict[tuple[str, int], list[tuple[float, float]]] = {}  # (kind, size) -> [(s per read, fetched/read)]
        failed: dict[str, str] = {}

        def measure(kind: str, path: str, fetched: "callable[[], int]", seed: int) -> None:  # type: ignore[valid-type]
            rnd = random.Random(seed)
            fd = os.open(path, os.O_RDONLY)
            try:
                for n in sizes:
                    offs = [rnd.randrange(size - n) for _ in range(a.random_reads)]
                    f0 = fetched()
                    t0 = time.perf_counter()
                    for off in offs:
                        got = os.pread(fd, n, off)
                        if got != want[off:off + n]:
                            raise RuntimeError(f"{kind}: wrong bytes at {off}")
                    t = (time.perf_counter() - t0) / len(offs)
                    res.setdefault((kind, n), []).append((t, (fetched() - f0) / (n * len(offs))))
            finally:
                os.close(fd)

        kinds = ["artfs", "s3fs", "rclone"]
        for r in range(a.rounds):
            for kind in kinds[r % 3:] + kinds[:r % 3]:
                if kind in failed:
                    continue
                mnt = os.path.join(base, f"mnt-{kind}")
                try:
                    if kind == "artfs":
                        cache_dir = os.path.join(base, f"cache{r}")
                        with MountProcess(store.url, mnt, cache_dir=cache_dir, args=["--read-only"]) as m:
                            measure(kind, m.path(PROJECT, rel), lambda m=m: m.stats()["fetched_bytes"], r)
                        shutil.rmtree(cache_dir, ignore_errors=True)
                    else:
                        with PeerMount(kind, server, bucket, mnt, base) as pm:
                            path = os.path.join(pm.mnt, FILE)
                            deadline = time.monotonic() + 30
                            while not os.path.exists(path) and time.monotonic() < deadline:
                                time.sleep(0.1)
                            assert pm.proc is not None
                            measure(kind, path, lambda pid=pm.proc.pid: _rchar(pid), r)
                except Exception as e:
                    failed[kind] = f"{type(e).__name__}: {e}"
        out("| read size | artfs ms/read | s3fs ms/read | rclone ms/read | artfs fetched/read | s3fs | rclone |")
        out("| --- | --- | --- | --- | --- | --- | --- |")
        for n in sizes:
            cells_t, cells_b = [], []
            for kind in kinds:
                v = res.get((kind, n))
                if not v:
                    cells_t.append("-")
                    cells_b.append("-")
                    continue
                cells_t.append(f"{min(t for t, _ in v) * 1000:.2f}")
                cells_b.append(f"{min(b for _, b in v):.1f}x")
            out(f"| {n >> 10} KiB | {' | '.join(cells_t)} | {' | '.join(cells_b)} |")
        for kind, why in failed.items():
            out(f"- {kind}: not measured: {why}")
    finally:
        server.__exit__()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--builds", default="stock,patched")
    ap.add_argument("--dir", default="/var/tmp", help="where stores, caches and mounts go (a disk, not tmpfs)")
    ap.add_argument("--out", default=None, help="also write everything printed to this file")
    ap.add_argument("--blob-mb", type=int, default=512)
    ap.add_argument("--s3-mb", type=int, default=1024)
    ap.add_argument("--random-mb", type=int, default=1024)
    ap.add_argument("--random-reads", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--files", type=int, default=20000, help="listing: files of the tree")
    ap.add_argument("--epoch-files", type=int, default=2000)
    a = ap.parse_args()
    out = Out(a.out)
    sections = [s for s in a.sections.split(",") if s]
    builds = [b for b in a.builds.split(",") if b]
    out(f"# issue 26 benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node()}: {os.cpu_count()} cores, kernel {platform.release()}, load {os.getloadavg()[0]:.1f}; "
        f"command: python tests/bench/bench_issue26.py {' '.join(sys.argv[1:])}")
    reps = str(a.rounds)
    if "setup" in sections:
        setup(out)
    for section in sections:
        if section == "blob":
            for build in builds:
                run_script(out, build, ["bench_read.py", "--only", "cache", "--size-mb", str(a.blob_mb), "--reps", reps,
                                        "--dir", a.dir])
                if build == "patched":
                    run_script(out, "patched -o no_passthrough", ["bench_read.py", "--only", "cache", "--size-mb",
                                                                 str(a.blob_mb), "--reps", reps, "--dir", a.dir,
                                                                 "--no-passthrough"])
        elif section == "paths":
            base = tempfile.mkdtemp(prefix="artfs-bench-paths-", dir=a.dir)
            try:
                bench_paths(out, a, base)
            finally:
                shutil.rmtree(base, ignore_errors=True)
        elif section == "folios":
            base = tempfile.mkdtemp(prefix="artfs-bench-folios-", dir=a.dir)
            try:
                bench_folios(out, a, base)
            finally:
                shutil.rmtree(base, ignore_errors=True)
        elif section == "listing":
            for build in builds:
                run_script(out, build, ["bench_listing.py", "--files", str(a.files), "--entries", "0", "--reps", reps,
                                        "--dir", a.dir])
        elif section == "warm":
            for build in builds:
                run_script(out, build, ["bench_warm.py", "--files", str(a.epoch_files), "--kib", "64", "--rounds", reps,
                                        "--dir", a.dir, *(["--no-passthrough"] if build == "patched" else [])])
        elif section == "s3":
            run_script(out, "patched", ["bench_read.py", "--only", "s3", "--size-mb", str(a.s3_mb), "--reps", reps,
                                        "--dir", a.dir])
        elif section == "random":
            base = tempfile.mkdtemp(prefix="artfs-bench-random-", dir=a.dir)
            try:
                bench_random(out, a, base)
            except Exception as e:
                out(f"random reads: not measured: {type(e).__name__}: {e}")
            finally:
                with contextlib.suppress(OSError):
                    shutil.rmtree(base)
        elif section == "fsync":
            run_script(out, "patched", ["bench_mount_write.py", "--size-mb", "512", "--entries", "", "--no-s3",
                                        "--dir", a.dir])
        elif section != "setup":
            raise SystemExit(f"unknown section {section!r} (known: {', '.join(SECTIONS)})")


if __name__ == "__main__":
    main()
