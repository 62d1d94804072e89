"""The examples of README.md and docs/*.md run as written, so that what a newcomer copies works.

Every ```` ```sh ```` and ```` ```python ```` block of README.md and of each ``docs/*.md`` runs,
unless the line before it says ``<!-- readme-test: skip (why) -->`` (blocks that install system
packages or need a cloud account or the internet; keep that set small, and say why in the
marker). Each file is a guide of its own:

* a file's shell blocks run in order, each in its own ``bash -e``, through the real ``artfs``
  command installed beside this Python, all in one fresh ``$HOME`` for that file (so the default
  store, cache, staging directory and ``~/data`` are the test's own) and one working directory: a
  later block sees what an earlier one of the same file made, as a reader following the guide
  would; no file sees another's. Mounts the blocks make are real FUSE mounts; whatever they leave
  mounted under the test's directory is unmounted at the end. ``s3://my-bucket`` is a bucket on
  the test's own S3 server, whose credentials are in the environment, as a user's would be.
* each Python block runs alone, in a fresh directory with a fresh default store.

Test ids name the file and the line of the block (``docs/x.md:12 (python)``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from artfs._mounts import FSTYPE

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<why>[^)]+)\)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_+-]*)\s*$")


class Block:
    def __init__(self, lang: str, line: int, code: str, skip: str | None, file: str = "README.md") -> None:
        self.lang, self.line, self.code, self.skip, self.file = lang, line, code, skip, file

    def __repr__(self) -> str:
        return f"{self.file}:{self.line} ({self.lang})"


def blocks(text: str, file: str = "README.md") -> list[Block]:
    """Every fenced block with its language, first line number and skip reason (if marked)."""
    out: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group("lang")
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        mark = SKIP.search(prev)
        out.append(Block(lang, start + 1, "\n".join(lines[start + 1 : j]) + "\n", mark.group("why") if mark else None,
                         file))
        i = j + 1
    return out


def _is_shell(b: Block) -> bool:
    return b.lang in ("sh", "bash", "shell")


#: every file's blocks, README.md first, by the file's path relative to the repository
BY_FILE = {str(p.relative_to(ROOT)): blocks(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))
           for p in [README, *DOCS]}
ALL = BY_FILE["README.md"]
SHELL = [b for b in ALL if _is_shell(b)]
PYTHON = [b for b in ALL if b.lang == "python"]
#: the files whose shell blocks run (README.md always: it must have some)
SHELL_FILES = [f for f, bs in BY_FILE.items() if f == "README.md" or any(_is_shell(b) and not b.skip for b in bs)]
EVERY_PYTHON = [b for bs in BY_FILE.values() for b in bs if b.lang == "python" and not b.skip]


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    bindir = os.path.dirname(sys.executable)  # the venv's bin: the real `artfs` console script
    env.update(HOME=str(home), PATH=f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}")
    return env


def _mounts_under(root: Path) -> list[str]:
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split(" - ")[0].split()
            fstype = line.split(" - ")[1].split()[0]
            mnt = fields[4].replace("\\040", " ")
            if fstype == FSTYPE and (mnt + "/").startswith(str(root) + "/"):
                out.append(mnt)
    return out


def _unmount_all(root: Path) -> None:
    """Unmount what the blocks left mounted under ``root`` (ours only), and wait for the daemons."""
    for mnt in reversed(_mounts_under(root)):
        pid = None
        try:
            pid = int(os.getxattr(mnt, "user.artfs.pid"))
        except (OSError, ValueError):
            pass
        if subprocess.run(["fusermount3", "-u", mnt], capture_output=True).returncode != 0:
            subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)
        deadline = time.monotonic() + 30
        while pid and os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)


def test_the_readme_has_examples_and_few_skipped() -> None:
    assert len(SHELL) >= 5 and len(PYTHON) >= 1
    skipped = [b for b in ALL if b.skip]
    assert all(b.lang in ("sh", "python") for b in skipped)
    assert len(skipped) <= len([b for b in ALL if b.lang in ("sh", "python")]) // 2


@pytest.mark.parametrize("file", [f for f in BY_FILE if f != "README.md"])
def test_docs_mark_only_blocks_that_would_run(file: str) -> None:
    """A skip marker on a block that never runs (json, plain text) hides nothing: it is a mistake."""
    assert all(b.lang in ("sh", "python") for b in BY_FILE[file] if b.skip), file


@pytest.fixture
def my_bucket(s3_server: str) -> Iterator[str]:
    """The README's ``s3://my-bucket``, on the test's own S3 server (its credentials in the environment)."""
    from artfs.backends.s3 import S3Backend

    b = S3Backend("s3://my-bucket")
    b.ensure_bucket()
    try:
        yield "my-bucket"
    finally:
        for info in list(b.list("")):
            b.delete(info.key)
        b.client.delete_bucket(Bucket="my-bucket")
        b.close()


@pytest.mark.parametrize("file", SHELL_FILES)
def test_shell_examples_run_in_order(file: str, tmp_path: Path, my_bucket: str) -> None:
    env = _env(tmp_path)  # with AWS_* of the test's S3 server, where my-bucket exists
    work = tmp_path / "work"
    work.mkdir()
    ran = []
    try:
        for b in BY_FILE[file]:
            if b.skip or not _is_shell(b):
                continue
            p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", b.code], cwd=work, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, f"{b!r} failed ({p.returncode}):\n{b.code}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
            ran.append(b)
        assert not _mounts_under(tmp_path), f"the examples of {file} leave a mount behind"
    finally:
        _unmount_all(tmp_path)
    assert len(ran) >= (4 if file == "README.md" else 1)


@pytest.mark.parametrize("block", EVERY_PYTHON, ids=repr)
def test_python_example_runs(block: Block, tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")  # the checkout under test, as for the CLI
    p = subprocess.run([sys.executable, "-P", "-c", block.code], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"{block!r} failed:\n{block.code}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
