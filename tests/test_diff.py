"""``artfs diff``, ``Artifact.diff`` and ``user.artfs.diff_parent``: what changed between versions.

Versions are made by hand in a real local store (renames, executable bits, references whose
object changed), then compared through the API, the real command and a real mount.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from artfs import Artifact, ArtfsError, Cache, Entry, Store, digest_bytes
from artfs._diff import bounded_json, diff_entries
from artfsd.testing import MountProcess


def commit(store: Store, tmp: Path, artifact: str, files: dict[str, Any], *, project: str = "p") -> int:
    """A version of exactly ``files``: path -> bytes, (bytes, executable), or ("ref", uri, etag)."""
    entries, sources = [], {}
    for path, v in files.items():
        if isinstance(v, tuple) and v[0] == "ref":
            entries.append(Entry(path, None, 100, ref=v[1], ref_info={"etag": v[2], "seen": random.random()}))
            continue
        data, exe = v if isinstance(v, tuple) else (v, False)
        d = digest_bytes(data)
        src = tmp / "blobs" / d.split(":")[1]
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        sources[d] = str(src)
        entries.append(Entry(path, d, len(data), exe))
    r = store.commit(project, artifact, type="dataset", entries=entries, sources=sources)
    return r.version


V0 = {"a.txt": b"alpha", "b.txt": b"bee", "run.sh": b"#!/bin/sh\n", "old.txt": b"gone soon",
      "ref.csv": ("ref", "s3://bucket/ref.csv", "etag-1"), "data/x.bin": b"x" * 100,
      "same/1": b"twin", "same/2": b"twin"}
V1 = {"renamed/a.txt": b"alpha", "b.txt": b"bee, changed", "run.sh": (b"#!/bin/sh\n", True),
      "ref.csv": ("ref", "s3://bucket/ref.csv", "etag-2"), "data/x.bin": b"x" * 100, "new.txt": b"new",
      "copy-of-x.bin": b"x" * 100, "same/1": b"twin", "moved/2": b"twin"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "cache")))
    assert commit(s, tmp_path, "ds", V0) == 0
    assert commit(s, tmp_path, "ds", V1) == 1
    return s


def by_path(d: Any) -> dict[str, Any]:
    return {c.path: c for c in d.changes}


def test_renames_mode_changes_and_references(store: Store, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "store" / "p" / "blobs")  # from the manifests alone: no file's bytes are read
    d = store.artifact("p/ds:v0").diff(store.artifact("p/ds:v1"))
    assert (d.old, d.new) == ("p/ds:v0", "p/ds:v1")
    c = by_path(d)
    assert sorted(c) == ["b.txt", "copy-of-x.bin", "moved/2", "new.txt", "old.txt", "ref.csv", "renamed/a.txt",
                         "run.sh"]
    assert (c["renamed/a.txt"].status, c["renamed/a.txt"].old_path) == ("moved", "a.txt")
    assert (c["moved/2"].status, c["moved/2"].old_path) == ("moved", "same/2")  # the same name pairs first
    assert (c["b.txt"].status, c["b.txt"].aspects) == ("changed", ("content",))
    assert (c["b.txt"].old.size, c["b.txt"].new.size) == (3, 12)
    assert (c["run.sh"].status, c["run.sh"].aspects) == ("changed", ("executable",))
    assert (c["ref.csv"].status, c["ref.csv"].aspects) == ("changed", ("reference",))
    assert c["old.txt"].status == "removed" and c["old.txt"].size == 9
    assert c["new.txt"].status == "added"
    assert c["copy-of-x.bin"].status == "added"  # a copy: data/x.bin is still there
    assert [x.path for x in d.moved] == ["moved/2", "renamed/a.txt"]
    st = d.stat()
    assert st["added"] == {"files": 2, "bytes": 103}
    assert st["removed"] == {"files": 1, "bytes": 9}
    assert st["moved"] == {"files": 2, "bytes": 9}
    assert st["changed"]["files"] == 3 and st["changed"]["executable"] == 1 and st["changed"]["reference"] == 1
    assert (st["old"]["files"], st["new"]["files"]) == (8, 9)
    # the other way round, everything turns around
    back = store.artifact("p/ds:v1").diff(store.artifact("p/ds:v0"))
    assert by_path(back)["a.txt"].old_path == "renamed/a.txt"
    assert {x.path for x in back.added} == {"old.txt"}


def test_a_reference_moved_keeps_its_object_and_what_says_when_seen_is_no_change(store: Store, tmp_path: Path) -> None:
    ref = ("ref", "s3://bucket/r", "e1")
    commit(store, tmp_path, "refs", {"r": ref, "q": ("ref", "s3://bucket/q", "e1")})
    commit(store, tmp_path, "refs", {"r2": ref, "q": ("ref", "s3://bucket/q", "e1")})  # only `seen` differs for q
    d = store.artifact("p/refs:v0").diff(store.artifact("p/refs:v1"))
    assert [(c.status, c.path, c.old_path) for c in d.changes] == [("moved", "r2", "r")]
    commit(store, tmp_path, "refs", {"r2": ("ref", "s3://other/r", "e1"), "q": ("ref", "s3://bucket/q", "e1")})
    d = store.artifact("p/refs:v1").diff(store.artifact("p/refs:v2"))
    assert [(c.status, c.aspects) for c in d.changes] == [("changed", ("reference",))]
    assert d.changes[0].to_json()["old"]["ref"] == "s3://bucket/r"


def test_across_artifacts_and_identical_versions(store: Store, tmp_path: Path) -> None:
    commit(store, tmp_path, "other", V1, project="q")
    assert not store.artifact("p/ds:v1").diff(store.artifact("q/other:latest"))
    d = store.artifact("q/other:v0").diff(store.artifact("p/ds:v0"))
    assert d.new == "p/ds:v0" and d


def test_a_draft_has_no_manifest_to_compare(store: Store) -> None:
    with pytest.raises(ArtfsError, match="not logged"):
        Artifact("ds").diff(store.artifact("p/ds:v0"))


def _naive(old: list[Entry], new: list[Entry]) -> tuple[set[str], set[str], set[str]]:
    o, n = {e.path: e for e in old}, {e.path: e for e in new}
    return set(o) - set(n), set(n) - set(o), {p for p in set(o) & set(n) if o[p] != n[p]}


@pytest.mark.parametrize("seed", range(6))
def test_the_block_walk_finds_every_difference(seed: int) -> None:
    """Differences at every distance from the walk's slice boundaries, checked against dicts."""
    rng = random.Random(seed)
    old = [Entry(f"f/{i:06d}", f"xxh128:{i:032x}", i % 97) for i in range(rng.choice([0, 1, 300, 20_000]))]
    new = list(old)
    for _ in range(rng.choice([0, 1, 5, 300])):
        if not new:
            break
        k = rng.randrange(len(new))
        r = rng.random()
        if r < 0.3:
            del new[k]
        elif r < 0.6:
            new[k] = new[k]._replace(size=new[k].size + 1)
        elif r < 0.8:
            new[k] = new[k]._replace(executable=not new[k].executable)
        else:
            new.insert(k, Entry(new[k].path + "-new", f"xxh128:{k + 10**9:032x}", 1))
    new = sorted({e.path: e for e in new}.values(), key=lambda e: e.path)  # as a manifest has them
    d = diff_entries(old, new)
    removed, added, changed = _naive(old, new)
    assert {c.path for c in d.removed} == removed
    assert {c.path for c in d.added} == added
    assert {c.path for c in d.changed} == changed
    assert not d.moved  # every content here is unique, and none moved


def test_bounded_json_keeps_the_counts_and_as_many_changes_as_fit() -> None:
    old = [Entry(f"dir/{i:06d}.bin", f"xxh128:{i:032x}", 10) for i in range(5000)]
    new = [e._replace(size=11) for e in old]
    d = diff_entries(old, new, old_name="p/a:v0", new_name="p/a:v1")
    value = bounded_json(d, 64_000, parent="v0")
    assert len(value) <= 64_000
    doc = json.loads(value)
    assert doc["truncated"] and doc["stat"]["changed"]["files"] == 5000
    assert 0 < len(doc["changes"]) < 5000 and doc["omitted"] == 5000 - len(doc["changes"])
    assert doc["changes"][0]["path"] == "dir/000000.bin" and doc["parent"] == "v0"
    small = json.loads(bounded_json(diff_entries(old[:3], new[:3]), 64_000))
    assert not small["truncated"] and small["omitted"] == 0 and len(small["changes"]) == 3


# -- the command ------------------------------------------------------------------------------------
def artfs(store: Store, tmp: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
    env.update(ARTFS_STORE=store.url, ARTFS_CACHE_DIR=str(tmp / "cli-cache"), HOME=str(tmp))
    p = subprocess.run([sys.executable, "-m", "artfs.cli", *args], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == code, (p.stdout, p.stderr)
    return p


def test_cli_text_stat_json_name_only_and_exit_codes(store: Store, tmp_path: Path) -> None:
    p = artfs(store, tmp_path, "diff", "p/ds:v0", "p/ds:v1")
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "SIZE", "PATH", "DETAIL"]
    assert any(line.startswith("moved") and "a.txt -> renamed/a.txt" in line for line in lines)
    assert any(line.startswith("changed") and "run.sh" in line and "executable no -> yes" in line for line in lines)
    assert any(line.startswith("changed") and "3 B -> 12 B" in line for line in lines)
    assert any("ref.csv" in line and "its object changed" in line for line in lines)
    assert len(lines) == 9 and "2 added, 1 removed, 3 changed, 2 moved" in p.stderr
    # NEW as a version of OLD's artifact; --stat
    st = artfs(store, tmp_path, "diff", "p/ds:v0", "v1", "--stat").stdout
    assert st.splitlines()[0] == "p/ds:v0 -> p/ds:v1: 2 added, 1 removed, 3 changed, 2 moved"
    assert "1 executable change" in st and "1 reference change" in st
    doc = json.loads(artfs(store, tmp_path, "diff", "p/ds:v0", "p/ds:latest", "--json").stdout)
    assert doc["new"] == "p/ds:v1" and len(doc["changes"]) == 8
    moved = next(c for c in doc["changes"] if c["path"] == "renamed/a.txt")
    assert moved["old_path"] == "a.txt" and moved["status"] == "moved" and moved["new"]["size"] == 5
    assert json.loads(artfs(store, tmp_path, "diff", "p/ds:v0", "p/ds:v1", "--stat", "--json").stdout)["moved"] == {
        "files": 2, "bytes": 9}
    names = artfs(store, tmp_path, "diff", "p/ds:v1", "--name-only").stdout.split()  # v1 against v0
    assert names == ["b.txt", "copy-of-x.bin", "moved/2", "new.txt", "old.txt", "ref.csv", "renamed/a.txt", "run.sh"]
    artfs(store, tmp_path, "diff", "p/ds:v0", "p/ds:v1", "--exit-code", code=1)
    same = artfs(store, tmp_path, "diff", "p/ds:v1", "p/ds:latest", "--exit-code")
    assert same.stdout == "" and "no changes" in same.stderr


def test_cli_errors_are_one_line_with_the_error_trees_codes(store: Store, tmp_path: Path) -> None:
    p = artfs(store, tmp_path, "diff", "p/ds:v0", "p/ds:v9", code=3)
    assert p.stderr.strip() == "artfs: error: p/ds:v9: no such version" and p.stdout == ""
    assert "no such alias" in artfs(store, tmp_path, "diff", "p/ds:v0", ":prod", code=3).stderr
    assert "first version" in artfs(store, tmp_path, "diff", "p/ds:v0", code=3).stderr
    assert "p/nope: no such artifact" in artfs(store, tmp_path, "diff", "p/nope", "p/ds:v0", code=3).stderr
    artfs(store, tmp_path, "diff", "p/ds:v0", "../x", code=2)
    artfs(store, tmp_path, "diff", "p/ds:v0", "v1", "--stat", "--name-only", code=2)


# -- the mount --------------------------------------------------------------------------------------
def test_diff_parent_in_a_real_mount(store: Store, tmp_path: Path) -> None:
    store.delete_version("p", "ds", 0)
    commit(store, tmp_path, "ds", {**V1, "late.txt": b"late"})  # v2: its previous existing version is v1
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mount-cache") as m:
        v2 = m.path("p/ds/v2")
        assert "user.artfs.diff_parent" in os.listxattr(v2)
        doc = json.loads(os.getxattr(v2, "user.artfs.diff_parent"))
        assert doc["parent"] == "v1" and doc["old"] == "p/ds:v1" and not doc["truncated"]
        assert [(c["status"], c["path"]) for c in doc["changes"]] == [("added", "late.txt")]
        first = json.loads(os.getxattr(m.path("p/ds/v1"), "user.artfs.diff_parent"))  # v0 was deleted
        assert first["parent"] is None and first["stat"]["added"]["files"] == len(V1)
        with pytest.raises(OSError):
            os.setxattr(v2, "user.artfs.diff_parent", b"{}")


def test_a_renamed_directory_of_identical_files_pairs_each_file_once() -> None:
    empty = "xxh128:" + "0" * 32
    old = [Entry(f"a/{i:05d}/__init__.py", empty, 0) for i in range(3000)] + [Entry("keep", empty, 0)]
    new = [Entry("keep", empty, 0)] + [Entry(f"z/{i:05d}/__init__.py", empty, 0) for i in range(3001)]
    d = diff_entries(old, new)
    assert len(d.moved) == 3000 and [c.path for c in d.added] == ["z/03000/__init__.py"] and not d.removed
    assert len({c.old_path for c in d.moved}) == 3000
