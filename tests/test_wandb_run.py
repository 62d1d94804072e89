"""The run API beyond artifacts (issue 24): config, log, summary, define_metric, log_code, media.

W&B scripts run with ``import artfs as wandb`` and what they logged is in the store afterwards:
the record's config, the history (``runs/<id>/history.jsonl``) and the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import artfs
from artfs import ArtfsError, ConfigError, CorruptData
from artfs._layout import run_history_key, run_key, run_summary_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# wb_env, local_env: tests/conftest.py


def run_script(code: str, cwd, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
    path = os.path.join(str(cwd), "train.py")
    with open(path, "w") as f:
        f.write(textwrap.dedent(code))
    return subprocess.run([sys.executable, path, *args], cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=120)


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "artfs.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))


# W&B's "track experiments" quickstart and its PyTorch example, reduced to what they call: an
# argparse config, config.update, log per batch and epoch, a summary value set by hand, and no
# finish() (W&B finishes the run when the script ends).
TRAINING_SCRIPT = r'''
import argparse
import random
import wandb_alias as wandb

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--lr", type=float, default=0.01)
parser.add_argument("--batch-size", type=int, default=8)
args = parser.parse_args()

wandb.login()
run = wandb.init(project="mnist", job_type="train", config=args, tags=["baseline"])
wandb.config.update({"lr": 0.02, "arch": "cnn"}, allow_val_change=True)
config = wandb.config
run.define_metric("val_loss", summary="min")
random.seed(0)
best = 0.0
for epoch in range(config.epochs):
    for batch in range(2):
        wandb.log({"train_loss": 1.0 / (epoch + 1) - batch * 0.01})
    acc = 0.5 + epoch * 0.1
    wandb.log({"val_loss": [0.9, 0.4, 0.6][epoch], "val_acc": acc, "epoch": epoch})
    if acc > best:
        best = acc
        wandb.run.summary["best_accuracy"] = best
print(run.id)
'''


def test_a_training_script_with_config_log_and_summary(wb_env, tmp_path):
    (tmp_path / "wandb_alias.py").write_text("from artfs import *\nimport artfs, sys\nsys.modules[__name__] = artfs\n")
    r = run_script(TRAINING_SCRIPT, tmp_path, "--epochs", "3")
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split()[-1]
    api = artfs.Api()
    run = api.run(f"mnist/{run_id}")
    assert run.state == "finished"  # finished at exit
    assert run.config == {"epochs": 3, "lr": 0.02, "batch_size": 8, "arch": "cnn"}
    rows = run.history(pandas=False)
    assert [r["_step"] for r in rows] == list(range(9))
    assert [r["train_loss"] for r in rows if "train_loss" in r] == [1.0, 0.99, 0.5, 0.49, 1 / 3, 1 / 3 - 0.01]
    assert [r["val_acc"] for r in rows if "val_acc" in r] == [0.5, 0.6, 0.7]
    summary = run.summary
    assert summary["val_loss"] == {"min": 0.4}
    assert summary["val_acc"] == 0.7 and summary["epoch"] == 2 and summary["_step"] == 8
    assert summary["best_accuracy"] == 0.7
    assert [r["val_acc"] for r in run.scan_history(keys=["val_acc"])] == [0.5, 0.6, 0.7]
    df = run.history()  # a DataFrame, as W&B's (pandas is installed)
    assert list(df["val_acc"].dropna()) == [0.5, 0.6, 0.7] and list(df["_step"]) == list(range(9))
    # the record holds the config; history and summary are the run's own objects
    store = artfs.Store()
    record = json.loads(store.backend.get(run_key("mnist", run_id)))
    assert record["config"]["arch"] == "cnn"
    assert len(store.backend.get(run_history_key("mnist", run_id)).splitlines()) == 9
    # artfs runs show: the summary; --json: the history too
    out = cli("runs", "show", f"mnist/{run_id}").stdout
    assert "summary:" in out and "best_accuracy" in out and "{'min': 0.4}" in out
    doc = json.loads(cli("runs", "show", f"mnist/{run_id}", "--json").stdout)
    assert doc["summary"]["val_acc"] == 0.7 and len(doc["history"]) == 9 and doc["config"]["lr"] == 0.02


def test_step_and_commit_follow_wandb(local_env):
    """The three spellings W&B's docs call equivalent give the same rows."""
    histories = []
    for style in ("plain", "commit", "step"):
        with artfs.init(project="steps") as run:
            if style == "plain":
                run.log({"train-loss": 0.5, "accuracy": 0.8})
                run.log({"train-loss": 0.4, "accuracy": 0.9})
            elif style == "commit":
                run.log({"train-loss": 0.5}, commit=False)
                run.log({"accuracy": 0.8})
                run.log({"train-loss": 0.4}, commit=False)
                run.log({"accuracy": 0.9})
            else:
                run.log({"train-loss": 0.5}, step=0)
                run.log({"accuracy": 0.8}, step=0)
                run.log({"train-loss": 0.4}, step=1)
                run.log({"accuracy": 0.9}, step=1, commit=True)
        histories.append([{k: v for k, v in r.items() if k in ("_step", "train-loss", "accuracy")}
                          for r in run.history(pandas=False)])
    assert histories[0] == histories[1] == histories[2] == [
        {"train-loss": 0.5, "accuracy": 0.8, "_step": 0}, {"train-loss": 0.4, "accuracy": 0.9, "_step": 1}]


def test_a_step_in_the_past_is_ignored_with_a_warning(local_env, capsys):
    with artfs.init(project="steps") as run:
        run.log({"a": 1}, step=5)
        run.log({"a": 2}, step=3)
        run.log({"a": 3})
        assert run.step == 6
    assert [(r["_step"], r["a"]) for r in run.history(pandas=False)] == [(5, 3)]  # step 5 got a=1, then a=3
    assert "less than the current step 5" in capsys.readouterr().err


def test_define_metric_shapes_the_summary(local_env):
    with artfs.init(project="m") as run:
        artfs.define_metric("loss", summary="min,max")
        run.define_metric("acc", summary="mean")
        run.define_metric("noise", summary="none")
        run.define_metric("val/*", step_metric="epoch")
        for i, (loss, acc) in enumerate([(0.5, 0.1), (0.2, 0.3), (0.7, 0.2)]):
            artfs.log({"loss": loss, "acc": acc, "noise": i, "epoch": i})
        artfs.log({"val/loss": 0.1})
        run.summary["loss"] = "set by hand"
        assert run.summary.loss == "set by hand"
    assert run.summary["acc"] == {"mean": pytest.approx(0.2)}
    assert "noise" not in run.summary
    got = artfs.Api().run(f"m/{run.id}").summary
    assert got["loss"] == "set by hand" and got["acc"] == {"mean": pytest.approx(0.2)}
    last = run.history(pandas=False)[-1]
    assert last["val/loss"] == 0.1 and last["epoch"] == 2  # step_metric filled in
    with pytest.raises(ArtfsError, match="unknown summary"):
        with artfs.init(project="m") as r2:
            r2.define_metric("x", summary="median")


def test_config_behaves_as_wandbs(local_env):
    ns = argparse.Namespace(lr=0.1, layers=[1, 2], **{"--dropout": 0.5})
    with artfs.init(project="c", config=ns) as run:
        c = run.config
        assert artfs.config is not None and artfs.config.lr == 0.1 and c["layers"] == [1, 2] and c.dropout == 0.5
        c.update(types.SimpleNamespace(epochs=3))
        c.momentum = 0.9
        c["momentum"] = 0.9  # the same value again is fine
        with pytest.raises(ConfigError, match="allow_val_change"):
            c.lr = 0.2
        with pytest.raises(ConfigError):
            c.update({"lr": 0.3, "new": 1})
        assert "new" not in c and c.lr == 0.1  # all or nothing
        c.update({"lr": 0.3}, allow_val_change=True)
        c.setdefaults({"lr": 9, "seed": 7})
        c.update({"value": np.float32(0.25), "count": np.int64(4), "shape": np.zeros(2)})
        with pytest.raises(AttributeError):
            c.missing
        assert sorted(c.keys()) == ["count", "dropout", "epochs", "layers", "lr", "momentum", "seed", "shape", "value"]
        assert dict(c.items())["lr"] == 0.3
    got = artfs.Api().run(f"c/{run.id}").config
    assert got == {"lr": 0.3, "layers": [1, 2], "dropout": 0.5, "epochs": 3, "momentum": 0.9, "seed": 7,
                   "value": 0.25, "count": 4, "shape": [0.0, 0.0]}
    # before init (and after finish): a clear error, as W&B's pre-init placeholder
    with pytest.raises(ArtfsError, match="init"):
        artfs.config.lr
    with pytest.raises(ArtfsError, match="init"):
        artfs.summary["x"] = 1
    with pytest.raises(ArtfsError, match="init"):
        artfs.log({"a": 1})
    with pytest.raises(TypeError):
        artfs.init(project="c", config=42)


def test_config_from_a_yaml_file_with_include_and_exclude_keys(local_env, tmp_path):
    (tmp_path / "config.yaml").write_text("lr:\n  value: 0.1\n  desc: learning rate\nepochs: 4\nsecret: x\n")
    with artfs.init(project="c", config="config.yaml", config_exclude_keys=["secret"]) as run:
        assert run.config.as_dict() == {"lr": 0.1, "epochs": 4}


def test_history_is_flushed_while_the_run_lives(local_env, monkeypatch):
    import artfs._history as h

    monkeypatch.setattr(h, "FLUSH_SECONDS", 0.0)
    run = artfs.init(project="f")
    artfs.log({"a": 1})
    store = artfs.Store()
    assert store.backend.get(run_history_key("f", run.id)).count(b"\n") == 1  # before finish
    artfs.log({"a": 2})
    assert store.backend.get(run_history_key("f", run.id)).count(b"\n") == 2
    run.finish()


def test_resuming_a_run_continues_its_history(local_env):
    with artfs.init(project="r", id="resumable") as run:
        run.log({"a": 1})
        run.log({"a": 2})
    with artfs.init(project="r", id="resumable", resume="allow") as run:
        assert run.step == 2 and run.summary["a"] == 2 and run.resumed
        run.log({"a": 3})
    assert [(r["_step"], r["a"]) for r in run.history(pandas=False)] == [(0, 1), (1, 2), (2, 3)]


def test_a_script_inside_artfs_run_puts_its_config_and_summary_in_that_run(local_env, tmp_path):
    code = '''
    import artfs as wandb
    run = wandb.init(config={"lr": 0.5})
    wandb.log({"loss": 0.25})
    wandb.finish()
    '''
    (tmp_path / "t.py").write_text(textwrap.dedent(code))
    os.makedirs(local_env, exist_ok=True)
    r = cli("run", "-p", "joined", "--id", "j1", "--", sys.executable, "t.py", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    run = artfs.Api().run("joined/j1")
    assert run.record.config == {"lr": 0.5}  # artfs run wrote the record, with what the script set
    assert run.summary["loss"] == 0.25 and run.state == "finished"


def test_an_uncaught_exception_fails_the_run_at_exit(local_env, tmp_path):
    r = run_script('''
    import artfs as wandb
    run = wandb.init(project="x", id="crashing")
    wandb.log({"a": 1})
    raise SystemError("boom")
    ''', tmp_path)
    assert r.returncode == 1
    run = artfs.Api().run("x/crashing")
    assert run.state == "failed" and run.summary["a"] == 1


def test_tables_and_images_go_into_artifacts_and_come_back(wb_env, tmp_path):
    pixels = (np.arange(4 * 5 * 3) % 256).astype(np.uint8).reshape(4, 5, 3)
    (tmp_path / "photo.png").write_bytes(artfs.Image(pixels)._png_bytes()[0])
    with artfs.init(project="media") as run:
        table = artfs.Table(columns=["id", "image", "label"])
        table.add_data(0, artfs.Image(pixels, caption="first"), "cat")
        table.add_data(1, artfs.Image("photo.png"), "dog")
        art = artfs.Artifact("predictions", type="predictions")
        art.add(table, "val_predictions")
        art.add(artfs.Image(np.ones((2, 3))), "one_image")
        run.log_artifact(art)
        run.log({"preds": table, "sample": artfs.Image(pixels)})
    got = artfs.Api().artifact("media/predictions:latest")
    assert sorted(f.path for f in got.files())[-2:] == ["one_image.image-file.json", "val_predictions.table.json"]
    assert sum(f.path.startswith("media/images/") for f in got.files()) == 2  # two images (one twice)
    back = got.get("val_predictions")
    assert back.columns == ["id", "image", "label"] and back.get_column("label") == ["cat", "dog"]
    img = back.data[0][1]
    assert isinstance(img, artfs.Image) and (img.width, img.height, img.caption) == (5, 4, "first")
    assert img == artfs.Image(pixels) and back.data[1][1] == artfs.Image(pixels)
    assert got.get("one_image").width == 3 and got.get("nothing") is None
    # logged into history: a Table is a run_table artifact of the run, an Image a file of the run
    row = artfs.Api().run(f"media/{run.id}").summary
    assert row["preds"]["_type"] == "table-file"
    table_art = artfs.Api().artifact(row["preds"]["artifact_path"])
    assert table_art.type == "run_table" and table_art.get("preds").data[0][2] == "cat"
    assert row["sample"]["_type"] == "image-file" and row["sample"]["width"] == 5


def test_log_code_logs_the_code_as_an_artifact_of_type_code(local_env, tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "model.py").write_text("x = 1\n")
    (tmp_path / "requirements.txt").write_text("torch\n")
    (tmp_path / "data.csv").write_text("1,2\n")
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "debug.py").write_text("\n")
    with artfs.init(project="code") as run:
        art = run.log_code(".", name="my-code")
        assert artfs.log_code(".", include_fn=lambda p: p.endswith(".csv"), name="csvs").file_count == 1
    assert art.type == "code" and sorted(f.path for f in art.files()) == ["pkg/model.py", "requirements.txt"]
    logged = artfs.Api().run(f"code/{run.id}").logged_artifacts()
    assert sorted(a.name for a in logged) == ["csvs:v0", "my-code:v0"]
    assert artfs.Api().run(f"code/{run.id}").config["_wandb"] == {"code_path": "code/csvs:v0"}


def test_server_only_features_are_accepted(local_env, capsys):
    assert artfs.login(key="x", relogin=True) is True
    with artfs.init(project="s", settings=artfs.Settings(silent=True)) as run:
        artfs.watch(object(), log="all", log_freq=10)
        run.watch(object())
        artfs.unwatch()
        artfs.alert(title="low acc", text="below 0.5")
        calls = []
        sweep_id = artfs.sweep({"method": "grid"}, project="s")
        artfs.agent(sweep_id, function=lambda: calls.append(1), count=2)
        assert calls == [1, 1]
        run.mark_preempting()
        run.log({"clip": artfs.Video("clip.mp4", fps=4), "grads": artfs.Histogram([1, 2, 3])})
        assert run.history(pandas=False)[-1]["clip"] == {"_type": "video"}  # accepted, not kept
        artfs.termlog("a log line")
        artfs.termwarn("a warning")
        artfs.termerror("an error")
        artfs.termwarn("once", repeat=False)
        artfs.termwarn("once", repeat=False)
        assert artfs.util.make_artifact_name_safe("run-1/ckpt epoch=3") == "run-1_ckpt_epoch_3"
        assert len(artfs.util.make_artifact_name_safe("a" * 200)) == 128
    err = capsys.readouterr().err
    assert "artfs: WARNING alert: low acc: below 0.5" in err and "artfs: a log line" in err
    assert "artfs: ERROR an error" in err and err.count("once") == 1


def test_a_damaged_summary_is_corrupt_data(local_env):
    with artfs.init(project="d") as run:
        run.log({"a": 1})
    artfs.Store().backend.put(run_summary_key("d", run.id), b"{not json")
    with pytest.raises(CorruptData, match="summary.json"):
        artfs.Api().run(f"d/{run.id}").summary
    r = cli("runs", "show", f"d/{run.id}")
    assert r.returncode == 5 and "summary.json" in r.stderr
