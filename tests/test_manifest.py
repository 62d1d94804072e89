"""Manifests (artfs._manifest): round trip, version digests, and tampered manifests as untrusted input."""

from __future__ import annotations

import json
import os

import pytest

import artfs
from artfs import CorruptData, Entry, InvalidName, InvalidPath, Manifest, digest_bytes
from artfs._manifest import version_digest

D1 = digest_bytes(b"one")
D2 = digest_bytes(b"two")


def make_manifest(entries=None, **kw) -> Manifest:
    entries = entries if entries is not None else [
        Entry("b/two.txt", D2, 3),
        Entry("a.txt", D1, 3, executable=True),
        Entry("données/été.txt", D1, 3),
    ]
    entries = sorted(entries, key=lambda e: e.path)
    fields = dict(project="proj", artifact="art", version=4, type="dataset", entries=entries,
                  digest=version_digest(entries), created="2024-01-01T00:00:00.000Z",
                  description="desc", metadata={"classes": 3, "nested": {"k": [1, 2]}}, run="run-1",
                  commit_id="c0ffee")
    fields.update(kw)
    return Manifest(**fields)


def doc_of(m: Manifest) -> dict:
    return json.loads(m.to_bytes())


# --------------------------------------------------------------------------------------------
# round trip and digests
# --------------------------------------------------------------------------------------------

def test_round_trip():
    m = make_manifest()
    back = Manifest.from_bytes(m.to_bytes())
    assert back == m
    assert [e.path for e in back.entries] == sorted(e.path for e in m.entries)
    assert back.entries[0].executable is True
    assert back.size == 9
    assert back.to_bytes() == m.to_bytes()


def test_round_trip_of_a_reference_entry():
    ref = Entry("images", None, 0, ref="s3://bucket/images", ref_info={"etag": "abc"})
    m = make_manifest([ref])
    assert Manifest.from_bytes(m.to_bytes()).entries == [ref]


def test_version_digest_ignores_order():
    a = [Entry("x", D1, 3), Entry("y", D2, 3)]
    assert version_digest(a) == version_digest(list(reversed(a)))


def test_version_digest_ignores_size_but_changes_with_path_digest_and_exec_bit():
    base = [Entry("x", D1, 3), Entry("y", D2, 3)]
    d = version_digest(base)
    assert version_digest([Entry("x", D1, 999), Entry("y", D2, 3)]) == d  # size follows from the digest
    assert version_digest([Entry("x2", D1, 3), Entry("y", D2, 3)]) != d
    assert version_digest([Entry("x", D2, 3), Entry("y", D2, 3)]) != d
    assert version_digest([Entry("x", D1, 3, executable=True), Entry("y", D2, 3)]) != d
    assert version_digest([Entry("x", D1, 3)]) != d
    assert version_digest([Entry("x", None, 0, ref="s3://b/x"), Entry("y", D2, 3)]) != d
    # moving content between paths is a change too
    assert version_digest([Entry("x", D2, 3), Entry("y", D1, 3)]) != d


# --------------------------------------------------------------------------------------------
# tampered manifests are refused when read
# --------------------------------------------------------------------------------------------

def tampered(mutate) -> bytes:
    doc = doc_of(make_manifest())
    mutate(doc)
    return json.dumps(doc).encode()


def set_path(p):
    def f(doc):
        doc["entries"][0]["path"] = p
    return f


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "a\x00b", "a//b", "", ".", "a/"])
def test_tampered_entry_path_raises_invalid_path(path):
    with pytest.raises(InvalidPath):
        Manifest.from_bytes(tampered(set_path(path)))


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d["entries"].append(dict(d["entries"][0])), id="duplicate-path"),
        pytest.param(lambda d: d["entries"].append({"path": "a.txt/inner", "digest": D1, "size": 1}),
                     id="file-under-file"),
    ],
)
def test_tampered_entry_list_raises_invalid_path(mutate):
    with pytest.raises(InvalidPath):
        Manifest.from_bytes(tampered(mutate))


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d["entries"][0].update(digest="xxh128:../../../etc/passwd"), id="digest-traversal"),
        pytest.param(lambda d: d["entries"][0].update(digest="md5:" + "0" * 32), id="digest-unknown-algo"),
        pytest.param(lambda d: d["entries"][0].update(digest="xxh128:" + "A" * 32), id="digest-uppercase"),
        pytest.param(lambda d: d["entries"][0].update(digest=D1 + "\n"), id="digest-newline"),
        pytest.param(lambda d: d["entries"][0].update(digest=None), id="digest-missing"),
        pytest.param(lambda d: d["entries"][0].update(size=-1), id="size-negative"),
        pytest.param(lambda d: d["entries"][0].update(size="3"), id="size-string"),
        pytest.param(lambda d: d["entries"].__setitem__(0, "a.txt"), id="entry-not-object"),
        pytest.param(lambda d: d.update(entries=5), id="entries-not-list"),
        pytest.param(lambda d: d.update(entries={"a": 1}), id="entries-dict"),
        pytest.param(lambda d: d.update(digest="nope"), id="version-digest"),
        pytest.param(lambda d: d.update(version=-1), id="version-negative"),
        pytest.param(lambda d: d.update(version="3"), id="version-string"),
        pytest.param(lambda d: d.update(version=True), id="version-bool"),
        pytest.param(lambda d: d.update(metadata=[1]), id="metadata-list"),
        pytest.param(lambda d: d.update(format=99), id="format"),
        pytest.param(lambda d: d.pop("version"), id="missing-version"),
    ],
)
def test_tampered_manifest_raises_corrupt_data(mutate):
    with pytest.raises(CorruptData):
        Manifest.from_bytes(tampered(mutate))


@pytest.mark.parametrize("data", [b"", b"not json", b"\xff\xfe", b"[]", b"null", b'"x"'])
def test_garbage_is_corrupt_data(data):
    with pytest.raises(CorruptData):
        Manifest.from_bytes(data)


def test_tampered_project_name_is_refused():
    with pytest.raises((InvalidName, CorruptData)):
        Manifest.from_bytes(tampered(lambda d: d.update(project="../other")))


# --------------------------------------------------------------------------------------------
# the same through a store: a tampered versions/N.json is refused and nothing is written
# --------------------------------------------------------------------------------------------

def _tree(root):
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


@pytest.fixture
def good_store(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"one")
    (src / "b.txt").write_bytes(b"two")
    store = artfs.Store(str(tmp_path / "store"), cache=artfs.Cache(str(tmp_path / "cache")))
    art = artfs.Artifact("art", type="dataset")
    art.add_dir(str(src))
    v0 = store.log_artifact(art, project="proj")
    assert v0.version == "v0"
    return store


def _write_raw_version(store: artfs.Store, n: int, data: bytes) -> None:
    p = os.path.join(store.backend.root, "proj", "artifacts", "art", "versions", f"{n}.json")
    with open(p, "wb") as f:
        f.write(data)


@pytest.mark.parametrize(
    "evil,error",
    [
        ("../escaped.txt", InvalidPath),
        ("../../escaped.txt", InvalidPath),
        ("sub/../../escaped.txt", InvalidPath),
        ("/tmp/escaped.txt", InvalidPath),
        ("a\x00b", InvalidPath),
        ("dup", InvalidPath),
        ("bad-digest", CorruptData),
    ],
)
def test_store_refuses_tampered_manifest(good_store, tmp_path, evil, error):
    store = good_store
    v0 = store.manifest("proj", "art", 0)
    doc = json.loads(v0.to_bytes())
    doc["version"] = 1
    if evil == "dup":
        doc["entries"].append(dict(doc["entries"][0]))
    elif evil == "bad-digest":
        doc["entries"][0]["digest"] = "xxh128:../../../../escaped"
    else:
        doc["entries"][0]["path"] = evil
    _write_raw_version(store, 1, json.dumps(doc).encode())

    work = tmp_path / "work"
    root = work / "download"
    work.mkdir()
    before = _tree(tmp_path)

    # a fresh process (fresh cache) reading the store: every way to name v1 is refused
    reader = artfs.Store(store.url, cache=artfs.Cache(str(tmp_path / "cache2")))
    for spec in ("proj/art:v1", "proj/art:latest", "proj/art"):
        with pytest.raises(error):
            reader.artifact(spec).download(str(root))
    # also the writer process, whose cache knows v0 only
    with pytest.raises(error):
        store.artifact("proj/art:v1").download(str(root))

    after = _tree(tmp_path)
    new = {p for p in after - before if not p.startswith(("cache2", "cache" + os.sep))}
    assert new == set(), f"files written: {new}"
    assert not root.exists()
    assert not (tmp_path / "escaped.txt").exists() and not os.path.exists("/tmp/escaped.txt")

    # the good version is still readable
    out = reader.artifact("proj/art:v0").download(str(tmp_path / "ok"))
    assert sorted(os.listdir(out)) == ["a.txt", "b.txt"]
    assert (tmp_path / "ok" / "a.txt").read_bytes() == b"one"


def test_store_refuses_manifest_that_names_another_version(good_store, tmp_path):
    store = good_store
    # a manifest copied to another number (a replay) is not taken for that version
    data = store.backend.get("proj/artifacts/art/versions/0.json")
    _write_raw_version(store, 7, data)
    reader = artfs.Store(store.url, cache=artfs.Cache(str(tmp_path / "cache2")))
    with pytest.raises(CorruptData, match="v7"):
        reader.artifact("proj/art:v7")
