"""Benchmark for issue 3: reading through the mount, each figure a ratio to a reference run alongside.

Not collected by pytest. Run as root (it sets each FUSE mount's ``read_ahead_kb``; s3fs and rclone
mount through FUSE too)::

    .venv/bin/python tests/bench/bench_read.py                 # everything (about 10 minutes)
    .venv/bin/python tests/bench/bench_read.py --only cache,ttfb --reps 5 --dir /var/tmp

Sections (``--only``):

``cache``  A 1 GiB file of a local store. *cold*: read through a fresh mount with an empty cache
           (fetched lazily from the store) vs copying the store file to a new file (``cp``: the
           bytes must be written into the cache once; the store file is in the page cache for
           both). Then, with the file complete in the cache: read through the mount vs reading
           that cache file directly, (a) with the cache file's pages dropped first (from disk; the
           mount's pages are dropped too), (b) with the cache file in the page cache (the mount's
           own pages dropped: what FUSE costs); and (c) a re-read served from the page cache
           (``keep_cache``) vs a native re-read of the cache file.
``s3``     The same 1 GiB file as an artfs blob in a bucket of ``s3rver`` (npm; its ranged GETs
           stream from a file). Cold sequential read through a fresh artfs mount vs boto3's
           parallel download (``download_file``, default ``TransferConfig``) of the same object
           from the same server into a local file; and the same read through s3fs and rclone
           mount (Debian packages), path-style, defaults otherwise (rclone: ``--vfs-cache-mode
           off``). s3rver answers delimiter listings without ``CommonPrefixes``, so s3fs and
           rclone cannot walk down to the blob's key: they read a server-side copy of it at the
           bucket's root (same bytes, same server). Each mount keeps its own read-ahead: artfs raises its ``read_ahead_kb`` to 1024
           itself; s3fs and rclone keep the kernel's 128 (rclone reads ten times slower with
           1024: the kernel's parallel read-ahead requests arrive out of order and it re-opens
           its stream). Each is mounted afresh for every run (a cold kernel page cache) and
           unmounted after. Every run notes the CPU (user + system, all threads) that the
           reader spent during the read (the artfs daemon, also up to its blob's verification;
           the s3fs or rclone process; boto3's own process) and that s3rver spent serving it.
``ttfb``   Time to the first byte of a 10 GiB file (``--big-gb``), cold: a fresh mount and an
           empty cache, then ``open`` + ``read(4096)`` at offset 0 (and at the middle), vs the
           same on the store file with its pages dropped. The 10 GiB blob is a sparse file of
           zeros placed in a local store under its real digest and logged with the API (no
           upload: the store already has it); it is deleted afterwards.

Each measurement runs ``--reps`` times (default 3) with the references interleaved, and the best
run of each is kept: the machine is shared and noisy, so the best run is the one least disturbed.
Whatever cannot run here (no s3rver, no s3fs, ...) is reported with the reason, not skipped silently.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from artfs import Artifact, Cache, Store  # noqa: E402
from artfs._mounts import find_mount  # noqa: E402
from artfs._digest import finish, hasher  # noqa: E402
from artfs._layout import blob_key  # noqa: E402
from artfsd.testing import MountProcess  # noqa: E402

MiB = 1 << 20
GB = 1e9
READ_AHEAD_KB = 1024
PROJECT, ARTIFACT, FILE = "bench", "big", "big.bin"
MOUNT_ARGS: list[str] = []  # --no-passthrough: the cache section's mounts get -o no_passthrough


# -- helpers -------------------------------------------------------------------------------------
def read_all(path: str, bufsize: int = MiB) -> tuple[float, int]:
    """(seconds, bytes) to read ``path`` sequentially with ``bufsize`` reads (like ``cat``)."""
    buf = bytearray(bufsize)
    n = 0
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(buf):
            n += k
    return time.perf_counter() - t0, n


def drop(path: str) -> None:
    """Drop the (clean) page-cache pages of ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def set_read_ahead(mnt: str, kb: int = READ_AHEAD_KB) -> str:
    info = find_mount(mnt)
    if info is None:
        return "not mounted"
    try:
        with open(f"/sys/class/bdi/{info.device}/read_ahead_kb", "w") as f:
            f.write(str(kb))
        return ""
    except OSError as e:
        return f"cannot set read_ahead_kb: {e.strerror}"


def write_random(path: str, size: int) -> None:
    block = os.urandom(4 * MiB)
    with open(path, "wb") as f:
        for i in range(0, size, len(block)):
            f.write((i // len(block)).to_bytes(8, "little") + block[8 : min(len(block), size - i)])


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fusermount_u(mnt: str) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount") or "umount"
    for flags in (["-u"], ["-uz"]):
        if not is_mounted_any(mnt):
            return
        subprocess.run([tool, *flags, mnt] if tool != "umount" else ["umount", "-l", mnt], capture_output=True)
        with contextlib.suppress(RuntimeError):
            wait_for(lambda: not is_mounted_any(mnt), 10, f"unmounting {mnt}")


def is_mounted_any(mnt: str) -> bool:
    return find_mount(os.path.abspath(mnt)) is not None


def stop_child(p: subprocess.Popen[bytes] | None) -> None:
    """End a child process we started, by its PID."""
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


class Table:
    """Rows of (what, artfs, reference, ratio, aim); printed as they come and again at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.notes: list[str] = []

    def add(self, what: str, ours: float, ref: float, *, unit: str = "GB/s", aim: str = "",
            ref_name: str = "") -> None:
        if unit in ("GB/s", "files/s"):  # rates: higher is better
            ratio = f"{ours / ref:.2f}" if ours and ref else "-"
            fmt: Callable[[float], str] = ((lambda v: f"{v:.2f} GB/s") if unit == "GB/s"  # noqa: E731
                                           else (lambda v: f"{v:,.0f} files/s"))
        else:  # seconds: how many times the reference's time
            ratio = f"{ours / ref:.0f}x" if ours and ref else "-"
            fmt = lambda v: f"{v * 1000:.2f} ms"  # noqa: E731
        row = (what, fmt(ours), f"{fmt(ref)}{f' ({ref_name})' if ref_name else ''}", ratio, aim)
        self.rows.append(row)
        print(f"  {row[0]:<58} {row[1]:>11}  vs {row[2]:<34} ratio {row[3]:>5}  {row[4]}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  NOTE: {text}", flush=True)

    def markdown(self) -> str:
        out = ["| measurement | artfs | reference | ratio | aim |", "| --- | --- | --- | --- | --- |"]
        out += [f"| {' | '.join(r)} |" for r in self.rows]
        return "\n".join(out + [""] + [f"- {n}" for n in self.notes])


def timed_best(reps: int, fns: dict[str, Callable[[], float]],
               alternate: tuple[str, str] | None = None) -> dict[str, float]:
    """Run every function ``reps`` times, interleaved; the best (smallest) time of each.

    ``alternate``: two keys whose places swap every other round (an A/B: the run after another
    client's is not the same as the run after the other's)."""
    best = {k: float("inf") for k in fns}
    for r in range(reps):
        keys = list(fns)
        if alternate is not None and r % 2:
            i, j = keys.index(alternate[0]), keys.index(alternate[1])
            keys[i], keys[j] = keys[j], keys[i]
        for k in keys:
            fn = fns[k]
            t = fn()
            print(f"  round {r + 1}: {k} {t:.2f} s", flush=True)
            best[k] = min(best[k], t)
    return best


def log_big_file(store: Store, src_dir: str) -> tuple[str, str]:
    """Log ``src_dir`` (holding FILE) as PROJECT/ARTIFACT; (the file's path under PROJECT, its digest)."""
    art = Artifact(ARTIFACT, type="model")
    art.add_dir(src_dir)
    logged = store.log_artifact(art, project=PROJECT)
    return os.path.join(ARTIFACT, "v0", FILE), logged.get_path(FILE).digest


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_counters(m: MountProcess) -> str:
    s = m.stats()
    return f"{s['backend'].get('range', 0)} range GETs, {s['reads']} read requests"


# -- cache: a local store ----------------------------------------------------------------------
def bench_cache(a: argparse.Namespace, base: str, table: Table) -> None:
    size = a.size_mb * MiB
    src = os.path.join(base, "src")
    os.makedirs(src)
    write_random(os.path.join(src, FILE), size)
    store = Store(os.path.join(base, "store"), cache=Cache(os.path.join(base, "wcache")))
    rel, digest = log_big_file(store, src)
    shutil.rmtree(src)
    shutil.rmtree(os.path.join(base, "wcache"))
    store_file = store.backend._path(blob_key(PROJECT, digest))  # type: ignore[attr-defined]
    print(f"\n[cache] a {a.size_mb} MiB file in a local store ({store_file})", flush=True)

    # cold: a fresh mount with an empty cache, vs cp of the store file
    copy = os.path.join(base, "copy.bin")
    mnt = os.path.join(base, "mnt")
    counters = ""

    def cp() -> float:
        read_all(store_file)  # the store file in the page cache, as for the mount
        os.sync()
        t0 = time.perf_counter()
        shutil.copyfile(store_file, copy)
        t = time.perf_counter() - t0
        os.unlink(copy)
        return t

    rep = [0]

    def cold_mount() -> float:
        nonlocal counters
        rep[0] += 1
        cache_dir = os.path.join(base, f"mcache{rep[0]}")
        read_all(store_file)
        os.sync()
        with MountProcess(store.url, mnt, cache_dir=cache_dir, args=MOUNT_ARGS) as m:
            path = m.path(PROJECT, rel)
            os.stat(path)  # lookups and the manifest: not part of the read
            t, n = read_all(path)
            assert n == size, n
            counters = daemon_counters(m)
            blob = Cache(cache_dir).path(digest)
            wait_for(lambda: os.path.exists(blob), 60, "the fetched file to be verified")
        shutil.rmtree(cache_dir)
        return t

    best = timed_best(a.reps, {"mount": cold_mount, "cp": cp})
    table.add("cold read, local store -> mount (empty cache)", size / best["mount"] / GB,
              size / best["cp"] / GB, ref_name="cp store file")
    table.note(f"cold read from a local store: {counters} per run")

    # complete in the cache
    cache_dir = os.path.join(base, "mcache")
    with MountProcess(store.url, mnt, cache_dir=cache_dir, args=MOUNT_ARGS) as m:
        table.note(f"cache section: kernel {m.stats()['kernel']}")
        path = m.path(PROJECT, rel)
        read_all(path)
        blob = Cache(cache_dir).path(digest)
        wait_for(lambda: os.path.exists(blob), 60, "the fetched file to be verified")
        err = set_read_ahead(m.mountpoint)  # the daemon set it too; make sure
        if err:
            table.note(f"artfs mount: {err}")

        def disk(p: str) -> Callable[[], float]:
            def run() -> float:
                os.sync()
                drop(blob)
                drop(path)
                return read_all(p)[0]
            return run

        best = timed_best(a.reps, {"mount": disk(path), "direct": disk(blob)})
        table.add("in the cache, pages dropped: mount vs the cache file", size / best["mount"] / GB,
                  size / best["direct"] / GB, aim="0.8", ref_name="cache file")

        def warm(p: str) -> Callable[[], float]:
            def run() -> float:
                read_all(blob)
                drop(path)
                return read_all(p)[0]
            return run

        best = timed_best(a.reps, {"mount": warm(path), "direct": warm(blob)})
        table.add("in the cache and its page cache: mount vs the cache file", size / best["mount"] / GB,
                  size / best["direct"] / GB, ref_name="cache file")

        requests = [0, 0]  # read requests the daemon saw during the first reads, the re-reads

        def reread(p: str) -> Callable[[], float]:
            def run() -> float:
                r0 = m.stats()["reads"]
                read_all(p)
                r1 = m.stats()["reads"]
                t = read_all(p)[0]
                if p == path:
                    requests[0] += r1 - r0
                    requests[1] += m.stats()["reads"] - r1
                return t
            return run

        best = timed_best(a.reps, {"mount": reread(path), "direct": reread(blob)})
        table.add("re-read from the page cache: mount vs native", size / best["mount"] / GB,
                  size / best["direct"] / GB, aim="0.9", ref_name="cache file")
        table.note(f"page-cache re-reads: the daemon saw {requests[0]} read requests during the {a.reps} "
                   f"untimed first reads and {requests[1]} during the {a.reps} timed re-reads")


# -- s3: s3rver, boto3, s3fs, rclone -----------------------------------------------------------
class S3rver:
    def __init__(self, base: str) -> None:
        self.dir = os.path.join(base, "s3rver")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "S3rver":
        exe = shutil.which("s3rver")
        if exe is None:
            raise RuntimeError("s3rver is not installed (npm install -g s3rver)")
        self.proc = subprocess.Popen([exe, "-d", self.dir, "-p", str(self.port), "-a", "127.0.0.1", "--silent"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"s3rver exited with {self.proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True
            return False

        wait_for(up, 30, "s3rver to listen")
        return self

    def __exit__(self, *exc: object) -> None:
        stop_child(self.proc)

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self.url, "ARTFS_S3_ENDPOINT": self.url}


class PeerMount:
    """s3fs or rclone mount of a bucket, as our own child process in the foreground.

    Kinds: ``s3fs`` and ``rclone`` (no cache of their own: what they read comes from the server),
    ``s3fs-cache`` (``-o use_cache``) and ``rclone-full`` (``--vfs-cache-mode full``): the peers
    that keep what they read on the local disk, for warm comparisons.
    """

    CACHING = ("s3fs-cache", "rclone-full")

    def __init__(self, kind: str, server: S3rver, bucket: str, mnt: str, base: str) -> None:
        self.kind, self.server, self.bucket, self.mnt, self.base = kind, server, bucket, mnt, base
        self.exe = kind.split("-")[0]
        self.cache = os.path.join(base, f"{kind}-cache")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = os.path.join(base, f"{kind}.log")

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        if self.exe == "s3fs":
            pw = os.path.join(self.base, "s3fs.passwd")
            with open(pw, "w") as f:
                f.write("S3RVER:S3RVER\n")
            os.chmod(pw, 0o600)
            cache = ["-o", f"use_cache={self.cache}"] if self.kind == "s3fs-cache" else []
            return ["s3fs", self.bucket, self.mnt, "-f", "-o", f"url={self.server.url}", "-o", "use_path_request_style",
                    "-o", f"passwd_file={pw}", "-o", "ro", "-o", "endpoint=us-east-1", *cache], env
        for k in [k for k in env if k.startswith("AWS_")]:  # rclone's SDK trips over AWS_CA_BUNDLE
            del env[k]
        env.update({"RCLONE_CONFIG_S3R_TYPE": "s3", "RCLONE_CONFIG_S3R_PROVIDER": "Other",
                    "RCLONE_CONFIG_S3R_ENDPOINT": self.server.url, "RCLONE_CONFIG_S3R_ACCESS_KEY_ID": "S3RVER",
                    "RCLONE_CONFIG_S3R_SECRET_ACCESS_KEY": "S3RVER", "RCLONE_CONFIG_S3R_FORCE_PATH_STYLE": "true",
                    "RCLONE_CONFIG_S3R_REGION": "us-east-1"})
        cache = ["--vfs-cache-mode", "full", "--cache-dir", self.cache] if self.kind == "rclone-full" else []
        return ["rclone", "mount", f"s3r:{self.bucket}", self.mnt, "--read-only", *cache], env

    def __enter__(self) -> "PeerMount":
        if shutil.which(self.exe) is None:
            raise RuntimeError(f"{self.exe} is not installed (apt-get install -y {self.exe})")
        os.makedirs(self.mnt, exist_ok=True)
        if self.kind in self.CACHING:
            os.makedirs(self.cache, exist_ok=True)
        if is_mounted_any(self.mnt):
            raise RuntimeError(f"{self.mnt} is already mounted")
        cmd, env = self.command()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                with open(self.log, "rb") as f:
                    tail = f.read()[-2000:].decode("utf-8", "replace")
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {tail}")
            return is_mounted_any(self.mnt)

        try:
            wait_for(up, 30, f"{self.kind} to mount")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        fusermount_u(self.mnt)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(10)  # both exit once unmounted
            except subprocess.TimeoutExpired:
                stop_child(self.proc)


def bench_s3(a: argparse.Namespace, base: str, table: Table) -> None:
    import boto3

    size = a.size_mb * MiB
    print(f"\n[s3] a {a.size_mb} MiB file in s3rver", flush=True)
    try:
        server = S3rver(base).__enter__()
    except Exception as e:
        table.note(f"s3: not run: {e}")
        return
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        bucket = "bench"
        client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        src = os.path.join(base, "src")
        os.makedirs(src)
        write_random(os.path.join(src, FILE), size)
        from artfs.backends.s3 import S3Backend

        # a long timeout: s3rver concatenates the parts when the multipart upload completes
        store = Store(backend=S3Backend(f"s3://{bucket}/store", timeout=300),
                      cache=Cache(os.path.join(base, "wcache")))
        t0 = time.perf_counter()
        rel, digest = log_big_file(store, src)
        print(f"  (uploaded in {time.perf_counter() - t0:.1f} s)", flush=True)
        shutil.rmtree(src)
        shutil.rmtree(os.path.join(base, "wcache"))
        key = "store/" + blob_key(PROJECT, digest)
        # s3rver answers delimiter listings without CommonPrefixes, so s3fs and rclone cannot walk
        # down to the blob's key: they read a copy of it at the bucket's root (same bytes, same
        # server; the copy is made by the server)
        root_key = FILE
        client.copy_object(Bucket=bucket, Key=root_key, CopySource={"Bucket": bucket, "Key": key})
        out = os.path.join(base, "boto3.bin")
        mnt = os.path.join(base, "mnt")
        counters = ""
        rep = [0]
        # (s, daemon CPU s, s3rver CPU s, daemon CPU s until the blob was verified)
        cpu: dict[str, list[tuple[float, float, float, float]]] = {"": [], a.compare or "": []}
        peer_cpu: dict[str, list[tuple[float, float, float]]] = {}  # kind: (s, client CPU s, s3rver CPU s)

        def boto() -> float:
            os.sync()
            assert server.proc is not None
            c0 = os.times(), cpu_seconds(server.proc.pid)
            t0 = time.perf_counter()
            client.download_file(bucket, key, out)  # TransferConfig(): 8 MiB parts, 10 threads
            t = time.perf_counter() - t0
            c1 = os.times()  # this process's own CPU: boto3 runs in it
            peer_cpu.setdefault("boto3", []).append(
                (t, c1.user + c1.system - c0[0].user - c0[0].system, cpu_seconds(server.proc.pid) - c0[1]))
            assert os.path.getsize(out) == size
            os.unlink(out)
            return t

        def artfs_mount(code: str | None = None) -> float:
            nonlocal counters
            rep[0] += 1
            cache_dir = os.path.join(base, f"mcache{rep[0]}")
            env = dict(os.environ)
            if code is not None:  # --compare: the daemon imports artfs from that tree
                env["PYTHONPATH"] = code
            os.sync()
            cwd = os.getcwd()  # `python -m` puts the daemon's working directory first on its path
            with contextlib.ExitStack() as stack:
                os.chdir(code or ROOT)
                try:
                    m = stack.enter_context(MountProcess(store.url, mnt, cache_dir=cache_dir, env=env))
                finally:
                    os.chdir(cwd)
                path = m.path(PROJECT, rel)
                os.stat(path)
                assert m.proc is not None and server.proc is not None
                cpu0 = cpu_seconds(m.proc.pid), cpu_seconds(server.proc.pid)
                t, n = read_all(path)
                assert n == size, n
                run_cpu = (t, cpu_seconds(m.proc.pid) - cpu0[0], cpu_seconds(server.proc.pid) - cpu0[1])
                if code is None:
                    counters = daemon_counters(m)
                blob = Cache(cache_dir).path(digest)
                wait_for(lambda: os.path.exists(blob), 60, "the fetched file to be verified")
                # the daemon's CPU up to the verified blob too (its hashing pass may end after the read)
                cpu[code or ""].append((*run_cpu, cpu_seconds(m.proc.pid) - cpu0[0]))
            shutil.rmtree(cache_dir)
            return t

        fns: dict[str, Callable[[], float]] = {"boto3": boto, "artfs": artfs_mount}
        if a.compare:
            fns["artfs@compare"] = lambda: artfs_mount(a.compare)
        failed: dict[str, str] = {}
        for kind in ("s3fs", "rclone"):
            if kind in a.skip.split(","):
                continue
            def peer(kind: str = kind) -> float:
                if kind in failed:
                    return float("inf")
                try:
                    with PeerMount(kind, server, bucket, os.path.join(base, f"mnt-{kind}"), base) as pm:
                        path = os.path.join(pm.mnt, root_key)
                        wait_for(lambda: os.path.exists(path), 30, f"{root_key} to show up in the {kind} mount")
                        os.sync()
                        assert pm.proc is not None and server.proc is not None
                        c0 = cpu_seconds(pm.proc.pid), cpu_seconds(server.proc.pid)
                        t, n = read_all(path)
                        if n != size:
                            raise RuntimeError(f"read {n} bytes of {size}")
                        peer_cpu.setdefault(kind, []).append(
                            (t, cpu_seconds(pm.proc.pid) - c0[0], cpu_seconds(server.proc.pid) - c0[1]))
                        return t
                except Exception as e:
                    failed[kind] = f"{type(e).__name__}: {e}"
                    return float("inf")
            fns[kind] = peer
        best = timed_best(a.reps, fns, ("artfs", "artfs@compare") if a.compare else None)
        ref = size / best["boto3"] / GB
        table.add("cold read from S3 (s3rver): artfs mount vs boto3", size / best["artfs"] / GB, ref, aim="1.0",
                  ref_name="boto3 download_file")
        table.note(f"artfs from s3rver: {counters} per run")
        for code, runs in cpu.items():
            if runs:  # where the time of a cold read goes: the daemon's CPU, the server's
                table.note(f"artfs{' running ' + code if code else ''} per run (s, daemon CPU s, s3rver CPU s; "
                           "daemon CPU s until verified): "
                           + ", ".join(f"{t:.2f} / {d:.2f} / {v:.2f}; {dv:.2f}" for t, d, v, dv in runs))
        for kind, runs in peer_cpu.items():  # the same for boto3 (this process) and each peer mount
            table.note(f"{kind} per run (s, {'client' if kind == 'boto3' else kind} CPU s, s3rver CPU s): "
                       + ", ".join(f"{t:.2f} / {d:.2f} / {v:.2f}" for t, d, v in runs))
        if a.compare:
            table.add(f"cold read from S3 (s3rver): artfs mount running {a.compare} vs boto3",
                      size / best["artfs@compare"] / GB, ref, ref_name="boto3 download_file")
        for kind in ("s3fs", "rclone"):
            if kind in a.skip.split(","):
                continue
            if kind in failed:
                table.note(f"{kind}: could not be measured here: {failed[kind]}")
            else:
                table.add(f"cold read from S3 (s3rver): {kind} mount vs boto3", size / best[kind] / GB, ref,
                          ref_name="boto3 download_file")
    finally:
        server.__exit__()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- ttfb: the first byte of a 10 GiB file -----------------------------------------------------
def bench_ttfb(a: argparse.Namespace, base: str, table: Table) -> None:
    size = a.big_gb << 30
    print(f"\n[ttfb] a {a.big_gb} GiB file (sparse, zeros) in a local store", flush=True)
    h = hasher()
    zeros = bytes(8 * MiB)
    for _ in range(size // len(zeros)):
        h.update(zeros)
    h.update(zeros[: size % len(zeros)])
    digest = finish(h)
    store = Store(os.path.join(base, "bigstore"), cache=Cache(os.path.join(base, "wcache")))
    blob = store.backend._path(blob_key(PROJECT, digest))  # type: ignore[attr-defined]
    os.makedirs(os.path.dirname(blob), exist_ok=True)
    with open(blob, "wb") as f:
        f.truncate(size)  # the blob, sparse: the store has it, so logging uploads nothing
    src = os.path.join(base, "bigsrc")
    os.makedirs(src)
    with open(os.path.join(src, FILE), "wb") as f:
        f.truncate(size)
    t0 = time.perf_counter()
    rel, _ = log_big_file(store, src)  # hashes the sparse source (zeros) and finds the blob present
    print(f"  (logged in {time.perf_counter() - t0:.1f} s; no upload: {store.backend.counter})", flush=True)  # type: ignore[attr-defined]
    shutil.rmtree(src)
    shutil.rmtree(os.path.join(base, "wcache"), ignore_errors=True)
    mnt = os.path.join(base, "mnt")
    rep = [0]
    counters = ""

    def first_byte(off: int, lookup_first: bool) -> Callable[[], float]:
        def run() -> float:
            nonlocal counters
            rep[0] += 1
            cache_dir = os.path.join(base, f"bigcache{rep[0]}")
            with MountProcess(store.url, mnt, cache_dir=cache_dir) as m:
                path = m.path(PROJECT, rel)
                if lookup_first:
                    os.stat(path)
                t0 = time.perf_counter()
                fd = os.open(path, os.O_RDONLY)
                try:
                    b = os.pread(fd, 4096, off)
                finally:
                    t = time.perf_counter() - t0
                    os.close(fd)
                assert b == bytes(4096)
                if off == 0 and lookup_first:
                    counters = daemon_counters(m)
            shutil.rmtree(cache_dir)
            return t
        return run

    def native(off: int) -> Callable[[], float]:
        def run() -> float:
            drop(blob)
            t0 = time.perf_counter()
            fd = os.open(blob, os.O_RDONLY)
            try:
                os.pread(fd, 4096, off)
            finally:
                t = time.perf_counter() - t0
                os.close(fd)
            return t
        return run

    try:
        best = timed_best(a.reps, {"mount": first_byte(0, True), "mount+lookup": first_byte(0, False),
                                   "mid": first_byte(size // 2, True), "native": native(0),
                                   "native-mid": native(size // 2)})
        gb = f"{a.big_gb} GiB"
        table.add(f"first byte of a {gb} file, cold (open+read 4 KiB)", best["mount"], best["native"], unit="s",
                  ref_name="store file, a hole")
        table.note(f"first byte: {counters} (after open + one 4 KiB read)")
        table.add("  same, including the lookup of the path after mounting", best["mount+lookup"], best["native"],
                  unit="s", ref_name="store file, a hole")
        table.add("  same, at the middle of the file", best["mid"], best["native-mid"], unit="s",
                  ref_name="store file, a hole")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(blob)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=1024, help="the file for cache and s3 (MiB, default 1024)")
    p.add_argument("--big-gb", type=int, default=10, help="the file for ttfb (GiB, default 10)")
    p.add_argument("--reps", type=int, default=3, help="runs of each measurement; the best is kept (default 3)")
    p.add_argument("--only", default="cache,s3,ttfb", help="sections to run (default cache,s3,ttfb)")
    p.add_argument("--dir", default=None, help="where to put stores, caches and mounts (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the table as JSON to this file")
    p.add_argument("--compare", default=None, metavar="TREE",
                   help="s3: also read through a mount running the artfs code of TREE (an A/B in one run)")
    p.add_argument("--skip", default="", help="s3: peers not to run (comma-separated: s3fs,rclone)")
    p.add_argument("--no-passthrough", action="store_true",
                   help="cache: mount with -o no_passthrough (the ordinary path: every read through the daemon, "
                        "what a stock pyfuse3 or a kernel older than 6.9 gets)")
    a = p.parse_args()
    MOUNT_ARGS[:] = ["-o", "no_passthrough"] if a.no_passthrough else []
    if os.geteuid() != 0:
        print("warning: not root: read_ahead_kb cannot be set; FUSE requests stay at 128 KiB", file=sys.stderr)
    table = Table()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"{datetime.date.today()}  {platform.node()}  {os.cpu_count()} CPUs  kernel {platform.release()}  "
          f"load {' '.join(load)}  best of {a.reps}", flush=True)
    sections = {"cache": bench_cache, "s3": bench_s3, "ttfb": bench_ttfb}
    for name in a.only.split(","):
        base = tempfile.mkdtemp(prefix=f"artfs-bench-read-{name}-", dir=a.dir)
        try:
            sections[name](a, base, table)
        except Exception as e:
            table.note(f"{name}: failed: {type(e).__name__}: {e}")
        finally:
            for mnt in ("mnt", "mnt-s3fs", "mnt-rclone"):
                if is_mounted_any(os.path.join(base, mnt)):
                    fusermount_u(os.path.join(base, mnt))
            shutil.rmtree(base, ignore_errors=True)
    print("\n" + table.markdown())
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": table.rows, "notes": table.notes, "reps": a.reps}, f, indent=1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the cleanups on a plain kill
    main()
