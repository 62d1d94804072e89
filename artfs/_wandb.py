"""W&B's module-level functions that act on the current run, and those with nothing to do here.

``artfs.log``, ``artfs.define_metric``, ``artfs.log_code``, ``artfs.link_artifact`` call the
current run's method (ArtfsError before ``artfs.init()``, as W&B raises before ``wandb.init()``).
``artfs.config`` and ``artfs.summary`` are the current run's (see ``artfs.__getattr__``).

W&B features that live on W&B's server have no meaning for a store of files; where a script
merely calls them they are accepted and do nothing: ``login`` (no account: the store's own
credentials apply; says so once in the debug log), ``watch``/``unwatch`` (gradient charts),
``alert`` (printed on stderr instead), ``sweep``/``agent``/``controller`` (hyperparameter sweeps:
``sweep`` returns an id, ``agent`` calls the function ``count`` times, once if not given),
``save`` (run files), ``setup``/``teardown``, ``Settings``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from ._errors import ArtfsError
from ._run import _need_current, current
from ._term import termwarn

log = logging.getLogger("artfs")
_said: set[str] = set()


def _once(what: str, message: str) -> None:
    if what not in _said:
        _said.add(what)
        log.debug(message)


def login(*args: Any, **kwargs: Any) -> bool:
    """No account to log in to: the store's credentials (AWS, file modes) decide access."""
    _once("login", "artfs.login(): nothing to do; artfs has no accounts (the store's credentials apply)")
    return True


def log_metrics(data: dict[str, Any], step: int | None = None, commit: bool | None = None,
                sync: bool | None = None) -> None:
    """``artfs.log``: ``Run.log`` of the current run."""
    _need_current("log").log(data, step=step, commit=commit)


def define_metric(name: str, *args: Any, **kwargs: Any) -> Any:
    """``Run.define_metric`` of the current run."""
    return _need_current("define_metric").define_metric(name, *args, **kwargs)


def log_code(*args: Any, **kwargs: Any) -> Any:
    """``Run.log_code`` of the current run."""
    return _need_current("log_code").log_code(*args, **kwargs)


def watch(*args: Any, **kwargs: Any) -> None:
    """W&B charts gradients on its server; accepted, nothing is recorded."""
    _once("watch", "artfs.watch(): accepted, nothing is recorded (gradient charts are a W&B server feature)")


def unwatch(*args: Any, **kwargs: Any) -> None:
    """Accepted (see ``watch``)."""


def alert(title: str = "", text: str = "", *args: Any, **kwargs: Any) -> None:
    """W&B sends alerts from its server; artfs prints them on stderr."""
    termwarn(f"alert: {title}: {text}")


def save(*args: Any, **kwargs: Any) -> bool:
    """``Run.save`` of the current run (accepted; see there)."""
    run = current()
    return run.save(*args, **kwargs) if run is not None else True


def sweep(sweep: Any = None, *args: Any, **kwargs: Any) -> str:
    """Sweeps are run by W&B's server; the id returned makes ``agent`` call the function."""
    _once("sweep", "artfs.sweep(): hyperparameter search is a W&B server feature; agent() runs the function")
    return "artfs-sweep"


def agent(sweep_id: str, function: Callable[[], Any] | None = None, entity: str | None = None,
          project: str | None = None, count: int | None = None) -> None:
    """Calls ``function`` ``count`` times (once without ``count``): no server proposes parameters."""
    if function is None:
        raise ArtfsError("artfs.agent needs function=...: there is no sweep server to run a program")
    for _ in range(count or 1):
        function()


def controller(*args: Any, **kwargs: Any) -> None:
    """Sweep controllers run on W&B's server: ArtfsError."""
    raise ArtfsError("sweep controllers run on W&B's server; artfs has none")


def setup(*args: Any, **kwargs: Any) -> None:
    """Accepted (W&B starts its service process here)."""


def teardown(exit_code: int | None = None) -> None:
    """Finishes the current run, as W&B's ``teardown`` does."""
    run = current()
    if run is not None:
        run.finish(exit_code)


class Settings:
    """``wandb.Settings(...)``: accepted and kept; nothing in artfs reads it."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        return f"Settings({self.__dict__!r})"
