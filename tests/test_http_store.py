"""The read-only HTTP store: a local store published with ``python -m http.server``."""

from __future__ import annotations

import logging
import os

import pytest

from artfs import Artifact, Cache, PermissionDenied, Store
from artfs._index import ROOT_INDEX, artifact_index_key, project_index_key, rebuild_index
from artfs.backends.http import HTTPBackend

from refservers import StaticDirServer


def write(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def log_dir(store, project, name, files, *, aliases=()):
    art = Artifact(name, type="dataset")
    for rel, data in files.items():
        with art.new_file(rel, mode="wb") as f:
            f.write(data)
    return store.log_artifact(art, project=project, aliases=list(aliases))


@pytest.fixture
def published(tmp_path):
    """(local store, served copy's URL, the files of every version) — v0..v2 of cycling/bikes, best -> v1."""
    root = str(tmp_path / "store")
    local = Store(root, cache=Cache(str(tmp_path / "cache-w")))
    versions = []
    for i in range(3):
        files = {"data/train.bin": os.urandom(100_000 + i), "README.md": f"version {i}\n".encode()}
        log_dir(local, "cycling", "bikes", files, aliases=["best"] if i == 1 else ())
        versions.append(files)
    log_dir(local, "cycling", "model", {"model.pt": b"weights"})
    log_dir(local, "other", "thing", {"x": b"x"})
    with StaticDirServer(root) as srv:
        yield local, srv.url, versions


def http_store(url, tmp_path, name="r"):
    """A fresh reader (fresh cache: nothing remembered from earlier reads)."""
    return Store(url, cache=Cache(str(tmp_path / f"cache-{name}")))


def test_lists_and_downloads_byte_identical(published, tmp_path):
    local, url, versions = published
    store = http_store(url, tmp_path)
    assert isinstance(store.backend, HTTPBackend) and store.backend.read_only
    assert store.projects() == ["cycling", "other"]
    assert store.artifacts("cycling") == ["bikes", "model"]
    assert store.versions("cycling", "bikes") == [0, 1, 2]
    assert store.aliases("cycling", "bikes") == {"best": 1, "latest": 2}

    for spec, n in [("cycling/bikes:best", 1), ("cycling/bikes:latest", 2), ("cycling/bikes:v0", 0)]:
        a = store.artifact(spec)
        assert a.version == f"v{n}"
        root = a.download(str(tmp_path / spec.replace("/", "_").replace(":", "_")))
        for rel, data in versions[n].items():
            assert read(os.path.join(root, *rel.split("/"))) == data
        a.verify(root)
    assert store.artifact("cycling/bikes:best").aliases == ["best"]


def test_writes_are_refused(published, tmp_path):
    _, url, _ = published
    store = http_store(url, tmp_path)
    with pytest.raises(PermissionDenied, match="read-only"):
        log_dir(store, "cycling", "bikes", {"new": b"new"})
    with pytest.raises(PermissionDenied):
        store.set_alias("cycling", "bikes", "prod", 0)
    with pytest.raises(PermissionDenied):
        store.delete_version("cycling", "bikes", 0)
    with pytest.raises(PermissionDenied):
        store.backend.put("cycling/x", b"x")
    with pytest.raises(PermissionDenied):
        rebuild_index(store)
    assert store.versions("cycling", "bikes") == [0, 1, 2]


def test_version_logged_after_the_index_is_found_by_probing(published, tmp_path):
    local, url, _ = published
    key = artifact_index_key("cycling", "bikes")
    stale = local.backend.get(key)
    log_dir(local, "cycling", "bikes", {"v3.txt": b"three"})
    log_dir(local, "cycling", "bikes", {"v4.txt": b"four"})
    local.backend.put(key, stale)  # as a racing writer might leave it: says v0..v2
    store = http_store(url, tmp_path)
    assert store.versions("cycling", "bikes") == [0, 1, 2, 3, 4]
    a = store.artifact("cycling/bikes:latest")
    assert a.version == "v4"
    assert read(os.path.join(a.download(str(tmp_path / "out")), "v4.txt")) == b"four"

    # the newest version deleted (a tombstone keeps its number), then v5 logged; index still stale
    local.delete_version("cycling", "bikes", 4)
    log_dir(local, "cycling", "bikes", {"v5.txt": b"five"})
    local.backend.put(key, stale)
    store = http_store(url, tmp_path, "r2")
    assert store.versions("cycling", "bikes") == [0, 1, 2, 3, 5]
    assert store.artifact("cycling/bikes:latest").version == "v5"


def test_indexes_follow_alias_changes_and_deletions(published, tmp_path):
    local, url, _ = published
    local.set_alias("cycling", "bikes", "prod", 0)
    local.remove_alias("cycling", "bikes", "best")
    local.delete_version("cycling", "bikes", 2)
    store = http_store(url, tmp_path)
    assert store.aliases("cycling", "bikes") == {"prod": 0, "latest": 1}
    assert store.versions("cycling", "bikes") == [0, 1]


def test_reindex_rebuilds_deleted_indexes(published, tmp_path):
    local, url, _ = published
    for key in (ROOT_INDEX, project_index_key("cycling"), artifact_index_key("cycling", "bikes"),
                artifact_index_key("cycling", "model")):
        os.unlink(os.path.join(local.backend.root, *key.split("/")))
    store = http_store(url, tmp_path)
    assert store.projects() == []  # no root index: nothing to list (versions would still be probed)
    store.backend.index_ttl = 0
    written = rebuild_index(local)
    assert ROOT_INDEX in written and artifact_index_key("cycling", "bikes") in written
    assert store.projects() == ["cycling", "other"]
    assert store.artifacts("cycling") == ["bikes", "model"]
    assert store.aliases("cycling", "bikes") == {"best": 1, "latest": 2}
    assert rebuild_index(local, "other") == [artifact_index_key("other", "thing"), project_index_key("other"), ROOT_INDEX]


def test_a_failing_index_update_does_not_fail_the_commit(tmp_path, caplog):
    local = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "cache")))
    put = local.backend.put

    def refuse_indexes(key, data, **kw):
        if key.endswith("index.json"):
            raise PermissionError("index not writable")
        return put(key, data, **kw)

    local.backend.put = refuse_indexes  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="artfs.index"):
        v = log_dir(local, "p", "a", {"f": b"1"})
    assert v.version == "v0" and local.versions("p", "a") == [0]
    assert any("reindex" in m for m in caplog.messages)


def test_range_reads_on_a_server_without_range_support(published, tmp_path, caplog):
    local, url, versions = published
    store = http_store(url, tmp_path)
    m = store.manifest("cycling", "bikes", 0)
    (e,) = [e for e in m.entries if e.path == "data/train.bin"]
    key = f"cycling/blobs/xxh128/{e.digest[7:9]}/{e.digest[7:]}"
    with caplog.at_level(logging.WARNING, logger="artfs.http"):
        assert store.backend.get_range(key, 10, 100) == versions[0]["data/train.bin"][10:110]
        assert store.backend.get_range(key, 99_990, 100) == versions[0]["data/train.bin"][99_990:]
    assert len([r for r in caplog.messages if "Range" in r]) == 1
    assert store.backend.head(key).size == e.size
    assert store.backend.head("cycling/blobs/nope") is None
    assert store.backend.head("cycling/artifacts") is None  # a directory is not an object


def test_cli_reindex(published, tmp_path, capsys):
    from artfs import cli

    local, url, _ = published
    os.unlink(os.path.join(local.backend.root, ROOT_INDEX))
    assert http_store(url, tmp_path).projects() == []
    assert cli.main(["--store", local.backend.root, "--cache-dir", str(tmp_path / "c"), "reindex", "cycling"]) == 0
    assert "index files" in capsys.readouterr().out
    assert http_store(url, tmp_path, "r2").projects() == ["cycling", "other"]
    assert cli.main(["--store", url, "--cache-dir", str(tmp_path / "c"), "reindex"]) == 7  # read-only
