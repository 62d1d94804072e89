"""The boto3 client of an S3 store: endpoint, addressing style, botocore's retries bounded by the
store's time budget (:mod:`artfs.backends._s3retry`), socket timeouts, unsigned requests.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from .._errors import StoreUnavailable
from ._s3retry import DEFAULT_MAX_ATTEMPTS, _aws_retry_config, _bound_retries
from .base import max_backoff


def retry_settings(max_attempts: int | None) -> tuple[str, int]:
    """The retry mode and the attempts (``max_attempts`` if given, else the AWS configuration's)."""
    mode, aws_attempts = _aws_retry_config()
    return mode or "standard", max_attempts or aws_attempts or DEFAULT_MAX_ATTEMPTS


def make_client(*, url: str, endpoint_url: str | None, mode: str, max_attempts: int, socket_timeout: float,
                unsigned: bool, timeout: float, start_budget: Callable[..., None],
                error: Callable[[BaseException, str], BaseException]) -> tuple[Any, Any]:
    """The boto3 client of the store ``url`` and its session (its endpoint, addressing style,
    retries bounded by its budget, socket timeouts, signing). ``start_budget`` is registered to
    run before each call, ``error`` turns boto3's errors into artfs's; the values are passed in,
    so this module does not import :mod:`artfs.backends.s3`, which calls it."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:  # pragma: no cover - boto3 is a dependency
        raise StoreUnavailable(f"{url}: the S3 backend needs boto3 ({e})") from None

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
        "AWS_ENDPOINT_URL"
    )
    # custom endpoints (MinIO, moto, Ceph, ...) rarely resolve virtual-hosted bucket names
    addressing = os.environ.get("ARTFS_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
    config = Config(
        # total_max_attempts counts the first request, as AWS_MAX_ATTEMPTS does
        retries={"mode": mode, "total_max_attempts": max_attempts},
        # a large part or a slow CompleteMultipartUpload gets no longer: S3 keeps the
        # connection busy (whitespace) while it completes, and a moving upload never times out
        connect_timeout=socket_timeout,
        read_timeout=socket_timeout,
        max_pool_connections=32,
        s3={"addressing_style": addressing},
        **_unsigned_config(unsigned),
    )
    try:
        # a private session: boto3's default session is not thread-safe to create clients from
        session = boto3.session.Session()
        region = session.region_name or ("us-east-1" if endpoint else None)
        client = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
    except Exception as e:
        raise error(e, "") from None
    client.meta.events.register("before-call.s3", start_budget)
    if mode in ("standard", "adaptive"):
        _bound_retries(client, socket_timeout, max_attempts, max_backoff(timeout))
    return client, session


def no_sign_request_from_env() -> bool:
    """Whether ``$ARTFS_NO_SIGN_REQUEST`` asks for unsigned requests (``1``, ``true``, ``yes``)."""
    return os.environ.get("ARTFS_NO_SIGN_REQUEST", "").strip().lower() in ("1", "true", "yes", "on")


def _unsigned_config(unsigned: bool) -> dict[str, Any]:
    if not unsigned:
        return {}
    from botocore import UNSIGNED

    return {"signature_version": UNSIGNED}
