"""Cache and verification promises under faults (issue 14, items 1, 2 and 7), on real parts.

* a cache blob changed on disk after it was verified is never served (mount, CLI, API);
* a manifest entry whose size disagrees with its blob is refused everywhere bytes are placed or
  verified, absurd sizes are refused when the manifest is read, and a listed file whose blob is
  missing from the store reads as EIO (with a log line), not ENOENT;
* a file larger than the cache's bound reads through the mount (a bounded window) while other
  cold files stay readable, on a cache that lives on a small tmpfs.

Every mount runs through :class:`artfsd.testing.MountProcess` (always unmounted); the tmpfs is
mounted by the test itself and always unmounted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from artfs import Artifact, Cache, CorruptData, Store
from artfsd.testing import MountProcess

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
]

MiB = 1 << 20


def _log_files(store_url: str, tmp: Path, files: dict[str, bytes], name: str = "data") -> Artifact:
    src = tmp / f"src-{name}"
    for rel, data in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    art = Artifact(name, type="dataset")
    art.add_dir(str(src))
    return Store(store_url, cache=Cache(str(tmp / f"writer-cache-{name}"))).log_artifact(art, project="proj")


def _digest_of(art: Artifact, path: str) -> str:
    d = art.get_path(path).digest
    assert d
    return d


def _wait_for(pred, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _flip_byte(path: str, offset: int) -> None:
    """What a disk error or a stray write does: one byte changed, size and inode kept."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    os.chmod(path, 0o444)


def _sha(p: str) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def _cli(tmp: Path, *args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ARTFS_CACHE_DIR=str(cache))
    env.pop("ARTFS_STORE", None)
    return subprocess.run([sys.executable, "-m", "artfs.cli", *args], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=60)


# -- 1. a blob changed after verification is never served ------------------------------------------
def test_fresh_mount_does_not_serve_a_cache_blob_changed_on_disk(tmp_path, local_url):
    data = os.urandom(3 * MiB + 5)
    art = _log_files(local_url, tmp_path, {"w.bin": data})
    cache = Cache(str(tmp_path / "cache"))
    blob = cache.path(_digest_of(art, "w.bin"))
    with MountProcess(local_url, tmp_path / "mnt", cache_dir=tmp_path / "cache") as m:
        assert Path(m.path("proj/data/latest/w.bin")).read_bytes() == data
        _wait_for(lambda: os.path.exists(blob), "the blob to be verified into the cache")
    _flip_byte(blob, 1 * MiB + 3)
    with MountProcess(local_url, tmp_path / "mnt", cache_dir=tmp_path / "cache") as m:
        assert Path(m.path("proj/data/latest/w.bin")).read_bytes() == data
        log = m.log
    assert "changed on disk after it was verified" in log, log
    with open(blob, "rb") as f:  # fetched again (verified) or gone; never the changed bytes
        assert f.read() == data


def test_get_and_download_do_not_copy_a_cache_blob_changed_on_disk(tmp_path, s3_url):
    # an S3 store: downloads from a local store place its blobs directly (it is its own cache)
    local_url = s3_url
    data = os.urandom(2 * MiB)
    art = _log_files(local_url, tmp_path, {"w.bin": data})
    cache_dir = tmp_path / "cache"
    store = Store(local_url, cache=Cache(str(cache_dir)))
    store.artifact("proj/data:v0").download(str(tmp_path / "out1"))
    blob = store.cache.path(_digest_of(art, "w.bin"))
    _flip_byte(blob, 10)
    store.artifact("proj/data:v0").download(str(tmp_path / "out2"))
    assert (tmp_path / "out2" / "w.bin").read_bytes() == data
    _flip_byte(blob, 20)
    r = _cli(tmp_path, "--store", local_url, "get", "proj/data:v0", "--root", str(tmp_path / "out3"), cache=cache_dir)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out3" / "w.bin").read_bytes() == data


def test_a_touched_but_unchanged_blob_is_still_served_from_the_cache(tmp_path, local_url):
    """Re-verification, not blind dropping: a blob whose stat changed but whose bytes did not
    is hashed once and kept (readable with the store gone)."""
    data = os.urandom(1 * MiB)
    art = _log_files(local_url, tmp_path, {"w.bin": data})
    cache = Cache(str(tmp_path / "cache"))
    blob = cache.path(_digest_of(art, "w.bin"))
    with MountProcess(local_url, tmp_path / "mnt", cache_dir=tmp_path / "cache") as m:
        assert Path(m.path("proj/data/latest/w.bin")).read_bytes() == data
        _wait_for(lambda: os.path.exists(blob), "the blob to be verified into the cache")
    os.utime(blob, (1, 1))  # stat changed, bytes did not
    with MountProcess(local_url, tmp_path / "mnt", cache_dir=tmp_path / "cache") as m:
        v = m.path("proj/data/v0")
        assert os.listdir(v) == ["w.bin"]
        hexpart = blob.rsplit("/", 1)[1]
        in_store = Path(local_url) / "proj" / "blobs" / "xxh128" / hexpart[:2] / hexpart
        in_store.rename(tmp_path / "moved")  # only the cache can serve it now
        assert Path(v, "w.bin").read_bytes() == data


# -- 2. sizes that disagree with their blobs --------------------------------------------------------
def _manifest_path(store_url: str, n: int = 0, artifact: str = "data") -> Path:
    return Path(store_url) / "proj" / "artifacts" / artifact / "versions" / f"{n}.json"


def _set_size(store_url: str, path: str, size: int, artifact: str = "data") -> None:
    mp = _manifest_path(store_url, artifact=artifact)
    doc = json.loads(mp.read_bytes())
    for e in doc["entries"]:
        if e["path"] == path:
            e["size"] = size
    os.chmod(mp, 0o644)
    mp.write_text(json.dumps(doc))


def test_get_download_and_verify_refuse_a_size_that_disagrees_with_the_blob(tmp_path, local_url):
    art = _log_files(local_url, tmp_path, {"a.txt": b"abcd", "b.txt": b"fine"})
    digest = _digest_of(art, "a.txt")
    _set_size(local_url, "a.txt", 12)
    cache_dir = tmp_path / "cache"
    r = _cli(tmp_path, "--store", local_url, "get", "proj/data:v0", "--root", str(tmp_path / "out"), cache=cache_dir)
    assert r.returncode == CorruptData.exit_code, (r.returncode, r.stdout, r.stderr)
    assert "a.txt" in r.stderr and "12" in r.stderr, r.stderr
    assert not (tmp_path / "out" / "a.txt").exists()
    # a second attempt refuses it the same way (a local store's blobs are placed from the store:
    # it is its own cache)
    store = Store(local_url, cache=Cache(str(cache_dir)))
    assert not store.cache.has(digest)
    with pytest.raises(CorruptData, match="a.txt"):
        store.artifact("proj/data:v0").download(str(tmp_path / "out2"))
    assert not (tmp_path / "out2" / "a.txt").exists()
    # a directory holding the blob's 4 bytes does not verify against an entry of 12
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.txt").write_bytes(b"abcd")
    (good / "b.txt").write_bytes(b"fine")
    with pytest.raises(CorruptData, match="a.txt"):
        store.artifact("proj/data:v0").verify(str(good))


@pytest.mark.parametrize("nfiles", [2, 80])  # the per-entry and the bulk manifest readers
def test_absurd_sizes_are_refused_when_the_manifest_is_read(tmp_path, local_url, nfiles):
    files = {f"f{i:03d}.txt": b"x%d" % i for i in range(nfiles)}
    _log_files(local_url, tmp_path, files)
    _set_size(local_url, "f001.txt", 10**18)
    r = _cli(tmp_path, "--store", local_url, "get", "proj/data:v0", "--root", str(tmp_path / "out"), cache=tmp_path / "c1")
    assert r.returncode == CorruptData.exit_code, (r.returncode, r.stdout, r.stderr)
    assert "f001.txt" in r.stderr and "PB" not in r.stderr, r.stderr
    store = Store(local_url, cache=Cache(str(tmp_path / "c2")))
    with pytest.raises(CorruptData, match="f001.txt"):
        store.artifact("proj/data:v0").manifest  # noqa: B018


def test_mount_gives_eio_for_a_listed_file_whose_blob_is_missing(tmp_path, local_url):
    art = _log_files(local_url, tmp_path, {"gone.bin": os.urandom(4096), "ok.txt": b"ok\n"})
    digest = _digest_of(art, "gone.bin")
    hexpart = digest.split(":", 1)[1]
    os.unlink(Path(local_url) / "proj" / "blobs" / "xxh128" / hexpart[:2] / hexpart)
    with MountProcess(local_url, tmp_path / "mnt", cache_dir=tmp_path / "cache") as m:
        v = m.path("proj/data/v0")
        assert sorted(os.listdir(v)) == ["gone.bin", "ok.txt"]
        with pytest.raises(OSError) as ei:
            Path(v, "gone.bin").read_bytes()
        assert ei.value.errno == errno.EIO
        assert Path(v, "ok.txt").read_bytes() == b"ok\n"
        _wait_for(lambda: digest in m.log, "a log line naming the blob")
        assert "missing" in m.log


# -- 7. a file larger than the cache ----------------------------------------------------------------
@pytest.fixture
def small_tmpfs(tmp_path):
    """A 24 MiB tmpfs for the cache: writes beyond it fail with ENOSPC, like a small disk."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "tmpfs"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_mount_streams_a_file_larger_than_the_cache(tmp_path, local_url, small_tmpfs):
    big = os.urandom(56 * MiB + 123)
    small = {f"s{i}.bin": os.urandom(256 * 1024 + i) for i in range(4)}
    _log_files(local_url, tmp_path, {"big.bin": big, **small})
    want_big = hashlib.sha256(big).hexdigest()
    del big
    cache_dir = small_tmpfs / "cache"
    with MountProcess(local_url, tmp_path / "mnt", cache_dir=cache_dir, args=["--cache-size", "16M"]) as m:
        v = m.path("proj/data/v0")
        errors: list[BaseException] = []
        small_read: dict[str, bytes] = {}

        def read_small() -> None:
            try:
                for name in small:
                    small_read[name] = Path(v, name).read_bytes()
            except BaseException as e:  # reported below
                errors.append(e)

        t = threading.Thread(target=read_small)
        t.start()
        assert _sha(os.path.join(v, "big.bin")) == want_big
        t.join(60)
        assert not errors, errors
        assert small_read == small
        # read twice: the second pass streams again, from the store, with the same bytes
        assert _sha(os.path.join(v, "big.bin")) == want_big
        st = os.statvfs(small_tmpfs)
        assert (st.f_blocks - st.f_bfree) * st.f_frsize < 20 * MiB


# -- 7, in process: the lazy reader's streamed entries (local store and moto S3) --------------------
@pytest.fixture(params=["local", "s3"])
def small_store(request, tmp_path):
    """A store whose cache is bounded to 8 MiB: blobs over 4 MiB are streamed."""
    from artfs._lazy import LazyBlobs

    url = str(tmp_path / "store") if request.param == "local" else request.getfixturevalue("s3_url")
    store = Store(url, cache=Cache(str(tmp_path / "cache"), max_size="8M"))
    lb = LazyBlobs(store, chunk_size=256 * 1024, readahead_max=2 * MiB, timeout=30)
    try:
        yield store, lb
    finally:
        lb.close()
        close = getattr(store.backend, "close", None)
        if close is not None:
            close()


def _put_blob(store: Store, data: bytes) -> str:
    from artfs import digest_bytes
    from artfs._layout import blob_key

    d = digest_bytes(data)
    store.backend.put(blob_key("proj", d), data)
    return d


def _cache_bytes(root: str) -> int:
    """Bytes the cache directory holds on disk (allocated blocks, so sparse files count as such)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for fn in files:
            with __import__("contextlib").suppress(FileNotFoundError):
                total += os.stat(os.path.join(dirpath, fn)).st_blocks * 512
    return total


def _tmp_bytes(root: str) -> int:
    """Allocated bytes of files open in this process under the cache's tmp/ (unnamed ones too)."""
    total = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(os.path.join(root, "tmp")):
                total += os.stat(f"/proc/self/fd/{fd}").st_blocks * 512
        except OSError:
            continue
    return total


def test_a_blob_larger_than_the_cache_streams_through_a_bounded_window(small_store):
    store, lb = small_store
    data = os.urandom(24 * MiB + 77)
    d = _put_blob(store, data)
    peak = 0
    with lb.open("proj", d, len(data)) as h:
        for _ in range(2):  # twice: the second pass fetches again, nothing was kept
            got = bytearray()
            off = 0
            while off < len(data):
                b = h.read(off, 128 * 1024)
                got += b
                off += len(b)
                if off % (2 * MiB) < 128 * 1024:
                    peak = max(peak, _tmp_bytes(store.cache.root) + _cache_bytes(store.cache.root))
            assert bytes(got) == data
    lb.drain(10)
    assert peak <= 6 * MiB, peak  # the window (2 MiB) plus read-ahead in flight, never the blob
    assert not store.cache.has(d)  # too large to keep: not a cache blob
    assert _cache_bytes(store.cache.root) < 1 * MiB and _tmp_bytes(store.cache.root) == 0


def test_a_streamed_blob_that_does_not_match_its_digest_fails_at_the_end(small_store):
    store, lb = small_store
    data = os.urandom(12 * MiB)
    d = _put_blob(store, data)
    from artfs._layout import blob_key

    bad = bytearray(data)
    bad[5 * MiB] ^= 0xFF
    store.backend.put(blob_key("proj", d), bytes(bad))  # same key, other bytes: a damaged store
    with lb.open("proj", d, len(data)) as h:
        with pytest.raises(CorruptData, match="does not match its digest|failed verification"):
            off = 0
            while off < len(data):
                off += len(h.read(off, 256 * 1024))


def test_every_pass_over_a_streamed_blob_is_verified(small_store):
    """A second pass starts with the end of the first still in the window: those chunks make
    room without giving up verifying the new pass, so a blob damaged in the store in between
    fails at the end of the second pass too."""
    store, lb = small_store
    data = os.urandom(12 * MiB)
    d = _put_blob(store, data)
    from artfs._layout import blob_key

    with lb.open("proj", d, len(data)) as h:
        got = bytearray()
        while len(got) < len(data):
            got += h.read(len(got), 256 * 1024)
        assert got == data
        bad = bytearray(data)
        bad[5 * MiB] ^= 0xFF
        store.backend.put(blob_key("proj", d), bytes(bad))
        with pytest.raises(CorruptData, match="does not match its digest|failed verification"):
            off = 0
            while off < len(data):
                off += len(h.read(off, 256 * 1024))


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_lazy_reader_refetches_a_blob_changed_after_verification(request, tmp_path, kind, caplog):
    """The rule the mount uses, in process, on both stores: a changed blob is dropped, logged,
    and its bytes come from the store again; an unchanged one is served without the store."""
    from artfs._lazy import LazyBlobs

    url = str(tmp_path / "store") if kind == "local" else request.getfixturevalue("s3_url")
    store = Store(url, cache=Cache(str(tmp_path / "cache")))
    try:
        data = os.urandom(3 * MiB + 1)
        d = _put_blob(store, data)
        with LazyBlobs(store, chunk_size=1 * MiB) as lb:
            with lb.open("proj", d, len(data)) as h:
                assert h.read(0, len(data)) == data
            assert lb.drain(30)
        _wait_for(lambda: store.cache.has(d), "the blob to be verified into the cache")
        with LazyBlobs(store, chunk_size=1 * MiB) as lb:  # unchanged: no store request
            before = store.backend.counter["range"]
            with lb.open("proj", d, len(data)) as h:
                assert h.read(0, len(data)) == data
            assert store.backend.counter["range"] == before
        _flip_byte(store.cache.path(d), 2 * MiB + 9)
        with LazyBlobs(store, chunk_size=1 * MiB) as lb:
            with caplog.at_level("WARNING", logger="artfs.cache"):
                with lb.open("proj", d, len(data)) as h:
                    assert h.read(0, len(data)) == data
            assert store.backend.counter["range"] > before
        assert "changed on disk after it was verified" in caplog.text
    finally:
        close = getattr(store.backend, "close", None)
        if close is not None:
            close()
