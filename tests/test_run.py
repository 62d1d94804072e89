"""Runs and lineage through the API (issue 8): W&B's Artifacts examples run with ``import artfs as wandb``.

Every test runs on a local store and on S3 (moto server mode on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import artfs
from artfs import ArtfsError, CorruptData, InvalidName, NotFound
from artfs._layout import run_key, version_edges_prefix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def wb_env(backend_url, tmp_path, monkeypatch):
    """A W&B user's setting: the store and cache come from the environment, nothing is passed."""
    monkeypatch.setenv("ARTFS_STORE", backend_url)
    monkeypatch.setenv("ARTFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ARTFS_RUN_ID", raising=False)
    monkeypatch.delenv("ARTFS_PROJECT", raising=False)
    monkeypatch.chdir(tmp_path)
    yield backend_url
    artfs.finish()


def run_script(code: str, cwd, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=120)


# The examples of W&B's "Artifacts API" and FAQ pages, in order, with only the import changed and
# the results checked. Project names stand in for W&B's entities where the docs use them.
WANDB_EXAMPLES = r'''
import artfs as wandb

open("bicycle-data.h5", "w").write("bikes\n")
open("model.h5", "w").write("weights\n")

# 1. Initialize a run / 2. Create an artifact
run = wandb.init(job_type='train', project='my-project')
assert wandb.run is run
artifact = wandb.Artifact('bike-dataset', type='dataset')
artifact.add_file('bicycle-data.h5')
run.log_artifact(artifact)
assert artifact.version == "v0", artifact.version

# Versions and aliases: a custom alias at log time
artifact = wandb.Artifact('run-3nq3ctyy-bike-model', type='model')
artifact.add_file('model.h5')
run.log_artifact(artifact, aliases=['latest', 'best-ap50'])
assert sorted(artifact.aliases) == ['best-ap50', 'latest'], artifact.aliases
producer = run.id
run.finish()
assert wandb.run is None

# a model in another project (init finishes the current run, as W&B's does outside notebooks)
with wandb.init(project='my-other-project') as other:
    m = wandb.Artifact('bike-model', type='model'); m.add_file('model.h5'); other.log_artifact(m)

# 3. Use an artifact
run = wandb.init(job_type='eval', project='my-project')
artifact = run.use_artifact('bike-dataset:v0')
artifact_dir = artifact.download()
assert open(artifact_dir + "/bicycle-data.h5").read() == "bikes\n"
artifact = run.use_artifact('bike-dataset:latest')
assert artifact.version == "v0"
# another project, and W&B's entity/project/name
artifact = run.use_artifact('my-other-project/bike-model:v0')
assert artifact.qualified_name == 'my-other-project/bike-model:v0'
artifact = run.use_artifact('my-entity/my-other-project/bike-model:v0')

# Using an artifact that has not been logged: idempotent while the content stays the same
artifact = wandb.Artifact('bike-model', type='model')
artifact.add_file('model.h5')
run.use_artifact(artifact)
assert artifact.version == "v0"
again = wandb.Artifact('bike-model', type='model')
again.add_file('model.h5')
run.use_artifact(again)
assert again.version == "v0"
api = wandb.Api()
assert [v.version for v in api.artifact_versions('model', 'my-project/bike-model')] == ["v0"]

# get_path: Entry.download() and Entry.ref()
path = artifact.get_path('model.h5')
assert open(path.download()).read() == "weights\n"
assert path.ref() is None
consumer = run.id
run.finish()

# Download an artifact outside of a run
api = wandb.Api()
artifact = api.artifact('my-entity/my-project/bike-dataset:v0')
assert open(artifact.download() + "/bicycle-data.h5").read() == "bikes\n"

# Updating artifacts
artifact = api.artifact('my-project/bike-dataset:latest')
artifact.description = "My new description"
artifact.metadata["oldKey"] = "new value"
artifact.metadata = {"newKey": "new value"}
artifact.aliases.append('best')
artifact.save()
again = api.artifact('my-project/bike-dataset:best')
assert (again.description, again.metadata, again.version) == ("My new description", {"newKey": "new value"}, "v0")
again.aliases = ['replaced']
again.save()
assert api.artifact('my-project/bike-dataset:replaced').version == "v0"

# Traversing the artifact graph
artifact = api.artifact('my-project/bike-dataset:v0')
producer_run = artifact.logged_by()
consumer_runs = artifact.used_by()
assert producer_run.id == producer and producer_run.job_type == 'train'
assert [r.id for r in consumer_runs] == [consumer]
next_artifacts = consumer_runs[0].logged_artifacts()
previous_artifacts = producer_run.used_artifacts()
# the eval run created my-project/bike-model:v0 when it used a constructed artifact
assert [a.qualified_name for a in next_artifacts] == ['my-project/bike-model:v0']
assert previous_artifacts == []
run = api.run("my-entity/my-project/" + consumer)
used = sorted(a.qualified_name for a in run.used_artifacts())
assert used == ['my-other-project/bike-model:v0', 'my-project/bike-dataset:v0', 'my-project/bike-model:v0'], used
earlier_run = run.used_artifacts()[1].logged_by()
assert earlier_run.id == producer
produced = api.run("my-project/" + producer).logged_artifacts()
assert sorted(a.name for a in produced) == ['bike-dataset:v0', 'run-3nq3ctyy-bike-model:v0']
assert [r.id for r in produced[0].used_by()] == [consumer]
assert sorted(r.id for r in api.runs("my-project")) == sorted([producer, consumer])

# How do I log an artifact to an existing run?
with wandb.init(id=producer, project='my-project', resume="allow") as run:
    os.makedirs("my_data", exist_ok=True); open("my_data/file.txt", "w").write("late\n")
    artifact = wandb.Artifact("artifact_name", "artifact_type")
    artifact.add_file("my_data/file.txt")
    run.log_artifact(artifact)
assert "my-project/artifact_name:v0" in api.run("my-project/" + producer).record.outputs

# Cleaning up unused versions: delete every version without an alias
for i in range(3):
    a = wandb.Artifact('ckpt', type='model')
    with a.new_file('w.txt') as f:
        f.write(str(i))
    with wandb.init(project='my-project') as r:
        r.log_artifact(a, aliases=['best'] if i == 1 else None)
api = wandb.Api(overrides={"project": "my-project"})
artifact_type, artifact_name = 'model', 'ckpt'
for version in api.artifact_versions(artifact_type, artifact_name):
    if len(version.aliases) == 0:
        version.delete()
assert [v.version for v in api.artifact_versions('model', 'ckpt')] == ["v2", "v1"]  # newest first, as W&B
print("OK")
'''


@pytest.mark.timeout(300)
def test_wandb_examples_run_with_import_artfs_as_wandb(wb_env, tmp_path):
    """The docs' code, run as a user's script: only ``import wandb`` became ``import artfs as wandb``."""
    r = run_script("import os\n" + WANDB_EXAMPLES, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK"


def test_module_level_functions_use_the_current_run(wb_env, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(ArtfsError, match="artfs.init"):
        artfs.use_artifact("p/x:v0")
    run = artfs.init(project="p", job_type="prep", group="g", name="first", config={"lr": 0.1})
    art = artfs.Artifact("data", type="dataset")
    art.add_file(str(tmp_path / "a.txt"))
    artfs.log_artifact(art)
    assert artfs.run is run
    artfs.finish()
    assert artfs.run is None
    with artfs.init(project="q") as r2:
        got = artfs.use_artifact("p/data:latest")
        assert got.version == "v0"
    rec = artfs.Api().run(f"p/{run.id}").record
    assert (rec.name, rec.job_type, rec.group, rec.config, rec.state, rec.exit_status) == \
        ("first", "prep", "g", {"lr": 0.1}, "finished", 0)
    assert rec.outputs == ["p/data:v0"] and rec.host and rec.started and rec.ended
    assert [r.path for r in got.used_by()] == [f"q/{r2.id}"]
    assert artfs.Api().run(f"q/{r2.id}").record.inputs == ["p/data:v0"]


def test_a_failing_run_records_its_exit_status(wb_env, tmp_path):
    with pytest.raises(RuntimeError):
        with artfs.init(project="p") as run:
            raise RuntimeError("boom")
    rec = artfs.Api().run(f"p/{run.id}").record
    assert (rec.state, rec.exit_status) == ("failed", 1)


def test_deleting_a_version_keeps_the_runs_and_shows_it_deleted(wb_env, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    with artfs.init(project="p") as producer:
        art = artfs.Artifact("data", type="dataset")
        art.add_file(str(tmp_path / "a.txt"))
        producer.log_artifact(art)
    with artfs.init(project="p") as consumer:
        consumer.use_artifact("data:v0")
    artfs.Api().artifact("p/data:v0").delete()
    api = artfs.Api()
    run = api.run(f"p/{consumer.id}")
    assert run.used_artifacts() == []  # nothing to return for a deleted version ...
    assert run.edges("used") == [{"artifact": "p/data:v0", "role": None, "deleted": True}]  # ... but it is kept
    assert run.record.inputs == ["p/data:v0"]
    assert api.run(f"p/{producer.id}").edges("logged")[0]["deleted"] is True


def test_bad_run_ids_missing_runs_and_tampered_records(wb_env, tmp_path):
    api = artfs.Api()
    for bad in ("p/../etc", "p/a/b/c", "../p/x", "p/", "p/x.y", "p/" + "a" * 65):
        with pytest.raises(InvalidName):
            api.run(bad)
    with pytest.raises(InvalidName):
        artfs.init(project="p", id="../../x")
    with pytest.raises(NotFound, match="no such run"):
        api.run("p/nosuchrun")
    with artfs.init(project="p") as run:
        pass
    store = artfs.Store()
    key = run_key("p", run.id)
    good = store.backend.get(key)
    doc = json.loads(good)
    cases = [
        b"{not json",
        json.dumps({**doc, "format": "other"}).encode(),
        json.dumps({**doc, "id": "someoneelse"}).encode(),
        json.dumps({**doc, "inputs": ["../../etc:v0"]}).encode(),
        json.dumps({**doc, "exit_status": "zero"}).encode(),
        json.dumps({**doc, "state": "weird"}).encode(),
    ]
    for data in cases:
        store.backend.put(key, data)
        with pytest.raises(CorruptData, match=run.id):
            api.run(f"p/{run.id}").record
    store.backend.put(key, good)
    assert api.run(f"p/{run.id}").state == "finished"


def test_edges_with_unsafe_names_in_their_keys_are_ignored(wb_env, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    with artfs.init(project="p") as run:
        art = artfs.Artifact("data", type="dataset")
        art.add_file(str(tmp_path / "a.txt"))
        run.log_artifact(art)
        run.use_artifact("data:v0")
    store = artfs.Store()
    prefix = version_edges_prefix("p", "data", 0, "used")
    store.backend.put(prefix + "p/..x", b"{}")
    store.backend.put(prefix + ".hidden/run1", b"{}")
    assert [r.id for r in artfs.Api().artifact("p/data:v0").used_by()] == [run.id]


WRITER = r'''
import os, sys, artfs
i = int(sys.argv[1])
with artfs.init(project="p", job_type="train") as run:
    data = run.use_artifact("data:v0")
    m = artfs.Artifact(f"model-{i}", type="model")
    with m.new_file("w.bin", mode="w") as f:
        f.write(f"model {i}")
    run.log_artifact(m)
    print(run.id)
'''


@pytest.mark.timeout(300)
def test_eight_processes_use_and_log_at_once(wb_env, tmp_path):
    """8 processes each use data:v0 and log their own model at the same time: no edge is lost."""
    (tmp_path / "a.txt").write_text("a")
    with artfs.init(project="p") as run:
        art = artfs.Artifact("data", type="dataset")
        art.add_file(str(tmp_path / "a.txt"))
        run.log_artifact(art)
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(i)], cwd=str(tmp_path), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
    ids = {}
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        ids[i] = out.strip()
    api = artfs.Api()
    users = api.artifact("p/data:v0").used_by()
    assert sorted(r.id for r in users) == sorted(ids.values())
    for i, rid in ids.items():
        model = api.artifact(f"p/model-{i}:latest")
        assert model.logged_by().id == rid
        assert [a.qualified_name for a in model.logged_by().used_artifacts()] == ["p/data:v0"]
        assert api.run(f"p/{rid}").record.outputs == [f"p/model-{i}:v0"]


# --------------------------------------------------------------------------------------------
# the command line: artfs run, runs ls|show, lineage, artifact put|get|ls
# --------------------------------------------------------------------------------------------

class CLI:
    def __init__(self, tmp, store: str) -> None:
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
        self.env.update(ARTFS_STORE=store, ARTFS_CACHE_DIR=str(tmp / "cache"), HOME=str(tmp / "home"),
                        PYTHONPATH=ROOT)

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "artfs.cli", *args], env=self.env, cwd=self.tmp,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == code, f"artfs {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p


TRAIN = '''
import artfs
with artfs.init(project="p", job_type="ignored-inside-artfs-run") as run:
    run.use_artifact("data:latest")
    m = artfs.Artifact("model", type="model")
    with m.new_file("w.txt", mode="w") as f:
        f.write("w")
    run.log_artifact(m)
    print(run.path)
'''


@pytest.mark.timeout(300)  # about 25 artfs processes, each a Python start-up on a loaded machine
def test_cli_run_lineage_and_wandb_spelling(backend_url, tmp_path):
    cli = CLI(tmp_path, backend_url)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a")
    cli.run("artifact", "put", "-n", "p/data", "-t", "dataset", "d")          # wandb artifact put
    assert "data" in cli.run("artifact", "ls", "p").stdout                     # wandb artifact ls
    cli.run("artifact", "get", "p/data:latest", "--root", "got")              # wandb artifact get
    assert (tmp_path / "got" / "a.txt").read_text() == "a"
    (tmp_path / "train.py").write_text(TRAIN)
    p = cli.run("run", "-p", "p", "--job-type", "train", "--name", "first", "--", sys.executable, "train.py")
    inner = p.stdout.strip()                      # artfs.init() inside joined the run artfs run named
    assert p.stderr.strip() == f"artfs: run {inner}"
    rid = inner.split("/")[1]
    show = json.loads(cli.run("runs", "show", inner, "--json").stdout)
    assert (show["name"], show["job_type"], show["source"], show["state"], show["exit_status"]) == \
        ("first", "train", "cli", "finished", 0)
    assert show["command"] == [sys.executable, "train.py"]
    assert show["used"] == [{"artifact": "p/data:v0", "role": None, "deleted": False}]
    assert show["logged"] == [{"artifact": "p/model:v0", "role": "logger", "deleted": False}]
    # CMD's exit code is artfs run's, and the run records it
    assert cli.run("run", "-p", "p", "--name", "seven", "--", "sh", "-c", "exit 7", code=7)
    cli.run("run", "-p", "p", "--", str(tmp_path / "no-such-program"), code=127)
    runs = json.loads(cli.run("runs", "ls", "p", "--json").stdout)
    assert {(r["name"], r["exit_status"], r["state"]) for r in runs} == \
        {("first", 0, "finished"), ("seven", 7, "failed"), (None, 127, "failed")}
    assert rid in cli.run("runs", "ls", "p").stdout
    # lineage: readable tree, JSON, pictures
    tree = cli.run("lineage", "p/model:v0", "--up").stdout
    assert tree.splitlines() == ["p/model:v0", f"└─ logged by run {inner} (train, first)", "   └─ used p/data:v0"]
    down = cli.run("lineage", "p/data:latest", "--down").stdout
    assert down.splitlines() == ["p/data:v0", f"└─ used by run {inner} (train, first)", "   └─ logged p/model:v0"]
    g = json.loads(cli.run("lineage", "p/data:v0", "--json").stdout)
    assert {(e["from"], e["to"], e["kind"]) for e in g["edges"]} == \
        {("p/data:v0", f"run:{inner}", "used"), (f"run:{inner}", "p/model:v0", "logger")}
    mermaid = cli.run("lineage", "p/data:v0", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR") and "-->|used|" in mermaid and "-->|logged|" in mermaid
    dot = cli.run("lineage", "p/data:v0", "--format", "dot").stdout
    assert dot.startswith("digraph lineage {") and "->" in dot
    # a deleted version keeps its lineage, shown as deleted
    cli.run("delete", "p/data:v0")
    assert "p/data:v0 (deleted)" in cli.run("lineage", "p/model:v0", "--up").stdout
    assert "p/data:v0 (deleted)" in cli.run("runs", "show", inner).stdout
    # a damaged record: exit code 5 for that run, the listing still shows the others
    key = os.path.join(backend_url, "p", "runs", rid, "run.json") if "://" not in backend_url else None
    if key:
        with open(key, "w") as f:
            f.write('{"format": "artfs.run/1", "id": "someone-else"}')
        e = cli.run("runs", "show", inner, code=5)
        assert e.stderr.startswith("artfs: error: ") and rid in e.stderr
        assert "damaged" in cli.run("runs", "ls", "p").stdout
    # bad input: clear one-line errors, documented exit codes
    for args, code in ((("runs", "show", "p/../x"), 2), (("runs", "show", "p/nosuchrun"), 3),
                       (("lineage", "p/nothing:v3"), 3), (("lineage", "p/model:v0", "--depth", "0"), 2),
                       (("run", "-p", "p"), 2), (("run", "-p", "../x", "--", "true"), 2)):
        e = cli.run(*args, code=code)
        assert "Traceback" not in e.stderr and e.stderr.startswith("artfs: error: "), e.stderr
