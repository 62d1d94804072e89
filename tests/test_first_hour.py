"""A newcomer's first hour (issue 13): what goes wrong first gets a clear answer, never a traceback.

Everything runs the real ``artfs`` command in a subprocess, with its own ``$HOME``, store and
cache under ``tmp_path``; mounts are real FUSE mounts, unmounted in ``finally`` even when a test
fails (only the mountpoints these tests made).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

import artfs
from artfs.cli import build_parser
from artfsd.testing import is_mounted

ARTFS = os.path.join(os.path.dirname(sys.executable), "artfs")  # the installed console script


class User:
    """A user with a fresh home: the default store, cache and logs are under ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.home.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
        self.env["HOME"] = str(self.home)
        self.mounts: list[Path] = []

    def run(self, *args: str, code: int = 0, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([ARTFS, *args], env=self.env, cwd=cwd or self.tmp, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        assert p.returncode == code, f"artfs {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def fails(self, *args: str, code: int, cwd: Path | None = None) -> str:
        """One ``artfs: error:`` line on stderr, nothing on stdout, exit ``code``; returns the line."""
        p = self.run(*args, code=code, cwd=cwd)
        lines = p.stderr.strip().splitlines()
        assert "Traceback" not in p.stderr and len(lines) == 1 and lines[0].startswith("artfs: error: "), p.stderr
        assert p.stdout == ""
        return lines[0]

    def mount(self, mnt: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``artfs mount ARGS`` (which name ``mnt``); ``mnt`` is unmounted at the end of the test."""
        self.mounts.append(mnt)
        return self.run("mount", *args, cwd=cwd)

    def cleanup(self) -> None:
        for mnt in self.mounts:
            if is_mounted(mnt):
                if subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True).returncode != 0:
                    subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


@pytest.fixture
def user(tmp_path: Path) -> Iterator[User]:
    u = User(tmp_path)
    try:
        yield u
    finally:
        u.cleanup()


def _dataset(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("hello\n")
    (root / "sub" / "b.txt").write_text("world\n")
    return root


# -- 1: the daemon cannot be shadowed by the current directory -----------------------------------
def test_mount_from_a_directory_holding_a_folder_named_artfs(user: User) -> None:
    user.run("put", "-n", "p/a", str(_dataset(user.tmp / "data")))
    clone = user.tmp / "clone"  # what `git clone .../artfs` leaves in one's home
    (clone / "artfs").mkdir(parents=True)
    (clone / "artfs" / "__init__.py").write_text("raise ImportError('the wrong artfs')\n")
    (clone / "artfsd").mkdir()
    (clone / "artfsd" / "__init__.py").write_text("raise ImportError('the wrong artfsd')\n")
    mnt = user.tmp / "mnt"
    mnt.mkdir()
    user.mount(mnt, str(mnt), cwd=clone)
    assert is_mounted(mnt)
    assert (mnt / "p" / "a" / "latest" / "sub" / "b.txt").read_text() == "world\n"
    user.run("umount", str(mnt))
    assert not is_mounted(mnt)


def test_a_daemon_that_cannot_start_is_one_line_naming_the_log(user: User) -> None:
    user.run("put", "-n", "p/a", str(_dataset(user.tmp / "data")))
    broken = user.tmp / "broken"  # a broken installation: the daemon package fails to import
    (broken / "artfsd").mkdir(parents=True)
    (broken / "artfsd" / "__init__.py").write_text("")
    (broken / "artfsd" / "main.py").write_text("import no_such_module_for_artfsd\n")
    user.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(broken), os.environ.get("PYTHONPATH", "")]))
    mnt = user.tmp / "mnt"
    mnt.mkdir()
    line = user.fails("mount", str(mnt), code=1)
    assert "cannot start the mount daemon" in line and "no_such_module_for_artfsd" in line
    log = line.rsplit("(log: ", 1)[1].rstrip(")")
    assert log.startswith(str(user.home)) and "Traceback" in Path(log).read_text()
    assert not is_mounted(mnt)


# -- 3: a store that does not exist ----------------------------------------------------------------
def test_a_store_that_does_not_exist_is_an_error(user: User) -> None:
    typo = user.tmp / "typo"
    assert "no store at" in user.fails("--store", str(typo), "ls", code=3)
    assert "no store at" in user.fails("ls", "--store", str(typo), "p/a", code=3)
    assert "no store at" in user.fails("--store", str(typo), "get", "p/a", code=3)
    user.env["ARTFS_STORE"] = str(typo)
    assert "no store at" in user.fails("show", "p/a", code=3)
    del user.env["ARTFS_STORE"]
    mnt = user.tmp / "mnt"
    mnt.mkdir()
    assert "no store at" in user.fails("mount", str(typo), str(mnt), "--read-only", code=3)
    assert not is_mounted(mnt) and not typo.exists()  # nothing made, nothing mounted


def test_the_default_store_before_first_use(user: User) -> None:
    default = user.home / ".local" / "share" / "artfs" / "store"
    p = user.run("ls")  # a fresh machine: not an error, but said
    assert p.stdout == "" and f"no store yet at {default}" in p.stderr and "artfs put" in p.stderr
    assert "no store yet" in user.fails("get", "p/a", code=3)
    p = user.run("put", "-n", "p/a", str(_dataset(user.tmp / "data")))
    assert f"created the store {default}" in p.stderr and default.is_dir()
    assert "p/a:v0 created" in p.stdout
    p = user.run("put", "-n", "p/b", str(user.tmp / "data"))
    assert "created the store" not in p.stderr


def test_a_writable_mount_creates_the_store_and_says_so(user: User) -> None:
    new = user.tmp / "new-store"
    mnt = user.tmp / "mnt"
    mnt.mkdir()
    p = user.mount(mnt, str(new), str(mnt))
    assert f"created the store {new}" in p.stderr and is_mounted(mnt)
    user.run("umount", str(mnt))


# -- 4: a non-empty mountpoint -------------------------------------------------------------------
def test_mounting_over_files_is_refused_unless_asked(user: User) -> None:
    user.run("put", "-n", "p/a", str(_dataset(user.tmp / "data")))
    mnt = user.tmp / "mnt"
    mnt.mkdir()
    (mnt / "mine.txt").write_text("my own file\n")
    line = user.fails("mount", str(mnt), code=2)
    assert "not empty" in line and "mine.txt" in line and "--allow-non-empty" in line
    assert not is_mounted(mnt)
    assert "does not exist" in user.fails("mount", str(user.tmp / "nope"), code=3)

    user.mount(mnt, str(mnt), "--allow-non-empty")
    assert is_mounted(mnt) and not (mnt / "mine.txt").exists() and (mnt / "p").is_dir()
    user.run("umount", str(mnt))
    user.mount(mnt, str(mnt), "-o", "nonempty,ro")
    assert is_mounted(mnt)
    user.run("umount", str(mnt))
    assert (mnt / "mine.txt").read_text() == "my own file\n"  # hidden while mounted, never touched


# -- 6: errors a W&B user meets ------------------------------------------------------------------
def test_busy_unmount_names_the_process_and_offers_lazy(user: User) -> None:
    user.run("put", "-n", "p/a", str(_dataset(user.tmp / "data")))
    mnt = user.tmp / "mnt"
    mnt.mkdir()
    user.mount(mnt, str(mnt), "--read-only")
    f = mnt / "p" / "a" / "latest" / "a.txt"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1]); print('open', flush=True); time.sleep(60)",
                               str(f)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        line = user.fails("umount", str(mnt), code=1)
        assert "busy" in line and f"pid {holder.pid} (python" in line and "a.txt open" in line
        assert f"artfs umount --lazy {mnt}" in line
        assert is_mounted(mnt)
        # --lazy detaches at once, then waits for the holder to let go and the daemon to exit
        lazy = subprocess.Popen([ARTFS, "umount", "--lazy", str(mnt)], env=user.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while is_mounted(mnt) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not is_mounted(mnt)
            holder.kill()
            holder.wait()
            out, err = lazy.communicate(timeout=60)
            assert lazy.returncode == 0, err
        finally:
            if lazy.poll() is None:
                lazy.kill()
                lazy.wait()
    finally:
        holder.kill()
        holder.wait()
    assert not is_mounted(mnt)


def test_did_you_mean(user: User) -> None:
    user.run("put", "-n", "cycling/bike-dataset", str(_dataset(user.tmp / "data")), "--alias", "best")
    assert "did you mean cycling/bike-dataset?" in user.fails("get", "cycling/bike-datset", code=3)
    assert "did you mean cycling/bike-dataset?" in user.fails("show", "cyclin/bike-dataset:v0", code=3)
    assert "did you mean cycling?" in user.fails("ls", "cyclng", code=3)
    assert "did you mean cycling/bike-dataset:best?" in user.fails("show", "cycling/bike-dataset:bset", code=3)
    assert user.fails("show", "cycling/bike-dataset:v7", code=3) == "artfs: error: cycling/bike-dataset:v7: no such version"


def test_get_path_of_the_logged_directory_itself_is_explained(user: User) -> None:
    images = user.tmp / "images"
    _dataset(images / "val")
    user.run("put", "-n", "p/a", str(images))
    line = user.fails("get", "p/a", "--path", "images/val", code=3)
    assert "did you mean --path val?" in line
    user.run("get", "p/a", "--path", "val")


def test_wandb_entity_is_explained(user: User) -> None:
    line = user.fails("show", "my-team/cycling/bike-dataset:v1", code=2)
    assert "artfs has no entity" in line and "cycling/bike-dataset:v1" in line
    with pytest.raises(artfs.InvalidName, match="no entity"):
        artfs.parse_spec("my-team/cycling/bike-dataset:v1")


def test_delete_of_an_aliased_version_speaks_each_interface(user: User, tmp_path: Path) -> None:
    user.run("put", "-n", "p/a", str(_dataset(user.tmp / "data")), "--alias", "best")
    line = user.fails("delete", "p/a:v0", code=1)
    assert "--delete-aliases" in line and "delete_aliases" not in line and "best" in line
    store = artfs.Store(str(user.home / ".local/share/artfs/store"), cache=artfs.Cache(str(tmp_path / "c")))
    with pytest.raises(artfs.ArtfsError) as e:
        store.artifact("p/a:v0").delete()
    assert "delete_aliases=True" in str(e.value) and "--delete-aliases" not in str(e.value)
    user.run("delete", "p/a:v0", "--delete-aliases")


# -- 7: help ---------------------------------------------------------------------------------------
def _subparsers(p: argparse.ArgumentParser, name: str = "artfs") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for n, sp in a.choices.items():
                yield f"{name} {n}", sp
                yield from _subparsers(sp, f"{name} {n}")


def test_every_option_has_help_and_global_options_are_listed_once() -> None:
    parser = build_parser()
    missing = [f"{name} {'/'.join(a.option_strings)}" for name, sp in _subparsers(parser)
               for a in sp._actions if a.option_strings and a.help is None]
    assert missing == []
    assert "--cache-dir" in parser.format_help()
    for name, sp in _subparsers(parser):
        assert "--cache-dir" not in sp.format_help(), name
    # ... and they still work after the command
    args = parser.parse_args(["ls", "--store", "/x", "--debug"])
    assert args.store == "/x" and args.debug


def test_help_mentions_what_was_added() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["mount"].format_help()  # type: ignore[union-attr]
    assert "--allow-non-empty" in text
    text = build_parser()._subparsers._group_actions[0].choices["umount"].format_help()  # type: ignore[union-attr]
    assert "--lazy" in text

