"""A check's result (:class:`Check`), the three verdicts, and what several checks say."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable

OK, WARN, FAIL = "ok", "warn", "fail"
BUILD_FUSE = "run `artfs build-fuse`"
DOCTOR = "run `artfs doctor`"


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


def who() -> str:
    """This process's user, as the details name it: ``uid 1000 (me)``."""
    uid = os.getuid()
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def version(s: str) -> tuple[int, ...]:
    """``6.18.44-fc`` -> (6, 18, 44): release strings compared as numbers."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", s)
    return tuple(int(x) for x in m.groups() if x is not None) if m else ()
