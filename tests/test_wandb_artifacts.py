"""W&B's Artifact and Api calls that scripts make beyond logging (issue 24), and the model registry.

Each test is a W&B example script adapted only in its import (``import artfs as wandb``), then
checks what the store holds.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time

import pytest

import artfs
import artfs as wandb
from artfs import ArtfsError, InvalidName, NotFound

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# wb_env, local_env: tests/conftest.py


def cli(*args: str, cwd=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "artfs.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))


def test_checkpoints_logged_per_epoch(wb_env, tmp_path):
    """W&B's "log model checkpoints" pattern: one version per epoch, ``best`` moved to the best one."""
    losses = [0.9, 0.4, 0.6, 0.3]
    run = wandb.init(project="ckpt", job_type="train", config={"epochs": len(losses)})
    best = float("inf")
    for epoch, loss in enumerate(losses):
        path = tmp_path / f"model-epoch{epoch}.pt"
        path.write_text(f"weights after epoch {epoch}\n")
        wandb.log({"epoch": epoch, "val_loss": loss})
        aliases = ["latest", f"epoch_{epoch}"]
        if loss < best:
            best = loss
            aliases.append("best")
        art = wandb.Artifact(f"model-{run.id}", type="model", metadata={"epoch": epoch, "val_loss": loss})
        art.add_file(str(path), name="model.pt")
        run.log_artifact(art, aliases=aliases)
        art.wait()
    run.finish()
    api = wandb.Api()
    versions = api.artifact_versions("model", f"ckpt/model-{run.id}")
    assert [v.version for v in versions] == ["v3", "v2", "v1", "v0"]  # newest first, as W&B
    best_v = api.artifact(f"ckpt/model-{run.id}:best")
    assert best_v.version == "v3" and best_v.metadata == {"epoch": 3, "val_loss": 0.3}
    assert sorted(api.artifact(f"ckpt/model-{run.id}:v1").aliases) == ["epoch_1"]  # best moved on to v3
    assert open(os.path.join(best_v.download(), "model.pt")).read() == "weights after epoch 3\n"
    assert [a.version for a in api.run(f"ckpt/{run.id}").logged_artifacts()] == ["v0", "v1", "v2", "v3"]
    assert api.run(f"ckpt/{run.id}").summary["val_loss"] == 0.3


def test_cleanup_of_old_versions(wb_env):
    """W&B's clean-up scripts: delete versions without aliases; keep the newest of each collection."""
    for name, n in (("ckpt", 4), ("data", 3)):
        for i in range(n):
            with wandb.init(project="clean") as run:
                a = wandb.Artifact(name, type="model" if name == "ckpt" else "dataset")
                with a.new_file("f.txt") as f:
                    f.write(f"{name} {i}")
                run.log_artifact(a, aliases=["best"] if (name, i) == ("ckpt", 1) else None)
    api = wandb.Api(overrides={"project": "clean"})
    project = api.project("clean")
    assert sorted(t.name for t in project.artifacts_types()) == ["dataset", "model"]
    # script 1: every version of every collection that has no alias
    for artifact_type in project.artifacts_types():
        for collection in artifact_type.collections():
            for version in collection.versions():
                if len(version.aliases) == 0:
                    version.delete()
    assert [v.version for v in api.artifact_versions("model", "ckpt")] == ["v3", "v1"]  # latest, best
    assert [v.version for v in api.artifacts("dataset", "clean/data")] == ["v2"]
    # script 2: keep only the newest version ([0] is the newest, as W&B returns them)
    versions = api.artifact_versions("model", "clean/ckpt")
    for v in versions[1:]:
        v.delete(delete_aliases=True)
    assert [v.version for v in api.artifact_versions("model", "ckpt")] == ["v3"]
    assert artfs.Store().versions("clean", "ckpt") == [3]
    assert [c.name for c in api.artifact_collections("clean", "model")] == ["ckpt"]
    assert api.artifact_collection("model", "clean/ckpt").aliases == ["latest"]
    assert [t.name for t in api.artifact_types("clean")] == ["dataset", "model"]
    assert [v.version for v in api.artifacts("dataset", "data", order="+createdAt")] == ["v2"]
    with pytest.raises(NotFound, match="has type"):
        api.artifact_versions("model", "data")


def test_model_registry(wb_env, tmp_path):
    """W&B's model-management walkthrough: link candidates into a collection, promote one, use it."""
    (tmp_path / "model.pt").write_text("v1 weights\n")
    with wandb.init(project="bikes", job_type="train") as run:
        model = wandb.Artifact("bike-model", type="model")
        model.add_file("model.pt")
        run.log_artifact(model)
        linked = run.link_artifact(model, "model-registry/bike-models", aliases=["staging"])
        assert (linked.qualified_name, linked.source_qualified_name) == ("model-registry/bike-models:v0",
                                                                         "bikes/bike-model:v0")
        assert linked.is_link and sorted(linked.aliases) == ["latest", "staging"]
    (tmp_path / "model.pt").write_text("v2 weights\n")
    candidate = wandb.Artifact("bike-model", type="model")
    candidate.add_file("model.pt")
    candidate.link("wandb-registry-model/bike-models", aliases=["candidate"])  # not logged: saved first
    assert candidate.qualified_name == "uncategorized/bike-model:v0"  # by an "auto" run, as W&B
    assert candidate.logged_by().job_type == "auto"
    # promote bikes/bike-model:v0 in a second registry, twice: one link, aliases added
    src = wandb.Api().artifact("bikes/bike-model:v0")
    src.link("wandb-registry-model/bike-models", aliases=["production"])
    again = src.link("wandb-registry-model/bike-models", aliases=["champion"])
    assert again.version == "v1" and sorted(again.aliases) == ["champion", "latest", "production"]
    api = wandb.Api()
    assert [v.source_qualified_name for v in api.artifacts("model", "wandb-registry-model/bike-models")] == [
        "bikes/bike-model:v0", "uncategorized/bike-model:v0"]
    with wandb.init(project="bikes", job_type="eval") as ev:
        prod = ev.use_artifact("wandb-registry-model/bike-models:production")
        assert open(os.path.join(prod.download(), "model.pt")).read() == "v1 weights\n"
        assert prod.qualified_name == "wandb-registry-model/bike-models:v1" and prod.type == "model"
    # lineage: the eval run used the source version, which knows its links
    assert [r.id for r in api.artifact("bikes/bike-model:v0").used_by()] == [ev.id]
    assert api.artifact("bikes/bike-model:v0").linked_artifacts() == [
        "model-registry/bike-models:v0", "wandb-registry-model/bike-models:v1"]
    assert prod.logged_by().job_type == "train"
    # aliases of the collection move with save(); unlink keeps the source
    prod.aliases.remove("champion")
    prod.aliases.append("stable")
    prod.save()
    assert sorted(api.artifact("wandb-registry-model/bike-models:stable").aliases) == ["latest", "production",
                                                                                        "stable"]
    col = api.artifact_collection("model", "wandb-registry-model/bike-models")
    assert col.is_link_collection and not col.is_sequence()
    api.artifact("wandb-registry-model/bike-models:v0").delete()  # a link: unlinked, nothing else
    assert [v.version for v in api.artifacts("model", "wandb-registry-model/bike-models")] == ["v1"]
    assert api.artifact("uncategorized/bike-model:v0").linked_artifacts() == []
    with pytest.raises(InvalidName, match="holds 'model' versions"):
        d = wandb.Artifact("ds", type="dataset")
        with d.new_file("x") as f:
            f.write("x")
        d.link("wandb-registry-model/bike-models")
    # a deleted source drops out of the collection
    api.artifact("bikes/bike-model:v0").delete()
    with pytest.raises(NotFound):
        api.artifact("wandb-registry-model/bike-models:production")


def test_registry_on_the_command_line(local_env, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_text("w")
    assert cli("put", "-n", "p/model", "-t", "model", str(tmp_path / "m")).returncode == 0
    r = cli("link", "p/model:v0", "wandb-registry-model/prod-models", "-a", "production")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "wandb-registry-model/prod-models:v0 links p/model:v0; aliases: latest, production"
    ls = cli("ls", "wandb-registry-model").stdout
    assert "prod-models" in ls and "model" in ls
    ls = cli("ls", "wandb-registry-model/prod-models").stdout
    assert "p/model:v0" in ls and "production" in ls
    show = cli("show", "wandb-registry-model/prod-models:production").stdout
    assert show.startswith("wandb-registry-model/prod-models:v0 (links p/model:v0)")
    assert "linked as    wandb-registry-model/prod-models:v0" in cli("show", "p/model").stdout
    got = cli("get", "wandb-registry-model/prod-models:production", "--root", str(tmp_path / "out"))
    assert got.returncode == 0 and (tmp_path / "out" / "w.bin").read_text() == "w"
    assert "linked as wandb-registry-model/prod-models:v0" in cli("lineage", "p/model:v0").stdout
    assert cli("unlink", "wandb-registry-model/prod-models:production").returncode == 0
    assert cli("ls", "wandb-registry-model/prod-models").returncode == 3  # its one link gone: no collection
    assert cli("show", "p/model:v0").returncode == 0


def test_save_of_an_unlogged_artifact_logs_it(local_env):
    a = wandb.Artifact("notes", type="dataset")
    with a.new_file("n.txt") as f:
        f.write("n")
    a.save(project="saving")  # no run: an "auto" run logs it
    assert a.qualified_name == "saving/notes:v0" and a.logged_by().job_type == "auto"
    with wandb.init(project="saving", job_type="prep") as run:
        b = wandb.Artifact("notes", type="dataset")
        with b.new_file("n.txt") as f:
            f.write("m")
        b.save()  # logged by the current run
        assert b.wait() is b
    assert b.version == "v1" and b.logged_by().id == run.id
    with pytest.raises(ArtfsError, match="not logged"):
        wandb.Artifact("x", type="dataset").wait()


def test_tags_and_ttl_are_stored_and_shown(wb_env):
    a = wandb.Artifact("tagged", type="dataset")
    with a.new_file("t.txt") as f:
        f.write("t")
    a.tags = ["raw", "from camera 1"]
    a.ttl = datetime.timedelta(days=7)
    with pytest.raises(InvalidName, match="invalid tag"):
        a.tags = ["no/slash"]
    with pytest.raises(ArtfsError, match="timedelta"):
        a.ttl = 7
    with wandb.init(project="t") as run:
        run.log_artifact(a)
    got = wandb.Api().artifact("t/tagged:latest")
    assert got.tags == ["raw", "from camera 1"] and got.ttl == datetime.timedelta(days=7) and not got.expired
    got.tags.append("checked")
    got.ttl = None
    got.save()
    again = wandb.Api().artifact("t/tagged:v0")
    assert again.tags == ["raw", "from camera 1", "checked"] and again.ttl is None
    assert [x.version for x in wandb.Api().artifacts("dataset", "t/tagged", tags=["checked"])] == ["v0"]
    # describe changes the description and keeps the tags
    assert cli("describe", "t/tagged:v0", "-d", "cleaned").returncode == 0
    doc = json.loads(cli("show", "t/tagged:v0", "--json").stdout)
    assert doc["tags"] == ["raw", "from camera 1", "checked"] and doc["description"] == "cleaned"
    assert "tags         raw, from camera 1, checked" in cli("show", "t/tagged:v0").stdout


def test_a_short_ttl_expires(local_env):
    a = wandb.Artifact("brief", type="dataset")
    with a.new_file("b.txt") as f:
        f.write("b")
    a.ttl = datetime.timedelta(microseconds=1)
    artfs.Store().log_artifact(a, project="t")
    time.sleep(0.01)
    assert wandb.Api().artifact("t/brief:v0").expired
    assert "ttl" in cli("show", "t/brief:v0").stdout


def test_add_reference_to_an_entry_of_another_artifact(wb_env, tmp_path):
    """W&B's example: a new version made of files of an existing one, by reference."""
    (tmp_path / "big.bin").write_bytes(os.urandom(4096))
    with wandb.init(project="src") as run:
        base = wandb.Artifact("raw", type="dataset")
        base.add_file(str(tmp_path / "big.bin"))
        run.log_artifact(base)
        derived = wandb.Artifact("subset", type="dataset")
        derived.add_reference(base.get_entry("big.bin"))
        derived.add_reference(base.get_entry("big.bin"), name="again/big.bin")
        with pytest.raises(artfs.InvalidPath):
            derived.add_reference(base.get_entry("big.bin"))
        run.log_artifact(derived)
    r = derived.commit_result
    assert r is not None and r.created and r.uploaded_blobs == 0 and r.uploaded_bytes == 0  # same project
    assert sorted(f.path for f in derived.files()) == ["again/big.bin", "big.bin"]
    with wandb.init(project="dst") as run:
        other = wandb.Artifact("copy", type="dataset")
        other.add_reference(wandb.Api().artifact("src/raw:v0").get_entry("big.bin"), name="b.bin")
        run.log_artifact(other)
    assert other.commit_result.uploaded_blobs == 1  # another project: its blob copied once
    out = wandb.Api().artifact("dst/copy:v0").download(root=str(tmp_path / "o"))
    assert open(os.path.join(out, "b.bin"), "rb").read() == (tmp_path / "big.bin").read_bytes()


def test_cli_spellings_of_wandb_artifact(local_env, tmp_path):
    (tmp_path / "weights.pt").write_text("w")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_text("a")
    env = {"WANDB_PROJECT": "wbproj"}
    r = cli("artifact", "put", str(tmp_path / "weights.pt"), "--type", "model", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wbproj/weights.pt:v0 created")
    assert [f.path for f in wandb.Api().artifact("wbproj/weights.pt:v0").files()] == ["weights.pt"]
    r = cli("artifact", "put", str(tmp_path / "images"), env=env)  # no --name, no --type
    assert r.stdout.startswith("wbproj/images:v0 created")
    assert wandb.Api().artifact("wbproj/images:v0").type == "dataset"  # W&B's CLI default
    assert cli("put", "-n", "mine", str(tmp_path / "images"), env=env).returncode == 2  # -n needs a project
    ls = json.loads(cli("ls", "wbproj", "--type", "model", "--json").stdout)
    assert [d["artifact"] for d in ls] == ["weights.pt"]
    bad = cli("artifact", "get", "wbproj/images", "--type", "model")
    assert bad.returncode == 3 and "has type 'dataset'" in bad.stderr
    ok = cli("artifact", "get", "wbproj/images", "--type", "dataset", "--root", str(tmp_path / "got"))
    assert ok.returncode == 0 and (tmp_path / "got" / "a.png").exists()
    # cache cleanup --remove-temp: temp files a minute old go, younger ones stay
    cache = tmp_path / "cache" / "tmp"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "old").write_text("x")
    os.utime(cache / "old", (time.time() - 120, time.time() - 120))
    (cache / "new").write_text("y")
    r = cli("artifact", "cache", "cleanup", "1GB", "--remove-temp")
    assert r.returncode == 0, r.stderr
    assert not (cache / "old").exists() and (cache / "new").exists()


def test_a_registry_collection_reads_through_the_mount(local_url, tmp_path):
    """``MNT/<registry>/<collection>/production/...`` is the linked version's files (symlinks)."""
    from artfsd.testing import MountProcess

    store = artfs.Store(local_url, cache=artfs.Cache(str(tmp_path / "writer-cache")))
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.pt").write_text("weights\n")
    art = wandb.Artifact("bike-model", type="model")
    art.add_dir(str(src))
    logged = store.log_artifact(art, project="bikes")
    logged.link("wandb-registry-model/bike-models", aliases=["production"])
    with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mount-cache", args=["--refresh", "1"]) as m:
        assert m.alive(), m.log
        assert sorted(os.listdir(m.path())) == ["bikes", "wandb-registry-model"]
        coll = m.path("wandb-registry-model", "bike-models")
        assert sorted(os.listdir(coll)) == ["latest", "production", "v0"]
        assert os.readlink(os.path.join(coll, "v0")) == "../../bikes/bike-model/v0"
        assert os.readlink(os.path.join(coll, "production")) == "v0"
        assert open(os.path.join(coll, "production", "model.pt")).read() == "weights\n"
        assert os.path.samefile(os.path.join(coll, "production"), m.path("bikes", "bike-model", "v0"))
        with pytest.raises(OSError):  # read-only: links change with artfs link / unlink
            os.symlink("v0", os.path.join(coll, "staging"))
        # a link made while mounted shows up after the refresh interval
        again = wandb.Artifact("bike-model", type="model")
        (src / "model.pt").write_text("better\n")
        again.add_dir(str(src))
        store.log_artifact(again, project="bikes").link("wandb-registry-model/bike-models", aliases=["staging"])
        deadline = time.monotonic() + 20
        while "staging" not in os.listdir(coll) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert open(os.path.join(coll, "staging", "model.pt")).read() == "better\n"
