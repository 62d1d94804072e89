"""The S3 backend's time budget: botocore's retries bounded by time, a broken body detected.

Retries stay botocore's own (its "standard" mode: which errors, backoff with full jitter, the
retry quota; ``retry_mode``/``max_attempts`` from the AWS configuration are honoured);
:func:`_bound_retries` only makes them stop when the request's budget (``ARTFS_S3_TIMEOUT``
seconds, default 15) is spent, and each attempt gives up after a third of it without progress
(:func:`_attempt_timeout`). A response body that breaks off after botocore handed the response
over raises :class:`_BodyBroke` (:func:`_read_body`), which :meth:`S3Backend._reading
<artfs.backends.s3.S3Backend._reading>` retries within the same budget.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, Callable

from .base import timeout_from_env

DEFAULT_TIMEOUT = 15.0
#: attempts per request when the AWS configuration names none: the time budget is the real bound
DEFAULT_MAX_ATTEMPTS = 1000


def _timeout_from_env() -> float:
    return timeout_from_env("ARTFS_S3_TIMEOUT", DEFAULT_TIMEOUT)


def _attempt_timeout(timeout: float) -> float:
    """Socket timeout of one attempt (connect; and the longest wait for the next byte either way).

    A third of the budget, so a stalled request is tried about three times before the budget is
    spent, but never under a second: a loaded server may be slow to answer a legitimate request.
    """
    return min(timeout, max(1.0, timeout / 3))


def _aws_retry_config() -> tuple[str | None, int | None]:
    """``retry_mode`` and ``max_attempts`` if the user set them (env or AWS config file), else None."""
    import botocore.session

    try:
        s = botocore.session.Session()
        mode = s.get_config_variable("retry_mode", methods=("env", "config"))
        attempts = s.get_config_variable("max_attempts", methods=("env", "config"))
    except Exception:  # a broken ~/.aws/config is reported when the client is made
        return None, None
    return (str(mode) if mode else None), (int(attempts) if attempts else None)


def _bound_retries(client: Any, attempt_timeout: float, max_attempts: int, max_delay: float) -> None:
    """Make botocore's standard/adaptive retry handler stop when the request's time budget is spent.

    botocore bounds retries by a count only. Its decision (which errors to retry, backoff with
    jitter, retry quota) is kept as it is: the handler it registered is replaced by the same
    handler wrapped so that a retry is refused when its backoff plus one more attempt would end
    past the deadline the ``before-call`` hook stored in the request's context, and a backoff is
    capped at ``max_delay`` (a tenth of the budget: botocore's own cap, 20 s, would let the backoff
    of the fourth or fifth retry overshoot a 15 s budget and give up with half of it left). The
    attempt timeout cannot be cut per attempt in botocore, so the last attempt starts no later
    than one attempt timeout before the deadline. The legacy mode
    is left alone (attempts then bound it: ``max_attempts`` times the attempt timeout).
    """
    from botocore.retries import standard

    events = client.meta.events
    service = client.meta.service_model.service_id.hyphenize()
    events.unregister(f"needs-retry.{service}", unique_id=f"retry-config-{service}")

    def bounded(inner: Callable[..., float | None]) -> Callable[..., float | None]:
        def needs_retry(**kwargs: Any) -> float | None:
            delay = inner(**kwargs)
            if delay is None:
                return None
            delay = min(delay, max_delay)
            context = (kwargs.get("request_dict") or {}).get("context") or {}
            deadline = context.get("artfs_deadline")
            if deadline is not None and time.monotonic() + delay + attempt_timeout > deadline:
                return None  # the budget is spent: the last error is raised
            return delay

        return needs_retry

    class _Events:  # what register_retry_handler needs of a client: register(), wrapping its handler
        def register(self, event: str, handler: Callable[..., Any], unique_id: str | None = None,
                     **kw: Any) -> None:
            if event.split(".")[0] == "needs-retry":
                handler = bounded(handler)
            events.register(event, handler, unique_id=unique_id, **kw)

    shim = SimpleNamespace(meta=SimpleNamespace(service_model=client.meta.service_model, events=_Events()))
    standard.register_retry_handler(shim, max_attempts=max_attempts)


class _BodyBroke(Exception):
    """A response body broke off (reset, stall, short read, bad checksum) after botocore handed
    the response over: botocore retries a request only until its headers arrive."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _read_body(body: Any, *size: int) -> bytes:
    try:
        data: bytes = body.read(*size)
    except Exception as e:
        raise _BodyBroke(e) from e
    return data

