"""``s3://`` references: objects of any bucket reachable with the S3 store's settings.

Resolved by HeadObject, or by ListObjectVersions (versioned bucket) / ListObjectsV2 for a prefix;
records ``etag``, ``version_id`` (versioned buckets), ``last_modified``. A read sends
``VersionId`` when recorded (an overwritten object is still read at its version), else
``If-Match: <etag>``, and compares the answer's ETag. Requests go through an
:class:`~artfs.backends.s3.S3Backend` per bucket (its client: ``ARTFS_S3_TIMEOUT``,
``AWS_ENDPOINT_URL``, retries; its error mapping), so boto3 is imported on first use only.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Iterator

from .._errors import ArtfsError, NotFound, StoreUnavailable
from .._manifest import Entry
from ..backends.s3 import S3Backend
from .base import (
    CHUNK, Reader, Scheme, changed, clean, entry_path, info_of, is_pinned, too_many, total_from_content_range, weak,
)

log = logging.getLogger("artfs.refs")


class S3Refs(Scheme):
    def __init__(self, reader: Reader) -> None:
        super().__init__(reader)
        self._lock = threading.Lock()
        self._s3: dict[str, S3Backend] = {}

    def backend(self, bucket: str) -> S3Backend:
        """The S3 backend (client, error mapping) of ``bucket``, made on first use."""
        b = self._s3.get(bucket)
        if b is None:
            with self._lock:
                b = self._s3.get(bucket)
                if b is None:
                    b = self._s3[bucket] = S3Backend(f"s3://{bucket}", timeout=self.reader.s3_timeout)
        return b

    def close(self) -> None:
        with self._lock:
            backends, self._s3 = list(self._s3.values()), {}
        for b in backends:
            b.close()

    def resolve(self, uri: str, bucket: str, key: str, name: str | None, checksum: bool,
                limit: int) -> list[Entry]:
        return self._resolve_s3(uri, bucket, key, name, checksum, limit)

    def read_range(self, entry: Entry, bucket: str, key: str, offset: int, length: int) -> bytes:
        return self._s3_range(entry, bucket, key, offset, length)

    def download(self, entry: Entry, bucket: str, key: str, path: str, h: Any) -> int:
        return self._s3_download(entry, bucket, key, path, h)

    def size(self, entry: Entry, bucket: str, key: str) -> int:
        b = self.backend(bucket)
        try:
            return int(b.client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except Exception as e:
            raise self._s3_error(entry, b, key, e) from None

    def _s3_error(self, entry: Entry, b: S3Backend, key: str, e: BaseException) -> ArtfsError:
        code, status = _client_error(e)
        if is_pinned(entry) and (status in (404, 412) or code in ("NoSuchKey", "NoSuchVersion", "PreconditionFailed")):
            return changed(entry, "the recorded object version no longer exists" if status != 412 else "ETag differs")
        err = b.artfs_error(e, key)
        if isinstance(err, NotFound):
            return NotFound(f"{entry.path}: reference {entry.ref} not found")
        return err if isinstance(err, ArtfsError) else StoreUnavailable(f"{entry.ref}: {err}")

    def _s3_args(self, entry: Entry, bucket: str, key: str) -> dict[str, Any]:
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        info = info_of(entry)
        if is_pinned(entry):
            if info.get("version_id"):
                args["VersionId"] = info["version_id"]
            elif info.get("etag"):
                args["IfMatch"] = info["etag"]
        return args

    def _s3_check(self, entry: Entry, r: dict[str, Any]) -> None:
        if not is_pinned(entry):
            return
        info = info_of(entry)
        if info.get("version_id"):
            got = r.get("VersionId")
            if got and got != info["version_id"]:
                raise changed(entry, f"version {got} served, {info['version_id']} recorded")
        elif info.get("etag") and r.get("ETag") and weak(r["ETag"]) != weak(info["etag"]):
            raise changed(entry, f"ETag {r['ETag']}, recorded {info['etag']}")
        total = total_from_content_range(r.get("ContentRange"))
        if total is not None and total != entry.size:
            raise changed(entry, f"{total} bytes now, {entry.size} recorded")

    def _s3_range(self, entry: Entry, bucket: str, key: str, offset: int, length: int) -> bytes:
        b = self.backend(bucket)
        try:
            r = b.client.get_object(**self._s3_args(entry, bucket, key), Range=f"bytes={offset}-{offset + length - 1}")
            with r["Body"] as body:
                self._s3_check(entry, r)
                data: bytes = body.read()
        except ArtfsError:
            raise
        except Exception as e:
            code, status = _client_error(e)
            if code == "InvalidRange" or status == 416:
                return b""
            raise self._s3_error(entry, b, key, e) from None
        if "ContentRange" not in r:  # a server that ignores Range
            data = data[offset : offset + length]
        return data[:length]

    def _s3_download(self, entry: Entry, bucket: str, key: str, path: str, h: Any) -> int:
        b = self.backend(bucket)
        args = self._s3_args(entry, bucket, key)
        try:
            if "VersionId" in args and h is None:
                # pinned by version id: the transfer manager's parallel ranged GETs are safe
                b.client.download_file(bucket, key, path, ExtraArgs={"VersionId": args["VersionId"]},
                                        Config=b.transfer_config())
                return os.path.getsize(path)
            r = b.client.get_object(**args)
            n = 0
            with r["Body"] as body, open(path, "wb") as f:
                self._s3_check(entry, r)
                for chunk in body.iter_chunks(CHUNK):
                    f.write(chunk)
                    if h is not None:
                        h.update(chunk)
                    n += len(chunk)
            return n
        except ArtfsError:
            raise
        except OSError as e:
            if getattr(e, "filename", None) is not None and not _is_client_error(e):
                raise  # about the local target
            raise self._s3_error(entry, b, key, e) from None
        except Exception as e:
            raise self._s3_error(entry, b, key, e) from None

    def _resolve_s3(self, uri: str, bucket: str, key: str, name: str | None, checksum: bool,
                    limit: int) -> list[Entry]:
        b = self.backend(bucket)
        c = b.client
        if key and not key.endswith("/"):
            try:
                h = c.head_object(Bucket=bucket, Key=key)
            except Exception as e:
                err = b.artfs_error(e, key)
                if not isinstance(err, NotFound):
                    raise err from None
                # not an object: a prefix (a missing bucket is reported by the listing)
            else:
                path = entry_path(uri, name, "" if name else key.rsplit("/", 1)[-1])
                info = (
                    {"etag": h.get("ETag"), "version_id": _vid(h.get("VersionId")),
                     "last_modified": _iso(h.get("LastModified"))}
                    if checksum else {"checksum": False}
                )
                return [Entry(path, None, int(h["ContentLength"]), ref=f"s3://{bucket}/{key}", ref_info=clean(info))]
            key += "/"
        entries = []
        for obj_key, size, etag, vid, mtime in self._s3_list(b, bucket, key, uri, limit):
            if obj_key.endswith("/"):
                continue  # "folder" placeholder objects
            info = {"etag": etag, "version_id": vid, "last_modified": mtime} if checksum else {"checksum": False}
            entries.append(Entry(entry_path(uri, name, obj_key[len(key):]), None, size,
                                 ref=f"s3://{bucket}/{obj_key}", ref_info=clean(info)))
        return entries

    def _s3_list(self, b: S3Backend, bucket: str, prefix: str, uri: str,
                 limit: int) -> Iterator[tuple[str, int, str | None, str | None, str | None]]:
        c = b.client
        try:
            try:
                versioned = c.get_bucket_versioning(Bucket=bucket).get("Status") in ("Enabled", "Suspended")
            except Exception as e:
                if isinstance(b.artfs_error(e, ""), (NotFound, StoreUnavailable)):
                    raise
                log.debug("%s: cannot read the bucket's versioning (%s); recording ETags only", uri, e)
                versioned = False
            count = 0
            if versioned:
                pages = c.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
                items: Iterator[dict[str, Any]] = (v for p in pages for v in p.get("Versions", ()) if v.get("IsLatest"))
            else:
                pages = c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                items = (o for p in pages for o in p.get("Contents", ()))
            for o in items:
                count += 1
                if count > limit:
                    raise too_many(uri, limit)
                yield (o["Key"], int(o["Size"]), o.get("ETag"), _vid(o.get("VersionId")) if versioned else None,
                       _iso(o.get("LastModified")))
        except ArtfsError:
            raise
        except Exception as e:
            raise b.artfs_error(e, prefix) from None

def _client_error(e: BaseException) -> tuple[str, int | None]:
    resp = getattr(e, "response", None)
    if not isinstance(resp, dict):
        return "", None
    return str(resp.get("Error", {}).get("Code") or ""), resp.get("ResponseMetadata", {}).get("HTTPStatusCode")

def _is_client_error(e: BaseException) -> bool:
    return type(e).__module__.startswith(("botocore", "boto3", "s3transfer"))

def _vid(v: Any) -> str | None:
    return v if isinstance(v, str) and v and v != "null" else None

def _iso(t: Any) -> str | None:
    return t.isoformat() if hasattr(t, "isoformat") else None

