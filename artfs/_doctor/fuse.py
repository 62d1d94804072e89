"""The FUSE side of a mount: the device, fusermount3, the right to mount, ``allow_other``, the
kernel, pyfuse3 and the libfuse it loaded, and which fast paths they allow."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import re
import shutil
import stat
from dataclasses import dataclass

from .check import BUILD_FUSE, FAIL, OK, WARN, Check, version, who

FUSE_DEVICE = "/dev/fuse"
FUSE_CONF = "/etc/fuse.conf"
CAP_SYS_ADMIN = 21
PASSTHROUGH_KERNEL = (6, 9)
PASSTHROUGH_LIBFUSE = (3, 16)
CAP_FIX = "mount as root, or give the daemon CAP_SYS_ADMIN, e.g. systemd's AmbientCapabilities=CAP_SYS_ADMIN"
FAST_PATHS = {"passthrough": "passthrough", "cached-listings": "cached listings", "readdir-names": "readdir names"}


# -- the FUSE device, fusermount3, the right to mount ------------------------------------------------
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
        return Check(name, OK, f"{path} ({_owner(st)}) is readable and writable by {who()}")
    return Check(name, FAIL, f"cannot open {path}: Permission denied ({_owner(st)}; {who()})",
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
def kernel() -> Check:
    release = platform.release()
    v = version(release)
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
    if version(info.libfuse) < PASSTHROUGH_LIBFUSE:
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
        built = info.libfuse or "< 3.16"
        out["passthrough"] = Check("passthrough", WARN, f"off: pyfuse3 built against libfuse {built} "
                                                        "(needs >= 3.16)", BUILD_FUSE)
    elif version(release) < PASSTHROUGH_KERNEL:
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
