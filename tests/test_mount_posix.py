"""A draft behaves like a local directory for every user (issue 15), on a real FUSE mount.

Ownership (chown stored; what another user creates is theirs; set-group-ID directories), the
three timestamps, ENAMETOOLONG, link counts, ``du`` of sparse files, a summarised
``user.artfs.status``, a draft of the schema before owners and times were kept. The mount runs
with ``--allow-other`` and the kernel checks permissions (``default_permissions``) against what
the draft reports; another user is ``setpriv --reuid 65534 --regid 65534 --clear-groups``.
pjdfstest runs on the same kind of mount: tests/posix/run_pjdfstest.sh (not part of this run).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from artfs import Artifact, Cache, Store
from artfs._draft import Draft
from artfsd.testing import MountProcess

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
]

NOBODY = 65534
CLI = [sys.executable, "-m", "artfs.cli"]
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv (acts as another user)")


class World:
    """A local store with proj/data:v0, a mount of it with --allow-other, reachable by other users."""

    def __init__(self, root: Path, mnt: Path) -> None:
        self.root = root
        self.mnt = mnt  # outside pytest's tmp dirs (0700): other users must reach the mountpoint
        self.store = Store(str(root / "store"), cache=Cache(str(root / "writer-cache")))
        with open(root / "src.txt", "wb") as f:
            f.write(b"base file\n")
        art = Artifact("data", type="dataset")
        art.add_file(str(root / "src.txt"), name="base.txt")
        self.store.log_artifact(art, project="proj")

    def env(self) -> dict[str, str]:
        return {**os.environ, "ARTFS_STAGING_DIR": str(self.root / "staging"), "ARTFS_STORE": self.store.url,
                "ARTFS_CACHE_DIR": str(self.root / "cache"), "XDG_STATE_HOME": str(self.root / "state")}

    def mount(self) -> MountProcess:
        return MountProcess(self.store.url, self.mnt, cache_dir=self.root / "cache", env=self.env(),
                            args=["--allow-other"])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    mnt = Path(tempfile.mkdtemp(prefix="artfs-posix-"))
    mnt.chmod(0o755)
    try:
        yield World(tmp_path, mnt / "mnt")
    finally:  # MountProcess has unmounted it: only empty directories are left (never rm -r a mount)
        for p in (mnt / "mnt", mnt):
            with contextlib.suppress(OSError):
                p.rmdir()


def as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", *cmd],
                          capture_output=True, text=True, timeout=60)


def _errno(fn, *args) -> int:
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


# -- ownership ---------------------------------------------------------------------------------------
@needs_root
def test_chown_is_kept_and_other_users_own_what_they_create(world: World) -> None:
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        os.mkdir(f"{d}/home")
        os.chown(f"{d}/home", NOBODY, NOBODY)
        os.symlink("base.txt", f"{d}/link")
        os.lchown(f"{d}/link", 123, 456)
        os.chown(f"{d}/base.txt", 7, 8)
        assert (os.stat(f"{d}/home").st_uid, os.stat(f"{d}/home").st_gid) == (NOBODY, NOBODY)
        assert (os.lstat(f"{d}/link").st_uid, os.lstat(f"{d}/link").st_gid) == (123, 456)
        assert (os.stat(f"{d}/base.txt").st_uid, os.stat(f"{d}/base.txt").st_gid) == (7, 8)

        # another user creates, chmods and touches files in the directory they were given
        r = as_nobody("sh", "-c", f"set -e; cd {d}/home; echo hi > f; mkdir sub; ln -s f l; chmod 600 f; "
                                  "touch -m -d 2001-02-03 f; cat f")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "hi\n"
        for name in ("f", "sub", "l"):
            st = os.lstat(f"{d}/home/{name}")
            assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), name
        assert stat.S_IMODE(os.stat(f"{d}/home/f").st_mode) == 0o600
        # ... and the kernel enforces the modes the draft reports
        assert as_nobody("sh", "-c", f"echo x > {d}/not-mine").returncode != 0  # draft/ is root's, 0755
        assert as_nobody("chmod", "777", f"{d}/base.txt").returncode != 0  # EPERM: not the owner
        os.chmod(f"{d}/home/f", 0o600)
        os.chown(f"{d}/home/f", 0, 0)
        r = as_nobody("cat", f"{d}/home/f")
        assert r.returncode != 0 and "Permission denied" in r.stderr

        # sticky directory: its owner may remove others' files; others may not
        os.mkdir(f"{d}/tmp", 0o1777)
        os.chmod(f"{d}/tmp", 0o1777)
        open(f"{d}/tmp/roots", "w").close()
        assert as_nobody("rm", "-f", f"{d}/tmp/roots").returncode != 0
        assert os.path.exists(f"{d}/tmp/roots")
        os.chown(f"{d}/tmp", NOBODY, NOBODY)
        assert as_nobody("rm", "-f", f"{d}/tmp/roots").returncode == 0
        assert not os.path.exists(f"{d}/tmp/roots")

        # set-group-ID directory: new entries get its group, new directories the bit too
        os.mkdir(f"{d}/shared")
        os.chown(f"{d}/shared", 0, 4242)
        os.chmod(f"{d}/shared", 0o2777)
        r = as_nobody("sh", "-c", f"set -e; touch {d}/shared/f; mkdir {d}/shared/sub")
        assert r.returncode == 0, r.stderr
        f, sub = os.stat(f"{d}/shared/f"), os.stat(f"{d}/shared/sub")
        assert (f.st_uid, f.st_gid) == (NOBODY, 4242)
        assert (sub.st_uid, sub.st_gid) == (NOBODY, 4242) and sub.st_mode & stat.S_ISGID

        # chown by root of a set-user-ID file clears the bit (the kernel sends the mode along)
        open(f"{d}/suid", "w").close()
        os.chmod(f"{d}/suid", 0o4755)
        os.chown(f"{d}/suid", NOBODY, -1)
        assert stat.S_IMODE(os.stat(f"{d}/suid").st_mode) == 0o755
        with open(f"{d}/exe.sh", "w") as fh:
            fh.write("#!/bin/sh\n")
        os.chmod(f"{d}/exe.sh", 0o750)
        os.chown(f"{d}/exe.sh", NOBODY, NOBODY)
    # the owner stays across a remount (it lives in the draft)...
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        assert os.stat(f"{d}/home/sub").st_uid == NOBODY
        assert os.stat(f"{d}/base.txt").st_uid == 7
    # ... and a version keeps bytes and the executable bit, not owners
    with world.mount() as m:
        v = m.path("proj", "data", "v1")
        st = os.stat(f"{v}/exe.sh")
        assert st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o555
        assert open(f"{v}/home/f", "rb").read() == b"hi\n"


# -- times ------------------------------------------------------------------------------------------
def test_three_timestamps(world: World) -> None:
    A, M = 1_000_000_000_123_456_789, 1_200_000_000_987_654_321
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        os.mkdir(f"{d}/dir")
        with open(f"{d}/new", "w") as f:
            f.write("x")
        for p in (f"{d}/new", f"{d}/dir", f"{d}/base.txt"):
            before = os.stat(p).st_ctime_ns
            os.utime(p, ns=(A, M))
            st = os.stat(p)
            assert (st.st_atime_ns, st.st_mtime_ns) == (A, M), p
            assert st.st_ctime_ns >= before > M, p  # utime never moves ctime back
            c0 = st.st_ctime_ns
            os.chmod(p, 0o700)
            st = os.stat(p)
            assert st.st_ctime_ns > c0 and (st.st_atime_ns, st.st_mtime_ns) == (A, M), p
            c1 = st.st_ctime_ns
            os.chown(p, os.getuid(), os.getgid())  # to the same owner: still a change
            assert os.stat(p).st_ctime_ns > c1, p
            os.utime(p, ns=(A, A))  # the atime alone is kept apart
            os.utime(p, ns=(M, os.stat(p).st_mtime_ns))
            st = os.stat(p)
            assert (st.st_atime_ns, st.st_mtime_ns) == (M, A), p
        # rename: the renamed entry's ctime and both directories' mtime and ctime
        os.utime(f"{d}/dir", ns=(A, A))
        c = os.stat(f"{d}/new").st_ctime_ns
        os.rename(f"{d}/new", f"{d}/dir/moved")
        st, dd = os.stat(f"{d}/dir/moved"), os.stat(f"{d}/dir")
        assert st.st_ctime_ns > c and st.st_mtime_ns == A
        assert dd.st_mtime_ns > A and dd.st_ctime_ns >= dd.st_mtime_ns
        # a write moves mtime and ctime, not atime
        os.utime(f"{d}/dir/moved", ns=(A, A))
        with open(f"{d}/dir/moved", "r+") as f:
            f.write("y")
        st = os.stat(f"{d}/dir/moved")
        assert st.st_atime_ns == A and st.st_mtime_ns > A and st.st_ctime_ns > A
        d_st = os.stat(f"{d}/dir")
    # the unmount commits: the staged file becomes a file of v1 in the draft, with its times
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        after = os.stat(f"{d}/dir/moved")
        assert (after.st_mtime_ns, after.st_ctime_ns) == (st.st_mtime_ns, st.st_ctime_ns)
        assert after.st_atime_ns >= st.st_atime_ns  # the commit read it to hash it, as any reader would
        assert os.stat(f"{d}/dir").st_mtime_ns == d_st.st_mtime_ns
        assert os.path.exists(m.path("proj", "data", "v1", "dir", "moved"))


# -- long names ----------------------------------------------------------------------------------------
def test_long_names_are_enametoolong(world: World) -> None:
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        long, ok = "n" * 256, "n" * 255
        for fn, args in ((os.stat, (f"{d}/{long}",)), (os.lstat, (f"{d}/{long}",)), (open, (f"{d}/{long}", "w")),
                         (os.mkdir, (f"{d}/{long}",)), (os.symlink, ("base.txt", f"{d}/{long}")),
                         (os.rename, (f"{d}/base.txt", f"{d}/{long}")), (os.unlink, (f"{d}/{long}",)),
                         (os.rmdir, (f"{d}/{long}",)), (os.rename, (f"{d}/{long}", f"{d}/x"))):
            assert _errno(fn, *args) == errno.ENAMETOOLONG, (fn.__name__, args)
        open(f"{d}/{ok}", "w").close()
        os.mkdir(f"{d}/" + "d" * 255)
        assert ok in os.listdir(d) and "d" * 255 in os.listdir(d)


# -- link counts ----------------------------------------------------------------------------------------
def test_link_counts(world: World) -> None:
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        assert os.stat(d).st_nlink == 2
        os.makedirs(f"{d}/a/b")
        os.mkdir(f"{d}/a/c")
        open(f"{d}/a/file", "w").close()
        assert os.stat(f"{d}/a").st_nlink == 4  # ".", its entry, and b/.. c/..
        assert os.stat(f"{d}/a/b").st_nlink == 2
        assert os.stat(d).st_nlink == 3
        os.rename(f"{d}/a/c", f"{d}/c")
        assert (os.stat(f"{d}/a").st_nlink, os.stat(d).st_nlink) == (3, 4)
        os.rmdir(f"{d}/c")
        assert os.stat(d).st_nlink == 3
        assert os.stat(f"{d}/a/file").st_nlink == 1
        # a file unlinked while open: fstat says 0 links, and it still reads and writes
        with open(f"{d}/a/file", "w+") as f:
            os.chmod(f"{d}/a/file", 0o640)
            os.unlink(f"{d}/a/file")
            st = os.fstat(f.fileno())
            assert st.st_nlink == 0 and stat.S_IMODE(st.st_mode) == 0o640
            f.write("still here")
            f.flush()
            f.seek(0)
            assert f.read() == "still here"
            assert os.fstat(f.fileno()).st_size == 10
        # ... and one renamed over while open
        open(f"{d}/x", "w").close()
        with open(f"{d}/a/b/y", "w") as f:
            os.rename(f"{d}/x", f"{d}/a/b/y")
            assert os.fstat(f.fileno()).st_nlink == 0
        assert os.stat(f"{d}/a/b/y").st_nlink == 1


# -- FIFOs, sockets, devices: in the draft, not in a version ---------------------------------------------
def test_fifos_sockets_and_devices_stay_in_the_draft(world: World) -> None:
    import socket

    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        os.mkdir(f"{d}/sp")
        os.mkfifo(f"{d}/sp/fifo", 0o640)
        s = socket.socket(socket.AF_UNIX)
        s.bind(f"{d}/sp/sock")
        s.close()
        if os.geteuid() == 0:
            os.mknod(f"{d}/sp/null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
            st = os.stat(f"{d}/sp/null")
            assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
            # the mount is nodev: a device node in a draft opens nothing
            assert _errno(open, f"{d}/sp/null", "rb") in (errno.EACCES, errno.EPERM)
        st = os.stat(f"{d}/sp/fifo")
        assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
        assert stat.S_ISSOCK(os.stat(f"{d}/sp/sock").st_mode)
        # a FIFO works: the kernel serves it
        r = os.open(f"{d}/sp/fifo", os.O_RDONLY | os.O_NONBLOCK)
        w = os.open(f"{d}/sp/fifo", os.O_WRONLY)
        os.write(w, b"through the pipe")
        assert os.read(r, 100) == b"through the pipe"
        os.close(w)
        os.close(r)
        with open(f"{d}/sp/real.txt", "w") as f:
            f.write("a file")
        st = json.loads(os.getxattr(d, "user.artfs.status"))
        assert st["added"] == ["sp/real.txt"]
    # the draft says it holds kinds an artfs from before them would misread (it refuses format 2)
    db = next((world.root / "staging").rglob("draft.db"))
    assert sqlite3.connect(db).execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0] == "2"
    # the version holds the file only; the draft keeps the rest
    with world.mount() as m:
        assert sorted(os.listdir(m.path("proj", "data", "v1", "sp"))) == ["real.txt"]
        d = m.path("proj", "data", "draft")
        assert stat.S_ISFIFO(os.stat(f"{d}/sp/fifo").st_mode)
        assert stat.S_ISSOCK(os.stat(f"{d}/sp/sock").st_mode)
        os.unlink(f"{d}/sp/fifo")
        os.unlink(f"{d}/sp/sock")
        assert "fifo" not in os.listdir(f"{d}/sp")


# -- du --------------------------------------------------------------------------------------------------
def test_du_counts_the_blocks_staged_files_use(world: World) -> None:
    GiB = 1 << 30
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        with open(f"{d}/sparse", "wb") as f:
            f.truncate(4 * GiB)
            f.seek(GiB)
            f.write(b"x" * 8192)
        with open(f"{d}/dense", "wb") as f:
            f.write(os.urandom(1 << 20))
            f.flush()
            os.fsync(f.fileno())
        sp, de = os.stat(f"{d}/sparse"), os.stat(f"{d}/dense")
        assert sp.st_size == 4 * GiB
        assert sp.st_blocks * 512 < 1 << 20  # 8 KiB written, not 4 GiB
        assert de.st_blocks * 512 >= 1 << 20
        du = subprocess.run(["du", "-s", "--block-size=1", d], capture_output=True, text=True, check=True)
        assert int(du.stdout.split()[0]) < 4 << 20
        du = subprocess.run(["du", "-s", "--apparent-size", "--block-size=1", d], capture_output=True, text=True,
                            check=True)
        assert int(du.stdout.split()[0]) >= 4 * GiB


# -- user.artfs.status -------------------------------------------------------------------------------------
def test_status_xattr_is_summarised_beyond_its_bound(world: World) -> None:
    n = 3000
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        os.mkdir(f"{d}/many")
        for i in range(n):
            open(f"{d}/many/file-with-a-rather-long-name-{i:05d}.txt", "w").close()
        os.unlink(f"{d}/base.txt")
        raw = os.getxattr(d, "user.artfs.status")
        assert len(raw) <= 64 * 1024
        doc = json.loads(raw)
        assert doc["truncated"] is True and "artfs status --json" in doc["full"]
        assert doc["counts"]["added"] == n and doc["counts"]["removed"] == 1
        assert 0 < len(doc["added"]) < n and doc["removed"] == ["base.txt"]
        assert all(p.startswith("many/file-with") for p in doc["added"])
        assert doc["differs"] is True
        listed = subprocess.run(["getfattr", "-d", "-m", "user.artfs", d], capture_output=True, text=True)
        assert listed.returncode == 0 and "user.artfs.status" in listed.stdout, listed.stderr
        # the complete lists: artfs status --json (the mount holds the draft; the CLI looks read-only)
        r = subprocess.run([*CLI, "status", "--json"], env=world.env(), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        full = json.loads(r.stdout)
        assert len(full[0]["added"]) == n
        # a small status is whole
        for i in range(n):
            os.unlink(f"{d}/many/file-with-a-rather-long-name-{i:05d}.txt")
        doc = json.loads(os.getxattr(d, "user.artfs.status"))
        assert "truncated" not in doc and doc["removed"] == ["base.txt"]


# -- drafts from before owners and times were kept ---------------------------------------------------------
def test_a_draft_of_schema_1_is_migrated(world: World) -> None:
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        os.mkdir(f"{d}/old")
        with open(f"{d}/old/f", "w") as f:
            f.write("kept")
        os.utime(f"{d}/old", ns=(5 * 10**18, 5 * 10**18))
    # make it a schema-1 draft: the columns and the index as they were
    db = next((world.root / "staging").rglob("draft.db"))
    con = sqlite3.connect(db)
    con.execute("DROP INDEX nodes_subdirs")
    for col in ("uid", "gid", "atime", "ctime", "rdev"):
        con.execute(f"ALTER TABLE nodes DROP COLUMN {col}")
    con.commit()
    con.close()
    with Draft.open(str(db.parent), readonly=True) as old:  # a look (artfs status) needs no migration
        a = old.namespace.getattr(old.namespace.resolve("old"))
        assert a.uid is None and a.ctime_ns is None and a.mtime_ns == 5 * 10**18 and a.nlink == 2
    with world.mount() as m:
        d = m.path("proj", "data", "draft")
        st = os.stat(f"{d}/old")
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())  # the draft's owner
        assert st.st_mtime_ns == st.st_atime_ns == st.st_ctime_ns == 5 * 10**18
        assert open(f"{d}/old/f").read() == "kept"
        os.chown(f"{d}/old", 1234, 5678)
        assert os.stat(f"{d}/old").st_uid == 1234
    cols = {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(nodes)")}
    assert {"uid", "gid", "atime", "ctime", "rdev"} <= cols
