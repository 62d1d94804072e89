"""HTTP plumbing shared by the HTTPS store (:mod:`artfs.backends.http`) and the ``http(s)://`` and
``gs://`` references (:mod:`artfs._refs`): one ``httpx.Client`` per user with a time budget per
request, retries of idempotent requests within that budget, and the mapping of error statuses.

The rule is the S3 store's: ``ARTFS_HTTP_TIMEOUT`` seconds (default 15) is the budget of each
request, retries included. An idempotent request that fails with a 429/5xx, a refused or broken
connection or a timeout is retried with exponential backoff and full jitter (as botocore's
standard mode, but capped at a tenth of the budget) until the budget is spent, counted from its
start; each attempt gives up after a third of the budget (at least a second) without progress, so
a stalled server is retried too, and the last attempts are cut to the time left, so attempts
spread over the whole budget and the request never outlasts it (:func:`retry_within`).

Importing this module imports httpx; :mod:`artfs._refs` imports it only when an ``http(s)://``
or ``gs://`` reference is used.
"""

from __future__ import annotations

import email.utils
import random
import time
import weakref
from contextvars import ContextVar
from typing import Callable, TypeVar

import httpx

from .._errors import ArtfsError, NotFound, PermissionDenied, StoreUnavailable
from .base import max_backoff, timeout_from_env

DEFAULT_TIMEOUT = 15.0
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: how much of a streamed body is read at a time
CHUNK = 1 << 20
#: the time budget of each client made by :func:`make_client` (its per-attempt timeouts are less)
_BUDGETS: "weakref.WeakKeyDictionary[httpx.Client, float]" = weakref.WeakKeyDictionary()
_T = TypeVar("_T")
#: how much of a streamed body is read at a time
CHUNK = 1 << 20


def attempt_timeout(budget: float) -> float:
    """The socket timeout of one attempt: a third of the budget (so a stall is retried), >= 1 s."""
    return min(budget, max(1.0, budget / 3))


#: the shortest attempt worth starting: with less of the budget left, the last error is raised
MIN_ATTEMPT = 1.0
#: the deadline of the outermost :func:`retry_within` running in this thread (or task): nested
#: retries (a body read retried around a request that retries its head) share one budget
_DEADLINE: ContextVar[float | None] = ContextVar("artfs_retry_deadline", default=None)


def backoff(attempt: int, budget: float) -> float:
    """Seconds to sleep before retry ``attempt`` (1, 2, ...): botocore's exponential backoff with
    full jitter (random up to ``2**(attempt-1)`` s), capped at :func:`max_backoff`."""
    return random.random() * min(max_backoff(budget), 2.0 ** (attempt - 1))


def time_left() -> float | None:
    """Seconds left of the budget of the :func:`retry_within` this runs under (None outside one)."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def retry_within(budget: float, attempt: Callable[[], _T], retryable: Callable[[Exception], bool]) -> _T:
    """Call ``attempt`` until it returns, an error is not ``retryable`` or too little of the budget
    is left for another attempt after the next backoff; the last error is then raised.

    Retries spread over the whole budget: the backoff is capped at a tenth of it, and the last
    attempts are cut to what is left (``attempt`` reads :func:`time_left` for its timeouts), so the
    whole call ends within the budget and gives up only with less than :data:`MIN_ATTEMPT` left.
    Called inside another ``retry_within`` (of this thread), it keeps the outer deadline.
    """
    outer = _DEADLINE.get()
    deadline = outer if outer is not None else time.monotonic() + budget
    token = _DEADLINE.set(deadline)
    least = min(MIN_ATTEMPT, budget / 3)
    try:
        n = 0
        while True:
            try:
                return attempt()
            except Exception as e:
                n += 1
                delay = backoff(n, budget)
                if not retryable(e) or deadline - time.monotonic() - delay < least:
                    raise
            time.sleep(delay)
    finally:
        _DEADLINE.reset(token)


def clipped(per_attempt: float) -> httpx.Timeout:
    """The timeouts of one attempt: ``per_attempt``, or less when less of the budget is left."""
    left = time_left()
    t = per_attempt if left is None else max(0.05, min(per_attempt, left))
    return httpx.Timeout(t, connect=min(t, 5.0))


def _timeout_from_env() -> float:
    return timeout_from_env("ARTFS_HTTP_TIMEOUT", DEFAULT_TIMEOUT)


def make_client(timeout: float | None = None, *, follow_redirects: bool = False) -> httpx.Client:
    """An ``httpx.Client`` whose requests through :func:`send` are bounded by ``timeout`` seconds
    (default ``ARTFS_HTTP_TIMEOUT``), retries included; one attempt waits :func:`attempt_timeout`."""
    t = float(timeout) if timeout is not None else _timeout_from_env()
    per_attempt = attempt_timeout(t)
    client = httpx.Client(
        timeout=httpx.Timeout(per_attempt, connect=min(per_attempt, 5.0)),
        follow_redirects=follow_redirects,
        headers={"User-Agent": "artfs", "Accept-Encoding": "identity"},
    )
    _BUDGETS[client] = t
    return client


def budget_of(client: httpx.Client) -> float:
    """The time budget of a request through ``client``."""
    return _BUDGETS.get(client, DEFAULT_TIMEOUT)


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    stream: bool = False,
    what: str | None = None,
) -> httpx.Response:
    """Send an idempotent request, retrying 429/5xx answers and transport failures until the
    client's time budget (:func:`budget_of`) is spent.

    Returns the response whatever its status (the caller maps 4xx to its own errors); raises
    :class:`StoreUnavailable` once the budget is spent. With ``stream`` the caller must close
    the response.
    """
    what = what or url
    budget = budget_of(client)
    tries = [0]

    def attempt() -> httpx.Response:
        tries[0] += 1
        req = client.build_request(method, url, headers=headers, params=params,
                                   timeout=clipped(attempt_timeout(budget)))
        r = client.send(req, stream=stream)
        if r.status_code in _RETRY_STATUS:
            r.close()
            raise _RetryStatus(r)
        return r

    try:
        return retry_within(budget, attempt, _transient)
    except _RetryStatus as e:
        last = f"HTTP {e.response.status_code} {e.response.reason_phrase}"
    except httpx.TransportError as e:  # timeouts, refused connections, broken reads
        last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    raise StoreUnavailable(
        f"{what}: unavailable after {tries[0]} attempts in the {budget:g} s budget "
        f"(ARTFS_HTTP_TIMEOUT) ({last})")


class _RetryStatus(Exception):
    """An answer worth retrying (429/5xx)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _transient(e: Exception) -> bool:
    return isinstance(e, (_RetryStatus, httpx.TransportError))


def http_mtime(r: httpx.Response) -> float:
    lm = r.headers.get("last-modified")
    if lm:
        try:
            return email.utils.parsedate_to_datetime(lm).timestamp()
        except (TypeError, ValueError):
            pass
    return 0.0


def slice_stream(r: httpx.Response, offset: int, length: int) -> bytes:
    """``length`` bytes from ``offset`` of a whole-object response, reading no further than needed."""
    out = bytearray()
    pos = 0
    end = offset + length
    for chunk in r.iter_bytes(CHUNK):
        lo, hi = max(offset - pos, 0), min(end - pos, len(chunk))
        if lo < hi:
            out += chunk[lo:hi]
        pos += len(chunk)
        if pos >= end:
            break
    return bytes(out)


def check_status(r: httpx.Response, what: str) -> None:
    """Map an error status of a reference read to an artfs error (the references' reads)."""
    s = r.status_code
    if s < 400:
        return
    if s in (404, 410):
        raise NotFound(f"{what}: not found (HTTP {s})")
    if s in (401, 403):
        raise PermissionDenied(f"{what}: access denied (HTTP {s})")
    raise ArtfsError(f"{what}: HTTP {s} {r.reason_phrase}") if s < 500 else StoreUnavailable(
        f"{what}: HTTP {s} {r.reason_phrase}"
    )
