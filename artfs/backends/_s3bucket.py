"""What concerns an S3 store's bucket as a whole rather than one key: listing (of keys, of one
level of "directories"), the gc of multipart uploads left unfinished, and creating the bucket.
:class:`~artfs.backends.s3.S3Backend`'s methods of those names call these.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Protocol

from .._errors import NotFound
from .base import ObjectInfo


class Bucket(Protocol):
    """What these functions need of the store (:class:`~artfs.backends.s3.S3Backend` is one): this
    module does not import :mod:`artfs.backends.s3`, which calls it."""

    @property
    def bucket(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def client(self) -> Any: ...
    def artfs_error(self, e: BaseException, key: str, *, exclusive: bool = False) -> BaseException: ...


def _full_prefix(b: Bucket, prefix: str) -> str:
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return b.prefix + prefix


def list_objects(b: Bucket, prefix: str) -> Iterator[ObjectInfo]:
    full = _full_prefix(b, prefix)
    n = len(b.prefix)
    try:
        pages = b.client.get_paginator("list_objects_v2").paginate(
            Bucket=b.bucket, Prefix=full
        )
        for page in pages:
            for obj in page.get("Contents", ()):
                yield ObjectInfo(
                    obj["Key"][n:], int(obj["Size"]), obj["LastModified"].timestamp()
                )
    except Exception as e:
        raise b.artfs_error(e, prefix) from None


def list_dirs(b: Bucket, prefix: str) -> list[str]:
    full = _full_prefix(b, prefix)
    names = []
    try:
        pages = b.client.get_paginator("list_objects_v2").paginate(
            Bucket=b.bucket, Prefix=full, Delimiter="/"
        )
        for page in pages:
            for cp in page.get("CommonPrefixes", ()):
                name = cp["Prefix"][len(full) :].rstrip("/")
                if name:
                    names.append(name)
    except Exception as e:
        raise b.artfs_error(e, prefix) from None
    return sorted(names)


def gc_tmp(b: Bucket, older_than: float) -> int:
    """Abort the multipart uploads under the store's prefix started over ``older_than`` s ago.

    A failed upload is aborted by the transfer manager at once; this removes what is left
    when that abort could not reach the store or the process died (S3 keeps, and bills, the
    parts of an unfinished upload forever). Younger uploads may belong to a commit running
    now, so :meth:`artfs.Store.gc` passes its intent grace period. Returns how many.
    """
    kwargs = {"Prefix": b.prefix} if b.prefix else {}
    now = time.time()
    aborted = 0
    try:
        pages = b.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=b.bucket, **kwargs
        )
        for page in pages:
            for up in page.get("Uploads", ()):
                if now - up["Initiated"].timestamp() < older_than:
                    continue
                try:
                    b.client.abort_multipart_upload(
                        Bucket=b.bucket, Key=up["Key"], UploadId=up["UploadId"]
                    )
                except Exception as e:
                    err = b.artfs_error(e, up["Key"])
                    if type(err) is not NotFound:
                        raise err from None
                    continue  # NoSuchUpload: completed or aborted by someone else meanwhile
                aborted += 1
    except Exception as e:
        raise b.artfs_error(e, "") from None
    return aborted


def ensure_bucket(b: Bucket) -> None:
    """Create the bucket if it does not exist (for tests and demos)."""
    c = b.client
    try:
        c.head_bucket(Bucket=b.bucket)
        return
    except Exception as e:
        err = b.artfs_error(e, "")
        if not isinstance(err, NotFound):
            raise err from None
    kwargs = {}
    region = c.meta.region_name
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        c.create_bucket(Bucket=b.bucket, **kwargs)
    except Exception as e:
        code = getattr(e, "response", {}).get("Error", {}).get("Code")
        if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return
        raise b.artfs_error(e, "") from None
