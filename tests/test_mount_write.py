"""The write side of the mount on real FUSE mounts: ``draft/``, commits at unmount and through the
mount, aliases and metadata as file operations, crashes, two machines, a store that is down.

Every mount runs through :class:`artfsd.testing.MountProcess` with its own cache and staging
directories (``$ARTFS_STAGING_DIR``), so a test can crash a daemon and mount again on the same ones.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyfuse3
import pytest

from artfs import Artifact, Cache, Store
from artfsd.testing import MountProcess, is_mounted
from crashpoints import crash_vars, marker

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
]

MiB = 1 << 20
CLI = [sys.executable, "-m", "artfs.cli"]

BASE = {
    "README.md": (b"# bikes\nhello world\n", False),
    "bin/run.sh": (b"#!/bin/sh\necho hi\n", True),
    "images/0001.png": (os.urandom(3000), False),
    "images/0002.png": (os.urandom(5000), False),
    "weights.bin": (os.urandom(2 * MiB + 7), False),
}

Tree = dict[str, tuple[bytes, bool]]


def write_tree(root: str | Path, files: Tree) -> None:
    for rel, (data, exe) in files.items():
        p = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, 0o755 if exe else 0o644)


def read_tree(root: str | Path) -> Tree:
    """Regular files under ``root``: path -> (bytes, executable); symlinks and empty dirs are not files."""
    out = {}
    for d, dirs, files in os.walk(root):
        for fn in files:
            p = os.path.join(d, fn)
            if os.path.islink(p):
                continue
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = (f.read(), bool(os.stat(p).st_mode & stat.S_IXUSR))
    return out


def read_version(store: Store, project: str, artifact: str, n: int) -> Tree:
    with tempfile.TemporaryDirectory() as d:
        store.artifact(f"{project}/{artifact}:v{n}").download(d)
        return read_tree(d)


def log_files(store: Store, files: Tree, artifact: str = "data", project: str = "proj", **kw) -> int:
    with tempfile.TemporaryDirectory() as d:
        write_tree(d, files)
        art = Artifact(artifact, type="dataset", **kw)
        art.add_dir(d)
        return int(store.log_artifact(art, project=project).version[1:])


class World:
    """A local store holding proj/data:v0 (:data:`BASE`), and per-"machine" cache and staging dirs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = Store(str(root / "store"), cache=Cache(str(root / "writer-cache")))
        log_files(self.store, BASE)

    def env(self, machine: str = "a", **extra: str) -> dict[str, str]:
        return {**os.environ, "ARTFS_STAGING_DIR": str(self.root / f"staging-{machine}"),
                "ARTFS_CACHE_DIR": str(self.root / f"cache-{machine}"), "ARTFS_STORE": self.store.url,
                "XDG_STATE_HOME": str(self.root / "state"), **extra}

    def mount(self, machine: str = "a", *, args: tuple[str, ...] = (), **extra: str) -> MountProcess:
        return MountProcess(self.store.url, self.root / f"mnt-{machine}", cache_dir=self.root / f"cache-{machine}",
                            env=self.env(machine, **extra), args=["--refresh", "1", *args])

    def cli(self, *args: str, machine: str = "a", check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run([*CLI, *args], env=self.env(machine), capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"artfs {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def umount(self, m: MountProcess, machine: str = "a", check: bool = True) -> subprocess.CompletedProcess:
        r = self.cli("umount", m.mountpoint, machine=machine, check=check)
        assert not is_mounted(m.mountpoint)
        return r

    def versions(self, artifact: str = "data") -> list[int]:
        return self.store.versions("proj", artifact)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _errno(fn, *args) -> int:
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def _staged_files(world: World, machine: str = "a", artifact: str = "data") -> list[str]:
    d = world.root / f"staging-{machine}" / world.store.id / "proj" / artifact / "files"
    return sorted(os.listdir(d)) if d.exists() else []


# -- a draft is a local directory; umount commits it ----------------------------------------------
def test_draft_behaves_like_a_directory_and_umount_commits(world: World) -> None:
    expected = dict(BASE)
    with world.mount() as m:
        art = m.path("proj", "data")
        assert sorted(os.listdir(art)) == ["draft", "latest", "v0"]
        d = os.path.join(art, "draft")
        assert read_tree(d) == BASE  # a copy-on-write view of latest
        assert _staged_files(world) == []  # reading copies nothing

        with open(os.path.join(d, "README.md"), "ab") as f:  # append to a base file (copy-up)
            f.write(b"more\n")
        expected["README.md"] = (BASE["README.md"][0] + b"more\n", False)
        with open(os.path.join(d, "weights.bin"), "r+b") as f:  # write at an offset, then truncate
            f.seek(MiB)
            f.write(b"X" * 100)
            f.truncate(MiB + 50)
            f.flush()
            os.fsync(f.fileno())
        w = BASE["weights.bin"][0]
        expected["weights.bin"] = (w[:MiB] + b"X" * 50, False)
        os.chmod(os.path.join(d, "images", "0001.png"), 0o755)  # the executable bit is kept
        expected["images/0001.png"] = (BASE["images/0001.png"][0], True)
        os.chmod(os.path.join(d, "bin", "run.sh"), 0o644)
        expected["bin/run.sh"] = (BASE["bin/run.sh"][0], False)
        os.makedirs(os.path.join(d, "new", "deep"))
        with open(os.path.join(d, "new", "deep", "a.txt"), "w") as f:
            f.write("new file\n")
        expected["new/deep/a.txt"] = (b"new file\n", False)
        os.rename(os.path.join(d, "images"), os.path.join(d, "pics"))  # a directory of base files
        for k in ("images/0001.png", "images/0002.png"):
            expected["pics/" + k.split("/")[1]] = expected.pop(k)
        os.rename(os.path.join(d, "new", "deep", "a.txt"), os.path.join(d, "README.md"))  # replaces a file
        expected["README.md"] = expected.pop("new/deep/a.txt")
        os.unlink(os.path.join(d, "pics", "0002.png"))
        del expected["pics/0002.png"]
        os.mkdir(os.path.join(d, "gone"))
        os.rmdir(os.path.join(d, "gone"))
        os.utime(os.path.join(d, "pics", "0001.png"), ns=(1, 1_600_000_000 * 10**9))
        assert os.stat(os.path.join(d, "pics", "0001.png")).st_mtime_ns == 1_600_000_000 * 10**9
        assert os.statvfs(d).f_bavail > 0  # the staging disk's space
        with pytest.raises(OSError) as e:
            os.link(os.path.join(d, "README.md"), os.path.join(d, "hard"))
        assert e.value.errno == errno.EPERM
        assert read_tree(d) == expected
        assert world.versions() == [0]  # nothing is committed before the unmount

        r = world.umount(m)
    assert "proj/data:v1 created (4 files" in r.stdout, r.stdout + r.stderr
    assert world.versions() == [0, 1]
    assert world.store.aliases("proj", "data")["latest"] == 1
    assert read_version(world.store, "proj", "data", 1) == expected

    # mounted again: the draft shows v1; an unmount without changes creates nothing
    with world.mount() as m:
        assert read_tree(m.path("proj", "data", "draft")) == expected
        r = world.umount(m)
    assert r.stdout.strip() == "" and r.returncode == 0
    assert world.versions() == [0, 1]


def test_file_unlinked_or_replaced_while_open(world: World) -> None:
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        p = os.path.join(d, "tmp.bin")
        with open(p, "w+b") as f:
            f.write(b"abc")
            os.unlink(p)  # like a temp file: still readable and writable through the descriptor
            f.write(b"def")
            f.flush()
            assert os.fstat(f.fileno()).st_size == 6
            f.truncate(4)
            f.seek(0)
            assert f.read() == b"abcd"
        assert not os.path.exists(p)
        # a reader keeps seeing the bytes being written by another handle
        q = os.path.join(d, "README.md")
        r = open(q, "rb")
        with open(q, "r+b") as w:
            w.write(b"HELLO")
            w.flush()
            assert r.read(5) == b"HELLO"
        r.close()
        world.umount(m)
    assert read_version(world.store, "proj", "data", 1)["README.md"][0].startswith(b"HELLO")


# -- model-based: random operations on a draft and on a local directory ----------------------------
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_model_based_random_operations(world: World, tmp_path: Path) -> None:
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

    small = {"x.txt": (b"base x\n", False), "d/y.bin": (os.urandom(70_000), False), "d/e/z": (b"z", True)}
    names = [f"m{i}" for i in range(40)]
    for n in names:
        log_files(world.store, small, n)
    free = list(names)
    mount = world.mount()
    mount.start()
    commits: list[float] = []
    outcomes: dict[str, int] = {}

    class DraftMachine(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.art = free.pop(0)
            self.ref = tempfile.mkdtemp(dir=tmp_path)
            write_tree(self.ref, small)
            self.draft = mount.path("proj", self.art, "draft")
            assert walk(self.draft) == walk(self.ref)

        def roots(self) -> tuple[str, str]:
            return self.ref, self.draft

        def both(self, fn) -> None:
            """Apply ``fn(root)`` to both trees; they must fail (or not) alike."""
            got = [_errno(fn, r) for r in self.roots()]
            assert got[0] == got[1], (got, fn)
            outcomes[errno.errorcode.get(got[0], "ok")] = outcomes.get(errno.errorcode.get(got[0], "ok"), 0) + 1

        def candidates(self) -> list[str]:
            entries = sorted(walk(self.ref))
            dirs = [""] + [p for p in entries if walk_kind(self.ref, p) == "d"]
            return entries + [f"{d}/{n}".lstrip("/") for d in dirs for n in ("a", "b", "d")]

        @rule(data=st.data(), off=st.integers(0, 100_000), payload=st.binary(max_size=6000))
        def write(self, data, off, payload) -> None:
            path = data.draw(st.sampled_from(self.candidates()))

            def op(root: str) -> None:
                fd = os.open(os.path.join(root, path), os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    os.pwrite(fd, payload, off)
                finally:
                    os.close(fd)
            self.both(op)

        @rule(data=st.data(), size=st.integers(0, 80_000))
        def truncate(self, data, size) -> None:
            path = data.draw(st.sampled_from(self.candidates()))
            self.both(lambda r: os.truncate(os.path.join(r, path), size))

        @rule(data=st.data())
        def rename(self, data) -> None:
            c = self.candidates()
            src, dst = data.draw(st.sampled_from(c)), data.draw(st.sampled_from(c))
            self.both(lambda r: os.rename(os.path.join(r, src), os.path.join(r, dst)))

        @rule(data=st.data())
        def unlink(self, data) -> None:
            path = data.draw(st.sampled_from(self.candidates()))
            self.both(lambda r: os.unlink(os.path.join(r, path)))

        @rule(data=st.data())
        def mkdir(self, data) -> None:
            path = data.draw(st.sampled_from(self.candidates()))
            self.both(lambda r: os.mkdir(os.path.join(r, path)))

        @rule(data=st.data())
        def rmdir(self, data) -> None:
            path = data.draw(st.sampled_from(self.candidates()))
            self.both(lambda r: os.rmdir(os.path.join(r, path)))

        @rule(data=st.data(), exe=st.booleans())
        def chmod(self, data, exe) -> None:
            path = data.draw(st.sampled_from(self.candidates()))
            self.both(lambda r: os.chmod(os.path.join(r, path), 0o755 if exe else 0o644))

        @invariant()
        def same(self) -> None:
            assert walk(self.draft) == walk(self.ref)

        def teardown(self) -> None:
            t0 = time.monotonic()
            before = world.versions(self.art)
            r = world.cli("commit", self.draft)
            commits.append(time.monotonic() - t0)
            files = read_tree(self.ref)
            after = world.versions(self.art)
            if files == small:
                assert after == before and "nothing to commit" in r.stdout, r.stdout
                return
            if len(after) == len(before):  # the same content as an earlier version: matched, no new one
                assert "matched" in r.stdout, r.stdout
                return
            n = after[-1]
            assert f"proj/{self.art}:v{n} created" in r.stdout, r.stdout
            assert read_tree(mount.path("proj", self.art, f"v{n}")) == files  # through the mount at once
            assert os.readlink(mount.path("proj", self.art, "latest")) == f"v{n}"
            assert read_version(world.store, "proj", self.art, n) == files  # and through the API

    try:
        run_state_machine_as_test(DraftMachine, settings=settings(
            max_examples=12, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)))
    finally:
        mount.stop()
    print(f"{len(commits)} commits through the mount, {sum(commits) / max(len(commits), 1):.2f} s each "
          f"(with the CLI's start); operations: {outcomes}")
    assert outcomes.get("ok", 0) > 50


def walk_kind(root: str, rel: str) -> str:
    p = os.path.join(root, rel)
    return "d" if os.path.isdir(p) and not os.path.islink(p) else "f"


def walk(root: str) -> dict[str, tuple]:
    """Everything under ``root``: path -> ("d",) or ("f", bytes, executable)."""
    out: dict[str, tuple] = {}
    for d, dirs, files in os.walk(root):
        for n in dirs:
            out[os.path.relpath(os.path.join(d, n), root)] = ("d",)
        for n in files:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = ("f", f.read(), bool(os.stat(p).st_mode & stat.S_IXUSR))
    return out


# -- real tools --------------------------------------------------------------------------------------
def _sh(*cmd: str, cwd: str | None = None, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{cmd}: {r.stderr}"
    return r.stdout


GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull}

WRITER = r"""
import os, sys, random
root, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(tag)
os.makedirs(os.path.join(root, tag), exist_ok=True)
for i in range(n):
    data = rng.randbytes(rng.randint(0, 300_000))
    with open(os.path.join(root, tag, f"f{i:04d}.bin"), "wb") as f:
        for k in range(0, len(data), 65536):
            f.write(data[k:k + 65536])
    print(f"{tag}/f{i:04d}.bin", flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_real_tools_write_into_a_draft(world: World, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a/b/c.txt": (b"c\n", False), "run.sh": (b"#!/bin/sh\n", True), "big.bin": (os.urandom(700_000), False),
                     "e.txt": (b"", False)})
    tarball = tmp_path / "x.tar"
    _sh("tar", "cf", str(tarball), "-C", str(src), ".")
    repo = tmp_path / "repo"
    _sh("git", "-c", "init.defaultBranch=main", "init", "-q", str(repo), env=GIT_ENV)
    (repo / "file.txt").write_text("one\n")
    _sh("git", "add", "file.txt", cwd=str(repo), env=GIT_ENV)
    _sh("git", "commit", "-q", "-m", "first", cwd=str(repo), env=GIT_ENV)

    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        _sh("cp", "-r", str(src), os.path.join(d, "cp"))
        _sh("rsync", "-a", f"{src}/", os.path.join(d, "rsync") + "/")
        os.mkdir(os.path.join(d, "tar"))
        _sh("tar", "xf", str(tarball), "-C", os.path.join(d, "tar"))
        clone = os.path.join(d, "clone")
        _sh("git", "clone", "-q", str(repo), clone, env=GIT_ENV)
        with open(os.path.join(clone, "file.txt"), "a") as f:
            f.write("two\n")
        _sh("git", "commit", "-q", "-am", "second", cwd=clone, env=GIT_ENV)
        assert _sh("git", "log", "--oneline", cwd=clone, env=GIT_ENV).count("\n") == 2
        _sh("git", "fsck", "--strict", cwd=clone, env=GIT_ENV)
        db = os.path.join(d, "db.sqlite")
        _sh("sqlite3", db, "create table t (k integer primary key, v text);"
                           "begin; " + " ".join(f"insert into t values ({i}, 'v{i}');" for i in range(2000)) + " commit;"
                           "update t set v = 'changed' where k % 7 = 0; delete from t where k > 1500; vacuum;")
        assert _sh("sqlite3", db, "pragma integrity_check; select count(*) from t;").split() == ["ok", "1501"]
        _sh("sed", "-i", "s/hello/goodbye/", os.path.join(d, "README.md"))  # a base file, replaced by rename
        _sh("dd", "if=/dev/zero", f"of={os.path.join(d, 'weights.bin')}", "bs=4096", "seek=10", "count=3",
            "conv=notrunc", "status=none")
        mm = os.path.join(d, "mmap.bin")
        with open(mm, "wb") as f:
            f.truncate(MiB)
        with open(mm, "r+b") as f, mmap.mmap(f.fileno(), 0) as mp:
            mp[0:5] = b"hello"
            mp[MiB - 5:] = b"world"
            mp[300_000:300_004] = b"mmap"
            mp.flush()
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, os.path.join(d, "par"), f"p{i}", "15"],
                                  stdout=subprocess.PIPE) for i in range(4)]
        for p in procs:
            assert p.wait(60) == 0
        written = read_tree(d)
        r = world.umount(m)
    assert "proj/data:v1 created" in r.stdout, r.stdout + r.stderr
    got = read_version(world.store, "proj", "data", 1)
    assert got == written
    assert got["README.md"][0] == b"# bikes\ngoodbye world\n"
    w = got["weights.bin"][0]
    assert w[:40960] == BASE["weights.bin"][0][:40960] and w[40960:53248] == bytes(12288)
    assert w[53248:] == BASE["weights.bin"][0][53248:]
    assert got["mmap.bin"][0][:5] == b"hello" and got["mmap.bin"][0][-5:] == b"world"
    for tool in ("cp", "rsync", "tar"):
        assert {k.split("/", 1)[1]: v for k, v in got.items() if k.startswith(tool + "/")} == read_tree(src), tool
    assert sum(1 for k in got if k.startswith("par/")) == 60
    with tempfile.TemporaryDirectory() as out:
        world.store.artifact("proj/data:v1").download(out)
        con = sqlite3.connect(os.path.join(out, "db.sqlite"))
        assert con.execute("select count(*), sum(v = 'changed') from t").fetchone() == (1501, 215)
        con.close()
        for empty in ("refs/tags", "branches", "objects/info"):  # a version keeps files, not empty directories
            os.makedirs(os.path.join(out, "clone", ".git", empty), exist_ok=True)
        assert "second" in _sh("git", "log", "--oneline", cwd=os.path.join(out, "clone"), env=GIT_ENV)


# -- crashes -----------------------------------------------------------------------------------------
def test_sigkill_during_writes_keeps_every_closed_file(world: World) -> None:
    m = world.mount()
    with m:
        os.mkdir(m.path("proj", "fresh"))  # a new artifact: only the staging area knows it
        d = m.path("proj", "fresh", "draft")
        writer = subprocess.Popen([sys.executable, "-c", WRITER, d, "w", "100000"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        closed: list[str] = []
        assert writer.stdout is not None
        while len(closed) < 40:
            line = writer.stdout.readline()
            assert line, "the writer stopped early"
            closed.append(line.strip())
        m.kill()  # SIGKILL in the middle of the writes
        writer.wait(timeout=30)  # its next write fails: the mount went away
        # the rest through the same buffered reader: communicate(timeout=...) would read the raw
        # pipe and lose lines readline() had already buffered (files closed, yet not counted)
        closed += writer.stdout.read().split()
        assert writer.returncode != 0  # its writes failed: the mount went away
    expected = {}
    import random
    rng = random.Random("w")
    for i in range(len(closed)):
        expected[f"w/f{i:04d}.bin"] = rng.randbytes(rng.randint(0, 300_000))
    assert world.store.versions("proj", "fresh") == []

    with world.mount() as m:  # the draft is shown again, with every closed file
        assert "fresh" in os.listdir(m.path("proj"))
        got = read_tree(m.path("proj", "fresh", "draft"))
        for name in closed:
            assert got[name][0] == expected[name], name
        assert set(got) - set(closed) <= {f"w/f{len(closed):04d}.bin"}  # at most the one being written
        r = world.umount(m)
    assert "proj/fresh:v0 created" in r.stdout, r.stdout + r.stderr
    assert read_version(world.store, "proj", "fresh", 0) == got


@pytest.mark.parametrize("step", ["after-commit-id", "after-store-commit"])
def test_sigkill_during_commit_commits_exactly_once(world: World, step: str) -> None:
    m = world.mount(**crash_vars(step))  # the daemon stops at that step of the commit protocol
    with m:
        d = m.path("proj", "data", "draft")
        with open(os.path.join(d, "new.bin"), "wb") as f:
            f.write(os.urandom(300_000))
        os.unlink(os.path.join(d, "README.md"))
        written = read_tree(d)
        subprocess.run(["fusermount3", "-u", m.mountpoint], check=True)  # the daemon commits at unmount ...
        deadline = time.monotonic() + 20
        while marker(step) not in m.log:
            assert time.monotonic() < deadline and m.alive(), m.log
            time.sleep(0.05)
        m.kill()  # ... and dies in the middle of it
    if step == "after-commit-id":
        assert world.versions() == [0]  # no half version
        with world.mount() as m:  # the next mount shows the draft and its unmount finishes the commit
            assert read_tree(m.path("proj", "data", "draft")) == written
            r = world.umount(m)
        assert "proj/data:v1 created" in r.stdout, r.stdout + r.stderr
    else:
        assert world.versions() == [0, 1]  # the version exists, complete; the draft does not know yet
        r = world.cli("commit", "proj/data")
        assert "proj/data:v1 matched" in r.stdout, r.stdout
        assert "no drafts with changes" in world.cli("status").stdout
    assert world.versions() == [0, 1]  # exactly one version
    assert read_version(world.store, "proj", "data", 1) == written


# -- two machines, unchanged drafts, a store that is down ---------------------------------------------
def test_two_mounts_commit_at_once_and_unchanged_drafts_make_nothing(world: World) -> None:
    ma, mb = world.mount("a"), world.mount("b")
    with ma, mb:
        for m, name in ((ma, "from-a.txt"), (mb, "from-b.txt")):
            with open(m.path("proj", "data", "draft", name), "w") as f:
                f.write(name)
        wa, wb = read_tree(ma.path("proj", "data", "draft")), read_tree(mb.path("proj", "data", "draft"))
        results: dict[str, subprocess.CompletedProcess] = {}
        threads = [threading.Thread(target=lambda m=m, k=k: results.__setitem__(k, world.umount(m, k)))
                   for m, k in ((ma, "a"), (mb, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert world.versions() == [0, 1, 2]
    assert {"created" in r.stdout for r in results.values()} == {True}
    got = [read_version(world.store, "proj", "data", n) for n in (1, 2)]
    assert sorted(got, key=sorted) == sorted([wa, wb], key=sorted)  # one version per machine

    with world.mount("a") as m:  # a clean draft moves to the latest; rewriting identical bytes changes nothing
        d = m.path("proj", "data", "draft")
        assert read_tree(d) == read_version(world.store, "proj", "data", 2)
        data = open(os.path.join(d, "README.md"), "rb").read()
        with open(os.path.join(d, "README.md"), "wb") as f:
            f.write(data)
        os.mkdir(os.path.join(d, "empty"))
        r = world.umount(m)
    assert r.stdout.strip() == "" and r.returncode == 0
    assert world.versions() == [0, 1, 2]


def test_store_down_at_unmount_loses_nothing(world: World) -> None:
    root = world.root / "store"
    with world.mount() as m:
        with open(m.path("proj", "data", "draft", "keep.txt"), "w") as f:
            f.write("precious\n")
        written = read_tree(m.path("proj", "data", "draft"))
        os.rename(root, str(root) + ".away")  # the store is unreachable at commit time
        root.write_text("not a directory")
        r = world.umount(m, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "commit failed" in r.stderr and "artfs commit proj/data" in r.stderr, r.stderr
    st = world.cli("status").stdout
    assert "proj/data" in st and "+ keep.txt" in st, st
    root.unlink()
    os.rename(str(root) + ".away", root)  # the store is back
    r = world.cli("commit", "proj/data")
    assert "proj/data:v1 created" in r.stdout, r.stdout
    assert read_version(world.store, "proj", "data", 1) == written
    assert "no drafts with changes" in world.cli("status").stdout


# -- commit through the mount ------------------------------------------------------------------------
def test_artfs_commit_through_the_mount(world: World) -> None:
    with world.mount() as m:
        art = m.path("proj", "data")
        d = os.path.join(art, "draft")
        held = open(os.path.join(d, "log.txt"), "w")  # open for writing across the commit
        held.write("line 1\n")
        held.flush()
        r = world.cli("commit", d, "-d", "first through the mount", "-a", "best", "--metadata", "acc=0.5")
        assert "proj/data:v1 created" in r.stdout and "aliases: best" in r.stdout, r.stdout
        # at once: the new version, where latest and best point, and the draft on its new base
        assert os.readlink(os.path.join(art, "latest")) == "v1" and os.readlink(os.path.join(art, "best")) == "v1"
        assert open(os.path.join(art, "v1", "log.txt")).read() == "line 1\n"
        assert os.getxattr(os.path.join(art, "v1"), "user.artfs.description") == b"first through the mount"
        assert json.loads(os.getxattr(os.path.join(art, "v1"), "user.artfs.metadata")) == {"acc": 0.5}
        assert os.getxattr(d, "user.artfs.base") == b"v1"
        doc = json.loads(os.getxattr(d, "user.artfs.last_commit"))
        assert doc["version"] == 1 and doc["created"] and doc["files"] == 6
        held.write("line 2\n")
        held.close()
        r = world.cli("commit", d)
        assert "proj/data:v2 created" in r.stdout, r.stdout
        r = world.cli("commit", d)
        assert "nothing to commit" in r.stdout
        r = world.cli("commit", "proj/data", check=False)  # the mount holds the draft
        assert r.returncode != 0 and f"artfs commit {d}" in r.stderr
        world.umount(m)
    assert world.versions() == [0, 1, 2]
    assert read_version(world.store, "proj", "data", 2)["log.txt"][0] == b"line 1\nline 2\n"


def test_large_writes_and_rewrites_are_committed_exactly(world: World) -> None:
    """1 MiB writes into a draft (with the patched pyfuse3 all but the first are copied into the
    staged file by pyfuse3 itself, not through Python), blocks rewritten, a write past the end and
    an fsync: the file and the committed version hold exactly what was written."""
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        model = bytearray()
        with open(os.path.join(d, "big.bin"), "wb", buffering=0) as f:
            for k in range(40):
                block = os.urandom(MiB)
                assert f.write(block) == MiB
                model += block
            for k in (1, 9, 17, 39):  # rewrite blocks
                block = bytes([k]) * MiB
                f.seek(k * MiB)
                f.write(block)
                model[k * MiB:(k + 1) * MiB] = block
            f.seek(41 * MiB + 5)  # and leave a hole
            f.write(b"tail")
            model += bytes(MiB + 5) + b"tail"
            os.fsync(f.fileno())
        if hasattr(pyfuse3.Operations, "write_fd"):  # the patched pyfuse3: all but the first write skip Python
            assert m.stats()["draft_fd_writes"] >= 40
        assert Path(d, "big.bin").read_bytes() == model
        r = world.cli("commit", d)
        assert "proj/data:v1 created" in r.stdout, r.stdout
        assert Path(m.path("proj", "data", "v1", "big.bin")).read_bytes() == model
        world.umount(m)
    assert read_version(world.store, "proj", "data", 1)["big.bin"][0] == bytes(model)


# -- aliases and metadata as file operations ----------------------------------------------------------
def test_aliases_and_metadata_as_file_operations(world: World) -> None:
    log_files(world.store, {**BASE, "x": (b"x", False)})  # v1
    with world.mount() as m:
        art = m.path("proj", "data")
        os.symlink("v0", os.path.join(art, "best"))  # ln -s v0 best
        assert world.store.aliases("proj", "data")["best"] == 0
        assert os.readlink(os.path.join(art, "best")) == "v0"
        _sh("ln", "-sfn", "v1", os.path.join(art, "best"))  # moves it: symlink to a temp name, rename over
        assert world.store.aliases("proj", "data") == {"best": 1, "latest": 1}
        assert os.readlink(os.path.join(art, "best")) == "v1"
        os.symlink("best", os.path.join(art, "prod"))  # an alias of an alias: the same version
        assert world.store.aliases("proj", "data")["prod"] == 1
        _sh("rm", os.path.join(art, "best"), os.path.join(art, "prod"))
        assert world.store.aliases("proj", "data") == {"latest": 1}
        assert sorted(os.listdir(art)) == ["draft", "latest", "v0", "v1"]

        for name, target, code in (("v9", "v0", errno.EINVAL), ("v01", "v0", errno.EINVAL),
                                   ("bad..name", "v0", errno.EINVAL), ("draft", "v0", errno.EEXIST),
                                   ("ok", "v7", errno.ENOENT), ("ok", "../x", errno.EINVAL)):
            assert _errno(os.symlink, target, os.path.join(art, name)) == code, name
        assert _errno(os.unlink, os.path.join(art, "latest")) == errno.EPERM  # automatic
        assert world.store.aliases("proj", "data") == {"latest": 1}

        # the next version described on draft/ (setfattr), the same attributes on vN/ edit that version
        d = os.path.join(art, "draft")
        _sh("setfattr", "-n", "user.artfs.description", "-v", "tuned", d)
        _sh("setfattr", "-n", "user.artfs.metadata", "-v", '{"lr": 0.1}', d)
        _sh("setfattr", "-n", "user.artfs.aliases", "-v", "candidate,prod", d)
        _sh("setfattr", "-n", "user.artfs.type", "-v", "dataset", d)
        assert _errno(os.setxattr, d, "user.artfs.metadata", b"[1]") == errno.EINVAL
        assert _errno(os.setxattr, d, "user.artfs.aliases", b"v3") == errno.EINVAL
        out = _sh("getfattr", "-d", d)
        assert 'user.artfs.description="tuned"' in out and "candidate,prod" in out and 'user.artfs.base="v1"' in out
        with open(os.path.join(d, "new.txt"), "w") as f:
            f.write("new")
        v0 = os.path.join(art, "v0")
        _sh("setfattr", "-n", "user.artfs.description", "-v", "the first cut", v0)
        os.setxattr(v0, "user.artfs.metadata", b'{"classes": 4}')
        os.setxattr(v0, "user.artfs.aliases", b"old")
        assert _errno(os.setxattr, v0, "user.artfs.type", b"model") == errno.EPERM
        assert os.getxattr(v0, "user.artfs.description") == b"the first cut"
        assert os.path.islink(os.path.join(art, "old"))
        world.umount(m)
    assert world.store.info("proj", "data", 0) == {**world.store.info("proj", "data", 0),
                                                   "description": "the first cut", "metadata": {"classes": 4}}
    a = world.store.artifact("proj/data:v2")
    assert (a.description, a.metadata) == ("tuned", {"lr": 0.1})
    assert world.store.aliases("proj", "data") == {"latest": 2, "candidate": 2, "prod": 2, "old": 0}


def test_new_projects_and_artifacts_and_refused_names(world: World) -> None:
    with world.mount() as m:
        root = m.mountpoint
        for bad in ("bad..name", ".hidden", "draft", "v3", "-x"):
            assert _errno(os.mkdir, os.path.join(root, bad)) == errno.EINVAL, bad
        assert _errno(os.mkdir, m.path("proj", "v2")) == errno.EINVAL
        os.mkdir(m.path("cycling"))
        assert sorted(os.listdir(root)) == ["cycling", "proj"]
        os.mkdir(m.path("cycling", "bikes"))
        os.mkdir(m.path("cycling", "tmp"))
        assert sorted(os.listdir(m.path("cycling"))) == ["bikes", "tmp"]
        assert os.listdir(m.path("cycling", "bikes")) == ["draft"]
        assert os.listdir(m.path("cycling", "bikes", "draft")) == []
        os.rmdir(m.path("cycling", "tmp"))  # a new, empty artifact can go again
        assert _errno(os.rmdir, m.path("proj", "data")) == errno.EROFS
        with open(m.path("cycling", "bikes", "draft", "one.txt"), "w") as f:
            f.write("1")
        _sh("setfattr", "-n", "user.artfs.type", "-v", "dataset", m.path("cycling", "bikes", "draft"))

        v0 = m.path("proj", "data", "v0")  # versions stay read-only
        for fn in (lambda: open(os.path.join(v0, "new"), "w"), lambda: os.mkdir(os.path.join(v0, "d")),
                   lambda: os.unlink(os.path.join(v0, "README.md")), lambda: open(os.path.join(v0, "README.md"), "a"),
                   lambda: os.truncate(os.path.join(v0, "README.md"), 0),
                   lambda: os.rename(os.path.join(v0, "README.md"), m.path("proj", "data", "draft", "r")),
                   lambda: open(m.path("proj", "data", "file"), "w")):
            assert _errno(fn) in (errno.EROFS, errno.EXDEV)
        assert _errno(os.rename, os.path.join(v0, "README.md"), os.path.join(v0, "x")) == errno.EROFS
        r = world.umount(m)
    assert "cycling/bikes:v0 created" in r.stdout, r.stdout
    assert world.store.projects() == ["cycling", "proj"]
    assert world.store.artifacts("cycling") == ["bikes"]
    assert world.store.artifact("cycling/bikes:v0").type == "dataset"


def test_read_only_mount_has_no_draft(world: World) -> None:
    with world.mount(args=("--read-only",)) as m:
        assert sorted(os.listdir(m.path("proj", "data"))) == ["latest", "v0"]
        assert _errno(os.mkdir, m.path("x")) == errno.EROFS


def test_sigterm_commits_before_exiting(world: World) -> None:
    with world.mount() as m:
        with open(m.path("proj", "data", "draft", "t.txt"), "w") as f:
            f.write("term")
        m.proc.send_signal(signal.SIGTERM)  # what systemd sends
        assert m.proc.wait(30) == 0
        assert "proj/data:v1 created" in m.log
    assert read_version(world.store, "proj", "data", 1)["t.txt"] == (b"term", False)
