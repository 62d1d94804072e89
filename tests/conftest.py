"""Shared fixtures. Keep each section small; add new sections below the existing ones."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

# Make the checkout importable even when the package is not installed (``pip install -e .``).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from artfs.testing import CONFLICTING_ENV, S3Server  # noqa: E402

# --------------------------------------------------------------------------------------------
# S3: one moto server (or $ARTFS_TEST_S3_ENDPOINT) per session, one fresh bucket per test
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint URL of a running S3 server; AWS_* env vars point at it for the session."""
    server = S3Server()
    with server as endpoint:
        env = server.env()
        saved = {k: os.environ.get(k) for k in (*env, *CONFLICTING_ENV)}
        for k in CONFLICTING_ENV:
            os.environ.pop(k, None)
        os.environ.update(env)
        try:
            yield endpoint
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def s3_url(s3_server):
    """``s3://<fresh bucket>/store``; the bucket is emptied and removed afterwards."""
    from artfs.backends.s3 import S3Backend

    bucket = f"artfs-test-{uuid.uuid4().hex[:16]}"
    b = S3Backend(f"s3://{bucket}")
    b.ensure_bucket()
    yield f"s3://{bucket}/store"
    # matters for a real endpoint ($ARTFS_TEST_S3_ENDPOINT); best effort
    try:
        for info in list(b.list("")):
            b.delete(info.key)
        b.client.delete_bucket(Bucket=bucket)
    except Exception:
        pass
    b.close()


# --------------------------------------------------------------------------------------------
# Local stores
# --------------------------------------------------------------------------------------------


@pytest.fixture
def local_url(tmp_path):
    """A local store root (a path, as users pass it) inside the test's tmp dir."""
    return str(tmp_path / "store")


# --------------------------------------------------------------------------------------------
# Every writable backend: tests that take ``backend_url`` run once per backend
# --------------------------------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def backend_url(request):
    """A store URL for each backend; the S3 server only starts if an S3 case runs."""
    return request.getfixturevalue(f"{request.param}_url")


def _wandb_env(url, tmp_path, monkeypatch):
    """The environment of a W&B-style script: ``url`` the default store, a cache of the test's,
    no run or project inherited, the test's directory as the working directory; the current run
    (if the script left one) is finished afterwards."""
    import artfs

    monkeypatch.setenv("ARTFS_STORE", url)
    monkeypatch.setenv("ARTFS_CACHE_DIR", str(tmp_path / "cache"))
    for v in ("ARTFS_RUN_ID", "ARTFS_PROJECT", "WANDB_PROJECT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.chdir(tmp_path)
    yield url
    artfs.finish()


@pytest.fixture
def wb_env(backend_url, tmp_path, monkeypatch):
    """A W&B-style script's environment on every backend (see :func:`_wandb_env`)."""
    yield from _wandb_env(backend_url, tmp_path, monkeypatch)


@pytest.fixture
def local_env(local_url, tmp_path, monkeypatch):
    """The same on a local store only."""
    yield from _wandb_env(local_url, tmp_path, monkeypatch)
