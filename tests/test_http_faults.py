"""The HTTPS store under network faults (issue 14, item 4): the same budget rule as S3.

A store published by ``python -m http.server`` with the fault proxy (tests/faultproxy.py) in front:
503s and bodies cut mid-way are retried until ``ARTFS_HTTP_TIMEOUT`` is spent, not three times.
"""

from __future__ import annotations

import os
import time

import pytest

from artfs import Artifact, Cache, StoreUnavailable, Store

from faultproxy import FaultProxy
from refservers import StaticDirServer


@pytest.fixture
def published(tmp_path):
    """(URL of the proxy in front of a published store, the proxy, the files of proj/data:v0)."""
    root = str(tmp_path / "store")
    files = {f"f{i}.bin": os.urandom(300_000 + i) for i in range(6)}
    art = Artifact("data", type="dataset")
    for rel, data in files.items():
        with art.new_file(rel, mode="wb") as f:
            f.write(data)
    Store(root, cache=Cache(str(tmp_path / "cache-w"))).log_artifact(art, project="proj")
    with StaticDirServer(root) as srv, FaultProxy(srv.url, seed=4) as proxy:
        yield proxy, files


def reader(proxy, tmp_path, monkeypatch, budget: str) -> Store:
    monkeypatch.setenv("ARTFS_HTTP_TIMEOUT", budget)
    return Store(proxy.url, cache=Cache(str(tmp_path / "cache-r")))


def test_more_than_three_failures_are_retried_within_the_budget(published, tmp_path, monkeypatch):
    proxy, files = published
    store = reader(proxy, tmp_path, monkeypatch, "20")
    proxy.configure(script={1: "error", 2: "error", 3: "error", 4: "error"})
    assert store.versions("proj", "data") == [0]
    assert [s.action for s in proxy.log[:5]] == ["error"] * 4 + ["pass"]


def test_bodies_cut_mid_way_are_fetched_again(published, tmp_path, monkeypatch):
    proxy, files = published
    store = reader(proxy, tmp_path, monkeypatch, "20")
    proxy.configure(reset_rate=0.2, error_rate=0.1)
    out = tmp_path / "out"
    store.artifact("proj/data:v0").download(str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert any(s.action == "reset" and s.method == "GET" for s in proxy.log)


def test_retries_spread_over_the_whole_budget(published, tmp_path, monkeypatch):
    """A store that answers 503 to everything: attempts go on until less than a second of the
    budget is left (a backoff that grows past the budget's scale gave up with half of it left: a
    cut body then failed a whole download in CI), and the request ends within the budget."""
    proxy, files = published
    budget = 6.0
    store = reader(proxy, tmp_path, monkeypatch, str(budget))
    proxy.configure(error_from=1)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="ARTFS_HTTP_TIMEOUT"):
        store.versions("proj", "data")
    took = time.monotonic() - start
    tries = [s.at for s in proxy.log if s.action == "error"]
    # the last attempt starts within a second and a backoff (a tenth of the budget) of the end
    assert tries[-1] - start >= budget - 1.0 - budget / 10, (len(tries), tries[-1] - start)
    assert len(tries) >= 8, len(tries)  # backoff capped at 0.6 s: many attempts, not four
    assert took <= budget + 2.0, took  # and never past the budget (plus a loaded machine's slack)


def test_spent_budget_is_store_unavailable(published, tmp_path, monkeypatch):
    proxy, files = published
    store = reader(proxy, tmp_path, monkeypatch, "3")
    proxy.configure(error_from=1)
    with pytest.raises(StoreUnavailable, match="ARTFS_HTTP_TIMEOUT"):
        store.versions("proj", "data")
    proxy.clear()
    proxy.configure(stall_from=proxy.requests + 1)
    with pytest.raises(StoreUnavailable):
        store.versions("proj", "data")
