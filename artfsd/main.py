"""The mount daemon's process: options, daemonizing, readiness, signals, background chores.

``python -m artfsd.main [STORE] MNT [options]`` (what ``artfs mount`` execs). Lifecycle::

    parent ──fork──> child: setsid, log to file, open store, mount (pyfuse3.init)
       │                      │  raise read-ahead of the mount's bdi, start the trio loop
       │<── "OK" on a pipe ───┘  (or "ERR <message>": the parent prints it and exits 1)
     exit 0                   serve until unmounted (fusermount3 -u / artfs umount) or SIGTERM/SIGINT,
                              then close the lazy reader and the store, remove the pidfile, exit

With ``-f`` there is no fork: the process logs to stderr and, when ``$NOTIFY_SOCKET`` is set
(systemd ``Type=notify``), sends ``READY=1`` once mounted.

Logs: stderr in the foreground; in the background ``--log-file`` or
``$XDG_STATE_HOME/artfs/mount-<mountpoint>.log`` (``~/.local/state/artfs/...``), which the parent
names when the mount fails. The pidfile ``<cache>/run/<key of MNT>.pid`` lets ``artfs umount``
find the daemon even when the mount no longer answers.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import replace
from typing import Any

import pyfuse3
import trio

from artfs import ArtfsError, Cache, NotFound, PermissionDenied, Store, StoreUnavailable
from artfs.lowlevel import FSTYPE, LazyBlobs, add_mount_arguments, apply_mount_options, check_name, find_mount
from artfs.lowlevel import default_log_path as _default_log_path
from artfs.lowlevel import default_store_url, mount_failure_cause, mount_note, parse_run_path, parse_time
from artfs.backends import open_backend
from artfs.lowlevel import COMMITTING, FINISHED, MountConfig, UnmountReport, pidfile_path, results_path
from artfs.lowlevel import run_view


from .drafts import DraftSpace
from .fs import Operations

log = logging.getLogger("artfsd")

# DESIGN.md "Performance facts": 1 MiB FUSE requests instead of 128 KiB; two of them, so that a 1 MiB
# read at a random offset (257 pages) is below the window and the kernel reads just its pages (at
# one window or less it starts read-ahead of two more windows: 3 MiB fetched per 1 MiB read)
READ_AHEAD_KB = 2048
CLEANUP_EVERY = 30.0  # seconds between cache size checks (sooner when much was fetched)


# -- readiness -----------------------------------------------------------------------------------
def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd if ``$NOTIFY_SOCKET`` is set (``Type=notify`` units)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as e:
        log.warning("cannot notify systemd at %s: %s", addr, e)
        return False


class Ready:
    """Tells whoever waits (the parent through a pipe, systemd) that the mount is up, or why not."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.done = False

    def _send(self, data: bytes) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.fd, data)
                os.close(self.fd)
            self.fd = None
        self.done = True

    def ok(self, mountpoint: str, note: str | None = None) -> None:
        """``note``: the one line about fast paths that are off, printed by whoever started the mount."""
        if not self.done:
            if note and self.fd is None:
                print(note, file=sys.stderr)
            self._send(b"OK\n" + (note or "").encode("utf-8", "replace"))
            sd_notify(f"READY=1\nSTATUS=mounted at {mountpoint}")

    def fail(self, message: str) -> None:
        if not self.done:
            self._send(b"ERR " + message.encode("utf-8", "replace"))


# -- logging -------------------------------------------------------------------------------------
def default_log_path(mountpoint: str) -> str:
    return _default_log_path(mountpoint)  # the one definition: `artfs mount` names it too


def _setup_logging(debug: bool, path: str | None) -> None:
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s artfsd[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "pyfuse3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.WARNING)


# -- mount helpers -------------------------------------------------------------------------------
def set_read_ahead(mountpoint: str, kb: int = READ_AHEAD_KB) -> bool:
    """Raise the read-ahead of the mount's backing device info (root only; else keep the default).

    Only once the kernel has processed the daemon's INIT reply, which lowers the read-ahead to
    what the reply allows (at most the kernel's own 128 KiB proposal): that happens when the
    event loop answers INIT, after ``mount`` returned, so a value written earlier was undone
    (seen under load: one mount in three then read in 128 KiB requests, eight times as many).
    A ``statfs`` of the mount waits in the kernel until INIT is done (call from a thread).
    """
    with contextlib.suppress(OSError):
        os.statvfs(mountpoint)
    info = find_mount(mountpoint)
    if info is None:
        return False
    path = f"/sys/class/bdi/{info.device}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(kb))
        log.debug("read-ahead of %s set to %d KiB (%s)", mountpoint, kb, path)
        return True
    except OSError as e:
        log.info("cannot raise the read-ahead (%s: %s); reads stay at the kernel's default size", path, e.strerror)
        return False


def _group_id(name: str) -> int:
    """The gid of ``--allow-group`` (a name or a number)."""
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise ArtfsError(f"--allow-group {name}: no such group") from None


def _check_mountpoint(mountpoint: str) -> None:
    if not os.path.isdir(mountpoint):
        what = "does not exist" if not os.path.exists(mountpoint) else "is not a directory"
        raise ArtfsError(f"mountpoint {mountpoint} {what}")
    info = find_mount(mountpoint)
    if info is not None and info.fstype == FSTYPE:
        raise ArtfsError(f"{mountpoint} is already an artfs mount (artfs umount {mountpoint} first)")


def _probe(store: Store) -> None:
    """Fail the mount now for a store that does not exist or refuses us; mount anyway when it is
    only unreachable (what is cached stays readable, listings appear once it answers)."""
    try:
        store.backend.list_dirs("")
    except (NotFound, PermissionDenied) as e:
        raise ArtfsError(f"cannot mount {store.url}: {e}") from None
    except StoreUnavailable as e:
        log.warning("the store is unreachable (%s); mounting anyway: cached versions stay readable", e)


async def _watch_signals() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for sig in signals:
            log.info("got %s: unmounting", signal.Signals(sig).name)
            sd_notify("STOPPING=1")
            pyfuse3.terminate()
            return


async def _cache_janitor(cache: Cache, blobs: LazyBlobs, store: Store) -> None:
    """Keep the cache within its bound while mounted, never evicting what is open."""
    counter = store.backend.counter
    last_ranges = counter.get("range", 0) + counter.get("download", 0)
    waited = 0.0
    while True:
        await trio.sleep(2.0)
        waited += 2.0
        ranges = counter.get("range", 0) + counter.get("download", 0)
        fetched = (ranges - last_ranges) * blobs.chunk_size  # an upper bound of bytes fetched
        if waited < CLEANUP_EVERY and fetched < cache.max_size // 10:
            continue
        waited, last_ranges = 0.0, ranges
        try:
            removed, freed = await trio.to_thread.run_sync(lambda: cache.cleanup(keep=blobs.keep_path))
            if removed:
                log.info("cache: evicted %d files, %d bytes (bound %d bytes)", removed, freed, cache.max_size)
        except Exception as e:
            log.warning("cache cleanup failed: %s", e)


def _fast_path_note(ops: Operations) -> str | None:
    """Which fast paths this mount runs without, and why (artfs's doctor names the cause)."""
    k = ops.kernel
    got = {"cached-listings": k.cache_readdir}
    if ops.enable_no_opendir:
        got["readdir-names"] = k.no_opendir
    if ops.enable_passthrough:
        got["passthrough"] = k.passthrough
    why = {"cached-listings": k.why_not.get("cache_readdir", ""), "readdir-names": k.why_not.get("no_opendir", ""),
           "passthrough": k.why_not.get("passthrough", "")}
    try:
        return mount_note(got, why)
    except Exception:  # a note must never fail a mount that works
        log.exception("cannot say which fast paths are off")
        return None


async def _serve(ops: Operations, cache: Cache, blobs: LazyBlobs, store: Store, mountpoint: str, ready: Ready) -> None:
    async with trio.open_nursery() as nursery:

        async def fuse_main() -> None:
            try:
                await pyfuse3.main()
            finally:
                nursery.cancel_scope.cancel()

        nursery.start_soon(fuse_main)
        nursery.start_soon(_watch_signals)
        nursery.start_soon(_cache_janitor, cache, blobs, store)
        ops.start(nursery)
        # read-ahead windows of two whole requests when max_read is below 1 MiB
        await trio.to_thread.run_sync(set_read_ahead, mountpoint, 2 * (ops.max_read // 1024) or READ_AHEAD_KB)
        ready.ok(mountpoint, _fast_path_note(ops))
        log.info("mounted %s at %s (pid %d)", store.url, mountpoint, os.getpid())


# -- the daemon ----------------------------------------------------------------------------------
def _size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def _complete(config: MountConfig, store: Store) -> MountConfig:
    """``config`` with what opening the store tells: read-only for an https:// store and for the
    past (--as-of, --run), the time and view shown, --allow-group's gid; errors for a store that
    refuses us and for options that cannot go together."""
    read_only = config.read_only
    if store.backend.read_only and not read_only:  # an http(s):// store: mounted as --read-only
        log.info("%s is a read-only store: mounting read-only", store.url)
        read_only = True
    as_of_ns = parse_time(config.as_of) if config.as_of else None
    view = None
    if config.replay_run is not None:  # what a run read: its versions, its aliases pinned (artfs._replay)
        if as_of_ns is not None:
            raise ArtfsError("--run pins the aliases where the run read them: it cannot take --as-of too")
        view = run_view(store, *parse_run_path(config.replay_run))
        for ref in view.missing:
            log.warning("%s used %s, which has been deleted since: not shown", config.replay_run, ref)
    if as_of_ns is not None or view is not None:  # the past is not written to
        if config.group is not None:
            raise ArtfsError("--as-of and --run show the store as it was: they cannot take --group")
        read_only = True
    _probe(store)
    gid = _group_id(config.allow_group) if config.allow_group else None
    if config.group is not None:
        check_name(config.group, "group")
        if read_only:
            raise ArtfsError("--group commits drafts into a group: it needs a writable mount")
    return replace(config, read_only=read_only, as_of_ns=as_of_ns,
                   pinned=view.artifacts if view is not None else None,
                   lineage=config.lineage and not store.backend.read_only,
                   gid=gid)


def serve(config: MountConfig, *, ready: Ready, log_path: str | None = None) -> int:
    """Mount and serve until unmounted; returns the exit code. Reports readiness through ``ready``."""
    where = f" (log: {log_path})" if log_path else ""
    mountpoint = config.mountpoint
    try:
        _check_mountpoint(mountpoint)
        cache = Cache(config.cache_dir, max_size=config.cache_size)
        # the S3 backend's own retry budget: a store that fails answers within the read timeout
        store = Store(config.store_url, cache=cache,
                      backend=open_backend(config.store_url, s3_timeout=config.store_timeout))
        config = _complete(config, store)
        blobs = LazyBlobs(store, timeout=config.timeout)
        ops = Operations(store, blobs, config, results=None if config.read_only else
                         results_path(cache.root, mountpoint))
        drafts = ops.drafts
        if drafts is not None:
            for project, artifact in drafts.pending():  # changes an earlier session left uncommitted
                ops.ns.add_local(project, artifact)
        options = {"fsname=artfs", f"subtype={FSTYPE.split('.', 1)[1]}", "default_permissions"}
        if config.allow_other or config.gid is not None:  # --allow-group implies --allow-other
            options.add("allow_other")
        if config.read_only:
            options.add("ro")
        if ops.max_read:  # read replies small enough to be spliced (artfsd/kernel.py)
            options.add(f"max_read={ops.max_read}")
        logged = _size(log_path)
        try:
            pyfuse3.init(ops, mountpoint, options)
        except RuntimeError as e:  # libfuse said why on stderr (the log): name it, and the doctor
            cause = mount_failure_cause(log_path, logged) or str(e)
            raise ArtfsError(f"cannot mount {mountpoint}: {cause}; run `artfs doctor`") from None
    except (ArtfsError, OSError, ValueError) as e:
        log.error("%s", e)
        ready.fail(f"{e}{where}")
        return 1
    except Exception as e:
        log.exception("cannot mount %s", mountpoint)
        ready.fail(f"cannot mount {mountpoint}: {type(e).__name__}: {e}{where}")
        return 1

    pidfile = pidfile_path(cache.root, mountpoint)
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(pidfile), exist_ok=True)
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n{mountpoint}\n")
    results = results_path(cache.root, mountpoint)
    with contextlib.suppress(OSError):
        os.unlink(results)  # an earlier session's report
    os.chdir("/")  # never keep a directory busy
    code = 0
    try:
        trio.run(_serve, ops, cache, blobs, store, mountpoint, ready)
    except BaseException as e:
        log.exception("the mount daemon failed")
        ready.fail(f"the mount daemon failed: {e}{where}")
        code = 1
    finally:
        with contextlib.suppress(Exception):
            pyfuse3.close(unmount=True)
        if drafts is not None:  # unmounted: nothing can write any more; commit what changed
            _commit_at_unmount(drafts, ops, results, mountpoint, store.url)
        else:
            ops.lineage.close()
        with contextlib.suppress(Exception):
            ops.close()
        with contextlib.suppress(Exception):
            blobs.close()
        with contextlib.suppress(Exception):
            store.backend.close()
        with contextlib.suppress(OSError, ValueError):
            with open(pidfile) as f:
                if int(f.readline()) == os.getpid():
                    os.unlink(pidfile)
    log.info("unmounted %s", mountpoint)
    return code


def _commit_at_unmount(drafts: DraftSpace, ops: Operations, results: str, mountpoint: str, store_url: str) -> None:
    """Commit every changed draft and report it in ``results`` for ``artfs umount`` (then exit).

    The report (:class:`artfs.lowlevel.UnmountReport`) is written twice: before the first commit
    starts, a ``"committing"`` one naming the drafts with changes, then the final one. A daemon
    that dies in between (SIGKILL, OOM) leaves the first, so ``artfs umount`` can say which
    drafts were not committed and exit non-zero instead of guessing.
    """
    pid = os.getpid()
    try:
        names = sorted({f"{s.project}/{s.artifact}" for s in drafts.slots if s.draft is not None and s.draft.dirty}
                       | {f"{p}/{a}" for p, a in drafts.pending()})
    except Exception as e:
        log.warning("cannot list the drafts with changes: %s", e)
        names = []
    _write_report(results, UnmountReport(pid, mountpoint, store_url, COMMITTING, drafts=names, started=time.time()))
    try:
        report = drafts.finish(list(ops.files.values()))
    except Exception as e:
        log.exception("committing the drafts failed")
        report = UnmountReport()
        report.fail("*", f"{type(e).__name__}: {e}")
    ops.lineage.close()  # the commits' edges too, before `artfs umount` reads the report and returns
    _write_report(results, replace(report, pid=pid, mountpoint=mountpoint, store=store_url, state=FINISHED,
                                           finished=time.time()))


def _write_report(results: str, report: UnmountReport) -> None:
    try:
        os.makedirs(os.path.dirname(results), exist_ok=True)
        tmp = f"{results}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(report.to_json())
        os.replace(tmp, results)
    except OSError as e:
        log.error("cannot write the commit report %s: %s", results, e)


def run(config: MountConfig) -> int:
    """Mount ``config.store_url`` at ``config.mountpoint``; in the background unless ``config.foreground``.

    In the background this returns (in the calling process) only once the mount is ready: 0, or
    1 after printing the daemon's error.
    """
    store_url = config.store_url or default_store_url()
    if "://" not in store_url:
        store_url = os.path.abspath(os.path.expanduser(store_url))
    mountpoint = os.path.abspath(config.mountpoint)
    config = replace(config, store_url=store_url, mountpoint=mountpoint)
    try:
        _check_mountpoint(mountpoint)
    except ArtfsError as e:
        print(f"artfs: error: {e}", file=sys.stderr)
        return 1
    debug, log_file = config.debug, config.log_file
    if config.foreground:
        _setup_logging(debug, log_file)
        return serve(config, ready=Ready(None), log_path=log_file)

    log_path = os.path.abspath(log_file or default_log_path(mountpoint))
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:  # the parent: wait for the child's verdict
        os.close(w)
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        os.close(r)
        msg = b"".join(chunks).decode("utf-8", "replace")
        if msg.startswith("OK"):
            if msg[3:].strip():
                print(msg[3:].strip(), file=sys.stderr)  # which fast paths are off, and why
            return 0
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        msg = msg[4:] if msg.startswith("ERR ") else f"the mount daemon exited before the mount was ready (log: {log_path})"
        print(f"artfs: error: {msg}", file=sys.stderr)
        return 1

    # the child: become a daemon
    code = 1
    try:
        os.close(r)
        os.setsid()
        ready = Ready(w)
        try:
            _setup_logging(debug, log_path)
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fd, 1)  # libfuse writes its complaints to stderr: keep them in the log
            os.dup2(fd, 2)
            os.close(fd)
            os.close(null)
        except OSError as e:
            ready.fail(f"cannot write the log file {log_path}: {e.strerror}")
            os._exit(1)
        code = serve(config, ready=ready, log_path=log_path)
    except BaseException as e:  # never return into the caller's code in the child
        with contextlib.suppress(Exception):
            log.exception("the mount daemon failed")
            Ready(w).fail(f"the mount daemon failed: {e}")
    finally:
        logging.shutdown()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="artfsd", description="The artfs mount daemon (see 'artfs mount -h').")
    add_mount_arguments(parser, daemon=True)
    args = parser.parse_args(argv)
    try:
        apply_mount_options(args)
    except ArtfsError as e:
        print(f"artfs: error: {e}", file=sys.stderr)
        return 2
    return run(MountConfig.from_args(args))


if __name__ == "__main__":
    sys.exit(main())
