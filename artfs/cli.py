"""The ``artfs`` command line: put, get, ls, show, alias, describe, delete, gc, cache.

Every command is a function ``cmd_x(ctx) -> int | None`` that reads ``ctx.args``, writes its
result to stdout through :meth:`Context.emit` (text, or JSON with ``--json``) and lets errors
propagate. :func:`main` is the one place that turns errors into a one-line
``artfs: error: <message>`` on stderr and an exit code:

    ArtfsError (and UsageError)  exc.exit_code (InvalidName 2, NotFound 3, ... see artfs._errors)
    OSError                      1   (a missing DIR, a full disk, ...)
    KeyboardInterrupt            130
    anything else                1   ("internal error"; a bug, the traceback with --debug)
    argparse usage errors        2

Tracebacks are printed only with ``--debug``. Progress bars go to stderr, and only when stderr
is a terminal.

Adding commands from another module: list it in :data:`COMMAND_MODULES` and give it a
``register(subparsers, common)`` function that adds its parsers with ``parents=[common]`` and
``set_defaults(func=cmd_x)``; ``cmd_x(ctx)`` gets a :class:`Context`. A module that is not
installed is skipped, so the CLI works before the mount exists.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import difflib
import importlib
import json
import logging
import os
import sys
import threading
import traceback
from functools import cached_property
from typing import Any, Callable, Iterator, Sequence

from . import __version__
from typing import TYPE_CHECKING

from ._cache import Cache, parse_size
from ._cli_mount import missing_store_message
from ._errors import ArtfsError, NotFound, PermissionDenied
from ._names import Spec, check_alias, check_name, check_path, parse_spec
from .backends import default_store_url

if TYPE_CHECKING:
    from ._store import Store

# Start-up time: the store, artifacts and references (httpx, boto3) are imported by the commands
# that use them, not here, so that `artfs --version`, `--help` and usage errors answer at once.

#: Modules that add subcommands (``mount``, ``umount``, ``commit``, ``status``, ...). Each defines
#: ``register(subparsers, common)``; a module that does not exist (yet) is skipped.
COMMAND_MODULES: tuple[str, ...] = ("artfs._cli_mount", "artfs._cli_draft", "artfs._cli_refs", "artfs._warmup",
                                     "artfs._cli_access", "artfs._cli_runs", "artfs._cli_groups")

log = logging.getLogger("artfs")


class UsageError(ArtfsError):
    """A command line that cannot work (bad ``k=v``, conflicting options, ...)."""

    exit_code = 2


# -- output helpers ------------------------------------------------------------------------------
def human_size(n: int | float) -> str:
    """``45.2 MB``; units are powers of 1024, like the sizes :func:`artfs.parse_size` accepts."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB", "TB", "PB"):
        n /= 1024
        if round(n, 1) < 1024 or unit == "PB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _when(iso: str) -> str:
    """A manifest's UTC timestamp as local ``YYYY-MM-DD HH:MM:SS``."""
    try:
        return _dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _one_line(s: str | None, width: int = 60) -> str:
    s = " ".join((s or "").split())
    return s if len(s) <= width else s[: width - 1] + "…"


class Context:
    """What a command needs: its arguments, the store and cache (opened lazily), output helpers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @cached_property
    def cache(self) -> Cache:
        return Cache(self.args.cache_dir or None)

    @cached_property
    def store(self) -> Store:
        url = self.args.store or default_store_url()
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme and scheme not in ("file", "s3", "http", "https"):
            raise UsageError(f"unsupported store URL {url!r}: use a directory, file://, s3:// or https://")
        if not scheme or scheme == "file":
            path = os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
            if not os.path.isdir(path):
                # a typo must not look like an empty store; only commands that write create one
                if not getattr(self.args, "creates_store", False):
                    raise NotFound(missing_store_message(path, explicit=self.store_given))
                self.note(f"created the store {path}")
        from ._store import Store

        try:
            return Store(url, cache=self.cache)
        except ValueError as e:  # a malformed URL or setting (e.g. ARTFS_S3_TIMEOUT)
            raise UsageError(str(e)) from None
        except ImportError as e:  # a backend this installation does not have (yet)
            raise UsageError(f"{url}: this installation of artfs cannot open {scheme}:// stores ({e})") from None

    @property
    def store_given(self) -> bool:
        """Whether the user named the store (``--store``, ``$ARTFS_STORE``) rather than taking the default."""
        return bool(self.args.store or os.environ.get("ARTFS_STORE"))

    def emit(self, doc: Any, text: str | None) -> None:
        """The command's result on stdout: ``doc`` as JSON with ``--json``, else ``text``."""
        if self.json:
            print(json.dumps(doc, indent=2, ensure_ascii=False))
        elif text:
            print(text)

    @staticmethod
    def note(msg: str) -> None:
        print(msg, file=sys.stderr)

    @contextlib.contextmanager
    def progress(self, total: int, desc: str) -> Iterator[Callable[[int], None] | None]:
        """A thread-safe ``progress(nbytes)`` callback drawing a bar on stderr, or None off a terminal."""
        if not sys.stderr.isatty():
            yield None
            return
        from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

        lock = threading.Lock()
        with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                  file=sys.stderr, leave=False, dynamic_ncols=True) as bar:

            def update(n: int) -> None:
                with lock:
                    bar.update(n)

            yield update


# -- argument helpers ----------------------------------------------------------------------------
def _spec(s: str, *, ref: str = "optional") -> Spec:
    """Parse ``proj/art[:ref]``; ``ref`` is "optional" (default latest), "required" or "none"."""
    spec = parse_spec(s, need_ref=(ref == "optional"))
    if ref == "required" and ":" not in s:
        raise UsageError(f"{s!r}: name the version, e.g. {s}:v0 or {s}:latest")
    if ref == "none" and ":" in s:
        raise UsageError(f"{s!r}: expected project/artifact without a version or alias")
    return spec


def _did_you_mean(name: str, names: Sequence[str]) -> str:
    """``; did you mean x?`` for the closest of ``names`` (difflib), or ""."""
    close = difflib.get_close_matches(name, list(names), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


def _metadata(pairs: Sequence[str] | None, json_arg: str | None = None) -> dict[str, Any]:
    """``--metadata-json`` (a file, ``-`` for stdin, or JSON text) then ``k=v`` pairs on top."""
    out: dict[str, Any] = {}
    if json_arg is not None:
        if json_arg == "-":
            text = sys.stdin.read()
        elif os.path.isfile(json_arg):
            with open(json_arg, encoding="utf-8") as f:
                text = f.read()
        else:
            text = json_arg
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise UsageError(f"--metadata-json: neither a file nor valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise UsageError("--metadata-json: expected a JSON object")
        out.update(doc)
    for p in pairs or ():
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise UsageError(f"--metadata {p!r}: expected key=value")
        out[k] = _parse_value(v)
    return out


def _size(s: str) -> int:
    try:
        return parse_size(s)
    except ArtfsError as e:
        raise UsageError(str(e)) from None


def _version_doc(store: Store, project: str, artifact: str, n: int, *, aliases: dict[str, int] | None = None,
                 files: bool = False) -> dict[str, Any]:
    m = store.manifest(project, artifact, n)
    info = store.info(project, artifact, n)
    if aliases is None:
        aliases = store.aliases(project, artifact)
    doc: dict[str, Any] = {
        "name": f"{project}/{artifact}:v{n}",
        "project": project,
        "artifact": artifact,
        "version": n,
        "type": m.type,
        "digest": m.digest,
        "size": m.size,
        "files": len(m.entries),
        "aliases": sorted(a for a, v in aliases.items() if v == n),
        "description": info.get("description"),
        "metadata": info.get("metadata") or {},
        "created": m.created,
    }
    if files:
        doc["entries"] = [e.to_json() for e in m.entries]
    return doc


# -- commands --------------------------------------------------------------------------------------
def cmd_put(ctx: Context) -> None:
    a = ctx.args
    spec = parse_spec(a.name)
    if spec.version is not None:
        raise UsageError(f"-n {a.name}: versions are numbered by the store; give project/artifact")
    aliases = [check_alias(x) for x in dict.fromkeys((a.alias or []) + ([spec.alias] if spec.alias else []))]
    metadata = _metadata(a.metadata, a.metadata_json)
    if a.dir is None and not a.references:
        raise UsageError("put: give a DIR to log, --reference URI, or both")
    if a.dir is not None and not os.path.exists(a.dir):
        raise FileNotFoundError(2, "No such file or directory", a.dir)
    if a.dir is not None and not os.path.isdir(a.dir):
        raise NotADirectoryError(20, "Not a directory", a.dir)
    from ._artifact import Artifact
    from ._refs import add_references_from_args

    art = Artifact(spec.artifact, type=a.type or "unspecified", description=a.description, metadata=metadata)
    added = art.add_dir(a.dir) if a.dir is not None else []
    if not added and not a.references:
        raise ArtfsError(f"{a.dir}: no files to log")
    add_references_from_args(art, a)  # --reference [NAME=]URI: entries whose bytes stay where they are
    total = sum(os.path.getsize(os.path.join(a.dir, *p.split("/"))) for p in added)
    store = ctx.store
    with ctx.progress(total, "upload") as cb:
        # Store.log_artifact without the progress callback it does not take
        logged = art._log(store, spec.project, aliases, progress=cb)
    r = logged.commit_result
    assert r is not None
    name = f"{r.project}/{r.artifact}:v{r.version}"
    doc = {"name": name, **vars(r)}
    if r.created:
        text = (f"{name} created ({_plural(r.files, 'file')}, {_plural(r.uploaded_blobs, 'new blob')}, "
                f"{human_size(r.uploaded_bytes)} uploaded)")
    else:
        text = f"{name} matched: identical content is already logged, no new version ({_plural(r.files, 'file')})"
        if (a.description is not None and a.description != logged.description) or any(
                logged.metadata.get(k, object()) != v for k, v in metadata.items()):
            ctx.note(f"note: description and metadata of {name} were left as they are; use 'artfs describe' to change them")
    if r.aliases:
        text += f"; aliases: {', '.join(r.aliases)}"
    ctx.emit(doc, text)


def cmd_get(ctx: Context) -> None:
    a = ctx.args
    spec = _spec(a.spec)
    if a.checkout and a.path:
        raise UsageError("--checkout makes the root hold the whole version; it cannot be combined with --path")
    prefix = check_path(a.path.strip("/")) if a.path else None
    art = ctx.store.artifact(str(spec))
    entries = art.manifest.entries
    if prefix is not None:
        entries = [e for e in entries if e.path == prefix or e.path.startswith(prefix + "/")]
        if not entries:
            hint = ""
            tail = prefix.split("/", 1)[1] if "/" in prefix else None
            if tail and any(e.path == tail or e.path.startswith(tail + "/") for e in art.manifest.entries):
                # `put -n x ./images` logs what is inside ./images: images/val is val in the version
                hint = f"; did you mean --path {tail}? ('put DIR' logs the contents of DIR at the version's root)"
            raise NotFound(f"{art.qualified_name} has no file or directory {prefix!r}{hint}")
    total = sum(e.size for e in entries)
    files = {"allow_file": a.allow_file, "file_roots": a.file_roots}
    if a.checkout:
        root = art.checkout(a.root, **files)
    else:
        with ctx.progress(total, "download") as cb:
            root = art.download(a.root, path_prefix=prefix, progress=cb, **files)
    if not ctx.json:
        ctx.note(f"{art.qualified_name}: {_plural(len(entries), 'file')}, {human_size(total)} in {root}")
    ctx.emit({"name": art.qualified_name, "root": root, "files": len(entries), "size": total}, root)


def cmd_ls(ctx: Context) -> None:
    target = ctx.args.target
    url = default_store_url()
    if not target and not ctx.store_given and "://" not in url and not os.path.isdir(url):
        # a fresh machine: nothing logged yet is not an error (a --store that does not exist is)
        if not ctx.json:
            ctx.note(missing_store_message(url, explicit=False))
        ctx.emit([], None)
        return
    # names first: a malformed one is a usage error (2) even where no store is
    project = check_name(target, "project") if target and "/" not in target else None
    spec = _spec(target, ref="none") if target and "/" in target else None
    store = ctx.store
    if not target:
        from ._access import list_projects

        # only what this caller may read: projects the store refuses are skipped
        counts = [(p, len(store.artifacts(p))) for p in list_projects(store)[0]]
        if not counts and not ctx.json:
            ctx.note(f"no projects in {store.url}")
        ctx.emit([{"project": p, "artifacts": n} for p, n in counts],
                 _table(("PROJECT", "ARTIFACTS"), counts) if counts else None)
        return
    if project is not None:
        names = store.artifacts(project)
        if not names:
            raise NotFound(f"{project}: no such project in {store.url}{_did_you_mean(project, store.projects())}")
        docs: list[dict[str, Any]] = []
        for name in names:
            versions = store.versions(project, name)
            kind = store.manifest(project, name, versions[-1]).type if versions else None
            latest = store.aliases(project, name, versions=versions).get("latest")
            docs.append({"artifact": name, "type": kind, "versions": len(versions), "latest": latest})
        ctx.emit(docs, _table(("ARTIFACT", "TYPE", "VERSIONS", "LATEST"), [
            (d["artifact"], d["type"] or "-", d["versions"], "-" if d["latest"] is None else f"v{d['latest']}")
            for d in docs]))
        return
    assert spec is not None
    versions = store.versions(spec.project, spec.artifact)
    if not versions:
        store.resolve(Spec(spec.project, spec.artifact, None, "latest"))  # raises the precise NotFound
    aliases = store.aliases(spec.project, spec.artifact, versions=versions)
    vdocs = [_version_doc(store, spec.project, spec.artifact, n, aliases=aliases) for n in versions]
    ctx.emit(vdocs, _table(("VERSION", "ALIASES", "SIZE", "FILES", "CREATED", "DESCRIPTION"), [
        (f"v{d['version']}", ",".join(d["aliases"]), human_size(d["size"]), d["files"], _when(d["created"]),
         _one_line(d["description"])) for d in vdocs]))


def _show_text(doc: dict[str, Any]) -> str:
    lines = [
        doc["name"],
        f"  type         {doc['type']}",
        f"  digest       {doc['digest']}",
        f"  size         {human_size(doc['size'])} ({doc['size']} bytes)",
        f"  files        {doc['files']}",
        f"  aliases      {', '.join(doc['aliases']) or '-'}",
        f"  created      {_when(doc['created'])}",
        f"  description  {doc['description'] if doc['description'] is not None else '-'}",
    ]
    md = doc["metadata"]
    if md:
        lines.append("  metadata")
        lines += [f"    {k} = {json.dumps(v, ensure_ascii=False)}" for k, v in md.items()]
    else:
        lines.append("  metadata     -")
    if "entries" in doc:
        lines.append("  files:")
        rows = [(human_size(e["size"]), e["digest"] or e.get("ref") or "", e["path"]) for e in doc["entries"]]
        lines += ["    " + line for line in _table(("SIZE", "DIGEST", "PATH"), rows).splitlines()]
    return "\n".join(lines)


def cmd_show(ctx: Context) -> None:
    spec = _spec(ctx.args.spec)
    project, artifact, n = ctx.store.resolve(spec)
    doc = _version_doc(ctx.store, project, artifact, n, files=ctx.args.files)
    ctx.emit(doc, _show_text(doc))


def cmd_alias_set(ctx: Context) -> None:
    alias = check_alias(ctx.args.alias)
    spec = _spec(ctx.args.spec)
    project, artifact, n = ctx.store.resolve(spec)
    ctx.store.set_alias(project, artifact, alias, n)
    ctx.emit({"project": project, "artifact": artifact, "alias": alias, "version": n},
             f"{project}/{artifact}:{alias} -> v{n}")


def cmd_alias_rm(ctx: Context) -> None:
    spec = _spec(ctx.args.spec, ref="none")
    alias = check_alias(ctx.args.alias)
    old = ctx.store.aliases(spec.project, spec.artifact).get(alias)
    ctx.store.remove_alias(spec.project, spec.artifact, alias)
    ctx.emit({"project": spec.project, "artifact": spec.artifact, "alias": alias, "version": old},
             f"removed {spec.project}/{spec.artifact}:{alias}" + (f" (was v{old})" if old is not None else ""))


def cmd_alias_ls(ctx: Context) -> None:
    spec = _spec(ctx.args.spec, ref="none")
    store = ctx.store
    versions = store.versions(spec.project, spec.artifact)
    if not versions:
        store.resolve(Spec(spec.project, spec.artifact, None, "latest"))
    aliases = store.aliases(spec.project, spec.artifact, versions=versions)
    ctx.emit(aliases, _table(("ALIAS", "VERSION"), [(k, f"v{v}") for k, v in sorted(aliases.items())]))


_MISSING = object()


def cmd_describe(ctx: Context) -> None:
    a = ctx.args
    spec = _spec(a.spec)
    changes = _metadata(a.metadata, a.metadata_json)
    if a.description is None and not changes and not a.unset:
        raise UsageError("nothing to change: give --description, --metadata, --metadata-json or --unset")
    project, artifact, n = ctx.store.resolve(spec)
    art = ctx.store.artifact(f"{project}/{artifact}:v{n}")
    if a.description is not None:
        art.description = a.description or None
    art.metadata.update(changes)
    for k in a.unset or ():  # removing what is not there is done already: say so, apply the rest
        if art.metadata.pop(k, _MISSING) is _MISSING:
            ctx.note(f"note: --unset {k}: {art.qualified_name} has no such metadata key (nothing to remove)")
    art.save()
    doc = _version_doc(ctx.store, project, artifact, n)
    ctx.emit(doc, f"{art.qualified_name} updated")


def cmd_delete(ctx: Context) -> None:
    from ._store import HasAliases

    spec = _spec(ctx.args.spec, ref="required")
    project, artifact, n = ctx.store.resolve(spec)
    try:
        removed = ctx.store.delete_version(project, artifact, n, delete_aliases=ctx.args.delete_aliases)
    except HasAliases as e:  # the API's message names the keyword; here the flag is what to type
        raise ArtfsError(f"{e.name} has {'alias' if len(e.aliases) == 1 else 'aliases'} {', '.join(e.aliases)}; "
                         "add --delete-aliases to delete it with them") from None
    text = f"deleted {project}/{artifact}:v{n}"
    if removed:
        text += f" and its {'alias' if len(removed) == 1 else 'aliases'} {', '.join(removed)}"
    ctx.emit({"name": f"{project}/{artifact}:v{n}", "aliases_removed": removed}, text)


def cmd_gc(ctx: Context) -> None:
    project = check_name(ctx.args.project, "project")
    store = ctx.store
    if project not in store.backend.list_dirs(""):
        raise NotFound(f"{project}: no such project in {store.url}{_did_you_mean(project, store.projects())}")
    r = store.gc(project, dry_run=ctx.args.dry_run)
    verb = "would remove" if ctx.args.dry_run else "removed"
    text = (f"{project}: {verb} {_plural(r['blobs_removed'], 'unreferenced blob')} "
            f"({human_size(r['bytes_freed'])}) and {_plural(r['stale_removed'], 'stale file')}")
    if r.get("groups_removed"):
        text += f"; {_plural(r['groups_removed'], 'abandoned or finished group')} cleaned up"
    ctx.emit({"project": project, "dry_run": ctx.args.dry_run, **r}, text)


def _cache_doc(cache: Cache) -> dict[str, Any]:
    i = cache.info()
    return {"path": i.path, "blobs": i.blobs, "bytes": i.bytes, "partial": i.partial,
            "partial_bytes": i.partial_bytes, "limit": i.limit}


def cmd_cache_info(ctx: Context) -> None:
    d = _cache_doc(ctx.cache)
    text = "\n".join([
        f"path     {d['path']}",
        f"blobs    {d['blobs']} ({human_size(d['bytes'])})",
        f"partial  {d['partial']} ({human_size(d['partial_bytes'])})",
        f"limit    {human_size(d['limit'])}",
    ])
    ctx.emit(d, text)


def cmd_cache_cleanup(ctx: Context) -> None:
    target = _size(ctx.args.size)
    removed, freed = ctx.cache.cleanup(target)
    d = _cache_doc(ctx.cache)
    text = (f"removed {_plural(removed, 'file')} ({human_size(freed)}); the cache holds "
            f"{human_size(d['bytes'] + d['partial_bytes'])} in {d['path']}")
    ctx.emit({"removed": removed, "bytes_freed": freed, **d}, text)


# -- the parser ----------------------------------------------------------------------------------
def _global_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The same options on the main parser and on every subcommand (so they go before or after it).

    On subcommands their default is SUPPRESS, so an option given before the command is kept, and
    so is their help: ``artfs -h`` lists them once, ``artfs put -h`` shows only what ``put`` adds.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    def text(help: str) -> str:
        return argparse.SUPPRESS if suppress else help

    p.add_argument("--store", metavar="URL", default=default(None),
                   help=text("a directory, s3://bucket/prefix or https://... (default: $ARTFS_STORE, "
                             "else $XDG_DATA_HOME/artfs/store, i.e. ~/.local/share/artfs/store)"))
    p.add_argument("--cache-dir", metavar="DIR", default=default(None),
                   help=text("the local cache (default: $ARTFS_CACHE_DIR, else $XDG_CACHE_HOME/artfs, "
                             "i.e. ~/.cache/artfs)"))
    p.add_argument("--debug", action="store_true", default=default(False),
                   help=text("log details and print tracebacks"))
    p.add_argument("--no-sign-request", action="store_true", default=default(False),
                   help=text("send unsigned S3 requests, to read public projects without credentials "
                             "(also $ARTFS_NO_SIGN_REQUEST=1)"))


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _metadata_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE",
                   help="set a metadata key; VALUE is parsed as JSON when it parses, else kept as a string "
                        "(repeatable)")
    p.add_argument("--metadata-json", metavar="FILE_OR_JSON",
                   help="metadata as a JSON object: a file, '-' for stdin, or the JSON text itself")


def _register_builtin(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("put", parents=[common], help="log a directory as a new version",
                       description="Log DIR as the next version of an artifact. Only blobs the store lacks are "
                                   "uploaded; identical content creates no new version.")
    p.add_argument("-n", "--name", required=True, metavar="PROJECT/ARTIFACT",
                   help="the artifact to log a version of (created with its first version)")
    p.add_argument("-t", "--type", metavar="TYPE",
                   help="dataset, model, ... (default: the artifact's existing type, or 'unspecified')")
    p.add_argument("dir", metavar="DIR", nargs="?", help="the directory to log (optional with --reference)")
    p.add_argument("-a", "--alias", action="append", metavar="ALIAS", help="alias for the version (repeatable)")
    p.add_argument("-d", "--description", help="a description of the new version")
    _metadata_options(p)
    from ._refs import add_reference_args

    add_reference_args(p)
    _json_option(p)
    p.set_defaults(func=cmd_put, creates_store=True)

    p = sub.add_parser("get", parents=[common], help="download a version",
                       description="Place the files of a version under a directory (only what is not already "
                                   "there; every file is verified). Prints the directory.")
    p.add_argument("spec", metavar="PROJECT/ARTIFACT[:VERSION|:ALIAS]")
    p.add_argument("--root", metavar="DIR", help="target directory (default: ./artifacts/ARTIFACT:vN)")
    p.add_argument("--path", metavar="PREFIX", help="only this file or directory of the version")
    p.add_argument("--checkout", action="store_true", help="also remove files under DIR that are not in the version")
    p.add_argument("--allow-file", action="store_true",
                   help="copy file:// references too (refused by default: a manifest in a shared store must not "
                        "make this machine copy its own files)")
    p.add_argument("--file-root", dest="file_roots", action="append", default=[], metavar="DIR",
                   help="copy file:// references below DIR (after following symlinks; repeatable)")
    _json_option(p)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("ls", parents=[common], help="list projects, artifacts or versions")
    p.add_argument("target", nargs="?", metavar="PROJECT[/ARTIFACT]")
    _json_option(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", parents=[common], help="show one version")
    p.add_argument("spec", metavar="PROJECT/ARTIFACT[:VERSION|:ALIAS]")
    p.add_argument("--files", action="store_true", help="list the files too")
    _json_option(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("alias", parents=[common], help="set, remove or list aliases")
    asub = p.add_subparsers(dest="alias_command", metavar="ACTION", required=True)
    q = asub.add_parser("set", parents=[common], help="point ALIAS at a version (moving it if it exists)")
    q.add_argument("spec", metavar="PROJECT/ARTIFACT:VERSION")
    q.add_argument("alias", metavar="ALIAS")
    _json_option(q)
    q.set_defaults(func=cmd_alias_set)
    q = asub.add_parser("rm", parents=[common], help="remove an alias")
    q.add_argument("spec", metavar="PROJECT/ARTIFACT")
    q.add_argument("alias", metavar="ALIAS")
    _json_option(q)
    q.set_defaults(func=cmd_alias_rm)
    q = asub.add_parser("ls", parents=[common], help="list the aliases of an artifact")
    q.add_argument("spec", metavar="PROJECT/ARTIFACT")
    _json_option(q)
    q.set_defaults(func=cmd_alias_ls)

    p = sub.add_parser("describe", parents=[common], help="change the description or metadata of a version")
    p.add_argument("spec", metavar="PROJECT/ARTIFACT:VERSION")
    p.add_argument("-d", "--description", help="the new description ('' clears it)")
    _metadata_options(p)
    p.add_argument("--unset", action="append", metavar="KEY", help="remove a metadata key (repeatable)")
    _json_option(p)
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("delete", parents=[common], help="delete a version and the blobs only it used")
    p.add_argument("spec", metavar="PROJECT/ARTIFACT:VERSION")
    p.add_argument("--delete-aliases", action="store_true", help="also remove the aliases pointing at it")
    _json_option(p)
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("gc", parents=[common], help="remove blobs no version needs, and leftovers of crashes")
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("--dry-run", action="store_true", help="only report what would be removed")
    _json_option(p)
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("cache", parents=[common], help="inspect or shrink the local cache")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    q = csub.add_parser("info", parents=[common], help="where the cache is and what it holds")
    _json_option(q)
    q.set_defaults(func=cmd_cache_info)
    q = csub.add_parser("cleanup", parents=[common], help="evict least recently used blobs down to SIZE")
    q.add_argument("size", metavar="SIZE", help="e.g. 1GB, 500M, 0")
    _json_option(q)
    q.set_defaults(func=cmd_cache_cleanup)


def _plugins() -> list[Any]:
    mods = []
    for name in COMMAND_MODULES:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name != name:  # the module exists but one of its imports is missing: a real error
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    parser = argparse.ArgumentParser(
        prog="artfs",
        description="Versioned datasets and models: log directories as versions, fetch them, mount them.",
        epilog="Run 'artfs COMMAND -h' for the options of a command. The options above may also follow "
               "the command.",
    )
    _global_options(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"artfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_builtin(sub, common)
    for mod in _plugins():
        mod.register(sub, common)
    return parser


def command_names() -> list[str]:
    """The subcommands this installation has (built-in and from :data:`COMMAND_MODULES`)."""
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(str(name) for name in action.choices or ())
    return []


# -- entry points ----------------------------------------------------------------------------------
def _fail(msg: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"artfs: error: {' '.join(msg.split())}", file=sys.stderr)
    return code


def _oserror_message(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return e.strerror or str(e)


def _command_of(args: argparse.Namespace) -> str:
    sub = [getattr(args, k, None) for k in ("alias_command", "cache_command", "access_command")]
    return " ".join(str(x) for x in (args.command, *sub) if x)


def _target_of(args: argparse.Namespace) -> str | None:
    """The project or spec a command was given, to name it when the store refuses."""
    for k in ("spec", "name", "target", "project"):
        v = getattr(args, k, None)
        if isinstance(v, str) and v:
            return v
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``artfs`` command line; returns the exit code."""
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:
        print(f"artfs {__version__}")  # before building every command's parser (and importing it)
        return 0
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage error (2) or --help/--version (0)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    debug = bool(args.debug)
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
    if getattr(args, "no_sign_request", False):
        os.environ["ARTFS_NO_SIGN_REQUEST"] = "1"  # read by the S3 backend, inherited by the mount daemon
    try:
        return int(args.func(Context(args)) or 0)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, debug)
    except PermissionDenied as e:
        from ._access import refusal

        cmd = _command_of(args)
        said = str(e).startswith(cmd) or "refused by the store" in str(e)
        msg = str(e) if said else refusal(cmd, _target_of(args), e)
        return _fail(msg, e.exit_code, debug)
    except ArtfsError as e:
        return _fail(str(e), e.exit_code, debug)
    except BrokenPipeError:  # `artfs ls | head`: the reader is gone, so is our output
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        return _fail(_oserror_message(e), 1, debug)
    except Exception as e:  # a bug: say so, in one line unless --debug
        hint = "" if debug else " (run with --debug for the traceback)"
        return _fail(f"internal error: {type(e).__name__}: {e}{hint}", 1, debug)


# Options of ``mount -o`` that concern mount(8)/fstab, not artfs.
_MOUNT_GENERIC = frozenset({
    "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev", "nofail",
    "exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync", "async", "atime", "noatime", "relatime",
    "norelatime", "strictatime", "diratime", "nodiratime", "lazytime", "nolazytime", "loud", "silent",
})


def mount_args(argv: Sequence[str]) -> list[str] | None:
    """Translate ``mount.artfs STORE MNT [-sfnv] [-o opts]`` into ``artfs`` arguments (None: fake mount).

    ``ro`` becomes ``--read-only``; ``cache_dir=D`` and ``debug`` become global options; options of
    mount(8) itself (``rw``, ``noauto``, ``_netdev``, ``x-systemd.*``, ...) are dropped; any other
    ``key=value`` becomes ``--key value`` and a bare ``key`` becomes ``--key`` (``_`` read as ``-``).
    """
    positional: list[str] = []
    opts: list[str] = []
    fake = False
    it = iter(argv)
    for arg in it:
        if arg == "-o":
            opts += next(it, "").split(",")
        elif arg.startswith("-o"):
            opts += arg[2:].split(",")
        elif arg in ("-N", "-t"):
            next(it, None)
        elif arg.startswith("-") and len(arg) > 1 and not arg.startswith("--"):
            fake = fake or "f" in arg[1:]  # -s sloppy, -n no mtab, -v verbose: nothing to do
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise UsageError("usage: mount.artfs STORE MOUNTPOINT [-o OPTIONS]")
    glob: list[str] = []
    own: list[str] = []
    for o in filter(None, (o.strip() for o in opts)):
        key, sep, value = o.partition("=")
        if key in _MOUNT_GENERIC or key.startswith(("x-", "comment")):
            continue
        if key == "ro":
            own.append("--read-only")
        elif key == "debug":
            glob.append("--debug")
        elif key in ("cache_dir", "cache-dir"):
            glob += ["--cache-dir", value]
        else:
            own += [f"--{key.replace('_', '-')}"] + ([value] if sep else [])
    return None if fake else [*glob, "mount", positional[0], positional[1], *own]


def mount_helper(argv: Sequence[str] | None = None) -> int:
    """``mount.artfs``: lets ``mount -t artfs STORE MNT`` and fstab lines start a mount."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        translated = mount_args(argv)
        if "mount" not in command_names():
            raise ArtfsError("this installation of artfs has no 'mount' command yet")
    except ArtfsError as e:
        return _fail(str(e), e.exit_code, False)
    if translated is None:
        return 0
    return main(translated)


if __name__ == "__main__":  # python -m artfs.cli: run the imported module, not a second copy of it
    from artfs.cli import main as _main

    sys.exit(_main())
