"""Sizes for people: the one way artfs prints a byte count (the CLI's results, a draft's status)."""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n: int | float) -> str:
    """``45.2 MiB``: one decimal from KiB up, whole bytes below 1 KiB (``0 B``, ``1023 B``)."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in _UNITS:
        n /= 1024
        if round(n, 1) < 1024 or unit == _UNITS[-1]:  # 1023.97 KiB is "1.0 MiB", not "1024.0 KiB"
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")
