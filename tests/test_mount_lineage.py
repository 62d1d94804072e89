"""Lineage recorded by the mount itself (issue 8), on real FUSE mounts.

Unmodified programs read versions and write drafts through the mount; after ``artfs umount``
the store knows which run used what and logged what. Programs are started in their own process
group (``process_group=0``), as a shell with job control starts each command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import artfs
from artfs import Artifact, Cache, Store
from artfsd.testing import MountProcess, is_mounted

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-m", "artfs.cli"]


class World:
    """A store with p/data:v0, p/extra:v0 and p/other:v0, and one mount's cache and staging dirs."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.store = Store(url, cache=Cache(str(root / "writer-cache")))
        for name, files in (("data", {"a.txt": b"data\n"}), ("extra", {"x.txt": b"extra\n"}),
                            ("other", {"b.txt": b"other\n"})):
            art = Artifact(name, type="dataset")
            for rel, data in files.items():
                with art.new_file(rel, mode="wb") as f:
                    f.write(data)
            self.store.log_artifact(art, project="p")
        self.mnt = root / "mnt"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARTFS_")}
        return {**env, "ARTFS_STAGING_DIR": str(self.root / "staging"), "ARTFS_CACHE_DIR": str(self.root / "cache"),
                "ARTFS_STORE": self.store.url, "XDG_STATE_HOME": str(self.root / "state"), "PYTHONPATH": ROOT,
                **extra}

    def mount(self, *args: str) -> MountProcess:
        return MountProcess(self.store.url, self.mnt, cache_dir=self.root / "cache", env=self.env(),
                            args=["--refresh", "1", *args])

    def program(self, code: str, *args: str, wrap: list[str] | None = None) -> subprocess.Popen[str]:
        """Start ``python -c code MNT args`` in its own process group (like a shell's job)."""
        cmd = [*(wrap or []), sys.executable, "-c", textwrap.dedent(code), str(self.mnt), *args]
        return subprocess.Popen(cmd, env=self.env(), cwd=str(self.root), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, process_group=0)

    def umount(self, m: MountProcess) -> None:
        r = subprocess.run([*CLI, "umount", str(self.mnt)], env=self.env(), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert not is_mounted(self.mnt)

    def api(self) -> artfs.Api:
        return artfs.Api(store=Store(self.store.url, cache=Cache(str(self.root / "api-cache"))))

    def mount_runs(self) -> list[artfs.Run]:
        return [r for r in self.api().runs("p") if r.record.source == "mount"]


def finish(p: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return out, err


@pytest.fixture(params=["local", "s3"])
def world(request, tmp_path: Path) -> World:
    url = request.getfixturevalue(f"{request.param}_url")
    return World(tmp_path, url)


# An ordinary training script: reads the dataset through the mount, writes a model into a draft.
TRAIN = r'''
import os, sys
mnt = sys.argv[1]
src = sys.argv[2] if len(sys.argv) > 2 else "v0"
data = open(os.path.join(mnt, "p/data", src, "a.txt")).read()
os.makedirs(os.path.join(mnt, "p/model"), exist_ok=True)
with open(os.path.join(mnt, "p/model/draft/weights.txt"), "w") as f:
    f.write("trained on " + data)
'''


def test_a_program_reading_and_writing_through_the_mount_is_a_run(world: World) -> None:
    with world.mount() as m:
        finish(world.program(TRAIN))
        os.listdir(m.path("p/other/v0"))  # listing is not use
        world.umount(m)
    api = world.api()
    model = api.artifact("p/model:v0")
    run = model.logged_by()
    assert run is not None
    assert [a.qualified_name for a in run.used_artifacts()] == ["p/data:v0"]
    assert [a.qualified_name for a in run.logged_artifacts()] == ["p/model:v0"]
    assert [r.path for r in api.artifact("p/data:v0").used_by()] == [run.path]
    assert api.artifact("p/other:v0").used_by() == []
    rec = api.run(run.path).record
    assert rec.source == "mount" and rec.command[0] == sys.executable and rec.cwd == str(world.root)
    assert (rec.inputs, rec.outputs, rec.state) == (["p/data:v0"], ["p/model:v0"], "finished")
    assert model.manifest.run == run.path
    # the version directory says who logged it
    with world.mount("--read-only") as m:
        assert os.getxattr(m.path("p/model/v0"), "user.artfs.logged_by").decode() == run.path
        assert "user.artfs.logged_by" not in os.listxattr(m.path("p/data/v0"))


PARALLEL = r'''
import multiprocessing, os, sys, time
mnt, what, go = sys.argv[1], sys.argv[2], sys.argv[3]

def worker(path):  # like a DataLoader worker: a child process of the program
    open(path).read()

if __name__ == "__main__":
    name = {"data": "a.txt", "other": "b.txt"}[what]
    open(os.path.join(mnt, "p", what, "latest", name)).read()       # through an alias: recorded as v0
    if what == "data":
        ctx = multiprocessing.get_context("fork")
        p = ctx.Process(target=worker, args=(os.path.join(mnt, "p/extra/v0/x.txt"),))
        p.start(); p.join()
        assert p.exitcode == 0
    open(go + "." + what, "w").close()
    deadline = time.monotonic() + 30
    while not (os.path.exists(go + ".data") and os.path.exists(go + ".other")):  # both alive at once
        assert time.monotonic() < deadline
        time.sleep(0.01)
'''


def test_two_programs_in_parallel_are_two_runs_each_with_only_what_it_read(world: World) -> None:
    go = str(world.root / "go")
    with world.mount() as m:
        a = world.program(PARALLEL, "data", go)
        b = world.program(PARALLEL, "other", go)
        finish(a)
        finish(b)
        world.umount(m)
    runs = world.mount_runs()
    assert len(runs) == 2
    inputs = sorted(sorted(x.qualified_name for x in r.used_artifacts()) for r in runs)
    assert inputs == [["p/data:v0", "p/extra:v0"], ["p/other:v0"]]  # the worker joined its parent's run
    assert sorted(r.path for r in world.api().artifact("p/extra:v0").used_by()) == \
        sorted(r.path for r in world.api().artifact("p/data:v0").used_by())


NAMED = r'''
import os, sys, artfs
mnt = sys.argv[1]
data = open(os.path.join(mnt, "p/data/latest/a.txt")).read()    # a plain read: the mount files it
with open(os.path.join(mnt, "p/model/draft/weights.txt"), "w") as f:
    f.write("named " + data)
with artfs.init(project="p", job_type="eval") as run:              # the API joins the same run
    run.use_artifact("other:v0")
    print(run.path)
'''


def test_artfs_run_names_the_run_and_the_api_inside_joins_it(world: World) -> None:
    with world.mount() as m:
        os.mkdir(m.path("p/model"))
        p = world.program(NAMED, wrap=[*CLI, "run", "-p", "p", "--job-type", "train", "--name", "named", "--"])
        out, err = finish(p)
        run_path = out.strip()
        assert f"artfs: run {run_path}" in err
        world.umount(m)
    api = world.api()
    run = api.run(run_path)
    assert (run.name, run.job_type, run.record.source, run.record.exit_status) == ("named", "train", "cli", 0)
    assert sorted(a.qualified_name for a in run.used_artifacts()) == ["p/data:v0", "p/other:v0"]
    assert api.artifact("p/model:v0").logged_by().path == run_path
    assert world.mount_runs() == []  # no second, automatic run for the same processes


def test_no_lineage_records_nothing(world: World) -> None:
    with world.mount("--no-lineage") as m:
        finish(world.program(TRAIN))
        assert m.stats()["lineage"]["enabled"] is False
        world.umount(m)
    assert world.api().runs("p") == []
    assert world.api().artifact("p/data:v0").used_by() == []
    assert world.api().artifact("p/model:v0").logged_by() is None


def test_lineage_is_written_while_mounted(world: World) -> None:
    """The background writer files a run's edges without waiting for the unmount."""
    with world.mount() as m:
        finish(world.program(TRAIN))
        deadline = time.monotonic() + 30
        while not world.api().artifact("p/data:v0").used_by():
            assert time.monotonic() < deadline, m.stats()
            time.sleep(0.2)
        assert m.stats()["lineage"]["edges"] >= 1
        world.umount(m)
