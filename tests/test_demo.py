"""The README's main job: ``python -m artfs.demo`` on a fresh machine's default store (a fresh
``$HOME``), as a newcomer runs it; twice, since each run adds versions to what the last left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(300)
def test_the_demo_runs_and_leaves_what_it_says(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{os.path.dirname(sys.executable)}:{env.get('PATH', '/usr/bin:/bin')}")
    (tmp_path / "home").mkdir()
    for run in (1, 2):
        p = subprocess.run([sys.executable, "-m", "artfs.demo"], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=240, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, f"run {run}: exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        assert "changed  " in p.stdout and "labels.csv" in p.stdout  # the diff of the two puts
        assert "Done." in p.stdout
    ls = subprocess.run([sys.executable, "-m", "artfs.cli", "ls", "demo/bike-dataset", "--json"], env=env,
                        capture_output=True, text=True, timeout=60, check=True)
    rows = {r["version"]: r["aliases"] for r in json.loads(ls.stdout)}
    assert sorted(rows) == [0, 1, 2, 3, 4]  # v0-v2 from the first run, two more from the second
    assert "best" in rows[0] and "latest" in rows[4]
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    assert not [m for m in mounts if "artfs-demo-" in m]  # the demo's mount is gone
