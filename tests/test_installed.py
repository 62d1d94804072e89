"""What a user installs: the sdist and the wheel built from this checkout, installed into a fresh
venv outside it (tests/installed.py), used with the checkout off ``sys.path``.

The smoke run goes through every kind of command once (put, get, ls, warmup, mount, read, a draft
written, umount into a new version, a run's lineage); an ordinary user (uid 65534, not root) on a
normal host (``/dev/fuse`` 0666, ``fusermount3`` setuid) does the same with their own store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from installed import ROOT, Installed, installed, normal_host, sdist_names, wheel_names

NOBODY = 65534
pytestmark = pytest.mark.timeout(900)  # the first build of the venv takes a minute or two


@pytest.fixture(scope="module")
def inst() -> Installed:
    return installed()


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory outside the checkout that every uid may traverse (pytest's are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="artfs-user-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for line in Path("/proc/mounts").read_text().splitlines():
            mnt = line.split()[1]
            if mnt.startswith(str(d) + "/"):
                subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_the_wheel_and_the_sdist_hold_everything(inst):
    packages = sorted(str(p.parent.relative_to(ROOT)) for tree in ("artfs", "artfsd")
                      for p in (ROOT / tree).rglob("__init__.py") if "__pycache__" not in p.parts)
    wheel = wheel_names(inst.wheel)
    for pkg in packages:  # every package of the checkout, artfs._draft and artfs._refs included
        assert f"{pkg}/__init__.py" in wheel, pkg
    assert "artfs/_fusebuild/build-fuse.sh" in wheel
    assert any(n.startswith("artfs/_fusebuild/patches/") and n.endswith(".patch") for n in wheel)
    entry = next(n for n in wheel if n.endswith("entry_points.txt"))
    sdist = sdist_names(inst.sdist)
    for need in ("pyproject.toml", "README.md", "systemd/artfs@.service", "artfs/_fusebuild/build-fuse.sh"):
        assert need in sdist, need
    import zipfile

    with zipfile.ZipFile(inst.wheel) as z:
        scripts = z.read(entry).decode()
    assert "artfs = artfs.cli:main" in scripts and "mount.artfs = artfs.cli:mount_helper" in scripts


SMOKE = r"""
set -euo pipefail
# the installed package, not the checkout
python -I -c 'import artfs, artfsd, artfs._draft, artfs._refs, sys; assert sys.prefix in artfs.__file__, artfs.__file__'
artfs --version
mkdir -p data/sub && echo one > data/a.txt && echo two > data/sub/b.txt
artfs put -n p/data data
artfs put -n p/data data                        # unchanged: no new version
artfs ls p/data --json > ls.json
artfs get p/data:latest --root out && cmp out/a.txt data/a.txt && cmp out/sub/b.txt data/sub/b.txt
artfs warmup p/data:v0
python -I -c 'import fsspec; assert fsspec.open("artfs://p/data/latest/sub/b.txt").open().read() == b"two\n"'
mkdir -p mnt
artfs mount mnt
test "$(cat mnt/p/data/latest/a.txt)" = one
test "$(cat mnt/p/data/v0/sub/b.txt)" = two
artfs run -p p --id reader -- cat mnt/p/data/latest/sub/b.txt > read.txt
mkdir -p mnt/p/model/draft && echo weights > mnt/p/model/draft/model.bin
echo three > mnt/p/data/draft/c.txt
artfs umount mnt
test "$(cat read.txt)" = two
artfs ls p/data --json > ls2.json
artfs ls p/model --json > model.json
artfs get p/data:v1 --root out2 && test "$(cat out2/c.txt)" = three && cmp out2/a.txt data/a.txt
artfs lineage p/data:v0 --json > lineage.json
artfs doctor --json > doctor.json
"""


def _smoke(inst: Installed, where: Path, *, as_uid: int | None = None) -> dict[str, object]:
    home = where / "home"
    home.mkdir()
    work = where / "work"
    work.mkdir()
    if as_uid is not None:
        os.chown(home, as_uid, as_uid)
        os.chown(work, as_uid, as_uid)
    (where / "smoke.sh").write_text(SMOKE)
    cmd = ["bash", str(where / "smoke.sh")]
    if as_uid is not None:
        cmd = ["setpriv", f"--reuid={as_uid}", f"--regid={as_uid}", "--clear-groups", *cmd]
    p = subprocess.run(cmd, cwd=work, env=inst.env(home), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return {name: json.loads((work / f"{name}.json").read_text())
            for name in ("ls", "ls2", "model", "lineage", "doctor")}


def _versions(doc: object) -> list[str]:
    rows = doc if isinstance(doc, list) else doc["versions"]  # type: ignore[index]
    return [r["version"] for r in rows]


def _check(docs: dict[str, object]) -> None:
    assert _versions(docs["ls"]) == [0]
    assert _versions(docs["ls2"]) == [0, 1]  # the draft written through the mount
    assert _versions(docs["model"]) == [0]
    lineage = json.dumps(docs["lineage"])
    assert "p/reader" in lineage  # the run that read through latest/ used v0
    verdicts = {c["check"]: c["verdict"] for c in docs["doctor"]}  # type: ignore[attr-defined]
    assert verdicts["fuse-device"] == "ok" and "fail" not in verdicts.values(), verdicts


def test_the_installed_package_runs_every_command(inst, place):
    _check(_smoke(inst, place))


def test_an_ordinary_user_mounts_reads_and_commits(inst, place):
    """Not root, on a normal host: own store and cache under HOME, the mount through the setuid
    fusermount3, a draft written and unmounted into a new version."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.fail("this test makes the host normal and runs as another uid: it needs root and setpriv")
    with normal_host():
        _check(_smoke(inst, place, as_uid=NOBODY))
