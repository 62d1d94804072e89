"""Downloads place files of their own (artfs/_place.py): a reflink or a copy, never a hard link.

What a user checks: after ``download``/``get``, writing into a downloaded file changes neither the
store's blob nor the cache's, and both still verify; a corrupted blob is refused, not placed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

import artfs
from artfs._digest import digest_bytes
from artfs._errors import CorruptData
from artfs._place import FICLONE, reflink

FILES = {"a.txt": b"alpha " * 1000, "sub/b.bin": os.urandom(200_000), "sub/deeper/c": b"c"}


def log(store: artfs.Store, src: Path) -> artfs.Artifact:
    for rel, data in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    art = artfs.Artifact("data", type="dataset")
    art.add_dir(str(src))
    return store.log_artifact(art, project="p")


def test_writing_into_a_downloaded_file_leaves_the_blobs_intact(backend_url: str, tmp_path: Path) -> None:
    store = artfs.Store(backend_url, cache=artfs.Cache(str(tmp_path / "cache")))
    v = log(store, tmp_path / "src")
    out = Path(v.download(str(tmp_path / "out")))
    for rel in FILES:
        p = out / rel
        assert p.stat().st_nlink == 1  # a file of its own, not a hard link to a blob
        with open(p, "r+b") as f:  # written in place, as a user edits it
            f.write(b"XX")
    for rel, data in FILES.items():
        d = digest_bytes(data)
        local = store.backend.local_path(f"p/blobs/xxh128/{d[7:9]}/{d[7:]}")
        if local is not None:  # the local store: placed from its blob
            assert digest_bytes(Path(local).read_bytes()) == d
        else:  # S3: placed from the cache
            assert Path(store.cache.path(d)).read_bytes() == data
            assert store.cache.verify(d)
    again = store.artifact("p/data:v0")
    again.verify(again.download(str(tmp_path / "again")))
    # and the edited copy is seen as changed and put right by the next download
    with pytest.raises(CorruptData):
        again.verify(str(out))
    again.verify(again.download(str(out)))


def test_a_corrupted_blob_of_a_local_store_is_refused_and_not_placed(local_url: str, tmp_path: Path) -> None:
    store = artfs.Store(local_url, cache=artfs.Cache(str(tmp_path / "cache")))
    v = log(store, tmp_path / "src")
    d = digest_bytes(FILES["sub/b.bin"])
    blob = Path(store.backend.local_path(f"p/blobs/xxh128/{d[7:9]}/{d[7:]}") or "")
    blob.chmod(0o644)
    blob.write_bytes(b"rot" + FILES["sub/b.bin"][3:])
    for root in ("fresh", "existing"):
        (tmp_path / "existing").mkdir(exist_ok=True)
        (tmp_path / "existing" / "other").write_text("not empty")
        with pytest.raises(CorruptData, match=d):
            v.download(str(tmp_path / root))
        assert not (tmp_path / root / "sub" / "b.bin").exists()
        assert [p.name for p in (tmp_path / root).rglob(".artfs-tmp-*")] == []


@pytest.fixture
def reflink_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a file system with reflinks: ``tmp_path`` where it has them, else (as root) a
    small XFS image mounted on a loop device for the test, unmounted and removed after it."""
    a, b = tmp_path / "probe-a", tmp_path / "probe-b"
    a.write_bytes(b"p" * 4096)
    with open(a, "rb") as fa, open(b, "wb") as fb:
        if reflink(fa.fileno(), fb.fileno(), str(tmp_path)):
            yield tmp_path
            return
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        pytest.fail("needs a file system with reflinks: root and mkfs.xfs (xfsprogs) to make one")
    image, mnt = tmp_path / "xfs.img", tmp_path / "xfs"
    with open(image, "wb") as f:
        f.truncate(320 << 20)  # XFS's smallest, sparse
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True, capture_output=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True, capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_reflinks_where_the_file_system_has_them(reflink_dir: Path) -> None:
    """On a file system with reflinks (btrfs, XFS) the copy shares the blocks and is still a file
    of its own: a write to it leaves the original as it was."""
    a, b = reflink_dir / "a", reflink_dir / "b"
    a.write_bytes(b"x" * 65536)
    with open(a, "rb") as fa, open(b, "wb") as fb:
        assert reflink(fa.fileno(), fb.fileno(), str(reflink_dir))
    assert FICLONE == 0x40049409
    assert b.read_bytes() == a.read_bytes()
    with open(b, "r+b") as f:
        f.write(b"y")
    assert a.read_bytes() == b"x" * 65536
    assert b.read_bytes() == b"y" + b"x" * 65535


def test_a_download_onto_a_reflink_file_system_shares_blocks_and_stays_its_own(reflink_dir: Path) -> None:
    """A local store and the download root on XFS: files are placed by reflink (``filefrag`` says
    shared where it is installed), and writing into one leaves the store's blob verified."""
    store = artfs.Store(str(reflink_dir / "store"), cache=artfs.Cache(str(reflink_dir / "cache")))
    v = log(store, reflink_dir / "src")
    out = reflink_dir / "out"
    v.download(str(out))
    assert (out / "sub" / "b.bin").read_bytes() == FILES["sub/b.bin"]
    if shutil.which("filefrag"):
        frag = subprocess.run(["filefrag", "-v", str(out / "sub" / "b.bin")], capture_output=True, text=True)
        assert "shared" in frag.stdout, frag.stdout
    with open(out / "sub" / "b.bin", "r+b") as f:
        f.write(b"changed")
    fresh = reflink_dir / "again"  # the store's blob is as it was: a new download verifies
    store.artifact("p/data:v0").download(str(fresh))
    assert (fresh / "sub" / "b.bin").read_bytes() == FILES["sub/b.bin"]
    store.artifact("p/data:v0").verify(str(fresh))
