"""W&B's ``termlog``/``termwarn``/``termerror``: one line on stderr, prefixed ``artfs:``.

Scripts call these to talk to their user (``wandb.termwarn("no GPU")``); artfs prints them the
way W&B does (``wandb: WARNING ...`` becomes ``artfs: WARNING ...``) and, like W&B, prints a
message given with ``repeat=False`` once per process. ``ARTFS_SILENT=1`` (or W&B's
``WANDB_SILENT=true``) silences ``termlog``; warnings and errors still print.
"""

from __future__ import annotations

import os
import sys
import threading

_seen: set[str] = set()
_lock = threading.Lock()


def _silent() -> bool:
    return os.environ.get("ARTFS_SILENT", "") not in ("", "0") or os.environ.get("WANDB_SILENT", "").lower() in (
        "1", "true", "yes")


def _emit(level: str, string: str, newline: bool, repeat: bool, prefix: bool) -> None:
    if not repeat:
        with _lock:
            if string in _seen:
                return
            _seen.add(string)
    head = "artfs: " + (f"{level} " if level else "") if prefix else ""
    text = "\n".join(head + line for line in str(string).split("\n"))
    sys.stderr.write(text + ("\n" if newline else ""))
    sys.stderr.flush()


def termlog(string: str = "", newline: bool = True, repeat: bool = True, prefix: bool = True) -> None:
    """A message for the user on stderr (not with ``ARTFS_SILENT``/``WANDB_SILENT``)."""
    if not _silent():
        _emit("", string, newline, repeat, prefix)


def termwarn(string: str, newline: bool = True, repeat: bool = True, prefix: bool = True) -> None:
    """``artfs: WARNING <string>`` on stderr."""
    _emit("WARNING", string, newline, repeat, prefix)


def termerror(string: str, newline: bool = True, repeat: bool = True, prefix: bool = True) -> None:
    """``artfs: ERROR <string>`` on stderr."""
    _emit("ERROR", string, newline, repeat, prefix)
