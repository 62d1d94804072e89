"""The mount's handlers in-process, without a kernel mount (as S3QL's ``tests/t3_fs_api.py`` does).

:class:`artfsd.fs.Operations` is built over a real local store written with the library, its
async methods are called under trio as the kernel would call them, and what they answer is
checked against the store: lookups, listings, reads, extended attributes, EROFS on version
trees, alias moves through symlink/rename/unlink, version metadata through setxattr, and a draft
written and committed. ``pyfuse3.readdir_reply`` needs a kernel request, so listings collect their
entries with a replacement (S3QL does the same); nothing else is replaced. The real-mount tests
(tests/test_mount*.py) cover the kernel's side.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Awaitable, Callable

import pyfuse3
import pytest
import trio

from artfs import Artifact, Cache, InvalidName, NotFound, Store
from artfs.lowlevel import LazyBlobs, MountConfig
from artfsd.fs import Operations

WEIGHTS = os.urandom(300_000)
FILES = {"README.md": b"# bikes\n", "images/0001.png": os.urandom(3000), "weights.bin": WEIGHTS}


class Ctx:
    """What pyfuse3 passes as the request context (its own class cannot be made outside a request)."""

    def __init__(self) -> None:
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.pid = os.getpid()
        self.umask = 0o022


CTX = Ctx()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "writer-cache")))
    for i, extra in enumerate([{}, {"images/0002.png": b"two"}]):
        src = tmp_path / f"src{i}"
        for rel, data in {**FILES, **extra}.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        art = Artifact("bikes", type="dataset", description=f"take {i}", metadata={"take": i})
        art.add_dir(str(src))
        s.log_artifact(art, project="cycling")
    return s


def make_ops(store: Store, tmp_path: Path, *, writable: bool = False, gid: int | None = None) -> Operations:
    """Operations as ``artfsd.main`` builds them, over the mount's own cache (``gid``: as
    ``--allow-group`` resolved)."""
    mstore = Store(store.url, cache=Cache(str(tmp_path / "mount-cache")))
    config = MountConfig(store_url=store.url, mountpoint=str(tmp_path / "mnt"), read_only=not writable,
                         staging=str(tmp_path / "staging"), refresh=0.0, timeout=10, lineage=False, gid=gid)
    return Operations(mstore, LazyBlobs(mstore, timeout=config.timeout), config)


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return trio.run(fn)


@pytest.fixture
def replies(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, pyfuse3.EntryAttributes, int]]:
    got: list[tuple[bytes, pyfuse3.EntryAttributes, int]] = []

    def readdir_reply(token: Any, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        got.append((name, attr, next_id))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)
    return got


async def listdir(ops: Operations, ino: int, replies: list[Any]) -> dict[str, pyfuse3.EntryAttributes]:
    replies.clear()
    got = await ops.opendir(ino, CTX)
    fh = got if isinstance(got, int) else got.fh
    await ops.readdir(fh, 0, None)  # type: ignore[arg-type]
    await ops.releasedir(fh)
    return {name.decode(): attr for name, attr, _ in replies}


async def walk(ops: Operations, path: str) -> pyfuse3.EntryAttributes:
    attr = await ops.getattr(pyfuse3.ROOT_INODE, CTX)
    for part in path.split("/"):
        attr = await ops.lookup(attr.st_ino, part.encode(), CTX)
    return attr


async def cat(ops: Operations, ino: int, size: int = 1 << 20) -> bytes:
    info = await ops.open(ino, os.O_RDONLY, CTX)
    out = b""
    try:
        while chunk := await ops.read(info.fh, len(out), size):
            out += bytes(chunk)
    finally:
        await ops.release(info.fh)
    return out


def errno_of(excinfo: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return excinfo.value.errno


# -- reading ---------------------------------------------------------------------------------------
def test_lookups_and_listings_of_the_levels_above_versions(store: Store, tmp_path: Path, replies: list[Any]) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path)
        root = await listdir(ops, pyfuse3.ROOT_INODE, replies)
        assert list(root) == ["cycling"]
        proj = await walk(ops, "cycling")
        assert proj.st_mode & 0o777 == 0o555  # read-only mount
        assert list(await listdir(ops, proj.st_ino, replies)) == ["bikes"]
        art = await walk(ops, "cycling/bikes")
        entries = await listdir(ops, art.st_ino, replies)
        assert sorted(entries) == ["latest", "v0", "v1"]  # no draft/ on a read-only mount
        latest = await walk(ops, "cycling/bikes/latest")
        assert entries["latest"].st_ino == latest.st_ino
        assert await ops.readlink(latest.st_ino, CTX) == b"v1"
        with pytest.raises(pyfuse3.FUSEError) as e:
            await walk(ops, "cycling/nope")
        assert errno_of(e) == errno.ENOENT
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.readlink(art.st_ino, CTX)
        assert errno_of(e) == errno.EINVAL
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.open(art.st_ino, os.O_RDONLY, CTX)
        assert errno_of(e) == errno.EISDIR

    run(main)


def test_version_trees_look_up_list_and_read(store: Store, tmp_path: Path, replies: list[Any]) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path)
        v1 = await walk(ops, "cycling/bikes/v1")
        assert sorted(await listdir(ops, v1.st_ino, replies)) == ["README.md", "images", "weights.bin"]
        images = await walk(ops, "cycling/bikes/v1/images")
        assert sorted(await listdir(ops, images.st_ino, replies)) == ["0001.png", "0002.png"]
        assert (await ops.lookup(images.st_ino, b"..", CTX)).st_ino == v1.st_ino
        art = await walk(ops, "cycling/bikes")
        assert (await ops.lookup(v1.st_ino, b"..", CTX)).st_ino == art.st_ino
        w = await walk(ops, "cycling/bikes/v1/weights.bin")
        assert w.st_size == len(WEIGHTS) and w.st_mode & 0o777 == 0o444
        assert (await ops.getattr(w.st_ino, CTX)).st_size == len(WEIGHTS)
        assert await cat(ops, w.st_ino, 64 * 1024) == WEIGHTS
        assert await cat(ops, (await walk(ops, "cycling/bikes/v1/images/0002.png")).st_ino) == b"two"
        assert await cat(ops, (await walk(ops, "cycling/bikes/v0/README.md")).st_ino) == FILES["README.md"]
        assert "images/0002.png" not in str(await listdir(ops, (await walk(ops, "cycling/bikes/v0/images")).st_ino, replies))
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.lookup(w.st_ino, b"x", CTX)
        assert errno_of(e) == errno.ENOTDIR
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.read(12345, 0, 10)
        assert errno_of(e) == errno.EBADF
        assert ops.stats["read_bytes"] >= len(WEIGHTS)

    run(main)


def test_extended_attributes(store: Store, tmp_path: Path) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path)
        root = pyfuse3.ROOT_INODE
        assert await ops.getxattr(root, b"user.artfs.store", CTX) == store.url.encode()
        assert await ops.getxattr(root, b"user.artfs.pid", CTX) == str(os.getpid()).encode()
        assert "opens" in json.loads(await ops.getxattr(root, b"user.artfs.stats", CTX))
        v0 = await walk(ops, "cycling/bikes/v0")
        names = await ops.listxattr(v0.st_ino, CTX)
        assert {b"user.artfs.type", b"user.artfs.description", b"user.artfs.metadata", b"user.artfs.aliases",
                b"user.artfs.created", b"user.artfs.digest"} <= set(names)
        assert await ops.getxattr(v0.st_ino, b"user.artfs.type", CTX) == b"dataset"
        assert await ops.getxattr(v0.st_ino, b"user.artfs.description", CTX) == b"take 0"
        assert json.loads(await ops.getxattr(v0.st_ino, b"user.artfs.metadata", CTX)) == {"take": 0}
        assert await ops.getxattr(v0.st_ino, b"user.artfs.digest", CTX) == store.artifact("cycling/bikes:v0").digest.encode()
        v1 = await walk(ops, "cycling/bikes/v1")
        assert await ops.getxattr(v1.st_ino, b"user.artfs.aliases", CTX) == b"latest"
        f = await walk(ops, "cycling/bikes/v1/weights.bin")
        entry = store.artifact("cycling/bikes:v1").manifest.entries
        digest = next(e.digest for e in entry if e.path == "weights.bin")
        assert await ops.getxattr(f.st_ino, b"user.artfs.digest", CTX) == digest.encode()
        assert await ops.getxattr(f.st_ino, b"user.artfs.size", CTX) == str(len(WEIGHTS)).encode()
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.getxattr(f.st_ino, b"user.artfs.nope", CTX)
        assert errno_of(e) == pyfuse3.ENOATTR
        with pytest.raises(pyfuse3.FUSEError) as e:  # ls -l asks for ACLs: ENOTSUP, so it stops asking
            await ops.getxattr(f.st_ino, b"system.posix_acl_access", CTX)
        assert errno_of(e) == errno.ENOTSUP

    run(main)


def test_version_trees_and_read_only_mounts_answer_erofs(store: Store, tmp_path: Path) -> None:
    async def main() -> None:
        for writable in (False, True):
            ops = make_ops(store, tmp_path / str(writable), writable=writable)
            v0 = await walk(ops, "cycling/bikes/v0")
            f = await walk(ops, "cycling/bikes/v0/README.md")
            images = await walk(ops, "cycling/bikes/v0/images")
            attempts: list[Awaitable[Any]] = [
                ops.open(f.st_ino, os.O_WRONLY, CTX),
                ops.open(f.st_ino, os.O_RDONLY | os.O_TRUNC, CTX),
                ops.create(v0.st_ino, b"new", 0o644, os.O_WRONLY, CTX),
                ops.mkdir(images.st_ino, b"d", 0o755, CTX),
                ops.unlink(v0.st_ino, b"README.md", CTX),
                ops.rmdir(v0.st_ino, b"images", CTX),
                ops.rename(v0.st_ino, b"README.md", images.st_ino, b"R", 0, CTX),
                ops.symlink(images.st_ino, b"l", b"x", CTX),
                ops.setxattr(f.st_ino, b"user.artfs.description", b"x", CTX),
                ops.setattr(f.st_ino, pyfuse3.EntryAttributes(), None, None, CTX),
                ops.link(f.st_ino, images.st_ino, b"hard", CTX),
            ]
            if not writable:
                art = await walk(ops, "cycling/bikes")
                attempts += [
                    ops.mkdir(pyfuse3.ROOT_INODE, b"newproject", 0o755, CTX),
                    ops.symlink(art.st_ino, b"best", b"v0", CTX),
                    ops.unlink(art.st_ino, b"latest", CTX),
                    ops.setxattr(v0.st_ino, b"user.artfs.description", b"x", CTX),
                ]
            for attempt in attempts:
                with pytest.raises(pyfuse3.FUSEError) as e:
                    await attempt
                assert errno_of(e) == errno.EROFS, (writable, attempt)
        assert store.aliases("cycling", "bikes") == {"latest": 1}
        assert store.info("cycling", "bikes", 0)["description"] == "take 0"

    run(main)


# -- aliases and version metadata: changed by the library -----------------------------------------
def test_aliases_move_through_symlink_rename_and_unlink(store: Store, tmp_path: Path, replies: list[Any]) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path, writable=True)
        art = await walk(ops, "cycling/bikes")
        link = await ops.symlink(art.st_ino, b"best", b"./v0/", CTX)
        assert await ops.readlink(link.st_ino, CTX) == b"v0"
        assert store.aliases("cycling", "bikes") == {"best": 0, "latest": 1}
        await ops.symlink(art.st_ino, b"tmp", b"best", CTX)  # another alias names the same version
        await ops.rename(art.st_ino, b"best", art.st_ino, b"good", 0, CTX)
        assert store.aliases("cycling", "bikes") == {"good": 0, "tmp": 0, "latest": 1}
        assert sorted(await listdir(ops, art.st_ino, replies)) == ["draft", "good", "latest", "tmp", "v0", "v1"]
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.rename(art.st_ino, b"good", art.st_ino, b"tmp", pyfuse3.RENAME_NOREPLACE, CTX)
        assert errno_of(e) == errno.EEXIST
        await ops.unlink(art.st_ino, b"tmp", CTX)
        assert store.aliases("cycling", "bikes") == {"good": 0, "latest": 1}
        with pytest.raises(pyfuse3.FUSEError) as e:  # the automatic latest cannot go
            await ops.unlink(art.st_ino, b"latest", CTX)
        assert errno_of(e) == errno.EPERM
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.rename(art.st_ino, b"latest", art.st_ino, b"newest", 0, CTX)
        assert errno_of(e) == errno.EPERM
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.symlink(art.st_ino, b"bad", b"../elsewhere", CTX)
        assert errno_of(e) == errno.EINVAL
        with pytest.raises(pyfuse3.FUSEError) as e:  # an alias into draft/: mv would copy
            draft = await walk(ops, "cycling/bikes/draft")
            await ops.rename(art.st_ino, b"good", draft.st_ino, b"good", 0, CTX)
        assert errno_of(e) == errno.EXDEV
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.unlink(art.st_ino, b"v0", CTX)
        assert errno_of(e) == errno.EROFS
        assert store.aliases("cycling", "bikes") == {"good": 0, "latest": 1}
        assert store.versions("cycling", "bikes") == [0, 1]

    run(main)


class DirToken:
    """What pyfuse3's ReaddirToken carries when the kernel opens directories itself (fh 0)."""

    def __init__(self, inode: int) -> None:
        self.inode = inode


def test_a_listing_resumed_after_its_names_changed_gives_each_other_name_once(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With no opendir (artfsd/kernel.py) every readdir call lists the directory afresh, and the
    # kernel resumes from the cookie of the last entry it kept: names that came or went between two
    # calls must not make another name appear twice or go missing.
    got: list[tuple[bytes, int]] = []
    room = [0]

    def readdir_reply(token: Any, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        if room[0] == 0:
            return False  # the kernel's buffer is full: this entry is not taken
        room[0] -= 1
        got.append((name, next_id))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)

    async def main() -> None:
        store.set_alias("cycling", "bikes", "best", 0)
        store.set_alias("cycling", "bikes", "good", 0)
        ops = make_ops(store, tmp_path)  # refresh=0: every listing re-lists the store
        ops.kernel.no_opendir = True
        art = await walk(ops, "cycling/bikes")
        token = DirToken(art.st_ino)
        room[0] = 1
        await ops.readdir(0, 0, token)  # type: ignore[arg-type]
        assert [n for n, _ in got] == [b"best"]
        store.remove_alias("cycling", "bikes", "best")  # the entry the listing stopped at goes
        room[0] = 1
        await ops.readdir(0, got[-1][1], token)  # type: ignore[arg-type]
        assert [n for n, _ in got] == [b"best", b"good"]
        store.set_alias("cycling", "bikes", "aaa", 1)  # a name before the position comes
        room[0] = 100
        await ops.readdir(0, got[-1][1], token)  # type: ignore[arg-type]
        assert [n for n, _ in got] == [b"best", b"good", b"latest", b"v0", b"v1"]
        room[0] = 100
        got.clear()
        await ops.readdir(0, 0, token)  # type: ignore[arg-type]
        assert [n for n, _ in got] == [b"aaa", b"good", b"latest", b"v0", b"v1"]

    run(main)


def test_version_metadata_through_setxattr(store: Store, tmp_path: Path) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path, writable=True)
        v0 = await walk(ops, "cycling/bikes/v0")
        await ops.setxattr(v0.st_ino, b"user.artfs.description", "vélo".encode(), CTX)
        await ops.setxattr(v0.st_ino, b"user.artfs.metadata", b'{"acc": 0.9}', CTX)
        assert store.info("cycling", "bikes", 0)["description"] == "vélo"
        assert store.info("cycling", "bikes", 0)["metadata"] == {"acc": 0.9}
        assert await ops.getxattr(v0.st_ino, b"user.artfs.description", CTX) == "vélo".encode()
        await ops.setxattr(v0.st_ino, b"user.artfs.aliases", b"best, prod", CTX)
        assert store.aliases("cycling", "bikes") == {"best": 0, "prod": 0, "latest": 1}
        assert await ops.getxattr(v0.st_ino, b"user.artfs.aliases", CTX) == b"best,prod"
        await ops.setxattr(v0.st_ino, b"user.artfs.aliases", b"prod", CTX)
        assert store.aliases("cycling", "bikes") == {"prod": 0, "latest": 1}
        for name, value, code in [(b"user.artfs.metadata", b"[1, 2]", errno.EINVAL),
                                  (b"user.artfs.type", b"model", errno.EPERM),
                                  (b"user.artfs.digest", b"0" * 32, errno.EPERM),
                                  (b"user.artfs.color", b"red", errno.ENOTSUP)]:
            with pytest.raises(pyfuse3.FUSEError) as e:
                await ops.setxattr(v0.st_ino, name, value, CTX)
            assert errno_of(e) == code, name
        await ops.removexattr(v0.st_ino, b"user.artfs.description", CTX)
        await ops.removexattr(v0.st_ino, b"user.artfs.aliases", CTX)
        assert store.info("cycling", "bikes", 0) | {"updated": None} == {
            "description": None, "metadata": {"acc": 0.9}, "updated": None}
        assert store.aliases("cycling", "bikes") == {"latest": 1}
        assert store.artifact("cycling/bikes:v0").type == "dataset"

    run(main)


# -- drafts ------------------------------------------------------------------------------------------
def test_a_draft_is_written_read_and_committed(store: Store, tmp_path: Path, replies: list[Any]) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path, writable=True)
        art = await walk(ops, "cycling/bikes")
        draft = await walk(ops, "cycling/bikes/draft")
        assert draft.st_mode & 0o200
        assert (await ops.lookup(draft.st_ino, b"..", CTX)).st_ino == art.st_ino
        assert sorted(await listdir(ops, draft.st_ino, replies)) == ["README.md", "images", "weights.bin"]
        info, attr = await ops.create(draft.st_ino, b"notes.txt", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
        assert await ops.write(info.fh, 0, b"hello ") == 6
        assert await ops.write(info.fh, 6, b"draft\n") == 6
        await ops.release(info.fh)
        assert await cat(ops, attr.st_ino) == b"hello draft\n"
        await ops.unlink(draft.st_ino, b"README.md", CTX)
        assert await cat(ops, (await walk(ops, "cycling/bikes/draft/weights.bin")).st_ino) == WEIGHTS
        assert sorted(await listdir(ops, draft.st_ino, replies)) == ["images", "notes.txt", "weights.bin"]
        status = json.loads(await ops.getxattr(draft.st_ino, b"user.artfs.status", CTX))
        assert status  # what the next commit would change
        await ops.setxattr(draft.st_ino, b"user.artfs.description", b"with notes", CTX)
        await ops.setxattr(draft.st_ino, b"user.artfs.commit", b"1", CTX)
        last = json.loads(await ops.getxattr(draft.st_ino, b"user.artfs.last_commit", CTX))
        assert last["ok"] is True
        assert store.versions("cycling", "bikes") == [0, 1, 2]
        v2 = store.artifact("cycling/bikes:v2")
        assert v2.description == "with notes"
        assert sorted(e.path for e in v2.manifest.entries) == ["images/0001.png", "images/0002.png",
                                                               "notes.txt", "weights.bin"]
        assert (await ops.readlink((await walk(ops, "cycling/bikes/latest")).st_ino, CTX)) == b"v2"
        with pytest.raises(pyfuse3.FUSEError) as e:  # a version is a list of files: no hard links
            await ops.link(attr.st_ino, draft.st_ino, b"hard", CTX)
        assert errno_of(e) == errno.EPERM
        v0 = await walk(ops, "cycling/bikes/v0")
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.rename(draft.st_ino, b"notes.txt", v0.st_ino, b"notes.txt", 0, CTX)
        assert errno_of(e) == errno.EXDEV

    run(main)


def test_routing_gives_each_inode_one_handler(store: Store, tmp_path: Path) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path, writable=True)
        assert ops.route(pyfuse3.ROOT_INODE) is ops.listing
        assert ops.route((await walk(ops, "cycling/bikes/latest")).st_ino) is ops.listing
        assert ops.route((await walk(ops, "cycling/bikes/v0")).st_ino) is ops.versions
        assert ops.route((await walk(ops, "cycling/bikes/v0/images/0001.png")).st_ino) is ops.versions
        assert ops.route((await walk(ops, "cycling/bikes/draft/images")).st_ino) is ops.draft_handler
        with pytest.raises(pyfuse3.FUSEError) as e:  # an inode never handed out
            await ops.getattr(ops.ns.inodes.next + 10, CTX)
        assert errno_of(e) == errno.ENOENT

    run(main)


def test_allow_group_modes_reach_every_handler(store: Store, tmp_path: Path) -> None:
    async def main() -> None:
        ops = make_ops(store, tmp_path, writable=True, gid=os.getgid())  # what --allow-group gives
        for path in ["cycling", "cycling/bikes/latest", "cycling/bikes/v0", "cycling/bikes/v0/README.md"]:
            assert (await walk(ops, path)).st_mode & 0o007 == 0, path
        assert (await walk(ops, "cycling/bikes/v0")).st_mode & 0o070 == 0o050

    run(main)


# -- the library call the listing handler relies on ------------------------------------------------
def test_store_rename_alias(store: Store) -> None:
    store.set_alias("cycling", "bikes", "best", 0)
    assert store.rename_alias("cycling", "bikes", "best", "good") == 0
    assert store.aliases("cycling", "bikes") == {"good": 0, "latest": 1}
    with pytest.raises(NotFound):
        store.rename_alias("cycling", "bikes", "best", "other")
    with pytest.raises(InvalidName):  # the automatic latest follows the newest version
        store.rename_alias("cycling", "bikes", "latest", "newest")
    with pytest.raises(InvalidName):
        store.rename_alias("cycling", "bikes", "good", "bad/name")
    store.set_alias("cycling", "bikes", "latest", 0)  # an explicit latest can be moved away
    assert store.rename_alias("cycling", "bikes", "latest", "pinned") == 0
    assert store.aliases("cycling", "bikes") == {"good": 0, "pinned": 0, "latest": 1}
