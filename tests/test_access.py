"""Access levels enforced by the store itself: S3 bucket policies (moto's server enforces them for
unsigned requests), file modes on a local store (checked as another uid), HTTPS (always public).

Everything runs the real ``artfs`` command, the real mount daemon and a real S3 endpoint; a
refusal is always the store's (a 403 from the server, EACCES from the kernel).
"""

from __future__ import annotations

import errno
import functools
import grp
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from artfs import Cache, PermissionDenied, Store
from artfsd.testing import MountProcess

from installed import installed

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
FOREIGN = {  # a statement artfs did not write: it must survive every `access set`
    "Sid": "TeamReadsShared", "Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
    "Action": "s3:GetObject", "Resource": "arn:aws:s3:::{bucket}/shared/*",
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
    env.update(extra)
    return env


class CLI:
    """``artfs`` as a subprocess; ``signed=False`` runs it with no AWS credentials at all."""

    def __init__(self, store: str, tmp: Path, *, env: dict[str, str] | None = None) -> None:
        self.store = store
        self.tmp = tmp
        self.env = env if env is not None else _env()
        self.env.update(ARTFS_STORE=store, ARTFS_CACHE_DIR=str(tmp / f"cache-{uuid.uuid4().hex[:6]}"),
                        HOME=str(tmp / "home"))

    def unsigned(self) -> "CLI":
        env = {k: v for k, v in self.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        return CLI(self.store, self.tmp, env={**env, "ARTFS_NO_SIGN_REQUEST": "1"})

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "artfs.cli", *args], env=self.env, cwd=self.tmp,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == code, f"artfs {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        assert "Traceback" not in p.stderr
        return p

    def refused(self, *args: str) -> str:
        """A command the store refuses: exit code 7 and one line naming the command and the project."""
        p = self.run(*args, code=7)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("artfs: error: "), p.stderr
        assert "testing" not in p.stderr  # the test credentials' secret never shows up
        return lines[0]


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


FILES = {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(3000)}


# --------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------


def _client() -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def _policy(bucket: str) -> list[dict[str, Any]]:
    try:
        return json.loads(_client().get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    except Exception as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") == "NoSuchBucketPolicy":
            return []
        raise


@pytest.fixture
def s3_world(s3_url: str, tmp_path: Path) -> Iterator[tuple[CLI, str]]:
    """pub, priv and opn projects (one artifact each) in one bucket, and a foreign policy statement."""
    bucket = s3_url[len("s3://"):].split("/", 1)[0]
    foreign = json.loads(json.dumps(FOREIGN).replace("{bucket}", bucket))
    _client().put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [foreign]}))
    cli = CLI(s3_url, tmp_path)
    src = make_tree(tmp_path / "src", FILES)
    for p in ("pub", "priv", "opn"):
        cli.run("put", "-n", f"{p}/ds", str(src))
    yield cli, bucket


def test_moto_enforces_bucket_policies_for_unsigned_requests(s3_world):
    """The ground this file stands on: without a grant an unsigned read is refused (403, exit 7);
    `access set public` turns it into a read that works."""
    cli, bucket = s3_world
    anon = cli.unsigned()
    assert "get pub/ds" in anon.refused("get", "pub/ds", "--root", str(cli.tmp / "before"))
    cli.run("access", "set", "pub", "public")
    anon.run("get", "pub/ds", "--root", str(cli.tmp / "after"))
    assert read_tree(cli.tmp / "after") == FILES


def test_s3_levels_without_credentials(s3_world):
    cli, bucket = s3_world
    foreign = [s for s in _policy(bucket) if s["Sid"] == "TeamReadsShared"]
    cli.run("access", "set", "pub", "public")
    cli.run("access", "set", "opn", "open")
    cli.run("access", "set", "priv", "private")
    levels = {a["project"]: a["level"] for a in json.loads(cli.run("access", "show", "--json").stdout)["projects"]}
    assert levels == {"pub": "public", "opn": "open", "priv": "private"}

    anon = cli.unsigned()
    # a listing shows what the reader may see and skips the rest
    doc = json.loads(anon.run("ls", "--json").stdout)
    assert sorted(d["project"] for d in doc) == ["opn", "pub"]
    assert json.loads(anon.run("ls", "pub", "--json").stdout)[0]["artifact"] == "ds"
    anon.run("get", "pub/ds:v0", "--root", str(cli.tmp / "got"))
    assert read_tree(cli.tmp / "got") == FILES

    # the private project of the same bucket: refused, exit 7, naming the command and the project
    line = anon.refused("get", "priv/ds", "--root", str(cli.tmp / "no"))
    assert "get priv/ds" in line and "refused" in line
    assert not (cli.tmp / "no").exists() or not any((cli.tmp / "no").rglob("*"))
    assert "ls priv" in anon.refused("ls", "priv")

    # open: anyone writes; the new version is there for the team
    src2 = make_tree(cli.tmp / "src2", {**FILES, "new.txt": b"from anyone\n"})
    assert "opn/ds:v1 created" in anon.run("put", "-n", "opn/ds", str(src2)).stdout
    assert [d["version"] for d in json.loads(cli.run("ls", "opn/ds", "--json").stdout)] == [0, 1]
    # rewriting a key (moving an alias): anyone may in the open project, only the team in the public one
    # (moto checks anonymous writes against the policy for keys that exist, so this is where the two differ)
    cli.run("alias", "set", "pub/ds:v0", "best")
    cli.run("alias", "set", "opn/ds:v0", "best")
    assert "alias set pub/ds:v0" in anon.refused("alias", "set", "pub/ds:v0", "best")
    anon.run("alias", "set", "opn/ds:v1", "best")
    assert json.loads(cli.run("alias", "ls", "opn/ds", "--json").stdout)["best"] == 1
    # only the bucket owner's credentials change a policy
    assert "s3:PutBucketPolicy" in anon.refused("access", "set", "pub", "private")

    # the statement artfs did not write survived every set, unchanged; private removes all of artfs's
    assert [s for s in _policy(bucket) if s["Sid"] == "TeamReadsShared"] == foreign
    for p in ("pub", "opn"):
        cli.run("access", "set", p, "private")
    assert _policy(bucket) == foreign
    anon.refused("get", "pub/ds", "--root", str(cli.tmp / "after-private"))


def test_s3_mount_without_credentials(s3_world, tmp_path):
    cli, bucket = s3_world
    cli.run("access", "set", "pub", "public")
    env = {k: v for k, v in cli.unsigned().env.items() if k != "ARTFS_NO_SIGN_REQUEST"}
    with MountProcess(cli.store, tmp_path / "mnt", cache_dir=tmp_path / "mcache", env=env,
                      args=["--read-only", "-o", "no_sign_request"]) as m:
        try:
            names = os.listdir(m.mountpoint)
        except OSError:
            raise AssertionError(m.log)
        assert names == ["pub"], m.log
        with open(m.path("pub", "ds", "latest", "sub", "b.bin"), "rb") as f:
            assert f.read() == FILES["sub/b.bin"]
        with pytest.raises(PermissionError) as e:
            os.listdir(m.path("priv"))
        assert e.value.errno == errno.EACCES
        log = m.log
    refused = [line for line in log.splitlines() if "priv" in line and "EACCES" in line]
    assert len(refused) == 1, log
    assert "testing" not in log


def test_s3_show_needs_credentials_and_set_says_what_it_needs(s3_world):
    cli, bucket = s3_world
    cli.run("access", "set", "pub", "public")
    anon = cli.unsigned()
    doc = json.loads(anon.run("access", "show", "--json").stdout)["projects"]
    assert {a["project"]: a["level"] for a in doc} == {"pub": "public", "priv": "private", "opn": "private"}
    # with credentials: the exact statements artfs wrote for pub
    stmts = [s for s in _policy(bucket) if s["Sid"].startswith("artfs")]
    actions = sorted(json.dumps(s["Action"]) for s in stmts)
    assert actions == sorted(['"s3:GetObject"', '"s3:ListBucket"', '"s3:ListBucket"', '"s3:GetObject"'])
    read = next(s for s in stmts if s["Resource"].endswith("/pub/*"))
    assert read["Principal"] == "*" and read["Action"] == "s3:GetObject"


# --------------------------------------------------------------------------------------------
# HTTPS
# --------------------------------------------------------------------------------------------


def test_https_store_is_public_and_cannot_be_changed(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from refservers import StaticDirServer

    local = CLI(str(tmp_path / "store"), tmp_path)
    local.run("put", "-n", "pub/ds", str(make_tree(tmp_path / "src", FILES)))
    with StaticDirServer(str(tmp_path / "store")) as srv:
        web = CLI(srv.url, tmp_path)
        doc = json.loads(web.run("access", "show", "pub", "--json").stdout)
        assert doc["level"] == "public"
        line = web.refused("access", "set", "pub", "private")
        assert "static HTTPS store" in line


# --------------------------------------------------------------------------------------------
# Local stores: another uid
# --------------------------------------------------------------------------------------------

def _can_run_as_nobody() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run commands as another uid"
    if shutil.which("setpriv") is None:
        return "needs setpriv"
    return None


@functools.cache
def python_for_all() -> str:
    """artfs installed where every uid may run it (tests/installed.py): the checkout may sit
    under a directory other users cannot enter (CI's clone under /root), so it is not imported
    from there."""
    return installed().python


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A directory every uid may traverse (pytest's own tmp dirs are 0700)."""
    why = _can_run_as_nobody()
    if why:
        pytest.fail(f"these tests run commands as uid {NOBODY}: {why}")
    d = Path(tempfile.mkdtemp(prefix="artfs-access-", dir="/tmp"))
    try:
        d.chmod(0o755)
        home = d / "nobody"
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def as_nobody(shared: Path, *cmd: str, code: int | None = 0,
              groups: str | None = None) -> subprocess.CompletedProcess[str]:
    env = ["env", "-i", f"HOME={shared / 'nobody'}",
           f"ARTFS_CACHE_DIR={shared / 'nobody' / 'cache'}", f"ARTFS_STAGING_DIR={shared / 'nobody' / 'staging'}",
           "PATH=/usr/bin:/bin"]
    grp_args = [f"--groups={groups}"] if groups else ["--clear-groups"]
    p = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", *grp_args, *env, *cmd],
                       capture_output=True, text=True, timeout=120, cwd="/")
    if code is not None:
        assert p.returncode == code, f"{cmd} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def artfs_as_nobody(shared: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    return as_nobody(shared, python_for_all(), "-m", "artfs.cli", "--store", str(shared / "store"), *args, code=code)


def artfs_as_nobody_in(shared: Path, groups: str, *args: str) -> subprocess.CompletedProcess[str]:
    return as_nobody(shared, python_for_all(), "-m", "artfs.cli", "--store", str(shared / "store"), *args, groups=groups)


def test_local_store_levels_for_another_uid(shared):
    owner = CLI(str(shared / "store"), shared)
    src = make_tree(shared / "src", FILES)
    for p in ("pub", "priv"):
        owner.run("put", "-n", f"{p}/ds", str(src))
    owner.run("access", "set", "pub", "public")
    owner.run("access", "set", "priv", "private")
    levels = {a["project"]: (a["level"], a["managed"])
              for a in json.loads(owner.run("access", "show", "--json").stdout)["projects"]}
    assert levels == {"pub": ("public", True), "priv": ("private", True)}

    # new versions keep the level: files written after `access set` have the project's modes
    src2 = make_tree(shared / "src2", {**FILES, "later.txt": b"written after access set\n"})
    owner.run("put", "-n", "pub/ds", str(src2))
    owner.run("put", "-n", "priv/ds", str(src2))
    for p, fmode, dmode in (("pub", 0o664, 0o2775), ("priv", 0o660, 0o2770)):
        v1 = shared / "store" / p / "artifacts" / "ds" / "versions" / "1.json"
        assert stat.S_IMODE(v1.stat().st_mode) == fmode
        for d in (shared / "store" / p / "blobs").rglob("*"):
            if d.is_dir():
                assert stat.S_IMODE(d.stat().st_mode) == dmode, d
            else:
                assert stat.S_IMODE(d.stat().st_mode) == fmode, d

    # another user: the public project is listed and read, never written
    assert "pub" in artfs_as_nobody(shared, "ls").stdout
    assert "priv" not in artfs_as_nobody(shared, "ls").stdout
    artfs_as_nobody(shared, "get", "pub/ds:v1", "--root", str(shared / "nobody" / "got"))
    assert read_tree(shared / "nobody" / "got") == {**FILES, "later.txt": b"written after access set\n"}
    mine = make_tree(shared / "nobody" / "mine", {"x.txt": b"not yours\n"})
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(mine)], check=True)
    p = artfs_as_nobody(shared, "put", "-n", "pub/ds", str(mine), code=7)
    assert "put pub/ds" in p.stderr and "Traceback" not in p.stderr
    assert sorted(os.listdir(shared / "store" / "pub" / "artifacts" / "ds" / "versions")) == ["0.json", "1.json"]

    # ... and the private one can be neither listed nor read, by artfs or by anything else
    assert "ls priv" in artfs_as_nobody(shared, "ls", "priv", code=7).stderr
    assert "get priv/ds" in artfs_as_nobody(shared, "get", "priv/ds", "--root", "/tmp/never", code=7).stderr
    assert as_nobody(shared, "ls", str(shared / "store" / "priv"), code=None).returncode != 0
    assert as_nobody(shared, "cat", str(shared / "store" / "priv" / "index.json"), code=None).returncode != 0
    # private still means the owner *and the store's group*: a member reads it
    gid = (shared / "store").stat().st_gid
    listed = json.loads(artfs_as_nobody_in(shared, str(gid), "ls", "priv", "--json").stdout)
    assert [d["artifact"] for d in listed] == ["ds"]

    # open: the other user writes too
    owner.run("access", "set", "pub", "open")
    assert "pub/ds:v2 created" in artfs_as_nobody(shared, "put", "-n", "pub/ds", str(mine)).stdout
    assert [d["version"] for d in json.loads(owner.run("ls", "pub/ds", "--json").stdout)] == [0, 1, 2]

    # only the owner (or root) changes the level: another user is refused and nothing changes
    p = artfs_as_nobody(shared, "access", "set", "pub", "private", code=7)
    assert "access set pub private" in p.stderr and "only the owner" in p.stderr
    assert json.loads(owner.run("access", "show", "pub", "--json").stdout)["level"] == "open"

    # the cache and the staging directory artfs created for that user are private to it
    assert stat.S_IMODE((shared / "nobody" / "cache").stat().st_mode) == 0o700


REFUSED_DRAFT = textwrap.dedent("""
    import os, sys
    from artfs import Cache, PermissionDenied, Store
    from artfs._draft import Drafts, ROOT
    store_dir, home = sys.argv[1], sys.argv[2]
    store = Store(store_dir, cache=Cache(os.path.join(home, "cache")))
    d = Drafts(store, root=os.path.join(home, "staging")).open("pub", "ds")
    ino = d.namespace.create(ROOT, "mine.txt")
    d.staging.pwrite(ino, b"kept for a retry", 0)
    try:
        d.commit(store)
    except PermissionDenied as e:
        print("refused:", e)
    print("status:", d.status().added)
    d.close()
""")


def test_refused_draft_commit_stays_whole_for_a_retry(shared):
    owner = CLI(str(shared / "store"), shared)
    owner.run("put", "-n", "pub/ds", str(make_tree(shared / "src", FILES)))
    owner.run("access", "set", "pub", "public")
    script = shared / "nobody" / "draft.py"
    script.write_text(REFUSED_DRAFT)
    p = as_nobody(shared, python_for_all(), str(script), str(shared / "store"), str(shared / "nobody"))
    assert "refused:" in p.stdout and "pub/ds" in p.stdout, p.stdout + p.stderr
    assert "status: ['mine.txt']" in p.stdout
    staging = shared / "nobody" / "staging"
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700
    owner.run("access", "set", "pub", "open")
    p = artfs_as_nobody(shared, "commit", "pub/ds")
    assert "pub/ds:v1 created" in p.stdout
    owner.run("get", "pub/ds:v1", "--root", str(shared / "v1"))
    assert read_tree(shared / "v1")["mine.txt"] == b"kept for a retry"


def test_allow_group_lets_only_the_group_in(shared):
    owner = CLI(str(shared / "store"), shared)
    owner.run("put", "-n", "pub/ds", str(make_tree(shared / "src", FILES)))
    group = grp.getgrnam("users") if "users" in {g.gr_name for g in grp.getgrall()} else None
    if group is None:
        pytest.skip("needs a group named users")
    mnt = shared / "mnt"
    with MountProcess(str(shared / "store"), mnt, cache_dir=shared / "mcache",
                      args=["--read-only", "--allow-group", "users"]) as m:
        target = m.path("pub", "ds", "latest", "a.txt")
        st = os.stat(target)
        assert st.st_gid == group.gr_gid and st.st_mode & 0o007 == 0
        assert as_nobody(shared, "cat", target, code=None).returncode != 0
        assert as_nobody(shared, "cat", target, groups=str(group.gr_gid)).stdout == FILES["a.txt"].decode()


def test_cache_directory_is_created_private(tmp_path):
    c = Cache(str(tmp_path / "new-cache"))
    assert stat.S_IMODE(os.stat(c.root).st_mode) == 0o700
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    Cache(str(existing))
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # a directory the user made keeps its modes


def test_api_raises_permission_denied(s3_world, tmp_path, monkeypatch):
    cli, bucket = s3_world
    cli.run("access", "set", "pub", "public")
    monkeypatch.setenv("ARTFS_NO_SIGN_REQUEST", "1")
    store = Store(cli.store, cache=Cache(str(tmp_path / "api-cache")))
    assert store.artifact("pub/ds:v0").download(str(tmp_path / "api-got"))
    assert read_tree(tmp_path / "api-got") == FILES
    with pytest.raises(PermissionDenied):
        store.artifact("priv/ds:v0")


def test_fstab_options_reach_the_daemon(monkeypatch):
    """`mount -t fuse.artfs ... -o no_sign_request,allow_group=users` means the same as the flags."""
    import argparse

    from artfs._mounts import add_mount_arguments, apply_mount_options, daemon_argv
    from artfs.cli import build_parser, mount_args

    monkeypatch.setenv("ARTFS_NO_SIGN_REQUEST", "0")  # recorded, so the test leaves the variable as it was
    argv = mount_args(["s3://b/p", "/mnt/x", "-o", "no_sign_request,allow_group=users,_netdev"])
    assert argv is not None
    args = build_parser().parse_args(argv)
    assert args.no_sign_request and args.allow_group == "users"

    p = argparse.ArgumentParser()
    add_mount_arguments(p, daemon=False)
    args = apply_mount_options(p.parse_args(["s", "/mnt/x", "-o", "no_sign_request,allow_group=users"]))
    assert os.environ.get("ARTFS_NO_SIGN_REQUEST") == "1"  # what the exec'd daemon's S3 client reads
    d = argparse.ArgumentParser()
    add_mount_arguments(d, daemon=True)
    assert d.parse_args(daemon_argv(args, "s")).allow_group == "users"
