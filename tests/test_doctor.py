"""``artfs doctor`` and what the mount takes from it (artfs/_doctor.py, artfs/cli/doctor.py).

Everything runs the real command on this machine: its /dev/fuse, its kernel, the installed
pyfuse3 and libfuse. Broken on purpose, for real: another uid (65534, through ``setpriv``, running
artfs installed where it may, tests/installed.py) for which /dev/fuse (mode 0600 root here)
cannot be opened; root without CAP_SYS_ADMIN in its bounding set (as in a container), where even
setuid fusermount3 cannot mount; artfs as ``pip install`` gives it (stock pyfuse3); S3 and HTTPS
stores on a closed port or one that never answers.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import pytest

from artfs import _doctor
from artfs.testing import CONFLICTING_ENV, free_port, s3_env
from artfsd.testing import _fusermount, is_mounted

from installed import Installed, devfuse_mode, installed, normal_host
from refservers import StaticDirServer

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
CHECKS = ["fuse-device", "fusermount3", "mount-permission", "user-allow-other", "kernel", "pyfuse3", "libfuse",
          "cached-listings", "readdir-names", "passthrough", "cap-sys-admin", "mount-daemon", "cache",
          "cache-xattrs", "staging", "credentials", "store"]
NO_CAP_SYS_ADMIN = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ARTFS_", "XDG_", "AWS_")) and k not in CONFLICTING_ENV}
    env.update(HOME=str(tmp / "home"), ARTFS_CACHE_DIR=str(tmp / "cache"), ARTFS_STAGING_DIR=str(tmp / "staging"),
               AWS_EC2_METADATA_DISABLED="true")
    env.update(extra)
    return env


def artfs(env: dict[str, str], *args: str, prefix: tuple[str, ...] = (), python: str = sys.executable,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, python, "-m", "artfs.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd="/")


def doctor(env: dict[str, str], *args: str, **kw: Any) -> tuple[dict[str, dict[str, Any]], int]:
    p = artfs(env, "doctor", "--json", *args, **kw)
    assert p.returncode in (0, 1), p.stderr
    doc = json.loads(p.stdout)
    assert [c["check"] for c in doc] == CHECKS
    return {c["check"]: c for c in doc}, p.returncode


def well_formed(by: dict[str, dict[str, Any]], code: int) -> None:
    """What every report holds: a verdict, a one-line detail, a fix wherever it is not ok, and
    the exit code that follows from the verdicts."""
    for c in by.values():
        assert set(c) == {"check", "verdict", "detail", "fix"}
        assert c["verdict"] in ("ok", "warn", "fail"), c
        assert c["detail"] and "\n" not in c["detail"], c
        if c["verdict"] != "ok":
            assert c["fix"], c
    assert code == (1 if any(c["verdict"] == "fail" for c in by.values()) else 0)


def _cap_sys_admin() -> bool:
    with open("/proc/self/status") as f:
        eff = next(line.split()[1] for line in f if line.startswith("CapEff:"))
    return bool(int(eff, 16) >> 21 & 1)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A local store with one project (made by the real command)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    env = _env(tmp_path)
    p = artfs(env, "--store", str(tmp_path / "store"), "put", "-n", "proj/ds", str(data))
    assert p.returncode == 0, p.stderr
    return str(tmp_path / "store")


# -- this machine ---------------------------------------------------------------------------------
def test_doctor_reports_every_check_of_this_machine(tmp_path: Path, store: str) -> None:
    env = _env(tmp_path, ARTFS_STORE=store, ARTFS_CACHE_DIR=str(tmp_path / "fresh-cache"))
    by, code = doctor(env)
    well_formed(by, code)
    fuse_ok = os.path.exists("/dev/fuse") and os.access("/dev/fuse", os.R_OK | os.W_OK)
    assert by["fuse-device"]["verdict"] == ("ok" if fuse_ok else "fail")
    assert platform.release() in by["kernel"]["detail"]
    assert by["cap-sys-admin"]["verdict"] == ("ok" if _cap_sys_admin() else "warn")
    import pyfuse3

    version = metadata.version("pyfuse3")
    assert version in by["pyfuse3"]["detail"]
    if hasattr(pyfuse3, "kernel_features"):
        assert by["pyfuse3"]["verdict"] == "ok" and "patched" in by["pyfuse3"]["detail"]
        assert by["cached-listings"]["verdict"] == "ok"
    else:
        assert "stock" in by["pyfuse3"]["detail"] and "artfs build-fuse" in by["pyfuse3"]["fix"]
    assert by["libfuse"]["detail"].startswith("libfuse 3.")
    assert by["mount-daemon"]["verdict"] == "ok"
    assert str(tmp_path / "fresh-cache") in by["cache"]["detail"] and "free" in by["cache"]["detail"]
    assert str(tmp_path / "staging") in by["staging"]["detail"]
    assert by["store"]["verdict"] == "ok" and "1 project listed" in by["store"]["detail"]
    assert by["credentials"]["verdict"] == "ok"
    assert not (tmp_path / "fresh-cache").exists()  # the doctor looked, and created nothing

    text = artfs(env, "doctor")
    assert text.returncode == code
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "VERDICT", "DETAIL"]
    assert [line.split()[0] for line in lines[1:1 + len(CHECKS)]] == CHECKS
    assert lines[-1].startswith("a mount would work" if code == 0 else "a mount would not work")


def test_a_missing_store_is_a_warning_and_a_file_a_failure(tmp_path: Path) -> None:
    by, code = doctor(_env(tmp_path), "--store", str(tmp_path / "nothing-yet"))
    assert by["store"]["verdict"] == "warn" and "no store yet" in by["store"]["detail"]
    assert "artfs put" in by["store"]["fix"]
    (tmp_path / "afile").write_text("x")
    by, code = doctor(_env(tmp_path), "--store", str(tmp_path / "afile"))
    assert by["store"]["verdict"] == "fail" and code == 1


# -- S3: the store's answer, bounded, and where the credentials come from ------------------------------
def test_a_store_that_is_down_fails_within_the_budget(tmp_path: Path) -> None:
    secret = "doctor-test-secret-4f1c9"
    env = _env(tmp_path, ARTFS_STORE="s3://down-bucket/store",
               **s3_env(f"http://127.0.0.1:{free_port()}", access_key="AKIADOCTORTEST", secret_key=secret))
    p = artfs(env, "doctor", "--json", "--timeout", "2", timeout=60)  # a hang fails the test here
    by = {c["check"]: c for c in json.loads(p.stdout)}
    assert by["store"]["verdict"] == "fail", by["store"]
    assert "unreachable" in by["store"]["detail"] or "no answer" in by["store"]["detail"]
    assert by["store"]["fix"]
    assert by["credentials"]["verdict"] == "ok" and "environment variables" in by["credentials"]["detail"]
    assert p.returncode == 1
    assert secret not in p.stdout + p.stderr
    text = artfs(env, "doctor", "--timeout", "2", timeout=60)
    assert secret not in text.stdout + text.stderr and text.returncode == 1


def test_a_store_that_never_answers_fails_within_the_budget(tmp_path: Path) -> None:
    """A server that takes the connection and never answers: the budget ends the wait, not a hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the kernel's backlog; nothing ever reads them
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = _env(tmp_path, ARTFS_STORE="s3://silent-bucket/store", **s3_env(endpoint))
        p = artfs(env, "doctor", "--json", "--timeout", "2", timeout=60)
        by = {c["check"]: c for c in json.loads(p.stdout)}
        assert by["store"]["verdict"] == "fail" and p.returncode == 1, by["store"]
        p = artfs(_env(tmp_path), "doctor", "--json", "--timeout", "2", "--store", endpoint + "/store", timeout=60)
        by = {c["check"]: c for c in json.loads(p.stdout)}
        assert by["store"]["verdict"] == "fail" and p.returncode == 1, by["store"]


def test_https_store_answers_and_needs_no_credentials(tmp_path: Path, store: str) -> None:
    with StaticDirServer(store) as srv:
        by, code = doctor(_env(tmp_path), "--store", srv.url)
    assert by["store"]["verdict"] == "ok" and "1 project listed" in by["store"]["detail"], by["store"]
    assert by["credentials"] == {"check": "credentials", "verdict": "ok", "fix": None,
                                 "detail": "none: an HTTPS store is public and read-only"}


def test_s3_store_answers_and_the_credential_source_is_named(tmp_path: Path, s3_url: str) -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    env = _env(tmp_path, ARTFS_STORE=s3_url, **s3_env(endpoint))
    p = artfs(env, "put", "-n", "proj/ds", str(ROOT / "docs"))
    assert p.returncode == 0, p.stderr
    by, _ = doctor(env)
    assert by["store"]["verdict"] == "ok" and "1 project listed" in by["store"]["detail"]
    assert "environment variables" in by["credentials"]["detail"]

    # the shared credentials file, and a profile in it
    creds = tmp_path / "aws-credentials"
    creds.write_text("[artfs-doc]\naws_access_key_id = testing\naws_secret_access_key = file-secret-77\n")
    keyless = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    p = artfs({**keyless, "AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_PROFILE": "artfs-doc"}, "doctor", "--json")
    by = {c["check"]: c for c in json.loads(p.stdout)}
    assert "shared credentials file" in by["credentials"]["detail"] and "artfs-doc" in by["credentials"]["detail"]
    assert by["store"]["verdict"] == "ok"
    assert "file-secret-77" not in p.stdout + p.stderr

    # none at all: a warning (public projects stay readable); unsigned: none needed
    none = {**keyless, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    by, _ = doctor(none)
    assert by["credentials"]["verdict"] == "warn" and "no AWS credentials" in by["credentials"]["detail"]
    assert "--no-sign-request" in by["credentials"]["fix"]
    by, _ = doctor({**none, "ARTFS_NO_SIGN_REQUEST": "1"})
    assert by["credentials"]["verdict"] == "ok" and "unsigned" in by["credentials"]["detail"]


# -- another uid, for which /dev/fuse cannot be opened ----------------------------------------------
@dataclass
class OtherUid:
    """Runs commands as uid 65534 from artfs installed where every uid may run it (tests/installed.py:
    the checkout may sit under a directory other users cannot enter)."""

    inst: Installed
    home: Path

    def run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        env = {"HOME": str(self.home), "PATH": f"{self.inst.bin}:/usr/bin:/bin",
               "ARTFS_CACHE_DIR": str(self.home / "cache"), "ARTFS_STAGING_DIR": str(self.home / "staging")}
        return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env", "-i",
                               *[f"{k}={v}" for k, v in env.items()], *cmd],
                              capture_output=True, text=True, timeout=120, cwd="/")


@pytest.fixture
def nobody() -> Iterator[OtherUid]:
    """uid 65534 with a home of its own (under /tmp, removed after the test), running the installed artfs."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run commands as another uid")
    inst = installed()
    root = Path(tempfile.mkdtemp(prefix="artfs-doctor-", dir="/tmp"))
    try:
        root.chmod(0o755)
        (root / "home").mkdir()
        os.chown(root / "home", NOBODY, NOBODY)
        yield OtherUid(inst, root / "home")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def other_uid(nobody: OtherUid) -> Iterator[OtherUid]:
    """:func:`nobody` while /dev/fuse is closed to other users (0600, as in many containers; under
    the host lock, so no other test opens it meanwhile)."""
    with devfuse_mode(0o600):
        yield nobody


def test_doctor_as_a_uid_that_cannot_open_dev_fuse_fails_and_names_the_fix(other_uid: OtherUid) -> None:
    p = other_uid.run("artfs", "doctor", "--json")
    assert p.returncode == 1, p.stderr
    by = {c["check"]: c for c in json.loads(p.stdout)}
    assert list(by) == CHECKS
    well_formed(by, p.returncode)
    dev = by["fuse-device"]
    assert dev["verdict"] == "fail"
    assert "cannot open /dev/fuse: Permission denied" in dev["detail"] and f"uid {NOBODY}" in dev["detail"]
    assert "chmod 0666 /dev/fuse" in dev["fix"] and "--device /dev/fuse" in dev["fix"]
    assert by["mount-daemon"]["verdict"] == "ok"  # what the uid runs is whole: only the device is wrong
    assert by["cap-sys-admin"]["verdict"] == "warn" and by["passthrough"]["verdict"] == "warn"

    text = other_uid.run("artfs", "doctor")
    assert text.returncode == 1
    assert "  fuse-device: as root: chmod 0666 /dev/fuse" in text.stdout
    assert text.stdout.splitlines()[-1] == "a mount would not work: fuse-device failed"


def test_mount_as_a_uid_that_cannot_open_dev_fuse_names_the_cause(other_uid: OtherUid) -> None:
    mnt, store = other_uid.home / "mnt", other_uid.home / "store"
    other_uid.run("mkdir", str(mnt))
    try:
        # artfs mount: refused up front, and nothing created (the store it would have made)
        p = other_uid.run("artfs", "mount", "--store", str(store), str(mnt))
        assert p.returncode == 1
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, p.stderr
        assert lines[0].startswith("artfs: error: cannot open /dev/fuse: Permission denied")
        assert "run `artfs doctor`" in lines[0]
        assert not store.exists()

        # the daemon itself (as systemd or a script starts it): the cause read from libfuse's line in its log
        other_uid.run("mkdir", str(store))
        p = other_uid.run("python", "-m", "artfsd.main", str(store), str(mnt))
        assert p.returncode == 1
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, p.stderr
        assert lines[0].startswith(f"artfs: error: cannot mount {mnt}: failed to open /dev/fuse: Permission denied; "
                                   "run `artfs doctor` (log: ")
        assert not is_mounted(mnt)
    finally:
        if is_mounted(mnt):
            _fusermount(str(mnt), "-uz")


def test_an_ordinary_user_on_a_normal_host_is_told_a_mount_works_and_what_is_slower(nobody: OtherUid) -> None:
    """/dev/fuse 0666 and a setuid fusermount3 (tests/installed.py's normal host), not root: the
    doctor passes, and the mount names the fast paths it runs without."""
    user = nobody
    mnt = user.home / "mnt"
    user.run("mkdir", str(mnt))
    with normal_host():
        p = user.run("artfs", "doctor", "--json")
        by = {c["check"]: c for c in json.loads(p.stdout)}
        well_formed(by, p.returncode)
        assert p.returncode == 0, by
        assert by["fuse-device"]["verdict"] == "ok"
        via = by["mount-permission"]["detail"]
        assert via.startswith("through ") and via.endswith("(setuid root)"), via
        assert by["passthrough"]["verdict"] == "warn"  # no CAP_SYS_ADMIN (and a pip-installed pyfuse3)
        try:
            p = user.run("artfs", "mount", str(mnt))
            assert p.returncode == 0, p.stderr
            note = p.stderr.splitlines()
            assert len(note) == 2 and note[0].startswith("created the store "), p.stderr
            assert note[1].startswith("artfs: ") and "passthrough" in note[1] and " off: " in note[1]
            listed = user.run("ls", "-A", str(mnt))  # root may not look in: no allow_other
            assert listed.returncode == 0 and listed.stdout == "", listed.stderr
            p = user.run("artfs", "umount", str(mnt))
            assert p.returncode == 0, p.stderr
        finally:
            if is_mounted(mnt):
                _fusermount(str(mnt), "-uz")


# -- root without CAP_SYS_ADMIN (a container without it): not even fusermount3 can mount --------------
def test_no_right_to_mount_is_a_failure_and_the_mount_names_it(tmp_path: Path, store: str) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not _cap_sys_admin():
        pytest.skip("needs root with CAP_SYS_ADMIN and setpriv, to drop it")
    env = _env(tmp_path, ARTFS_STORE=store)
    by, code = doctor(env, prefix=tuple(NO_CAP_SYS_ADMIN))
    well_formed(by, code)
    assert by["mount-permission"]["verdict"] == "fail" and "bounding set" in by["mount-permission"]["detail"]
    assert "--cap-add SYS_ADMIN" in by["mount-permission"]["fix"]
    assert by["cap-sys-admin"]["verdict"] == "warn" and code == 1

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        p = artfs(env, "mount", str(mnt), prefix=tuple(NO_CAP_SYS_ADMIN))
        assert p.returncode == 1
        assert p.stderr.strip().splitlines() == [
            f"artfs: error: {by['mount-permission']['detail']}; run `artfs doctor`"]
        p = subprocess.run([*NO_CAP_SYS_ADMIN, sys.executable, "-m", "artfsd.main", store, str(mnt)], env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 1
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, p.stderr
        assert lines[0].startswith(f"artfs: error: cannot mount {mnt}: fusermount3: mount failed: Operation not "
                                   "permitted; run `artfs doctor` (log: ")
    finally:
        if is_mounted(mnt):
            _fusermount(str(mnt), "-uz")


# -- the fast paths: what the mount says about them ----------------------------------------------------
def _umount(env: dict[str, str], mnt: Path, command: str | None = None) -> None:
    if is_mounted(mnt):
        cmd = [command] if command else [sys.executable, "-m", "artfs.cli"]
        subprocess.run([*cmd, "umount", str(mnt)], env=env, capture_output=True, timeout=120)
    if is_mounted(mnt):
        _fusermount(str(mnt), "-uz")


def test_a_mount_with_every_fast_path_says_nothing(tmp_path: Path, store: str) -> None:
    env = _env(tmp_path, ARTFS_STORE=store)
    by, _ = doctor(env)
    if any(by[k]["verdict"] != "ok" for k in ("cached-listings", "readdir-names", "passthrough")):
        pytest.skip("a fast path is off on this machine")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        p = artfs(env, "mount", str(mnt))
        assert p.returncode == 0, p.stderr
        assert p.stderr == ""
        assert (mnt / "proj" / "ds" / "v0" / "a.txt").read_text() == "a\n"
    finally:
        _umount(env, mnt)


@pytest.mark.slow
def test_stock_pyfuse3_is_named_with_its_fix_and_the_mount_says_so_once(tmp_path: Path, store: str) -> None:
    """artfs as ``pip install`` gives it (tests/installed.py): stock pyfuse3 on the system's libfuse."""
    inst = installed()
    env = inst.env(tmp_path / "home", ARTFS_STORE=store, ARTFS_CACHE_DIR=str(tmp_path / "cache"),
                   ARTFS_STAGING_DIR=str(tmp_path / "staging"))
    by, code = doctor(env, python=inst.python)
    well_formed(by, code)
    if by["pyfuse3"]["detail"].startswith("patched"):
        pytest.skip("the installed venv has a patched pyfuse3")
    assert by["pyfuse3"]["verdict"] == "warn" and str(inst.venv) in by["pyfuse3"]["detail"]
    assert by["pyfuse3"]["detail"].startswith("stock pyfuse3") and by["pyfuse3"]["fix"] == "run `artfs build-fuse`"
    for k in ("cached-listings", "readdir-names", "passthrough"):
        assert by[k] == {"check": k, "verdict": "warn", "detail": "off: stock pyfuse3", "fix": "run `artfs build-fuse`"}
    assert str(inst.venv) in by["mount-daemon"]["detail"]

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        p = subprocess.run([inst.artfs, "mount", str(mnt)], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert p.stderr.splitlines() == [
            "artfs: cached listings, readdir names and passthrough off: stock pyfuse3 (run `artfs build-fuse`)"]
        assert (mnt / "proj" / "ds" / "v0" / "a.txt").read_text() == "a\n"  # the ordinary path works
        stats = json.loads(os.getxattr(mnt, "user.artfs.stats"))
        assert stats["kernel"]["passthrough"] is False
    finally:
        _umount(env, mnt, inst.artfs)


def test_the_note_names_what_the_daemon_did_not_get() -> None:
    """The daemon's own reason counts where the checks here see nothing wrong (e.g. a kernel that
    did not offer passthrough at INIT); a fast path it got, which the checks also allow, is not named."""
    predicted = _doctor.fast_paths()
    if any(c.verdict != "ok" for c in predicted.values()):
        pytest.skip("a fast path is off on this machine")
    assert _doctor.mount_note({"passthrough": True, "cached-listings": True, "readdir-names": True}, {}) is None
    note = _doctor.mount_note({"passthrough": False, "cached-listings": True},
                              {"passthrough": "the kernel did not offer it"})
    assert note == "artfs: passthrough off: the kernel did not offer it"
