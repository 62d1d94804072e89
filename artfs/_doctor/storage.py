"""Where a mount keeps bytes and where it reads them from: the cache directory (its space and
its file system's ``user.*`` attributes), the staging directory, the store and its credentials."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from typing import Any, Callable

from .._errors import ArtfsError, NotFound, PermissionDenied, StoreUnavailable
from .._units import human_size
from .check import FAIL, OK, WARN, Check, who

LOW_SPACE = 1 << 30  # below this much free space: a warning


# -- local directories ---------------------------------------------------------------------------------
def _existing(path: str) -> str:
    d = os.path.abspath(path)
    while not os.path.exists(d):
        d = os.path.dirname(d)
    return d


def _fs_type(path: str) -> str:
    """The file system type of the mount holding ``path`` (the longest mount point above it)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError), open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            mnt = parts[1].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, parts[2]
    return kind


def _directory(name: str, path: str, what: str, *, unwritable: str, env: str) -> Check:
    base = _existing(path)
    shown = path if base == os.path.abspath(path) else f"{path} (not created yet)"
    if not (os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK)):
        return Check(name, unwritable, f"{shown}: {base} is not writable by {who()}",
                     f"choose a writable {what} (${env})")
    free = shutil.disk_usage(base).free
    detail = f"{shown}: {human_size(free)} free ({_fs_type(base)})"
    if free < LOW_SPACE:
        return Check(name, WARN, f"{detail}: little space left", f"free space there, or choose another {what} (${env})")
    return Check(name, OK, detail)


def cache(cache_dir: str | None = None) -> Check:
    from .._cache import default_cache_dir

    return _directory("cache", cache_dir or default_cache_dir(), "cache directory (--cache-dir)", unwritable=FAIL,
                      env="ARTFS_CACHE_DIR")


def staging() -> Check:
    from .._draft.drafts import default_staging_root

    c = _directory("staging", default_staging_root(), "staging directory", unwritable=WARN, env="ARTFS_STAGING_DIR")
    if c.verdict == WARN and "not writable" in c.detail:
        return Check(c.check, WARN, f"{c.detail}: drafts cannot be written (--read-only mounts work)", c.fix)
    return c


def cache_xattrs(cache_dir: str | None = None) -> Check:
    from .._cache import default_cache_dir

    base = _existing(cache_dir or default_cache_dir())
    kind = _fs_type(base)
    fix = "put the cache on a file system with user attributes (ext4, xfs, btrfs, tmpfs): --cache-dir, $ARTFS_CACHE_DIR"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".artfs-doctor-", dir=base)
    except OSError as e:
        return Check("cache-xattrs", WARN, f"cannot try in {base}: {e.strerror}", fix)
    try:
        os.setxattr(fd, "user.artfs.doctor", b"1")
        return Check("cache-xattrs", OK, f"user.* attributes work in {base} ({kind})")
    except OSError as e:
        return Check("cache-xattrs", WARN, f"no user.* attributes in {base} ({kind}: {e.strerror}): the mount hashes "
                                           "a cached blob again on each open", fix)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


# -- the store -----------------------------------------------------------------------------------------
#: botocore's names of where credentials came from (Credentials.method)
_SOURCES = {
    "env": "environment variables (AWS_ACCESS_KEY_ID)",
    "shared-credentials-file": "the shared credentials file (~/.aws/credentials)",
    "config-file": "the AWS config file (~/.aws/config)",
    "assume-role": "an assumed role (~/.aws/config)",
    "assume-role-with-web-identity": "a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE)",
    "sso": "AWS SSO (~/.aws/config)",
    "custom-process": "a credential_process (~/.aws/config)",
    "container-role": "the container's role (ECS/EKS)",
    "iam-role": "the instance's role (EC2 instance metadata)",
    "boto-config": "the boto2 config file",
    "explicit": "explicit",
}


def _bounded(fn: Callable[[], Check], timeout: float, name: str, what: str) -> Check:
    """``fn()`` in a thread; a fail when it has not answered after ``timeout`` (the thread is left)."""
    out: list[Check] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as e:
            out.append(Check(name, FAIL, f"{what}: {type(e).__name__}: {e}"))

    t = threading.Thread(target=run, name=f"artfs-doctor-{name}", daemon=True)
    t.start()
    t.join(timeout)
    if out:
        return out[0]
    return Check(name, FAIL, f"{what}: no answer within {timeout:g} s",
                 "check the network and the endpoint (ARTFS_S3_ENDPOINT, AWS_ENDPOINT_URL)")


def credentials(url: str, *, timeout: float) -> Check:
    name = "credentials"
    if "://" not in url or url.startswith("file://"):
        return Check(name, OK, "none needed: a local directory (its file modes decide who may read it)")
    if url.startswith(("http://", "https://")):
        return Check(name, OK, "none: an HTTPS store is public and read-only")
    from ..backends.s3 import no_sign_request_from_env

    if no_sign_request_from_env():
        return Check(name, OK, "none: unsigned requests (--no-sign-request, ARTFS_NO_SIGN_REQUEST)")

    def find() -> Check:
        import boto3

        creds = boto3.session.Session().get_credentials()
        profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE")
        if creds is None:
            return Check(name, WARN, "no AWS credentials found: only projects open to anyone can be read",
                         "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials; "
                         "or --no-sign-request for public projects")
        source = _SOURCES.get(str(creds.method), str(creds.method))
        return Check(name, OK, f"from {source}" + (f", profile {profile}" if profile else ""))

    return _bounded(find, timeout, name, "looking for AWS credentials")


def store(url: str | None = None, *, timeout: float = 5.0) -> Check:
    """Whether the store answers a listing within ``timeout`` seconds."""
    from ..backends import default_store_url, open_backend

    name = "store"
    url = url or default_store_url()
    local = "://" not in url or url.startswith("file://")
    if local:
        path = os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
        if not os.path.exists(path):
            return Check(name, WARN, f"no store yet at {path}",
                         "`artfs put` or a writable `artfs mount` creates it; or name one: --store, $ARTFS_STORE")
        if not os.path.isdir(path):
            return Check(name, FAIL, f"{path} is not a directory", "name a store directory: --store, $ARTFS_STORE")

    def ask() -> Check:
        if url.startswith("s3://"):
            from ..backends.s3 import S3Backend

            backend: Any = S3Backend(url, timeout=timeout)
        elif url.startswith(("http://", "https://")):
            from ..backends.http import HTTPBackend

            backend = HTTPBackend(url, timeout=timeout)
        else:
            backend = open_backend(url)
        def said(e: Exception) -> str:
            return str(e) if url in str(e) else f"{url}: {e}"

        try:
            projects = backend.list_dirs("")
            n = len(projects)
            return Check(name, OK, f"{url}: answered ({n} project{'s' if n != 1 else ''} listed)")
        except NotFound as e:
            return Check(name, FAIL, said(e), "check the store's name (--store, $ARTFS_STORE)")
        except PermissionDenied as e:
            return Check(name, FAIL, f"refused: {said(e)}", "check the credentials (see the credentials check) "
                                                          "and the store's access policy")
        except StoreUnavailable as e:
            return Check(name, FAIL, f"unreachable: {said(e)}",
                         "check the network and the endpoint (ARTFS_S3_ENDPOINT, AWS_ENDPOINT_URL); a mount starts "
                         "anyway but serves only what is cached")
        except (ArtfsError, ValueError) as e:
            return Check(name, FAIL, said(e), "check the store URL (--store, $ARTFS_STORE)")
        finally:
            with contextlib.suppress(Exception):
                backend.close()

    return _bounded(ask, timeout + 2.0, name, f"{url}: listing")
