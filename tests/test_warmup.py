"""``artfs warmup``: the cache filled ahead of a job, on a local store and on S3 (moto)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from artfs import Artifact, Cache, Store
from artfs._layout import blob_key
from artfs._warmup import warmup
from artfsd.testing import MountProcess


def _version(store_url: str, tmp: Path) -> tuple[Store, dict[str, bytes]]:
    files = {f"train/{i:03d}.png": os.urandom(200 + i) for i in range(120)}
    files.update({f"val/{i:02d}.png": os.urandom(300 + i) for i in range(10)})
    files["train/dup.png"] = files["train/000.png"]  # one blob, two entries
    src = tmp / "src"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    store = Store(store_url, cache=Cache(str(tmp / "cache")))
    art = Artifact("data", type="dataset")
    art.add_dir(str(src))
    store.log_artifact(art, project="p")
    return store, files


def _cached(cache_dir: Path) -> int:
    return sum(len(f) for _, _, f in os.walk(cache_dir / "blobs"))


def test_warmup_fetches_each_missing_blob_once(backend_url, tmp_path):
    store, files = _version(backend_url, tmp_path)
    art = store.artifact("p/data:latest")
    r = warmup(art, ["val"], threads=4)
    assert (r.files, r.blobs, r.fetched) == (10, 10, 10)
    assert _cached(tmp_path / "cache") == 10
    r = warmup(art, threads=4)  # moto answers slowly on a loaded machine: keep it gentle
    assert (r.files, r.blobs, r.fetched) == (131, 130, 120)
    assert r.cached_bytes == sum(len(files[f"val/{i:02d}.png"]) for i in range(10))
    assert warmup(art).fetched == 0
    cache = store.cache
    for e in art.manifest.entries:
        with open(cache.path(e.digest), "rb") as f:
            assert f.read() == files[e.path]


def test_warmup_cli_and_bad_input(tmp_path):
    store, _ = _version(str(tmp_path / "store"), tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
    env.update(ARTFS_STORE=str(tmp_path / "store"), ARTFS_CACHE_DIR=str(tmp_path / "cli-cache"), HOME=str(tmp_path))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "artfs.cli", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    p = run("warmup", "p/data", "train/001.png", "val", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert (doc["files"], doc["fetched"]) == (11, 11)
    p = run("warmup", "p/data", "nope")
    assert p.returncode == 3 and "nope" in p.stderr and "Traceback" not in p.stderr
    p = run("warmup", "p/data", "../etc")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    # a blob that changed in the store is refused and never enters the cache
    art = store.artifact("p/data:latest")
    victim = art.get_path("train/050.png").digest  # not cached by the warmup above
    with open(os.path.join(str(tmp_path / "store"), blob_key("p", victim)), "r+b") as f:
        f.write(b"\0\0\0\0")
    p = run("warmup", "p/data", "train")
    assert p.returncode == 5, p.stderr
    assert "Traceback" not in p.stderr
    assert not Cache(str(tmp_path / "cli-cache")).has(victim)


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
@pytest.mark.timeout(90)
def test_a_warm_mount_reads_without_the_store(tmp_path):
    store_url = str(tmp_path / "store")
    store, files = _version(store_url, tmp_path)
    warmup(store.artifact("p/data:latest"))
    blobs = os.path.join(store_url, "p", "blobs")
    os.rename(blobs, blobs + ".away")  # only the cache can serve them now
    with MountProcess(store_url, tmp_path / "mnt", cache_dir=tmp_path / "cache") as m:
        for rel, data in files.items():
            with open(m.path("p", "data", "v0", rel), "rb") as f:
                assert f.read() == data
        assert m.stats()["backend"].get("range", 0) == 0
