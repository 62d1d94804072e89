"""Automatic lineage: which process tree read which version through the mount, and wrote which draft.

What is one run (the rule, applied to the pid of each FUSE request that opens a file):

1. A process whose environment has ``ARTFS_RUN_ID=<project>/<id>`` (``artfs run`` sets it, and
   every child inherits it) belongs to that run. Its record is written by ``artfs run``; the
   daemon writes only its edges.
2. Otherwise a run is a **process group**: a shell with job control puts each command line
   (pipelines included) in its own group, and children stay in their parent's group unless they
   ask otherwise, so a script and everything it starts (``DataLoader`` workers, ``xargs``,
   ``make -j`` jobs, ``sh -c``) are one run, and two commands started separately are two runs.
   The group is identified by its id and the start time of its leader (group ids are reused;
   a group whose leader has exited, as when a non-interactive shell started it, by its id
   alone: the kernel does not hand out a group's id again while any of its processes lives).
   The run ends when none of its processes seen by the mount is alive.
   Such a run is named by the daemon (``source: mount``): its project is that of the first
   version it opened or draft it wrote, its command line and working directory those of the
   group's leader.

What is recorded:

* Opening a file of ``vN`` for reading records ``vN`` as used (once per run and version); a path
  through ``latest/`` or another alias resolves to its ``vN`` before the open, so that version is
  recorded. Listing, ``stat`` and ``getxattr`` record nothing.
* Creating, opening for writing, removing or renaming a file in ``draft/`` makes the run a
  writer of that draft. When the draft is committed (through the mount or at unmount), the first
  writer since the previous commit is the new version's logger (its run is also named in the
  manifest), the others are contributors.

Cost on the read path: nothing per ``read``. Per ``open``: a dict lookup of the pid (what was
learnt about a pid is kept for ``PID_TTL`` seconds, then its start time is checked again in case
the pid was reused) and a set lookup of the version in the run; only the first open of a
version by a run queues an edge. Edges and records are written by a background task
(``flush``: every ``FLUSH_EVERY`` seconds, in a worker thread) and at unmount. Memory is bounded:
at most ``MAX_PIDS`` pids are remembered (least recently used dropped), at most ``MAX_PENDING``
edges wait for the writer (more are dropped and counted in ``user.artfs.stats``), a run
whose process group has ended is written and forgotten, and a named run idle for
``NAMED_IDLE`` seconds is forgotten (if it opens a version again, its edges are written again,
which changes nothing).

A crash of the daemon loses the edges not flushed yet (at most ``FLUSH_EVERY`` seconds' worth);
what was flushed is in the store for good (one key per edge, :mod:`artfs._lineage`).
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import trio

from artfs import AlreadyExists, ArtfsError, InvalidName
from artfs.lowlevel import RUN_ENV, RunRecord, new_run_id, now_iso, parse_run_path, record_edge, version_ref, write_record

log = logging.getLogger("artfsd")

PID_TTL = 5.0
FLUSH_EVERY = 2.0
MAX_PIDS = 65536
MAX_PENDING = 100_000
MAX_MEMBERS = 256  # processes of a run whose liveness is checked (a DataLoader has a few workers)
NAMED_IDLE = 60.0  # a named run unseen for this long is forgotten (seen again: its edges are re-sent, harmlessly)


@dataclass(eq=False)
class MountRun:
    """A run as the daemon knows it."""

    project: str
    id: str
    named: bool  # from ARTFS_RUN_ID: its record belongs to `artfs run`
    leader: int = 0
    leader_start: int = 0
    #: pid -> start time of the processes of the run seen by the mount (bounded; liveness of the run)
    members: dict[int, int] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    cwd: str | None = None
    uid: int | None = None
    started: str = ""
    ended: str | None = None
    used: set[tuple[str, str, int]] = field(default_factory=set)
    logged: set[tuple[str, str, int]] = field(default_factory=set)
    seen: float = 0.0  # time.monotonic() of its last open or draft write (named runs are forgotten when idle)
    created: bool = False  # record written once (auto runs)
    dirty: bool = True  # record to be (re)written (auto runs)

    @property
    def path(self) -> str:
        return f"{self.project}/{self.id}"


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgrp, start time in clock ticks) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    try:  # fields after the command: state ppid pgrp session tty_nr tpgid flags ... starttime (22nd overall)
        return int(fields[1]), int(fields[2]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _proc_env_run(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return None
    key = RUN_ENV.encode() + b"="
    for item in env.split(b"\0"):
        if item.startswith(key):
            return item[len(key):].decode("utf-8", "replace")
    return None


def _proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0")[:-1]][:64]
    except OSError:
        return []


class Lineage:
    """Attribution of opens and draft writes to runs, and the background writer of their lineage."""

    def __init__(self, store: Any, *, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled
        self._pids: OrderedDict[int, tuple[float, int, MountRun | None]] = OrderedDict()
        self._groups: dict[tuple[Any, ...], MountRun] = {}
        self._pending: deque[tuple[str, MountRun, tuple[str, str, int], str | None]] = deque()
        self._writers: dict[tuple[str, str], list[MountRun]] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.stats = {"runs": 0, "edges": 0, "edges_dropped": 0, "lineage_errors": 0}
        self._host = socket.gethostname()

    # -- which run is this pid? (trio thread) ---------------------------------------------------------
    def run_of(self, pid: int, project: str) -> MountRun | None:
        """The run of ``pid``, created on first sight with ``project`` (auto runs); None if unknown."""
        if pid <= 0:
            return None
        now = time.monotonic()
        hit = self._pids.get(pid)
        if hit is not None and now - hit[0] < PID_TTL:
            return hit[2] or self._resolve(pid, project, now)
        return self._resolve(pid, project, now)

    def _resolve(self, pid: int, project: str, now: float) -> MountRun | None:
        st = _proc_stat(pid)
        if st is None:
            return None
        _, pgrp, start = st
        hit = self._pids.get(pid)
        if hit is not None and hit[1] == start and hit[2] is not None:
            with self._lock:  # the same process: keep its run
                self._pids[pid] = (now, start, hit[2])
                self._pids.move_to_end(pid)
            return hit[2]
        named = _proc_env_run(pid)
        run: MountRun | None = None
        with self._lock:
            if named is not None:
                try:
                    rp, rid = parse_run_path(named)
                except InvalidName:
                    log.warning("pid %d: ignoring %s=%r (not PROJECT/RUN_ID)", pid, RUN_ENV, named)
                    named = None
                else:
                    key: tuple[Any, ...] = ("named", rp, rid)
                    run = self._groups.get(key)
                    if run is None:
                        run = self._groups[key] = MountRun(rp, rid, True, started=now_iso())
                        self.stats["runs"] += 1
            if run is None:
                lst = _proc_stat(pgrp) if pgrp != pid else st
                if lst is not None and lst[1] == pgrp:  # the leader lives: (id, its start time)
                    leader, leader_start = pgrp, lst[2]
                else:
                    leader, leader_start = pid, 0
                key = ("group", pgrp, leader_start)
                run = self._groups.get(key)
                if run is None:
                    run = self._groups[key] = self._new_auto_run(project, leader, leader_start or start)
                    run.members[leader] = leader_start or start
                if len(run.members) < MAX_MEMBERS:
                    run.members[pid] = start
            self._pids[pid] = (now, start, run)
            self._pids.move_to_end(pid)
            while len(self._pids) > MAX_PIDS:
                self._pids.popitem(last=False)
        return run

    def _new_auto_run(self, project: str, leader: int, leader_start: int) -> MountRun:
        try:
            cwd: str | None = os.readlink(f"/proc/{leader}/cwd")
        except OSError:
            cwd = None
        try:
            uid: int | None = os.stat(f"/proc/{leader}").st_uid
        except OSError:
            uid = None
        self.stats["runs"] += 1
        return MountRun(project, new_run_id(), False, leader=leader, leader_start=leader_start,
                        command=_proc_cmdline(leader), cwd=cwd, uid=uid, started=now_iso())

    # -- events (trio thread; cheap) --------------------------------------------------------------------
    def opened(self, pid: int, key: tuple[str, str, int]) -> None:
        """A file of version ``key`` was opened for reading by ``pid``. Never raises: lineage must not fail an open."""
        if not self.enabled:
            return
        try:
            self._opened(pid, key)
        except Exception:
            self._failed("open")

    def _failed(self, what: str) -> None:
        self.stats["lineage_errors"] += 1
        if self.stats["lineage_errors"] <= 10:
            log.exception("lineage: recording an %s failed (the request itself went on)", what)

    def _opened(self, pid: int, key: tuple[str, str, int]) -> None:
        run = self.run_of(pid, key[0])
        if run is None:
            return
        run.seen = time.monotonic()
        if key in run.used:
            return
        run.used.add(key)
        self._queue("used", run, key, None)

    def wrote(self, pid: int, project: str, artifact: str) -> None:
        """``pid`` changed the draft of ``project/artifact``. Never raises."""
        if not self.enabled:
            return
        try:
            self._wrote(pid, project, artifact)
        except Exception:
            self._failed("draft write")

    def _wrote(self, pid: int, project: str, artifact: str) -> None:
        run = self.run_of(pid, project)
        if run is None:
            return
        run.seen = time.monotonic()
        with self._lock:
            writers = self._writers.setdefault((project, artifact), [])
            if run not in writers:
                writers.append(run)

    # -- commits (any thread) ---------------------------------------------------------------------------
    def logger_of(self, project: str, artifact: str) -> str | None:
        """``project/run_id`` of the run that will be named as the logger of the next commit."""
        with self._lock:
            writers = self._writers.get((project, artifact))
            return writers[0].path if writers else None

    def committed(self, project: str, artifact: str, version: int, created: bool) -> None:
        """A draft became ``vN`` (``created``) or matched an existing ``vN``: its writers are its loggers."""
        with self._lock:
            writers = self._writers.pop((project, artifact), [])
        key = (project, artifact, version)
        for i, run in enumerate(writers):
            run.logged.add(key)
            role = ("logger" if created else "matched") if i == 0 else "contributor"
            self._queue("logged", run, key, role)

    def _queue(self, kind: str, run: MountRun, key: tuple[str, str, int], role: str | None) -> None:
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self.stats["edges_dropped"] += 1
                return
            self._pending.append((kind, run, key, role))
            run.dirty = True

    # -- writing (worker thread, and at unmount) ---------------------------------------------------------
    def flush(self, *, final: bool = False) -> None:
        """Write queued edges and changed records; forget runs whose process group has ended."""
        with self._flush_lock:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
                runs = list(self._groups.items())
            for kind, run, key, role in batch:
                try:
                    if not run.named and not run.created:
                        self._write_record(run)
                    record_edge(self.store, kind, run.project, run.id, *key, role=role)
                    self.stats["edges"] += 1
                except (ArtfsError, OSError) as e:
                    self.stats["lineage_errors"] += 1
                    log.error("lineage: cannot record %s %s of run %s: %s", kind, version_ref(*key), run.path, e)
            gone = []
            for gkey, run in runs:
                if run.named:  # `artfs run` writes their record; forget them when idle
                    if time.monotonic() - run.seen > NAMED_IDLE and not self._is_writer(run):
                        gone.append(gkey)
                    continue
                ended = not any((st := _proc_stat(p)) is not None and st[2] == t for p, t in list(run.members.items()))
                if ended and run.ended is None:
                    run.ended, run.dirty = now_iso(), True
                if run.dirty and (run.used or run.logged):
                    try:
                        self._write_record(run)
                    except (ArtfsError, OSError) as e:
                        self.stats["lineage_errors"] += 1
                        log.error("lineage: cannot write the record of run %s: %s", run.path, e)
                        continue
                if ended and not self._is_writer(run):
                    gone.append(gkey)
            with self._lock:
                for gkey in gone:
                    old = self._groups.pop(gkey, None)
                    if old is not None and old.named:  # the pids that point at it must look again
                        for pid in [p for p, (_, _, r) in self._pids.items() if r is old]:
                            del self._pids[pid]

    def _is_writer(self, run: MountRun) -> bool:
        with self._lock:
            return any(run in w for w in self._writers.values())

    def _write_record(self, run: MountRun) -> None:
        try:
            user = pwd.getpwuid(run.uid).pw_name if run.uid is not None else None
        except KeyError:
            user = None
        rec = RunRecord(
            id=run.id, project=run.project, command=run.command, cwd=run.cwd, host=self._host, user=user,
            pid=run.leader, source="mount", state="finished" if run.ended else "running", started=run.started,
            ended=run.ended, inputs=sorted(version_ref(*k) for k in run.used),
            outputs=sorted(version_ref(*k) for k in run.logged))
        if not run.created:
            while True:  # a fresh id never takes over another run's record
                try:
                    write_record(self.store, rec, exclusive=True)
                    break
                except AlreadyExists:
                    run.id = rec.id = new_run_id()
            run.created = True
        else:
            write_record(self.store, rec)
        run.dirty = False

    async def run_background(self, every: float = FLUSH_EVERY) -> None:
        """Flush every ``every`` seconds in a worker thread (never on the FUSE loop)."""
        while True:
            await trio.sleep(every)
            try:
                await trio.to_thread.run_sync(self.flush)
            except Exception:
                self.stats["lineage_errors"] += 1
                log.exception("lineage: flush failed")

    def close(self) -> None:
        """At unmount: write everything (blocking)."""
        try:
            self.flush(final=True)
        except Exception:
            log.exception("lineage: final flush failed")
