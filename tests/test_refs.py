"""References (``artfs._refs``) against real servers on 127.0.0.1: HTTP, S3 (moto), GCS (emulator), files."""

from __future__ import annotations

import argparse
import logging
import os
import uuid

import boto3
import pytest

from artfs import Artifact, Cache, Entry, Manifest, Store
from artfs._errors import ArtfsError, InvalidPath, NotFound, PermissionDenied, ReferenceChanged
from artfs._manifest import version_digest
from artfs._refs import RefReader, ref_key, resolve_reference
from artfs.cli.references import add_reference_args, add_references_from_args, split_reference_arg

from refservers import FileServer, GCSEmulator


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "cache")))


def log_ref(store, uri, *, name=None, checksum=True, artifact="refs", max_objects=None):
    art = Artifact(artifact, type="dataset")
    art.add_reference(uri, name=name, checksum=checksum, max_objects=max_objects)
    return store.log_artifact(art, project="proj")


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# --------------------------------------------------------------------------------------------
# http(s)://
# --------------------------------------------------------------------------------------------


def test_http_reference_is_logged_and_downloaded_byte_identical(store, tmp_path):
    data = os.urandom(300_000)
    with FileServer({"models/model.bin": data}) as srv:
        v = log_ref(store, srv.url_of("models/model.bin"), name="weights/model.bin")
        (e,) = v.manifest.entries
        assert (e.path, e.size, e.digest, e.ref) == ("weights/model.bin", len(data), None, srv.url_of("models/model.bin"))
        assert e.ref_info["etag"].startswith('"') and "last_modified" in e.ref_info
        assert v.get_path("weights/model.bin").ref() == srv.url_of("models/model.bin")
        # only a HEAD at add time: the content was not downloaded to hash it
        assert [m for m, _, _ in srv.requests] == ["HEAD"]

        # the manifest in the store round-trips with its ref_info
        raw = store.backend.get("proj/artifacts/refs/versions/0.json")
        assert Manifest.from_bytes(raw).entries == [e]

        root = v.download(str(tmp_path / "out"))
        assert read(os.path.join(root, "weights", "model.bin")) == data
        get = [h for m, _, h in srv.requests if m == "GET"][-1]
        assert get.get("If-Match") == e.ref_info["etag"]
        v.verify(root)


def test_http_content_changed_behind_the_reference_is_detected(store, tmp_path):
    data = os.urandom(50_000)
    with FileServer({"d.bin": data}) as srv:
        v = log_ref(store, srv.url_of("d.bin"))
        srv.set("d.bin", os.urandom(len(data)))  # same length, new content and ETag
        with pytest.raises(ReferenceChanged) as ei:
            v.download(str(tmp_path / "out"))
        assert "d.bin" in str(ei.value) and srv.url_of("d.bin") in str(ei.value)
        assert not os.path.exists(tmp_path / "out" / "d.bin")  # nothing else was served
        with RefReader() as r, pytest.raises(ReferenceChanged):
            r.read_range(v.manifest.entries[0], 0, 10)

        # logging the same URI again pins the new object: a new version, readable
        v2 = log_ref(store, srv.url_of("d.bin"))
        assert v2.version == "v1"
        assert read(os.path.join(v2.download(str(tmp_path / "out2")), "d.bin")) == srv.files["d.bin"][0]


def test_http_range_reads(store):
    data = os.urandom(1_000_000)
    with FileServer({"big.bin": data}) as srv:
        (e,) = resolve_reference(srv.url_of("big.bin"))
        with RefReader() as r:
            for off, n in [(0, 1), (0, 4096), (123_457, 65_536), (999_990, 100), (len(data), 10), (5, 0)]:
                assert r.read_range(e, off, n) == data[off : off + n]
        gets = [h for m, _, h in srv.requests if m == "GET"]
        assert all("Range" in h for h in gets) and len(gets) == 4


def test_http_server_without_etag_gets_a_content_digest(store, tmp_path):
    data = os.urandom(200_000)
    with FileServer({"x/y.bin": data}, etag=False) as srv:
        v = log_ref(store, srv.url_of("x/y.bin"))
        (e,) = v.manifest.entries
        assert e.path == "y.bin" and e.size == len(data) and "etag" not in e.ref_info
        assert e.digest is not None  # the protocol gave no identity: hashed once at add time
        root = v.download(str(tmp_path / "out"))
        assert read(os.path.join(root, "y.bin")) == data
        assert store.cache.has(e.digest)  # a reference with a digest is cached like a blob
        with RefReader() as r:
            assert r.read_range(e, 1000, 500) == data[1000:1500]

        srv.set("x/y.bin", os.urandom(len(data)))
        with pytest.raises(ReferenceChanged):
            with RefReader() as r:
                r.download(e, str(tmp_path / "again"))
        with pytest.raises(ReferenceChanged):  # Last-Modified moved: a range read refuses too
            with RefReader() as r:
                r.read_range(e, 0, 10)


def test_http_server_ignoring_range_is_sliced_with_one_warning(caplog):
    data = os.urandom(100_000)
    with FileServer({"f": data}, ranges=False) as srv:
        (e,) = resolve_reference(srv.url_of("f"))
        with caplog.at_level(logging.WARNING, logger="artfs.refs"), RefReader() as r:
            assert r.read_range(e, 10, 20) == data[10:30]
            assert r.read_range(e, 99_990, 20) == data[99_990:]
        assert len([m for m in caplog.messages if "Range" in m]) == 1


def test_http_checksum_false_records_only_the_uri(store, tmp_path):
    with FileServer({"f.txt": b"first"}) as srv:
        v = log_ref(store, srv.url_of("f.txt"), checksum=False)
        (e,) = v.manifest.entries
        assert (e.size, e.digest, e.ref_info) == (0, None, {"checksum": False})
        assert srv.requests == []  # nothing was asked at add time
        srv.set("f.txt", b"second, longer")
        root = v.download(str(tmp_path / "out"))
        assert read(os.path.join(root, "f.txt")) == b"second, longer"  # whatever is there now
        with RefReader() as r:
            assert r.size(e) == len(b"second, longer")


def test_http_reference_that_disappeared(store, tmp_path):
    with FileServer({"gone.bin": b"abc"}) as srv:
        v = log_ref(store, srv.url_of("gone.bin"))
        with srv.lock:
            del srv.files["gone.bin"]
        with pytest.raises(ReferenceChanged):
            v.download(str(tmp_path / "out"))
        with pytest.raises(NotFound):
            resolve_reference(srv.url_of("gone.bin"))


# --------------------------------------------------------------------------------------------
# s3://
# --------------------------------------------------------------------------------------------


@pytest.fixture
def s3(s3_server):
    return boto3.client("s3", endpoint_url=s3_server)


def new_bucket(s3, *, versioned: bool) -> str:
    bucket = f"refs-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def test_s3_versioned_object_is_read_at_its_recorded_version(s3, store, tmp_path):
    bucket = new_bucket(s3, versioned=True)
    old = os.urandom(20_000)
    s3.put_object(Bucket=bucket, Key="data/train.bin", Body=old)
    s3.put_object(Bucket=bucket, Key="data/sub/val.bin", Body=b"val")
    v = log_ref(store, f"s3://{bucket}/data", name="data")
    entries = {e.path: e for e in v.manifest.entries}
    assert sorted(entries) == ["data/sub/val.bin", "data/train.bin"]
    e = entries["data/train.bin"]
    assert e.ref == f"s3://{bucket}/data/train.bin" and e.size == len(old)
    assert e.ref_info["version_id"] and e.ref_info["etag"]

    s3.put_object(Bucket=bucket, Key="data/train.bin", Body=os.urandom(30_000))  # overwritten
    root = v.download(str(tmp_path / "out"))
    assert read(os.path.join(root, "data", "train.bin")) == old
    assert read(os.path.join(root, "data", "sub", "val.bin")) == b"val"
    with RefReader() as r:
        assert r.read_range(e, 100, 50) == old[100:150]

    # a single object resolves with its version id too
    (one,) = resolve_reference(f"s3://{bucket}/data/train.bin")
    assert one.path == "train.bin" and one.size == 30_000 and one.ref_info["version_id"] != e.ref_info["version_id"]


def test_s3_unversioned_overwrite_is_detected(s3, store, tmp_path):
    bucket = new_bucket(s3, versioned=False)
    s3.put_object(Bucket=bucket, Key="m.bin", Body=b"A" * 1000)
    v = log_ref(store, f"s3://{bucket}/m.bin")
    (e,) = v.manifest.entries
    assert "version_id" not in e.ref_info and e.ref_info["etag"]
    with RefReader() as r:
        assert r.read_range(e, 10, 5) == b"AAAAA"
    s3.put_object(Bucket=bucket, Key="m.bin", Body=b"B" * 1000)
    with pytest.raises(ReferenceChanged) as ei:
        v.download(str(tmp_path / "out"))
    assert f"s3://{bucket}/m.bin" in str(ei.value)
    with RefReader() as r, pytest.raises(ReferenceChanged):
        r.read_range(e, 0, 10)


def test_s3_prefix_with_more_objects_than_max_objects_is_refused(s3):
    bucket = new_bucket(s3, versioned=False)
    for i in range(6):
        s3.put_object(Bucket=bucket, Key=f"p/{i}.txt", Body=b"x")
    with pytest.raises(ArtfsError) as ei:
        resolve_reference(f"s3://{bucket}/p/", max_objects=5)
    assert "5" in str(ei.value) and "max_objects" in str(ei.value)
    assert len(resolve_reference(f"s3://{bucket}/p/", max_objects=6)) == 6
    # a versioned bucket counts the same
    vb = new_bucket(s3, versioned=True)
    for i in range(3):
        s3.put_object(Bucket=vb, Key=f"q/{i}", Body=b"1")
        s3.put_object(Bucket=vb, Key=f"q/{i}", Body=b"2")  # old versions are not counted
    assert len(resolve_reference(f"s3://{vb}/q", max_objects=3)) == 3
    with pytest.raises(ArtfsError, match="max_objects=2"):
        resolve_reference(f"s3://{vb}/q", max_objects=2)


def test_s3_listing_with_dotdot_keys_is_refused(s3):
    bucket = new_bucket(s3, versioned=False)
    s3.put_object(Bucket=bucket, Key="p/ok.txt", Body=b"x")
    s3.put_object(Bucket=bucket, Key="p/../../etc/evil", Body=b"x")
    with pytest.raises(InvalidPath):
        resolve_reference(f"s3://{bucket}/p/")


def test_s3_missing_object_or_bucket(s3):
    bucket = new_bucket(s3, versioned=False)
    with pytest.raises(NotFound):
        resolve_reference(f"s3://{bucket}/nothing-here")
    with pytest.raises(NotFound):
        resolve_reference(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x")


# --------------------------------------------------------------------------------------------
# gs://
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gcs_server():
    with GCSEmulator() as gcs:
        yield gcs


@pytest.fixture
def gcs(gcs_server, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    return gcs_server


def test_gcs_object_and_prefix_download_byte_identical(gcs, store, tmp_path):
    bucket = f"b{uuid.uuid4().hex[:10]}"
    gcs.create_bucket(bucket)
    files = {"ds/a b.bin": os.urandom(70_000), "ds/sub/c.txt": b"ccc", "other/x": b"x"}
    for k, d in files.items():
        gcs.upload(bucket, k, d)
    art = Artifact("gcsrefs", type="dataset")
    art.add_reference(f"gs://{bucket}/ds", name="ds")
    art.add_reference(f"gs://{bucket}/other/x")
    v = store.log_artifact(art, project="proj")
    entries = {e.path: e for e in v.manifest.entries}
    assert sorted(entries) == ["ds/a b.bin", "ds/sub/c.txt", "x"]
    assert entries["ds/a b.bin"].ref_info["generation"] and entries["ds/a b.bin"].size == 70_000
    root = v.download(str(tmp_path / "out"))
    for k, d in files.items():
        local = k.replace("other/", "")
        assert read(os.path.join(root, *local.split("/"))) == d
    with RefReader() as r:
        assert r.read_range(entries["ds/a b.bin"], 1000, 100) == files["ds/a b.bin"][1000:1100]

    gcs.upload(bucket, "other/x", b"y")  # a new generation
    with RefReader() as r, pytest.raises(ReferenceChanged):
        r.download(entries["x"], str(tmp_path / "x"))
    with pytest.raises(NotFound):
        resolve_reference(f"gs://{bucket}/missing")


# --------------------------------------------------------------------------------------------
# file://
# --------------------------------------------------------------------------------------------


def test_file_reference_needs_allow_file(store, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(10_000))
    v = log_ref(store, f"file://{src}", name="local")
    entries = {e.path: e for e in v.manifest.entries}
    assert sorted(entries) == ["local/a.txt", "local/sub/b.bin"]
    e = entries["local/a.txt"]
    assert e.digest is not None and e.size == 5 and "mtime_ns" in e.ref_info

    with pytest.raises(PermissionDenied, match="allow_file"):
        v.download(str(tmp_path / "out"))
    root = v.download(str(tmp_path / "out"), allow_file=True)
    assert read(os.path.join(root, "local", "sub", "b.bin")) == (src / "sub" / "b.bin").read_bytes()
    assert read(v.get_path("local/a.txt").download(str(tmp_path / "one"), allow_file=True)) == b"alpha"
    with RefReader(file_roots=[str(src)]) as r:
        assert r.read_range(e, 1, 3) == b"lph"
    with RefReader(file_roots=[str(tmp_path / "elsewhere")]) as r, pytest.raises(PermissionDenied):
        r.read_range(e, 0, 1)

    (src / "a.txt").write_bytes(b"ALPHA")  # same size, new mtime and content
    os.utime(src / "a.txt", ns=(e.ref_info["mtime_ns"] + 10**9,) * 2)
    with RefReader(allow_file=True) as r, pytest.raises(ReferenceChanged):
        r.read_range(e, 0, 5)
    # the recorded bytes are still in the cache (keyed by the recorded digest): served from there
    root = v.download(str(tmp_path / "out3"), allow_file=True)
    assert read(os.path.join(root, "local", "a.txt")) == b"alpha"
    # another machine (a fresh cache) must fetch and finds the change
    other = Store(store.url, cache=Cache(str(tmp_path / "cache2")))
    with pytest.raises(ReferenceChanged):
        other.artifact("proj/refs:v0").download(str(tmp_path / "out4"), allow_file=True)


def test_manifest_referencing_etc_hostname_is_refused_by_default(store, tmp_path):
    # as if written by someone else into a shared store
    e = Entry("hostname", None, 3, ref="file:///etc/hostname", ref_info={"mtime_ns": 0})
    store.commit("proj", "evil", type="dataset", entries=[e], sources={})
    v = store.artifact("proj/evil:latest")
    with pytest.raises(PermissionDenied):
        v.download(str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "hostname")
    # a symlink inside an allowed root does not smuggle it out either
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to("/etc/hostname")
    link = Entry("link", None, 3, ref=f"file://{root}/link", ref_info={"checksum": False})
    with RefReader(file_roots=[str(root)]) as r, pytest.raises(PermissionDenied):
        r.read_range(link, 0, 3)


# --------------------------------------------------------------------------------------------
# entries, manifests, version digests, the CLI helpers
# --------------------------------------------------------------------------------------------


def test_reference_entries_round_trip_and_pin_the_version_digest():
    a = Entry("m.bin", None, 10, ref="s3://b/m.bin", ref_info={"etag": '"1"', "version_id": "v1", "last_modified": "t"})
    b = Entry("m.bin", None, 10, ref="s3://b/m.bin", ref_info={"etag": '"2"', "version_id": "v2", "last_modified": "t"})
    c = Entry("u", None, 0, ref="https://h/u", ref_info={"checksum": False})
    m = Manifest("p", "a", 0, "dataset", [a, c], version_digest([a, c]), "now")
    back = Manifest.from_bytes(m.to_bytes())
    assert back.entries == [a, c] and back.entries[0].ref_info == a.ref_info
    assert version_digest([a]) != version_digest([b])  # another object behind the same URI
    seen = dict(a.ref_info, last_modified="later")
    assert version_digest([a]) == version_digest([Entry("m.bin", None, 10, ref=a.ref, ref_info=seen)])
    assert ref_key(a) != ref_key(b)


def test_add_reference_refuses_duplicates_and_remove_drops_refs(tmp_path):
    (tmp_path / "f").write_bytes(b"1")
    art = Artifact("x")
    art.add_reference(f"file://{tmp_path}/f", name="dir/f")
    with pytest.raises(InvalidPath):
        art.add_reference(f"file://{tmp_path}/f", name="dir/f")
    art.remove("dir")
    art.add_reference(f"file://{tmp_path}/f", name="dir/f")


def test_cli_reference_arguments(tmp_path):
    assert split_reference_arg("images=s3://b/images") == ("images", "s3://b/images")
    assert split_reference_arg("https://h/x?a=b") == (None, "https://h/x?a=b")
    assert split_reference_arg("s3://b/k=v") == (None, "s3://b/k=v")
    parser = argparse.ArgumentParser()
    add_reference_args(parser)
    (tmp_path / "f").write_bytes(b"1")
    (tmp_path / "g").write_bytes(b"2")
    args = parser.parse_args(["--reference", f"data/f=file://{tmp_path}/f", "--reference", f"file://{tmp_path}/g",
                              "--max-objects", "5"])
    art = Artifact("x")
    assert add_references_from_args(art, args) == 2
    assert sorted(art._refs) == ["data/f", "g"]
    assert args.ref_checksum is True and args.ref_max_objects == 5


def test_unsupported_reference():
    with pytest.raises(ArtfsError, match="unsupported"):
        resolve_reference("ftp://x/y")
    with pytest.raises(ArtfsError):
        resolve_reference("file://host/etc/hostname")


def test_cli_put_with_references_only(tmp_path, capsys):
    from artfs import cli

    data = os.urandom(10_000)
    store, cache = str(tmp_path / "store"), str(tmp_path / "cache")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "notes.txt").write_bytes(b"notes")
    with FileServer({"w.bin": data}) as srv:
        assert cli.main(["--store", store, "--cache-dir", cache, "put", "-n", "p/a",
                         "--reference", f"weights/w.bin={srv.url_of('w.bin')}", "--json"]) == 0
        assert cli.main(["--store", store, "--cache-dir", cache, "put", "-n", "p/a", str(tmp_path / "dir"),
                         "--reference", srv.url_of("w.bin")]) == 0
        assert cli.main(["--store", store, "--cache-dir", cache, "put", "-n", "p/a"]) == 2  # nothing to log
        s = Store(store, cache=Cache(cache))
        assert [e.path for e in s.manifest("p", "a", 0).entries] == ["weights/w.bin"]
        assert [e.path for e in s.manifest("p", "a", 1).entries] == ["notes.txt", "w.bin"]
        root = s.artifact("p/a:v1").download(str(tmp_path / "out"))
        assert read(os.path.join(root, "w.bin")) == data
    capsys.readouterr()


def test_one_reader_serves_many_threads(s3):
    import concurrent.futures

    data = os.urandom(2_000_000)
    bucket = new_bucket(s3, versioned=True)
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    with FileServer({"big": data}) as srv:
        entries = resolve_reference(srv.url_of("big")) + resolve_reference(f"s3://{bucket}/big")
        chunks = [(e, off) for e in entries for off in range(0, len(data), 131_072)]
        with RefReader() as r, concurrent.futures.ThreadPoolExecutor(8) as ex:
            got = list(ex.map(lambda c: r.read_range(c[0], c[1], 131_072), chunks))
        for (e, off), b in zip(chunks, got):
            assert b == data[off : off + 131_072]
