"""``artfs run --wandb -- CMD`` (issue 24): CMD's own ``import wandb`` gets artfs, nothing installed.

The integration test trains PyTorch Lightning's ``WandbLogger(log_model="all")`` on CPU (a tiny
model, two epochs) under ``artfs run --wandb`` and checks the checkpoint versions in the store.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

import artfs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def store_env(local_url, tmp_path, monkeypatch):
    os.makedirs(local_url, exist_ok=True)
    monkeypatch.setenv("ARTFS_STORE", local_url)
    monkeypatch.setenv("ARTFS_CACHE_DIR", str(tmp_path / "cache"))
    for v in ("ARTFS_RUN_ID", "ARTFS_PROJECT", "WANDB_PROJECT", "ARTFS_WANDB"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.chdir(tmp_path)
    return local_url


def artfs_run(*args: str, cwd, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "artfs.cli", "run", *args], cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


PROBE = r'''
import importlib.metadata, json, os, sys
import wandb
from wandb.sdk.lib import RunDisabled
from wandb.wandb_run import Run
run = wandb.init(config={"lr": 0.5})
assert isinstance(run, Run) and not isinstance(run, RunDisabled) and wandb.run is run
wandb.config.update({"batch": 8}, allow_val_change=True)
wandb.log({"loss": 0.25})
wandb.require("service")
print(json.dumps({"file": wandb.__file__, "version": importlib.metadata.version("wandb"),
                  "artfs": getattr(wandb, "__artfs__", False), "run": run.path}))
'''


def test_import_wandb_gets_artfs_only_under_artfs_run(store_env, tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    r = artfs_run("--wandb", "-p", "shim", "--id", "s1", "--", sys.executable, "probe.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["artfs"] is True and doc["run"] == "shim/s1" and doc["version"] >= "0.12.10"
    assert not os.path.exists(doc["file"])  # the shim was a temporary directory, removed after CMD
    run = artfs.Api().run("shim/s1")
    assert run.config == {"lr": 0.5, "batch": 8} and run.summary["loss"] == 0.25
    # ARTFS_WANDB=1 does the same; without either, `import wandb` is whatever is installed
    r = artfs_run("-p", "shim", "--", sys.executable, "probe.py", cwd=tmp_path, env={"ARTFS_WANDB": "1"})
    assert r.returncode == 0, r.stderr
    r = artfs_run("-p", "shim", "--", sys.executable, "-c", "import wandb; print(getattr(wandb, '__artfs__', 0))",
                  cwd=tmp_path)
    assert (r.returncode != 0 and "No module named 'wandb'" in r.stderr) or r.stdout.strip() == "0"


def test_a_real_wandb_package_is_left_alone(store_env, tmp_path):
    """A ``wandb`` the user installed is shadowed for CMD only, never changed."""
    real = tmp_path / "site" / "wandb"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = True\n")
    before = (real / "__init__.py").read_text()
    code = "import wandb; print(getattr(wandb, '__artfs__', False))"
    r = artfs_run("--wandb", "--", sys.executable, "-c", code, cwd=tmp_path, env={"PYTHONPATH": f"{ROOT}:{real.parent}"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"
    assert sorted(os.listdir(real)) == ["__init__.py"] and (real / "__init__.py").read_text() == before
    r = subprocess.run([sys.executable, "-c", "import wandb; print(wandb.REAL)"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(real.parent)))
    assert r.stdout.strip() == "True"


LIGHTNING = r'''
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger


class Tiny(L.LightningModule):
    def __init__(self, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, i):
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


torch.manual_seed(0)
x = torch.randn(64, 4)
dl = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)
logger = WandbLogger(log_model="all")
ckpt = ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=2)
trainer = L.Trainer(max_epochs=2, logger=logger, callbacks=[ckpt], accelerator="cpu", enable_progress_bar=False,
                    enable_model_summary=False, log_every_n_steps=1)
trainer.fit(Tiny(), dl, dl)
print("BEST", ckpt.best_model_path.rsplit("/", 1)[-1])
'''


@pytest.mark.timeout(600)
def test_lightning_wandb_logger_logs_checkpoints_under_artfs_run(store_env, tmp_path):
    if importlib.util.find_spec("lightning") is None or importlib.util.find_spec("torch") is None:
        pytest.skip("needs lightning and torch (the test extra installs them)")
    (tmp_path / "train.py").write_text(textwrap.dedent(LIGHTNING))
    r = artfs_run("--wandb", "-p", "pl", "--id", "plrun", "--", sys.executable, "train.py", cwd=tmp_path,
                  timeout=540)
    assert r.returncode == 0, r.stderr[-3000:]
    best_file = r.stdout.split("BEST ")[-1].strip()
    api = artfs.Api()
    versions = api.artifact_versions("model", "pl/model-plrun")
    assert [v.version for v in versions] == ["v1", "v0"]  # one checkpoint per epoch
    best = api.artifact("pl/model-plrun:best")
    assert best.metadata["original_filename"] == best_file
    assert api.artifact("pl/model-plrun:latest").version == "v1"
    assert [f.path for f in best.files()] == ["model.ckpt"]
    ckpt = os.path.join(best.download(root=str(tmp_path / "best")), "model.ckpt")
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["epoch"] in (0, 1) and "state_dict" in state
    run = api.run("pl/plrun")
    assert run.state == "finished" and run.config == {"lr": 0.1}
    assert {"train_loss", "val_loss", "epoch", "trainer/global_step"} <= set(run.summary)
    assert [a.name for a in run.logged_artifacts()] == ["model-plrun:v0", "model-plrun:v1"]
    rows = run.history(pandas=False)
    assert all("trainer/global_step" in row for row in rows)  # define_metric("*", step_metric=...)


TRANSFORMERS = r'''
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

torch.manual_seed(0)
config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                    max_position_embeddings=16, num_labels=2)


class Data(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        ids = torch.tensor([(i * 3 + j) % 32 for j in range(8)])
        return {"input_ids": ids, "attention_mask": torch.ones(8, dtype=torch.long), "labels": torch.tensor(i % 2)}


args = TrainingArguments(output_dir="out", num_train_epochs=2, per_device_train_batch_size=8, save_strategy="epoch",
                         eval_strategy="epoch", logging_steps=1, report_to=["wandb"], use_cpu=True,
                         disable_tqdm=True, run_name="tiny-bert")
Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=Data(), eval_dataset=Data()).train()
'''


@pytest.mark.timeout(600)
def test_transformers_wandb_callback_logs_checkpoints_under_artfs_run(store_env, tmp_path):
    if any(importlib.util.find_spec(m) is None for m in ("transformers", "accelerate", "torch")):
        pytest.skip("needs transformers, accelerate and torch (the test extra installs them)")
    (tmp_path / "train.py").write_text(TRANSFORMERS)
    r = artfs_run("--wandb", "-p", "hf", "--id", "hfrun", "--", sys.executable, "train.py", cwd=tmp_path,
                  env={"WANDB_LOG_MODEL": "checkpoint"}, timeout=540)
    assert r.returncode == 0, r.stderr[-3000:]
    api = artfs.Api()
    versions = {v.version: sorted(v.aliases) for v in api.artifact_versions("model", "hf/model-hfrun")}
    assert versions == {"v3": ["final_model", "latest"], "v2": ["checkpoint_global_step_4", "epoch_2.0"],
                        "v1": ["checkpoint_global_step_2", "epoch_1.0"], "v0": ["base_model"]}
    ckpt = api.artifact("hf/model-hfrun:epoch_2.0")
    assert "model.safetensors" in {f.path for f in ckpt.files()}
    run = api.run("hf/hfrun")
    assert run.state == "finished" and run.config["num_train_epochs"] == 2 and run.config["hidden_size"] == 8
    assert run.summary["train/global_step"] == 4 and "eval/loss" in run.summary
