"""The daemon's parts in-process, without a kernel mount (beside tests/test_fs_handlers.py).

Each part is driven as the daemon drives it, over a real local store written with the library:
the index of a version's tree (``artfsd/tree.py``), the listings of the levels above versions
(``artfsd/listings.py`` through ``artfsd/listing.py``, as the router calls them, under trio), the
per-inode bookkeeping of passthrough and cached opens (``artfsd/kernel.py``'s ``Backings``, as far
as it goes without a FUSE session: ``backing_open`` needs one), the commit of every draft at
unmount with the report ``artfs umount`` reads (``artfs/_umount.py``), and the draft handler
(``artfsd/draftfs.py`` over ``artfsd/drafts.py``): writing, renaming and unlinking in a draft, its
commit through ``setxattr user.artfs.commit`` (in the foreground, in the background, failing, as a
group's part), the typed result ``user.artfs.last_commit`` carries, and the drafts dropped at
unmount. ``pyfuse3.readdir_reply`` needs a kernel request, so listings collect their entries with a replacement, as in test_fs_handlers.py. The
read side (open, read and release of version files, small files, prefetch, the fetches in flight)
is tests/test_daemon_reads.py.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio

from artfs import Artifact, Cache, Entry, Manifest, Store
from artfs.lowlevel import COMMITTING, DraftCommit, LazyBlobs, MountConfig, UnmountReport
from artfsd.draftfs import DraftHandler
from artfsd.fs import Operations
from artfsd.kernel import Backings
from artfsd.tree import VersionTree


class Ctx:
    """What pyfuse3 passes as the request context."""

    uid, gid, pid, umask = os.getuid(), os.getgid(), os.getpid(), 0o022


CTX = Ctx()
SMALL_FILES = {f"shard-{i:02d}.bin": os.urandom(1000 + i) for i in range(12)}


def log_version(store: Store, tmp_path: Path, files: dict[str, bytes], *, name: str = "bikes",
                project: str = "cycling", aliases: tuple[str, ...] = ()) -> str:
    """Log a version of ``files``; its name (``v1``)."""
    src = tmp_path / f"src-{time.monotonic_ns()}"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    art = Artifact(name, type="dataset")
    art.add_dir(str(src))
    return str(store.log_artifact(art, project=project, aliases=aliases).version)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "writer-cache")))
    log_version(s, tmp_path, {"README.md": b"# bikes\n", **{f"train/{k}": v for k, v in SMALL_FILES.items()}})
    return s


def make_ops(store: Store, tmp_path: Path, **config: Any) -> Operations:
    """Operations as ``artfsd.main`` builds them, over the mount's own cache (refresh 0: every
    access re-lists, so what the store changed shows at once)."""
    mstore = Store(store.url, cache=Cache(str(tmp_path / "mount-cache")))
    cfg = MountConfig(**{"store_url": store.url, "mountpoint": str(tmp_path / "mnt"), "read_only": True,
                         "refresh": 0.0, "timeout": 10.0, "lineage": False, **config})
    return Operations(mstore, LazyBlobs(mstore, timeout=cfg.timeout), cfg)


@pytest.fixture
def replies(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, Any, int]]:
    got: list[tuple[bytes, Any, int]] = []

    def readdir_reply(token: Any, name: bytes, attr: Any, next_id: int) -> bool:
        got.append((name, attr, next_id))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)
    return got


async def walk(ops: Operations, path: str) -> pyfuse3.EntryAttributes:
    attr = await ops.getattr(pyfuse3.ROOT_INODE, CTX)
    for part in filter(None, path.split("/")):
        attr = await ops.lookup(attr.st_ino, part.encode(), CTX)
    return attr


async def names(ops: Operations, path: str, replies: list[Any]) -> list[str]:
    replies.clear()
    got = await ops.opendir((await walk(ops, path)).st_ino, CTX)
    fh = got if isinstance(got, int) else got.fh
    await ops.readdir(fh, 0, None)  # type: ignore[arg-type]
    await ops.releasedir(fh)
    return [n.decode() for n, _, _ in replies]


async def cat(ops: Operations, path: str) -> bytes:
    info = await ops.open((await walk(ops, path)).st_ino, os.O_RDONLY, CTX)
    out = b""
    try:
        while chunk := await ops.read(info.fh, len(out), 1 << 20):
            out += bytes(chunk)
    finally:
        await ops.release(info.fh)
    return out


# -- the tree of a version (artfsd/tree.py) ------------------------------------------------------------
def _manifest(paths: dict[str, int]) -> Manifest:
    entries = [Entry(p, f"xxh128:{i:032x}", size, executable=p.endswith(".sh"))
               for i, (p, size) in enumerate(sorted(paths.items()))]
    return Manifest(project="p", artifact="a", version=0, type="dataset", entries=entries,
                    digest="xxh128:" + "0" * 32, created="2026-12-08T00:00:00Z")


def test_a_version_tree_finds_every_path_and_lists_each_directory_in_name_order() -> None:
    paths = {"b/z.txt": 3, "b/a.txt": 1, "b/c/deep.bin": 7, "run.sh": 5, "a.txt": 2, "é/ü.txt": 4, "b/c/e/f": 0}
    m = _manifest(paths)
    tree = VersionTree(m)

    def find(path: str) -> int | None:
        node: int | None = tree.root
        for part in path.split("/"):
            assert node is not None and tree.is_dir(node)
            node = tree.lookup(tree.dir_of(node), part.encode())
        return node

    for j, e in enumerate(m.entries):
        node = find(e.path)
        assert node == j and not tree.is_dir(node)
        assert tree.sizes[node] == e.size and tree.digest(node) == e.digest
        assert tree.executable(node) == e.path.endswith(".sh")
        assert tree.path(node) == e.path
        assert tree.path(tree.dir_node(tree.file_dir(node))) == e.path.rpartition("/")[0]
    assert find("b/nope") is None and find("b/c/e/g") is None and tree.lookup(0, b"B") is None
    listing = {tree.path(tree.dir_node(d)): [tree.slot_name(i).decode() for i in tree.slots(d)]
               for d in range(tree.ndirs)}
    assert listing == {"": ["a.txt", "b", "run.sh", "é"], "b": ["a.txt", "c", "z.txt"], "b/c": ["deep.bin", "e"],
                       "b/c/e": ["f"], "é": ["ü.txt"]}
    assert tree.size == len(paths) + len(listing)  # one inode number per file and directory


# -- listings above the versions (artfsd/listings.py, listing.py) -----------------------------------
def test_listings_follow_the_store_new_versions_aliases_and_projects(store: Store, tmp_path: Path,
                                                                     replies: list[Any]) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path)
        assert await names(ops, "", replies) == ["cycling"]
        assert await names(ops, "cycling/bikes", replies) == ["latest", "v0"]
        n = log_version(store, tmp_path, {"README.md": b"# bikes, take 2\n"}, aliases=("best",))
        log_version(store, tmp_path, {"x": b"x"}, project="running", name="shoes")
        assert await names(ops, "cycling/bikes", replies) == ["best", "latest", "v0", n]
        assert await ops.readlink((await walk(ops, "cycling/bikes/latest")).st_ino, CTX) == n.encode()
        best = (await ops.readlink((await walk(ops, "cycling/bikes/best")).st_ino, CTX)).decode()
        assert await cat(ops, f"cycling/bikes/{best}/README.md") == b"# bikes, take 2\n"  # as the kernel follows it
        store.set_alias("cycling", "bikes", "best", 0)  # moved by someone else
        assert await ops.readlink((await walk(ops, "cycling/bikes/best")).st_ino, CTX) == b"v0"
        assert await names(ops, "", replies) == ["cycling", "running"]
        assert ops.ns.stats["refreshes"] > 0

    trio.run(main)


def test_a_mount_as_of_a_time_lists_what_existed_then(store: Store, tmp_path: Path, replies: list[Any]) -> None:
    then = time.time_ns()
    time.sleep(0.01)  # the next version's creation time is after `then` on any clock resolution
    log_version(store, tmp_path, {"README.md": b"later\n"})

    async def main() -> None:
        past = make_ops(store, tmp_path, as_of_ns=then)
        assert await names(past, "cycling/bikes", replies) == ["latest", "v0"]
        assert await past.readlink((await walk(past, "cycling/bikes/latest")).st_ino, CTX) == b"v0"
        with pytest.raises(pyfuse3.FUSEError):  # not there then: not probed either
            await walk(past, "cycling/bikes/v1")
        now = make_ops(store, tmp_path / "now")
        assert await names(now, "cycling/bikes", replies) == ["latest", "v0", "v1"]

    trio.run(main)


def test_a_read_only_mount_refuses_changes_a_writable_one_makes_them(store: Store, tmp_path: Path,
                                                                     replies: list[Any]) -> None:
    async def main() -> None:
        ro = make_ops(store, tmp_path)
        root = await walk(ro, "cycling")
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ro.mkdir(root.st_ino, b"cars", 0o755, CTX)
        assert e.value.errno == 30  # EROFS
        assert ro.drafts is None and "draft" not in await names(ro, "cycling/bikes", replies)
        rw = make_ops(store, tmp_path / "rw", read_only=False, staging=str(tmp_path / "staging"))
        await rw.mkdir((await walk(rw, "cycling")).st_ino, b"cars", 0o755, CTX)
        assert await names(rw, "cycling", replies) == ["bikes", "cars"]
        assert "draft" in await names(rw, "cycling/bikes", replies)

    trio.run(main)


# -- passthrough and cached opens per inode (artfsd/kernel.py) ------------------------------------------
def test_backings_keep_an_inode_in_one_mode_while_it_has_handles(tmp_path: Path) -> None:
    b = Backings(enabled=True)
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert b.open(7, -1) == 0  # no complete blob to pass through: a cached open
        assert b.cached(7) and not b.in_passthrough(7)
        # the kernel never mixes the modes on one inode: a later handle with a blob stays cached
        # (asking for a backing file here would need a FUSE session)
        assert b.open(7, fd) == 0 and b.cached(7)
        b.release(7)
        assert b.cached(7)  # one cached handle left
        b.release(7)
        assert not b.cached(7) and not b.in_passthrough(7) and len(b) == 0
        b.release(7)  # a release too many is harmless
    finally:
        os.close(fd)
    off = Backings(enabled=False)
    assert off.open(3, fd) == 0 and off.cached(3) and off.stats["passthrough_opens"] == 0


def test_without_passthrough_opens_of_a_version_file_are_cached_ones(store: Store, tmp_path: Path) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path, passthrough_off="-o no_passthrough")
        assert not ops.enable_passthrough
        ino = (await walk(ops, "cycling/bikes/v0/README.md")).st_ino
        info = await ops.open(ino, os.O_RDONLY, CTX)
        assert bytes(await ops.read(info.fh, 0, 100)) == b"# bikes\n"
        assert ops.backings.cached(ino) and len(ops.backings) == 0
        await ops.release(info.fh)
        assert not ops.backings.cached(ino)
        assert ops.stats_doc()["passthrough_files"] == 0

    trio.run(main)


# -- the commit at unmount and its report (artfsd/draft_commits.py, artfs/_umount.py) --------------------
def test_the_commit_at_unmount_reports_each_draft_as_artfs_umount_reads_it(store: Store, tmp_path: Path) -> None:
    ops = make_ops(store, tmp_path, read_only=False, staging=str(tmp_path / "staging"))

    async def write() -> None:
        await walk(ops, "cycling/bikes/latest")  # the listings know the artifact
        draft = await walk(ops, "cycling/bikes/draft")
        info, _ = await ops.create(draft.st_ino, b"notes.txt", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
        assert await ops.write(info.fh, 0, b"written in the mount\n") == 21
        await ops.release(info.fh)
        await ops.mkdir((await walk(ops, "cycling")).st_ino, b"trikes", 0o755, CTX)
        await walk(ops, "cycling/trikes/draft")  # opened, nothing written: a new artifact nobody used

    trio.run(write)
    assert ops.drafts is not None
    report = ops.drafts.finish(list(ops.files.values()))  # as artfsd.main does once unmounted
    assert [c.name for c in report.commits] == ["cycling/bikes"] and report.failed == []
    assert report.commits[0].committed and report.commits[0].version == 1
    assert "notes.txt" in {e.path for e in store.artifact("cycling/bikes:v1").manifest.entries}
    assert store.artifacts("cycling") == ["bikes"]  # the empty new artifact was dropped, not committed

    path = tmp_path / "result.json"
    done = dataclasses.replace(report, pid=123, mountpoint="/mnt/x", store=store.url, finished=1.0)
    path.write_text(done.to_json())
    read = UnmountReport.read(str(path))
    assert read == done and read.to_dict() == json.loads(path.read_text())
    assert UnmountReport.read(str(tmp_path / "none.json")) is None
    path.write_text("[1, 2]")
    assert UnmountReport.read(str(path)) is None
    committing = UnmountReport(123, "/mnt/x", store.url, COMMITTING, drafts=["cycling/bikes"], started=1.0)
    assert sorted(committing.to_dict()) == ["drafts", "mountpoint", "pid", "started", "state", "store"]


# -- the draft handler (artfsd/draftfs.py over artfsd/drafts.py) ----------------------------------------
class Files:
    """The handler's file handles, numbered as the router numbers them."""

    def __init__(self) -> None:
        self.next = 1000

    def fh(self) -> int:
        self.next += 1
        return self.next


async def write_file(h: DraftHandler, parent: int, name: bytes, data: bytes, files: Files) -> int:
    df, _, entry = await h.create(parent, name, 0o644, os.O_WRONLY | os.O_CREAT, CTX, files.fh())
    try:
        assert await h.write(df, 0, data) == len(data)
    finally:
        await h.release(df)
    return int(entry.st_ino)


async def read_file(h: DraftHandler, ino: int, files: Files) -> bytes:
    df, _ = await h.open(ino, os.O_RDONLY, CTX, files.fh())
    try:
        return bytes(await h.read(df, 0, 1 << 20))
    finally:
        await h.release(df)


async def last_commit(h: DraftHandler, draft: int) -> DraftCommit:
    got = DraftCommit.from_dict(json.loads(await h.getxattr(draft, "user.artfs.last_commit") or b"null"))
    assert got is not None
    return got


def draft_ops(store: Store, tmp_path: Path, **config: Any) -> Operations:
    return make_ops(store, tmp_path, read_only=False, staging=str(tmp_path / "staging"), **config)


def test_the_draft_handler_writes_renames_unlinks_and_commits_through_setxattr(store: Store, tmp_path: Path) -> None:
    ops, files = draft_ops(store, tmp_path), Files()
    h = ops.draft_handler

    async def main() -> DraftCommit:
        await walk(ops, "cycling/bikes/latest")  # the namespace knows the artifact
        draft = (await walk(ops, "cycling/bikes/draft")).st_ino
        ino = await write_file(h, draft, b"a.txt", b"written by the handler\n", files)
        sub = (await h.mkdir(draft, b"sub", 0o755, CTX)).st_ino
        await h.rename(draft, b"a.txt", sub, b"b.txt", 0, CTX)
        await write_file(h, draft, b"scratch.tmp", b"gone before the commit", files)
        await h.unlink(draft, b"scratch.tmp", CTX)
        await h.unlink(draft, b"README.md", CTX)  # a file of the base version
        assert (await h.lookup(sub, b"b.txt", CTX)).st_ino == ino  # a rename keeps the inode
        assert await read_file(h, ino, files) == b"written by the handler\n"
        with pytest.raises(pyfuse3.FUSEError) as e:  # the router turns the draft's OSError into its errno
            await ops.lookup(draft, b"scratch.tmp", CTX)
        assert e.value.errno == errno.ENOENT
        status = json.loads(await h.getxattr(draft, "user.artfs.status") or b"{}")
        assert (status["added"], status["removed"]) == (["sub/b.txt"], ["README.md"])
        request = {"id": "req-1", "description": "by the handler", "aliases": ["best"]}
        await h.setxattr(draft, "user.artfs.commit", json.dumps(request).encode(), CTX)
        result = await last_commit(h, draft)
        after = json.loads(await h.getxattr(draft, "user.artfs.status") or b"{}")
        assert after["differs"] is False and after["base_version"] == 1  # the draft now shows v1
        return result

    result = trio.run(main)
    assert (result.name, result.ok, result.committed, result.version, result.created) == (
        "cycling/bikes", True, True, 1, True)
    assert result.id == "req-1" and "best" in result.aliases and result.files == 1 + len(SMALL_FILES)
    assert result.uploaded_blobs == 1 and result.uploaded_bytes == len(b"written by the handler\n")
    v1 = store.artifact("cycling/bikes:v1")
    assert v1.description == "by the handler"
    assert sorted(e.path for e in v1.manifest.entries) == ["sub/b.txt", *sorted(f"train/{k}" for k in SMALL_FILES)]
    assert store.artifact("cycling/bikes:best").version == "v1"


def test_a_draft_equal_to_its_base_commits_nothing_and_an_emptied_new_artifact_is_dropped(
        store: Store, tmp_path: Path) -> None:
    ops, files = draft_ops(store, tmp_path), Files()
    h = ops.draft_handler

    async def main() -> DraftCommit:
        await walk(ops, "cycling/bikes/latest")
        draft = (await walk(ops, "cycling/bikes/draft")).st_ino
        await h.unlink(draft, b"README.md", CTX)
        await write_file(h, draft, b"README.md", b"# bikes\n", files)  # the same bytes again
        await h.setxattr(draft, "user.artfs.commit", b"1", CTX)
        result = await last_commit(h, draft)
        await ops.mkdir((await walk(ops, "cycling")).st_ino, b"trikes", 0o755, CTX)
        trikes = (await walk(ops, "cycling/trikes/draft")).st_ino
        await write_file(h, trikes, b"tmp", b"x", files)
        await h.unlink(trikes, b"tmp", CTX)  # written to, then emptied: changed, yet holds nothing
        return result

    result = trio.run(main)
    assert (result.ok, result.committed, result.version, result.created) == (True, False, 0, False)
    assert result.to_dict()["version"] == 0 and "files" not in result.to_dict()
    assert store.versions("cycling", "bikes") == [0]
    assert ops.drafts is not None
    report = ops.drafts.finish(list(ops.files.values()))
    assert report.commits == [] and report.failed == []
    assert sorted(report.unchanged) == ["cycling/bikes", "cycling/trikes"]
    assert store.artifacts("cycling") == ["bikes"]  # the emptied new artifact made no version ...
    assert [r.artifact for r in ops.drafts.drafts.list()] == ["bikes"]  # ... and its draft is gone


def test_a_commit_that_cannot_succeed_is_a_typed_failure_and_a_background_one_reports_when_done(
        store: Store, tmp_path: Path) -> None:
    ops, files = draft_ops(store, tmp_path), Files()
    h = ops.draft_handler

    async def main() -> tuple[DraftCommit, DraftCommit, list[DraftCommit]]:
        async with trio.open_nursery() as nursery:
            ops.start(nursery)
            await walk(ops, "cycling/bikes/latest")
            draft = (await walk(ops, "cycling/bikes/draft")).st_ino
            await h.symlink(draft, b"dangling", b"nowhere", CTX)
            with pytest.raises(pyfuse3.FUSEError):  # through the router, as the kernel calls it
                await ops.setxattr(draft, b"user.artfs.commit", b'{"id": "bad"}', CTX)
            failed = await last_commit(h, draft)
            await h.unlink(draft, b"dangling", CTX)
            await write_file(h, draft, b"late.txt", b"committed in the background\n", files)
            await h.setxattr(draft, "user.artfs.commit", b'{"id": "bg", "wait": false}', CTX)
            seen = [await last_commit(h, draft)]  # answered at once
            with trio.fail_after(30):  # a hang guard, not a threshold
                while seen[-1].ok is None:
                    await trio.sleep(0.01)
                    seen.append(await last_commit(h, draft))
            with pytest.raises(pyfuse3.FUSEError) as e:  # what the request says must be JSON
                await h.setxattr(draft, "user.artfs.commit", b"{not json", CTX)
            assert e.value.errno == errno.EINVAL
            nursery.cancel_scope.cancel()
        return failed, seen[0], seen

    failed, first, seen = trio.run(main)
    assert (failed.ok, failed.id) == (False, "bad") and "dangling" in (failed.error or "")
    assert failed.to_dict() == {"name": "cycling/bikes", "ok": False, "error": failed.error, "id": "bad"}
    assert first.to_dict() == {"name": "cycling/bikes", "ok": None, "running": True, "id": "bg"}
    done = seen[-1]
    assert (done.ok, done.committed, done.version, done.id) == (True, True, 1, "bg")
    assert "late.txt" in {e.path for e in store.artifact("cycling/bikes:v1").manifest.entries}


def test_a_draft_of_a_group_is_committed_as_a_part(store: Store, tmp_path: Path) -> None:
    ops, files = draft_ops(store, tmp_path, group="nightly"), Files()
    h = ops.draft_handler

    async def main() -> DraftCommit:
        await walk(ops, "cycling/bikes/latest")
        draft = (await walk(ops, "cycling/bikes/draft")).st_ino
        assert await h.getxattr(draft, "user.artfs.group") == b"nightly"
        await write_file(h, draft, b"part.txt", b"one writer's part\n", files)
        await h.setxattr(draft, "user.artfs.commit", b'{"id": "p"}', CTX)
        return await last_commit(h, draft)

    result = trio.run(main)
    assert (result.ok, result.committed, result.version, result.group) == (True, True, None, "nightly")
    assert (result.writer or "").startswith("draft-") and result.files == 2 + len(SMALL_FILES)
    assert store.versions("cycling", "bikes") == [0]  # a part, not a version (``artfs finish`` makes it)
    [group] = store.groups("cycling", "bikes")
    assert group.group == "nightly" and [p.writer for p in group.parts] == [result.writer]


def test_a_commit_result_reads_back_as_it_was_written() -> None:
    cases = [DraftCommit("p/a", committed=True, version=3, created=True, files=2, uploaded_blobs=1,
                         uploaded_bytes=9, aliases=["best"], seconds=0.5, id="x"),
             DraftCommit("p/a", committed=False, version=2, seconds=0.1),
             DraftCommit("p/a", committed=True, files=4, group="g", writer="w", seconds=1.0),
             DraftCommit.failure("p/a", "store down", "y"), DraftCommit.running("p/a", "z")]
    for c in cases:
        assert DraftCommit.from_dict(json.loads(c.to_json())) == c
    assert DraftCommit.from_dict([1]) is None and DraftCommit.from_dict({"ok": True}) is None
    assert DraftCommit.from_dict({"name": "p/a", "files": "many"}) is None
    report = UnmountReport(1, "/mnt/x", "file:///s", commits=[cases[0]], unchanged=["p/b"])
    report.fail("p/c", "store down")
    doc = json.loads(report.to_json())
    assert doc["failed"] == [{"name": "p/c", "error": "store down"}] and doc["commits"] == [cases[0].to_dict()]
    assert UnmountReport.from_dict(doc) == report
