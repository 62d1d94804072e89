"""The store's guarantees (issue 2), on every writable backend.

Concurrent writers never lose a version, a deletion racing commits never loses a committed file,
unchanged files are not uploaded again, trees round-trip byte for byte, aliases behave like W&B's,
bad input is refused before anything is written, and corrupted bytes are never served.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest

import artfs
from artfs import ArtfsError, CorruptData, InvalidName, InvalidPath, NotFound, digest_bytes
from artfs._layout import blob_key

MiB = 1 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def make_store(url: str, tmp_path, cache: str = "cache", backend=None) -> artfs.Store:
    return artfs.Store(None if backend else url, backend=backend,
                       cache=artfs.Cache(str(tmp_path / cache), max_size="4G"))


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def write_tree(root, files: dict[str, bytes], executable: set[str] = frozenset()) -> str:
    root = str(root)
    for rel, data in files.items():
        p = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, 0o755 if rel in executable else 0o644)
    return root


def read_tree(root) -> dict[str, tuple[bytes, bool]]:
    out = {}
    root = str(root)
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            rel = os.path.relpath(p, root).replace(os.sep, "/")
            with open(p, "rb") as f:
                out[rel] = (f.read(), bool(os.stat(p).st_mode & stat.S_IXUSR))
    return out


def log_dir(store, src, name="art", project="proj", **kw) -> artfs.Artifact:
    art = artfs.Artifact(name, type=kw.pop("type", "dataset"), description=kw.pop("description", None),
                         metadata=kw.pop("metadata", None))
    art.add_dir(str(src))
    return store.log_artifact(art, project=project, **kw)


def log_files(store, tmp_path, files: dict[str, bytes], name="art", project="proj", **kw) -> artfs.Artifact:
    src = tmp_path / f"src-{time.monotonic_ns()}"
    write_tree(src, files)
    return log_dir(store, src, name=name, project=project, **kw)


def all_keys(store) -> set[str]:
    return {o.key for o in store.backend.list("")}


def run_script(tmp_path, name: str, source: str) -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(source))
    return str(p)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --------------------------------------------------------------------------------------------
# concurrent writers: 8 processes, one artifact, 8 distinct versions
# --------------------------------------------------------------------------------------------

WRITER = """
import json, os, sys, time
import artfs
url, cache, start, me, src = sys.argv[1:6]
store = artfs.Store(url, cache=artfs.Cache(cache, max_size="1G"))
os.makedirs(src)
with open(os.path.join(src, "writer.txt"), "w") as f:
    f.write(f"written by writer {me}\\n")
with open(os.path.join(src, "common.bin"), "wb") as f:
    f.write(b"shared by every writer" * 1000)
art = artfs.Artifact("race", type="dataset")
art.add_dir(src)
print("ready", flush=True)
while not os.path.exists(start):
    time.sleep(0.001)
v = store.log_artifact(art, project="proj")
r = v.commit_result
print(json.dumps({"me": me, "version": r.version, "created": r.created}), flush=True)
"""


@pytest.mark.timeout(180)
def test_concurrent_writers_get_distinct_versions(backend_url, tmp_path):
    n = 8
    script = run_script(tmp_path, "writer.py", WRITER)
    start = tmp_path / "start"
    procs = [
        subprocess.Popen([sys.executable, script, backend_url, str(tmp_path / f"cache{i}"), str(start), str(i),
                          str(tmp_path / f"src{i}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=child_env())
        for i in range(n)
    ]
    try:
        for p in procs:
            line = p.stdout.readline()
            assert line.strip() == "ready", p.stderr.read()
        start.touch()  # all at once
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    assert all(r["created"] for r in results)
    assert sorted(r["version"] for r in results) == list(range(n)), results
    store = make_store(backend_url, tmp_path, "reader-cache")
    assert store.versions("proj", "race") == list(range(n))
    assert store.artifact("proj/race:latest").version == f"v{n - 1}"
    for r in results:
        root = tmp_path / "out" / str(r["version"])
        store.artifact(f"proj/race:v{r['version']}").download(str(root))
        assert (root / "writer.txt").read_text() == f"written by writer {r['me']}\n"
        assert (root / "common.bin").read_bytes() == b"shared by every writer" * 1000


LOOPER = """
import json, os, sys, time
import artfs
url, cache, start, me, rounds = sys.argv[1:6]
store = artfs.Store(url, cache=artfs.Cache(cache, max_size="1G"))
print("ready", flush=True)
while not os.path.exists(start):
    time.sleep(0.001)
out = []
for i in range(int(rounds)):
    art = artfs.Artifact(f"art{me}", type="dataset")
    with art.new_file("n.txt", "w") as f:
        f.write(f"{me} {i}")
    out.append(store.log_artifact(art, project="proj").commit_result.version)
print(json.dumps(out), flush=True)
"""


@pytest.mark.timeout(180)
def test_concurrent_commits_to_sibling_artifacts_all_succeed(local_url, tmp_path):
    # they share the project's intents/ and blobs/ directories, created and emptied all the time
    backend_url = local_url
    n, rounds = 4, 20
    script = run_script(tmp_path, "looper.py", LOOPER)
    start = tmp_path / "start"
    procs = [subprocess.Popen([sys.executable, script, backend_url, str(tmp_path / f"cache{i}"), str(start), str(i),
                               str(rounds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env()) for i in range(n)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        start.touch()
        for p in procs:
            out, err = p.communicate(timeout=150)
            assert p.returncode == 0, err
            assert json.loads(out) == list(range(rounds))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    store = make_store(backend_url, tmp_path, "reader-cache")
    for i in range(n):
        a = store.artifact(f"proj/art{i}:latest")
        assert a.version == f"v{rounds - 1}"
        a.download(str(tmp_path / f"out{i}"))
        assert (tmp_path / f"out{i}" / "n.txt").read_text() == f"{i} {rounds - 1}"
    assert not list(store.backend.list("proj/intents/"))


@pytest.mark.timeout(120)
def test_writes_racing_deletes_of_sibling_keys_succeed(backend_url, tmp_path):
    # what intents/, deleting/ and blobs/xx/ see all the time: a write next to a key being deleted
    # (the local store prunes emptied directories; a write must not fail because of that)
    import threading

    store = make_store(backend_url, tmp_path)
    rounds = 15 if is_s3(backend_url) else 200
    errors: list[BaseException] = []

    def loop(k: int) -> None:
        try:
            for i in range(rounds):
                key = f"proj/intents/{k}.json"
                store.backend.put(key, b"{}", exclusive=bool(i % 2))
                assert store.backend.get(key) == b"{}"
                store.backend.delete(key)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


# --------------------------------------------------------------------------------------------
# deletion and gc racing commits: no committed file is ever lost
# --------------------------------------------------------------------------------------------

COMMITTER = """
import json, os, sys, time
import artfs
url, cache, out, start, done, duration = sys.argv[1:7]
store = artfs.Store(url, cache=artfs.Cache(cache, max_size="1G"))

def blob(tag):
    return (tag * (2000 // len(tag) + 1))[:2000].encode()

# most files are shared by every version; each version also keeps the previous version's
# newest file and one file it shares with the version five commits earlier
base = {f"base/{i:02d}.bin": blob(f"base {i} ") for i in range(20)}
print("ready", flush=True)
while not os.path.exists(start):
    time.sleep(0.001)
# at least `duration` seconds and 8 commits (a slow machine still races), at most 60 s
t0 = time.monotonic()
i = 0
try:
    with open(out, "w") as log:
        while (time.monotonic() < t0 + float(duration) or i < 8) and time.monotonic() < t0 + 60:
            files = dict(base)
            files[f"chain/{i}.txt"] = blob(f"new in commit {i} ")
            if i:
                files[f"chain/{i - 1}.txt"] = blob(f"new in commit {i - 1} ")
            files[f"rot/{i % 5}.txt"] = blob(f"rotating {i // 5 % 3} {i % 5} ")
            art = artfs.Artifact("churn", type="dataset")
            for path, data in files.items():
                with art.new_file(path, "wb") as f:
                    f.write(data)
            t = time.monotonic()
            v = store.log_artifact(art, project="proj")
            r = v.commit_result
            log.write(json.dumps({"i": i, "version": r.version, "created": r.created, "t": time.monotonic() - t,
                                  "files": {p: artfs.digest_bytes(d) for p, d in files.items()}}) + "\\n")
            log.flush()
            i += 1
finally:
    open(done, "w").close()  # the deleter stops, also if this process failed
"""

DELETER = """
import json, os, random, sys, time
import artfs
url, cache, out, start, done, seed = sys.argv[1:7]
store = artfs.Store(url, cache=artfs.Cache(cache, max_size="1G"))
rng = random.Random(int(seed))
print("ready", flush=True)
while not os.path.exists(start):
    time.sleep(0.001)
k = 0
with open(out, "w") as log:
    while not os.path.exists(done):
        k += 1
        if k % 4 == 0:
            log.write(json.dumps({"gc": store.gc("proj")}) + "\\n")
            log.flush()
            continue
        versions = store.versions("proj", "churn")
        if len(versions) < 2:
            time.sleep(0.005)
            continue
        # often the newest one (the one a commit builds on), otherwise any
        n = versions[-1] if rng.random() < 0.5 else rng.choice(versions)
        store.delete_version("proj", "churn", n, delete_aliases=True)
        log.write(json.dumps({"deleted": n}) + "\\n")
        log.flush()
        time.sleep(rng.random() * 0.02)
    log.write(json.dumps({"gc": store.gc("proj")}) + "\\n")
"""


@pytest.mark.timeout(240)
def test_delete_and_gc_racing_commits_lose_nothing(backend_url, tmp_path):
    duration = 3.5 if is_s3(backend_url) else 3.0
    start, done = tmp_path / "start", tmp_path / "done"
    c_out, d_out = tmp_path / "commits.jsonl", tmp_path / "deletes.jsonl"
    committer = subprocess.Popen(
        [sys.executable, run_script(tmp_path, "committer.py", COMMITTER), backend_url, str(tmp_path / "c-cache"),
         str(c_out), str(start), str(done), str(duration)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    deleter = subprocess.Popen(
        [sys.executable, run_script(tmp_path, "deleter.py", DELETER), backend_url, str(tmp_path / "d-cache"),
         str(d_out), str(start), str(done), "12345"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    procs = [committer, deleter]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        start.touch()
        for p in procs:
            _, err = p.communicate(timeout=150)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    commits = [json.loads(line) for line in c_out.read_text().splitlines()]
    events = [json.loads(line) for line in d_out.read_text().splitlines()]
    deleted = [e["deleted"] for e in events if "deleted" in e]
    print(f"{len(commits)} commits (s each: {[round(c['t'], 2) for c in commits]}), {len(deleted)} deletions, "
          f"{sum('gc' in e for e in events)} gc runs")
    created = [c["version"] for c in commits if c["created"]]
    assert len(commits) >= 8, "the committer hardly ran"
    assert len(deleted) >= 3, "the deleter hardly ran"
    assert all(c["created"] for c in commits), "every commit has new content"
    # version numbers are never handed out twice, even after the newest version was deleted
    assert len(set(created)) == len(created), f"a version number was reused: {created}"

    store = make_store(backend_url, tmp_path, "check-cache")
    existing = store.versions("proj", "churn")
    assert set(existing) == set(created) - set(deleted), (existing, created, deleted)
    expected = {c["version"]: c["files"] for c in commits}
    for n in existing:
        a = store.artifact(f"proj/churn:v{n}")
        assert {e.path: e.digest for e in a.manifest.entries} == expected[n]
        root = tmp_path / "check" / str(n)
        a.download(str(root))  # every blob present and verified
        got = {p: digest_bytes(data) for p, (data, _) in read_tree(root).items()}
        assert got == expected[n], f"v{n} came back different"

    # and the final gc left exactly the blobs that the remaining versions need
    needed = {d for n in existing for d in expected[n].values()}
    stored = {"xxh128:" + o.key.rsplit("/", 1)[1] for o in store.backend.list("proj/blobs/")}
    assert stored == needed


# --------------------------------------------------------------------------------------------
# dedup: a new version uploads only what the store lacks
# --------------------------------------------------------------------------------------------

def _blob_inodes(store) -> dict[str, int] | None:
    """Inode of every blob file of a local store (a rewrite makes a new inode); None on S3."""
    root = getattr(store.backend, "root", None)
    if root is None:
        return None
    return {o.key: os.stat(os.path.join(root, *o.key.split("/"))).st_ino for o in store.backend.list("proj/blobs/")}


def _kind(url: str) -> str:
    path = url.split("?")[0]
    for part, kind in (("/proj/blobs/", "blob"), ("/proj/intents/", "intent"), ("/versions/", "manifest"),
                       ("/digests/", "digest")):
        if part in path:
            return kind
    return "index" if path.endswith("/index.json") else path


def _count_requests(store):
    """Record every HTTP request the S3 client sends (boto3's own event hooks, no mock)."""
    sent: list[tuple[str, str]] = []
    store.backend.client.meta.events.register(
        "before-send.s3", lambda request, **_: sent.append((request.method, request.url)))
    return sent


@pytest.mark.timeout(180)
def test_adding_one_file_uploads_one_blob(backend_url, tmp_path):
    count = 100 if is_s3(backend_url) else 1000  # moto is slow: fewer files on S3
    store = make_store(backend_url, tmp_path)
    files = {f"d{i // 100}/f{i:04d}.txt": f"file number {i}\n".encode() for i in range(count)}
    src = write_tree(tmp_path / "src", files)
    v0 = log_dir(store, src)
    assert v0.commit_result.uploaded_blobs == count and v0.file_count == count

    (tmp_path / "src" / "extra.txt").write_bytes(b"the one new file")
    blobs_before = {o.key: o for o in store.backend.list("proj/blobs/")}
    inodes_before = _blob_inodes(store)
    keys_before = all_keys(store)
    puts_before = store.backend.counter["put"]
    sent = _count_requests(store) if is_s3(backend_url) else None

    v1 = log_dir(store, src)

    r = v1.commit_result
    assert (r.version, r.created, r.files) == (1, True, count + 1)
    assert r.uploaded_blobs == 1 and r.uploaded_bytes == len(b"the one new file")
    blobs_after = {o.key: o for o in store.backend.list("proj/blobs/")}
    assert set(blobs_after) - set(blobs_before) == {blob_key("proj", digest_bytes(b"the one new file"))}
    # no old blob was written again either
    assert all(blobs_after[k].mtime == o.mtime for k, o in blobs_before.items())
    if inodes_before is not None:
        assert {k: i for k, i in _blob_inodes(store).items() if k in inodes_before} == inodes_before
    # besides the blob, only a few small bookkeeping keys (manifest, digest index, index files)
    small = all_keys(store) - keys_before - set(blobs_after)
    assert "proj/artifacts/art/versions/1.json" in small and len(small) <= 6, small
    puts = store.backend.counter["put"] - puts_before
    assert puts <= 1 + 8, f"{puts} writes for one new file"
    if sent is not None:
        put_urls = [u for m, u in sent if m == "PUT"]
        assert len(put_urls) == puts, "every PUT the server saw is counted"
        kinds = sorted(_kind(u) for u in put_urls)
        # exactly one blob, one intent, one manifest, one digest-index entry; the rest index files
        assert [k for k in kinds if k != "index"] == ["blob", "digest", "intent", "manifest"], put_urls
        # the 1000 unchanged blobs are not even checked one by one
        heads = [u for m, u in sent if m == "HEAD"]
        assert len(heads) <= 3, f"{len(heads)} HEAD requests for one new file"

    out = tmp_path / "out"
    make_store(backend_url, tmp_path, "other-cache").artifact("proj/art:v1").download(str(out))
    assert (out / "extra.txt").read_bytes() == b"the one new file"
    assert len(read_tree(out)) == count + 1


# --------------------------------------------------------------------------------------------
# round trip of a directory tree
# --------------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_tree_round_trip_is_byte_identical(backend_url, tmp_path):
    backend = None
    if is_s3(backend_url):
        from artfs.backends.s3 import S3Backend
        # a small multipart threshold, so the large file really goes up in parts
        backend = S3Backend(backend_url, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    store = make_store(backend_url, tmp_path, backend=backend)
    big = os.urandom(1 << 20) * 11 + b"tail"  # 11 MiB and a bit: over any multipart threshold
    files = {
        "README": b"top level\n",
        "a/b/c/d/deep.txt": b"deep down\n",
        "empty": b"",
        "dir/empty-too": b"",
        "données/été.txt": "ça marche\n".encode(),
        "日本/ファイル": "内容\n".encode(),
        "emoji/😀.bin": bytes(range(256)),
        "spaces in name/a b.txt": b"spaces\n",
        "bin/run.sh": b"#!/bin/sh\necho hi\n",
        "bin/tool": b"\x7fELF not really",
        "weights/model.bin": big,
    }
    src = write_tree(tmp_path / "src", files, executable={"bin/run.sh", "bin/tool"})
    v0 = log_dir(store, src, type="model")
    assert v0.commit_result.created and v0.file_count == len(files)
    assert v0.size == sum(len(d) for d in files.values())
    expected = read_tree(src)

    # the same process, then "another machine" (fresh cache, fresh client)
    out1 = store.artifact("proj/art:v0").download(str(tmp_path / "out1"))
    reader = make_store(backend_url, tmp_path, "cache2")
    out2 = reader.artifact("proj/art:latest").download(str(tmp_path / "out2"))
    for out in (out1, out2):
        got = read_tree(out)
        assert got == expected
        assert got["bin/run.sh"][1] and got["bin/tool"][1] and not got["README"][1]
    a = reader.artifact("proj/art:v0")
    a.verify(out2)
    assert a.type == "model"
    assert a.get_path("weights/model.bin").size == len(big)
    # downloading again into the same root keeps identical files and rewrites nothing
    mtime = os.stat(os.path.join(out2, "weights", "model.bin")).st_mtime_ns
    a.download(out2)
    assert os.stat(os.path.join(out2, "weights", "model.bin")).st_mtime_ns == mtime
    # a changed file in the root is put right
    with open(os.path.join(out2, "README"), "wb") as f:
        f.write(b"top levEl\n")
    a.download(out2)
    assert read_tree(out2) == expected


# --------------------------------------------------------------------------------------------
# identical content
# --------------------------------------------------------------------------------------------

def test_identical_content_creates_no_new_version(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    src = write_tree(tmp_path / "src", {"a.txt": b"A", "b/c.txt": b"C"})
    v0 = log_dir(store, src)
    assert (v0.version, v0.commit_result.created) == ("v0", True)

    again = log_dir(store, src)
    assert again.commit_result.created is False
    assert again.commit_result.version == 0 and again.version == "v0"
    assert again.commit_result.uploaded_blobs == 0
    assert "matches" in str(again.commit_result)
    assert store.versions("proj", "art") == [0]

    (tmp_path / "src" / "a.txt").write_bytes(b"A2")
    assert log_dir(store, src).version == "v1"
    # back to v0's content: matches v0, not a new v2 -- and the alias asked for lands on v0
    (tmp_path / "src" / "a.txt").write_bytes(b"A")
    back = log_dir(store, src, aliases=["best"])
    assert (back.commit_result.created, back.commit_result.version) == (False, 0)
    assert store.aliases("proj", "art")["best"] == 0
    assert store.versions("proj", "art") == [0, 1]
    # the executable bit is content: flipping it is a new version
    os.chmod(tmp_path / "src" / "a.txt", 0o755)
    assert log_dir(store, src).commit_result.created is True


# --------------------------------------------------------------------------------------------
# aliases, description and metadata
# --------------------------------------------------------------------------------------------

def test_aliases(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    v0 = log_files(store, tmp_path, {"x": b"0"}, aliases=["best"])
    assert v0.aliases == ["best", "latest"]
    v1 = log_files(store, tmp_path, {"x": b"1"})
    assert store.aliases("proj", "art") == {"best": 0, "latest": 1}
    assert store.artifact("proj/art:latest").version == "v1"
    assert store.artifact("proj/art").version == "v1"
    assert v1.aliases == ["latest"]

    # a custom alias is unique per artifact: moving it takes it off the old version
    v2 = log_files(store, tmp_path, {"x": b"2"}, aliases=["best"])
    assert store.aliases("proj", "art") == {"best": 2, "latest": 2}
    assert store.artifact("proj/art:v0").aliases == []
    a1 = store.artifact("proj/art:v1")
    a1.aliases.append("best")
    a1.aliases.append("prod")
    a1.save()
    assert store.aliases("proj", "art") == {"best": 1, "prod": 1, "latest": 2}
    assert store.artifact("proj/art:best").version == "v1"
    assert a1.aliases == ["best", "prod"]

    # the same alias name on another artifact is independent
    log_files(store, tmp_path, {"y": b"other"}, name="other", aliases=["best"])
    assert store.aliases("proj", "art")["best"] == 1

    # remove
    a1.aliases.remove("prod")
    a1.save()
    assert "prod" not in store.aliases("proj", "art")
    with pytest.raises(NotFound, match="prod"):
        store.artifact("proj/art:prod")
    with pytest.raises(NotFound):
        store.remove_alias("proj", "art", "prod")

    # latest may be set explicitly, and the next commit moves it again
    store.set_alias("proj", "art", "latest", 0)
    assert store.artifact("proj/art:latest").version == "v0"
    v3 = log_files(store, tmp_path, {"x": b"3"})
    assert store.artifact("proj/art:latest").version == v3.version == "v3"

    # saving an old handle (loaded when v3 was latest) after v4 was logged does not drag latest back
    h3 = store.artifact("proj/art:v3")
    assert "latest" in h3.aliases
    log_files(store, tmp_path, {"x": b"4"})
    h3.description = "edited later"
    h3.save()
    assert store.artifact("proj/art:latest").version == "v4"

    # a version with aliases is not deleted unless asked to
    with pytest.raises(ArtfsError, match="best"):
        store.artifact("proj/art:v1").delete()
    assert 1 in store.versions("proj", "art")
    store.artifact("proj/art:v1").delete(delete_aliases=True)
    assert 1 not in store.versions("proj", "art")
    assert "best" not in store.aliases("proj", "art")
    with pytest.raises(NotFound, match="best"):
        store.artifact("proj/art:best")

    # deleting the latest version moves latest back
    store.artifact("proj/art:v4").delete()
    assert store.artifact("proj/art:latest").version == "v3"
    assert v2.version == "v2"

    # an alias file left pointing at a deleted version (e.g. by an old client) is not served
    store.backend.put("proj/artifacts/art/aliases/stale", b"1")
    assert "stale" not in store.aliases("proj", "art")
    with pytest.raises(NotFound):
        store.artifact("proj/art:stale")


def test_description_and_metadata_can_be_changed_after_logging(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    v0 = log_files(store, tmp_path, {"x": b"0"}, description="first try", metadata={"classes": 3})
    digest = v0.digest
    assert (v0.description, v0.metadata) == ("first try", {"classes": 3})

    a = store.artifact("proj/art:v0")
    a.description = "the good one"
    a.metadata["accuracy"] = 0.93
    a.metadata["classes"] = 4
    a.save()

    other = make_store(backend_url, tmp_path, "cache2").artifact("proj/art:v0")
    assert other.description == "the good one"
    assert other.metadata == {"classes": 4, "accuracy": 0.93}
    assert other.digest == digest, "the content (manifest) is unchanged"
    # a new version starts from its own description
    v1 = log_files(store, tmp_path, {"x": b"1"}, description="second")
    assert store.artifact("proj/art:v1").description == "second"
    assert v1.metadata == {}


# --------------------------------------------------------------------------------------------
# version numbers after a deletion
# --------------------------------------------------------------------------------------------

def test_version_numbers_are_not_reused_after_deleting_the_newest(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    reader = make_store(backend_url, tmp_path, "reader-cache")  # another machine
    log_files(store, tmp_path, {"shared": b"S", "x": b"zero"})
    log_files(store, tmp_path, {"shared": b"S", "x": b"one"})
    old_v1 = reader.artifact("proj/art:v1")
    old_v1.download(str(tmp_path / "r1"))
    store.delete_version("proj", "art", 1)
    new = log_files(store, tmp_path, {"shared": b"S", "x": b"two"})
    assert new.version == "v2"
    assert store.versions("proj", "art") == [0, 2]
    with pytest.raises(NotFound, match="v1"):
        reader.artifact("proj/art:v1")
    got = reader.artifact("proj/art:latest").download(str(tmp_path / "r2"))
    assert (tmp_path / "r2" / "x").read_bytes() == b"two" and got


def test_number_taken_and_deleted_during_a_commit_is_not_reused(tmp_path):
    # The window no listing can close: between our listing and our exclusive create of vN, another
    # writer creates vN and a deleter deletes it. The real local backend, with that interleaving
    # replayed at the exact moment (no mock: every write still goes to disk).
    from artfs.backends.local import LocalBackend

    class Interleaved(LocalBackend):
        def put(self, key, data, *, exclusive=False):
            if exclusive and key == "proj/artifacts/art/versions/1.json" and not self.exists("proj/artifacts/art/deleted/1"):
                other = artfs.Store(backend=LocalBackend(self.root), cache=artfs.Cache(str(tmp_path / "other")))
                log_files(other, tmp_path, {"x": b"someone else's v1"})
                other.delete_version("proj", "art", 1)
            return super().put(key, data, exclusive=exclusive)

    store = make_store(None, tmp_path, backend=Interleaved(str(tmp_path / "store")))
    log_files(store, tmp_path, {"x": b"v0"})
    mine = log_files(store, tmp_path, {"x": b"mine"})
    assert mine.version == "v2"
    assert store.versions("proj", "art") == [0, 2]
    reader = make_store(str(tmp_path / "store"), tmp_path, "reader")
    with pytest.raises(NotFound):
        reader.artifact("proj/art:v1")
    reader.artifact("proj/art:latest").download(str(tmp_path / "out"))
    assert (tmp_path / "out" / "x").read_bytes() == b"mine"


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

def test_invalid_names_are_refused_and_write_nothing(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    src = write_tree(tmp_path / "src", {"a.txt": b"A"})
    for bad in ("bad..name", ".hidden", "-x", "a/b", "", "x" * 129, "v12", "draft"):
        with pytest.raises(InvalidName):
            artfs.Artifact(bad)
    with pytest.raises(InvalidName):
        artfs.Artifact("ok", type="../x")
    art = artfs.Artifact("ok", type="dataset")
    art.add_dir(src)
    for project in ("bad..name", ".hidden", "-x", "a/b", ""):
        with pytest.raises(InvalidName):
            store.log_artifact(art, project=project)
    for alias in ("v12", "v0", "draft", "a/b", "-x", ".hidden", "bad..name"):
        with pytest.raises(InvalidName):
            store.log_artifact(art, project="proj", aliases=[alias])
        art.aliases = [alias]
        with pytest.raises(InvalidName):
            store.log_artifact(art, project="proj")
        art.aliases = []
    assert all_keys(store) == set()
    assert store.projects() == []


def test_invalid_entry_names_raise_invalid_path(tmp_path):
    f = tmp_path / "f.txt"
    f.write_bytes(b"x")
    art = artfs.Artifact("art")
    for bad in ("../x", "a/../../x", "/abs", "/etc/passwd", "a\x00b", "a//b", "", "a/"):
        with pytest.raises(InvalidPath):
            art.add_file(str(f), name=bad)
        with pytest.raises(InvalidPath):
            with art.new_file(bad):
                pass
    with pytest.raises(InvalidPath):
        art.add_dir(str(tmp_path), name="../up")
    assert art.add_file(str(f), name="données/été.txt") == "données/été.txt"
    with pytest.raises(InvalidPath, match="already"):
        art.add_file(str(f), name="données/été.txt")


def test_missing_version_alias_or_artifact_is_not_found(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    log_files(store, tmp_path, {"x": b"0"})
    with pytest.raises(NotFound, match=r"proj/art:v9: no such version"):
        store.artifact("proj/art:v9")
    with pytest.raises(NotFound, match=r"proj/art:nope: no such alias"):
        store.artifact("proj/art:nope")
    with pytest.raises(NotFound, match=r"proj/missing: no such artifact"):
        store.artifact("proj/missing:latest")
    with pytest.raises(NotFound, match="no such artifact"):
        store.artifact("otherproj/art")
    with pytest.raises(NotFound):
        store.set_alias("proj", "art", "best", 5)
    with pytest.raises(NotFound):
        store.delete_version("proj", "art", 5)
    # NotFound's message is readable (KeyError would quote it)
    try:
        store.artifact("proj/art:v9")
    except NotFound as e:
        assert str(e) == "proj/art:v9: no such version"


def _corrupt(path: str) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        data = f.read()
        f.seek(0)
        f.write(bytes([data[0] ^ 0xFF]) + data[1:])


def test_corrupted_cache_blob_is_dropped_and_fetched_again(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    payload = os.urandom(100_000)
    log_files(store, tmp_path, {"data.bin": payload, "other.txt": b"fine"})
    a = store.artifact("proj/art:v0")
    a.download(str(tmp_path / "first"))
    d = digest_bytes(payload)
    if store.backend.local_path("proj") is not None:
        # a local store is its own cache: downloads place its blobs directly, leaving the cache
        # alone (a corrupted store blob is refused: tests/test_place.py)
        assert not os.path.exists(store.cache.path(d))
        assert (tmp_path / "first" / "data.bin").read_bytes() == payload
        return
    cached = store.cache.path(d)
    assert os.path.exists(cached) and stat.S_IMODE(os.stat(cached).st_mode) == 0o444
    _corrupt(cached)
    gets = store.backend.counter["download"]

    a.download(str(tmp_path / "second"))

    assert (tmp_path / "second" / "data.bin").read_bytes() == payload
    assert open(cached, "rb").read() == payload, "the cache holds the good bytes again"
    assert store.backend.counter["download"] > gets, "it was fetched again from the store"


def test_corrupted_store_blob_gives_corrupt_data_not_wrong_bytes(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    payload = b"the right bytes" * 1000
    log_files(store, tmp_path, {"data.bin": payload, "ok.txt": b"fine"})
    wrong = bytearray(payload)
    wrong[7] ^= 0x01
    store.backend.put(blob_key("proj", digest_bytes(payload)), bytes(wrong))

    reader = make_store(backend_url, tmp_path, "fresh-cache")
    root = tmp_path / "out"
    with pytest.raises(CorruptData):
        reader.artifact("proj/art:v0").download(str(root))
    assert not (root / "data.bin").exists(), "wrong bytes were written"
    assert not reader.cache.has(digest_bytes(payload)), "wrong bytes were cached"
    for dirpath, _, files in os.walk(root):
        for fn in files:
            assert not fn.startswith(".artfs-tmp"), "a temp file was left behind"
            with open(os.path.join(dirpath, fn), "rb") as f:
                assert f.read() != bytes(wrong)


def test_download_refuses_to_write_through_a_symlinked_directory(local_url, tmp_path):
    store = make_store(local_url, tmp_path)
    log_files(store, tmp_path, {"sub/inner/file.txt": b"payload", "top.txt": b"top"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for link_at in ("sub", "sub/inner"):
        root = tmp_path / f"root-{link_at.replace('/', '-')}"
        (root / os.path.dirname(link_at)).mkdir(parents=True, exist_ok=True)
        os.symlink(elsewhere, root / link_at)
        with pytest.raises(InvalidPath, match="symlink"):
            store.artifact("proj/art:v0").download(str(root))
        assert os.listdir(elsewhere) == [], "wrote through the symlink"
    # a file that is a symlink is replaced, not written through
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"must stay")
    root = tmp_path / "root-file-link"
    root.mkdir()
    os.symlink(victim, root / "top.txt")
    store.artifact("proj/art:v0").download(str(root))
    assert victim.read_bytes() == b"must stay"
    assert not os.path.islink(root / "top.txt") and (root / "top.txt").read_bytes() == b"top"
    assert (root / "sub" / "inner" / "file.txt").read_bytes() == b"payload"


# --------------------------------------------------------------------------------------------
# deletion and gc
# --------------------------------------------------------------------------------------------

def _blob_digests(store, project="proj") -> set[str]:
    return {"xxh128:" + o.key.rsplit("/", 1)[1] for o in store.backend.list(f"{project}/blobs/")}


def test_delete_removes_blobs_no_other_version_needs(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    log_files(store, tmp_path, {"shared": b"S", "only0": b"zero"})
    log_files(store, tmp_path, {"shared": b"S", "only1": b"one"})
    log_files(store, tmp_path, {"shared": b"S", "x": b"other artifact"}, name="other")
    store.delete_version("proj", "art", 0)
    assert _blob_digests(store) == {digest_bytes(b) for b in (b"S", b"one", b"other artifact")}
    store.artifact("proj/art:v1").download(str(tmp_path / "v1"))
    assert read_tree(tmp_path / "v1") == {"shared": (b"S", False), "only1": (b"one", False)}


def test_gc_removes_orphans_but_keeps_blobs_of_young_intents(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    log_files(store, tmp_path, {"a": b"kept A", "b": b"kept B"})
    stray, inflight = b"stray blob nobody references", b"blob of a commit in flight"
    store.backend.put(blob_key("proj", digest_bytes(stray)), stray)
    store.backend.put(blob_key("proj", digest_bytes(inflight)), inflight)
    store.backend.put("proj/intents/0123abcd.json",
                      json.dumps({"created": time.time(), "artifact": "art",
                                  "blobs": [digest_bytes(inflight)]}).encode())

    dry = store.gc("proj", dry_run=True)
    assert dry["blobs_removed"] == 1 and dry["bytes_freed"] == len(stray)
    assert digest_bytes(stray) in _blob_digests(store)

    result = store.gc("proj")
    assert result["blobs_removed"] == 1 and result["bytes_freed"] == len(stray)
    assert _blob_digests(store) == {digest_bytes(b) for b in (b"kept A", b"kept B", inflight)}
    assert not list(store.backend.list("proj/deleting/")), "gc left its marker behind"
    store.artifact("proj/art:v0").download(str(tmp_path / "out"))
    assert read_tree(tmp_path / "out") == {"a": (b"kept A", False), "b": (b"kept B", False)}

    if not is_s3(backend_url):
        # an intent older than the grace period was left by a crashed commit: it and its blob go
        old = time.time() - artfs._store.INTENT_GRACE - 60
        os.utime(os.path.join(store.backend.root, "proj", "intents", "0123abcd.json"), (old, old))
        result = store.gc("proj")
        assert result["blobs_removed"] == 1 and result["stale_removed"] >= 1
        assert _blob_digests(store) == {digest_bytes(b) for b in (b"kept A", b"kept B")}
        assert not list(store.backend.list("proj/intents/"))


def test_new_file_leaves_no_temporary_files_behind(local_url, tmp_path):
    """``new_file`` writes into a temporary directory: gone once the draft is logged, when a draft
    is dropped without being logged, and when the process exits holding one."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = textwrap.dedent(f"""
        import gc, os, artfs
        store = artfs.Store({local_url!r})
        logged = artfs.Artifact("notes", type="dataset")
        with logged.new_file("a.txt", "w") as f:
            f.write("logged")
        dropped = artfs.Artifact("scratch")
        with dropped.new_file("b.txt", "w") as f:
            f.write("never logged")
        assert len(os.listdir({str(tmp)!r})) == 2
        store.log_artifact(logged, "proj")
        del dropped
        gc.collect()
        assert os.listdir({str(tmp)!r}) == [], os.listdir({str(tmp)!r})
        kept = artfs.Artifact("held-at-exit")
        with kept.new_file("c.txt", "w") as f:
            f.write("still held when the process exits")
        assert len(os.listdir({str(tmp)!r})) == 1
    """)
    env = dict(os.environ, TMPDIR=str(tmp))
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp) == []
    got = artfs.Store(local_url).artifact("proj/notes:v0").get_path("a.txt").download(str(tmp_path / "out"))
    assert open(got).read() == "logged"
