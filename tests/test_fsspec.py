"""``artfs://`` as an fsspec filesystem (artfs/_fsspec/): paths, reads, pins, transactions, errors.

Real stores (a local directory and S3 on moto), the real fsspec; the data tools that read through
it (pandas, pyarrow, Dask, ...) are in tests/test_fsspec_tools.py.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

fsspec = pytest.importorskip("fsspec")

from artfs import Artifact, Cache, Store  # noqa: E402
from artfs.fsspec import ArtfsFileSystem  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIG = 3 * (1 << 20) + 12345  # larger than the small-file limit: read lazily, chunk by chunk
FILES = {
    "images/0001.png": b"\x89PNG" + os.urandom(5000),
    "images/0002.png": b"\x89PNG" + os.urandom(7000),
    "labels.csv": b"name,label\n0001.png,bicycle\n0002.png,tandem\n",
    "model/weights.bin": os.urandom(BIG),
}


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def log(store: Store, tmp: Path, files: dict[str, bytes], *, aliases: tuple[str, ...] = (),
        name: str = "bike-dataset", project: str = "cycling") -> int:
    src = make_tree(tmp / f"src-{random.randrange(1 << 30)}", files)
    art = Artifact(name, type="dataset")
    art.add_dir(str(src))
    return store.log_artifact(art, project=project, aliases=list(aliases))._version or 0


@pytest.fixture(autouse=True)
def _named_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads in this process are filed under a named run: an automatic one would be finished at
    the exit of the test process, after the S3 server has gone (lineage is tested in subprocesses)."""
    monkeypatch.setenv("ARTFS_RUN_ID", "cycling/fsspec-tests")


@pytest.fixture
def world(backend_url: str, tmp_path: Path) -> tuple[Store, Any]:
    """A store (local or S3) with cycling/bike-dataset v0 (alias best), and a filesystem on it."""
    store = Store(backend_url, cache=Cache(str(tmp_path / "writer-cache")))
    log(store, tmp_path, FILES, aliases=("best",))
    return store, new_fs(backend_url, tmp_path)


def new_fs(url: str, tmp: Path, **options: Any) -> Any:
    options = {"cache_dir": str(tmp / "cache"), "staging_dir": str(tmp / "staging"), **options}
    return fsspec.filesystem("artfs", store=url, skip_instance_cache=True, **options)


def test_the_entry_point_makes_the_protocol_work_with_artfs_merely_installed(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "c1")))
    log(store, tmp_path, FILES)
    code = ("import fsspec, sys\n"
            "with fsspec.open('artfs://cycling/bike-dataset/latest/images/0001.png') as f:\n"
            "    sys.stdout.buffer.write(f.read())\n"
            "print(fsspec.get_filesystem_class('artfs').__module__, file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTFS_")}
    env.update(ARTFS_STORE=str(tmp_path / "store"), ARTFS_CACHE_DIR=str(tmp_path / "c2"), HOME=str(tmp_path))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == FILES["images/0001.png"]
    assert p.stderr.decode().split() == ["artfs._fsspec.filesystem"]


def test_paths_follow_the_mount_layout(world: tuple[Store, Any]) -> None:
    _, fs = world
    assert fs.ls("", detail=False) == ["cycling"]
    assert fs.ls("artfs://cycling", detail=False) == ["cycling/bike-dataset"]
    assert fs.ls("cycling/bike-dataset", detail=False) == ["cycling/bike-dataset/v0", "cycling/bike-dataset/best",
                                                          "cycling/bike-dataset/latest"]
    best = fs.info("cycling/bike-dataset/best")
    assert (best["type"], best["islink"], best["destination"]) == ("directory", True, "cycling/bike-dataset/v0")
    for head in ("cycling/bike-dataset/v0", "cycling/bike-dataset/latest", "cycling/bike-dataset/best",
                 "cycling/bike-dataset:v0", "cycling/bike-dataset:latest", "artfs://cycling/bike-dataset:best"):
        name = head.removeprefix("artfs://")
        assert fs.ls(head, detail=False) == [f"{name}/images", f"{name}/labels.csv", f"{name}/model"]
        for rel, data in FILES.items():
            assert fs.cat_file(f"{head}/{rel}") == data
            assert fs.info(f"{head}/{rel}")["version"] == "cycling/bike-dataset:v0"


def test_listing_find_glob_walk_du_exists(world: tuple[Store, Any]) -> None:
    store, fs = world
    v0 = "cycling/bike-dataset/v0"
    assert fs.find(v0) == [f"{v0}/{r}" for r in sorted(FILES)]
    assert fs.find("cycling/bike-dataset") == [f"{v0}/{r}" for r in sorted(FILES)]  # aliases not walked twice
    assert fs.find(v0, maxdepth=1, withdirs=True) == [v0, f"{v0}/images", f"{v0}/labels.csv", f"{v0}/model"]
    assert fs.glob("cycling/bike-dataset/latest/images/*.png") == [
        "cycling/bike-dataset/latest/images/0001.png", "cycling/bike-dataset/latest/images/0002.png"]
    assert fs.glob("cycling/*/v0/**/*.bin") == [f"{v0}/model/weights.bin"]
    assert fs.glob("cycling/bike-dataset/*") == ["cycling/bike-dataset/best", "cycling/bike-dataset/latest", v0]
    walked = {root: (sorted(dirs), sorted(files)) for root, dirs, files in fs.walk("cycling/bike-dataset:best")}
    assert walked == {"cycling/bike-dataset:best": (["images", "model"], ["labels.csv"]),
                      "cycling/bike-dataset:best/images": ([], ["0001.png", "0002.png"]),
                      "cycling/bike-dataset:best/model": ([], ["weights.bin"])}
    assert fs.du(v0) == sum(map(len, FILES.values()))
    assert fs.du("cycling/bike-dataset/best/images", total=False) == {
        f"cycling/bike-dataset/best/images/{n}": len(FILES[f"images/{n}"]) for n in ("0001.png", "0002.png")}
    assert fs.exists(f"{v0}/labels.csv") and fs.isfile(f"{v0}/labels.csv") and fs.isdir(f"{v0}/images")
    assert not fs.exists(f"{v0}/nope.csv") and not fs.exists("cycling/bike-dataset/v7")
    assert fs.exists("cycling/bike-dataset/latest") and not fs.exists("nosuch")
    m = store.manifest("cycling", "bike-dataset", 0)
    digests = {e.path: e.digest for e in m.entries}
    info = fs.info(f"{v0}/labels.csv")
    assert (info["type"], info["size"], info["digest"]) == ("file", len(FILES["labels.csv"]), digests["labels.csv"])
    assert fs.ukey(f"{v0}/labels.csv") == digests["labels.csv"]
    assert fs.checksum("cycling/bike-dataset/latest/labels.csv") == int(digests["labels.csv"][7:], 16)
    assert fs.created(f"{v0}/labels.csv").timestamp() == pytest.approx(fs.info(v0)["created"])


def test_reads_with_ranges_and_seeks_give_the_stores_bytes(world: tuple[Store, Any]) -> None:
    _, fs = world
    big = FILES["model/weights.bin"]
    path = "cycling/bike-dataset/latest/model/weights.bin"
    rnd = random.Random(7)
    for _ in range(20):
        a = rnd.randrange(len(big))
        b = rnd.randrange(a, len(big) + 10)
        assert fs.cat_file(path, a, b) == big[a:b]
    assert fs.cat_file(path, -100) == big[-100:]
    assert fs.cat_file("cycling/bike-dataset/v0/labels.csv", 5, -3) == FILES["labels.csv"][5:-3]
    with fs.open(path) as f:
        f.seek(len(big) - 1000)
        assert f.read() == big[-1000:]
        f.seek(10)
        assert f.read(10) == big[10:20]
        assert f.tell() == 20
    with fs.open(path, "rb") as f:
        assert f.read() == big
    assert fs.read_text("cycling/bike-dataset/best/labels.csv") == FILES["labels.csv"].decode()


def test_a_blob_complete_in_the_cache_opens_as_the_cache_file(world: tuple[Store, Any]) -> None:
    _, fs = world
    path = "cycling/bike-dataset/v0/model/weights.bin"
    with fs.open(path) as f:  # not cached yet: read through the lazy reader
        assert not hasattr(f, "fileno") or not _is_cache_file(f, fs)
        assert f.read() == FILES["model/weights.bin"]
    fs.blobs.drain(30)  # verification of the complete blob runs in the background
    with fs.open(path) as f:
        assert _is_cache_file(f, fs)
        assert f.read() == FILES["model/weights.bin"]
    with fs.open("cycling/bike-dataset/v0/images/0001.png") as f:  # small: fetched whole, then the cache file
        assert _is_cache_file(f, fs)
        assert f.read() == FILES["images/0001.png"]


def _is_cache_file(f: Any, fs: Any) -> bool:
    try:
        target = os.readlink(f"/proc/self/fd/{f.fileno()}")
    except (OSError, ValueError, AttributeError, NotImplementedError):
        return False
    return target.startswith(os.path.join(fs.store.cache.root, "blobs") + os.sep)


def test_an_alias_stays_pinned_until_the_cache_is_invalidated(world: tuple[Store, Any], tmp_path: Path) -> None:
    store, fs = world
    latest = "cycling/bike-dataset/latest/labels.csv"
    assert fs.cat_file(latest) == FILES["labels.csv"]
    listed = fs.find("cycling/bike-dataset/latest")
    worker = pickle.loads(pickle.dumps(fs))  # what a Dask task or a DataLoader worker gets
    assert worker is not fs
    log(store, tmp_path, {**FILES, "labels.csv": b"name,label\nchanged\n"})  # v1, by another writer
    assert store.aliases("cycling", "bike-dataset")["latest"] == 1
    assert fs.cat_file(latest) == FILES["labels.csv"]  # still v0: one version for the whole job
    assert fs.find("cycling/bike-dataset/latest") == listed
    assert worker.cat_file(latest) == FILES["labels.csv"]
    assert fs.resolve("cycling/bike-dataset:latest") == "cycling/bike-dataset:v0"
    fresh = new_fs(store.url, tmp_path)
    assert fresh.cat_file(latest) == b"name,label\nchanged\n"
    fs.invalidate_cache("cycling/bike-dataset/v0/labels.csv")  # a file's path: pins stay
    assert fs.cat_file(latest) == FILES["labels.csv"]
    fs.invalidate_cache()
    assert fs.cat_file(latest) == b"name,label\nchanged\n"
    assert fs.cat_file("cycling/bike-dataset/v0/labels.csv") == FILES["labels.csv"]


def test_a_transaction_makes_one_version_from_latest_and_the_writes(world: tuple[Store, Any]) -> None:
    store, fs = world
    with fs.transaction:
        with fs.open("cycling/bike-dataset/draft/labels.csv", "wb") as f:
            f.write(b"name,label\n0001.png,unicycle\n")
        fs.pipe_file("cycling/bike-dataset/draft/extra/notes.txt", b"notes\n")
        fs.rm("cycling/bike-dataset/draft/images/0002.png")
        fs.cp_file("cycling/bike-dataset/v0/images/0001.png", "cycling/bike-dataset/draft/images/copy.png")
        assert fs.cat_file("cycling/bike-dataset/draft/extra/notes.txt") == b"notes\n"
        assert "cycling/bike-dataset/draft/images/0002.png" not in fs.find("cycling/bike-dataset/draft")
        assert store.versions("cycling", "bike-dataset") == [0]  # nothing before the end
    [result] = fs.committed
    assert (result.version, result.created, result.uploaded_blobs) == (1, True, 2)  # the copy uploads nothing
    a = store.artifact("cycling/bike-dataset:latest")
    assert a.version == "v1"
    assert sorted(e.path for e in a.manifest.entries) == [
        "extra/notes.txt", "images/0001.png", "images/copy.png", "labels.csv", "model/weights.bin"]
    assert fs.cat_file("cycling/bike-dataset/latest/labels.csv") == b"name,label\n0001.png,unicycle\n"  # pins dropped
    assert fs.cat_file("cycling/bike-dataset/v1/images/copy.png") == FILES["images/0001.png"]
    assert not os.listdir(os.path.join(fs.staging_dir, ".fsspec"))  # staged files gone


def test_a_new_artifact_and_its_description(world: tuple[Store, Any]) -> None:
    store, fs = world
    with fs.transaction:
        fs.describe_draft("cycling/bike-model", type="model", description="first", metadata={"k": 1},
                          aliases=["best"])
        fs.pipe_file("cycling/bike-model/draft/model.h5", b"weights")
    a = store.artifact("cycling/bike-model:best")
    assert (a.version, a.type, a.description, a.metadata) == ("v0", "model", "first", {"k": 1})
    with fs.transaction:  # a draft equal to its base makes no version
        fs.pipe_file("cycling/bike-model/draft/model.h5", b"weights")
    assert [r.created for r in fs.committed] == [False]
    assert store.versions("cycling", "bike-model") == [0]


def test_a_failed_transaction_leaves_no_version_and_no_staged_files(world: tuple[Store, Any]) -> None:
    store, fs = world
    with pytest.raises(RuntimeError, match="half-way"):
        with fs.transaction:
            fs.pipe_file("cycling/bike-dataset/draft/a.txt", b"a")
            with fs.open("cycling/bike-dataset/draft/b.txt", "wb") as f:
                f.write(b"b" * 1000)
                raise RuntimeError("half-way")
    assert store.versions("cycling", "bike-dataset") == [0]
    assert not os.listdir(os.path.join(fs.staging_dir, ".fsspec"))
    assert not fs._intrans
    with pytest.raises(FileNotFoundError, match="only inside a transaction"):
        fs.ls("cycling/bike-dataset/draft")
    with fs.transaction:  # the next transaction starts from latest again, without the failed writes
        assert not fs.exists("cycling/bike-dataset/draft/a.txt")
        fs.pipe_file("cycling/bike-dataset/draft/c.txt", b"c")
    assert store.versions("cycling", "bike-dataset") == [0, 1]
    assert "a.txt" not in {e.path for e in store.manifest("cycling", "bike-dataset", 1).entries}


def test_writes_are_refused_outside_a_draft_and_outside_a_transaction(world: tuple[Store, Any]) -> None:
    store, fs = world
    with pytest.raises(PermissionError, match=r"only inside a transaction: `with fs.transaction"):
        fs.pipe_file("cycling/bike-dataset/draft/x.txt", b"x")
    with fs.transaction:
        for path in ("cycling/bike-dataset/v0/x.txt", "cycling/bike-dataset/latest/x.txt",
                     "cycling/bike-dataset:best/x.txt"):
            with pytest.raises(PermissionError, match="read-only"):
                fs.pipe_file(path, b"x")
            with pytest.raises(PermissionError, match="read-only"):
                fs.rm(path)
        with pytest.raises(PermissionError, match="only files under PROJECT/ARTIFACT/draft/"):
            fs.pipe_file("cycling/x.txt", b"x")
        with pytest.raises(NotImplementedError):
            fs.open("cycling/bike-dataset/draft/labels.csv", "ab")
        with pytest.raises(FileExistsError):
            fs.open("cycling/bike-dataset/draft/labels.csv", "xb")
        with pytest.raises(IsADirectoryError):
            fs.open("cycling/bike-dataset/draft/images", "wb")
        with pytest.raises(FileNotFoundError):
            fs.rm_file("cycling/bike-dataset/draft/nope.txt")
    assert store.versions("cycling", "bike-dataset") == [0]


def test_missing_paths_are_file_not_found_with_a_did_you_mean(world: tuple[Store, Any]) -> None:
    _, fs = world
    cases = {
        "cycling/bike-datset/latest/labels.csv": "did you mean cycling/bike-dataset?",
        "cycling/bike-dataset/lates/labels.csv": "did you mean cycling/bike-dataset:latest?",
        "cycling/bike-dataset/v0/labels.cvs": "did you mean cycling/bike-dataset/v0/labels.csv?",
        "cycling/bike-dataset:best/images/0003.png": "did you mean cycling/bike-dataset:best/images/000",
        "cyclin": "did you mean cycling?",
        "cycling/bike-dataset/v9/labels.csv": "cycling/bike-dataset:v9: no such version; it has v0",
    }
    for path, hint in cases.items():
        for call in (fs.info, fs.ls, fs.open, fs.cat_file):
            with pytest.raises(FileNotFoundError) as e:
                call(path)
            assert hint in str(e.value), (call, path, str(e.value))
    with pytest.raises(IsADirectoryError):
        fs.open("cycling/bike-dataset/v0/images")


def test_bad_names_and_traversal_are_refused_before_any_request(world: tuple[Store, Any]) -> None:
    _, fs = world
    before = dict(fs.store.backend.counter)
    for path in ("cycling/../etc/passwd", "cycling/bike-dataset/v0/../../x", "cycling/bike-dataset/v0/a//b",
                 "cycling/bike-dataset/v0/./a", "-x/y", "cycling/bike dataset/v0/a", "cycling/bike-dataset/v01/a",
                 "entity/cycling/bike-dataset:v0/a", "cycling/bike-dataset:/a", "cycling/bike-dataset/v0/a\x00b"):
        for call in (fs.info, fs.ls, fs.open, fs.cat_file, fs.find):
            with pytest.raises(ValueError):
                call(path)
        with fs.transaction:
            with pytest.raises(ValueError):
                fs.pipe_file(path.replace("/v0/", "/draft/"), b"x")
    with pytest.raises(ValueError, match="artfs has no entity"):
        fs.info("entity/cycling/bike-dataset:v0/a")
    assert dict(fs.store.backend.counter) == before


def test_a_store_refusal_is_permission_error(s3_url: str, tmp_path: Path) -> None:
    import boto3

    from artfs._access import set_level

    store = Store(s3_url, cache=Cache(str(tmp_path / "writer-cache")))
    log(store, tmp_path, FILES, project="priv")
    log(store, tmp_path, FILES, project="pub")
    bucket = s3_url[len("s3://"):].split("/", 1)[0]
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1").put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Sid": "Other", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
             "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/elsewhere/*"}]}))
    set_level(store, "pub", "public")
    anon = new_fs(s3_url, tmp_path, no_sign_request=True)
    assert anon.cat_file("pub/bike-dataset/v0/labels.csv") == FILES["labels.csv"]
    with pytest.raises(PermissionError):
        anon.cat_file("priv/bike-dataset/v0/labels.csv")
    with pytest.raises(PermissionError):
        anon.ls("priv/bike-dataset/v0")


def test_references_read_as_in_the_mount(local_url: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "refs", {"a.txt": b"referenced\n"})
    store = Store(local_url, cache=Cache(str(tmp_path / "writer-cache")))
    art = Artifact("refs", type="dataset")
    art.add_reference(f"file://{src}/a.txt", name="a.txt")
    store.log_artifact(art, project="cycling")
    with pytest.raises(PermissionError, match="allow_file"):
        new_fs(local_url, tmp_path).cat_file("cycling/refs/v0/a.txt")
    assert new_fs(local_url, tmp_path, file_roots=[str(src)]).cat_file("cycling/refs/v0/a.txt") == b"referenced\n"
    assert new_fs(local_url, tmp_path, allow_file=True).info("cycling/refs/v0/a.txt")["ref"] == f"file://{src}/a.txt"


def test_group_writes_are_parts_of_one_distributed_version(world: tuple[Store, Any], tmp_path: Path) -> None:
    store, _ = world
    for rank in range(2):  # two processes' filesystems (one writer each)
        fs = new_fs(store.url, tmp_path, group="prep-7", cache_dir=str(tmp_path / f"cache-{rank}"))
        with fs.transaction:
            fs.pipe_file(f"cycling/shards/draft/{rank}/a.txt", f"{rank}a".encode())
        with fs.transaction:  # the same writer again: its part grows
            fs.pipe_file(f"cycling/shards/draft/{rank}/b.txt", f"{rank}b".encode())
        assert [r.group for r in fs.committed] == ["prep-7"]
    assert store.versions("cycling", "shards") == []
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTFS_")}
    env.update(ARTFS_CACHE_DIR=str(tmp_path / "cli-cache"), HOME=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "artfs.cli", "--store", store.url, "finish", "cycling/shards",
                        "--group", "prep-7"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    m = store.manifest("cycling", "shards", 0)
    assert [e.path for e in m.entries] == ["0/a.txt", "0/b.txt", "1/a.txt", "1/b.txt"]


def test_a_forked_worker_reads_the_pinned_version_with_its_own_reader(world: tuple[Store, Any],
                                                                       tmp_path: Path) -> None:
    """A DataLoader worker forked after the parent read: the parent's reader threads do not exist in
    the child, so the child must start its own, and keep the parent's pins."""
    store, _ = world
    fs = new_fs(store.url, tmp_path, timeout=5)
    path = "cycling/bike-dataset/latest/model/weights.bin"
    assert fs.cat_file(path, 0, 10) == FILES["model/weights.bin"][:10]  # the parent's lazy reader runs
    log(store, tmp_path, {**FILES, "model/weights.bin": b"new"})
    r, w = os.pipe()
    with warnings.catch_warnings():  # (Python >= 3.12 warns of fork() in a process with threads: the point here)
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report what it read, then leave without running pytest's exit handlers
        try:
            ok = fs.cat_file(path, BIG - 10000) == FILES["model/weights.bin"][-10000:]  # chunks not fetched yet
            os.write(w, b"ok" if ok else b"wrong bytes")
        except BaseException as e:
            os.write(w, repr(e).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read()
    os.waitpid(pid, 0)
    assert said == b"ok"


def test_a_draft_builds_on_the_newest_version_not_the_pinned_one(world: tuple[Store, Any], tmp_path: Path) -> None:
    store, fs = world
    assert fs.cat_file("cycling/bike-dataset/latest/labels.csv") == FILES["labels.csv"]  # pins latest = v0
    log(store, tmp_path, {**FILES, "labels.csv": b"by another writer\n"})  # v1
    with fs.transaction:
        fs.pipe_file("cycling/bike-dataset/draft/mine.txt", b"mine\n")
    assert fs.committed[0].version == 2
    assert fs.cat_file("cycling/bike-dataset/v2/labels.csv") == b"by another writer\n"  # v1's change kept
    assert fs.cat_file("cycling/bike-dataset/latest/mine.txt") == b"mine\n"


def test_reading_keeps_the_cache_within_its_bound(local_url: str, tmp_path: Path) -> None:
    store = Store(local_url, cache=Cache(str(tmp_path / "writer-cache")))
    files = {f"f/{i:03d}.bin": os.urandom(100 << 10) for i in range(20)}
    log(store, tmp_path, files, name="many")
    fs = new_fs(local_url, tmp_path, cache_size="512KB")
    for rel, data in files.items():
        assert fs.cat_file(f"cycling/many/v0/{rel}") == data
    info = fs.store.cache.info()
    assert info.limit == 512 << 10
    assert info.bytes <= info.limit + (100 << 10)  # the bound, and the file being read when it was kept
    assert fs.cat_file("cycling/many/v0/f/000.bin") == files["f/000.bin"]  # evicted ones are fetched again


def test_a_published_https_store_reads_and_refuses_writes(local_url: str, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from refservers import StaticDirServer

    store = Store(local_url, cache=Cache(str(tmp_path / "writer-cache")))
    log(store, tmp_path, FILES, aliases=("best",))
    with StaticDirServer(local_url) as srv:
        fs = new_fs(srv.url, tmp_path)
        with caplog.at_level("WARNING", logger="artfs.fsspec"):
            assert fs.cat_file("cycling/bike-dataset/best/labels.csv") == FILES["labels.csv"]
            assert fs.find("cycling/bike-dataset/latest/images") == [
                "cycling/bike-dataset/latest/images/0001.png", "cycling/bike-dataset/latest/images/0002.png"]
        assert caplog.records == []  # a read-only store takes no lineage, and is not asked to
        with pytest.raises(PermissionError):
            with fs.transaction:
                fs.pipe_file("cycling/bike-dataset/draft/x.txt", b"x")
    assert store.versions("cycling", "bike-dataset") == [0]


def test_a_transaction_killed_half_way_leaves_no_version_and_its_leftovers_go(world: tuple[Store, Any],
                                                                               tmp_path: Path) -> None:
    store, _ = world
    code = ("import os, signal, fsspec\n"
            f"fs = fsspec.filesystem('artfs', store={store.url!r}, staging_dir={str(tmp_path / 'staging')!r},\n"
            f"                       cache_dir={str(tmp_path / 'cache-k')!r})\n"
            "with fs.transaction:\n"
            "    fs.pipe_file('cycling/bike-dataset/draft/half.txt', b'half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, cwd=tmp_path)
    assert p.returncode == -9, p.stderr.decode()
    staged = tmp_path / "staging" / ".fsspec"
    assert len(os.listdir(staged)) == 1  # what the killed process had staged
    assert store.versions("cycling", "bike-dataset") == [0]
    fs = new_fs(store.url, tmp_path)
    with fs.transaction:
        fs.pipe_file("cycling/bike-dataset/draft/whole.txt", b"whole")
        assert len(os.listdir(staged)) == 1  # only this transaction's own
    assert os.listdir(staged) == []
    assert "half.txt" not in {e.path for e in store.manifest("cycling", "bike-dataset", 1).entries}


def test_the_workers_of_a_job_write_its_record_and_edge_once_and_load_no_boto3(
        s3_url: str, s3_server: str, tmp_path: Path) -> None:
    """Four worker processes of one job (``multiprocessing`` spawned: one process group, fresh
    interpreters) open files of one version through a warm cache: the run's record and the edge's
    two sides are written once, by whichever worker came first, and the record finished by it at
    its exit with the input its marks list: four plain signed PUTs in all and no other request;
    no worker loads boto3 or botocore, and ``used_by`` lists the job's run, finished."""
    from faultproxy import FaultProxy

    store = Store(s3_url, cache=Cache(str(tmp_path / "writer-cache")))
    log(store, tmp_path, FILES)
    warm = new_fs(s3_url, tmp_path, lineage=False)
    paths = [f"cycling/bike-dataset/v0/{p}" for p in sorted(FILES)]
    for p in paths:
        warm.cat_file(p)  # the cache complete: blobs and manifest
    code = ("import multiprocessing, sys\n"
            "def work(path):\n"
            "    import fsspec\n"
            f"    fs = fsspec.filesystem('artfs', store={s3_url!r}, cache_dir={str(tmp_path / 'cache')!r})\n"
            "    fs.cat_file(path)\n"
            "    return sorted(m for m in ('boto3', 'botocore') if m in sys.modules)\n"
            "if __name__ == '__main__':\n"
            "    pool = multiprocessing.get_context('spawn').Pool(4)\n"
            "    print(pool.map(work, sys.argv[1:], chunksize=1))\n"
            "    pool.close()\n"
            "    pool.join()  # the workers exit as they do at the end of an epoch: their exit handlers run\n")
    with FaultProxy(s3_server, seed=25) as proxy:
        env = {k: v for k, v in os.environ.items() if k not in ("ARTFS_RUN_ID", "ARTFS_CACHE_DIR")}
        env.update(ARTFS_S3_ENDPOINT=proxy.url, HOME=str(tmp_path / "home"))
        (tmp_path / "job.py").write_text(code)  # a file: spawned workers import their function from it
        p = subprocess.run([sys.executable, str(tmp_path / "job.py"), *paths[:4]], env=env, capture_output=True,
                           text=True, timeout=120, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == str([[]] * 4)
        assert [(s.method, s.action) for s in proxy.log] == [("PUT", "pass")] * 4
        puts = [s.target.split("/store/", 1)[1] for s in proxy.log]
    [run] = Store(s3_url, cache=Cache(str(tmp_path / "reader-cache"))).artifact("cycling/bike-dataset:v0").used_by()
    assert puts == [f"cycling/runs/{run.id}/run.json", f"cycling/runs/{run.id}/used/cycling/bike-dataset/0",
                    f"cycling/lineage/used/bike-dataset/0/cycling/{run.id}", f"cycling/runs/{run.id}/run.json"]
    assert (run.project, run.state, run.record.inputs) == ("cycling", "finished", ["cycling/bike-dataset:v0"])


def test_a_runs_lock_held_too_long_is_written_beside_and_old_boots_marks_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process of the run that holds its lock (hung on a store that does not answer) delays the
    others' first open by ``LOCK_WAIT`` at most: they then write beside it. A mark, once made, spares
    the next write; marks of an earlier boot are removed when this boot's directory is made."""
    import fcntl

    from artfs._fsspec import lineage

    store = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "cache")))
    old = tmp_path / "cache" / "edges" / "earlier-boot" / "s" / "cycling" / "r0"
    old.mkdir(parents=True)
    monkeypatch.setattr(lineage, "LOCK_WAIT", 0.05)
    where = lineage._marks(store, "cycling", "run1")
    assert where is not None and not old.exists() and os.path.isdir(where)
    held = os.open(os.path.join(where, "lock"), os.O_RDWR | os.O_CREAT)  # its own open file: a lock of its own
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        calls: list[int] = []
        assert lineage._once(store, "cycling", "run1", "used,cycling,a,0", lambda: calls.append(1)) is True
        assert calls == [1]
    finally:
        os.close(held)
    assert lineage._once(store, "cycling", "run1", "used,cycling,a,0", lambda: calls.append(2)) is False
    assert calls == [1]
    assert lineage._marked(store, "cycling", "run1") == {"used": ["cycling/a:v0"]}
