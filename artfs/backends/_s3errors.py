"""The S3 backend's errors: every boto3/botocore/s3transfer exception as an artfs error.

One-line messages naming the key and the endpoint; see :func:`artfs_error`
(:meth:`S3Backend.artfs_error <artfs.backends.s3.S3Backend.artfs_error>`).
"""

from __future__ import annotations

from .._errors import AlreadyExists, ArtfsError, NotFound, PermissionDenied, StoreUnavailable

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket", "NoSuchUpload"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccountProblem",
}
_EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


class _NoSuchBucket(NotFound):
    """The bucket itself is missing (a NotFound to callers, but never "the key is absent")."""

def artfs_error(e: BaseException, key: str, *, url: str, bucket: str, timeout: float, where: str,
                exclusive: bool = False) -> BaseException:
    """The artfs error for a boto3/botocore/s3transfer exception (others are returned as-is).

    The store is named by the values its messages need (``where``: the key or store and the
    endpoint), not by the backend: this module does not import :mod:`artfs.backends.s3`."""
    if isinstance(e, ArtfsError):
        return e
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError as BotoConnectionError,
        CredentialRetrievalError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    # boto3's transfer wrappers hide the real error; unwrap it
    inner = getattr(e, "last_exception", None) or (
        e.__context__ if type(e).__name__ == "S3UploadFailedError" else None
    )
    if isinstance(inner, BaseException) and inner is not e:
        return artfs_error(inner, key, url=url, bucket=bucket, timeout=timeout, where=where, exclusive=exclusive)

    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code") or "")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        msg = err.get("Message") or code or str(status)
        if exclusive and (code in _EXISTS or status in (409, 412)):
            return AlreadyExists(f"{key}: already exists ({where})")
        if code == "NoSuchBucket":
            return _NoSuchBucket(
                f"{key or url}: bucket {bucket!r} does not exist ({where})"
            )
        if code in _NOT_FOUND or status == 404:
            return NotFound(f"{key}: not found in the store ({where})")
        if code in _DENIED or status == 403:
            return PermissionDenied(f"{key or url}: access denied: {msg} ({where})")
        what = key or url
        return StoreUnavailable(f"{what}: S3 error {code or status}: {msg} ({where})")
    if isinstance(e, (NoCredentialsError, PartialCredentialsError, ProfileNotFound)):
        return PermissionDenied(f"{key or url}: no usable AWS credentials: {e} ({where})")
    if isinstance(e, CredentialRetrievalError):
        return StoreUnavailable(f"{key or url}: cannot get AWS credentials: {e} ({where})")
    if isinstance(e, (BotoConnectionError, HTTPClientError)):
        return StoreUnavailable(
            f"{key or url}: S3 endpoint unreachable (gave up after the "
            f"{timeout:g} s budget, ARTFS_S3_TIMEOUT): {e} ({where})"
        )
    if isinstance(e, BotoCoreError):
        return StoreUnavailable(f"{key or url}: {e} ({where})")
    if isinstance(e, (ConnectionError, TimeoutError)):
        return StoreUnavailable(f"{key or url}: {e} ({where})")
    if _is_botocore(e):
        return StoreUnavailable(f"{key or url}: {type(e).__name__}: {e} ({where})")
    return e  # not a store failure (a bug, a bad argument): let it surface as it is


def _is_botocore(e: BaseException) -> bool:
    return type(e).__module__.startswith(("botocore", "boto3", "s3transfer", "urllib3"))
