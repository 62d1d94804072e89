"""What every command shares: the :class:`Context` (store and cache opened on first use), the
options common to several commands, the parsing of their values, and the one mapping of errors
to a one-line message and an exit code (:func:`run`):

    ArtfsError (and UsageError)  exc.exit_code (InvalidName 2, NotFound 3, ... see artfs._errors)
    PermissionDenied             7, the message naming the command and the project (artfs._access)
    OSError                      1   (a missing DIR, a full disk, ...)
    BrokenPipeError              141 (``artfs ls | head``), silently
    KeyboardInterrupt            130
    anything else                1   ("internal error"; a bug, the traceback with --debug)

(argparse's usage errors, exit code 2, are :func:`artfs.cli.main`'s.) Tracebacks are printed only
with ``--debug``.

Start-up time: the store (and with it httpx and boto3) is imported when a command first uses
``ctx.store``, not when this module is, so that ``artfs --version`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import os
import sys
import traceback
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .._cache import Cache, parse_size
from .._errors import ArtfsError, NotFound, PermissionDenied
from .._names import Spec, parse_spec
from ..backends import default_store_url
from . import output

if TYPE_CHECKING:
    from .._store import Store

log = logging.getLogger("artfs")


class UsageError(ArtfsError):
    """A command line that cannot work (bad ``k=v``, conflicting options, ...)."""

    exit_code = 2


def missing_store_message(path: str, *, explicit: bool) -> str:
    """What to say about a local store directory that does not exist."""
    if explicit:
        return f"no store at {path} (check the path; 'artfs put' or a writable 'artfs mount' creates a new one)"
    return f"no store yet at {path}; 'artfs put' (or a writable 'artfs mount') creates it"


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
        from .._store import Store  # here, not at the top: see the module's docstring

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
        output.emit(doc, text, as_json=self.json)

    @staticmethod
    def note(msg: str) -> None:
        output.note(msg)

    @contextlib.contextmanager
    def progress(self, total: int, desc: str) -> Iterator[Callable[[int], None] | None]:
        """A thread-safe ``progress(nbytes)`` callback drawing a bar on stderr, or None off a terminal."""
        with output.progress(total, desc) as cb:
            yield cb


# -- options shared by several commands ----------------------------------------------------------
def global_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
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


def json_option(p: argparse.ArgumentParser, help: str = "print the result as JSON") -> None:
    p.add_argument("--json", action="store_true", help=help)


def metadata_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE",
                   help="set a metadata key; VALUE is parsed as JSON when it parses, else kept as a string "
                        "(repeatable)")
    p.add_argument("--metadata-json", metavar="FILE_OR_JSON",
                   help="metadata as a JSON object: a file, '-' for stdin, or the JSON text itself")


# -- parsing option values -----------------------------------------------------------------------
def spec(s: str, *, ref: str = "optional") -> Spec:
    """Parse ``proj/art[:ref]``; ``ref`` is "optional" (default latest), "required" or "none"."""
    parsed = parse_spec(s, need_ref=(ref == "optional"))
    if ref == "required" and ":" not in s:
        raise UsageError(f"{s!r}: name the version, e.g. {s}:v0 or {s}:latest")
    if ref == "none" and ":" in s:
        raise UsageError(f"{s!r}: expected project/artifact without a version or alias")
    return parsed


def did_you_mean(name: str, names: Sequence[str]) -> str:
    """``; did you mean x?`` for the closest of ``names`` (difflib), or ""."""
    close = difflib.get_close_matches(name, list(names), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


def metadata(pairs: Sequence[str] | None, json_arg: str | None = None) -> dict[str, Any]:
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


def size(s: str) -> int:
    try:
        return parse_size(s)
    except ArtfsError as e:
        raise UsageError(str(e)) from None


# -- errors -> one line and an exit code ---------------------------------------------------------
def fail(msg: str, code: int, debug: bool) -> int:
    """Print ``artfs: error: <msg>`` (one line; the traceback first with --debug); returns ``code``."""
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


def run(args: argparse.Namespace) -> int:
    """Run the parsed command ``args.func(Context(args))``; every error becomes its exit code here."""
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
        return fail("interrupted", 130, debug)
    except PermissionDenied as e:
        from .._access import refusal  # only when the store refused

        cmd = _command_of(args)
        said = str(e).startswith(cmd) or "refused by the store" in str(e)
        msg = str(e) if said else refusal(cmd, _target_of(args), e)
        return fail(msg, e.exit_code, debug)
    except ArtfsError as e:
        return fail(str(e), e.exit_code, debug)
    except BrokenPipeError:  # `artfs ls | head`: the reader is gone, so is our output
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        return fail(_oserror_message(e), 1, debug)
    except Exception as e:  # a bug: say so, in one line unless --debug
        hint = "" if debug else " (run with --debug for the traceback)"
        return fail(f"internal error: {type(e).__name__}: {e}{hint}", 1, debug)
