"""References and published HTTP stores in a real mount, with real servers on 127.0.0.1.

* ``file://`` references: EACCES unless the mount allows them (``--allow-file``, ``--file-root``),
  even when an allowed mount already put their bytes into the shared cache;
* ``http://`` references (ETag + ranges, and a server without ETag) read lazily through the cache,
  pinned: content changed behind a reference gives EIO, what was cached stays the recorded bytes;
* ``s3://`` references in a versioned bucket (moto) read at their recorded version;
* a local store published with ``python -m http.server`` mounts read-only with ``artfs mount
  http://...`` and shows versions logged afterwards.
"""

from __future__ import annotations

import errno
import filecmp
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from artfs import Artifact, Cache, Store
from artfs._mounts import add_mount_arguments, apply_mount_options, daemon_argv
from artfs._refs import ref_key
from artfsd.testing import MountProcess, is_mounted

from refservers import FileServer, StaticDirServer

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
]

MiB = 1 << 20


def _read(p: str | Path) -> bytes:
    with open(p, "rb") as f:
        return f.read()


def _pread_cold(path: str, n: int, off: int) -> bytes:
    """``n`` bytes at ``off``, asked from the daemon (not the kernel's page cache)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def _wait_for(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def _store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "writer-cache")))


# -- options -------------------------------------------------------------------------------------
def test_file_options_reach_the_daemon():
    import argparse

    p = argparse.ArgumentParser()
    add_mount_arguments(p, daemon=False)
    args = p.parse_args(["s", "/mnt", "--file-root", "/etc", "-o", "file_root=/srv/a,allow_file,ro"])
    apply_mount_options(args)
    assert args.allow_file and args.read_only and args.file_roots == ["/etc", "/srv/a"]
    argv = daemon_argv(args, "s")
    assert "--allow-file" in argv
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--file-root"] == ["/etc", "/srv/a"]
    d = argparse.ArgumentParser()
    add_mount_arguments(d, daemon=True)
    back = d.parse_args(argv)
    assert back.allow_file and back.file_roots == ["/etc", "/srv/a"]
    default = p.parse_args(["s", "/mnt"])
    assert not default.allow_file and default.file_roots == []
    assert "--allow-file" not in daemon_argv(default, "s") and "--file-root" not in daemon_argv(default, "s")


# -- file:// -------------------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.isfile("/etc/hostname") or not os.path.getsize("/etc/hostname"),
                    reason="needs a non-empty /etc/hostname")
def test_file_reference_needs_permission_in_the_mount(tmp_path):
    store = _store(tmp_path)
    art = Artifact("local", type="dataset")
    art.add_reference("file:///etc/hostname")  # allowed at log time: the user's own act
    store.log_artifact(art, project="proj")
    want = _read("/etc/hostname")
    cache = tmp_path / "mc"  # one cache for all three mounts

    # allowed below /etc: byte-identical (and now its bytes are in the shared cache)
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=cache, args=["--file-root", "/etc"]) as m:
        f = m.path("proj", "local", "v0", "hostname")
        assert os.getxattr(f, "user.artfs.ref") == b"file:///etc/hostname"
        assert _read(f) == want
    # --allow-file allows any path (given as -o, as fstab would)
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=cache, args=["-o", "allow_file"]) as m:
        assert _pread_cold(m.path("proj", "local", "v0", "hostname"), 4096, 0) == want
    # not allowed (another root only): EACCES, not the bytes, though the cache holds them
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=cache, args=["--file-root", str(tmp_path)]) as m:
        f = m.path("proj", "local", "v0", "hostname")
        assert os.path.getsize(f) == len(want)  # listing and stat still work
        assert os.getxattr(f, "user.artfs.ref") == b"file:///etc/hostname"
        with pytest.raises(PermissionError) as e:
            _read(f)
        assert e.value.errno == errno.EACCES
        assert "hostname" in m.log and "--allow-file" in m.log and "EACCES" in m.log, m.log
    # no option at all: the same
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mc2") as m:
        with pytest.raises(PermissionError) as e:
            _read(m.path("proj", "local", "v0", "hostname"))
        assert e.value.errno == errno.EACCES

    # artfs get: refused by default, allowed with --file-root / --allow-file
    cli = [sys.executable, "-m", "artfs.cli", "--store", store.url]
    env = {**os.environ, "ARTFS_CACHE_DIR": str(tmp_path / "cli-cache")}
    r = subprocess.run([*cli, "get", "proj/local", "--root", str(tmp_path / "g0")], env=env, capture_output=True,
                       timeout=30)
    assert r.returncode != 0 and b"file" in r.stderr and not (tmp_path / "g0" / "hostname").exists()
    for i, opt in enumerate((["--file-root", "/etc"], ["--allow-file"]), 1):
        r = subprocess.run([*cli, "get", "proj/local", "--root", str(tmp_path / f"g{i}"), *opt], env=env,
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert _read(tmp_path / f"g{i}" / "hostname") == want


# -- http:// -------------------------------------------------------------------------------------
def test_http_references_read_lazily_through_the_cache(tmp_path):
    big = os.urandom(6 * MiB + 123)
    small = os.urandom(300_000)
    with FileServer({"m/big.bin": big}) as srv, FileServer({"plain.bin": small}, etag=False) as plain, \
            FileServer({"live.txt": b"first\n"}) as live:
        store = _store(tmp_path)
        art = Artifact("refs", type="model")
        art.add_reference(srv.url_of("m/big.bin"), name="big.bin")
        art.add_reference(plain.url_of("plain.bin"), name="plain.bin")  # no ETag: a content digest
        art.add_reference(live.url_of("live.txt"), name="live.txt", checksum=False)
        v = store.log_artifact(art, project="proj")
        digest = {e.path: e.digest for e in v.manifest.entries}
        big_entry = next(e for e in v.manifest.entries if e.path == "big.bin")
        assert digest["big.bin"] is None and digest["plain.bin"] is not None
        with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mc") as m:
            f = m.path("proj", "refs", "v0", "big.bin")
            assert os.path.getsize(f) == len(big)
            assert os.getxattr(f, "user.artfs.ref").decode() == srv.url_of("m/big.bin")

            # the first 64 KiB fetch a chunk (and a little read-ahead), not 6 MiB
            srv.requests.clear()
            assert _pread_cold(f, 65536, 0) == big[:65536]
            ranges = [{k.lower(): v for k, v in h.items()}.get("range") for meth, _, h in srv.requests if meth == "GET"]
            assert ranges and all(ranges), ranges  # range GETs only
            spans = [tuple(int(x) for x in r.removeprefix("bytes=").split("-")) for r in ranges]
            fetched = sum(b - a + 1 for a, b in spans)
            assert fetched <= 4 * MiB, fetched
            time.sleep(0.5)  # read-ahead done

            # changed behind the reference: bytes not cached yet give EIO and a log line...
            srv.set("m/big.bin", os.urandom(len(big)))
            with pytest.raises(OSError) as e:
                _pread_cold(f, 4096, 5 * MiB)
            assert e.value.errno == errno.EIO
            assert "changed since it was logged" in m.log and "big.bin" in m.log, m.log
            # ... while what was cached stays exactly the recorded bytes: a partial cache entry keyed
            # by the reference's identity (URI + ETag), since it has no content digest
            assert _pread_cold(f, 65536, 0) == big[:65536]
            assert os.path.exists(tmp_path / "mc" / "partial" / ref_key(big_entry))

            # a whole read of the no-ETag file: byte-identical, verified into a complete cache blob
            p = m.path("proj", "refs", "v0", "plain.bin")
            assert _read(p) == small
            cache = Cache(str(tmp_path / "mc"))
            _wait_for(lambda: os.path.exists(cache.path(digest["plain.bin"])), 5)
            plain.requests.clear()
            assert _pread_cold(p, len(small), 0) == small
            assert plain.requests == []  # served by the cache

            # checksum=False: whatever the server has now
            q = m.path("proj", "refs", "v0", "live.txt")
            assert _read(q) == b"first\n"
            live.set("live.txt", b"second, longer\n")
            assert _read(q) == b"second, longer\n"


# -- s3:// ---------------------------------------------------------------------------------------
def test_s3_references_read_at_their_recorded_version(tmp_path, s3_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    bucket = f"mrefs-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = os.urandom(2 * MiB + 7)
    s3.put_object(Bucket=bucket, Key="data/train.bin", Body=old)
    s3.put_object(Bucket=bucket, Key="data/val.bin", Body=b"val\n")
    plain = f"plain-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=plain)
    s3.put_object(Bucket=plain, Key="m.bin", Body=b"A" * 100_000)

    store = _store(tmp_path)
    art = Artifact("s3refs", type="dataset")
    art.add_reference(f"s3://{bucket}/data", name="data")
    art.add_reference(f"s3://{plain}/m.bin")
    store.log_artifact(art, project="proj")
    s3.put_object(Bucket=bucket, Key="data/train.bin", Body=os.urandom(3 * MiB))  # overwritten
    s3.put_object(Bucket=plain, Key="m.bin", Body=b"B" * 100_000)  # overwritten, nothing pins it

    with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mc") as m:  # AWS_* from the fixture
        d = m.path("proj", "s3refs", "v0")
        assert os.getxattr(os.path.join(d, "data", "train.bin"), "user.artfs.ref").decode() == \
            f"s3://{bucket}/data/train.bin"
        assert os.path.getsize(os.path.join(d, "data", "train.bin")) == len(old)
        assert _read(os.path.join(d, "data", "train.bin")) == old
        assert _read(os.path.join(d, "data", "val.bin")) == b"val\n"
        with pytest.raises(OSError) as e:
            _read(os.path.join(d, "m.bin"))
        assert e.value.errno == errno.EIO


# -- a store published over HTTP -----------------------------------------------------------------
def _log_dir(store: Store, src: Path) -> None:
    art = Artifact("data", type="dataset")
    art.add_dir(str(src))
    store.log_artifact(art, project="proj")


def test_published_store_mounts_read_only(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(os.urandom(3 * MiB + 17))
    (src / "sub" / "notes.txt").write_text("published\n")
    (src / "empty").write_bytes(b"")
    store = _store(tmp_path)
    _log_dir(store, src)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "ARTFS_CACHE_DIR": str(tmp_path / "mc"), "XDG_STATE_HOME": str(tmp_path / "state")}
    cli = [sys.executable, "-m", "artfs.cli"]
    with StaticDirServer(str(tmp_path / "store")) as srv:
        try:
            r = subprocess.run([*cli, "mount", srv.url, str(mnt), "--refresh", "1"], env=env, capture_output=True,
                               timeout=30)
            assert r.returncode == 0, r.stderr
            assert is_mounted(mnt)
            assert os.getxattr(mnt, "user.artfs.store").decode() == srv.url
            assert os.statvfs(mnt).f_flag & os.ST_RDONLY  # read-only without being asked
            art = mnt / "proj" / "data"
            assert sorted(os.listdir(art)) == ["latest", "v0"]  # no draft/
            v0 = art / "v0"
            for rel in ("weights.bin", "sub/notes.txt", "empty"):
                assert filecmp.cmp(src / rel, v0 / rel, shallow=False), rel
            for attempt in (lambda: open(v0 / "new.txt", "wb"), lambda: open(v0 / "weights.bin", "r+b"),
                            lambda: os.mkdir(art / "draft"), lambda: os.mkdir(mnt / "proj" / "other"),
                            lambda: os.unlink(v0 / "empty"), lambda: os.symlink("v0", art / "best")):
                with pytest.raises(OSError) as e:
                    attempt()
                assert e.value.errno == errno.EROFS

            # a version logged to the store afterwards shows up within the refresh interval
            (src / "sub" / "notes.txt").write_text("published again\n")
            _log_dir(store, src)
            _wait_for(lambda: os.readlink(art / "latest") == "v1", 5)
            assert _read(art / "v1" / "sub" / "notes.txt") == b"published again\n"
            assert filecmp.cmp(src / "weights.bin", art / "v1" / "weights.bin", shallow=False)

            r = subprocess.run([*cli, "umount", str(mnt)], env=env, capture_output=True, timeout=30)
            assert r.returncode == 0, r.stderr
            assert not is_mounted(mnt)
            log = next((tmp_path / "state" / "artfs").glob("mount-*.log")).read_text()
            assert "read-only store" in log
        finally:
            if is_mounted(mnt):
                subprocess.run(["fusermount3", "-uz", str(mnt)])
