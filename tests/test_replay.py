"""``artfs mount --run`` and ``artfs replay``: a past run's inputs, and the run again on them.

A training-style script reads its data through a real mount via ``latest/`` inside ``artfs run``;
then a new version is logged (``latest`` moves). ``artfs replay`` mounts what the run read and
runs the recorded command again: it reads the old bytes, and its record names the run it
replays. A run whose input was deleted is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from artfs import Artifact, Cache, Store
from artfsd.testing import MountProcess

TRAIN = """\
import os, sys
data, out = sys.argv[1], sys.argv[2]
with open(os.path.join(data, "data.txt")) as f:
    text = f.read()
with open(out, "a") as f:
    f.write(text + "\\n")
"""


def log_version(store: Store, tmp: Path, text: str) -> None:
    src = tmp / f"src-{text}"
    src.mkdir()
    (src / "data.txt").write_text(text)
    art = Artifact("ds", type="dataset")
    art.add_dir(str(src))
    store.log_artifact(art, project="p")


def artfs(tmp: Path, store: Store, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
    env.update(ARTFS_STORE=store.url, ARTFS_CACHE_DIR=str(tmp / "cli-cache"), HOME=str(tmp))
    p = subprocess.run([sys.executable, "-m", "artfs.cli", *args], env=env, capture_output=True, text=True,
                       timeout=120, cwd=tmp)
    assert p.returncode == code, (p.stdout, p.stderr)
    return p


@pytest.fixture
def world(tmp_path: Path) -> tuple[Store, Path]:
    """p/ds:v0 read by run p/train1 through a mount's latest/, then v1 logged (latest -> v1)."""
    store = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "cache")))
    log_version(store, tmp_path, "zero")
    (tmp_path / "train.py").write_text(TRAIN)
    out = tmp_path / "out.txt"
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mount-cache") as m:
        artfs(tmp_path, store, "run", "-p", "p", "--id", "train1", "--", sys.executable, str(tmp_path / "train.py"),
              m.path("p/ds/latest"), str(out))
    assert out.read_text() == "zero\n"
    log_version(store, tmp_path, "one")
    assert store.aliases("p", "ds")["latest"] == 1
    return store, tmp_path


def test_replay_reads_the_old_bytes_and_records_the_replay(world: tuple[Store, Path]) -> None:
    store, tmp = world
    p = artfs(tmp, store, "replay", "p/train1")
    assert "replaying p/train1 as run p/" in p.stderr
    assert (tmp / "out.txt").read_text() == "zero\nzero\n"  # v0's bytes, though latest is v1 now
    runs = {d["id"]: d for d in json.loads(artfs(tmp, store, "runs", "ls", "p", "--json").stdout)}
    (replay,) = [d for d in runs.values() if d.get("replay_of") == "p/train1"]
    assert replay["source"] == "replay" and replay["state"] == "finished"
    assert replay["inputs"] == ["p/ds:v0"]  # what it read through the replay's mount
    tree = artfs(tmp, store, "lineage", "p/ds:v0", "--down").stdout
    assert "run p/train1" in tree and f"run p/{replay['id']}" in tree and "[replay of p/train1]" in tree
    # an explicit command instead of the recorded one, with $ARTFS_MOUNT
    artfs(tmp, store, "replay", "p/train1", "--", "sh", "-c",
          f'{sys.executable} {tmp / "train.py"} "$ARTFS_MOUNT/p/ds/latest" {tmp / "out2.txt"}')
    assert (tmp / "out2.txt").read_text() == "zero\n"
    assert not [d for d in os.listdir(tmp) if d.startswith("artfs-replay-")]


def test_mount_run_shows_what_the_run_read(world: tuple[Store, Path]) -> None:
    store, tmp = world
    with MountProcess(store.url, tmp / "view", cache_dir=tmp / "view-cache", args=["--run", "p/train1"]) as m:
        assert os.listdir(m.path("")) == ["p"]
        assert set(os.listdir(m.path("p/ds"))) == {"v0", "latest"}
        assert os.readlink(m.path("p/ds/latest")) == "v0"
        assert Path(m.path("p/ds/latest/data.txt")).read_text() == "zero"


def test_a_run_whose_input_was_deleted_is_not_replayed(world: tuple[Store, Path]) -> None:
    store, tmp = world
    store.delete_version("p", "ds", 0)
    p = artfs(tmp, store, "replay", "p/train1", code=3)
    assert p.stderr.strip() == ("artfs: error: p/train1 cannot be replayed: it read p/ds:v0, deleted since "
                                "(their files are gone)")
    assert "no such run" in artfs(tmp, store, "replay", "p/nope", code=3).stderr
    artfs(tmp, store, "replay", "p/../x", code=2)
