"""The warm half of the small-file epoch, A/B: this checkout's daemon against another's, same run.

    python tests/bench/bench_warm.py [--files 2000] [--kib 100] [--workers 4] [--rounds 2] [--before TREE]
    python tests/bench/bench_warm.py --no-passthrough      # this checkout, with and without passthrough

N files of K KiB in one directory of an artfs version (a local store: a warm epoch never reaches
the store), read whole in a random order split over W processes (as ``bench_epoch.py`` does),
with the mount's cache complete and the page cache, dentries and inodes dropped
(``drop_caches``), against the same files on local disk. ``--before TREE`` also runs the daemon
from another checkout (e.g. ``git archive`` of main into a directory, with its ``artfsd ->
daemon`` link) in the same rounds: each daemon gets its own cache, filled by an unmeasured cold
epoch of its own code (the cache's records are the code's), and each warm epoch is a new mount
over that cache. ``--no-passthrough`` also runs this checkout's daemon with ``-o no_passthrough``
(the ordinary path a stock pyfuse3 or a kernel older than 6.9 gets) in the same rounds. Per epoch it prints what the kernel sent the daemon per file (from
``user.artfs.stats``), where each reader's time went (``open()``, ``read()``, ``close()``) and the
daemon's CPU per file: all threads, its event loop, and the kernel's part of the latter.

Run as root (drop_caches). Cleans up after itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from bench_epoch import drop_caches, run_readers  # noqa: E402
from bench_read import Table, wait_for  # noqa: E402

from artfs import Artifact, Cache, Store  # noqa: E402
from artfsd.testing import MountProcess  # noqa: E402

PROJECT = "bench"

READER = r"""
import sys, time
paths = sys.stdin.read().split("\n")
n = 0
t_open = t_read = t_close = 0.0
clock = time.perf_counter
for p in paths:
    if p:
        t0 = clock()
        f = open(p, "rb", buffering=0)
        t1 = clock()
        while f.read(1 << 20):
            pass
        t2 = clock()
        f.close()
        t_open += t1 - t0
        t_read += t2 - t1
        t_close += clock() - t2
        n += 1
print(n, t_open, t_read, t_close)
"""

COUNTERS = ("lookups", "getattrs", "opens", "releases", "forgets", "reads", "loop_opens", "passthrough_opens")


def epoch(paths: list[str], workers: int, seed: int) -> tuple[float, dict[str, float]]:
    """Read every path once, shuffled over ``workers`` processes: (files/s, a reader's seconds per
    file in open/read/close)."""
    t, outs = run_readers(paths, workers, seed, READER)
    split = [sum(float(o[k + 1]) for o in outs) for k in range(3)]
    return len(paths) / t, dict(zip(("open", "read", "close"), (x / len(paths) for x in split)))


def split_text(split: dict[str, float]) -> str:
    return "a reader's ms per file: " + ", ".join(f"{k} {v * 1000:.3f}" for k, v in split.items())


def cpu(pid: int, thread: int | None = None) -> tuple[float, float]:
    """(utime, stime) of process ``pid`` (every thread, also ended ones) or of one of its threads."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class Profiler:
    """``py-spy record`` of the daemon for one epoch (``--profile``): collapsed stacks."""

    def __init__(self, out_dir: str | None, name: str, pid: int, spy_args: str) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        if out_dir is None:
            return
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        os.makedirs(out_dir, exist_ok=True)
        self.proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                                      "--threads", *spy_args.split(), "--output", os.path.join(out_dir, f"{name}.txt")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches

    def __enter__(self) -> "Profiler":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(2)  # SIGINT: py-spy writes what it sampled
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--kib", type=int, default=100)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", default=None, help="where the store, caches and mounts go (default: a temp dir)")
    ap.add_argument("--before", default=None, metavar="TREE",
                    help="also run the daemon from the checkout TREE in the same rounds (rows 'before')")
    ap.add_argument("--no-passthrough", action="store_true",
                    help="also run this checkout's daemon with -o no_passthrough in the same rounds (rows "
                         "'no_passthrough')")
    ap.add_argument("--profile", default=None, metavar="DIR",
                    help="sample the daemon with py-spy during each warm epoch; collapsed stacks go to DIR")
    ap.add_argument("--spy-args", default="--gil", metavar="ARGS",
                    help="py-spy's sampling options for --profile (default '--gil'; '--gil --native', '--idle')")
    a = ap.parse_args()

    base = tempfile.mkdtemp(prefix="artfs-warm-", dir=a.dir)
    trees: dict[str, str | None] = {**({"before": a.before} if a.before else {}), "after": None,
                                    **({"no_passthrough": None} if a.no_passthrough else {})}
    table = Table()
    names = [f"{i:06d}.jpg" for i in range(a.files)]
    print(f"[warm] {a.files} files of {a.kib} KiB, {a.workers} readers, {a.rounds} rounds, daemons: "
          f"{', '.join(trees)}", flush=True)
    try:
        local = os.path.join(base, "local", "train")
        os.makedirs(local)
        for n in names:
            with open(os.path.join(local, n), "wb") as f:
                f.write(os.urandom(a.kib * 1024))
        store = Store(os.path.join(base, "store"), cache=Cache(os.path.join(base, "wcache")))
        art = Artifact("data", type="dataset")
        art.add_dir(os.path.dirname(local))
        store.log_artifact(art, project=PROJECT)
        digests = [e.digest for e in store.artifact(f"{PROJECT}/data:v0").manifest.entries if e.digest]
        # `python -m artfsd.main` puts the working directory first on the daemon's sys.path: leave
        # any checkout, so that each daemon imports what its PYTHONPATH names
        os.chdir(base)
        mnt = os.path.join(base, "mnt")

        def env_of(tree: str | None) -> dict[str, str]:
            env = dict(os.environ)
            # this checkout, with what else PYTHONPATH names (e.g. a pyfuse3 being tried), or TREE
            extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != ROOT]
            env["PYTHONPATH"] = os.path.abspath(tree) if tree is not None else os.pathsep.join([ROOT, *extra])
            return env

        def mount(label: str) -> MountProcess:
            return MountProcess(store.url, mnt, cache_dir=os.path.join(base, f"cache-{label}"),
                                env=env_of(trees[label]), args=["-o", "no_passthrough"] if label == "no_passthrough" else [])

        for label in trees:  # fill each daemon's cache with its own code, unmeasured
            with mount(label) as m:
                epoch([m.path(PROJECT, "data", "v0", "train", n) for n in names], a.workers, 0)
                cache = Cache(os.path.join(base, f"cache-{label}"))
                wait_for(lambda: all(cache.has(d) for d in digests), 120, "every blob to be complete in the cache")

        best: dict[str, float] = {}
        per_file: dict[str, tuple[float, float, float]] = {}
        for r in range(a.rounds):
            drop_caches()
            disk, split = epoch([os.path.join(local, n) for n in names], a.workers, 7)
            best["disk"] = max(best.get("disk", 0.0), disk)
            print(f"  round {r + 1}: disk {disk:,.0f} files/s; {split_text(split)}", flush=True)
            for label in trees:
                with mount(label) as m:
                    paths = [m.path(PROJECT, "data", "v0", "train", n) for n in names]
                    os.listdir(m.path(PROJECT, "data", "v0", "train"))
                    s0 = m.stats()
                    drop_caches()
                    with Profiler(a.profile, f"warm-{label}{r + 1}", m.pid, a.spy_args):
                        all0, loop0 = cpu(m.pid), cpu(m.pid, m.pid)
                        warm, split = epoch(paths, a.workers, 100 + r)
                        all1, loop1 = cpu(m.pid), cpu(m.pid, m.pid)
                    s1 = m.stats()
                k = a.files
                this = (sum(all1) - sum(all0)) / k, (sum(loop1) - sum(loop0)) / k, (loop1[1] - loop0[1]) / k
                if warm > best.get(label, 0.0):
                    best[label], per_file[label] = warm, this
                counts = ", ".join(f"{c} {(s1[c] - s0.get(c, 0)) / k:.2f}" for c in COUNTERS if c in s1)
                print(f"  round {r + 1}: {label} {warm:,.0f} files/s; {split_text(split)}; requests per file: "
                      f"{counts}; daemon CPU per file {this[0] * 1000:.3f} ms (event loop {this[1] * 1000:.3f}, "
                      f"in the kernel {this[2] * 1000:.3f})", flush=True)
        for label in trees:
            table.add(f"small-file epoch, warm, page cache dropped: artfs ({label}) vs local disk", best[label],
                      best["disk"], unit="files/s", aim=">= 0.5", ref_name="local disk")
            c = per_file[label]
            table.note(f"{label}: daemon CPU per file {c[0] * 1000:.3f} ms (event loop {c[1] * 1000:.3f}, "
                       f"in the kernel {c[2] * 1000:.3f}), best round")
        if a.before:
            table.note(f"after / before: {best['after'] / best['before']:.2f}")
        load = os.getloadavg()
        table.note(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        os.chdir("/")
        shutil.rmtree(base, ignore_errors=True)
    print()
    print(table.markdown())


if __name__ == "__main__":
    main()
