"""The ``artfs`` command, run as a subprocess against a store and a cache under ``tmp_path``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from artfs.cli import UsageError, human_size, mount_args


class CLI:
    def __init__(self, tmp: Path) -> None:
        self.store = tmp / "store"
        self.cache = tmp / "cache"
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
        self.env.update(ARTFS_STORE=str(self.store), ARTFS_CACHE_DIR=str(self.cache), HOME=str(tmp / "home"))

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "artfs.cli", *args], env=self.env, cwd=self.tmp,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == code, f"artfs {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def fails(self, *args: str, code: int) -> str:
        """Run a command that must fail with ``code`` and one clean line on stderr; return that line."""
        p = self.run(*args, code=code)
        assert "Traceback" not in p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("artfs: error: "), p.stderr
        assert p.stdout == ""
        return lines[0]


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


FILES = {
    "images/train/0001.png": os.urandom(70_000),
    "images/train/0002.png": os.urandom(1234),
    "images/val/0001.png": b"",
    "labels.csv": b"file,label\n0001.png,bicycle\n",
    "bin/run.sh": b"#!/bin/sh\necho hi\n",
}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = make_tree(tmp_path / "data", FILES)
    os.chmod(root / "bin/run.sh", 0o755)
    return root


def test_put_ls_show_get_round_trip(cli: CLI, data: Path) -> None:
    r = cli.json("put", "-n", "cycling/bikes", "-t", "dataset", str(data), "-d", "first cut",
                 "--metadata", "classes=3", "--metadata", "source=camera 1", "--metadata", 'split={"train": 0.8}')
    assert r["name"] == "cycling/bikes:v0" and r["created"] is True
    assert r["files"] == len(FILES) and r["uploaded_blobs"] == len(FILES)
    assert r["uploaded_bytes"] == sum(len(b) for b in FILES.values())

    assert cli.json("ls") == [{"project": "cycling", "artifacts": 1}]
    assert "cycling" in cli.run("ls").stdout
    [art] = cli.json("ls", "cycling")
    assert art == {"artifact": "bikes", "type": "dataset", "versions": 1, "latest": 0}
    [v] = cli.json("ls", "cycling/bikes")
    assert v["version"] == 0 and v["aliases"] == ["latest"] and v["files"] == len(FILES)
    text = cli.run("ls", "cycling/bikes").stdout
    assert "v0" in text and "first cut" in text and human_size(v["size"]) in text

    doc = cli.json("show", "cycling/bikes:v0", "--files")
    assert doc["type"] == "dataset" and doc["digest"].startswith("xxh128:")
    assert doc["size"] == sum(len(b) for b in FILES.values())
    assert doc["description"] == "first cut"
    assert doc["metadata"] == {"classes": 3, "source": "camera 1", "split": {"train": 0.8}}
    assert [e["path"] for e in doc["entries"]] == sorted(FILES)
    text = cli.run("show", "cycling/bikes", "--files").stdout  # no version: latest
    assert "cycling/bikes:v0" in text and "labels.csv" in text and "classes = 3" in text

    out = cli.tmp / "out"
    p = cli.run("get", "cycling/bikes:latest", "--root", str(out))
    assert p.stdout.strip() == str(out)
    assert read_tree(out) == FILES
    assert os.stat(out / "bin/run.sh").st_mode & stat.S_IXUSR
    assert not os.stat(out / "labels.csv").st_mode & stat.S_IXUSR

    # a part of a version, the default root, and --json
    got = cli.json("get", "cycling/bikes:v0", "--path", "images/train", "--root", str(cli.tmp / "part"))
    assert got["files"] == 2 and read_tree(cli.tmp / "part") == {k: v for k, v in FILES.items() if k.startswith("images/train/")}
    p = cli.run("get", "cycling/bikes")
    assert read_tree(cli.tmp / "artifacts" / "bikes:v0") == FILES
    # --checkout removes strays, plain get keeps them
    (out / "stray.txt").write_text("x")
    cli.run("get", "cycling/bikes", "--root", str(out))
    assert (out / "stray.txt").exists()
    cli.run("get", "cycling/bikes", "--root", str(out), "--checkout")
    assert read_tree(out) == FILES


def test_options_may_follow_the_command(cli: CLI, data: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-store"
    cli.run("--store", str(other), "put", "-n", "p/a", str(data))
    assert cli.json("ls", "--store", str(other)) == [{"project": "p", "artifacts": 1}]
    assert "no store at" in cli.fails("ls", code=3)  # $ARTFS_STORE is untouched (and was never made)
    assert not cli.store.exists()


def test_identical_content_creates_no_version(cli: CLI, data: Path) -> None:
    cli.run("put", "-n", "p/a", "-t", "dataset", str(data))
    p = cli.run("put", "-n", "p/a", "-t", "dataset", str(data))
    assert "p/a:v0 matched" in p.stdout
    r = cli.json("put", "-n", "p/a", str(data))
    assert r["created"] is False and r["version"] == 0 and r["uploaded_blobs"] == 0
    assert [v["version"] for v in cli.json("ls", "p/a")] == [0]

    (data / "labels.csv").write_bytes(b"file,label\n0001.png,tandem\n")
    p = cli.run("put", "-n", "p/a", str(data))
    assert p.stdout.startswith("p/a:v1 created (5 files, 1 new blob, ")
    assert cli.json("show", "p/a")["type"] == "dataset"  # inherited without -t
    assert cli.fails("put", "-n", "p/a", "-t", "model", str(data), code=2).endswith("has type 'dataset', not 'model'")


def test_aliases(cli: CLI, data: Path) -> None:
    cli.run("put", "-n", "p/a", str(data), "--alias", "best", "--alias", "prod")
    (data / "labels.csv").write_bytes(b"changed\n")
    cli.run("put", "-n", "p/a", str(data))
    assert cli.json("alias", "ls", "p/a") == {"best": 0, "prod": 0, "latest": 1}

    assert cli.run("alias", "set", "p/a:v1", "best").stdout.strip() == "p/a:best -> v1"
    assert cli.json("alias", "ls", "p/a")["best"] == 1
    cli.run("alias", "set", "p/a:best", "candidate")  # an alias names a version too
    assert cli.json("alias", "ls", "p/a")["candidate"] == 1
    assert "(was v0)" in cli.run("alias", "rm", "p/a", "prod").stdout
    assert "prod" not in cli.json("alias", "ls", "p/a")
    assert "best" in cli.run("alias", "ls", "p/a").stdout

    out = cli.tmp / "best"
    cli.run("get", "p/a:best", "--root", str(out))
    assert read_tree(out)["labels.csv"] == b"changed\n"

    assert "no such alias" in cli.fails("alias", "rm", "p/a", "prod", code=3)
    assert "automatic" in cli.fails("alias", "rm", "p/a", "latest", code=2)
    assert "may not look like a version" in cli.fails("alias", "set", "p/a:v0", "v2", code=2)
    assert "no such version" in cli.fails("alias", "set", "p/a:v9", "x", code=3)
    cli.fails("alias", "rm", "p/a:v0", "best", code=2)


def test_describe(cli: CLI, data: Path) -> None:
    cli.run("put", "-n", "p/a", str(data), "-d", "old", "--metadata", "k=1", "--metadata", "gone=x")
    p = cli.run("describe", "p/a:v0", "-d", "new words", "--metadata", "k=[1, 2]", "--unset", "gone",
                "--metadata-json", '{"nested": {"a": true}}')
    assert p.stdout.strip() == "p/a:v0 updated"
    doc = cli.json("show", "p/a:v0")
    assert doc["description"] == "new words"
    assert doc["metadata"] == {"k": [1, 2], "nested": {"a": True}}
    # describing the newest version must not pin 'latest' to it
    assert not (cli.store / "p/artifacts/a/aliases/latest").exists()
    (data / "labels.csv").write_bytes(b"v1\n")
    cli.run("put", "-n", "p/a", str(data))
    assert cli.json("alias", "ls", "p/a")["latest"] == 1

    mfile = cli.tmp / "meta.json"
    mfile.write_text('{"from_file": 1}')
    cli.run("describe", "p/a:v1", "--metadata-json", str(mfile), "-d", "")
    doc = cli.json("show", "p/a:v1")
    assert doc["metadata"] == {"from_file": 1} and doc["description"] is None

    cli.fails("describe", "p/a:v0", code=2)  # nothing to change
    # unsetting a key that is not there is not an error, and the rest of the command still applies
    p = cli.run("describe", "p/a:v1", "--unset", "nope", "-d", "after unset", "--metadata", "k=1")
    assert "no such metadata key" in p.stderr
    doc = cli.json("show", "p/a:v1")
    assert doc["description"] == "after unset" and doc["metadata"] == {"from_file": 1, "k": 1}
    cli.fails("describe", "p/a:v0", "--metadata", "novalue", code=2)
    cli.fails("describe", "p/a:v0", "--metadata-json", "[1]", code=2)
    cli.fails("describe", "p/a:v5", "-d", "x", code=3)


def blobs(store: Path) -> set[str]:
    return {p.name for p in store.glob("*/blobs/xxh128/*/*")}


def test_delete(cli: CLI, data: Path) -> None:
    cli.run("put", "-n", "p/a", str(data), "--alias", "best")
    before = blobs(cli.store)
    (data / "labels.csv").write_bytes(b"only in v1\n")
    cli.run("put", "-n", "p/a", str(data))
    assert len(blobs(cli.store)) == len(before) + 1

    msg = cli.fails("delete", "p/a:v0", code=1)
    assert "best" in msg and "--delete-aliases" in msg
    assert [v["version"] for v in cli.json("ls", "p/a")] == [0, 1]
    cli.fails("delete", "p/a", code=2)  # the version must be named
    cli.fails("delete", "p/a:v7", code=3)

    p = cli.run("delete", "p/a:v1")
    assert p.stdout.strip() == "deleted p/a:v1"
    assert blobs(cli.store) == before  # the blob only v1 used is gone at once
    assert cli.json("alias", "ls", "p/a") == {"best": 0, "latest": 0}

    r = cli.json("delete", "p/a:best", "--delete-aliases")
    assert r == {"name": "p/a:v0", "aliases_removed": ["best"]}
    assert blobs(cli.store) == set()
    cli.fails("show", "p/a", code=3)


def test_gc(cli: CLI, data: Path) -> None:
    cli.run("put", "-n", "p/a", str(data))
    orphan = cli.store / "p/blobs/xxh128/ab" / ("ab" + "0" * 30)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"nobody needs me")
    r = cli.json("gc", "p", "--dry-run")
    assert r["blobs_removed"] == 1 and r["bytes_freed"] == 15 and r["dry_run"] is True
    assert orphan.exists()
    p = cli.run("gc", "p")
    assert p.stdout.strip().startswith("p: removed 1 unreferenced blob (15 B)")
    assert not orphan.exists()
    assert cli.json("gc", "p")["blobs_removed"] == 0
    out = cli.tmp / "out"
    cli.run("get", "p/a", "--root", str(out))
    assert read_tree(out) == FILES
    assert "no such project" in cli.fails("gc", "nope", code=3)
    cli.fails("gc", "bad/name", code=2)


def test_cache_info_and_cleanup(cli: CLI, data: Path) -> None:
    cli.run("put", "-n", "p/a", str(data))
    cli.run("warmup", "p/a")  # a get from a local store places its blobs straight from the store
    info = cli.json("cache", "info")
    assert info["path"] == str(cli.cache)
    assert info["blobs"] == len({bytes(b) for b in FILES.values()})
    assert info["bytes"] == sum(len(b) for b in set(FILES.values()))
    assert "blobs" in cli.run("cache", "info").stdout

    r = cli.json("cache", "cleanup", "0")
    # "at most 0 bytes": every blob with content goes; the empty file's blob may stay
    assert r["bytes"] == 0 and r["bytes_freed"] == info["bytes"] and r["blobs"] <= 1
    assert r["removed"] + r["blobs"] == info["blobs"]
    assert cli.json("cache", "info")["bytes"] == 0

    cli.run("get", "p/a", "--root", str(cli.tmp / "two"))
    assert read_tree(cli.tmp / "two") == FILES
    assert cli.json("cache", "cleanup", "1GB")["removed"] == 0
    cli.fails("cache", "cleanup", "lots", code=2)


@pytest.mark.parametrize("args, what", [
    (["put", "-n", "bad name/art", "DATA"], "invalid project"),
    (["put", "-n", "proj/-art", "DATA"], "invalid artifact"),
    (["put", "-n", ".hidden/art", "DATA"], "invalid project"),
    (["put", "-n", "proj/draft", "DATA"], "reserved"),
    (["put", "-n", "proj", "DATA"], "expected project/artifact"),
    (["put", "-n", "proj/art:v3", "DATA"], "versions are numbered by the store"),
    (["put", "-n", "proj/art", "--alias", "v3", "DATA"], "may not look like a version"),
    (["put", "-n", "proj/art", "--alias", "draft", "DATA"], "reserved"),
    (["put", "-n", "proj/art", "--alias", "a/b", "DATA"], "invalid alias"),
    (["put", "-n", "proj/art", "-t", "no way", "DATA"], "invalid type"),
    (["put", "-n", "proj/art", "--metadata", "nokey", "DATA"], "expected key=value"),
    (["show", "proj/art:"], "empty version"),
    (["get", "../etc/art"], "invalid project"),
    (["ls", "a/b/c"], "invalid artifact"),
    (["--store", "gs://bucket", "ls"], "unsupported store URL"),
])
def test_bad_input_is_refused_cleanly(cli: CLI, data: Path, args: list[str], what: str) -> None:
    args = [str(data) if a == "DATA" else a for a in args]
    msg = cli.fails(*args, code=2)
    assert what in msg
    assert not cli.store.exists() or not any(cli.store.iterdir())


def test_missing_version_alias_artifact(cli: CLI, data: Path) -> None:
    cli.run("put", "-n", "p/a", str(data))
    assert cli.fails("show", "p/a:v7", code=3) == "artfs: error: p/a:v7: no such version"
    assert cli.fails("get", "p/a:nope", code=3) == "artfs: error: p/a:nope: no such alias"
    assert "no such artifact" in cli.fails("show", "p/zz", code=3)
    assert "no such project" in cli.fails("ls", "zz", code=3)
    assert "no such artifact" in cli.fails("ls", "p/zz", code=3)
    assert "has no file or directory" in cli.fails("get", "p/a", "--path", "nope", code=3)


def test_missing_dir(cli: CLI, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    assert cli.fails("put", "-n", "p/a", str(missing), code=1) == f"artfs: error: {missing}: No such file or directory"
    (tmp_path / "empty").mkdir()
    assert "no files" in cli.fails("put", "-n", "p/a", str(tmp_path / "empty"), code=1)
    assert not cli.store.exists() or not any(cli.store.iterdir())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "neither a file nor a directory" in cli.fails("put", "-n", "p/a", str(fifo), code=1)


def test_debug_shows_traceback(cli: CLI, data: Path) -> None:
    cli.run("put", "-n", "p/a", str(data))
    p = cli.run("--debug", "show", "p/a:v9", code=3)
    assert "Traceback (most recent call last)" in p.stderr and "NotFound" in p.stderr
    assert p.stderr.strip().splitlines()[-1] == "artfs: error: p/a:v9: no such version"
    p = cli.run("show", "p/a:v9", "--debug", code=3)
    assert "Traceback" in p.stderr


def test_usage_errors_and_help(cli: CLI) -> None:
    p = cli.run(code=2)
    assert "usage: artfs" in p.stderr
    assert "put" in cli.run("--help").stdout
    p = cli.run("frobnicate", code=2)
    assert "invalid choice" in p.stderr and "Traceback" not in p.stderr
    p = cli.run("put", code=2)
    assert "required" in p.stderr


def test_human_size() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1024) == "1.0 KiB"
    assert human_size(int(45.2 * 2**20)) == "45.2 MiB"
    assert human_size(2**30 - 1) == "1.0 GiB"


def test_sizes_print_one_way(cli: CLI, tmp_path: Path) -> None:
    """Every command that prints a size prints it as human_size does (1.5 KiB), never KB or bytes alone."""
    data = make_tree(tmp_path / "d", {"w.bin": os.urandom(1536)})
    texts = {
        "put": cli.run("put", "-n", "p/a", str(data)).stdout,
        "ls": cli.run("ls", "p/a").stdout,
        "show": cli.run("show", "p/a", "--files").stdout,
        "get": cli.run("get", "p/a", "--root", str(tmp_path / "out")).stderr,
        "cache info": cli.run("cache", "info").stdout,
    }
    assert "1 new blob, 1.5 KiB uploaded" in texts["put"]
    assert "size         1.5 KiB (1536 bytes)" in texts["show"]
    for name, text in texts.items():
        if name != "cache info":
            assert "1.5 KiB" in text, (name, text)
        assert " KB" not in text and " MB" not in text, (name, text)


def test_no_passthrough_reaches_the_daemon() -> None:
    """``artfs mount -o no_passthrough`` (or ``--no-passthrough``) execs the daemon with it."""
    import argparse

    from artfs._mounts import add_mount_arguments, apply_mount_options, daemon_argv

    p = argparse.ArgumentParser()
    add_mount_arguments(p, daemon=False)
    d = argparse.ArgumentParser()
    add_mount_arguments(d, daemon=True)
    for argv in (["s", "/mnt/x", "-o", "ro,no_passthrough"], ["s", "/mnt/x", "--no-passthrough"]):
        args = apply_mount_options(p.parse_args(argv))
        assert d.parse_args(daemon_argv(args, "s")).no_passthrough is True
    assert d.parse_args(daemon_argv(apply_mount_options(p.parse_args(["s", "/mnt/x"])), "s")).no_passthrough is False


def test_mount_helper_arguments() -> None:
    assert mount_args(["s3://b/p", "/mnt/a"]) == ["mount", "s3://b/p", "/mnt/a"]
    assert mount_args(["/srv/store", "/mnt/a", "-o", "rw,ro,noauto,_netdev,x-systemd.automount,cache_size=20G,"
                       "allow_other,cache_dir=/var/cache/artfs,debug"]) == [
        "--cache-dir", "/var/cache/artfs", "--debug",
        "mount", "/srv/store", "/mnt/a", "--read-only", "--cache-size", "20G", "--allow-other"]
    assert mount_args(["s", "m", "-oro", "-n", "-v"]) == ["mount", "s", "m", "--read-only"]
    assert mount_args(["s", "m", "-f"]) is None  # mount -f: fake, do nothing
    assert mount_args(["s", "m", "-o", "no_passthrough"]) == ["mount", "s", "m", "--no-passthrough"]
    # mount(8)'s bare "group" is ignored; group=G makes every draft a part of distributed version G
    assert "--group" not in mount_args(["s", "m", "-o", "group"])
    assert mount_args(["s", "m", "-o", "rw,group=nightly"])[-2:] == ["--group", "nightly"]
    with pytest.raises(UsageError):
        mount_args(["only-one"])
