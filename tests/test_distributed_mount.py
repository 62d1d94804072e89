"""``artfs mount --group G``: each draft's commit at unmount becomes a part of G (issue 9).

Two real FUSE mounts ("machines", each with its own cache and staging directory) write shards
into the same artifact's draft, unmount, and one ``artfs finish`` makes one version with both
machines' files. On a local store and on S3 (moto).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import artfs
from artfsd.testing import MountProcess, is_mounted

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-m", "artfs.cli"]


def env_for(tmp_path: Path, url: str, machine: str) -> dict[str, str]:
    env = {**os.environ, "ARTFS_STAGING_DIR": str(tmp_path / f"staging-{machine}"),
           "ARTFS_CACHE_DIR": str(tmp_path / f"cache-{machine}"), "ARTFS_STORE": url,
           "XDG_STATE_HOME": str(tmp_path / "state")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli(tmp_path: Path, url: str, *args: str, machine: str = "a") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env_for(tmp_path, url, machine), capture_output=True, text=True,
                          timeout=120)


def read_tree(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for fn in files:
            p = os.path.join(dirpath, fn)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


@pytest.mark.timeout(300)
def test_two_mounts_with_a_group_then_one_finish_make_one_version(backend_url, tmp_path):
    store = artfs.Store(backend_url, cache=artfs.Cache(str(tmp_path / "check")))
    base = artfs.Artifact("shards", type="dataset")
    with base.new_file("README.md", "w") as f:
        f.write("shards of the nightly run\n")
    store.log_artifact(base, project="proj")  # v0: the drafts start from it

    mounts = {m: MountProcess(backend_url, tmp_path / f"mnt-{m}", cache_dir=tmp_path / f"cache-{m}",
                              env=env_for(tmp_path, backend_url, m), args=["--group", "night-1"])
              for m in ("a", "b")}
    written: dict[str, bytes] = {}
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    with mounts["a"], mounts["b"]:
        for m, proc in mounts.items():
            draft = proc.path("proj", "shards", "draft")
            attrs = {k: os.getxattr(draft, k) for k in os.listxattr(draft)}
            assert attrs["user.artfs.group"] == b"night-1"  # getfattr -d draft shows the group
            os.makedirs(os.path.join(draft, f"machine-{m}"))
            for i in range(3):
                data = f"{m} shard {i}\n".encode() * 1000
                with open(os.path.join(draft, f"machine-{m}", f"{i}.bin"), "wb") as f:
                    f.write(data)
                written[f"machine-{m}/{i}.bin"] = data
        threads = [threading.Thread(target=lambda m=m, p=p: results.__setitem__(
            m, cli(tmp_path, backend_url, "umount", p.mountpoint, machine=m))) for m, p in mounts.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    for m, r in results.items():
        assert r.returncode == 0, r.stderr
        assert "recorded as a part of group night-1" in r.stdout, r.stdout
        assert not is_mounted(mounts[m].mountpoint)
    assert store.versions("proj", "shards") == [0]  # parts, not versions

    r = cli(tmp_path, backend_url, "status")
    assert "proj/shards  group night-1  2 parts" in r.stdout, r.stdout
    r = cli(tmp_path, backend_url, "finish", "proj/shards", "--group", "night-1", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["version"], doc["created"]) == (1, True)
    assert store.versions("proj", "shards") == [0, 1]
    a = store.artifact("proj/shards:v1")
    a.download(str(tmp_path / "out"))
    assert read_tree(str(tmp_path / "out")) == {"README.md": b"shards of the nightly run\n", **written}

    # the drafts were handed over: a plain mount afterwards starts from v1 and commits nothing
    with MountProcess(backend_url, tmp_path / "mnt-a", cache_dir=tmp_path / "cache-a",
                      env=env_for(tmp_path, backend_url, "a")) as m:
        assert read_tree(m.path("proj", "shards", "draft")) == read_tree(str(tmp_path / "out"))
        r = cli(tmp_path, backend_url, "umount", m.mountpoint)
        assert r.returncode == 0 and r.stdout.strip() == "", r.stdout
    assert store.versions("proj", "shards") == [0, 1]


def test_commit_through_a_group_mount_replaces_its_part(local_url, tmp_path):
    """``artfs commit MNT/.../draft`` in a --group mount records the part at once; later commits and
    the unmount replace that same part (one writer per draft), never add a second one."""
    url = local_url
    store = artfs.Store(url, cache=artfs.Cache(str(tmp_path / "check")))
    with MountProcess(url, tmp_path / "mnt", cache_dir=tmp_path / "cache-a", env=env_for(tmp_path, url, "a"),
                      args=["--group", "g"]) as m:
        os.mkdir(m.path("proj"))
        os.mkdir(m.path("proj", "new"))
        draft = m.path("proj", "new", "draft")
        with open(os.path.join(draft, "one.txt"), "w") as f:
            f.write("one")
        r = cli(tmp_path, url, "commit", draft)
        assert r.returncode == 0 and "recorded as a part of group g" in r.stdout, r.stderr
        (g,) = store.groups("proj")
        assert [p.files for p in g.parts] == [1]
        with open(os.path.join(draft, "two.txt"), "w") as f:
            f.write("two")
        r = cli(tmp_path, url, "umount", m.mountpoint)
        assert r.returncode == 0, r.stderr
    (g,) = store.groups("proj")
    assert [p.files for p in g.parts] == [2]  # the same writer's part, replaced
    v = store.finish_artifact(artfs.Artifact("new"), "proj", "g")
    assert sorted(e.path for e in v.files()) == ["one.txt", "two.txt"]
