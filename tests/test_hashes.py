"""The record of what was hashed (artfs/_hashes.py): a re-put reads exactly the files that changed.

What a user checks: ``hashed_files`` of the commit result (``artfs put --json`` prints it) counts
the files read, and the version logged holds the bytes on disk. Files are aged past the
record's granularity before a put that should trust them (the racy-clean rule: a file changed
within a tick of being read is never recorded), by waiting exactly as long as the rule asks.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import artfs
from artfs._digest import digest_bytes
from artfs._hashes import HashRecord, granularity
from artfs.backends.local import STAGE


def age(root: Path) -> None:
    """Wait until every file under ``root`` changed longer ago than the record's granularity."""
    latest = 0
    for p in root.rglob("*"):
        st = p.stat()
        latest = max(latest, max(st.st_mtime_ns, st.st_ctime_ns) + granularity(st))
    while time.time_ns() <= latest:
        time.sleep((latest - time.time_ns()) / 1e9 + 0.001)


def make(root: Path, n: int = 20) -> Path:
    for i in range(n):
        p = root / f"d{i % 3}" / f"f{i:02d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"file %02d\n" % i)
    return root


@pytest.fixture
def store(tmp_path: Path) -> artfs.Store:
    return artfs.Store(str(tmp_path / "store"), cache=artfs.Cache(str(tmp_path / "cache")))


def put(store: artfs.Store, src: Path) -> artfs.Artifact:
    art = artfs.Artifact("data", type="dataset")
    art.add_dir(str(src))
    return store.log_artifact(art, project="p")


def contents(store: artfs.Store, logged: artfs.Artifact) -> dict[str, str]:
    return {e.path: e.digest for e in store.artifact(logged.qualified_name).files()}


def on_disk(src: Path) -> dict[str, str]:
    return {p.relative_to(src).as_posix(): digest_bytes(p.read_bytes()) for p in src.rglob("*") if p.is_file()}


def test_a_re_put_reads_exactly_the_touched_changed_and_replaced_files(store: artfs.Store, tmp_path: Path) -> None:
    src = make(tmp_path / "src")
    age(src)
    v0 = put(store, src)
    assert v0.commit_result is not None and v0.commit_result.hashed_files == 20

    again = put(store, src)
    assert again.commit_result is not None
    assert (again.commit_result.hashed_files, again.commit_result.created, again.version) == (0, False, "v0")

    # touched: same bytes, new mtime -> read again, and the content matches v0
    touched = src / "d0" / "f00.txt"
    os.utime(touched, ns=(time.time_ns(), time.time_ns()))
    age(src)
    r = put(store, src).commit_result
    assert r is not None and (r.hashed_files, r.created, r.version) == (1, False, 0)

    # changed: same size, new bytes, the old mtime put back (only the ctime tells)
    changed = src / "d1" / "f01.txt"
    st = changed.stat()
    changed.write_bytes(b"FILE 01\n")
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert changed.stat().st_mtime_ns == st.st_mtime_ns and changed.stat().st_size == st.st_size
    # replaced: a new file (new inode) renamed over it, same size and mtime as the old one
    replaced = src / "d2" / "f02.txt"
    st = replaced.stat()
    (tmp_path / "new").write_bytes(b"file 2x\n")
    os.utime(tmp_path / "new", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp_path / "new", replaced)
    age(src)
    v1 = put(store, src)
    assert v1.commit_result is not None and v1.commit_result.hashed_files == 2
    assert v1.version == "v1" and contents(store, v1) == on_disk(src)
    assert contents(store, v1)["d1/f01.txt"] == digest_bytes(b"FILE 01\n")

    r = put(store, src).commit_result  # and all of it is recorded again
    assert r is not None and (r.hashed_files, r.version) == (0, 1)


def test_two_files_swapped_by_rename_are_both_read(store: artfs.Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"aaaa")
    (src / "b").write_bytes(b"bbbb")
    age(src)
    put(store, src)
    os.rename(src / "a", src / "t")
    os.rename(src / "b", src / "a")
    os.rename(src / "t", src / "b")
    v = put(store, src)
    assert v.commit_result is not None and v.commit_result.hashed_files == 2
    assert contents(store, v) == {"a": digest_bytes(b"bbbb"), "b": digest_bytes(b"aaaa")}


def test_a_file_changed_just_before_the_put_is_not_recorded(store: artfs.Store, tmp_path: Path) -> None:
    src = make(tmp_path / "src", 3)
    age(src)
    put(store, src)
    fresh = src / "d0" / "f00.txt"
    fresh.write_bytes(b"new 00\n")
    # as if changed within the granularity of the next read (on a loaded machine a real write
    # can age past 0.1 s before the put reads it): an mtime ahead of the clock is as recent
    later = time.time_ns() + 3600 * 10**9
    os.utime(fresh, ns=(later, later))
    record = store.cache.hash_record()
    r = put(store, src).commit_result
    assert r is not None and r.hashed_files == 1
    assert str(fresh) not in record.rows([str(fresh)])  # racy: hashed, not recorded
    assert str(src / "d1" / "f01.txt") in record.rows([str(src / "d1" / "f01.txt")])
    r = put(store, src).commit_result  # still racy: read again
    assert r is not None and r.hashed_files == 1
    os.utime(fresh, ns=(time.time_ns(), time.time_ns()))
    age(src)
    r = put(store, src).commit_result  # aged now: read once more and recorded
    assert r is not None and r.hashed_files == 1
    r = put(store, src).commit_result
    assert r is not None and r.hashed_files == 0


def test_rows_of_deleted_files_are_dropped(store: artfs.Store, tmp_path: Path) -> None:
    src = make(tmp_path / "src", 4)
    age(src)
    put(store, src)
    gone = src / "d0" / "f00.txt"
    gone.unlink()
    record = store.cache.hash_record()
    assert str(gone) in record.rows([str(gone)])
    v = put(store, src)
    assert v.commit_result is not None and v.commit_result.hashed_files == 0
    assert record.rows([str(gone)]) == {}
    assert sorted(contents(store, v)) == sorted(on_disk(src))


def test_add_file_uses_the_record_too(store: artfs.Store, tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(b"weights")
    age(tmp_path)

    def log() -> int:
        art = artfs.Artifact("model", type="model")
        art.add_file(str(f))
        with art.new_file("notes.txt", "w") as n:  # new_file's temp files are never recorded
            n.write("hi")
        r = store.log_artifact(art, project="p").commit_result
        assert r is not None
        return r.hashed_files

    assert log() == 2
    assert log() == 1  # the note is a new temp file each time; the model is not read again


@pytest.mark.parametrize("garbage", [b"this is not a database" * 100, b""])
def test_a_corrupt_record_is_made_anew(store: artfs.Store, tmp_path: Path, garbage: bytes) -> None:
    src = make(tmp_path / "src", 5)
    age(src)
    put(store, src)
    db = Path(store.cache.root) / "hashes.db"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(garbage)
    v = put(store, src)  # no error: the record is a shortcut
    assert v.commit_result is not None and v.commit_result.hashed_files == 5 and v.version == "v0"
    r = put(store, src).commit_result
    assert r is not None and r.hashed_files == 0


def test_a_record_of_another_schema_or_with_bad_rows_is_not_trusted(store: artfs.Store, tmp_path: Path) -> None:
    src = make(tmp_path / "src", 2)
    age(src)
    put(store, src)
    db = str(Path(store.cache.root) / "hashes.db")
    con = sqlite3.connect(db)
    con.execute("UPDATE dirs SET stamps = x'00'")  # a directory's row that does not decode
    con.commit()
    con.close()
    v = put(store, src)
    assert v.commit_result is not None and v.commit_result.hashed_files == 2
    assert contents(store, v) == on_disk(src)
    con = sqlite3.connect(db)
    con.execute("UPDATE dirs SET names = 'text, not a blob'")
    con.commit()
    con.close()
    r = put(store, src).commit_result
    assert r is not None and r.hashed_files == 2
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    r = put(store, src).commit_result
    assert r is not None and r.hashed_files == 2


def test_a_record_locked_by_a_writer_is_read_and_a_put_goes_on(store: artfs.Store, tmp_path: Path) -> None:
    src = make(tmp_path / "src", 3)
    age(src)
    put(store, src)
    holder = sqlite3.connect(str(Path(store.cache.root) / "hashes.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in a long write
    holder.execute("DELETE FROM dirs WHERE 0")
    try:
        (src / "d0" / "f00.txt").write_bytes(b"changed\n")
        age(src)
        v = put(store, src)  # reads the rows (WAL: readers never wait); cannot record, no error
        assert v.commit_result is not None and v.commit_result.hashed_files == 1
        assert contents(store, v) == on_disk(src)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    r = put(store, src).commit_result  # the changed file was not recorded: read once more
    assert r is not None and r.hashed_files == 1
    r = put(store, src).commit_result
    assert r is not None and r.hashed_files == 0


def test_cli_put_json_says_how_many_files_were_read(tmp_path: Path) -> None:
    src = make(tmp_path / "src", 6)
    age(src)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
    env.update(ARTFS_STORE=str(tmp_path / "store"), ARTFS_CACHE_DIR=str(tmp_path / "cache"),
               HOME=str(tmp_path / "home"))

    def cli_put() -> dict[str, object]:
        p = subprocess.run([sys.executable, "-m", "artfs.cli", "put", "-n", "p/data", str(src), "--json"],
                           env=env, capture_output=True, text=True, timeout=60, check=True)
        doc: dict[str, object] = json.loads(p.stdout)
        return doc

    assert cli_put()["hashed_files"] == 6
    (src / "d2" / "f05.txt").write_bytes(b"FILE 05\n")
    age(src)
    doc = cli_put()
    assert (doc["hashed_files"], doc["version"], doc["uploaded_blobs"]) == (1, 1, 1)


# -- the local store's put: each file read once, copied as it is hashed --------------------------------------
def test_a_put_leaves_no_staged_copies_behind(store: artfs.Store, tmp_path: Path) -> None:
    src = make(tmp_path / "src", 8)
    (src / "dup.txt").write_bytes(b"file 00\n")  # the same bytes as d0/f00.txt: one blob
    put(store, src)
    root = Path(store.backend.root)  # type: ignore[attr-defined]

    def strays() -> list[str]:
        return [str(p) for p in root.rglob("*") if p.is_file() and (".tmp" in p.parts or p.name.startswith(STAGE))]

    assert strays() == []
    for p in src.rglob("*.txt"):  # every file read again (new mtimes), every blob already stored
        os.utime(p, ns=(time.time_ns(), time.time_ns()))
    r = put(store, src).commit_result
    assert r is not None and (r.hashed_files, r.created, r.uploaded_blobs) == (9, False, 0)
    assert strays() == []
    with pytest.raises(artfs.InvalidName):  # a commit that fails after the files were staged
        art = artfs.Artifact("data", type="model")  # the artifact is a dataset
        (src / "new.txt").write_bytes(b"new")
        art.add_dir(str(src))
        store.log_artifact(art, project="p")
    assert strays() == []
    v = store.artifact("p/data:latest")
    v.verify(str(v.download(str(tmp_path / "out"))))  # every blob holds its bytes


def test_the_blob_stored_holds_the_bytes_hashed(store: artfs.Store, tmp_path: Path) -> None:
    """A file copied to the store as it is hashed: what the store holds under a digest is what
    was hashed, read once (a file rewritten between a hash and a second read for the upload
    would otherwise be stored under the digest of its old bytes)."""
    src = make(tmp_path / "src", 4)
    v = put(store, src)
    blobs = Path(store.backend.root) / "p" / "blobs"  # type: ignore[attr-defined]
    stored = {p.name: p.read_bytes() for p in blobs.rglob("*") if p.is_file()}
    assert len(stored) == 4
    assert all(digest_bytes(b) == "xxh128:" + name for name, b in stored.items())
    assert sorted(contents(store, v).values()) == sorted("xxh128:" + n for n in stored)


def test_many_blobs_from_recorded_files_go_to_a_new_store_in_one_batch(tmp_path: Path) -> None:
    """Files known to the record are not read; a store lacking their blobs gets copies of them
    (put_files: copied, synced as a batch, then renamed into place)."""
    src = make(tmp_path / "src", 100)
    age(src)
    cache = artfs.Cache(str(tmp_path / "cache"))
    put(artfs.Store(str(tmp_path / "one"), cache=cache), src)
    other = artfs.Store(str(tmp_path / "two"), cache=cache)
    v = put(other, src)
    assert v.commit_result is not None
    assert (v.commit_result.hashed_files, v.commit_result.uploaded_blobs) == (0, 100)
    assert list((tmp_path / "two" / ".tmp").iterdir()) == []
    assert contents(other, v) == on_disk(src)
    v.verify(v.download(str(tmp_path / "out")))


def test_processes_putting_at_once_share_the_record(tmp_path: Path) -> None:
    trees = [make(tmp_path / f"src{i}", 30) for i in range(4)]
    age(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
    env.update(ARTFS_STORE=str(tmp_path / "store"), ARTFS_CACHE_DIR=str(tmp_path / "cache"),
               HOME=str(tmp_path / "home"))

    def start(i: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "artfs.cli", "put", "-n", f"p/data{i}", str(trees[i]),
                                 "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    for expect in (30, 0):  # all at once, twice: every row written by one is trusted by the next
        procs = [start(i) for i in range(4)]
        docs = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            docs.append(json.loads(out))
        assert [d["hashed_files"] for d in docs] == [expect] * 4
    store = artfs.Store(str(tmp_path / "store"), cache=artfs.Cache(str(tmp_path / "cache")))
    for i in range(4):
        assert contents(store, store.artifact(f"p/data{i}:latest")) == on_disk(trees[i])


def test_gc_removes_copies_a_crashed_put_staged_beside_their_blobs(store: artfs.Store, tmp_path: Path) -> None:
    src = make(tmp_path / "src", 3)
    v = put(store, src)
    blob_dir = next(p for p in (Path(store.backend.root) / "p" / "blobs").rglob("*")  # type: ignore[attr-defined]
                    if p.is_file()).parent
    stale, young = blob_dir / f"{STAGE}1-x-1", blob_dir / f"{STAGE}1-x-2"
    stale.write_bytes(b"half")
    young.write_bytes(b"being written")
    os.utime(stale, (1, 1))
    r = store.gc("p")
    assert not stale.exists() and young.exists()  # a young one may be a put running now
    assert r["blobs_removed"] == 0 and contents(store, v) == on_disk(src)
    v.verify(v.download(str(tmp_path / "out")))


def test_large_small_duplicate_and_executable_files_are_stored_as_they_are(store: artfs.Store, tmp_path: Path) -> None:
    """Files larger than one read go through a temp file and become staged copies once hashed;
    two files of the same bytes make one blob; the executable bit is kept; nothing is left over."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    big = os.urandom(300_000)
    (src / "a" / "big.bin").write_bytes(big)
    (src / "a" / "big-again.bin").write_bytes(big)
    (src / "a" / "empty").write_bytes(b"")
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    v = put(store, src)
    assert v.commit_result is not None and v.commit_result.uploaded_blobs == 3
    got = {e.path: (e.digest, e.size, e.entry.executable) for e in v.files()}
    assert got == {"a/big.bin": (digest_bytes(big), len(big), False), "a/big-again.bin": (digest_bytes(big), len(big), False),
                   "a/empty": (digest_bytes(b""), 0, False), "run.sh": (digest_bytes(b"#!/bin/sh\necho hi\n"), 18, True)}
    root = Path(store.backend.root)  # type: ignore[attr-defined]
    assert [p for p in root.rglob("*") if p.is_file() and (".tmp" in p.parts or p.name.startswith(STAGE))] == []
    out = Path(v.download(str(tmp_path / "out")))
    assert (out / "a" / "big.bin").read_bytes() == big and os.access(out / "run.sh", os.X_OK)
    v.verify(str(out))


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 4 MiB tmpfs (needs root), unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_a_put_onto_a_full_disk_fails_and_leaves_nothing_half_written(small_disk: Path, tmp_path: Path) -> None:
    store = artfs.Store(str(small_disk / "store"), cache=artfs.Cache(str(tmp_path / "cache")))
    small = make(tmp_path / "small", 5)
    v0 = put(store, small)
    src = tmp_path / "src"
    for i in range(12):  # 12 x 500 KiB into 4 MiB: the disk fills during the put
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}.bin").write_bytes(os.urandom(500_000))
    for i in range(200):
        (src / "d0" / f"s{i}.txt").write_bytes(b"small %d\n" % i)
    art = artfs.Artifact("data", type="dataset")
    art.add_dir(str(src))
    with pytest.raises((artfs.ArtfsError, OSError)) as e:
        store.log_artifact(art, project="p")
    assert "No space" in str(e.value) or getattr(e.value, "errno", None) == 28, e.value
    root = small_disk / "store"
    assert [p for p in root.rglob("*") if p.is_file() and (".tmp" in p.parts or p.name.startswith(STAGE))] == []
    assert store.versions("p", "data") == [0]  # no version made, the one before intact
    v = store.artifact("p/data:v0")
    v.verify(v.download(str(tmp_path / "out")))
    assert v.digest == v0.digest
