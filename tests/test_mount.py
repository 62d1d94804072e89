"""The read side of the mount, on real FUSE mounts, with real tools.

Most tests share one mount of a local store (module scope); tests that change the store, kill it
or unmount get their own. Every mount runs through :class:`artfsd.testing.MountProcess`, which
always unmounts and ends its daemon, even when a test fails.
"""

from __future__ import annotations

import errno
import filecmp
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from artfs import Artifact, Cache, Store
from artfs.testing import CONFLICTING_ENV, S3Server, s3_env
from artfsd.testing import MountProcess, is_mounted

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
]

MiB = 1 << 20
BIG = 64 * MiB


def _make_source(root: Path) -> Path:
    src = root / "src"
    (src / "images" / "train").mkdir(parents=True)
    (src / "empty-dir-sibling").mkdir()
    (src / "notes.txt").write_text("hello artfs\n")
    (src / "empty").write_bytes(b"")
    (src / "name with spaces é.txt").write_text("unicode\n")
    (src / "empty-dir-sibling" / "x").write_bytes(b"x")
    run = src / "bin" / "run.sh"
    run.parent.mkdir()
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    for i in range(300):
        (src / "images" / "train" / f"{i:04d}.png").write_bytes(os.urandom(100 + i))
    (src / "weights.bin").write_bytes(os.urandom(3 * MiB + 17))
    import numpy as np

    np.arange(250_000, dtype=np.float64).tofile(src / "array.f64")
    db = sqlite3.connect(src / "db.sqlite")
    db.execute("create table t (k integer primary key, v text)")
    db.executemany("insert into t values (?, ?)", [(i, f"value {i}") for i in range(5000)])
    db.commit()
    db.close()
    return src


def _log(store: Store, src: Path, name: str = "data", **kw) -> Artifact:
    art = Artifact(name, type="dataset", description=kw.pop("description", "a test set"),
                   metadata=kw.pop("metadata", {"classes": 3}))
    art.add_dir(str(src))
    return store.log_artifact(art, project="proj", **kw)


def _sha(p: str | Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def _tree(root: str | Path) -> dict[str, tuple[int, bool]]:
    """path -> (size, executable) of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for fn in files:
            p = os.path.join(d, fn)
            st = os.stat(p)
            out[os.path.relpath(p, root)] = (st.st_size, bool(st.st_mode & 0o111))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A local store with proj/data:v0 and proj/big:v0 (one 64 MiB file), mounted once."""
    root = tmp_path_factory.mktemp("mount")
    src = _make_source(root)
    store = Store(str(root / "store"), cache=Cache(str(root / "writer-cache")))
    _log(store, src, aliases=["best"])
    bigsrc = root / "bigsrc"
    bigsrc.mkdir()
    (bigsrc / "big.bin").write_bytes(os.urandom(BIG))
    _log(store, bigsrc, "big")
    with MountProcess(store.url, root / "mnt", cache_dir=root / "mount-cache", args=["--refresh", "1"]) as m:
        yield m, src, store


@pytest.fixture
def mnt(world):
    m, _, _ = world
    assert m.alive(), m.log
    return m


@pytest.fixture
def src(world):
    return world[1]


@pytest.fixture(scope="module", params=["passthrough", "no_passthrough"])
def reader(request, world):
    """The key read tests run on both read paths: the shared mount (passthrough of complete cache
    blobs where the kernel and pyfuse3 allow it) and a second mount of the same store with
    ``-o no_passthrough`` (every read through the daemon, as with stock pyfuse3 or a kernel older
    than 6.9). Each path reads cold first (the chunked path) and complete blobs afterwards."""
    m, _, store = world
    if request.param == "passthrough":
        yield m
        return
    root = Path(m.mountpoint).parent
    with MountProcess(store.url, root / "mnt-np", cache_dir=root / "mount-cache-np",
                      args=["--refresh", "1", "-o", "no_passthrough"]) as np:
        assert not np.stats()["kernel"]["passthrough"]
        yield np


def _run(*cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, check=True, timeout=30, **kw)


# -- reading with real tools ---------------------------------------------------------------------
def test_layout_and_aliases(mnt):
    assert os.listdir(mnt.mountpoint) == ["proj"]
    assert sorted(os.listdir(mnt.path("proj"))) == ["big", "data"]
    assert sorted(os.listdir(mnt.path("proj", "data"))) == ["best", "draft", "latest", "v0"]
    assert os.readlink(mnt.path("proj", "data", "latest")) == "v0"
    assert os.readlink(mnt.path("proj", "data", "best")) == "v0"
    assert os.path.samefile(mnt.path("proj", "data", "latest"), mnt.path("proj", "data", "v0"))


def test_ls_find_du_match_source(mnt, src):
    v0 = mnt.path("proj", "data", "v0")
    assert _tree(v0) == _tree(src)
    out = _run("ls", "-lR", v0).stdout.decode()
    assert "0299.png" in out and "run.sh" in out and "-r-xr-xr-x" in out and "-r--r--r--" in out
    found = _run("find", v0, "-type", "f").stdout.decode().split("\n")
    assert sorted(os.path.relpath(p, v0) for p in found if p) == sorted(_tree(src))
    dirs = _run("find", v0, "-type", "d").stdout.decode().split()
    assert len(dirs) == 5  # v0, images, images/train, bin, empty-dir-sibling
    du = int(_run("du", "-sb", v0).stdout.split()[0])
    assert du >= sum(s for s, _ in _tree(src).values())
    st = os.stat(os.path.join(v0, "weights.bin"))
    assert st.st_blocks == (st.st_size + 511) // 512
    assert os.stat(v0).st_nlink == 2 + 3


def test_cat_sha256sum_python_read(reader, src):
    v0 = reader.path("proj", "data", "v0")
    files = sorted(_tree(src))
    out = _run("sha256sum", *files, cwd=v0).stdout.decode()
    got = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in out.splitlines()}
    assert got == {f: _sha(src / f) for f in files}
    assert _run("cat", os.path.join(v0, "notes.txt")).stdout == b"hello artfs\n"
    with open(os.path.join(v0, "weights.bin"), "rb") as f:
        assert f.read() == (src / "weights.bin").read_bytes()
        f.seek(MiB + 5)
        assert f.read(10) == (src / "weights.bin").read_bytes()[MiB + 5 : MiB + 15]
    assert open(os.path.join(v0, "empty"), "rb").read() == b""


def test_cp_r_and_tar(reader, src, tmp_path):
    v0 = reader.path("proj", "data", "v0")
    _run("cp", "-r", v0, str(tmp_path / "copy"))
    cmp = filecmp.dircmp(tmp_path / "copy", src)

    def same(c: filecmp.dircmp) -> bool:
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        return (not c.left_only and not c.right_only and not mismatch and not errors
                and all(same(s) for s in c.subdirs.values()))

    assert same(cmp)
    tar = subprocess.run(["tar", "c", "-C", v0, "."], capture_output=True, check=True, timeout=30).stdout
    names = subprocess.run(["tar", "t"], input=tar, capture_output=True, check=True).stdout.decode().split()
    assert "./images/train/0042.png" in names and "./db.sqlite" in names


def test_mmap_numpy_and_sqlite(reader, src):
    import numpy as np

    v0 = reader.path("proj", "data", "v0")
    a = np.memmap(os.path.join(v0, "array.f64"), dtype=np.float64, mode="r")
    assert a.shape == (250_000,) and a[123_456] == 123_456.0 and float(a.sum()) == float(np.arange(250_000).sum())
    del a
    db = os.path.join(v0, "db.sqlite")
    con = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        assert con.execute("select count(*), max(v) from t where k < 100").fetchone() == (100, "value 99")
    finally:
        con.close()
    out = _run("sqlite3", "-readonly", db, "select v from t where k = 4321").stdout.decode().strip()
    assert out == "value 4321"


def test_head_of_large_file_fetches_few_chunks(mnt):
    big = mnt.path("proj", "big", "v0", "big.bin")
    assert os.stat(big).st_size == BIG  # loads the manifest (one GET) before we count
    before = mnt.stats()["backend"]
    t0 = time.monotonic()
    head = _run("head", "-c", "1024", big).stdout
    assert len(head) == 1024
    assert time.monotonic() - t0 < 5
    time.sleep(0.3)  # let read-ahead started by that read settle
    after = mnt.stats()["backend"]
    ranges = after["range"] - before["range"]
    assert 1 <= ranges <= 3, (before, after)
    assert after.get("download", 0) == before.get("download", 0)  # no whole-blob download


def test_xattrs(mnt, src):
    v0 = mnt.path("proj", "data", "v0")
    f = os.path.join(v0, "weights.bin")
    assert os.getxattr(f, "user.artfs.digest").decode().startswith("xxh128:")
    assert int(os.getxattr(f, "user.artfs.size")) == (src / "weights.bin").stat().st_size
    assert set(os.listxattr(f)) == {"user.artfs.digest", "user.artfs.size"}
    assert os.getxattr(v0, "user.artfs.type") == b"dataset"
    assert os.getxattr(v0, "user.artfs.description") == b"a test set"
    assert json.loads(os.getxattr(v0, "user.artfs.metadata")) == {"classes": 3}
    assert os.getxattr(v0, "user.artfs.aliases") == b"best,latest"
    assert os.getxattr(v0, "user.artfs.digest").startswith(b"xxh128:")
    assert os.getxattr(v0, "user.artfs.created").startswith(b"20")
    out = _run("getfattr", "-d", f).stdout.decode()
    assert 'user.artfs.digest="xxh128:' in out and "user.artfs.size=" in out
    with pytest.raises(OSError) as e:
        os.getxattr(f, "user.artfs.nope")
    assert e.value.errno == errno.ENODATA


@pytest.mark.parametrize("op", ["touch", "mkdir", "rm", "mv", "append", "truncate", "chmod", "setfattr",
                                "symlink", "create-in-artifact", "rmdir"])
def test_writes_fail_with_erofs(mnt, op):
    v0 = mnt.path("proj", "data", "v0")
    f = os.path.join(v0, "notes.txt")
    ops = {
        "touch": lambda: open(os.path.join(v0, "new.txt"), "w"),
        "mkdir": lambda: os.mkdir(os.path.join(v0, "d")),
        "rm": lambda: os.unlink(f),
        "mv": lambda: os.rename(f, os.path.join(v0, "moved.txt")),
        "append": lambda: open(f, "a"),
        "truncate": lambda: os.truncate(f, 0),
        "chmod": lambda: os.chmod(f, 0o644),
        "setfattr": lambda: os.setxattr(f, "user.artfs.description", b"x"),
        "symlink": lambda: os.symlink("notes.txt", os.path.join(v0, "link")),
        "create-in-artifact": lambda: open(mnt.path("proj", "data", "file"), "w"),
        "rmdir": lambda: os.rmdir(os.path.join(v0, "bin")),
    }
    with pytest.raises(OSError) as e:
        ops[op]()
    assert e.value.errno == errno.EROFS
    assert open(f).read() == "hello artfs\n"
    r = subprocess.run(["touch", os.path.join(v0, "x")], capture_output=True)
    assert r.returncode != 0 and b"Read-only file system" in r.stderr


def test_invalid_and_missing_names(mnt):
    for p in [(".hidden",), ("proj", "no such"), ("proj", "data", "v01"), ("proj", "data", "v7"),
              ("proj", "data", "v0", "nope"), ("proj", "data", "v0", "notes.txt", "x")]:
        with pytest.raises(OSError) as e:
            os.stat(mnt.path(*p))
        assert e.value.errno in (errno.ENOENT, errno.ENOTDIR), p


def test_large_directory_listing(reader, src):
    train = reader.path("proj", "data", "v0", "images", "train")
    names = os.listdir(train)
    assert len(names) == len(set(names)) == 300
    assert sorted(names) == sorted(os.listdir(src / "images" / "train"))
    with os.scandir(train) as it:
        assert sum(1 for e in it if e.is_file()) == 300


def test_page_cache_kept_across_opens(reader):
    f = reader.path("proj", "data", "v0", "weights.bin")
    open(f, "rb").read()
    reads = reader.stats()["reads"]
    for _ in range(3):
        open(f, "rb").read()
    assert reader.stats()["reads"] == reads  # served from the page cache (keep_cache)


@pytest.mark.slow
def test_many_entries(tmp_path):
    """200,000 entries (one directory of 50,000): listings are complete, memory stays small."""
    from artfs import Entry, digest_bytes

    blob = tmp_path / "blob"
    blob.write_bytes(b"same bytes\n")
    d = digest_bytes(b"same bytes\n")
    paths = [f"flat/{i:06d}.txt" for i in range(50_000)]
    paths += [f"tree/{i % 50:02d}/{i % 13:02d}/{i:06d}.txt" for i in range(150_000)]
    store = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "wc")))
    store.commit("proj", "many", type="dataset", entries=[Entry(p, d, 11) for p in paths], sources={d: str(blob)})
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mc") as m:
        v0 = m.path("proj", "many", "v0")
        rss0 = _rss(m.pid)
        t0 = time.monotonic()
        names = os.listdir(os.path.join(v0, "flat"))
        first = time.monotonic() - t0  # includes loading the manifest and building the index
        assert len(names) == len(set(names)) == 50_000 and min(names) == "000000.txt"
        out = _run("find", v0, "-type", "f").stdout
        assert out.count(b"\n") == 200_000
        assert open(os.path.join(v0, "tree", "07", "07", "000007.txt")).read() == "same bytes\n"
        grown = _rss(m.pid) - rss0
        print(f"200k entries: first listing {first:.2f} s, daemon RSS +{grown / 1e6:.0f} MB")
        assert grown < 200_000 * 1024  # well under 1 KB per entry, even with the kernel's inode refs


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_cache_size_is_enforced_while_mounted(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.bin").write_bytes(os.urandom(4 * MiB))
    store = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "wc")))
    _log(store, src)
    cache = Cache(str(tmp_path / "mc"))
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mc", args=["--cache-size", "9M"]) as m:
        held = open(m.path("proj", "data", "v0", "f0.bin"), "rb")  # the oldest, but open: never evicted
        try:
            assert held.read() == (src / "f0.bin").read_bytes()
            for i in range(1, 4):
                assert _sha(m.path("proj", "data", "v0", f"f{i}.bin")) == _sha(src / f"f{i}.bin")
            _wait_for(lambda: cache.info().bytes + cache.info().partial_bytes <= 9 * MiB, 10.0)
            assert os.path.exists(cache.path(os.getxattr(held.name, "user.artfs.digest").decode()))
            os.posix_fadvise(held.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            held.seek(0)
            assert held.read() == (src / "f0.bin").read_bytes()
        finally:
            held.close()
        assert "cache: evicted" in m.log


def test_references_read_through_the_mount(tmp_path):
    """An entry whose bytes stay on an HTTP server reads like any file, pinned to what was recorded."""
    from refservers import FileServer

    data = os.urandom(3 * MiB + 5)
    with FileServer({"m/model.bin": data}) as srv:
        store = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "wc")))
        art = Artifact("refs", type="model")
        art.add_reference(srv.url_of("m/model.bin"), name="model.bin")
        store.log_artifact(art, project="proj")
        with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mc") as m:
            f = m.path("proj", "refs", "v0", "model.bin")
            assert os.path.getsize(f) == len(data)
            assert os.getxattr(f, "user.artfs.ref").decode() == srv.url_of("m/model.bin")
            assert _sha(f) == hashlib.sha256(data).hexdigest()
            srv.set("m/model.bin", os.urandom(len(data)))  # changed behind our back
            fd = os.open(f, os.O_RDONLY)
            try:
                # read whole, it is in the cache (like a blob): still exactly the recorded bytes;
                # bytes not cached yet give EIO (tests/test_mount_refs.py)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                assert os.pread(fd, 4096, MiB) == data[MiB : MiB + 4096]
            finally:
                os.close(fd)


# -- a changing store ----------------------------------------------------------------------------
def _wait_for(cond, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
    return time.monotonic() - t0


def test_new_versions_and_alias_moves_show_up(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one\n")
    store = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "wc")))
    _log(store, src)
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mc", args=["--refresh", "1"]) as m:
        art = m.path("proj", "data")
        assert open(os.path.join(art, "latest", "a.txt")).read() == "one\n"
        (src / "a.txt").write_text("two\n")
        _log(store, src)
        # the periodic refresh or the next stale lookup sees it within the interval (plus slack)
        _wait_for(lambda: os.readlink(os.path.join(art, "latest")) == "v1", 3.0)
        assert open(os.path.join(art, "latest", "a.txt")).read() == "two\n"
        assert sorted(os.listdir(art)) == ["draft", "latest", "v0", "v1"]

        store.set_alias("proj", "data", "best", 0)
        _wait_for(lambda: os.path.islink(os.path.join(art, "best")), 3.0)
        assert os.readlink(os.path.join(art, "best")) == "v0"
        store.set_alias("proj", "data", "best", 1)
        _wait_for(lambda: os.readlink(os.path.join(art, "best")) == "v1", 3.0)
        store.remove_alias("proj", "data", "best")
        _wait_for(lambda: not os.path.lexists(os.path.join(art, "best")), 3.0)

        # a version logged just now is reachable by name at once (a miss re-lists the artifact)
        (src / "a.txt").write_text("three\n")
        _log(store, src)
        assert open(os.path.join(art, "v2", "a.txt")).read() == "three\n"
        # new artifacts and projects appear too
        _log(store, src, "other")
        _wait_for(lambda: "other" in os.listdir(m.path("proj")), 3.0)

        store.delete_version("proj", "data", 0)
        _wait_for(lambda: "v0" not in os.listdir(art), 3.0)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not us has exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


# -- unmounting ----------------------------------------------------------------------------------
def test_artfs_mount_and_umount_cli(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("cli\n")
    store = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "wc")))
    _log(store, src)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "ARTFS_CACHE_DIR": str(tmp_path / "mc"), "XDG_STATE_HOME": str(tmp_path / "state")}
    cli = [sys.executable, "-m", "artfs.cli"]
    try:
        r = subprocess.run([*cli, "mount", store.url.removeprefix("file://"), str(mnt), "--refresh", "1"],
                           env=env, capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)  # mounted when the command returns
        assert open(mnt / "proj" / "data" / "latest" / "a.txt").read() == "cli\n"
        pid = int(os.getxattr(mnt, "user.artfs.pid"))
        r = subprocess.run([*cli, "umount", str(mnt)], env=env, capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert not is_mounted(mnt)
        assert not _alive(pid)  # the daemon has exited when umount returns
        log = (tmp_path / "state" / "artfs").glob("mount-*.log")
        assert "unmounted" in next(log).read_text()
        r = subprocess.run([*cli, "umount", str(mnt)], env=env, capture_output=True, timeout=30)
        assert r.returncode != 0 and b"not mounted" in r.stderr

        # mount(8)'s helper, as fstab uses it: its own options are ignored, artfs's applied
        helper = os.path.join(os.path.dirname(sys.executable), "mount.artfs")
        opts = "rw,nodev,nosuid,_netdev,x-systemd.automount,cache_size=1G,refresh=2,timeout=7"
        r = subprocess.run([helper, store.url, str(mnt), "-o", opts], env=env, capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)
        with open(f"/proc/{int(os.getxattr(mnt, 'user.artfs.pid'))}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
        assert b"--cache-size" in cmdline and b"7.0" in cmdline and b"2.0" in cmdline
        r = subprocess.run([*cli, "umount", str(mnt)], env=env, capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert not is_mounted(mnt)
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)])


def test_sigterm_unmounts_and_systemd_is_notified(tmp_path):
    import socket

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("x\n")
    store = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "wc")))
    _log(store, src)
    sock_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(10)
        env = {**os.environ, "NOTIFY_SOCKET": sock_path}
        with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mc", env=env) as m:
            assert sock.recv(4096).startswith(b"READY=1")
            m.proc.send_signal(signal.SIGTERM)
            assert m.proc.wait(10) == 0
            assert not is_mounted(m.mountpoint)
            assert sock.recv(4096) == b"STOPPING=1"
            assert "got SIGTERM" in m.log and "unmounted" in m.log


def test_mount_errors_are_reported(tmp_path):
    env = {**os.environ, "ARTFS_CACHE_DIR": str(tmp_path / "mc"), "XDG_STATE_HOME": str(tmp_path / "state")}
    r = subprocess.run([sys.executable, "-m", "artfs.cli", "mount", str(tmp_path / "store"), str(tmp_path / "nope")],
                       env=env, capture_output=True, timeout=30)
    assert r.returncode != 0 and b"does not exist" in r.stderr


def test_read_only_option(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("ro\n")
    store = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "wc")))
    _log(store, src)
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mc", args=["-o", "ro,nodev,_netdev"]) as m:
        with open("/proc/self/mountinfo") as f:
            line = next(ln for ln in f if f" {m.mountpoint} " in ln)
        assert " ro," in line or " ro " in line
        with pytest.raises(OSError) as e:
            os.mkdir(m.path("proj", "x"))
        assert e.value.errno == errno.EROFS


# -- S3 ------------------------------------------------------------------------------------------
def test_s3_mount_reads(s3_url, tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "w.bin").write_bytes(os.urandom(5 * MiB + 3))
    (src / "t.txt").write_text("s3\n")
    store = Store(s3_url, cache=Cache(str(tmp_path / "wc")))
    _log(store, src)
    with MountProcess(s3_url, tmp_path / "mnt", cache_dir=tmp_path / "mc") as m:
        v = m.path("proj", "data", "latest")
        assert _sha(os.path.join(v, "d", "w.bin")) == _sha(src / "d" / "w.bin")
        assert open(os.path.join(v, "t.txt")).read() == "s3\n"
        assert m.stats()["backend"]["range"] >= 1


@pytest.mark.timeout(90)
def test_store_going_down_gives_eio_not_a_hang(tmp_path):
    """Kill a private S3 server mid-read: uncached chunks fail with EIO within --timeout, cached ones read."""
    from artfs.backends.s3 import S3Backend

    SIZE = 16 * MiB

    server = S3Server(use_env=False)
    endpoint = server.__enter__()
    try:
        env = {k: v for k, v in os.environ.items() if k not in CONFLICTING_ENV}
        env.update(s3_env(endpoint))
        url = "s3://down-test/store"
        saved = {k: os.environ.get(k) for k in (*s3_env(endpoint), *CONFLICTING_ENV)}
        for k in CONFLICTING_ENV:
            os.environ.pop(k, None)
        os.environ.update(s3_env(endpoint))
        try:
            backend = S3Backend(url, endpoint_url=endpoint)
            backend.ensure_bucket()
            store = Store(backend=backend, cache=Cache(str(tmp_path / "wc")))
            src = tmp_path / "src"
            src.mkdir()
            data = os.urandom(SIZE)
            (src / "big.bin").write_bytes(data)
            _log(store, src)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        with MountProcess(url, tmp_path / "mnt", cache_dir=tmp_path / "mc", env=env,
                          args=["--timeout", "5", "--refresh", "1"]) as m:
            art = m.path("proj", "data")
            path = os.path.join(art, "v0", "big.bin")
            fd = os.open(path, os.O_RDONLY)
            try:
                assert os.pread(fd, 65536, 0) == data[:65536]
                time.sleep(1.0)  # read-ahead of the first chunks finishes

                # a store that hangs (stopped, connections accepted but never answered): EIO in time
                os.kill(server.proc.pid, signal.SIGSTOP)
                try:
                    t0 = time.monotonic()
                    with pytest.raises(OSError) as e:
                        os.pread(fd, 65536, SIZE // 2)
                    took = time.monotonic() - t0
                    assert e.value.errno == errno.EIO
                    assert took < 5 + 2, (took, m.log)
                finally:
                    os.kill(server.proc.pid, signal.SIGCONT)
                time.sleep(0.6)  # (a retry right away fails at once: the kernel's own retry does that)
                # a later read of the same bytes retries and works once the store answers again
                assert os.pread(fd, 65536, SIZE // 2) == data[SIZE // 2 : SIZE // 2 + 65536]

                # a store that is gone (connection refused)
                server.__exit__(None, None, None)
                t0 = time.monotonic()
                with pytest.raises(OSError) as e:
                    os.pread(fd, 65536, SIZE - 2 * MiB)
                assert e.value.errno == errno.EIO
                assert time.monotonic() - t0 < 5 + 3
                assert "unreachable" in m.log or "timed out" in m.log, m.log

                # what is cached stays readable: drop the page cache so the daemon serves it
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                assert os.pread(fd, 65536, 0) == data[:65536]
            finally:
                os.close(fd)
            # listings already known keep working from memory, quickly
            time.sleep(1.2)
            t0 = time.monotonic()
            assert sorted(os.listdir(art)) == ["draft", "latest", "v0"]
            assert time.monotonic() - t0 < 4
            assert m.alive()
        # a new mount while the store is still down: what the cache holds is listed and readable
        with MountProcess(url, tmp_path / "mnt", cache_dir=tmp_path / "mc", env=env,
                          args=["--timeout", "3"]) as m:
            assert "unreachable" in m.log
            with open(m.path("proj", "data", "latest", "big.bin"), "rb") as f:
                assert f.read(65536) == data[:65536]
            assert os.listdir(m.mountpoint) == ["proj"]
    finally:
        server.__exit__(None, None, None)
