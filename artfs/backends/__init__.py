"""Store backends: one small key/value interface, three implementations.

Keys are ``/``-separated strings relative to the store's root (already validated by the caller).
Every backend guarantees:

* ``put(key, data, exclusive=True)`` creates the key only if it does not exist, atomically, and
  raises :class:`AlreadyExists` otherwise (``O_EXCL``/``link`` on disk, ``If-None-Match: *`` on S3).
  This is the only synchronisation artfs needs between writers on many machines.
* A reader never sees half an object: writes go to a temporary name and are renamed (disk) or are
  single PUTs / completed multipart uploads (S3).
* Failures come out as :class:`NotFound`, :class:`AlreadyExists`, :class:`StoreUnavailable`
  (after the backend's own bounded retries) or :class:`PermissionDenied`, never as
  library-specific exceptions.

The contract test suite in :mod:`artfs.testing` runs against every backend.
"""

from __future__ import annotations

import os

from .base import Backend as Backend  # the interface, re-exported: callers import it from here
from .base import ObjectInfo as ObjectInfo  # noqa: F401
from .base import pwrite_all as pwrite_all  # noqa: F401
from .local import LocalBackend


def default_store_url() -> str:
    env = os.environ.get("ARTFS_STORE")
    if env:
        return env
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "artfs", "store")


def open_backend(url: str | None = None, *, s3_timeout: float | None = None) -> Backend:
    """A backend for ``url``: a local path or ``file://``, ``s3://bucket[/prefix]``, ``http(s)://``.

    ``s3_timeout``: the time budget of each request to an S3 store (None: ``$ARTFS_S3_TIMEOUT``,
    else 15 s); the mount daemon passes its ``--timeout`` here."""
    url = url or default_store_url()
    # s3 and http are imported on use: http imports httpx, s3 is not needed by local stores
    # (startup time of `artfs --version` and of local-only use)
    if url.startswith("s3://"):
        from .s3 import S3Backend

        return S3Backend(url, timeout=s3_timeout)
    if url.startswith(("http://", "https://")):
        from .http import HTTPBackend

        return HTTPBackend(url)
    if url.startswith("file://"):
        url = url[len("file://") :]
    return LocalBackend(url)
