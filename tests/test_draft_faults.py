"""Drafts under faults, on real FUSE mounts: a daemon killed in the middle of a commit, a full
staging disk, requests on a draft while it is being committed.

The store is slowed down or stopped by real means (a TCP proxy in front of the S3 server that holds
every byte while stalled, a draft big enough to take a while to hash), never by a hook in the code.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from artfs import Cache, Store
from artfsd.testing import MountProcess, is_mounted

from test_mount_write import BASE, log_files, read_tree, read_version

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
]

MiB = 1 << 20
CLI = [sys.executable, "-m", "artfs.cli"]


class StallProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream``; :meth:`stall` holds every byte (both ways,
    open connections included) until :meth:`resume`. Closes every socket it made on exit."""

    def __init__(self, upstream: str) -> None:
        u = urlsplit(upstream)
        self.target = (u.hostname or "127.0.0.1", u.port or 80)
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._socks: list[socket.socket] = []
        self.held = 0  # bytes that arrived while stalled
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> "StallProxy":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._flowing.set()
        self._listener.close()
        with self._lock:
            for s in self._socks:
                s.close()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if not self._flowing.is_set():
                    self.held += len(data)
                while not self._flowing.wait(0.1):  # stalled: hold the bytes
                    if self._closed.is_set():
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _wait_for(cond, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- 5: the daemon dies in the middle of a commit at unmount ---------------------------------------------
def test_umount_fails_and_says_how_to_commit_when_the_daemon_dies_mid_commit(tmp_path: Path, s3_url: str) -> None:
    log_files(Store(s3_url, cache=Cache(str(tmp_path / "writer-cache"))), BASE)
    with StallProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "ARTFS_STORE": s3_url,
               "ARTFS_STAGING_DIR": str(tmp_path / "staging"), "ARTFS_CACHE_DIR": str(tmp_path / "cache"),
               "XDG_STATE_HOME": str(tmp_path / "state")}
        m = MountProcess(s3_url, tmp_path / "mnt", cache_dir=tmp_path / "cache", env=env)
        with m:
            d = m.path("proj", "data", "draft")
            with open(os.path.join(d, "new.bin"), "wb") as f:
                f.write(os.urandom(MiB))
            os.unlink(os.path.join(d, "README.md"))
            written = read_tree(d)
            proxy.stall()  # the store stops answering: the commit at unmount cannot finish
            umount = subprocess.Popen([*CLI, "umount", m.mountpoint], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            try:
                _wait_for(lambda: "proj/data: committing the draft" in m.log, "the commit to start")
                os.kill(m.pid, signal.SIGKILL)  # our own child: dies in the middle of the commit
                out, err = umount.communicate(timeout=60)
            finally:
                if umount.poll() is None:
                    umount.kill()
                    umount.wait()
            assert not is_mounted(m.mountpoint)
        assert umount.returncode == 1, out + err  # nothing was committed
        assert "proj/data: not committed" in err and "the draft is kept" in err, err
        assert f"artfs commit --store {s3_url} proj/data" in err, err
        proxy.resume()
        store = Store(s3_url, cache=Cache(str(tmp_path / "check-cache")))
        assert store.versions("proj", "data") == [0]
        r = subprocess.run([*CLI, "commit", "--store", s3_url, "proj/data"], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and "proj/data:v1 created" in r.stdout, r.stdout + r.stderr
    assert store.versions("proj", "data") == [0, 1]
    assert read_version(store, "proj", "data", 1) == written


# -- 8: a draft being committed answers requests; a doomed commit says so before hashing ---------------
def _in_thread(fn, *args, **kw):
    """Run ``fn`` in a thread; returns (thread, box): box["ok"] or box["err"] once it is done."""
    box: dict = {}

    def run() -> None:
        try:
            box["ok"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["err"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _done(t: threading.Thread, box: dict, what: str):
    t.join(30)  # a stalled commit never ends: a request waiting for it never returns
    assert not t.is_alive(), f"{what} waited for the commit"
    if "err" in box:
        raise box["err"]
    return box["ok"]


@pytest.fixture
def s3world(tmp_path: Path, s3_url: str) -> Iterator[tuple[StallProxy, dict[str, str], Store]]:
    store = Store(s3_url, cache=Cache(str(tmp_path / "writer-cache")))
    log_files(store, BASE)
    with StallProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "ARTFS_STORE": s3_url,
               "ARTFS_STAGING_DIR": str(tmp_path / "staging"), "ARTFS_CACHE_DIR": str(tmp_path / "cache"),
               "XDG_STATE_HOME": str(tmp_path / "state"),
               "ARTFS_S3_TIMEOUT": "90"}  # a stalled commit outlasts the 30 s a waiting request is given
        yield proxy, env, store


def test_requests_on_a_draft_are_answered_while_it_is_committed(tmp_path: Path, s3world) -> None:
    proxy, env, store = s3world
    m = MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "cache", env=env)
    with m:
        d = m.path("proj", "data", "draft")
        for i in range(20):
            with open(os.path.join(d, f"part-{i:02d}.bin"), "wb") as f:
                f.write(os.urandom(256 * 1024))
        committed = read_tree(d)
        proxy.stall()  # the commit hashes, then waits for the store as long as the stall lasts
        commit = subprocess.Popen([*CLI, "commit", d, "-d", "while busy"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: proxy.held > 0, "the commit to reach the store")
            assert commit.poll() is None  # still committing
            # Relative to an fd on draft/: the path above it is the read side, which asks the
            # (stalled) store when its listing is due for a refresh; draft/ itself must not wait.
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)

            def opener(path: str, flags: int) -> int:
                return os.open(path, flags, dir_fd=fd)

            # reads of the namespace and of the bytes: answered while the commit waits for the store
            assert _done(*_in_thread(os.stat, "part-03.bin", dir_fd=fd), "stat").st_size == 256 * 1024
            assert "part-19.bin" in _done(*_in_thread(os.listdir, fd), "readdir")
            assert _done(*_in_thread(lambda: open("part-05.bin", "rb", opener=opener).read()), "read") \
                == committed["part-05.bin"][0]
            # namespace changes are answered too, and go to the next version
            _done(*_in_thread(lambda: os.rename("part-00.bin", "moved.bin", src_dir_fd=fd, dst_dir_fd=fd)), "rename")
            _done(*_in_thread(os.unlink, "part-01.bin", dir_fd=fd), "unlink")

            def create() -> None:
                with open("during.txt", "wb", opener=opener):
                    pass
            _done(*_in_thread(create), "create")
            # a write waits for the commit (the bytes being uploaded do not change)
            writer, wbox = _in_thread(lambda: open("during.txt", "wb", opener=opener).write(b"next version\n"))
            assert commit.poll() is None
        finally:
            proxy.resume()
            out, err = commit.communicate(timeout=60)
        os.close(fd)
        assert commit.returncode == 0 and "proj/data:v1 created" in out, out + err
        assert _done(writer, wbox, "write") == len(b"next version\n")
        assert read_version(store, "proj", "data", 1) == committed  # exactly what was there when it started
        now = read_tree(d)
        assert now["during.txt"][0] == b"next version\n" and "moved.bin" in now and "part-01.bin" not in now
        out = subprocess.run([*CLI, "commit", d], env=env, capture_output=True, text=True, timeout=60).stdout
        assert "proj/data:v2 created" in out, out
    assert read_version(store, "proj", "data", 2) == now


def test_commit_refuses_a_dangling_symlink_before_hashing(tmp_path: Path, s3world) -> None:
    proxy, env, store = s3world
    m = MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "cache", env=env)
    with m:
        d = m.path("proj", "data", "draft")
        with open(os.path.join(d, "weights.bin"), "wb") as f:  # a base file, rewritten: hashed at commit
            f.write(os.urandom(4 * MiB))
        os.symlink("nowhere/file", os.path.join(d, "link"))
        os.symlink("../../outside", os.path.join(d, "escape"))
        r = subprocess.run([*CLI, "commit", d], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0, r.stdout
        assert "'link' -> 'nowhere/file' is dangling" in r.stderr, r.stderr
        assert "'escape' -> '../../outside' points outside the draft" in r.stderr, r.stderr
        st = json.loads(os.getxattr(d, "user.artfs.status"))
        assert st["unhashed"] == ["weights.bin"], st  # nothing was hashed: the refusal came first
        os.unlink(os.path.join(d, "link"))
        os.unlink(os.path.join(d, "escape"))
        out = subprocess.run([*CLI, "commit", d], env=env, capture_output=True, text=True, timeout=60).stdout
        assert "proj/data:v1 created" in out, out


# -- 6: a full staging disk ---------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (needs root), unmounted afterwards whatever happens."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_full_staging_disk_gives_enospc_and_rm_frees_space(tmp_path: Path, small_disk: Path) -> None:
    store = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "writer-cache")))
    log_files(store, BASE)
    env = {**os.environ, "XDG_DATA_HOME": str(small_disk), "ARTFS_STAGING_DIR": str(small_disk / "artfs" / "staging"),
           "ARTFS_CACHE_DIR": str(tmp_path / "cache"), "ARTFS_STORE": store.url, "XDG_STATE_HOME": str(tmp_path / "state")}
    m = MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "cache", env=env)
    with m:
        d = m.path("proj", "data", "draft")
        with open(os.path.join(d, "keep.bin"), "wb") as f:
            f.write(os.urandom(MiB))
        # fill the disk: the writer gets ENOSPC (not EIO)
        with pytest.raises(OSError) as e:
            with open(os.path.join(d, "fill.bin"), "wb") as f:
                for _ in range(64):
                    f.write(os.urandom(MiB))
                    f.flush()
        assert e.value.errno == errno.ENOSPC, e.value
        # many small files until nothing fits, not even the journal's record of a new name
        made = 0
        for i in range(2000):
            try:
                with open(os.path.join(d, f"small-{i:04d}.txt"), "wb") as f:
                    f.write(os.urandom(4096))
                made += 1
            except OSError as e2:
                assert e2.errno == errno.ENOSPC, e2  # never EIO
                break
        else:
            pytest.fail("the staging disk never filled up")
        # a base file cannot be copied up for writing: ENOSPC too, and the draft still shows the base
        with pytest.raises(OSError) as e:
            with open(os.path.join(d, "weights.bin"), "ab") as f:
                f.write(b"more")
        assert e.value.errno == errno.ENOSPC, e.value
        assert open(os.path.join(d, "weights.bin"), "rb").read() == BASE["weights.bin"][0]
        # on the full disk, rm works and gives the room back
        for i in range(made):
            os.unlink(os.path.join(d, f"small-{i:04d}.txt"))
        os.unlink(os.path.join(d, "fill.bin"))
        assert sorted(os.listdir(d)) == sorted(["README.md", "bin", "images", "weights.bin", "keep.bin"])
        with open(os.path.join(d, "after.txt"), "wb") as f:
            f.write(b"room again\n")
        written = read_tree(d)
        assert f"the staging disk {small_disk} " in m.log and "is full" in m.log, m.log
        r = subprocess.run([*CLI, "umount", m.mountpoint], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "proj/data:v1 created" in r.stdout, r.stdout + r.stderr
    assert read_version(store, "proj", "data", 1) == written
