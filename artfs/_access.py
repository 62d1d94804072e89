"""Who may read and write a project: ``private``, ``public`` or ``open``, enforced by the store.

artfs has no server, so the store itself says no: a bucket policy on S3, file modes and the
group on a local (or shared) file system. Nothing here is a check artfs makes on its own behalf:
a refused request comes back from the store as :class:`PermissionDenied` (exit code 7, ``EACCES``
in the mount) wherever it happens.

Levels (W&B's project visibility):

    private   only those the store's owner granted (IAM users and roles, the store's Unix group)
    public    anyone may list and read the project; only the team writes
    open      anyone may also write (create versions, move aliases, delete)

**S3.** artfs owns the bucket-policy statements whose ``Sid`` starts with ``artfs`` and that it
can recompute for the store's prefix and a project (the Sid ends with a hash of
``bucket/prefix/project``); every other statement is left exactly as it was, in its place.
``public`` adds two statements for the project (anonymous ``s3:GetObject`` on
``<prefix><project>/*``; ``s3:ListBucket`` with an ``s3:prefix`` condition on ``<prefix><project>/*``),
``open`` a third (``s3:PutObject``, ``s3:DeleteObject``, ``s3:AbortMultipartUpload`` on the same
keys: a commit writes an intent and deletes it, moving an alias rewrites a key, ``delete`` and
``gc`` remove keys), ``private`` removes them. While any project of the prefix is public or open,
two more statements let anyone list the store's top level (the project names; never their
contents) and read its ``index.json``; they go when the last project becomes private. S3 offers no
conditional write of a policy, so a change reads the policy, writes it, then reads it again and
fails if another writer's change crossed it (run the command again).

**Local store.** The level lives in the project directory's mode, nowhere else:

    private   drwxrws---  (2770)   files rw-rw----  (0660)
    public    drwxrwsr-x  (2775)   files rw-rw-r--  (0664)
    open      drwxrwsrwx  (2777)   files rw-rw-r--  (0664; others replace files, never modify them)

and its group is the store directory's group. The setgid bit makes new files and directories
inherit the group; the local backend gives every file it writes (a temporary file renamed into
place) and every directory it creates the project's modes, so new versions keep the level
(inheritance, not a one-time chmod). ``public``/``open`` also let others traverse and list the
store directory, and ``open`` makes ``<store>/.tmp`` world-writable with the sticky bit (as
``/tmp``), since every write starts there. A project directory without the setgid bit has no
level set by artfs; ``show`` reports what its modes grant.

**HTTPS store.** Whatever a static web server serves, anyone may read: ``show`` says public,
``set`` is refused.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import xxhash

from ._errors import ArtfsError, NotFound, PermissionDenied
from ._layout import ROOT_INDEX, collections_prefix, project_index_key
from ._names import check_name
from ._names import valid_name as _valid
from .backends.local import LocalBackend
from .backends.s3 import S3Backend  # its module imports boto3 only when a client is made

if TYPE_CHECKING:
    from ._store import Store
    from .backends import Backend

LEVELS = ("private", "public", "open")

#: the modes of a project directory at each level (the setgid bit marks a level set by artfs)
DIR_MODES = {"private": 0o2770, "public": 0o2775, "open": 0o2777}
_POLICY_VERSION = "2012-10-17"


@dataclass
class Access:
    """The access level of one project, as the store enforces it."""

    project: str
    level: str  # private, public, open, or "custom" (local modes artfs did not set)
    managed: bool  # whether artfs set it (S3: its statements; local: the setgid project directory)
    detail: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise ArtfsError(f"unknown access level {level!r}: expected one of {', '.join(LEVELS)}")
    return level


# -- what the caller may see ---------------------------------------------------------------------
def list_projects(store: "Store") -> tuple[list[str], list[str]]:
    """(projects the caller may read, projects the store refuses to show) of ``store``.

    A project is readable when its artifacts can be listed and its ``index.json`` read (or is
    absent): some stores let anyone list a bucket but refuse to serve a private prefix's objects,
    and a listing must show only what can be opened. Projects without artifacts (or registry
    collections, artfs._registry) are left out.
    """
    visible: list[str] = []
    denied: list[str] = []
    for p in store.backend.list_dirs(""):
        if not _valid(p):
            continue
        try:
            if not store.artifacts(p) and not store.backend.list_dirs(collections_prefix(p)):
                continue
            try:
                store.backend.get(project_index_key(p))
            except NotFound:
                pass
        except PermissionDenied:
            denied.append(p)
            continue
        visible.append(p)
    return visible, denied


def refusal(command: str, target: str | None, e: PermissionDenied) -> str:
    """The CLI's one line for a refused command: which action on which project, and the store's answer."""
    project = None
    if target:
        head = target.split("/", 1)[0].split(":", 1)[0]
        project = head or None
    what = f"{command} {target}" if target else command
    who = f" (project {project})" if project and project != target else ""
    return f"{what}{who}: refused by the store: {e}"


# -- show / set ----------------------------------------------------------------------------------
def show(store: "Store", project: str | None = None) -> list[Access]:
    """The level of ``project``, or of every project of the store."""
    if project is not None:
        check_name(project, "project")
    b = store.backend
    if _is_http(b):
        names = [project] if project else store.projects()
        return [Access(p, "public", False, f"{store.url} is served to anyone who can reach it") for p in names]
    if isinstance(b, S3Backend) and b.unsigned:
        return _probe_show(store, project)
    if isinstance(b, S3Backend):
        return _S3Policy(b).show(project, _names(store, project))
    if isinstance(b, LocalBackend):
        return [_local_show(b, p) for p in _names(store, project)]
    raise ArtfsError(f"{store.url}: artfs cannot tell who may access this store")


def set_level(store: "Store", project: str, level: str) -> Access:
    """Make ``project`` private, public or open; returns what the store now enforces."""
    check_name(project, "project")
    check_level(level)
    b = store.backend
    if _is_http(b):
        raise PermissionDenied(
            f"access set {project} {level}: {store.url} is a static HTTPS store: anyone who can reach the "
            "server reads it, and artfs cannot change that; restrict it on the web server (or set the level "
            "on the store it is published from)")
    if isinstance(b, S3Backend) and b.unsigned:
        # only the bucket owner's account may change a bucket policy: an unsigned request never can
        raise PermissionDenied(
            f"access set {project} {level}: refused: changing who may access a project needs "
            f"s3:PutBucketPolicy on bucket {b.bucket!r} with the bucket owner's credentials, "
            "and --no-sign-request sends none")
    if isinstance(b, S3Backend):
        return _S3Policy(b).set(project, level)
    if isinstance(b, LocalBackend):
        return _local_set(b, project, level)
    raise ArtfsError(f"{store.url}: artfs cannot set access levels on this store")


def _probe_show(store: "Store", project: str | None) -> list[Access]:
    """Without credentials the policy cannot be read: say what an anonymous reader gets."""
    note = "seen without credentials (the bucket policy needs the owner's); an open project shows as public"
    if project is not None:
        try:
            store.artifacts(project)
            try:
                store.backend.get(project_index_key(project))
            except NotFound:
                pass
            level = "public"
        except PermissionDenied:
            level = "private"
        seen = "readable" if level == "public" else "refused"
        return [Access(project, level, False, f"{store.url}/{project}: {seen} without credentials", [note])]
    visible, denied = list_projects(store)
    return sorted((Access(p, "public", False, f"{store.url}/{p}: readable without credentials", [note])
                   for p in visible), key=lambda a: a.project) + \
        [Access(p, "private", False, f"{store.url}/{p}: refused without credentials", [note]) for p in denied]


def _is_http(b: "Backend") -> bool:
    """A static HTTPS store (by its URL: the HTTP backend's module imports httpx, not needed here)."""
    return b.url.startswith(("http://", "https://"))


def _names(store: "Store", project: str | None) -> list[str]:
    if project is not None:
        return [project]
    return [p for p in store.backend.list_dirs("") if _valid(p)]


# -- S3: bucket policies ---------------------------------------------------------------------------
class _S3Policy:
    """The artfs statements of one store (bucket + prefix) in its bucket's policy."""

    def __init__(self, b: "S3Backend") -> None:
        self.b = b
        self.bucket = b.bucket
        self.prefix = b.prefix  # "" or "some/prefix/"

    # statement ids: "artfs" + kind + a hash of what they are for (S3 and IAM take [A-Za-z0-9] ids)
    def sid(self, kind: str, project: str | None = None) -> str:
        what = f"{self.bucket}/{self.prefix}" + (f"{project}/" if project is not None else "")
        return f"artfs{kind}{xxhash.xxh64_hexdigest(what.encode())}"

    def _objects(self, project: str) -> str:
        return f"arn:aws:s3:::{self.bucket}/{self.prefix}{project}/*"

    def statements(self, project: str, level: str) -> list[dict[str, Any]]:
        """The statements artfs writes for ``project`` at ``level`` (none for private)."""
        if level == "private":
            return []
        out: list[dict[str, Any]] = [
            {"Sid": self.sid("Read", project), "Effect": "Allow", "Principal": "*",
             "Action": "s3:GetObject", "Resource": self._objects(project)},
            {"Sid": self.sid("List", project), "Effect": "Allow", "Principal": "*",
             "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{self.bucket}",
             "Condition": {"StringLike": {"s3:prefix": [f"{self.prefix}{project}/*"]}}},
        ]
        if level == "open":
            out.append({"Sid": self.sid("Write", project), "Effect": "Allow", "Principal": "*",
                        "Action": ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                        "Resource": self._objects(project)})
        return out

    def top_statements(self) -> list[dict[str, Any]]:
        """While a project is public: anyone may list the project names and read the root index."""
        return [
            {"Sid": self.sid("Top"), "Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
             "Resource": f"arn:aws:s3:::{self.bucket}",
             "Condition": {"StringEquals": {"s3:prefix": [self.prefix], "s3:delimiter": ["/"]}}},
            {"Sid": self.sid("TopIndex"), "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{self.bucket}/{self.prefix}{ROOT_INDEX}"},
        ]

    # -- reading and writing the policy --------------------------------------------------------
    def read(self, what: str) -> dict[str, Any]:
        c = self.b.client
        try:
            raw = c.get_bucket_policy(Bucket=self.bucket)["Policy"]
        except Exception as e:
            code = getattr(e, "response", {}).get("Error", {}).get("Code")
            if code == "NoSuchBucketPolicy":
                return {"Version": _POLICY_VERSION, "Statement": []}
            err = self.b.artfs_error(e, "")
            if isinstance(err, PermissionDenied):
                raise PermissionDenied(
                    f"{what}: refused by the store: reading who may access it needs s3:GetBucketPolicy on "
                    f"bucket {self.bucket!r} ({err})") from None
            raise err from None
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ArtfsError(f"{what}: the policy of bucket {self.bucket!r} is not JSON") from None
        if not isinstance(doc, dict):
            raise ArtfsError(f"{what}: the policy of bucket {self.bucket!r} is not a JSON object")
        st = doc.get("Statement", [])
        doc["Statement"] = [st] if isinstance(st, dict) else list(st) if isinstance(st, list) else []
        return doc

    def write(self, doc: dict[str, Any], what: str) -> None:
        c = self.b.client
        try:
            if doc["Statement"]:
                c.put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(doc))
            else:
                c.delete_bucket_policy(Bucket=self.bucket)
        except Exception as e:
            err = self.b.artfs_error(e, "")
            if isinstance(err, PermissionDenied):
                raise PermissionDenied(
                    f"{what}: refused by the store: changing who may access a project needs "
                    f"s3:PutBucketPolicy (and s3:DeleteBucketPolicy to remove the last statement) on bucket "
                    f"{self.bucket!r}; on AWS the bucket's Block Public Access settings must also allow public "
                    f"bucket policies (BlockPublicPolicy and RestrictPublicBuckets off) ({err})") from None
            code = getattr(e, "response", {}).get("Error", {}).get("Code")
            if code in ("MalformedPolicy", "PolicyTooLarge", "InvalidPolicyDocument"):
                raise ArtfsError(f"{what}: the store refused the new bucket policy ({code}): {err}") from None
            raise err from None

    # -- levels ----------------------------------------------------------------------------------
    def level_in(self, doc: dict[str, Any], project: str) -> tuple[str, bool]:
        sids = {s.get("Sid") for s in doc["Statement"] if isinstance(s, dict)}
        if self.sid("Write", project) in sids:
            return "open", True
        if self.sid("Read", project) in sids:
            return "public", True
        return "private", False

    def _projects_in(self, doc: dict[str, Any]) -> set[str]:
        """Projects of this store that have artfs statements (found through their resources)."""
        head = f"arn:aws:s3:::{self.bucket}/{self.prefix}"
        out = set()
        for s in doc["Statement"]:
            if not isinstance(s, dict) or not str(s.get("Sid", "")).startswith("artfsRead"):
                continue
            res = s.get("Resource")
            if isinstance(res, str) and res.startswith(head) and res.endswith("/*"):
                p = res[len(head):-2]
                if "/" not in p and s.get("Sid") == self.sid("Read", p):
                    out.add(p)
        return out

    def _others(self, doc: dict[str, Any]) -> int:
        return sum(1 for s in doc["Statement"] if not (isinstance(s, dict) and self._ours(s, doc)))

    def _ours(self, s: dict[str, Any], doc: dict[str, Any]) -> bool:
        sid = s.get("Sid")
        if not isinstance(sid, str) or not sid.startswith("artfs"):
            return False
        if sid in (self.sid("Top"), self.sid("TopIndex")):
            return True
        return any(sid == self.sid(k, p) for p in self._projects_in(doc) for k in ("Read", "List", "Write"))

    def show(self, project: str | None, names: list[str]) -> list[Access]:
        what = f"access show {project}" if project else "access show"
        doc = self.read(what)
        others = self._others(doc)
        projects = sorted(set(names) | (self._projects_in(doc) if project is None else set()))
        out = []
        for p in projects:
            level, managed = self.level_in(doc, p)
            a = Access(p, level, managed, _s3_detail(level, self.bucket, self.prefix + p))
            if others:
                a.notes.append(f"the bucket policy has {others} statement(s) artfs did not write; they may grant "
                               "more (IAM policies of users and roles may too)")
            out.append(a)
        return out

    def set(self, project: str, level: str) -> Access:
        what = f"access set {project} {level}"
        doc = self.read(what)
        mine = {self.sid(k, project) for k in ("Read", "List", "Write")}
        top = {self.sid("Top"), self.sid("TopIndex")}
        kept = [s for s in doc["Statement"] if not (isinstance(s, dict) and s.get("Sid") in mine | top)]
        new = self.statements(project, level)
        still_public = bool((self._projects_in(doc) - {project}) or new)
        stmts = kept + new + (self.top_statements() if still_public else [])
        doc = {**doc, "Version": doc.get("Version") or _POLICY_VERSION, "Statement": stmts}
        self.write(doc, what)
        # no conditional PutBucketPolicy: read it back, so a racing change is noticed, not lost
        after = self.read(what)
        ours = [s for s in after["Statement"] if isinstance(s, dict) and s.get("Sid") in mine]
        if _canon(ours) != _canon(new):
            raise ArtfsError(f"{what}: the bucket policy changed while artfs was writing it; run the command again")
        lvl, managed = self.level_in(after, project)
        a = Access(project, lvl, managed, _s3_detail(lvl, self.bucket, self.prefix + project))
        others = self._others(after)
        if others:
            a.notes.append(f"{others} statement(s) artfs did not write were kept as they were")
        return a


def _canon(stmts: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(s, sort_keys=True) for s in stmts)


def _s3_detail(level: str, bucket: str, key_prefix: str) -> str:
    where = f"s3://{bucket}/{key_prefix}/"
    return {
        "private": f"{where}: no artfs grant; only IAM users and roles (or other bucket-policy statements) that "
                   "the bucket's owner allowed",
        "public": f"{where}: anyone may list and read it (anonymous s3:GetObject, s3:ListBucket on the prefix)",
        "open": f"{where}: anyone may list, read and write it (also s3:PutObject, s3:DeleteObject, "
                "s3:AbortMultipartUpload)",
    }[level]


# -- local stores: modes and groups -----------------------------------------------------------------
def level_of_mode(mode: int) -> str:
    """The level a project directory's mode grants to others."""
    other = mode & 0o007
    if other == 0:
        return "private"
    if other == 0o007:
        return "open"
    if other == 0o005:
        return "public"
    return "custom"


def file_mode(dir_mode: int) -> int:
    """The mode of files in a project directory of mode ``dir_mode`` (no x bits, others never write)."""
    return dir_mode & 0o664


def _local_show(b: "LocalBackend", project: str) -> Access:
    path = os.path.join(b.root, project)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"{project}: no such project in {b.url}") from None
    except PermissionError:
        raise PermissionDenied(f"access show {project}: refused by the store: cannot stat {path}") from None
    level = level_of_mode(st.st_mode)
    managed = bool(st.st_mode & stat.S_ISGID) and level != "custom"
    group = _group_name(st.st_gid)
    detail = f"{path}: mode {stat.filemode(st.st_mode)} ({st.st_mode & 0o7777:04o}), group {group}"
    a = Access(project, level, managed, detail)
    if not managed:
        a.notes.append("artfs did not set this level (no setgid bit): new files follow each writer's umask")
    return a


def _group_name(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (KeyError, ImportError):
        return str(gid)


def _local_set(b: "LocalBackend", project: str, level: str) -> Access:
    """Set the modes and the group of a project's tree; the project directory last when opening up,
    first when closing, so nothing is readable by others before the whole tree is ready or after."""
    what = f"access set {project} {level}"
    root = b.root
    path = os.path.join(root, project)
    try:
        st_root = os.stat(root)
    except FileNotFoundError:
        raise NotFound(f"{what}: the store {root} does not exist") from None
    os.makedirs(path, exist_ok=True)
    owner = os.stat(path).st_uid
    if os.geteuid() not in (0, owner):
        # refuse before changing anything: a partial change by another user would lock files away
        raise PermissionDenied(
            f"{what}: refused by the store: only the owner of {path} (uid {owner}) or root may change its level "
            "(its files may belong to other users too)")
    gid = st_root.st_gid
    dmode = DIR_MODES[level]
    fmode = file_mode(dmode)
    failed: list[str] = []

    def apply(p: str, mode: int) -> None:
        try:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                return
            if st.st_gid != gid:
                os.chown(p, -1, gid)
            os.chmod(p, mode)
        except FileNotFoundError:
            pass  # removed meanwhile (a delete, gc): nothing to protect
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EACCES):
                raise
            failed.append(p)

    if level == "private":
        apply(path, dmode)
    for dirpath, dirnames, filenames in os.walk(path):
        for d in dirnames:
            apply(os.path.join(dirpath, d), dmode)
        for f in filenames:
            apply(os.path.join(dirpath, f), fmode)
    if level != "private":
        _open_up(root, level, failed)
        apply(path, dmode)
    if failed:
        raise PermissionDenied(
            f"{what}: refused by the store for {len(failed)} file(s) or directories that belong to other users "
            f"(for example {failed[0]}); they keep their modes. Run the command as their owner or as root")
    return _local_show(b, project)


def _open_up(root: str, level: str, failed: list[str]) -> None:
    """Let others reach the store's projects (x, and r to list them); for open, write temp files."""
    try:
        st = os.stat(root)
        if st.st_mode & 0o005 != 0o005:
            os.chmod(root, (st.st_mode & 0o7777) | 0o005)
        if level == "open":
            tmp = os.path.join(root, ".tmp")
            os.makedirs(tmp, exist_ok=True)
            if os.stat(tmp).st_mode & 0o7777 != 0o1777:
                os.chmod(tmp, 0o1777)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EACCES):
            raise
        failed.append(root)
