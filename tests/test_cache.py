"""The local cache (artfs._cache): sizes, verified inserts, concurrent fills, LRU cleanup, pins."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from artfs import Cache, CorruptData, ArtfsError, digest_bytes, parse_size


# --------------------------------------------------------------------------------------------
# parse_size
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text,expected",
    [
        ("1024", 1024), (1024, 1024), ("0", 0), ("1K", 1 << 10), ("10 KB", 10 << 10), ("500M", 500 << 20),
        ("500MB", 500 << 20), ("1GB", 1 << 30), ("20G", 20 << 30), ("1.5GiB", 3 << 29), ("2t", 2 << 40),
        ("1gb", 1 << 30), (" 3 MiB ", 3 << 20), ("100B", 100),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.2.3", "10X", "GB", "1 G B", "1e3"])
def test_parse_size_rejects(text):
    with pytest.raises(ArtfsError, match="invalid size"):
        parse_size(text)


# --------------------------------------------------------------------------------------------
# inserting and verifying
# --------------------------------------------------------------------------------------------

def _tmp_with(cache: Cache, data: bytes) -> str:
    p = cache.tmp_path()
    with open(p, "wb") as f:
        f.write(data)
    return p


def test_insert_and_verify(tmp_path):
    cache = Cache(str(tmp_path / "c"), max_size="1G")
    data = b"hello cache"
    d = digest_bytes(data)
    assert not cache.has(d)
    p = cache.insert_file(d, _tmp_with(cache, data))
    assert p == cache.path(d) and cache.has(d)
    assert open(p, "rb").read() == data
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o444, "cached blobs are read-only"
    assert cache.verify(d)
    assert os.listdir(os.path.join(cache.root, "tmp")) == []
    info = cache.info()
    assert (info.blobs, info.bytes) == (1, len(data))


def test_insert_of_wrong_bytes_is_refused(tmp_path):
    cache = Cache(str(tmp_path / "c"), max_size="1G")
    d = digest_bytes(b"expected")
    with pytest.raises(CorruptData):
        cache.insert_file(d, _tmp_with(cache, b"something else"))
    assert not cache.has(d)
    assert os.listdir(os.path.join(cache.root, "tmp")) == []


def test_verify_drops_a_corrupted_blob(tmp_path):
    cache = Cache(str(tmp_path / "c"), max_size="1G")
    data = b"x" * 1000
    d = digest_bytes(data)
    p = cache.insert_file(d, _tmp_with(cache, data))
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.write(b"y")
    assert cache.verify(d) is False
    assert not cache.has(d)
    assert cache.verify(d) is False  # missing is not verified either


def test_copy_verified_refuses_a_corrupted_blob(tmp_path):
    cache = Cache(str(tmp_path / "c"), max_size="1G")
    data = os.urandom(5000)
    d = digest_bytes(data)
    p = cache.insert_file(d, _tmp_with(cache, data))
    cache.copy_verified(d, str(tmp_path / "good"))
    assert (tmp_path / "good").read_bytes() == data
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0")
    with pytest.raises(CorruptData):
        cache.copy_verified(d, str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()
    assert not cache.has(d)


def test_ensure_fetches_once_and_verifies(tmp_path):
    cache = Cache(str(tmp_path / "c"), max_size="1G")
    data = b"payload" * 100
    d = digest_bytes(data)
    calls = []

    def fetch(tmp):
        calls.append(tmp)
        with open(tmp, "wb") as f:
            f.write(data)

    p1 = cache.ensure(d, fetch)
    p2 = cache.ensure(d, fetch)
    assert p1 == p2 and len(calls) == 1
    assert open(p1, "rb").read() == data

    def bad_fetch(tmp):
        with open(tmp, "wb") as f:
            f.write(b"not it")

    d2 = digest_bytes(b"other")
    with pytest.raises(CorruptData):
        cache.ensure(d2, bad_fetch)
    assert not cache.has(d2)
    assert os.listdir(os.path.join(cache.root, "tmp")) == []


def test_insert_bytes_verifies_and_records(tmp_path):
    """A small blob fetched into memory: in place only if it matches, read-only, with its
    verification record (so the mount may serve it without hashing it again)."""
    from artfs.lowlevel import stamp_ok

    cache = Cache(str(tmp_path / "c"), max_size="1G")
    data = os.urandom(100 << 10)
    d = digest_bytes(data)
    p = cache.insert_bytes(d, data)
    assert p == cache.path(d) and cache.has(d)
    assert open(p, "rb").read() == data
    assert os.stat(p).st_mode & 0o777 == 0o444
    fd = os.open(p, os.O_RDONLY)
    try:
        assert stamp_ok(fd, d)
    finally:
        os.close(fd)
    assert cache.insert_bytes(d, data) == p  # again (another fetch of the same blob): same file

    d2 = digest_bytes(b"other")
    with pytest.raises(CorruptData):
        cache.insert_bytes(d2, b"not it")
    assert not cache.has(d2)
    assert os.listdir(os.path.join(cache.root, "tmp")) == []


def test_verification_record_takes_no_disk_block(tmp_path):
    """A cached blob takes the disk its bytes take: its verification record is small enough to
    live in the inode (ext4 with 256-byte inodes keeps up to 56 bytes there; a longer record cost
    every blob a 4 KiB block of its own, written at insert and read back at open)."""
    cache = Cache(str(tmp_path / "c"), max_size="1G")
    for size in (1, 4096, 100 << 10):
        data = os.urandom(size)
        p = cache.insert_bytes(digest_bytes(data), data)
        plain = tmp_path / f"plain{size}"
        plain.write_bytes(data)
        for path in (plain, p):  # blocks allocated (delayed allocation), both alike
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        assert os.stat(p).st_blocks == os.stat(plain).st_blocks, size


def test_a_record_of_the_earlier_form_is_renewed_once(tmp_path):
    """A blob recorded by an earlier artfs (the text form ``<digest> <inode> <size> <mtime_ns>``)
    is not served on that record: it is hashed once, then recorded in the current form."""
    from artfs._cache import STAMP_XATTR, check_blob
    from artfs.lowlevel import stamp_ok

    cache = Cache(str(tmp_path / "c"), max_size="1G")
    data = os.urandom(5000)
    d = digest_bytes(data)
    p = cache.insert_bytes(d, data)
    os.chmod(p, 0o644)
    st = os.stat(p)
    os.setxattr(p, STAMP_XATTR, f"{d} {st.st_ino} {st.st_size} {st.st_mtime_ns}".encode())
    os.chmod(p, 0o444)
    fd = os.open(p, os.O_RDONLY)
    try:
        assert not stamp_ok(fd, d)
        assert check_blob(fd, p, d, len(data))  # hashed: the bytes are right, kept
        assert stamp_ok(fd, d)
    finally:
        os.close(fd)
    assert cache.has(d)


@pytest.mark.timeout(60)
def test_concurrent_ensure_of_one_blob_gives_one_correct_file(tmp_path):
    cache = Cache(str(tmp_path / "c"), max_size="1G")
    data = os.urandom(3 << 20)
    d = digest_bytes(data)
    n = 8
    barrier = threading.Barrier(n)
    results: list[str] = []
    errors: list[BaseException] = []

    def fetch(tmp):
        with open(tmp, "wb") as f:  # slowly, so the fills overlap
            for i in range(0, len(data), 256 << 10):
                f.write(data[i : i + (256 << 10)])
                f.flush()
                time.sleep(0.002)

    def worker():
        try:
            barrier.wait()
            p = cache.ensure(d, fetch)
            with open(p, "rb") as f:  # whoever returns sees a complete file
                assert f.read() == data
            results.append(p)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == [cache.path(d)] * n
    blob_files = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(cache.root, "blobs")) for f in fs]
    assert blob_files == [cache.path(d)]
    assert open(cache.path(d), "rb").read() == data
    assert os.listdir(os.path.join(cache.root, "tmp")) == []


# --------------------------------------------------------------------------------------------
# cleanup
# --------------------------------------------------------------------------------------------

def _fill(cache: Cache, count: int, size: int = 1000) -> list[str]:
    """``count`` blobs, the first one least recently used."""
    digests = []
    now = time.time()
    for i in range(count):
        data = bytes([i]) * size
        d = digest_bytes(data)
        p = cache.insert_file(d, _tmp_with(cache, data))
        os.utime(p, (now - 1000 + i * 10, now - 1000 + i * 10))
        digests.append(d)
    return digests


def test_cleanup_evicts_least_recently_used_first(tmp_path):
    cache = Cache(str(tmp_path / "c"), max_size="1G")
    ds = _fill(cache, 5)
    # using the oldest one makes it the most recent
    cache.ensure(ds[0], lambda tmp: pytest.fail("must not fetch a cached blob"))
    removed, freed = cache.cleanup(2500)
    assert (removed, freed) == (3, 3000)
    assert [cache.has(d) for d in ds] == [True, False, False, False, True]
    assert cache.info().bytes == 2000
    # nothing to do when under the target
    assert cache.cleanup("1M") == (0, 0)
    # the default target is the cache's max_size
    small = Cache(cache.root, max_size=1000)
    assert small.cleanup() == (1, 1000)
    assert [small.has(d) for d in ds] == [True, False, False, False, False]


PIN_SCRIPT = textwrap.dedent(
    """
    import sys
    from artfs import Cache
    cache = Cache(sys.argv[1], max_size="1G")
    with cache.pinned(sys.argv[2]):
        print("pinned", flush=True)
        sys.stdin.readline()
    """
)


@pytest.mark.timeout(60)
def test_cleanup_skips_a_blob_pinned_by_another_process(tmp_path):
    cache = Cache(str(tmp_path / "c"), max_size="1G")
    ds = _fill(cache, 4)
    pinned = ds[0]  # the least recently used: first in line for eviction
    proc = subprocess.Popen([sys.executable, "-c", PIN_SCRIPT, cache.root, pinned],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "pinned"
        removed, freed = cache.cleanup(0)
        assert (removed, freed) == (3, 3000)
        assert cache.has(pinned), "a pinned blob was evicted"
        assert not any(cache.has(d) for d in ds[1:])
        assert open(cache.path(pinned), "rb").read() == bytes([0]) * 1000
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    # released: now it goes
    assert cache.cleanup(0) == (1, 1000)
    assert not cache.has(pinned)


def test_cleanup_removes_old_temp_files(tmp_path):
    cache = Cache(str(tmp_path / "c"), max_size="1G")
    old = _tmp_with(cache, b"left by a crash")
    fresh = _tmp_with(cache, b"being written right now")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    cache.cleanup()
    assert not os.path.exists(old)
    assert os.path.exists(fresh)


@pytest.mark.timeout(120)
def test_downloads_racing_cleanups_of_a_full_cache_all_succeed(tmp_path):
    # Every download ends with a cleanup; with the cache over its bound, each one evicts what the
    # others just fetched, between their fetch and their copy, and two cleanups race each other.
    import artfs

    store = artfs.Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "c"), max_size=1))
    contents = {}
    for k in range(4):
        art = artfs.Artifact(f"a{k}")
        for j in range(40):
            data = os.urandom(2000)
            contents[(k, f"f{j}")] = data
            with art.new_file(f"f{j}", "wb") as f:
                f.write(data)
        store.log_artifact(art, project="p")
    errors: list[BaseException] = []

    def work(k):
        try:
            for r in range(8):
                root = tmp_path / f"out{k}-{r}"
                store.artifact(f"p/a{k}:v0").download(str(root))
                for j in range(40):
                    assert (root / f"f{j}").read_bytes() == contents[(k, f"f{j}")]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    store.cache.cleanup()
    assert store.cache.info().bytes == 0
    assert os.listdir(os.path.join(store.cache.root, "tmp")) == []
