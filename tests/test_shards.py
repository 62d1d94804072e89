"""Sharded manifests (artfs/_pieces.py, artfs/_shards.py): a version stored as one piece per
directory, what a commit writes, what readers read, and what a tampered piece gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import artfs
from artfs import Cache, CorruptData, InvalidPath, Store
from artfs._layout import tree_key, trees_prefix
from artfs._pieces import piece_bytes, piece_digest, tree_of
from artfs._manifest import Entry

from crashpoints import crash_env, marker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def shard_everything(monkeypatch):
    """Every version of these tests is sharded, however small (the default is 10,000 entries)."""
    monkeypatch.setenv("ARTFS_SHARD_MIN", "1")


def make_store(url, tmp_path, cache="cache") -> Store:
    return Store(str(url), cache=Cache(str(tmp_path / cache), max_size="1G"))


TREE = {
    "README.md": b"read me\n",
    "a/x.txt": b"x",
    "a/b/c/deep.txt": b"deep",
    "a/b/c/other.txt": b"other",
    "a/b/sibling.txt": b"sib",
    "a-b/y.txt": b"y",       # sorts before a/ in path order ('-' < '/')
    "a.txt": b"dot",
    "z/1.bin": os.urandom(3000),
    "z/2.bin": os.urandom(3001),
}


def log(store, files, name="ds", project="proj"):
    art = artfs.Artifact(name, type="dataset")
    for rel, data in files.items():
        with art.new_file(rel, mode="wb") as f:
            f.write(data)
    return store.log_artifact(art, project=project)


def pieces(store, project="proj") -> dict[str, float]:
    return {o.key: o.mtime for o in store.backend.list(trees_prefix(project))}


def head(store, n, project="proj", artifact="ds") -> dict:
    return json.loads(store.backend.get(f"{project}/artifacts/{artifact}/versions/{n}.json"))


def read_tree(root) -> dict[str, bytes]:
    out = {}
    for d, _, files in os.walk(root):
        for fn in files:
            p = os.path.join(d, fn)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root).replace(os.sep, "/")] = f.read()
    return out


# -- what a commit writes --------------------------------------------------------------------------

def test_a_sharded_version_is_a_head_and_one_piece_per_directory(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    v = log(store, TREE)
    h = head(store, 0)
    assert h["format"] == 2 and "entries" not in h
    assert h["root"]["count"] == len(TREE) and h["root"]["size"] == sum(map(len, TREE.values()))
    dirs = {"", "a", "a/b", "a/b/c", "a-b", "z"}
    assert len(pieces(store)) == len(dirs) == h["root"]["dirs"] + 1
    # readers see the same entries as from a format-1 manifest, in path order
    fresh = make_store(backend_url, tmp_path, "fresh")
    m = fresh.manifest("proj", "ds", 0)
    assert m.sharded and len(m.entries) == len(TREE) and m.size == h["root"]["size"]
    assert [e.path for e in m.entries] == sorted(TREE)
    assert m.digest == artfs._manifest.version_digest(list(m.entries)) == v.digest
    root = fresh.artifact("proj/ds:v0").download(str(tmp_path / "dl"))
    assert read_tree(root) == TREE


def test_a_one_file_change_writes_its_piece_and_its_parents_only(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    log(store, TREE)
    before = pieces(store)
    changed = dict(TREE, **{"a/b/c/deep.txt": b"DEEP"})
    log(store, changed)
    after = pieces(store)
    new = set(after) - set(before)
    assert len(new) == 4  # a/b/c, a/b, a and the root: every other directory is the same piece
    assert all(after[k] == t for k, t in before.items()), "a piece the store had was written again"
    # the intent of that commit named only the changed pieces' blobs (it is gone now)
    assert not list(store.backend.list("proj/intents/"))
    # identical content again: same version digest, nothing created, nothing written
    again = log(store, changed)
    assert (again.version, again.commit_result.created) == ("v1", False)
    assert pieces(store) == after


def test_identical_directories_share_one_piece(tmp_path):
    store = make_store(tmp_path / "store", tmp_path)
    log(store, {"left/a": b"1", "left/b": b"2", "right/a": b"1", "right/b": b"2"})
    assert len(pieces(store)) == 2  # the root, and one piece for both left/ and right/
    m = make_store(tmp_path / "store", tmp_path, "fresh").manifest("proj", "ds", 0)
    assert [e.path for e in m.entries] == ["left/a", "left/b", "right/a", "right/b"]


def test_small_versions_stay_one_format_1_manifest_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("ARTFS_SHARD_MIN")
    store = make_store(tmp_path / "store", tmp_path)
    log(store, TREE)
    assert head(store, 0)["format"] == 1 and not pieces(store)


# -- format 1 beside format 2 ---------------------------------------------------------------------

def test_a_format_1_store_reads_and_takes_sharded_versions_beside(tmp_path, monkeypatch):
    url = tmp_path / "store"
    monkeypatch.setenv("ARTFS_SHARD_MIN", "1000000")  # as main writes today: format 1
    store = make_store(url, tmp_path)
    log(store, TREE)
    assert head(store, 0)["format"] == 1
    monkeypatch.setenv("ARTFS_SHARD_MIN", "1")
    store = make_store(url, tmp_path, "c2")
    changed = dict(TREE, **{"z/3.bin": b"three"})
    del changed["a.txt"]
    log(store, changed)
    assert head(store, 1)["format"] == 2
    fresh = make_store(url, tmp_path, "fresh")
    v0, v1 = fresh.artifact("proj/ds:v0"), fresh.artifact("proj/ds:v1")
    d = v0.diff(v1)
    assert [(c.status, c.path) for c in d.changes] == [("removed", "a.txt"), ("added", "z/3.bin")]
    assert read_tree(v0.download(str(tmp_path / "d0"))) == TREE
    assert read_tree(v1.download(str(tmp_path / "d1"))) == changed
    # the version digest means the same in both formats: v0's content again makes no version
    again = log(fresh, TREE)
    assert (again.version, again.commit_result.created) == ("v0", False)


# -- readers -------------------------------------------------------------------------------------

def test_diff_of_sharded_versions_reads_only_the_changed_pieces(tmp_path):
    url = tmp_path / "store"
    store = make_store(url, tmp_path)
    files = {f"d{i}/f{j}.txt": f"{i}-{j}".encode() for i in range(20) for j in range(5)}
    log(store, files)
    log(store, dict(files, **{"d7/f2.txt": b"changed"}))
    fresh = make_store(url, tmp_path, "fresh")
    a, b = fresh.artifact("proj/ds:v0"), fresh.artifact("proj/ds:v1")
    d = a.diff(b)
    assert [(c.status, c.path, c.aspects) for c in d.changes] == [("changed", "d7/f2.txt", ("content",))]
    assert d.stat()["old"]["files"] == d.stat()["new"]["files"] == 100
    # the two roots and the two pieces of d7/: the 19 unchanged directories were not read
    assert fresh._pieces.reads == 4


def test_the_cache_keeps_pieces_and_a_damaged_copy_is_fetched_again(tmp_path):
    url = tmp_path / "store"
    log(make_store(url, tmp_path), TREE)
    reader = make_store(url, tmp_path, "reader")
    assert len(list(reader.manifest("proj", "ds", 0).entries)) == len(TREE)
    first = reader._pieces.reads
    cached = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "reader" / "manifests") for f in fs
              if os.sep + ".trees" + os.sep in os.path.join(d, f)]
    assert len(cached) == first == 6
    # the head is kept apart: <N>.json in the cache is only ever a whole format-1 manifest (drafts
    # read their base's bytes from there)
    assert not os.path.exists(reader.cache.manifest_path(reader.id, "proj", "ds", 0))
    assert json.load(open(reader.cache.head_path(reader.id, "proj", "ds", 0)))["format"] == 2
    with open(cached[0], "r+b") as f:  # one damaged cache copy
        f.write(b"X")
    again = make_store(url, tmp_path, "reader")  # same cache, new process memory
    assert [e.path for e in again.manifest("proj", "ds", 0).entries] == sorted(TREE)
    assert again._pieces.reads == 1  # only the damaged one came from the store


def test_http_store_reads_sharded_versions(tmp_path):
    from refservers import StaticDirServer

    root = tmp_path / "store"
    local = make_store(root, tmp_path)
    log(local, TREE)
    log(local, dict(TREE, **{"z/1.bin": b"new"}))
    with StaticDirServer(str(root)) as srv:
        store = make_store(srv.url, tmp_path, "http")
        a = store.artifact("proj/ds:latest")
        assert a.version == "v1"
        assert read_tree(a.download(str(tmp_path / "dl"))) == dict(TREE, **{"z/1.bin": b"new"})
        assert [c.path for c in store.artifact("proj/ds:v0").diff(a).changes] == ["z/1.bin"]


# -- gc and deletion -----------------------------------------------------------------------------

def test_gc_keeps_live_pieces_and_removes_unreferenced_ones(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    log(store, TREE)
    v0 = pieces(store)
    changed = dict(TREE, **{"a/x.txt": b"X"})
    log(store, changed)
    both = pieces(store)
    stray = piece_bytes([Entry("lost", "xxh128:" + "0" * 32, 1)], [])
    store.backend.put(tree_key("proj", piece_digest(stray)), stray)
    r = store.gc("proj")
    assert r["pieces_removed"] == 1 and pieces(store) == both
    store.delete_version("proj", "ds", 1)
    assert pieces(store) == v0  # v1's own pieces went with it, the shared ones stayed
    fresh = make_store(backend_url, tmp_path, "fresh")
    assert read_tree(fresh.artifact("proj/ds:v0").download(str(tmp_path / "dl"))) == TREE
    store.delete_version("proj", "ds", 0)
    assert pieces(store) == {}
    assert not list(store.backend.list("proj/blobs/"))


COMMITTER = """
import sys
import artfs
url, cache, src = sys.argv[1:4]
store = artfs.Store(url, cache=artfs.Cache(cache, max_size="1G"))
art = artfs.Artifact("ds", type="dataset")
art.add_dir(src)
store.log_artifact(art, project="proj")
print("done", flush=True)
"""


@pytest.mark.timeout(120)
def test_a_crash_mid_sharded_commit_leaves_nothing_visible(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    log(store, TREE)
    src = tmp_path / "src"
    for rel, data in dict(TREE, **{"a/b/c/deep.txt": b"changed", "new/n.txt": b"n"}).items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    script = tmp_path / "committer.py"
    script.write_text(COMMITTER)
    env = crash_env("shard-after-piece", dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    p = subprocess.Popen([sys.executable, str(script), str(backend_url), str(tmp_path / "c-cache"), str(src)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stderr.readline()
        assert line.strip() == marker("shard-after-piece"), line + p.stderr.read()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    fresh = make_store(backend_url, tmp_path, "after")
    assert fresh.versions("proj", "ds") == [0]  # no half-visible v1
    written = pieces(fresh)
    assert len(written) > 6  # the crashed commit wrote a piece: kept while its intent is young
    assert fresh.gc("proj")["pieces_removed"] == 0
    # once the intent is old (as after 24 h), gc takes the orphan pieces; v0 reads whole
    for o in list(fresh.backend.list("proj/intents/")):
        fresh.backend.delete(o.key)
    assert fresh.gc("proj")["pieces_removed"] == len(written) - 6
    assert read_tree(fresh.artifact("proj/ds:v0").download(str(tmp_path / "dl"))) == TREE
    # and the commit, run again, completes
    subprocess.run([sys.executable, str(script), str(backend_url), str(tmp_path / "c-cache"), str(src)], check=True,
                   env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, timeout=60)
    assert read_tree(fresh.artifact("proj/ds:v1").download(str(tmp_path / "dl1"))) == read_tree(src)


def test_a_first_commit_of_many_directories_syncs_its_pieces_as_a_batch(tmp_path, monkeypatch):
    """300 new pieces on the local store: their bytes made durable by one syncfs and their names
    by one fsync per directory, not an fsync each, and every piece there (and read back whole) once the head exists."""
    from artfs.backends import local

    store = make_store(tmp_path / "store", tmp_path)
    blob = tmp_path / "blob"
    blob.write_bytes(b"b\n")
    from artfs._digest import digest_bytes

    d = digest_bytes(b"b\n")
    entries = [Entry(f"d{k:03d}/f{k}.bin", d, 2) for k in range(300)]  # 300 distinct pieces
    syncs = {"fsync": 0, "syncfs": 0}
    real_fsync, real_syncfs = os.fsync, local._syncfs

    def fsync(fd):
        syncs["fsync"] += 1
        real_fsync(fd)

    def syncfs(fd):
        syncs["syncfs"] += 1
        real_syncfs(fd)

    monkeypatch.setattr(local.os, "fsync", fsync)
    monkeypatch.setattr(local, "_syncfs", syncfs)
    store.commit("proj", "ds", type="dataset", entries=entries, sources={d: str(blob)})
    assert len(pieces(store)) == 301  # a piece per directory and the root's
    # the bytes: one syncfs for all; the names: one fsync per directory holding pieces (at most
    # 256 of them, <2>/ under trees/xxh128/), the fixed directories above them and the blob's, the
    # intent's and the head's: none per piece
    dirs = {os.path.dirname(p) for p in pieces(store)}
    assert syncs["syncfs"] == 1, syncs
    assert syncs["fsync"] <= len(dirs) + 32 < 301, (syncs, len(dirs))  # + the fixed ones above them
    fresh = make_store(tmp_path / "store", tmp_path, "fresh")
    assert [e.path for e in fresh.manifest("proj", "ds", 0).entries] == [e.path for e in entries]


# -- tampered pieces -----------------------------------------------------------------------------

def _plant(store, files, dirs):
    """A piece with the given JSON lists written under its true digest; returns the digest."""
    data = json.dumps({"format": 2, "files": files, "dirs": dirs}, separators=(",", ":")).encode()
    d = piece_digest(data)
    store.backend.put(tree_key("proj", d), data)
    return d


def _point_root_at(store, digest, count, size, ndirs=0):
    h = head(store, 0)
    h["root"] = {"tree": digest, "count": count, "dirs": ndirs, "size": size, "subdirs": ndirs}
    store.backend.delete("proj/artifacts/ds/versions/0.json")
    store.backend.put("proj/artifacts/ds/versions/0.json", json.dumps(h).encode())


def test_a_tampered_piece_is_refused_naming_it(tmp_path):
    url = tmp_path / "store"
    store = make_store(url, tmp_path)
    log(store, TREE)
    root = head(store, 0)["root"]["tree"]
    key = tree_key("proj", root)
    path = os.path.join(str(url), *key.split("/"))
    good = open(path, "rb").read()
    os.chmod(path, 0o644)
    with open(path, "wb") as f:  # a byte changed in the store: no longer its digest
        f.write(good.replace(b'"README.md"', b'"README.mx"'))
    with pytest.raises(CorruptData, match=rf"proj/ds:v0.*piece {root} does not match its digest"):
        list(make_store(url, tmp_path, "r1").manifest("proj", "ds", 0).entries)
    digest = "xxh128:" + "1" * 32
    cases = [
        ([{"path": "..", "digest": digest, "size": 1}], [], InvalidPath, r"piece xxh128:\w+: .*'\.\.'"),
        ([{"path": "a/../x", "digest": digest, "size": 1}], [], InvalidPath, r"piece xxh128:\w+"),
        ([{"path": "big", "digest": digest, "size": 1 << 60}], [], CorruptData, r"piece xxh128:\w+: .*impossible size"),
        ([], [{"name": "..", "tree": digest, "count": 1, "dirs": 0, "size": 1, "subdirs": 0}], InvalidPath, r"piece xxh128:\w+"),
    ]
    for i, (files, dirs, exc, pattern) in enumerate(cases):
        d = _plant(store, files, dirs)
        _point_root_at(store, d, 1, 1, 0)
        with pytest.raises(exc, match=pattern) as e:
            list(make_store(url, tmp_path, f"r{i + 2}").manifest("proj", "ds", 0).entries)
        assert d in str(e.value)
    # a parent that misstates its child's totals
    child = _plant(store, [{"path": "f", "digest": digest, "size": 5}], [])
    top = _plant(store, [], [{"name": "sub", "tree": child, "count": 2, "dirs": 0, "size": 5, "subdirs": 0}])
    _point_root_at(store, top, 2, 5, 1)
    with pytest.raises(CorruptData, match=rf"directory 'sub'.*piece {child} holds 1 files"):
        list(make_store(url, tmp_path, "r9").manifest("proj", "ds", 0).entries)
    # and a head naming a piece the store lacks
    _point_root_at(store, "xxh128:" + "2" * 32, 1, 1)
    with pytest.raises(CorruptData, match="missing from the store"):
        list(make_store(url, tmp_path, "r10").manifest("proj", "ds", 0).entries)


def test_lazy_entries_answer_len_and_size_without_reading_pieces(tmp_path):
    url = tmp_path / "store"
    log(make_store(url, tmp_path), TREE)
    fresh = make_store(url, tmp_path, "fresh")
    m = fresh.manifest("proj", "ds", 0)
    art = fresh.artifact("proj/ds:v0")
    assert (len(m.entries), m.size, art.file_count) == (len(TREE), sum(map(len, TREE.values())), len(TREE))
    assert fresh._pieces.reads == 0
    t = tree_of(m)
    assert t is not None and [p for p, _ in t.walk()][0] == ""


# -- the mount reads pieces lazily -----------------------------------------------------------------

def _cached_pieces(cache_dir) -> int:
    return sum(len(fs) for d, _, fs in os.walk(cache_dir) if os.sep + ".trees" + os.sep in d + os.sep)


@pytest.mark.timeout(90)
@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
def test_the_mount_reads_a_sharded_version_piece_by_piece(tmp_path):
    from artfsd.testing import MountProcess

    store = make_store(tmp_path / "store", tmp_path)
    files = {f"d{i:02d}/sub/f{j}.txt": f"{i}-{j}\n".encode() for i in range(30) for j in range(4)}
    files["top.txt"] = b"top\n"
    files["d07/run.sh"] = b"#!/bin/sh\n"
    art = artfs.Artifact("ds", type="dataset")
    for rel, data in files.items():
        with art.new_file(rel, mode="wb") as f:
            f.write(data)
    store.log_artifact(art, project="proj")
    log(store, dict(files, **{"d03/sub/f1.txt": b"changed\n"}))
    mc = tmp_path / "mc"
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=mc) as m:
        v0 = m.path("proj", "ds", "v0")
        st = os.stat(os.path.join(v0, "d05", "sub", "f2.txt"))
        assert st.st_size == len(b"5-2\n")
        # the root, d05/ and d05/sub/: no other directory's piece was read
        assert _cached_pieces(mc) == 3
        assert sorted(os.listdir(v0)) == sorted({p.split("/")[0] for p in files})
        got = {}
        for d, _, fs in os.walk(v0):
            for fn in fs:
                p = os.path.join(d, fn)
                got[os.path.relpath(p, v0)] = open(p, "rb").read()
        assert got == files
        ino = {os.stat(os.path.join(v0, p)).st_ino for p in files}
        assert len(ino) == len(files)  # every file its own inode
        assert os.getxattr(os.path.join(v0, "top.txt"), "user.artfs.digest").decode() == \
            artfs.digest_bytes(b"top\n")
        d = json.loads(os.getxattr(m.path("proj", "ds", "v1"), "user.artfs.diff_parent"))
        assert [c["path"] for c in d["changes"]] == ["d03/sub/f1.txt"]
        assert not os.path.exists(os.path.join(v0, "d05", "nope"))
        with pytest.raises(NotADirectoryError):
            os.listdir(os.path.join(v0, "top.txt"))


def test_a_lazy_tree_answers_as_the_whole_index_does(tmp_path):
    """artfsd/tree.py: LazyTree (a sharded version, read a directory at a time) lists every
    directory in the same name order with the same sizes, digests and executable bits as
    VersionTree (the whole index of the same entries), and its node ids stay in its range."""
    from artfsd.tree import LazyTree, VersionTree, tree_for

    files = {"b/z.txt": b"zz", "b/a.txt": b"a", "b/c/deep.bin": b"deep!", "run.sh": b"#!", "a.txt": b"x",
             "é/ü.txt": b"u", "b/c/e/f": b"", "a-b/c": b"c", "a.b": b"ab"}
    store = make_store(tmp_path / "store", tmp_path)
    art = artfs.Artifact("ds", type="dataset")
    for rel, data in files.items():
        with art.new_file(rel, mode="wb") as f:
            f.write(data)
    store.log_artifact(art, project="proj")
    m = make_store(tmp_path / "store", tmp_path, "fresh").manifest("proj", "ds", 0)
    lazy = tree_for(m)
    whole = VersionTree(artfs._manifest.Manifest(m.project, m.artifact, 0, m.type, list(m.entries), m.digest,
                                                 m.created))
    assert isinstance(lazy, LazyTree) and lazy.size == len(files) + 6  # 9 files, 5 directories and the root

    def listing(tree, node, path=""):
        out = []
        tree.load_dir(node)
        for i in tree.slots(tree.dir_of(node)):
            child, name = tree.slot_node(i), tree.slot_name(i).decode()
            p = f"{path}/{name}" if path else name
            assert 0 <= child < tree.size
            if tree.is_dir(child):
                out.append((p, "dir", tree.nlink(child)))
                out += listing(tree, child, p)
            else:
                out.append((p, tree.sizes[child], tree.digest(child), tree.executable(child), tree.path(child)))
        return out

    got = listing(lazy, lazy.root)
    assert lazy.nlink(lazy.root) == whole.nlink(whole.root) == 2 + 3  # a-b/, b/, é/
    assert got == listing(whole, whole.root)
    assert [x[0] for x in got if x[1] != "dir"] == sorted(files, key=lambda p: [c.encode() for c in p.split("/")])
    ids = [lazy.lookup(lazy.dir_of(lazy.root), n.encode()) for n in ("a.txt", "b", "run.sh")]
    assert len(set(ids)) == 3 and all(i is not None for i in ids)


def test_the_mount_answers_with_a_tree_it_unloads_at_once(tmp_path):
    """A version whose tree is over the mount's budget of loaded trees is unloaded as soon as it is
    idle; a request is still answered with the tree it just loaded (it was EIO)."""
    import trio

    from artfs.lowlevel import LazyBlobs, MountConfig
    from artfsd.fs import Operations

    import pyfuse3

    store = make_store(tmp_path / "store", tmp_path)
    log(store, TREE)
    mstore = Store(store.url, cache=Cache(str(tmp_path / "mount-cache")))
    cfg = MountConfig(store_url=store.url, mountpoint=str(tmp_path / "mnt"), read_only=True, refresh=0.0,
                      timeout=10.0, lineage=False)
    ops = Operations(mstore, LazyBlobs(mstore, timeout=cfg.timeout), cfg)

    class Ctx:
        uid, gid, pid, umask = os.getuid(), os.getgid(), os.getpid(), 0o022

    async def main():
        ops.ns.tree_budget = 0
        sizes = {}
        for path, data in TREE.items():
            attr = await ops.getattr(pyfuse3.ROOT_INODE, Ctx())
            for part in ["proj", "ds", "v0", *path.split("/")]:
                attr = await ops.lookup(attr.st_ino, part.encode(), Ctx())
            sizes[path] = attr.st_size
        return sizes

    assert trio.run(main) == {p: len(d) for p, d in TREE.items()}
