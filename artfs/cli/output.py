"""How the ``artfs`` command prints results: the one place that formats sizes, times, tables.

Every command hands its result to :func:`emit` (through ``Context.emit``): a JSON document with
``--json`` (what scripts parse; its numbers are raw bytes and ISO times, never formatted), else a
text for people built with the helpers below. Sizes are printed one way everywhere, by
:func:`human_size` (``1.5 MiB``: powers of 1024 named as such, the units :func:`artfs.parse_size`
also reads). Results go to stdout; notes, warnings and progress bars go to stderr, so that
``artfs get ... | xargs`` and ``--json | jq`` see only the result.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import sys
import threading
from typing import Any, Callable, Iterator, Sequence

from .._units import human_size as human_size  # the one formatter, shared with the library
from .._umount import DraftCommit

def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def when(iso: str) -> str:
    """A manifest's or run record's UTC timestamp as local ``YYYY-MM-DD HH:MM:SS``."""
    try:
        return _dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def when_epoch(t: float) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM:SS`` (``-`` for none)."""
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart, under upper-case headers (None prints as nothing)."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def one_line(s: str | None, width: int = 60) -> str:
    """``s`` with its whitespace collapsed, cut to ``width`` characters with ``…``."""
    s = " ".join((s or "").split())
    return s if len(s) <= width else s[: width - 1] + "…"


def emit(doc: Any, text: str | None, *, as_json: bool) -> None:
    """The command's result on stdout: ``doc`` as JSON with ``--json``, else ``text`` (if any)."""
    if as_json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    elif text:
        print(text)


def note(msg: str) -> None:
    """A diagnostic for the person at the terminal: stderr, never mixed into the result."""
    print(msg, file=sys.stderr)


@contextlib.contextmanager
def progress(total: int, desc: str) -> Iterator[Callable[[int], None] | None]:
    """A thread-safe ``progress(nbytes)`` callback drawing a bar on stderr, or None off a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]  # only on a terminal

    lock = threading.Lock()
    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
              file=sys.stderr, leave=False, dynamic_ncols=True) as bar:

        def update(n: int) -> None:
            with lock:
                bar.update(n)

        yield update


def uploaded(files: int, blobs: int, nbytes: int) -> str:
    """``3 files, 1 new blob, 9 B uploaded``: what a commit, a put or a part sent to the store."""
    return f"{plural(files, 'file')}, {plural(blobs, 'new blob')}, {human_size(nbytes)} uploaded"


#: Why a commit of a draft made no new version.
MATCHED = "already in the store (identical content, or an interrupted commit made it)"


def commit_text(c: DraftCommit) -> str:
    """One line about a commit of a draft (``artfs commit``, also through a mount, ``artfs umount``)."""
    sent = uploaded(c.files, c.uploaded_blobs, c.uploaded_bytes)
    if c.group:  # artfs mount --group: the draft became a part of a pending group
        return (f"{c.name}: recorded as a part of group {c.group} ({sent}); "
                f"`artfs finish {c.name} --group {c.group}` makes the version")
    if not c.committed:
        what = f"its base v{c.version}" if c.version is not None else "an empty new artifact"
        return f"nothing to commit: the draft of {c.name} equals {what}"
    if not c.created:
        return f"{c.name}:v{c.version} matched: {MATCHED}"
    text = f"{c.name}:v{c.version} created ({sent})"
    if c.aliases:
        text += f"; aliases: {', '.join(c.aliases)}"
    return text
