"""Distributed writers (issue 9): many processes upsert parts of one pending version, one finish.

Real processes against a local store and a real S3 endpoint (moto): 50 writers at once, racing
finishers, conflicting parts, a writer SIGKILLed mid-upsert, a finisher SIGKILLed after its claim
and after its commit, gc racing upserts, gc of abandoned groups, and the command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import artfs
from artfs import GroupFinished, NotFound, PartsConflict
from artfs import _distributed, _groups_finish
from artfs._layout import blob_key
from crashpoints import crash_env, marker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_store(url: str, tmp_path, cache: str = "cache") -> artfs.Store:
    return artfs.Store(url, cache=artfs.Cache(str(tmp_path / cache), max_size="4G"))


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def script(tmp_path, name: str, source: str) -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(source))
    return str(p)


def content(i: int, j: int = 0) -> bytes:
    """Distinct bytes per writer and file (a few KiB, so blobs are real uploads)."""
    return (f"writer {i} file {j}\n".encode() * (50 + i + j))


def upsert_files(store, files: dict[str, bytes], tmp_path, *, group="g", writer=None, name="ds", project="proj",
                 type="dataset"):
    art = artfs.Artifact(name, type=type)
    src = tmp_path / f"src-{time.monotonic_ns()}"
    for rel, data in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    art.add_dir(str(src))
    return store.upsert_artifact(art, project, group, writer=writer)


def downloaded(store, spec: str, root) -> dict[str, bytes]:
    a = store.artifact(spec)
    a.download(str(root))
    out = {}
    for dirpath, _, files in os.walk(root):
        for fn in files:
            p = os.path.join(dirpath, fn)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root).replace(os.sep, "/")] = f.read()
    return out


def run_all(procs, timeout: float = 240) -> list[str]:
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


# --------------------------------------------------------------------------------------------
# 50 writers at once, then two finishers racing: one version holding every file
# --------------------------------------------------------------------------------------------

WRITER = """
import os, sys, time
import artfs
url, cache, start, me, src, group = sys.argv[1:7]
me = int(me)
store = artfs.Store(url, cache=artfs.Cache(cache, max_size="1G"))
os.makedirs(os.path.join(src, f"shard-{me:02d}"))
for j in range(3):
    with open(os.path.join(src, f"shard-{me:02d}", f"f{j}.bin"), "wb") as f:
        f.write((f"writer {me} file {j}\\n".encode()) * (50 + me + j))
with open(os.path.join(src, "common.txt"), "wb") as f:
    f.write(b"the same in every part\\n")
art = artfs.Artifact("ds", type="dataset")
art.add_dir(src)
print("ready", flush=True)
while not os.path.exists(start):
    time.sleep(0.002)
r = store.upsert_artifact(art, "proj", group)
print(r.writer, flush=True)
"""

FINISHER = """
import json, os, sys, time
import artfs
url, cache, start, group = sys.argv[1:5]
store = artfs.Store(url, cache=artfs.Cache(cache, max_size="1G"))
print("ready", flush=True)
while not os.path.exists(start):
    time.sleep(0.002)
v = store.finish_artifact(artfs.Artifact("ds", type="dataset"), "proj", group, aliases=["done"])
r = v.commit_result
print(json.dumps({"version": r.version, "created": r.created, "files": r.files}), flush=True)
"""


def _start_all(procs) -> None:
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            for q in procs:
                q.kill()
            raise AssertionError(p.stderr.read())


@pytest.mark.timeout(600)
def test_fifty_writers_then_racing_finishers_make_one_version(backend_url, tmp_path):
    n = 50
    writer = script(tmp_path, "writer.py", WRITER)
    start = tmp_path / "start"
    # moto is one Python process; serving 50 clients at once on a shared 2-CPU machine, one answer
    # can take longer than the default 15 s budget of a request (ARTFS_S3_TIMEOUT, documented)
    env = child_env(ARTFS_S3_TIMEOUT="120")
    procs = [subprocess.Popen([sys.executable, writer, backend_url, str(tmp_path / f"c{i}"), str(start), str(i),
                               str(tmp_path / f"src{i}"), "g50"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(n)]
    _start_all(procs)
    start.touch()  # all at once
    writers = [o.strip() for o in run_all(procs)]
    assert len(set(writers)) == n, "every process is its own writer"

    store = make_store(backend_url, tmp_path, "check")
    (pending,) = store.groups("proj")
    assert sorted(p.writer for p in pending.parts) == sorted(writers)
    assert pending.files == n * 4
    assert store.versions("proj", "ds") == []  # nothing is a version before finish

    finisher = script(tmp_path, "finisher.py", FINISHER)
    start2 = tmp_path / "start2"
    fins = [subprocess.Popen([sys.executable, finisher, backend_url, str(tmp_path / f"f{i}"), str(start2), "g50"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
            for i in range(2)]
    _start_all(fins)
    start2.touch()
    results = [json.loads(o) for o in run_all(fins)]
    assert [r["version"] for r in results] == [0, 0], results  # both learn the number
    assert sorted(r["created"] for r in results) == [False, True], results  # one made it
    assert store.versions("proj", "ds") == [0]
    assert store.aliases("proj", "ds") == {"done": 0, "latest": 0}

    expected = {"common.txt": b"the same in every part\n"}
    for i in range(n):
        for j in range(3):
            expected[f"shard-{i:02d}/f{j}.bin"] = content(i, j)
    assert downloaded(store, "proj/ds:v0", tmp_path / "out") == expected  # byte for byte
    assert store.groups("proj") == []  # the group is done: its parts are gone
    # finishing again returns the version; a new part is refused
    again = store.finish_artifact(artfs.Artifact("ds"), "proj", "g50")
    assert (again.version, again.commit_result.created) == ("v0", False)
    with pytest.raises(GroupFinished):
        upsert_files(store, {"late.txt": b"late"}, tmp_path, group="g50")
    assert store.versions("proj", "ds") == [0]


# --------------------------------------------------------------------------------------------
# conflicts, replacing a part, the finisher's own files
# --------------------------------------------------------------------------------------------

def test_conflicting_path_is_named_and_nothing_is_committed(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    upsert_files(store, {"a.txt": b"from A", "same.txt": b"same", "only-a.txt": b"a"}, tmp_path, writer="A")
    upsert_files(store, {"a.txt": b"from B", "same.txt": b"same", "only-b.txt": b"b"}, tmp_path, writer="B")
    keys_before = {o.key for o in store.backend.list("proj/")}
    with pytest.raises(PartsConflict) as exc:
        store.finish_artifact(artfs.Artifact("ds"), "proj", "g")
    assert exc.value.paths == ["a.txt"]
    assert "a.txt" in str(exc.value) and "same.txt" not in str(exc.value)
    assert "A" in str(exc.value) and "B" in str(exc.value)
    assert store.versions("proj", "ds") == []  # nothing committed
    assert {o.key for o in store.backend.list("proj/")} == keys_before  # no claim left, parts kept
    (g,) = store.groups("proj")
    assert [p.writer for p in g.parts] == ["A", "B"]

    # the CLI says the same, with exit code 1, and commits nothing
    r = subprocess.run([sys.executable, "-m", "artfs.cli", "--store", backend_url, "--cache-dir",
                        str(tmp_path / "cli-cache"), "finish", "proj/ds", "--group", "g"],
                       capture_output=True, text=True, env=child_env(), timeout=120)
    assert r.returncode == 1, r.stderr
    assert "a.txt" in r.stderr and r.stderr.startswith("artfs: error:")
    assert store.versions("proj", "ds") == []

    # B upserts again: its part is replaced (only-b.txt goes too), and the finish goes through
    upsert_files(store, {"a.txt": b"from A", "b2.txt": b"b2"}, tmp_path, writer="B")
    v = store.finish_artifact(artfs.Artifact("ds"), "proj", "g")
    assert v.version == "v0"
    assert downloaded(store, "proj/ds:v0", tmp_path / "out") == {
        "a.txt": b"from A", "same.txt": b"same", "only-a.txt": b"a", "b2.txt": b"b2"}


def test_file_in_one_part_directory_in_another_is_a_conflict(local_url, tmp_path):
    store = make_store(local_url, tmp_path)
    upsert_files(store, {"x": b"a file"}, tmp_path, writer="A")
    upsert_files(store, {"x/y": b"under a directory"}, tmp_path, writer="B")
    with pytest.raises(PartsConflict, match="x"):
        store.finish_artifact(artfs.Artifact("ds"), "proj", "g")
    assert store.versions("proj", "ds") == []


def test_finisher_files_type_metadata_and_errors(local_url, tmp_path):
    store = make_store(local_url, tmp_path)
    with pytest.raises(NotFound, match="no parts"):
        store.finish_artifact(artfs.Artifact("ds"), "proj", "empty")
    assert store.versions("proj", "ds") == []
    with pytest.raises(artfs.InvalidName):
        upsert_files(store, {"a": b"a"}, tmp_path, group="../x")
    a = artfs.Artifact("ds", type="dataset", metadata={"shard": 1})
    a.aliases.append("from-a-part")  # a writer's aliases go to the version at finish
    with a.new_file("a.txt", "w") as f:
        f.write("a")
    store.upsert_artifact(a, "proj", "g", writer="w1")
    fin = artfs.Artifact("ds", type="dataset", description="merged", metadata={"total": 2})
    with fin.new_file("index.json", "w") as f:
        f.write("{}")
    v = store.finish_artifact(fin, "proj", "g", aliases=["best"])
    assert sorted(e.path for e in v.files()) == ["a.txt", "index.json"]
    assert (v.type, v.description, v.metadata) == ("dataset", "merged", {"shard": 1, "total": 2})
    assert v.aliases == ["best", "from-a-part", "latest"]
    # a part of another type is refused at finish
    b = artfs.Artifact("ds", type="model")
    with b.new_file("m.bin", "w") as f:
        f.write("m")
    store.upsert_artifact(b, "proj", "g2")
    with pytest.raises(PartsConflict, match="type"):
        store.finish_artifact(artfs.Artifact("ds", type="dataset"), "proj", "g2")


# --------------------------------------------------------------------------------------------
# crashes: a writer killed mid-upsert, a finisher killed after its claim or after its commit
# --------------------------------------------------------------------------------------------

ONE_WRITER = """
import sys
import artfs
url, cache, src, writer = sys.argv[1:5]
store = artfs.Store(url, cache=artfs.Cache(cache, max_size="1G"))
art = artfs.Artifact("ds", type="dataset")
art.add_dir(src)
store.upsert_artifact(art, "proj", "g", writer=writer)
print("done", flush=True)
"""


def _kill_at(cmd: list[str], step: str) -> None:
    """Run ``cmd`` until it stops at crash point ``step`` (tests/crashpoints.py); SIGKILL it there."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=crash_env(step, child_env()))
    try:
        line = p.stderr.readline()
        assert line.strip() == marker(step), line + p.stderr.read()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.timeout(240)
def test_writer_killed_during_upsert_leaves_the_group_finishable(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    upsert_files(store, {"a/1.txt": content(1)}, tmp_path, writer="alive1")
    # the victim already has a part; its second upsert (new files) is killed after uploading its
    # blobs, before its part is written: its earlier part stays whole, the new files are nowhere
    upsert_files(store, {"victim/old.txt": content(9)}, tmp_path, writer="victim")
    src = tmp_path / "victim-src"
    (src / "victim").mkdir(parents=True)
    (src / "victim" / "new.txt").write_bytes(content(7) * 100)
    w = script(tmp_path, "one.py", ONE_WRITER)
    _kill_at([sys.executable, w, backend_url, str(tmp_path / "vc"), str(src), "victim"], "upsert-after-upload")
    # a writer that never had a part, killed the same way, leaves none
    _kill_at([sys.executable, w, backend_url, str(tmp_path / "vc2"), str(src), "ghost"], "upsert-after-upload")
    upsert_files(store, {"b/2.txt": content(2)}, tmp_path, writer="alive2")

    (g,) = store.groups("proj")
    assert [p.writer for p in g.parts] == ["alive1", "alive2", "victim"]
    v = store.finish_artifact(artfs.Artifact("ds"), "proj", "g")
    assert downloaded(store, f"proj/ds:{v.version}", tmp_path / "out") == {
        "a/1.txt": content(1), "b/2.txt": content(2), "victim/old.txt": content(9)}
    # the killed upload's blob is unreferenced; gc removes it once its intent has expired
    orphan = artfs.digest_bytes(content(7) * 100)
    assert store.backend.exists(blob_key("proj", orphan))  # kept while its (young) intent lives
    for o in list(store.backend.list("proj/intents/")):
        store.backend.delete(o.key)  # what 24 h of waiting does
    store.gc("proj")
    assert not store.backend.exists(blob_key("proj", orphan))
    store.artifact("proj/ds:latest").download(str(tmp_path / "out2"))  # nothing else lost


FINISH_ONE = """
import json, sys
import artfs
url, cache = sys.argv[1:3]
store = artfs.Store(url, cache=artfs.Cache(cache, max_size="1G"))
v = store.finish_artifact(artfs.Artifact("ds"), "proj", "g")
print(json.dumps({"version": v.commit_result.version, "created": v.commit_result.created}))
"""


@pytest.mark.timeout(240)
@pytest.mark.parametrize("step", ["finish-after-claim", "finish-after-commit"])
def test_finisher_killed_is_taken_over_exactly_once(local_url, tmp_path, monkeypatch, step):
    store = make_store(local_url, tmp_path)
    upsert_files(store, {"a.txt": b"a"}, tmp_path, writer="A")
    upsert_files(store, {"b.txt": b"b"}, tmp_path, writer="B")
    f = script(tmp_path, "fin.py", FINISH_ONE)
    _kill_at([sys.executable, f, local_url, str(tmp_path / "fc")], step)
    (g,) = store.groups("proj")
    assert g.finishing
    # an upsert now waits for the finish's result, which does not come: it gives up after its timeout
    with pytest.raises(artfs.StoreUnavailable, match="being finished"):
        _distributed.upsert(store, "proj", "ds", "g", entries=[], sources={}, writer="C", timeout=0.3)
    monkeypatch.setattr(_groups_finish, "CLAIM_STALE", 0.5)  # the dead claim is noticed sooner
    v = store.finish_artifact(artfs.Artifact("ds"), "proj", "g")
    assert store.versions("proj", "ds") == [0]  # one version, whichever process made it
    assert v.version == "v0"
    assert v.commit_result.created == (step == "finish-after-claim")
    # C's empty part came after the dead finisher's claim: it is in the version only if the
    # taker merged it (after-claim); either way the group says which parts are in the version
    fin = json.loads(store.backend.get("proj/groups/ds/g/finished.json"))
    assert {"A", "B"} <= set(fin["parts"])
    # who made the version: the dead finisher's commit (found by its commit id, claim 0) when it
    # had committed, the taker's (claim 1) when it had not; a taker that committed again instead
    # would give claim 1 here even though dedup leaves one version with the same files
    assert fin["claim"] == (1 if step == "finish-after-claim" else 0)
    assert sorted(e.path for e in v.files()) == ["a.txt", "b.txt"]
    assert not list(store.backend.list("proj/groups/ds/g/finish/"))


# --------------------------------------------------------------------------------------------
# gc and delete never take a blob of a pending part; gc removes abandoned groups
# --------------------------------------------------------------------------------------------

UPSERT_LOOP = """
import json, os, sys, time
import artfs
url, cache, start, done, out = sys.argv[1:6]
store = artfs.Store(url, cache=artfs.Cache(cache, max_size="1G"))
print("ready", flush=True)
while not os.path.exists(start):
    time.sleep(0.002)
i = 0
log = open(out, "w")
while not os.path.exists(done) or i < 8:
    art = artfs.Artifact("ds", type="dataset")
    with art.new_file(f"w{i % 4}/n.txt", "w") as f:
        f.write(f"content {i % 6} " * 100)  # contents recur: a blob goes unreferenced, then is needed again
    r = store.upsert_artifact(art, "proj", "race", writer=f"w{i % 4}")
    log.write(json.dumps({"writer": r.writer, "part": r.part_id, "round": i}) + "\\n")
    log.flush()
    i += 1
"""

GC_LOOP = """
import os, sys, time
import artfs
url, cache, start, done = sys.argv[1:5]
store = artfs.Store(url, cache=artfs.Cache(cache, max_size="1G"))
print("ready", flush=True)
while not os.path.exists(start):
    time.sleep(0.002)
runs = 0
t0 = time.monotonic()
while time.monotonic() - t0 < float(sys.argv[5]):
    store.gc("proj")
    runs += 1
open(done, "w").close()
print(runs, flush=True)
"""


@pytest.mark.timeout(300)
def test_gc_racing_upserts_loses_no_blob_of_a_pending_part(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    upsert_files(store, {"keep.txt": b"before"}, tmp_path, group="race", writer="w9")
    start, done, out = tmp_path / "start", tmp_path / "done", tmp_path / "log.jsonl"
    up = subprocess.Popen([sys.executable, script(tmp_path, "up.py", UPSERT_LOOP), backend_url,
                           str(tmp_path / "uc"), str(start), str(done), str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    gc = subprocess.Popen([sys.executable, script(tmp_path, "gc.py", GC_LOOP), backend_url, str(tmp_path / "gcc"),
                           str(start), str(done), "4"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    _start_all([up, gc])
    start.touch()
    outs = run_all([up, gc])
    rounds = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rounds) >= 8 and int(outs[1]) >= 2, (len(rounds), outs[1])
    # the latest part of each writer, with every blob, is what finish merges
    last = {}
    for r in rounds:
        last[r["writer"]] = r["round"]
    v = store.finish_artifact(artfs.Artifact("ds"), "proj", "race")
    got = downloaded(store, f"proj/ds:{v.version}", tmp_path / "out")  # every blob there, verified
    want = {f"{w}/n.txt": f"content {i % 6} ".encode() * 100 for w, i in last.items()}
    want["keep.txt"] = b"before"
    assert got == want


def test_delete_keeps_blobs_of_pending_parts(backend_url, tmp_path):
    store = make_store(backend_url, tmp_path)
    src = tmp_path / "v0"
    src.mkdir()
    (src / "shared.txt").write_bytes(b"in v0 and in a pending part")
    art = artfs.Artifact("ds", type="dataset")
    art.add_dir(str(src))
    store.log_artifact(art, project="proj")
    upsert_files(store, {"shared.txt": b"in v0 and in a pending part"}, tmp_path, group="g", writer="w")
    store.artifact("proj/ds:v0").delete()
    store.gc("proj")
    assert store.backend.exists(blob_key("proj", artfs.digest_bytes(b"in v0 and in a pending part")))
    v = store.finish_artifact(artfs.Artifact("ds"), "proj", "g")
    assert downloaded(store, f"proj/ds:{v.version}", tmp_path / "o") == {"shared.txt": b"in v0 and in a pending part"}


def test_gc_removes_abandoned_groups_and_their_blobs(local_url, tmp_path):
    store = make_store(local_url, tmp_path)
    upsert_files(store, {"old.txt": b"abandoned long ago"}, tmp_path, group="old", writer="w")
    upsert_files(store, {"new.txt": b"still being written"}, tmp_path, group="young", writer="w")
    for o in list(store.backend.list("proj/")):  # every key of the store dates from 8 days ago ...
        t = time.time() - 8 * 24 * 3600
        os.utime(store.backend.local_path(o.key), (t, t))
    upsert_files(store, {"new2.txt": b"more"}, tmp_path, group="young", writer="w2")  # ... but young is active
    r = store.gc("proj", dry_run=True)
    assert r["groups_removed"] == 1
    assert len(store.groups("proj")) == 2
    r = store.gc("proj")
    assert r["groups_removed"] == 1 and r["blobs_removed"] == 1
    assert [g.group for g in store.groups("proj")] == ["young"]
    assert not store.backend.exists(blob_key("proj", artfs.digest_bytes(b"abandoned long ago")))
    v = store.finish_artifact(artfs.Artifact("ds"), "proj", "young")
    assert sorted(e.path for e in v.files()) == ["new.txt", "new2.txt"]


# --------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------

def cli(tmp_path, url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "artfs.cli", "--store", url, "--cache-dir", str(tmp_path / "cc"),
                           *args], capture_output=True, text=True, timeout=120,
                          env=env or child_env(ARTFS_STAGING_DIR=str(tmp_path / "staging")))


def test_cli_put_upsert_status_finish(backend_url, tmp_path):
    for i in range(3):
        d = tmp_path / f"shard{i}"
        d.mkdir()
        (d / f"part-{i}.csv").write_bytes(content(i))
        r = cli(tmp_path, backend_url, "put", "-n", "proj/ds", "-t", "dataset", "--upsert", "run-7", str(d),
                "--writer", f"node{i}")
        assert r.returncode == 0, r.stderr
        assert f"part of writer node{i} recorded in group run-7" in r.stdout
    r = cli(tmp_path, backend_url, "status")
    assert r.returncode == 0, r.stderr
    assert "proj/ds  group run-7  3 parts, 3 files" in r.stdout
    for i in range(3):
        assert f"writer node{i}" in r.stdout
    r = cli(tmp_path, backend_url, "status", "--json")
    (g,) = [d for d in json.loads(r.stdout) if d.get("kind") == "group"]
    assert sorted(p["writer"] for p in g["parts"]) == ["node0", "node1", "node2"]
    assert g["size"] == sum(len(content(i)) for i in range(3))

    r = cli(tmp_path, backend_url, "finish", "proj/ds", "--group", "run-7", "--alias", "best", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["name"], doc["created"], doc["files"], doc["aliases"]) == ("proj/ds:v0", True, 3, ["best"])
    r = cli(tmp_path, backend_url, "finish", "proj/ds", "--group", "run-7")
    assert r.returncode == 0 and "was finished as this version" in r.stdout
    r = cli(tmp_path, backend_url, "put", "-n", "proj/ds", "--upsert", "run-7", str(tmp_path / "shard0"))
    assert r.returncode == 4 and "finished" in r.stderr  # AlreadyExists
    r = cli(tmp_path, backend_url, "status")
    assert "run-7" not in r.stdout
    r = cli(tmp_path, backend_url, "finish", "proj/ds", "--group", "nothing-here")
    assert r.returncode == 3 and "no parts" in r.stderr
    r = cli(tmp_path, backend_url, "put", "-n", "proj/ds", "--writer", "x", str(tmp_path / "shard0"))
    assert r.returncode == 2 and "--upsert" in r.stderr
    store = make_store(backend_url, tmp_path, "check")
    assert store.versions("proj", "ds") == [0]
    assert downloaded(store, "proj/ds:best", tmp_path / "o") == {f"part-{i}.csv": content(i) for i in range(3)}


# --------------------------------------------------------------------------------------------
# the W&B docs' parallel-writers example, with ``import artfs as wandb``
# --------------------------------------------------------------------------------------------

WANDB_EXAMPLE = '''
import artfs as wandb
import time

# We use a process pool instead of ray to launch the runs in parallel
# (the docs: "You can orchestrate your parallel runs however you want.")
from concurrent.futures import ProcessPoolExecutor
import multiprocessing

artifact_type = "dataset"
artifact_name = "parallel-artifact"
table_name = "distributed_table"
parts_path = "parts"
num_parallel = 5

# Each batch of parallel writers should have its own
# unique group name.
group_name = "writer-group-{}".format(round(time.time()))


def train(i):
  """
  Our writer job. Each writer will add one image to the artifact.
  """
  with wandb.init(group=group_name) as run:
    artifact = wandb.Artifact(name=artifact_name, type=artifact_type)

    # Add data to a wandb table. In this case we use example data
    table = wandb.Table(columns=["a", "b", "c"], data=[[i, i*2, 2**i]])

    # Add the table to folder in the artifact
    artifact.add(table, "{}/table_{}".format(parts_path, i))

    # Upserting the artifact creates or appends data to the artifact
    run.upsert_artifact(artifact)
    return run.id


if __name__ == "__main__":
  # Launch your runs in parallel
  with ProcessPoolExecutor(num_parallel, mp_context=multiprocessing.get_context("fork")) as pool:
    result_ids = [pool.submit(train, i) for i in range(num_parallel)]
    # Join on all the writers to make sure their files have
    # been added before finishing the artifact.
    writers = [r.result() for r in result_ids]

  # Once all the writers are finished, finish the artifact
  # to mark it ready.
  with wandb.init(group=group_name) as run:
    artifact = wandb.Artifact(artifact_name, type=artifact_type)

    # Create a "PartitionTable" pointing to the folder of tables
    # and add it to the artifact.
    artifact.add(wandb.data_types.PartitionedTable(parts_path), table_name)

    # Finish artifact finalizes the artifact, disallowing future "upserts"
    # to this version.
    run.finish_artifact(artifact)
    import json
    print(json.dumps({"version": artifact.version, "finisher": run.id, "writers": writers,
                      "group": group_name}))
'''


@pytest.mark.timeout(300)
def test_wandb_parallel_writers_example(backend_url, tmp_path):
    env = child_env(ARTFS_STORE=backend_url, ARTFS_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("ARTFS_RUN_ID", None)
    env.pop("ARTFS_PROJECT", None)
    r = subprocess.run([sys.executable, script(tmp_path, "parallel.py", WANDB_EXAMPLE)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["version"] == "v0"
    store = make_store(backend_url, tmp_path, "check")
    project = artfs._run.DEFAULT_PROJECT
    a = store.artifact(f"{project}/parallel-artifact:v0")
    files = {e.path for e in a.files()}
    assert files == {f"parts/table_{i}.table.json" for i in range(5)} | {"distributed_table.partitioned-table.json"}
    got = downloaded(store, f"{project}/parallel-artifact:v0", tmp_path / "out")
    tables = sorted((artfs.data_types.load(got[f"parts/table_{i}.table.json"]) for i in range(5)),
                    key=lambda t: t.data[0][0])
    assert [t.data for t in tables] == [[[i, i * 2, 2 ** i]] for i in range(5)]
    assert tables[0].columns == ["a", "b", "c"]
    pt = artfs.data_types.load(got["distributed_table.partitioned-table.json"])
    assert isinstance(pt, artfs.PartitionedTable) and pt.parts_path == "parts"
    # lineage: the finishing run logged it, each writer run contributed
    assert a.logged_by().id == out["finisher"]
    assert sorted(run.id for run in artfs._run.contributors(a)) == sorted(out["writers"])
    assert store.groups(project) == []


def test_part_replaced_while_finishing_fails_the_finish_cleanly(backend_url, tmp_path):
    """What a finisher checks once its intent is in place: no part it merged was replaced since
    it read it (the replaced part's old blobs may be garbage to a gc by then)."""
    store = make_store(backend_url, tmp_path)
    upsert_files(store, {"a.txt": b"old a"}, tmp_path, writer="A")
    upsert_files(store, {"b.txt": b"b"}, tmp_path, writer="B")
    parts = _distributed._read_parts(store, "proj", "ds", "g")  # what a finisher has read ...
    upsert_files(store, {"a.txt": b"new a"}, tmp_path, writer="A")  # ... when A replaces its part
    blobs = {e.digest for p in parts for e in p.entries}
    with pytest.raises(artfs.ArtfsError, match="writer A replaced its part"):
        _distributed._protect(store, "proj", "ds", "g", "c0ffee", parts, blobs)
    assert not list(store.backend.list("proj/intents/"))  # its intent is gone again
    fresh = _distributed._read_parts(store, "proj", "ds", "g")
    ikey = _distributed._protect(store, "proj", "ds", "g", "c0ffee", fresh, blobs)  # unchanged parts: fine
    store.backend.delete(ikey)
    v = store.finish_artifact(artfs.Artifact("ds"), "proj", "g")  # and the retry merges the new part
    assert downloaded(store, f"proj/ds:{v.version}", tmp_path / "o") == {"a.txt": b"new a", "b.txt": b"b"}
