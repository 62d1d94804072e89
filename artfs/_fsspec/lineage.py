"""Lineage of ``artfs://`` reads and transactions: which run used (or logged) which version.

The run a process's opens are filed under, first that applies:

1. the current run of ``artfs.init()`` in this process, if it uses the same store;
2. ``ARTFS_RUN_ID=<project>/<id>`` in the environment (``artfs run`` sets it; its record is
   written by ``artfs run``, this module writes edges only);
3. an automatic run of the **process group**, as the mount makes one: a script and the processes
   it starts (DataLoader or Dask workers) are one run, two commands started apart are two. Every
   process of the group computes the same id (a hash of the host, the boot, the group id and its
   leader's start time), so they agree on it without talking to each other; the first to open a
   file creates the record (an exclusive create, ``source: fsspec``, the leader's command line)
   and, when it exits, writes it finished with the inputs its edges list. The others only
   write edges. A record finished by its creator while other processes of the group still read
   misses their later inputs in its ``inputs`` list; the edges themselves (what ``artfs
   lineage`` and ``used_by()`` read) are all there.

What counts: opening a file of a version for reading, once per run and version on each host (a
path through an alias records the version it resolved to); listing, ``info`` and ``exists`` record
nothing. The edge is in the store before that first open returns (a worker killed right after,
as ``Pool.terminate()`` kills, loses nothing).

**Once per host, not per process.** The processes of a run on one host (a job's DataLoader or
Dask workers) share the cache, and in it a directory of marks per run::

    <cache>/edges/<boot id>/<store id>/<run project>/<run id>/lock        flock: one writer at a time
    <cache>/edges/<boot id>/<store id>/<run project>/<run id>/run         its record was created
    <cache>/edges/<boot id>/<store id>/<run project>/<run id>/used,<p>,<a>,<N>   that edge was written

A process takes the run's lock (waiting at most ``LOCK_WAIT`` seconds, then it writes beside
the holder), writes the record or edge only if its mark is missing, and makes the mark after the
store took it: so of a job's workers one creates the record and writes each
edge, the others find the marks (a ``stat`` each) and make no request at all. A writer killed
while it holds the lock releases it (the next process writes the edge itself); a mark is made
only after the write succeeded; the run's creator finishes its record at exit with the edges
its marks list (no listing of the store). Marks of earlier boots are removed when a boot's directory is
made (their runs' ids are of that boot). Where the cache cannot hold marks, every process writes
its edges, as before. On S3 the writes are plain signed PUTs (``Backend.put_small``), so a worker
never loads boto3 for its lineage. A transaction's commit records its run as the logger of the version it created. Lineage
never fails a read: an edge that cannot be written is logged as a warning and tried again on the
next open of that version; a store that refuses lineage (read-only, or refusing this caller's
writes) is not asked again by the process.
"""

from __future__ import annotations

import atexit
import fcntl
import getpass
import logging
import os
import shutil
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable

import xxhash

from .._errors import AlreadyExists, ArtfsError, InvalidName, PermissionDenied
from .._lineage import RunRecord, now_iso, parse_run_path, record_edge, run_edges, version_ref, write_record
from .._run import RUN_ENV, current

if TYPE_CHECKING:
    from .._store import Store

log = logging.getLogger("artfs.fsspec")

_lock = threading.Lock()
_recorded: set[tuple[str, str, str, str, str, int]] = set()  # (store, run, kind, p, a, n) written here
_auto: dict[tuple[str, str, str], str] = {}  # (store, project, group id) -> run id whose record exists
_refused: set[str] = set()  # stores that refused this process's lineage writes (not asked again)
_owned: list[tuple["Store", RunRecord]] = []  # auto runs this process created: finished at exit
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(process group, start time in clock ticks) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rfind(b")") + 2:].split()
        return int(fields[2]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


_group_of: tuple[int, int, tuple[str, int]] | None = None  # (pid, pgid, _group()): once per process


def _group() -> tuple[str, int]:
    """A key of this process's group that every member computes alike, and the group's leader."""
    global _group_of
    pid, pgid = os.getpid(), os.getpgrp()
    known = _group_of
    if known is not None and known[:2] == (pid, pgid):
        return known[2]
    st = _proc_stat(pgid)
    start = st[1] if st is not None and st[0] == pgid else 0
    out = (f"{socket.gethostname()}\0{_boot_id()}\0{pgid}\0{start}", pgid)
    _group_of = (pid, pgid, out)
    return out


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


_marks_of: dict[tuple[str, str, str, str], str | None] = {}  # (cache, store, run project, run id) -> marks' dir


def _marks(store: "Store", rp: str, rid: str) -> str | None:
    """The directory of the run's marks in the cache (made on first use), None where it cannot be."""
    k = (store.cache.root, store.url, rp, rid)
    if k in _marks_of:
        return _marks_of[k]
    out: str | None = None
    try:
        top = os.path.join(store.cache.root, "edges")
        boot = os.path.join(top, _auto_id(_boot_id() or socket.gethostname()))
        if not os.path.isdir(boot):
            os.makedirs(boot, mode=0o700, exist_ok=True)
            for old in os.listdir(top):  # earlier boots' marks: their runs are over
                if old != os.path.basename(boot):
                    shutil.rmtree(os.path.join(top, old), ignore_errors=True)
        out = os.path.join(boot, _auto_id(store.url), rp, rid)
        os.makedirs(out, mode=0o700, exist_ok=True)
    except OSError as e:  # a cache that is read-only or gone: no marks
        log.debug("lineage: no marks in the cache: %s", e)
        out = None
    _marks_of[k] = out
    return out


#: how long a process waits for the run's lock before it writes beside the holder (a store that
#: hangs must not make a job's workers wait one after another: each waits at most this, then its
#: own request's budget)
LOCK_WAIT = 2.0


def _lock_within(fd: int, seconds: float) -> bool:
    """``flock(fd)`` within ``seconds`` (polled: the holder is a request of a few ms); whether it was had."""
    deadline, pause = time.monotonic() + seconds, 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() + pause > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        except OSError:  # a file system without locks: each process writes its own
            return False


def _once(store: "Store", rp: str, rid: str, name: str, write: Callable[[], None]) -> bool:
    """``write()`` unless a process of this run on this host did it (its mark ``name``); True
    if it was written here. The run's lock is held meanwhile (see the module's docstring)."""
    where = _marks(store, rp, rid)
    if where is None:
        write()
        return True
    mark = os.path.join(where, name)
    try:
        fd = os.open(os.path.join(where, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        write()
        return True
    try:
        _lock_within(fd, LOCK_WAIT)
        if os.path.exists(mark):
            return False
        write()  # under the lock, or (another process held it too long) beside it
        try:
            os.close(os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError:
            pass  # the edge is written; only the others' shortcut is lost
        return True
    finally:
        os.close(fd)  # releases the lock


def _mark(store: "Store", rp: str, rid: str, name: str) -> None:
    """Make the mark ``name`` of a run (an edge written without :func:`_once`), where marks can be."""
    where = _marks(store, rp, rid)
    if where is not None:
        try:
            os.close(os.open(os.path.join(where, name), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError:
            pass


def _marked(store: "Store", rp: str, rid: str) -> dict[str, list[str]] | None:
    """kind -> the versions (``p/a:vN``, sorted) of the run's marked edges; None without marks."""
    where = _marks(store, rp, rid)
    if where is None:
        return None
    out: dict[str, list[tuple[str, str, int]]] = {}
    try:
        names = os.listdir(where)
    except OSError:
        return None
    for name in names:
        parts = name.split(",")
        if len(parts) == 4 and parts[3].isdigit():
            out.setdefault(parts[0], []).append((parts[1], parts[2], int(parts[3])))
    return {k: [version_ref(*v) for v in sorted(vs)] for k, vs in out.items()}


def _auto_id(key: str) -> str:
    n = xxhash.xxh64_intdigest(key.encode())
    out = ""
    for _ in range(8):
        n, r = divmod(n, 36)
        out += _BASE36[r]
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0")[:-1]][:64]
    except OSError:
        return list(sys.argv)


def _auto_run(store: "Store", project: str) -> tuple[str, str]:
    key, leader = _group()
    with _lock:
        rid = _auto.get((store.url, project, key))
    if rid is not None:
        return project, rid
    rid = _auto_id(key)
    try:
        user: str | None = getpass.getuser()
    except (KeyError, OSError):
        user = None
    try:
        cwd: str | None = os.readlink(f"/proc/{leader}/cwd")
    except OSError:
        cwd = os.getcwd()
    rec = RunRecord(id=rid, project=project, command=_cmdline(leader) or list(sys.argv), cwd=cwd,
                    host=socket.gethostname(), user=user, pid=leader, source="fsspec", started=now_iso())

    def create() -> None:
        try:
            write_record(store, rec, exclusive=True)
        except AlreadyExists:  # another process of the group created it: join
            return
        with _lock:
            _owned.append((store, rec))

    _once(store, project, rid, "run", create)
    with _lock:
        _auto[(store.url, project, key)] = rid
    return project, rid


def run_of(store: "Store", project: str) -> tuple[str, str]:
    """(project, run id) that this process's reads of ``project`` are filed under."""
    run = current()
    if run is not None and run.store.url == store.url:
        return run.project, run.id
    env = os.environ.get(RUN_ENV)
    if env:
        try:
            return parse_run_path(env)
        except InvalidName:
            log.warning("ignoring %s=%r (not PROJECT/RUN_ID)", RUN_ENV, env)
    return _auto_run(store, project)


def run_path(store: "Store", project: str) -> str | None:
    """``project/run_id`` of this process's run (for a commit's manifest), or None if it cannot be had."""
    try:
        rp, rid = run_of(store, project)
        return f"{rp}/{rid}"
    except (ArtfsError, OSError) as e:
        log.warning("lineage: no run for this process: %s", e)
        return None


def record(store: "Store", kind: str, project: str, artifact: str, n: int, *, role: str | None = None) -> str | None:
    """File a ``used`` (or ``logged``) edge of vN under this process's run, once; its path, or None
    if it could not be written (a warning says why: lineage never fails the read).

    A store that cannot take lineage (read-only, as HTTPS stores are, or refusing this caller's
    writes, as a public bucket refuses an anonymous reader) is not asked again by this process:
    one warning, not a refused PUT per open.
    """
    if store.backend.read_only or store.url in _refused:
        return None
    try:
        rp, rid = run_of(store, project)
        key = (store.url, f"{rp}/{rid}", kind, project, artifact, n)
        with _lock:
            if key in _recorded:
                return f"{rp}/{rid}"
        def write() -> None:
            record_edge(store, kind, rp, rid, project, artifact, n, role=role)

        if kind == "used":  # once per host (a logged edge is its commit's, with its role)
            _once(store, rp, rid, f"used,{project},{artifact},{n}", write)
        else:
            write()
            _mark(store, rp, rid, f"{kind},{project},{artifact},{n}")
        with _lock:
            _recorded.add(key)
        return f"{rp}/{rid}"
    except PermissionDenied as e:
        with _lock:
            _refused.add(store.url)
        log.warning("lineage: %s refuses this process's lineage (%s); reads go on without it", store.url, e)
        return None
    except (ArtfsError, OSError) as e:
        log.warning("lineage: cannot record that this process %s %s: %s", kind, version_ref(project, artifact, n), e)
        return None


def _finish_owned() -> None:
    """At exit: the automatic runs this process created, finished with the inputs and outputs
    their processes on this host marked (the store's listing of their edges where there are no
    marks); a process of the group with a cache of its own is missing from the lists, not from
    the edges."""
    with _lock:
        owned = list(_owned)
        _owned.clear()
    for store, rec in owned:
        try:
            marked = _marked(store, rec.project, rec.id)
            if marked is not None:  # what the run's processes here wrote: no listing (no boto3 at exit)
                rec.inputs, rec.outputs = marked.get("used", []), marked.get("logged", [])
            else:
                rec.inputs = [version_ref(p, a, n) for p, a, n, _ in run_edges(store, rec.project, rec.id, "used")]
                rec.outputs = [version_ref(p, a, n) for p, a, n, _ in run_edges(store, rec.project, rec.id, "logged")]
            rec.state, rec.ended = "finished", now_iso()
            write_record(store, rec)
        except (ArtfsError, OSError) as e:
            log.warning("lineage: cannot finish the record of run %s/%s: %s", rec.project, rec.id, e)


def _after_fork() -> None:
    """A forked child (a DataLoader worker) belongs to its parent's run but did not create its
    record: the parent finishes it, not the child's exit."""
    global _lock
    _lock = threading.Lock()
    _owned.clear()


atexit.register(_finish_owned)
os.register_at_fork(after_in_child=_after_fork)
