"""What a mount needs and what makes it fast, each checked: ``artfs doctor``, and the one line a
mount prints about the fast paths it runs without or the cause it failed of.

Every check is a function returning a :class:`Check` (``check``, ``verdict``, ``detail``, ``fix``):

    fuse-device       /dev/fuse exists and this user may read and write it (``os.access``)
    fusermount3       installed, and setuid root (what mounts for a user who is not root)
    mount-permission  someone may call mount(2): CAP_SYS_ADMIN here, or a setuid fusermount3 that
                      gets it (not under ``no_new_privs``, not without it in the bounding set)
    user-allow-other  ``user_allow_other`` in /etc/fuse.conf (only ``--allow-other``/``--allow-group``)
    kernel            the running Linux (passthrough needs >= 6.9)
    pyfuse3           importable; patched (``pyfuse3.kernel_features()``) or stock
    libfuse           the libfuse that pyfuse3 has loaded (``fuse_pkgversion()``; passthrough >= 3.16)
    cached-listings   the kernel keeps directory listings (patched pyfuse3)
    readdir-names     opendir skipped, every listing cached (pyfuse3's readdir-inode patch)
    passthrough       reads of cached files served by the kernel (patched pyfuse3 on libfuse >= 3.16,
                      Linux >= 6.9, CAP_SYS_ADMIN)
    cap-sys-admin     CapEff of /proc/self/status (passthrough's ``backing_open`` needs it)
    mount-daemon      the ``artfsd`` package is installed (found, not imported: the library never
                      imports the daemon)
    cache             the cache directory: writable (or creatable) and its free space
    cache-xattrs      ``user.*`` attributes on the cache's file system (the verification record of
                      blobs: without it the mount hashes a blob again on each open)
    staging           the drafts' staging directory: writable and its free space
    store             the store: it answers a listing within the time budget
    credentials       which credentials a request to the store would carry (S3: boto3's source)

Verdicts: ``ok``; ``warn``: a mount works, with less (a fast path off, no ``allow_other``,
little space, no store yet); ``fail``: a mount cannot work, or cannot read the store. A mount
works when no check fails (:func:`works`), which is ``artfs doctor``'s exit code.

Invariants: a check changes nothing on the machine (the attribute probe writes one temporary
file in the cache directory, or its nearest existing parent, and removes it); it never prints a
secret (credentials are named by their source, never shown); each is bounded in time (the store
is asked from a thread that is abandoned, not waited for, once the budget is spent).

The mount reuses these: ``artfs mount`` refuses up front what :func:`mount_blockers` finds, the
daemon names a failed mount's cause with :func:`mount_failure_cause` (libfuse's own line from the
log, else the blockers), and says once which fast paths are off and why (:func:`mount_note`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import re
import shutil
import stat
import tempfile
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

from ._errors import ArtfsError, NotFound, PermissionDenied, StoreUnavailable
from ._units import human_size

OK, WARN, FAIL = "ok", "warn", "fail"
FUSE_DEVICE = "/dev/fuse"
FUSE_CONF = "/etc/fuse.conf"
CAP_SYS_ADMIN = 21
PASSTHROUGH_KERNEL = (6, 9)
PASSTHROUGH_LIBFUSE = (3, 16)
LOW_SPACE = 1 << 30  # below this much free space: a warning
BUILD_FUSE = "run `artfs build-fuse`"
DOCTOR = "run `artfs doctor`"
CAP_FIX = "mount as root, or give the daemon CAP_SYS_ADMIN, e.g. systemd's AmbientCapabilities=CAP_SYS_ADMIN"
FAST_PATHS = {"passthrough": "passthrough", "cached-listings": "cached listings", "readdir-names": "readdir names"}


@dataclass(frozen=True)
class Check:
    """One verdict: what was checked, what was found (one line) and what to do about it."""

    check: str
    verdict: str
    detail: str
    fix: str | None = None

    def doc(self) -> dict[str, Any]:
        return asdict(self)


def works(checks: Iterable[Check]) -> bool:
    """Whether a mount would work: no check failed."""
    return all(c.verdict != FAIL for c in checks)


# -- the FUSE device, fusermount3, the right to mount ------------------------------------------------
def _who() -> str:
    uid = os.getuid()
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def _owner(st: os.stat_result) -> str:
    import grp
    import pwd

    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{stat.filemode(st.st_mode)} {user}:{group}"


def fuse_device(path: str = FUSE_DEVICE) -> Check:
    name = "fuse-device"
    try:
        st = os.stat(path)
    except OSError as e:
        return Check(name, FAIL, f"cannot open {path}: {e.strerror}",
                     "load the fuse module (as root: modprobe fuse); in a container, pass the device "
                     "(docker run --device /dev/fuse)")
    if not stat.S_ISCHR(st.st_mode):
        return Check(name, FAIL, f"{path} is not a character device ({_owner(st)})",
                     f"as root: rm {path}; modprobe fuse (or mknod {path} c 10 229)")
    if os.access(path, os.R_OK | os.W_OK):
        return Check(name, OK, f"{path} ({_owner(st)}) is readable and writable by {_who()}")
    return Check(name, FAIL, f"cannot open {path}: Permission denied ({_owner(st)}; {_who()})",
                 f"as root: chmod 0666 {path} (the usual mode; or a group of this user: chgrp GROUP {path}; "
                 f"chmod 0660 {path}); in a container: docker run --device /dev/fuse")


def _fusermount() -> tuple[str | None, bool]:
    """The fusermount3 on $PATH (or in /bin, /usr/bin) and whether it is setuid root."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount3", path="/usr/bin:/bin")
    if tool is None:
        return None, False
    try:
        st = os.stat(tool)
    except OSError:
        return tool, False
    return tool, st.st_uid == 0 and bool(st.st_mode & stat.S_ISUID)


def fusermount() -> Check:
    name = "fusermount3"
    tool, setuid = _fusermount()
    root = os.geteuid() == 0
    if tool is None:
        fix = "install fuse3 (apt install fuse3; dnf install fuse3; apk add fuse3)"
        if root:
            return Check(name, WARN, "fusermount3 is not installed (root mounts without it; "
                                     "`artfs umount` then uses umount)", fix)
        return Check(name, FAIL, "fusermount3 is not installed: a user who is not root cannot mount", fix)
    if setuid:
        return Check(name, OK, f"{tool} is setuid root")
    if root:
        return Check(name, OK, f"{tool} (not setuid root: not needed as root)")
    return Check(name, FAIL, f"{tool} is not setuid root: a user who is not root cannot mount",
                 f"as root: chown root {tool}; chmod u+s {tool}")


def _status() -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii", errors="replace") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def _has_cap(field: str, cap: int = CAP_SYS_ADMIN) -> bool:
    try:
        return bool(int(_status().get(field, "0"), 16) >> cap & 1)
    except ValueError:
        return False


def has_cap_sys_admin() -> bool:
    """Whether this process holds CAP_SYS_ADMIN (CapEff; a mount daemon exec'd from it keeps it)."""
    return _has_cap("CapEff")


def mount_permission() -> Check:
    name = "mount-permission"
    if has_cap_sys_admin():
        return Check(name, OK, "CAP_SYS_ADMIN: the daemon mounts by itself")
    tool, setuid = _fusermount()
    if tool is None or not setuid:
        return Check(name, FAIL, "no CAP_SYS_ADMIN and no setuid fusermount3: nothing here may mount",
                     "install fuse3's setuid fusermount3, or mount as root")
    if _status().get("NoNewPrivs", "0") != "0":
        return Check(name, FAIL, "no_new_privs is set: setuid fusermount3 gets no privileges",
                     "start artfs outside the sandbox that sets no_new_privs (systemd: NoNewPrivileges=no)")
    if not _has_cap("CapBnd"):
        return Check(name, FAIL, "CAP_SYS_ADMIN is not in the bounding set: even setuid fusermount3 "
                                 "cannot mount (a container without it?)",
                     "run the container with --cap-add SYS_ADMIN --device /dev/fuse, or mount on the host")
    return Check(name, OK, f"through {tool} (setuid root)")


def allow_other() -> Check:
    name = "user-allow-other"
    try:
        with open(FUSE_CONF, encoding="utf-8", errors="replace") as f:
            present = any(line.split("#", 1)[0].strip() == "user_allow_other" for line in f)
    except OSError:
        present = False
    if present:
        return Check(name, OK, f"user_allow_other is set in {FUSE_CONF}: --allow-other and --allow-group work")
    if os.geteuid() == 0:
        return Check(name, OK, f"not set in {FUSE_CONF}, not needed as root (--allow-other works)")
    return Check(name, WARN, f"no user_allow_other in {FUSE_CONF}: --allow-other and --allow-group are refused "
                             "(a mount for this user alone works)",
                 f"as root: echo user_allow_other >> {FUSE_CONF}")


# -- the kernel, pyfuse3, libfuse ----------------------------------------------------------------------
def _version(s: str) -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", s)
    return tuple(int(x) for x in m.groups() if x is not None) if m else ()


def kernel() -> Check:
    release = platform.release()
    v = _version(release)
    if v >= PASSTHROUGH_KERNEL:
        return Check("kernel", OK, f"Linux {release} (passthrough needs >= 6.9)")
    return Check("kernel", WARN, f"Linux {release}: no passthrough (it needs >= 6.9)",
                 "a kernel >= 6.9 lets reads of cached files skip the daemon")


@dataclass(frozen=True)
class Pyfuse3:
    """The installed pyfuse3 as this process loads it."""

    version: str | None = None
    path: str | None = None
    features: dict[str, bool] | None = None  # pyfuse3.kernel_features(); None: stock pyfuse3
    libfuse: str | None = None  # the version of the libfuse it loaded
    libfuse_path: str | None = None
    error: str | None = None  # why it cannot be imported


def _loaded_libfuse() -> tuple[str | None, str | None]:
    """(version, path) of the libfuse3 mapped into this process (pyfuse3 loaded it)."""
    path = None
    with contextlib.suppress(OSError), open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and re.search(r"/libfuse3\.so[.\d]*$", parts[5].strip()):
                path = parts[5].strip()
                break
    if path is None:
        return None, None
    try:
        fn = ctypes.CDLL(path).fuse_pkgversion
        fn.restype = ctypes.c_char_p
        raw = fn()
        version = raw.decode() if raw else None
    except (OSError, AttributeError):
        version = None
    return version, os.path.realpath(path)


@functools.lru_cache(maxsize=1)
def pyfuse3_info() -> Pyfuse3:
    try:
        import pyfuse3
    except Exception as e:  # ImportError, or a build against a libfuse that is gone (OSError)
        return Pyfuse3(error=f"{type(e).__name__}: {e}")
    from importlib import metadata

    try:
        version: str | None = metadata.version("pyfuse3")
    except metadata.PackageNotFoundError:
        version = None
    probe = getattr(pyfuse3, "kernel_features", None)
    features = {str(k): bool(v) for k, v in dict(probe()).items()} if callable(probe) else None
    libfuse, libfuse_path = _loaded_libfuse()
    return Pyfuse3(version, os.path.dirname(pyfuse3.__file__ or "") or None, features, libfuse, libfuse_path)


def pyfuse3_check() -> Check:
    info = pyfuse3_info()
    if info.error:
        return Check("pyfuse3", FAIL, f"pyfuse3 cannot be imported ({info.error})",
                     f"{BUILD_FUSE}, or pip install pyfuse3 (it needs libfuse3-dev, pkg-config and a C compiler)")
    where = f"pyfuse3 {info.version or '(unknown version)'} at {info.path}"
    if info.features is None:
        return Check("pyfuse3", WARN, f"stock {where}: passthrough, cached listings and readdir names are off",
                     BUILD_FUSE)
    return Check("pyfuse3", OK, f"patched {where} (kernel_features: "
                               f"{', '.join(k for k, v in sorted(info.features.items()) if v) or 'none'})")


def libfuse() -> Check:
    info = pyfuse3_info()
    if info.error:
        return Check("libfuse", FAIL, "unknown: pyfuse3 cannot be imported", BUILD_FUSE)
    if info.libfuse is None:
        return Check("libfuse", WARN, "cannot tell which libfuse pyfuse3 loaded", BUILD_FUSE)
    where = f"libfuse {info.libfuse} ({info.libfuse_path})"
    if _version(info.libfuse) < PASSTHROUGH_LIBFUSE:
        return Check("libfuse", WARN, f"{where}: no passthrough (it needs >= 3.16)",
                     f"{BUILD_FUSE} (it builds libfuse 3.17 when the system's is older)")
    return Check("libfuse", OK, where)


def fast_paths() -> dict[str, Check]:
    """Whether each fast path can be on for a mount started from this process, and why not."""
    info = pyfuse3_info()
    feats = info.features
    out: dict[str, Check] = {}
    if info.error or feats is None:
        why = "pyfuse3 cannot be imported" if info.error else "stock pyfuse3"
        return {k: Check(k, WARN, f"off: {why}", BUILD_FUSE) for k in FAST_PATHS}
    out["cached-listings"] = (Check("cached-listings", OK, "on: the kernel keeps a listing after one readdir")
                              if feats.get("cache_readdir") else
                              Check("cached-listings", WARN, "off: pyfuse3 without the kernel-cache patch", BUILD_FUSE))
    out["readdir-names"] = (Check("readdir-names", OK, "on: no opendir, every directory's listing cached")
                            if feats.get("readdir_inode") else
                            Check("readdir-names", WARN, "off: pyfuse3 without the readdir-inode patch", BUILD_FUSE))
    release = platform.release()
    if not feats.get("passthrough"):
        out["passthrough"] = Check("passthrough", WARN, f"off: pyfuse3 built against libfuse {info.libfuse or '< 3.16'} "
                                                        "(needs >= 3.16)", BUILD_FUSE)
    elif _version(release) < PASSTHROUGH_KERNEL:
        out["passthrough"] = Check("passthrough", WARN, f"off: Linux {release} (needs >= 6.9)", "a kernel >= 6.9")
    elif not has_cap_sys_admin():
        out["passthrough"] = Check("passthrough", WARN, "off: no CAP_SYS_ADMIN",
                                   CAP_FIX)
    elif os.environ.get("ARTFS_PASSTHROUGH", "1") == "0":
        out["passthrough"] = Check("passthrough", WARN, "off: turned off (ARTFS_PASSTHROUGH=0)",
                                   "unset ARTFS_PASSTHROUGH")
    else:
        out["passthrough"] = Check("passthrough", OK, "on: reads of cached files go from the kernel to the cache file")
    return out


def cap_sys_admin() -> Check:
    if has_cap_sys_admin():
        return Check("cap-sys-admin", OK, "CAP_SYS_ADMIN is effective (passthrough can register backing files)")
    return Check("cap-sys-admin", WARN, "no CAP_SYS_ADMIN: passthrough is off",
                 CAP_FIX)


def mount_daemon() -> Check:
    import importlib.util

    spec = importlib.util.find_spec("artfsd")
    if spec is None:
        return Check("mount-daemon", FAIL, "the mount daemon (the artfsd package) is not installed",
                     "reinstall artfs (pip install artfs): the artfsd package comes with it")
    where = os.path.dirname(spec.origin) if spec.origin else "(namespace)"
    return Check("mount-daemon", OK, f"artfsd at {where}")


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
        return Check(name, unwritable, f"{shown}: {base} is not writable by {_who()}",
                     f"choose a writable {what} (${env})")
    free = shutil.disk_usage(base).free
    detail = f"{shown}: {human_size(free)} free ({_fs_type(base)})"
    if free < LOW_SPACE:
        return Check(name, WARN, f"{detail}: little space left", f"free space there, or choose another {what} (${env})")
    return Check(name, OK, detail)


def cache(cache_dir: str | None = None) -> Check:
    from ._cache import default_cache_dir

    return _directory("cache", cache_dir or default_cache_dir(), "cache directory (--cache-dir)", unwritable=FAIL,
                      env="ARTFS_CACHE_DIR")


def staging() -> Check:
    from ._draft.drafts import default_staging_root

    c = _directory("staging", default_staging_root(), "staging directory", unwritable=WARN, env="ARTFS_STAGING_DIR")
    if c.verdict == WARN and "not writable" in c.detail:
        return Check(c.check, WARN, f"{c.detail}: drafts cannot be written (--read-only mounts work)", c.fix)
    return c


def cache_xattrs(cache_dir: str | None = None) -> Check:
    from ._cache import default_cache_dir

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
    from .backends.s3 import no_sign_request_from_env

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
    from .backends import default_store_url, open_backend

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
            from .backends.s3 import S3Backend

            backend: Any = S3Backend(url, timeout=timeout)
        elif url.startswith(("http://", "https://")):
            from .backends.http import HTTPBackend

            backend = HTTPBackend(url, timeout=timeout)
        else:
            backend = open_backend(url)
        def said(e: Exception) -> str:
            return str(e) if url in str(e) else f"{url}: {e}"

        try:
            projects = backend.list_dirs("")
            return Check(name, OK, f"{url}: answered ({len(projects)} project{'s' if len(projects) != 1 else ''} listed)")
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


# -- all of it, and what the mount takes from it -------------------------------------------------------
def run_all(*, store_url: str | None = None, cache_dir: str | None = None, timeout: float = 5.0) -> list[Check]:
    """Every check, in the order ``artfs doctor`` prints them."""
    from .backends import default_store_url

    url = store_url or default_store_url()
    paths = fast_paths()
    return [
        fuse_device(), fusermount(), mount_permission(), allow_other(), kernel(), pyfuse3_check(), libfuse(),
        paths["cached-listings"], paths["readdir-names"], paths["passthrough"], cap_sys_admin(), mount_daemon(),
        cache(cache_dir), cache_xattrs(cache_dir), staging(), credentials(url, timeout=timeout),
        store(url, timeout=timeout),
    ]


def mount_blockers() -> list[Check]:
    """The failed checks that make any mount impossible from this process (cheap: no store, no import)."""
    return [c for c in (fuse_device(), fusermount(), mount_permission()) if c.verdict == FAIL]


def check_can_mount() -> None:
    """Raise :class:`ArtfsError` naming the first reason a mount cannot work, and the doctor."""
    blockers = mount_blockers()
    if blockers:
        raise ArtfsError(f"{blockers[0].detail}; {DOCTOR}")


_LIBFUSE_LINE = re.compile(r"^(fuse|fusermount3?): (.+)$")


def mount_failure_cause(log_path: str | None = None, offset: int = 0) -> str | None:
    """Why a mount failed: libfuse's (or fusermount3's) last complaint in the log from ``offset``
    on, else the first blocker the checks find; None when neither says."""
    if log_path:
        with contextlib.suppress(OSError), open(log_path, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            said = [m for m in (_LIBFUSE_LINE.match(line.strip()) for line in f) if m]
            if said:
                tool, text = said[-1].groups()
                return text if tool == "fuse" else f"{tool}: {text}"
    blockers = mount_blockers()
    return blockers[0].detail if blockers else None


def mount_note(got: dict[str, bool], why: dict[str, str]) -> str | None:
    """One line for the mount's stderr: which fast paths are off and why (None: all on).

    ``got`` holds the fast paths the daemon asked for (names of :data:`FAST_PATHS`; those turned
    off on purpose left out) and whether it got each; ``why`` the daemon's reasons. A fast path
    is off when the daemon did not get it, or when the checks here say it cannot work (the daemon
    may only learn that at the first open); the reason given is the checks' when they have one.
    """
    predicted = fast_paths()
    groups: dict[str, list[str]] = {}
    for key, on in got.items():
        p = predicted.get(key)
        if on and (p is None or p.verdict == OK):
            continue
        if p is not None and p.verdict != OK:
            reason = p.detail.removeprefix("off: ") + (f" ({p.fix})" if p.fix else "")
        else:
            reason = why.get(key) or "the kernel did not offer it"
        groups.setdefault(reason, []).append(FAST_PATHS.get(key, key))
    if not groups:
        return None
    parts = []
    for reason, names in groups.items():
        said = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        parts.append(f"{said} off: {reason}")
    return "artfs: " + "; ".join(parts)
