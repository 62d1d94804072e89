"""Drafts (artfs._draft): a model-based test against a real directory, crash tests, commit protocol.

No FUSE here: the draft is a library; the mount is a thin adapter over it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import artfs
from artfs import Artifact, Cache, InvalidPath, Store, StoreUnavailable
from artfs._draft import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT,
    Draft,
    DraftBusy,
    Drafts,
)
from crashpoints import crash_env, marker

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def make_store(tmp: str, url: str | None = None) -> Store:
    return Store(url or os.path.join(tmp, "store"), cache=Cache(os.path.join(tmp, "cache"), max_size="1G"))


def write_tree(root: str, files: dict[str, bytes | tuple[bytes, bool]]) -> None:
    for path, v in files.items():
        data, exe = v if isinstance(v, tuple) else (v, False)
        p = os.path.join(root, *path.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, 0o755 if exe else 0o644)


def log(store: Store, files: dict[str, bytes | tuple[bytes, bool]], project: str = "p", artifact: str = "art",
        type: str = "dataset") -> int:
    with tempfile.TemporaryDirectory() as d:
        write_tree(d, files)
        art = Artifact(artifact, type=type)
        art.add_dir(d)
        v = store.log_artifact(art, project=project)
    return int(v.version[1:])


def read_dir(root: str) -> dict[str, tuple[bytes, bool]]:
    """Files under ``root``: path -> (bytes, executable)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for fn in files:
            p = os.path.join(dirpath, fn)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = (f.read(), bool(os.stat(p).st_mode & stat.S_IXUSR))
    return out


def read_version(store: Store, project: str, artifact: str, n: int) -> dict[str, tuple[bytes, bool]]:
    with tempfile.TemporaryDirectory() as d:
        store.artifact(f"{project}/{artifact}:v{n}").download(d)
        return read_dir(d)


def walk_draft(d: Draft, store: Store, project: str = "p") -> dict[str, tuple]:
    """The draft as path -> ("d",) | ("f", bytes, exec) | ("l", target)."""
    out: dict[str, tuple] = {}

    def content(ino: int) -> bytes:
        sp = d.namespace.staged_path(ino)
        if sp is not None:
            with open(sp, "rb") as f:
                return f.read()
        e = d.namespace.base_entry(ino)
        with open(store.fetch_blob(project, e.digest), "rb") as f:
            return f.read()

    def walk(ino: int, prefix: str) -> None:
        for name, a in d.namespace.readdir(ino):
            path = prefix + name
            if a.kind == "dir":
                out[path] = ("d",)
                walk(a.ino, path + "/")
            elif a.kind == "file":
                data = content(a.ino)
                assert a.size == len(data), path
                out[path] = ("f", data, a.executable)
            else:
                out[path] = ("l", d.namespace.readlink(a.ino))

    walk(ROOT, "")
    return out


def walk_real(root: str) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        for dn in dirs:
            out[os.path.relpath(os.path.join(dirpath, dn), root)] = ("d",)
        for fn in files:
            p = os.path.join(dirpath, fn)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = ("f", f.read(), bool(os.stat(p).st_mode & stat.S_IXUSR))
    return out


def resolve(d: Draft, path: str) -> int:
    """Inode of ``path``, failing the way the kernel's path walk does (ENOENT / ENOTDIR)."""
    ino = ROOT
    for part in path.split("/"):
        ino = d.namespace.lookup(ino, part).ino
    return ino


def parent_of(d: Draft, path: str) -> tuple[int, str]:
    head, _, name = path.rpartition("/")
    ino = resolve(d, head) if head else ROOT
    if d.namespace.getattr(ino).kind != "dir":
        raise OSError(errno.ENOTDIR, "not a directory")
    return ino, name


def staged_files(d: Draft) -> list[str]:
    return sorted(os.listdir(os.path.join(d.path, "files")))


_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
AT_FDCWD = -100


def renameat2(src: str, dst: str, flags: int) -> None:
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "no renameat2")
    if _renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@pytest.fixture
def env(tmp_path, monkeypatch):
    """(store, drafts, tmp) with everything inside the test's tmp dir."""
    monkeypatch.setenv("ARTFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ARTFS_STAGING_DIR", str(tmp_path / "staging"))
    store = make_store(str(tmp_path))
    return store, Drafts(store, root=str(tmp_path / "staging")), str(tmp_path)


BASE = {"a": b"alpha", "d/b": b"beta" * 100, "d/e/c": b"", "x": (b"#!/bin/sh\n", True)}

# --------------------------------------------------------------------------------------------
# the model: the same random operations on a Draft and on a plain directory
# --------------------------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "d", "e"])
paths = st.lists(names, min_size=1, max_size=3).map("/".join)


class DraftVersusDirectory(RuleBasedStateMachine):
    """Random operations on a draft and on a plain directory: same results, same errnos, same tree."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="artfs-draft-model-")
        self.store = make_store(self.tmp)
        log(self.store, BASE)
        self.real = os.path.join(self.tmp, "real")
        write_tree(self.real, BASE)
        self.drafts = Drafts(self.store, root=os.path.join(self.tmp, "staging"))
        self.draft = self.drafts.open("p", "art")

    def teardown(self) -> None:
        self.draft.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def both(self, real, draft) -> None:
        try:
            real()
            rerr = None
        except OSError as e:
            rerr = errno.errorcode.get(e.errno, e.errno)
        try:
            draft()
            derr = None
        except OSError as e:
            derr = errno.errorcode.get(e.errno, e.errno)
        assert rerr == derr, f"directory: {rerr}, draft: {derr}"
        event(f"{sys._getframe(1).f_code.co_name}: {rerr or 'ok'}")

    def r(self, path: str) -> str:
        return os.path.join(self.real, *path.split("/"))

    def pick(self, data, want: str = "any") -> str:
        """Mostly an existing path (of kind ``want``: "f", "d", "new" = a free name in a directory)."""
        tree = walk_real(self.real)
        if data.draw(st.integers(0, 9)) == 0:  # now and then any path at all
            return data.draw(paths)
        if want == "new":
            dirs = [""] + sorted(p for p, v in tree.items() if v[0] == "d")
            d = data.draw(st.sampled_from(dirs))
            return data.draw(names.map(lambda n: f"{d}/{n}" if d else n))
        have = sorted(p for p, v in tree.items() if want == "any" or v[0] == want)
        return data.draw(st.sampled_from(have) if have else paths)

    @rule(data=st.data(), exe=st.booleans())
    def create(self, data, exe):
        path = self.pick(data, "new")
        mode = 0o755 if exe else 0o644

        def real():
            os.close(os.open(self.r(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))
            os.chmod(self.r(path), mode)  # the umask must not decide

        def draft():
            parent, name = parent_of(self.draft, path)
            self.draft.namespace.create(parent, name, mode)

        self.both(real, draft)

    @rule(data=st.data(), offset=st.integers(0, 300), data_=st.binary(max_size=80), trunc=st.booleans())
    def write(self, data, offset, data_, trunc):
        path = self.pick(data, "f")
        flags = os.O_WRONLY | (os.O_TRUNC if trunc else 0)

        def real():
            fd = os.open(self.r(path), flags)
            try:
                os.pwrite(fd, data_, offset)
            finally:
                os.close(fd)

        def draft():
            ino = resolve(self.draft, path)
            if self.draft.namespace.getattr(ino).kind == "dir":
                raise OSError(errno.EISDIR, "is a directory")  # open(2) on a directory for writing
            p = self.draft.staging.open_for_write(ino, truncate=trunc)
            try:
                fd = os.open(p, os.O_WRONLY)
                try:
                    with self.draft.staging.writing(ino):
                        os.pwrite(fd, data_, offset)
                finally:
                    os.close(fd)
            finally:
                self.draft.staging.release(ino)

        self.both(real, draft)

    @rule(data=st.data(), size=st.integers(0, 600))
    def truncate(self, data, size):
        path = self.pick(data, "f")
        self.both(lambda: os.truncate(self.r(path), size),
                  lambda: self.draft.staging.truncate(resolve(self.draft, path), size))

    @rule(data=st.data(), flags=st.sampled_from([0, 0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE]))
    def rename(self, data, flags):
        src = self.pick(data)
        dst = self.pick(data, data.draw(st.sampled_from(["any", "new"])))

        def draft():
            op, on = parent_of(self.draft, src)
            np, nn = parent_of(self.draft, dst)
            self.draft.namespace.rename(op, on, np, nn, flags)

        real = (lambda: os.rename(self.r(src), self.r(dst))) if not flags else (
            lambda: renameat2(self.r(src), self.r(dst), flags))
        self.both(real, draft)

    @rule(data=st.data())
    def unlink(self, data):
        path = self.pick(data)
        self.both(lambda: os.unlink(self.r(path)), lambda: self.draft.namespace.unlink(*parent_of(self.draft, path)))

    @rule(data=st.data())
    def mkdir(self, data):
        path = self.pick(data, "new")
        self.both(lambda: os.mkdir(self.r(path)), lambda: self.draft.namespace.mkdir(*parent_of(self.draft, path)))

    @rule(data=st.data())
    def rmdir(self, data):
        path = self.pick(data, "d")
        self.both(lambda: os.rmdir(self.r(path)), lambda: self.draft.namespace.rmdir(*parent_of(self.draft, path)))

    @rule(data=st.data(), exe=st.booleans())
    def chmod(self, data, exe):
        path = self.pick(data, "f")
        if not os.path.isfile(self.r(path)):
            return
        mode = 0o755 if exe else 0o644
        self.both(lambda: os.chmod(self.r(path), mode), lambda: self.draft.namespace.chmod(resolve(self.draft, path), mode))

    @rule()
    def reopen(self):
        self.draft.close()
        self.draft = self.drafts.open("p", "art")

    @rule()
    def commit(self):
        before = self.store.versions("p", "art")
        base = self.draft.base_version
        result = self.draft.commit(self.store)
        files = read_dir(self.real)
        if result is None:  # the draft equals its base: the latest, or an earlier version it matched
            assert self.store.versions("p", "art") == before
            assert read_version(self.store, "p", "art", base if base is not None else before[-1]) == files
        elif result.created:
            assert self.store.versions("p", "art") == before + [result.version]
            assert read_version(self.store, "p", "art", result.version) == files
        else:  # the same content as an earlier version (changes reverted): matched, nothing new
            assert self.store.versions("p", "art") == before and result.version in before
            assert read_version(self.store, "p", "art", result.version) == files
        st_ = self.draft.status()
        assert not st_.differs, st_.summary()
        assert self.draft.commit(self.store) is None

    @invariant()
    def same_tree(self):
        assert walk_draft(self.draft, self.store) == walk_real(self.real)

    @invariant()
    def staging_holds_only_staged_files(self):
        staged = [r[0] for r in self.draft.db.q("SELECT fid FROM nodes WHERE fid IS NOT NULL")]
        assert staged_files(self.draft) == sorted(staged)


TestDraftVersusDirectory = pytest.mark.timeout(600)(DraftVersusDirectory.TestCase)
TestDraftVersusDirectory.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --------------------------------------------------------------------------------------------
# copy-up, equality, namespace details
# --------------------------------------------------------------------------------------------


def test_copy_up_only_on_write(env):
    store, drafts, _ = env
    log(store, BASE)
    calls = []

    def fetch(entry, dst):
        calls.append(entry.path)
        with open(dst, "wb") as f, open(store.fetch_blob("p", entry.digest), "rb") as src:
            f.write(src.read())

    d = drafts.open("p", "art", fetch=fetch)
    # reading the namespace, renaming, chmod and unlink never copy anything
    assert sorted(n for n, _ in d.namespace.readdir(ROOT)) == ["a", "d", "x"]
    d.namespace.rename(ROOT, "a", resolve(d, "d"), "a2")
    d.namespace.chmod(resolve(d, "x"), 0o644)
    d.namespace.unlink(resolve(d, "d"), "b")
    d.staging.truncate(resolve(d, "d/a2"), 5)  # same size: nothing to do
    assert staged_files(d) == [] and calls == []
    # O_TRUNC and truncate(0) need no copy of the old bytes
    p = d.staging.open_for_write(resolve(d, "x"), truncate=True)
    d.staging.release(resolve(d, "x"))
    assert os.path.getsize(p) == 0 and calls == []
    d.staging.truncate(resolve(d, "d/e/c"), 0)  # already empty: stays a base file
    assert len(staged_files(d)) == 1
    # a write copies the base bytes up first
    ino = resolve(d, "d/a2")
    d.staging.pwrite(ino, b"A", 0)
    assert calls == ["d/a2"] and len(staged_files(d)) == 2
    with open(d.namespace.staged_path(ino), "rb") as f:
        assert f.read() == b"Alpha"
    assert d.namespace.base_entry(resolve(d, "d/e/c")) is not None  # untouched base file: not staged
    st_ = d.status()
    assert sorted(st_.changed) == ["x"] and st_.added == ["d/a2"] and sorted(st_.removed) == ["a", "d/b"]
    r = d.commit(store, description="edited")
    assert r.created and r.version == 1
    assert read_version(store, "p", "art", 1) == {"d/a2": (b"Alpha", False), "d/e/c": (b"", False),
                                                   "x": (b"", False)}
    assert store.manifest("p", "art", 1).description == "edited"
    assert staged_files(d) == [] and d.base_version == 1 and not d.dirty


def test_equal_to_base_commits_nothing(env):
    store, drafts, _ = env
    log(store, BASE)
    d = drafts.open("p", "art")
    # the same bytes written again
    d.staging.pwrite(resolve(d, "a"), b"alpha", 0)
    assert len(staged_files(d)) == 1
    # a change reverted
    ino = resolve(d, "d/b")
    d.staging.truncate(ino, 3)
    d.staging.pwrite(ino, b"a" + b"beta" * 99, 3)
    # renamed away and back, a file created and removed, exec bit off and on
    d.namespace.rename(ROOT, "x", ROOT, "y")
    d.namespace.rename(ROOT, "y", ROOT, "x")
    d.namespace.chmod(resolve(d, "x"), 0o644)
    d.namespace.chmod(resolve(d, "x"), 0o755)
    d.namespace.unlink(ROOT, "a")
    d.staging.pwrite(d.namespace.create(ROOT, "a"), b"alpha", 0)
    t = d.namespace.create(ROOT, "tmp")
    d.namespace.unlink(ROOT, "t" + "mp")
    assert not d.status().differs
    assert d.commit(store) is None
    assert store.versions("p", "art") == [0]
    assert staged_files(d) == []  # equal staged copies are dropped: the base has those bytes
    assert not d.dirty
    assert walk_draft(d, store) == walk_real_from(BASE)
    del t


def walk_real_from(files):
    with tempfile.TemporaryDirectory() as tmp:
        write_tree(tmp, files)
        return walk_real(tmp)


def test_new_artifact(env):
    store, drafts, _ = env
    d = drafts.open("p", "fresh")
    assert d.base_version is None and d.namespace.readdir(ROOT) == []
    assert d.commit(store) is None  # nothing in it: no version
    d.namespace.mkdir(ROOT, "empty")
    assert d.commit(store) is None  # empty directories are not part of a version
    sub = d.namespace.mkdir(ROOT, "m")
    d.staging.pwrite(d.namespace.create(sub, "w.bin", 0o755), b"weights", 0)
    d.set_type("model")
    d.set_description("first")
    d.set_metadata({"acc": 0.9})
    d.set_aliases(["best"])
    r = d.commit(store, aliases=["prod"])
    assert (r.version, r.created) == (0, True)
    m = store.manifest("p", "fresh", 0)
    assert m.type == "model" and m.description == "first" and m.metadata == {"acc": 0.9}
    assert [(e.path, e.executable) for e in m.entries] == [("m/w.bin", True)]
    assert store.aliases("p", "fresh") == {"best": 0, "prod": 0, "latest": 0}
    assert d.pending() == {"description": None, "type": "model", "metadata": {}, "aliases": []}
    assert sorted(n for n, _ in d.namespace.readdir(ROOT)) == ["empty", "m"]  # the draft keeps the empty dir


def test_errors(env):
    store, drafts, _ = env
    log(store, BASE)
    d = drafts.open("p", "art")
    dd = resolve(d, "d")
    a = resolve(d, "a")

    def err(code, fn, *args):
        with pytest.raises(OSError) as e:
            fn(*args)
        assert e.value.errno == code, (fn.__name__, args, e.value)

    err(errno.ENOENT, d.namespace.lookup, ROOT, "nope")
    err(errno.ENOTDIR, d.namespace.lookup, a, "x")
    err(errno.EEXIST, d.namespace.create, ROOT, "a")
    err(errno.EEXIST, d.namespace.mkdir, ROOT, "d")
    err(errno.EISDIR, d.namespace.unlink, ROOT, "d")
    err(errno.ENOTDIR, d.namespace.rmdir, ROOT, "a")
    err(errno.ENOTEMPTY, d.namespace.rmdir, ROOT, "d")
    err(errno.EINVAL, d.namespace.rename, ROOT, "d", resolve(d, "d/e"), "d2")
    err(errno.ENOTEMPTY, d.namespace.rename, resolve(d, "d/e"), "c", ROOT, "d")
    err(errno.EISDIR, d.namespace.rename, ROOT, "a", ROOT, "d")
    err(errno.ENOTDIR, d.namespace.rename, ROOT, "d", ROOT, "a")
    err(errno.EEXIST, d.namespace.rename, ROOT, "a", ROOT, "x", RENAME_NOREPLACE)
    err(errno.ENOENT, d.namespace.rename, ROOT, "a", ROOT, "zz", RENAME_EXCHANGE)
    err(errno.EINVAL, d.namespace.rename, ROOT, "a", ROOT, "x", RENAME_NOREPLACE | RENAME_EXCHANGE)
    err(errno.EISDIR, d.staging.open_for_write, dd)
    err(errno.EISDIR, d.staging.truncate, dd, 0)
    err(errno.EINVAL, d.staging.truncate, a, -1)
    err(errno.EINVAL, d.namespace.readlink, a)
    err(errno.ENOENT, d.namespace.getattr, 99999)
    for bad in ("", ".", "..", "a/b", "x\x00y", b"\xff"):
        with pytest.raises(InvalidPath):
            d.namespace.create(ROOT, bad)
        with pytest.raises(InvalidPath):
            d.namespace.mkdir(ROOT, bad)
    # a component over NAME_MAX (255 bytes) is ENAMETOOLONG everywhere, as on a local disk
    long = "n" * 256
    for fn, args in ((d.namespace.create, (ROOT, long)), (d.namespace.mkdir, (ROOT, long)), (d.namespace.symlink, (ROOT, long, "a")),
                     (d.namespace.lookup, (ROOT, long)), (d.namespace.unlink, (ROOT, long)), (d.namespace.rmdir, (ROOT, long)),
                     (d.namespace.rename, (ROOT, "a", ROOT, long)), (d.namespace.rename, (ROOT, long, ROOT, "zz"))):
        err(errno.ENAMETOOLONG, fn, *args)
    assert d.namespace.getattr(d.namespace.create(ROOT, "é" * 127)).kind == "file"  # 254 bytes: fine
    with pytest.raises(InvalidPath):
        d.namespace.rename(ROOT, "a", ROOT, "..")
    err(errno.ENOENT, d.namespace.lookup, ROOT, "..")  # a name that cannot exist is simply not there
    # exchange swaps a file and a directory
    d.namespace.rename(ROOT, "a", ROOT, "d", RENAME_EXCHANGE)
    assert d.namespace.lookup(ROOT, "a").kind == "dir" and d.namespace.lookup(ROOT, "d").ino == a
    assert d.namespace.lookup(ROOT, "a").ino == dd


def test_inodes_are_stable(env):
    store, drafts, _ = env
    log(store, BASE)
    d = drafts.open("p", "art")
    a = resolve(d, "a")
    d.namespace.rename(ROOT, "a", resolve(d, "d/e"), "moved")
    assert resolve(d, "d/e/moved") == a
    n = d.namespace.create(ROOT, "new")
    d.namespace.unlink(ROOT, "new")
    n2 = d.namespace.create(ROOT, "new")
    assert n2 > n  # never reused
    d.close()
    d = drafts.open("p", "art")
    assert resolve(d, "d/e/moved") == a and resolve(d, "new") == n2
    attrs = d.namespace.readdir(ROOT)
    assert [a.ino for _, a in attrs] == sorted(a.ino for _, a in attrs)
    # readdir continues after a cookie even when entries before it went away
    first = attrs[0][1].ino
    rest = d.namespace.readdir(ROOT, after=first)
    assert [x for x, _ in rest] == [x for x, _ in attrs[1:]]


def test_symlinks(env):
    store, drafts, _ = env
    log(store, BASE)
    d = drafts.open("p", "art")
    dd = resolve(d, "d")
    d.namespace.symlink(ROOT, "la", "a")
    d.namespace.symlink(dd, "up", "../x")
    d.namespace.symlink(ROOT, "ld", "d/e")
    assert d.namespace.readlink(resolve(d, "la")) == "a" and d.namespace.getattr(resolve(d, "la")).size == 1
    st_ = d.status()
    assert sorted(st_.added) == ["d/up", "la", "ld/c"] and not st_.problems
    for name, target in [("abs", "/etc/passwd"), ("out", "../../x"), ("dangling", "nope"), ("loop", "."),
                         ("self", "self")]:
        d.namespace.symlink(ROOT, name, target)
    st_ = d.status()
    assert len(st_.problems) == 5, st_.problems
    with pytest.raises(InvalidPath, match="absolute.*|.*replace these symlinks"):
        d.commit(store)
    assert store.versions("p", "art") == [0]
    for name in ("abs", "out", "dangling", "loop", "self"):
        d.namespace.unlink(ROOT, name)
    r = d.commit(store)
    got = read_version(store, "p", "art", r.version)
    assert got["la"] == got["a"] and got["d/up"] == got["x"] == (b"#!/bin/sh\n", True)
    assert got["ld/c"] == (b"", False)
    # the draft keeps its symlinks, and is equal to the version it made
    assert d.namespace.readlink(resolve(d, "la")) == "a" and not d.status().differs
    assert d.commit(store) is None


def test_busy(env):
    store, drafts, _ = env
    log(store, BASE)
    d = drafts.open("p", "art", owner={"what": "artfs mount", "mountpoint": "/mnt/x"})
    with pytest.raises(DraftBusy, match="mounted at /mnt/x"):
        drafts.open("p", "art")
    st_ = drafts.list()[0].status(all=True)  # a held draft can still be looked at
    assert st_.busy["mountpoint"] == "/mnt/x"
    d.close()
    drafts.open("p", "art").close()


def test_status_reports_written_files(env):
    store, drafts, _ = env
    log(store, BASE)
    d = drafts.open("p", "art")
    d.staging.pwrite(d.namespace.create(ROOT, "new"), b"12345", 0)
    d.staging.pwrite(resolve(d, "a"), b"ALPHA", 0)
    d.namespace.unlink(resolve(d, "d"), "b")
    st_ = d.status()
    assert (st_.added, st_.changed, st_.removed) == (["new"], ["a"], ["d/b"])
    assert (st_.added_bytes, st_.changed_bytes, st_.removed_bytes) == (5, 5, 400)
    assert "1 added" in st_.summary() and json.dumps(st_.to_json())
    # mtime/size unchanged but a write was announced: the cached digest is not trusted
    ino = resolve(d, "new")
    p = d.namespace.staged_path(ino)
    mt = os.stat(p).st_mtime_ns
    d.staging.mark_modified(ino)
    with open(p, "r+b") as f:
        f.write(b"54321")
    os.utime(p, ns=(mt, mt))
    assert d.entries()[[e.path for e in d.entries()].index("new")].digest == artfs.digest_bytes(b"54321")


def test_refresh_moves_a_clean_draft_to_latest(env):
    store, drafts, _ = env
    log(store, BASE)
    d = drafts.open("p", "art")
    d.close()
    log(store, {"only": b"v1"})
    d = drafts.open("p", "art")
    assert d.base_version == 1 and [n for n, _ in d.namespace.readdir(ROOT)] == ["only"]
    d.staging.pwrite(resolve(d, "only"), b"!", 2)
    d.close()
    log(store, {"other": b"v2"})
    d = drafts.open("p", "art")  # dirty: it keeps its base; the commit records what the user made
    assert d.base_version == 1
    r = d.commit(store)
    assert r.version == 3 and read_version(store, "p", "art", 3) == {"only": (b"v1!", False)}


def test_two_drafts_commit_at_once(env, tmp_path):
    store, _, tmp = env
    log(store, BASE)
    drafts = [Drafts(make_store(tmp), root=str(tmp_path / f"staging{i}")) for i in range(2)]
    ds = [dr.open("p", "art") for dr in drafts]
    for i, d in enumerate(ds):
        d.staging.pwrite(d.namespace.create(ROOT, f"mine{i}"), b"x" * (i + 1), 0)
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def run(i):
        barrier.wait()
        results[i] = ds[i].commit(drafts[i].store)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.version for r in results) == [1, 2] and all(r.created for r in results)
    assert store.versions("p", "art") == [0, 1, 2]
    for i, r in enumerate(results):
        assert read_version(store, "p", "art", r.version)[f"mine{i}"] == (b"x" * (i + 1), False)


def test_writes_during_commits(env):
    """Writers from other threads never change bytes between hashing and upload."""
    store, drafts, _ = env
    log(store, BASE)
    d = drafts.open("p", "art")
    ino = d.namespace.create(ROOT, "hot")
    path = d.staging.open_for_write(ino)  # held open for the whole test, like a FUSE write handle
    fd = os.open(path, os.O_WRONLY)
    stop = threading.Event()
    written = [0]

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            with d.staging.writing(ino):
                os.pwrite(fd, os.urandom(4096) * (1 + i % 64), (i % 7) * 1000)
            written[0] += 1

    def namespace():
        i = 0
        while not stop.is_set():
            i += 1
            n = d.namespace.create(ROOT, f"tmp{i}")
            d.staging.pwrite(n, b"%d" % i, 0)
            d.namespace.rename(ROOT, f"tmp{i}", resolve(d, "d"), f"t{i}")
            if i % 3:
                d.namespace.unlink(resolve(d, "d"), f"t{i}")

    threads = [threading.Thread(target=writer), threading.Thread(target=namespace)]
    for t in threads:
        t.start()
    try:
        versions = []
        for _ in range(4):
            time.sleep(0.05)
            r = d.commit(store)
            assert r is not None
            versions.append(r.version)
    finally:
        stop.set()
        for t in threads:
            t.join()
        os.close(fd)
    assert written[0] > 0
    for n in versions:
        read_version(store, "p", "art", n)  # every blob verified against its digest on the way
    assert d.namespace.staged_path(ino) == path  # still open for writing: it stayed staged
    d.staging.release(ino)
    d.commit(store)
    assert d.namespace.staged_path(ino) is None and not d.dirty


def test_store_down_local(env, tmp_path):
    store, drafts, tmp = env
    log(store, BASE)
    d = drafts.open("p", "art")
    d.staging.pwrite(d.namespace.create(ROOT, "precious"), b"do not lose me", 0)
    before = walk_draft(d, store)
    root = str(tmp_path / "store")
    os.rename(root, root + ".away")
    with open(root, "w") as f:  # the store's root is now a file: every access fails
        f.write("not a directory")
    with pytest.raises(artfs.ArtfsError, match=r"commit failed.*artfs commit p/art"):
        d.commit(store)
    os.unlink(root)
    os.rename(root + ".away", root)
    assert walk_draft(d, store) == before and d.status().added == ["precious"]
    r = d.commit(store)
    assert r.created and read_version(store, "p", "art", r.version)["precious"] == (b"do not lose me", False)


def test_store_down_s3(s3_url, tmp_path):
    from artfs.backends.s3 import S3Backend
    from artfs.testing import free_port

    cache = Cache(str(tmp_path / "cache"), max_size="1G")
    store = Store(s3_url, cache=cache)
    log(store, BASE)
    drafts = Drafts(store, root=str(tmp_path / "staging"))
    d = drafts.open("p", "art")
    d.staging.pwrite(d.namespace.create(ROOT, "precious"), b"do not lose me", 0)
    dead = Store(backend=S3Backend(s3_url, endpoint_url=f"http://127.0.0.1:{free_port()}", timeout=1), cache=cache)
    assert dead.id == store.id
    t = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"commit failed.*retry with `artfs commit p/art`"):
        d.commit(dead)
    assert time.monotonic() - t < 20
    assert d.status().added == ["precious"]
    r = d.commit(store)
    assert r.created and read_version(store, "p", "art", r.version)["precious"] == (b"do not lose me", False)


# --------------------------------------------------------------------------------------------
# crashes: a child process SIGKILLed at a chosen point
# --------------------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, sys, time
    from artfs import Cache, Store
    from artfs._draft import Drafts, ROOT
    tmp, what = sys.argv[1], sys.argv[2]
    store = Store(os.path.join(tmp, "store"), cache=Cache(os.path.join(tmp, "cache"), max_size="1G"))
    d = Drafts(store, root=os.path.join(tmp, "staging")).open("p", "art")

    def write(ino, data, off=0, trunc=False):
        p = d.staging.open_for_write(ino, truncate=trunc)
        fd = os.open(p, os.O_WRONLY)
        with d.staging.writing(ino):
            os.pwrite(fd, data, off)
        os.close(fd)
        d.staging.release(ino)

    if what == "edit":
        for i in range(20):
            write(d.namespace.create(ROOT, f"f{i:02d}"), os.urandom(1000) * (i + 1) if i % 2 else b"file %d" % i)
        write(d.namespace.lookup(ROOT, "a").ino, b"ALPHA")
        d.namespace.rename(ROOT, "x", d.namespace.lookup(ROOT, "d").ino, "x-moved")
        d.namespace.unlink(d.namespace.lookup(ROOT, "d").ino, "b")
        d.namespace.mkdir(ROOT, "newdir")
        # a file still open for writing when the process dies: what was written survives too
        ino = d.namespace.create(ROOT, "open-at-crash")
        fd = os.open(d.staging.open_for_write(ino), os.O_WRONLY)
        with d.staging.writing(ino):
            os.pwrite(fd, b"written, never closed", 0)
        print("ready", flush=True)
        time.sleep(600)
    elif what == "commit":
        write(d.namespace.create(ROOT, sys.argv[3]), sys.argv[3].encode())
        d.commit(store, description="from the child")
        print("committed", flush=True)
""")


def run_child(tmp: str, *args: str, pause: str | None = None, until: str = "ready") -> subprocess.Popen:
    """Run CHILD until it prints ``until``; with ``pause``, until it stops at that crash point of
    the commit protocol (tests/crashpoints.py), which it says on stderr."""
    env = crash_env(pause) if pause else dict(os.environ)
    p = subprocess.Popen([sys.executable, "-c", CHILD, tmp, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    stream = p.stderr if pause else p.stdout
    line = stream.readline().decode()
    if (line.strip() != marker(pause)) if pause else (until not in line):
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"child: {line!r} {out!r} {err!r}")
    return p


def kill(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    p.stdout.close()
    p.stderr.close()
    assert p.returncode == -signal.SIGKILL


def test_sigkill_keeps_closed_files(env):
    store, drafts, tmp = env
    log(store, BASE)
    drafts.open("p", "art").close()
    kill(run_child(tmp, "edit"))
    d = drafts.open("p", "art")  # the dead process's lock is gone with it
    tree = walk_draft(d, store)
    for i in range(20):
        data = tree[f"f{i:02d}"][1]
        assert (len(data) == 1000 * (i + 1)) if i % 2 else data == b"file %d" % i
    assert tree["a"][1] == b"ALPHA" and tree["d/x-moved"] == ("f", b"#!/bin/sh\n", True)
    assert "d/b" not in tree and "x" not in tree and tree["newdir"] == ("d",)
    assert tree["open-at-crash"][1] == b"written, never closed"
    r = d.commit(store)
    assert read_version(store, "p", "art", r.version) == {
        p: (v[1], v[2]) for p, v in tree.items() if v[0] == "f"}


def test_sigkill_after_store_commit_commits_once(env):
    store, drafts, tmp = env
    log(store, BASE)
    drafts.open("p", "art").close()
    kill(run_child(tmp, "commit", "one", pause="after-store-commit"))
    assert store.versions("p", "art") == [0, 1]  # the manifest was created, the draft not reset
    d = drafts.open("p", "art")
    st_ = d.status()
    assert st_.commit_pending and st_.added == ["one"] and d.base_version == 0
    r = d.commit(store)
    assert (r.version, r.created) == (1, False)  # found the version that attempt created
    assert store.versions("p", "art") == [0, 1]
    assert d.base_version == 1 and not d.status().differs and staged_files(d) == []
    assert d.commit(store) is None
    assert not any(o.key.startswith("p/intents/") for o in store.backend.list("p/intents/"))


def test_sigkill_after_commit_id_commits_once(env):
    store, drafts, tmp = env
    log(store, BASE)
    drafts.open("p", "art").close()
    kill(run_child(tmp, "commit", "one", pause="after-commit-id"))
    assert store.versions("p", "art") == [0]
    d = drafts.open("p", "art")
    assert d.status().commit_pending
    r = d.commit(store)
    assert (r.version, r.created) == (1, True)
    assert d.commit(store) is None and store.versions("p", "art") == [0, 1]


def test_sigkill_after_reset_leaves_only_orphans(env):
    store, drafts, tmp = env
    log(store, BASE)
    drafts.open("p", "art").close()
    kill(run_child(tmp, "commit", "one", pause="after-reset"))
    d = drafts.path("p", "art")
    assert len(os.listdir(os.path.join(d, "files"))) == 1  # reset committed, file not yet deleted
    d = drafts.open("p", "art")
    assert staged_files(d) == [] and d.base_version == 1 and not d.status().differs
    assert d.commit(store) is None and store.versions("p", "art") == [0, 1]
    assert walk_draft(d, store)["one"] == ("f", b"one", False)


def test_sigkill_after_store_commit_then_more_edits(env):
    store, drafts, tmp = env
    log(store, BASE)
    drafts.open("p", "art").close()
    kill(run_child(tmp, "commit", "one", pause="after-store-commit"))
    d = drafts.open("p", "art")
    d.staging.pwrite(d.namespace.create(ROOT, "two"), b"two", 0)  # changed after the crash: a second, real version
    r = d.commit(store)
    assert (r.version, r.created) == (2, True)
    assert store.versions("p", "art") == [0, 1, 2]
    assert "two" not in read_version(store, "p", "art", 1)
    assert read_version(store, "p", "art", 2)["two"] == (b"two", False)
    assert d.base_version == 2 and d.commit(store) is None


# --------------------------------------------------------------------------------------------
# a big base
# --------------------------------------------------------------------------------------------


def test_large_base_is_materialised_quickly(env):
    from artfs._manifest import Entry, Manifest, version_digest

    store, _, tmp = env
    entries = [Entry(f"d{i // 1000:03d}/f{i:06d}.png", artfs.digest_bytes(b"%d" % i), 10) for i in range(50_000)]
    m = Manifest("p", "big", 0, "dataset", entries, version_digest(entries), "2024-01-01T00:00:00Z")
    t = time.monotonic()
    d = Draft.start(os.path.join(tmp, "big"), store_url=store.url, store_id=store.id, project="p",
                     artifact="big", base=m)
    took = time.monotonic() - t
    assert took < 10, took
    assert len(d.namespace.readdir(resolve(d, "d049"))) == 1000
    assert d.namespace.base_entry(resolve(d, "d049/f049999.png")).digest == entries[-1].digest
    assert not d.status(hash=False).differs
    d.close()


# --------------------------------------------------------------------------------------------
# the CLI: artfs status / artfs commit
# --------------------------------------------------------------------------------------------


@pytest.fixture
def cli(env, monkeypatch, capsys):
    """``cli(*argv) -> (code, stdout, stderr)``."""
    import artfs.cli as cli_mod

    store, _, tmp = env
    monkeypatch.setenv("ARTFS_STORE", store.url[len("file://"):])

    def run(*argv):
        code = cli_mod.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_status_and_commit(env, cli, tmp_path):
    store, drafts, _ = env
    log(store, BASE)
    assert cli("status") == (0, "no drafts with changes to commit\n", "")
    d = drafts.open("p", "art")
    d.staging.pwrite(d.namespace.create(ROOT, "new"), b"12345", 0)
    d.namespace.unlink(ROOT, "a")
    d.set_description("from the draft")
    d.close()
    code, out, _ = cli("status")
    assert code == 0 and "p/art  (base v0)  1 added (5 B), 1 removed (5 B)" in out
    assert "+ new" in out and "- a" in out
    code, out, _ = cli("status", "--json")
    doc = json.loads(out)
    assert doc[0]["added"] == ["new"] and doc[0]["removed"] == ["a"] and doc[0]["differs"]

    code, out, err = cli("commit", "p/art", "-a", "best", "--metadata", "n=3")
    assert code == 0, err
    assert out.startswith("p/art:v1 created (4 files, 1 new blob, 5 B uploaded); aliases: best")
    m = store.manifest("p", "art", 1)
    assert m.description == "from the draft" and m.metadata == {"n": 3}
    assert cli("commit", "p/art")[1] == "nothing to commit: the draft of p/art equals its base v1\n"
    assert cli("status")[1] == "no drafts with changes to commit\n"
    code, out, _ = cli("status", "--all", "--json")
    assert json.loads(out)[0]["base_version"] == 1

    code, _, err = cli("commit", "p/none")
    assert code == 3 and "no draft of the store" in err
    code, _, err = cli("commit", "p/art:v1")
    assert code != 0 and "next version" in err


def test_cli_commit_refuses_a_draft_a_mount_holds(env, cli):
    store, drafts, _ = env
    log(store, BASE)
    d = drafts.open("p", "art", owner={"what": "artfs mount", "mountpoint": "/mnt/x"})
    d.staging.pwrite(d.namespace.create(ROOT, "new"), b"1", 0)
    code, _, err = cli("commit", "p/art")
    assert code == 8
    assert "held by the mount at /mnt/x" in err and "artfs commit /mnt/x/p/art/draft" in err
    code, out, _ = cli("status")  # a held draft is still listed, read without taking it over
    assert code == 0 and "1 added" in out and "mounted at /mnt/x" in out
    d.close()
    assert store.versions("p", "art") == [0]


def test_cli_commit_by_draft_path_when_not_mounted(env, cli, tmp_path):
    store, drafts, _ = env
    log(store, BASE)
    d = drafts.open("p", "art")
    d.staging.pwrite(d.namespace.create(ROOT, "new"), b"1", 0)
    d.close()
    code, out, err = cli("commit", str(tmp_path / "mnt" / "p" / "art" / "draft"))
    assert code == 0, err
    assert out.startswith("p/art:v1 created")
