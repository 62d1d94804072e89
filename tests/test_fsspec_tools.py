"""The data tools users have, reading (and writing) ``artfs://`` paths through fsspec.

pandas, pyarrow.dataset, a Dask dataframe over a glob with worker processes, Hugging Face
``datasets``, DuckDB and Polars, on real stores (local and S3 on moto), each compared with the
bytes and rows that were logged; lineage of a pandas read in a process of its own, as ``artfs
lineage`` shows it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

fsspec = pytest.importorskip("fsspec")
pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from artfs import Artifact, Cache, Store  # noqa: E402

N_PARTS = 3


def frame(i: int, version: int = 0) -> Any:
    return pd.DataFrame({"x": list(range(i * 100, i * 100 + 100)), "part": [f"p{i}"] * 100,
                         "version": [version] * 100})


def log_tables(store: Store, tmp: Path, version: int = 0) -> None:
    src = tmp / f"tables-{version}"
    (src / "parts").mkdir(parents=True)
    for i in range(N_PARTS):
        frame(i, version).to_parquet(src / "parts" / f"part-{i}.parquet", index=False)
    frame(0, version).to_csv(src / "labels.csv", index=False)
    art = Artifact("tables", type="dataset")
    art.add_dir(str(src))
    store.log_artifact(art, project="cycling")


def expected(version: int = 0) -> Any:
    return pd.concat([frame(i, version) for i in range(N_PARTS)], ignore_index=True)


@pytest.fixture(autouse=True)
def _named_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process reads are filed under a named run (see tests/test_fsspec.py); lineage itself is
    tested in processes of their own below."""
    monkeypatch.setenv("ARTFS_RUN_ID", "cycling/fsspec-tools")


@pytest.fixture
def tables(backend_url: str, tmp_path: Path) -> tuple[Store, dict[str, Any]]:
    store = Store(backend_url, cache=Cache(str(tmp_path / "writer-cache")))
    log_tables(store, tmp_path)
    return store, {"store": backend_url, "cache_dir": str(tmp_path / "cache"),
                   "staging_dir": str(tmp_path / "staging")}


def _sorted(df: Any) -> Any:
    return df.sort_values("x").reset_index(drop=True)[["x", "part", "version"]]


def test_pandas_read_csv_and_read_parquet(tables: tuple[Store, dict[str, Any]], tmp_path: Path) -> None:
    _, opts = tables
    df = pd.read_csv("artfs://cycling/tables/latest/labels.csv", storage_options=opts)
    pd.testing.assert_frame_equal(df, frame(0))
    one = pd.read_parquet("artfs://cycling/tables:v0/parts/part-1.parquet", storage_options=opts)
    pd.testing.assert_frame_equal(one, frame(1))
    whole = pd.read_parquet("artfs://cycling/tables/latest/parts", storage_options=opts)
    pd.testing.assert_frame_equal(_sorted(whole), expected())
    with fsspec.open("artfs://cycling/tables/v0/labels.csv", "rb", **opts) as f:
        assert f.read() == frame(0).to_csv(index=False).encode()


def test_pyarrow_dataset_over_a_directory_of_parquet_files(tables: tuple[Store, dict[str, Any]]) -> None:
    import pyarrow.dataset as ds

    _, opts = tables
    fs = fsspec.filesystem("artfs", **opts)
    dataset = ds.dataset("cycling/tables/latest/parts", filesystem=fs, format="parquet")
    assert sorted(os.path.basename(f) for f in dataset.files) == [f"part-{i}.parquet" for i in range(N_PARTS)]
    table = dataset.to_table(columns=["x", "part"], filter=ds.field("x") >= 100)
    assert table.num_rows == 200
    assert sorted(table.column("x").to_pylist()) == list(range(100, 300))
    pd.testing.assert_frame_equal(_sorted(dataset.to_table().to_pandas()), expected())


def test_dask_reads_a_glob_with_worker_processes_and_one_pinned_version(
        tables: tuple[Store, dict[str, Any]], tmp_path: Path) -> None:
    dd = pytest.importorskip("dask.dataframe")
    import dask

    store, opts = tables
    ddf = dd.read_parquet("artfs://cycling/tables/latest/parts/*.parquet", storage_options=opts)
    assert ddf.npartitions == N_PARTS
    log_tables(store, tmp_path, version=1)  # a new latest while the job is planned: the job keeps v0
    with dask.config.set(scheduler="processes", num_workers=2):
        got = ddf.compute()
    assert _sorted(got).to_dict("list") == expected(0).to_dict("list")  # (dask's string dtype is its own)
    csv = dd.read_csv("artfs://cycling/tables/v1/labels.csv", storage_options=opts).compute(scheduler="processes",
                                                                                         num_workers=2)
    assert csv.reset_index(drop=True).to_dict("list") == frame(0, version=1).to_dict("list")


def test_hugging_face_datasets_load_parquet(tables: tuple[Store, dict[str, Any]], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # (not HF_HUB_OFFLINE: it refuses every URL that is not a local path, artfs:// included; the
    # packaged "parquet" builder needs no download)
    for k, v in {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
        monkeypatch.setenv(k, v)
    datasets = pytest.importorskip("datasets")
    _, opts = tables
    d = datasets.load_dataset("parquet", data_files="artfs://cycling/tables/latest/parts/*.parquet",
                              storage_options=opts, split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert d.num_rows == N_PARTS * 100
    pd.testing.assert_frame_equal(_sorted(d.to_pandas()), expected())


def test_duckdb_and_polars_through_fsspec(tables: tuple[Store, dict[str, Any]]) -> None:
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    _, opts = tables
    fs = fsspec.filesystem("artfs", **opts)
    con = duckdb.connect()
    con.register_filesystem(fs)
    rows = con.sql("select count(*), sum(x) from read_parquet('artfs://cycling/tables/latest/parts/*.parquet')")
    assert rows.fetchall() == [(N_PARTS * 100, sum(range(N_PARTS * 100)))]
    with fs.open("cycling/tables/latest/parts/part-2.parquet") as f:
        got = pl.read_parquet(f)
    assert got["x"].to_list() == list(range(200, 300))


def test_pandas_writes_a_new_version_in_a_transaction(tables: tuple[Store, dict[str, Any]]) -> None:
    store, opts = tables
    fs = fsspec.filesystem("artfs", **opts)  # the instance pandas gets for the same storage options
    new = frame(7, version=2)
    with fs.transaction:
        new.to_parquet("artfs://cycling/tables/draft/parts/part-7.parquet", storage_options=opts, index=False)
        new.to_csv("artfs://cycling/tables/draft/labels.csv", storage_options=opts, index=False)
    [result] = fs.committed
    assert (result.version, result.created) == (1, True)
    back = pd.read_parquet("artfs://cycling/tables/v1/parts", storage_options=opts)
    pd.testing.assert_frame_equal(_sorted(back), _sorted(pd.concat([expected(), new], ignore_index=True)))
    pd.testing.assert_frame_equal(pd.read_csv("artfs://cycling/tables/latest/labels.csv", storage_options=opts), new)


def _env(tmp: Path, store: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
    env.update(ARTFS_STORE=store, ARTFS_CACHE_DIR=str(tmp / "proc-cache"), HOME=str(tmp / "home"), **extra)
    return env


def _artfs(env: dict[str, str], *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "artfs.cli", *args], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_lineage_of_a_pandas_read_shows_in_artfs_lineage(tables: tuple[Store, dict[str, Any]],
                                                         tmp_path: Path) -> None:
    store, _ = tables
    env = _env(tmp_path, store.url)
    lister = ("import fsspec; fs = fsspec.filesystem('artfs'); fs.find('cycling/tables/latest'); "
              "fs.info('cycling/tables/v0/labels.csv'); fs.ls('cycling')")
    subprocess.run([sys.executable, "-c", lister], env=env, check=True, timeout=120, cwd=tmp_path)
    assert json.loads(_artfs(env, "runs", "ls", "cycling", "--json")) == []  # listing records nothing
    quiet = ("import pandas as pd; pd.read_csv('artfs://cycling/tables/latest/labels.csv', "
             "storage_options={'lineage': False})")
    subprocess.run([sys.executable, "-c", quiet], env=env, check=True, timeout=120, cwd=tmp_path)
    assert json.loads(_artfs(env, "runs", "ls", "cycling", "--json")) == []  # lineage=False: as --no-lineage
    reader = "import pandas as pd; print(len(pd.read_csv('artfs://cycling/tables/latest/labels.csv')))"
    p = subprocess.run([sys.executable, "-c", reader], env=env, capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "100", p.stderr
    [run] = json.loads(_artfs(env, "runs", "ls", "cycling", "--json"))
    shown = json.loads(_artfs(env, "runs", "show", f"cycling/{run['id']}", "--json"))
    assert (shown["source"], shown["state"]) == ("fsspec", "finished")
    assert [u["artifact"] for u in shown["used"]] == ["cycling/tables:v0"]
    tree = _artfs(env, "lineage", "cycling/tables:v0")
    assert f"used by run cycling/{run['id']}" in tree
    # under `artfs run` the read belongs to that run
    _artfs(env, "run", "-p", "cycling", "--id", "reader01", "--", sys.executable, "-c", reader)
    assert "used by run cycling/reader01" in _artfs(env, "lineage", "cycling/tables:v0")


def test_a_forked_child_leaves_the_run_to_the_process_that_created_it(tables: tuple[Store, dict[str, Any]],
                                                                      tmp_path: Path) -> None:
    store, _ = tables
    env = _env(tmp_path, store.url)
    code = ("import os, sys, fsspec, artfs\n"
            "fs = fsspec.filesystem('artfs')\n"
            "fs.cat_file('cycling/tables/v0/labels.csv')\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    sys.exit(0)  # a normal exit of the child: its exit handlers run\n"
            "os.waitpid(pid, 0)\n"
            "[run] = artfs.Api().runs('cycling')\n"
            "print(run.state)\n")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["running"]  # the child did not finish its parent's run
    [run] = json.loads(_artfs(env, "runs", "ls", "cycling", "--json"))
    assert run["state"] == "finished"  # the parent did, at its exit


def test_multiprocessing_workers_reads_are_in_the_lineage_and_the_process_sees_its_own(
        tables: tuple[Store, dict[str, Any]], tmp_path: Path) -> None:
    """Edges are written in the background: a DataLoader-like worker (``multiprocessing``, which
    ends with ``os._exit``, skipping atexit) still leaves its edge, and a process that reads its
    own lineage right after an open sees it."""
    store, _ = tables
    log_tables(store, tmp_path, version=1)
    env = _env(tmp_path, store.url)
    code = ("import multiprocessing, fsspec, artfs\n"
            "def work(path):\n"
            "    fsspec.filesystem('artfs').cat_file(path)\n"
            "if __name__ == '__main__':\n"
            "    ctx = multiprocessing.get_context('fork')\n"
            "    ps = [ctx.Process(target=work, args=(p,)) for p in\n"
            "          ('cycling/tables/v0/labels.csv', 'cycling/tables/v0/parts/part-1.parquet')]\n"
            "    for p in ps: p.start()\n"
            "    for p in ps: p.join()\n"
            "    assert [p.exitcode for p in ps] == [0, 0]\n"
            "    with fsspec.open('artfs://cycling/tables/v1/labels.csv') as f:\n"
            "        f.read()\n"
            "    [run] = artfs.Api().runs('cycling')  # this process's own edge, not yet written, waited for\n"
            "    print(sorted(a.name for a in run.used_artifacts()))\n")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[0] == "['tables:v0', 'tables:v1']"
    tree = _artfs(env, "lineage", "cycling/tables:v0")
    [run] = json.loads(_artfs(env, "runs", "ls", "cycling", "--json"))  # the workers and their parent: one run
    assert f"used by run cycling/{run['id']}" in tree


def test_a_read_inside_artfs_init_belongs_to_that_run(tables: tuple[Store, dict[str, Any]], tmp_path: Path) -> None:
    store, _ = tables
    env = _env(tmp_path, store.url)
    code = ("import artfs, pandas as pd\n"
            "with artfs.init(project='cycling', id='train07', job_type='train'):\n"
            "    pd.read_parquet('artfs://cycling/tables:latest/parts/part-0.parquet')\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120, cwd=tmp_path)
    [run] = json.loads(_artfs(env, "runs", "ls", "cycling", "--json"))  # no automatic run beside it
    assert run["id"] == "train07"
    shown = json.loads(_artfs(env, "runs", "show", "cycling/train07", "--json"))
    assert [u["artifact"] for u in shown["used"]] == ["cycling/tables:v0"]
