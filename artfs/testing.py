"""Helpers for testing code that uses artfs (shipped in the package, like ``trio.testing``).

* :class:`S3Server` runs a throw-away S3 endpoint on 127.0.0.1 (moto's server mode, in a child
  process) for the duration of a ``with`` block, or uses ``$ARTFS_TEST_S3_ENDPOINT`` if set
  (e.g. a MinIO started by CI).
* :func:`s3_env` gives the environment a child process needs to talk to that endpoint.
* :func:`free_port` finds a TCP port nobody listens on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import IO

#: set this to an S3 endpoint URL to run the tests against it instead of a moto server
ENV_ENDPOINT = "ARTFS_TEST_S3_ENDPOINT"

#: variables that would make boto3 ignore or override what :func:`s3_env` sets
CONFLICTING_ENV = ("ARTFS_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def s3_env(
    endpoint: str, access_key: str = "testing", secret_key: str = "testing"
) -> dict[str, str]:
    """Environment variables that point boto3 (and so artfs) at ``endpoint`` with test credentials.

    Use as ``env = {**os.environ, **s3_env(url)}`` and drop :data:`CONFLICTING_ENV` from it.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


#: Runs moto's S3 server with its conditional writes made atomic. moto checks ``If-None-Match``
#: (or ``If-Match``) and then stores the object in separate steps while other requests run in
#: other threads, so two racing exclusive creates can both succeed and the second silently
#: replaces the first -- which S3 never does, and which artfs's version numbering relies on (two
#: writers would both be told they created vN). A lock around each conditional write restores
#: S3's behaviour; other requests stay concurrent.
_MOTO_MAIN = """
import sys, threading
from moto.s3 import responses
from moto.server import main

_conditional = threading.Lock()

def _atomic(handler):
    def wrapped(self, *args, **kwargs):
        if self.headers.get("If-None-Match") or self.headers.get("If-Match"):
            with _conditional:
                return handler(self, *args, **kwargs)
        return handler(self, *args, **kwargs)
    return wrapped

responses.S3Response.put_object = _atomic(responses.S3Response.put_object)
responses.S3Response._key_response_post = _atomic(responses.S3Response._key_response_post)
main(sys.argv[1:])
"""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            r.read()
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


class S3Server:
    """``with S3Server() as endpoint:`` — an S3 endpoint URL on 127.0.0.1.

    Starts moto's server (``python -m moto.server``, its conditional writes made atomic as on S3:
    see :data:`_MOTO_MAIN`) on a free port and waits until it answers; on exit terminates
    exactly that child process (by its own PID). If ``$ARTFS_TEST_S3_ENDPOINT`` is set (and
    ``use_env`` is true) that endpoint is used and nothing is started; its credentials come from
    ``$ARTFS_TEST_S3_ACCESS_KEY``/``$ARTFS_TEST_S3_SECRET_KEY`` (default ``testing``).

    ``server.env()`` is :func:`s3_env` for this endpoint and its credentials.
    """

    def __init__(
        self, *, port: int | None = None, startup_timeout: float = 30.0, use_env: bool = True
    ) -> None:
        self.port = port
        self.startup_timeout = startup_timeout
        self.use_env = use_env
        self.endpoint: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.access_key = "testing"
        self.secret_key = "testing"

    def env(self) -> dict[str, str]:
        assert self.endpoint, "not started"
        return s3_env(self.endpoint, self.access_key, self.secret_key)

    def __enter__(self) -> str:
        external = os.environ.get(ENV_ENDPOINT) if self.use_env else None
        if external:
            self.endpoint = external.rstrip("/")
            self.access_key = os.environ.get("ARTFS_TEST_S3_ACCESS_KEY", "testing")
            self.secret_key = os.environ.get("ARTFS_TEST_S3_SECRET_KEY", "testing")
            return self.endpoint
        last: Exception | None = None
        for _ in range(3):  # a free port can be taken between free_port() and the bind
            try:
                self.endpoint = self._start(self.port or free_port())
                return self.endpoint
            except RuntimeError as e:
                last = e
                self._stop()
                if self.port:
                    break
        raise RuntimeError(f"could not start moto's S3 server: {last}")

    def _start(self, port: int) -> str:
        self._log = tempfile.TemporaryFile()
        env = dict(os.environ)
        env["MOTO_PORT"] = str(port)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _MOTO_MAIN, "-p", str(port), "-H", "127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"moto.server exited with {code}: {self._output()}")
            if _answers(endpoint + "/moto-api/"):
                return endpoint
            time.sleep(0.1)
        raise RuntimeError(
            f"moto.server did not answer within {self.startup_timeout} s: {self._output()}"
        )

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        tail: bytes = self._log.read()[-2000:]
        return tail.decode("utf-8", "replace").strip()

    def _stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.terminate()  # by its own PID: never touches anything else
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __exit__(self, *exc: object) -> None:
        self._stop()
