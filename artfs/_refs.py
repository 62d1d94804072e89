"""References: entries whose bytes stay elsewhere (``s3://``, ``gs://``, ``http(s)://``, ``file://``).

:func:`resolve_reference` turns a URI into entries, recording in ``Entry.ref_info`` what
identifies each object; :class:`RefReader` reads exactly that object later, or raises
:class:`ReferenceChanged` — it never serves other bytes than those recorded.

* ``s3://`` — resolved by HeadObject, or by ListObjectVersions (versioned bucket) /
  ListObjectsV2 for a prefix; records ``etag``, ``version_id`` (versioned buckets),
  ``last_modified``; a read sends ``VersionId`` when recorded (an overwritten object is still read
  at its version), else ``If-Match: <etag>`` and compares the answer's ETag.
* ``gs://`` — the JSON API's object metadata or listing; records ``generation``, ``md5``,
  ``crc32c``; a read asks for ``generation=G`` and checks the answer's ``x-goog-generation`` (or,
  from a server that does not send it, the object's metadata at that generation).
* ``http(s)://`` — HEAD; records ``etag`` and ``last_modified``; a read sends ``If-Match`` for a
  strong ETag and compares the answer's ETag (without one: Last-Modified) and length.
* ``file://`` — stat and the xxh128 of the content; records ``mtime_ns`` and the digest; a read
  compares size and mtime, and a whole download the digest.

Every pinned read also checks the object's total size. Whole downloads of entries with a
``digest`` are verified against it. ``digest`` is computed at resolve time only where the protocol
gives nothing better: ``file://`` always, and ``http(s)://`` when the server sends no strong ETag or
no Content-Length (the content is then streamed once and hashed). S3 and GCS objects are pinned by
version id/ETag/generation and keep ``digest=None``.

``checksum=False`` records only the URI (``ref_info={"checksum": False}``; the size where a
listing gives it for free, else 0 = unknown) and reads serve whatever is there now.

URIs of ``s3://``, ``gs://`` and ``file://`` references name keys and paths literally (no
percent-decoding), like the AWS CLI and W&B; ``http(s)://`` URIs are URLs.

Security: a manifest comes from a store that others can write, so a ``file://`` entry in it must
not make a reader open the local machine's files. :class:`RefReader` refuses them with
:class:`PermissionDenied` unless created with ``allow_file=True`` or with ``file_roots`` that
contain the file (checked on its real path, after following symlinks).

In the mount (``artfsd.fs.open_reference``; one RefReader per mount, created with its
``--allow-file``/``--file-root`` options; blocking calls run in worker threads):

* ``open`` first calls :meth:`RefReader.check_allowed` (``file://`` -> EACCES before anything is
  served, even from the cache);
* a pinned entry reads through :meth:`artfs._lazy.LazyBlobs.open_ref`: chunks, read-ahead and the
  cache as for blobs, each chunk fetched with ``reader.read_range``. An entry with a ``digest`` is
  cached under it and verified when complete; one without is cached under :func:`ref_key` (its
  chunks are trustworthy because every read is pinned, but there is no whole-file digest to check,
  so it stays a partial cache entry);
* an unpinned entry (``checksum=False``) is sized with ``reader.size(entry)`` at open and read
  uncached with ``direct_io`` (whatever is there now; ``stat`` shows the recorded size, 0 if unknown);
* errors: ReferenceChanged/StoreUnavailable -> EIO, NotFound -> ENOENT, PermissionDenied -> EACCES.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import quote, unquote, urlparse

import httpx
import xxhash

from ._digest import digest_file, finish
from ._errors import ArtfsError, InvalidPath, NotFound, PermissionDenied, ReferenceChanged, StoreUnavailable
from ._manifest import Entry
from ._names import check_path, join_path
from .backends.http import check_status, make_client, send

if TYPE_CHECKING:
    from .backends.s3 import S3Backend

log = logging.getLogger("artfs.refs")

DEFAULT_MAX_OBJECTS = 10000
SCHEMES = ("s3", "gs", "http", "https", "file")
_CHUNK = 4 << 20


# --------------------------------------------------------------------------------------------
# URIs and entries
# --------------------------------------------------------------------------------------------


def parse_uri(uri: str) -> tuple[str, str, str]:
    """``(scheme, bucket, key)`` for s3/gs, ``(scheme, "", url)`` for http(s), ``("file", "", path)``."""
    if not isinstance(uri, str):
        raise ArtfsError(f"invalid reference {uri!r}")
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ArtfsError(f"{uri!r}: unsupported reference; expected s3://, gs://, http(s):// or file://")
    if "\x00" in uri:
        raise ArtfsError(f"{uri!r}: contains NUL")
    if scheme in ("s3", "gs"):
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ArtfsError(f"{uri!r}: no bucket")
        return scheme, bucket, key
    if scheme == "file":
        host, _, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise ArtfsError(f"{uri!r}: a file:// reference names a local absolute path (file:///path)")
        return "file", "", os.path.normpath("/" + path)
    if not urlparse(uri).netloc:
        raise ArtfsError(f"{uri!r}: no host")
    return scheme, "", uri


def _info(entry: Entry) -> dict[str, Any]:
    """``ref_info`` with only well-typed values (it comes from a manifest: untrusted input)."""
    out: dict[str, Any] = {}
    for k, v in (entry.ref_info or {}).items():
        if k == "checksum":
            if isinstance(v, bool):
                out[k] = v
        elif k == "mtime_ns":
            if isinstance(v, int) and not isinstance(v, bool):
                out[k] = v
        elif isinstance(v, str) and v:
            out[k] = v
    return out


def is_pinned(entry: Entry) -> bool:
    """Whether ``entry`` recorded what identifies its object (``checksum=True`` when resolved)."""
    return entry.ref is not None and _info(entry).get("checksum", True) is not False


def ref_key(entry: Entry) -> str:
    """A stable 32-hex key for the exact object a reference entry names (URI + identity).

    For the mount's cache of reference chunks when the entry has no ``digest``: two entries share
    a key only if they name the same object at the same version/ETag/generation/mtime.
    """
    info = {k: v for k, v in sorted(_info(entry).items()) if k != "last_modified"}
    return xxhash.xxh3_128_hexdigest(repr((entry.ref, entry.size, entry.digest, info)).encode())


def _entry_path(uri: str, name: str | None, rel: str) -> str:
    try:
        return join_path(name, rel) if rel else check_path(name)
    except InvalidPath as e:
        raise InvalidPath(f"reference {uri}: {e}") from None


def _clean(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if v is not None and v != ""}


def _weak(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def _changed(entry: Entry, why: str) -> ReferenceChanged:
    return ReferenceChanged(f"{entry.path}: reference {entry.ref} changed since it was logged ({why})")


def _too_many(uri: str, limit: int) -> ArtfsError:
    return ArtfsError(
        f"{uri}: more than {limit} objects (max_objects={limit}); reference a narrower prefix "
        f"or raise the limit (max_objects=..., --max-objects)"
    )


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------


class RefReader:
    """Reads reference entries, exactly as recorded. Thread-safe; one per process is plenty.

    ``allow_file``/``file_roots`` decide which ``file://`` references may be opened (none by
    default). ``timeout`` bounds each HTTP/GCS request (``ARTFS_HTTP_TIMEOUT``, default 15 s);
    S3 uses the S3 backend's settings (``ARTFS_S3_TIMEOUT``, ``AWS_ENDPOINT_URL``, ...).
    """

    def __init__(self, *, allow_file: bool = False, file_roots: list[str] | tuple[str, ...] = (),
                 timeout: float | None = None) -> None:
        self.allow_file = allow_file
        self.file_roots = [os.path.realpath(os.path.expanduser(r)) for r in file_roots]
        self._timeout = timeout
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._s3: dict[str, "S3Backend"] = {}
        self._warned_range: set[str] = set()

    def __enter__(self) -> "RefReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the clients this reader opened (it opens new ones if used again)."""
        with self._lock:
            client, self._client = self._client, None
            backends, self._s3 = list(self._s3.values()), {}
        if client is not None:
            client.close()
        for b in backends:
            b.close()

    # -- clients -------------------------------------------------------------------------------
    @property
    def _http(self) -> httpx.Client:
        c = self._client
        if c is None:
            with self._lock:
                if self._client is None:
                    self._client = make_client(self._timeout, follow_redirects=True)
                c = self._client
        return c

    def _s3b(self, bucket: str) -> "S3Backend":
        b = self._s3.get(bucket)
        if b is None:
            from .backends.s3 import S3Backend

            with self._lock:
                b = self._s3.get(bucket)
                if b is None:
                    b = self._s3[bucket] = S3Backend(f"s3://{bucket}")
        return b

    # -- the public operations -------------------------------------------------------------------
    def resolve(self, uri: str, *, name: str | None = None, checksum: bool = True,
                max_objects: int | None = DEFAULT_MAX_OBJECTS) -> list[Entry]:
        """Entries for ``uri`` (one object, or every object under a prefix/directory)."""
        limit = DEFAULT_MAX_OBJECTS if max_objects is None else int(max_objects)
        if name is not None:
            name = check_path(name.strip("/")) if name.strip("/") else None
        scheme, bucket, key = parse_uri(uri)
        if scheme == "s3":
            entries = self._resolve_s3(uri, bucket, key, name, checksum, limit)
        elif scheme == "gs":
            entries = self._resolve_gs(uri, bucket, key, name, checksum, limit)
        elif scheme == "file":
            entries = self._resolve_file(uri, key, name, checksum, limit)
        else:
            entries = self._resolve_http(uri, name, checksum)
        if not entries:
            raise NotFound(f"{uri}: no objects found")
        return entries

    def read_range(self, entry: Entry, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` of the recorded object (fewer only at its end)."""
        if entry.ref is None:
            raise ArtfsError(f"{entry.path}: not a reference")
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        if length <= 0 or (is_pinned(entry) and offset >= entry.size):
            return b""
        scheme, bucket, key = parse_uri(entry.ref)
        if scheme == "s3":
            return self._s3_range(entry, bucket, key, offset, length)
        if scheme == "file":
            return self._file_range(entry, key, offset, length)
        return self._http_range(entry, scheme, bucket, key, offset, length)

    def download(self, entry: Entry, path: str) -> int:
        """Write the whole recorded object to ``path``; returns its size.

        Verifies the size (and the digest when recorded); raises ReferenceChanged on a mismatch
        (``path`` then holds garbage: write to a temporary name).
        """
        if entry.ref is None:
            raise ArtfsError(f"{entry.path}: not a reference")
        scheme, bucket, key = parse_uri(entry.ref)
        h = xxhash.xxh3_128() if entry.digest else None
        if scheme == "s3":
            n = self._s3_download(entry, bucket, key, path, h)
        elif scheme == "file":
            n = self._file_download(entry, key, path, h)
        else:
            n = self._http_download(entry, scheme, bucket, key, path, h)
        if is_pinned(entry) and n != entry.size:
            raise _changed(entry, f"{n} bytes now, {entry.size} recorded")
        if h is not None and finish(h) != entry.digest:
            raise _changed(entry, f"content digest {finish(h)}, recorded {entry.digest}")
        return n

    def check_allowed(self, entry: Entry) -> None:
        """Raise :class:`PermissionDenied` if this reader may not read ``entry`` (a ``file://``
        reference outside what ``allow_file``/``file_roots`` allow). No I/O besides resolving
        symlinks; for the mount's ``open``, before anything is served from the cache."""
        if entry.ref is not None and entry.ref.startswith("file:"):
            self._file_path(entry, parse_uri(entry.ref)[2])

    def size(self, entry: Entry) -> int:
        """The object's size: as recorded when pinned, else asked from its home (one request)."""
        if entry.ref is None or is_pinned(entry):
            return entry.size
        scheme, bucket, key = parse_uri(entry.ref)
        if scheme == "s3":
            b = self._s3b(bucket)
            try:
                return int(b._client.head_object(Bucket=bucket, Key=key)["ContentLength"])
            except Exception as e:
                raise self._s3_error(entry, b, key, e) from None
        if scheme == "file":
            p = self._file_path(entry, key)
            try:
                return os.stat(p).st_size
            except OSError as e:
                raise self._file_error(entry, e) from None
        if scheme == "gs":
            meta = self._gs_meta(entry.ref, bucket, key)
            if meta is None:
                raise NotFound(f"{entry.path}: reference {entry.ref} not found")
            return int(meta.get("size") or 0)
        r = self._head(entry.ref)
        check_status(r, f"{entry.path}: reference {entry.ref}")
        cl = r.headers.get("content-length")
        return int(cl) if cl and cl.isdigit() else 0

    # ==========================================================================================
    # s3://
    # ==========================================================================================
    def _s3_error(self, entry: Entry, b: "S3Backend", key: str, e: BaseException) -> ArtfsError:
        code, status = _client_error(e)
        if is_pinned(entry) and (status in (404, 412) or code in ("NoSuchKey", "NoSuchVersion", "PreconditionFailed")):
            return _changed(entry, "the recorded object version no longer exists" if status != 412 else "ETag differs")
        err = b._error(e, key)
        if isinstance(err, NotFound):
            return NotFound(f"{entry.path}: reference {entry.ref} not found")
        return err if isinstance(err, ArtfsError) else StoreUnavailable(f"{entry.ref}: {err}")

    def _s3_args(self, entry: Entry, bucket: str, key: str) -> dict[str, Any]:
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        info = _info(entry)
        if is_pinned(entry):
            if info.get("version_id"):
                args["VersionId"] = info["version_id"]
            elif info.get("etag"):
                args["IfMatch"] = info["etag"]
        return args

    def _s3_check(self, entry: Entry, r: dict[str, Any]) -> None:
        if not is_pinned(entry):
            return
        info = _info(entry)
        if info.get("version_id"):
            got = r.get("VersionId")
            if got and got != info["version_id"]:
                raise _changed(entry, f"version {got} served, {info['version_id']} recorded")
        elif info.get("etag") and r.get("ETag") and _weak(r["ETag"]) != _weak(info["etag"]):
            raise _changed(entry, f"ETag {r['ETag']}, recorded {info['etag']}")
        total = _total_from_content_range(r.get("ContentRange"))
        if total is not None and total != entry.size:
            raise _changed(entry, f"{total} bytes now, {entry.size} recorded")

    def _s3_range(self, entry: Entry, bucket: str, key: str, offset: int, length: int) -> bytes:
        b = self._s3b(bucket)
        try:
            r = b._client.get_object(**self._s3_args(entry, bucket, key), Range=f"bytes={offset}-{offset + length - 1}")
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
        b = self._s3b(bucket)
        args = self._s3_args(entry, bucket, key)
        try:
            if "VersionId" in args and h is None:
                # pinned by version id: the transfer manager's parallel ranged GETs are safe
                b._client.download_file(bucket, key, path, ExtraArgs={"VersionId": args["VersionId"]},
                                        Config=b._transfer_config())
                return os.path.getsize(path)
            r = b._client.get_object(**args)
            n = 0
            with r["Body"] as body, open(path, "wb") as f:
                self._s3_check(entry, r)
                for chunk in body.iter_chunks(_CHUNK):
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
        b = self._s3b(bucket)
        c = b._client
        if key and not key.endswith("/"):
            try:
                h = c.head_object(Bucket=bucket, Key=key)
            except Exception as e:
                err = b._error(e, key)
                if not isinstance(err, NotFound):
                    raise err from None
                # not an object: a prefix (a missing bucket is reported by the listing)
            else:
                path = _entry_path(uri, name, "" if name else key.rsplit("/", 1)[-1])
                info = (
                    {"etag": h.get("ETag"), "version_id": _vid(h.get("VersionId")),
                     "last_modified": _iso(h.get("LastModified"))}
                    if checksum else {"checksum": False}
                )
                return [Entry(path, None, int(h["ContentLength"]), ref=f"s3://{bucket}/{key}", ref_info=_clean(info))]
            key += "/"
        entries = []
        for obj_key, size, etag, vid, mtime in self._s3_list(b, bucket, key, uri, limit):
            if obj_key.endswith("/"):
                continue  # "folder" placeholder objects
            info = {"etag": etag, "version_id": vid, "last_modified": mtime} if checksum else {"checksum": False}
            entries.append(Entry(_entry_path(uri, name, obj_key[len(key):]), None, size,
                                 ref=f"s3://{bucket}/{obj_key}", ref_info=_clean(info)))
        return entries

    def _s3_list(self, b: "S3Backend", bucket: str, prefix: str, uri: str,
                 limit: int) -> Iterator[tuple[str, int, str | None, str | None, str | None]]:
        c = b._client
        try:
            try:
                versioned = c.get_bucket_versioning(Bucket=bucket).get("Status") in ("Enabled", "Suspended")
            except Exception as e:
                if isinstance(b._error(e, ""), (NotFound, StoreUnavailable)):
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
                    raise _too_many(uri, limit)
                yield (o["Key"], int(o["Size"]), o.get("ETag"), _vid(o.get("VersionId")) if versioned else None,
                       _iso(o.get("LastModified")))
        except ArtfsError:
            raise
        except Exception as e:
            raise b._error(e, prefix) from None

    # ==========================================================================================
    # gs://  (the GCS JSON API over httpx; $STORAGE_EMULATOR_HOST like Google's own clients)
    # ==========================================================================================
    @staticmethod
    def _gs_base() -> str:
        host = os.environ.get("STORAGE_EMULATOR_HOST")
        if host:
            return (host if "://" in host else "http://" + host).rstrip("/")
        return "https://storage.googleapis.com"

    @staticmethod
    def _gs_headers() -> dict[str, str]:
        """Anonymous (public buckets, emulators) unless ``ARTFS_GCS_TOKEN`` holds an OAuth token."""
        token = os.environ.get("ARTFS_GCS_TOKEN")
        if token and not os.environ.get("STORAGE_EMULATOR_HOST"):
            return {"Authorization": f"Bearer {token}"}
        return {}

    def _gs_url(self, bucket: str, key: str | None = None) -> str:
        u = f"{self._gs_base()}/storage/v1/b/{quote(bucket, safe='')}/o"
        return u if key is None else f"{u}/{quote(key, safe='')}"

    def _gs_meta(self, uri: str, bucket: str, key: str, generation: str | None = None) -> dict[str, Any] | None:
        params = {"generation": generation} if generation else None
        r = send(self._http, "GET", self._gs_url(bucket, key), headers=self._gs_headers(), params=params, what=uri)
        if r.status_code == 404:
            return None
        check_status(r, uri)
        doc = r.json()
        return doc if isinstance(doc, dict) else None

    def _gs_entry(self, uri: str, bucket: str, item: dict[str, Any], path: str, checksum: bool) -> Entry:
        info = (
            {"generation": str(item.get("generation") or ""), "md5": item.get("md5Hash"),
             "crc32c": item.get("crc32c"), "last_modified": item.get("updated")}
            if checksum else {"checksum": False}
        )
        return Entry(path, None, int(item.get("size") or 0), ref=f"gs://{bucket}/{item['name']}", ref_info=_clean(info))

    def _resolve_gs(self, uri: str, bucket: str, key: str, name: str | None, checksum: bool,
                    limit: int) -> list[Entry]:
        if key and not key.endswith("/"):
            meta = self._gs_meta(uri, bucket, key)
            if meta is not None and meta.get("name") == key:
                path = _entry_path(uri, name, "" if name else key.rsplit("/", 1)[-1])
                return [self._gs_entry(uri, bucket, meta, path, checksum)]
            key += "/"
        entries: list[Entry] = []
        token: str | None = None
        while True:
            params = {"prefix": key, "maxResults": "1000"}
            if token:
                params["pageToken"] = token
            r = send(self._http, "GET", self._gs_url(bucket), headers=self._gs_headers(), params=params, what=uri)
            check_status(r, uri)
            doc = r.json()
            for item in doc.get("items") or []:
                oname = item.get("name")
                if not isinstance(oname, str) or not oname.startswith(key) or oname.endswith("/"):
                    continue
                if len(entries) >= limit:
                    raise _too_many(uri, limit)
                entries.append(self._gs_entry(uri, bucket, item, _entry_path(uri, name, oname[len(key):]), checksum))
            token = doc.get("nextPageToken")
            if not token:
                return entries

    def _gs_check(self, entry: Entry, r: httpx.Response, bucket: str, key: str) -> None:
        gen = _info(entry).get("generation")
        if not is_pinned(entry) or not gen:
            return
        got = r.headers.get("x-goog-generation")
        if got is None:
            # a server that does not say which generation it served (emulators): ask
            meta = self._gs_meta(entry.ref or "", bucket, key, gen)
            got = str(meta.get("generation")) if meta else "none (deleted)"
        if got != gen:
            raise _changed(entry, f"generation {got}, recorded {gen}")

    # ==========================================================================================
    # http(s):// and the media requests of gs://
    # ==========================================================================================
    def _head(self, url: str) -> httpx.Response:
        r = send(self._http, "HEAD", url, what=url)
        if r.status_code in (405, 501):  # no HEAD: take the headers of a GET
            r = send(self._http, "GET", url, stream=True, what=url)
            r.close()
        return r

    def _http_request(self, entry: Entry, scheme: str, bucket: str, key: str, headers: dict[str, str],
                      *, whole: bool = False) -> tuple[httpx.Response, Callable[[httpx.Response], None]]:
        """Open a streamed GET for the entry; returns it and the identity check for its headers."""
        info = _info(entry)
        if scheme == "gs":
            params = {"alt": "media"}
            if is_pinned(entry) and info.get("generation"):
                params["generation"] = info["generation"]
            r = send(self._http, "GET", self._gs_url(bucket, key), headers={**self._gs_headers(), **headers},
                     params=params, stream=True, what=entry.ref)
            return r, lambda resp: self._gs_check(entry, resp, bucket, key)
        etag = info.get("etag")
        if is_pinned(entry) and etag and not etag.startswith("W/"):
            headers = {**headers, "If-Match": etag}
        r = send(self._http, "GET", key, headers=headers, stream=True, what=entry.ref)
        return r, lambda resp: self._http_check(entry, resp, whole=whole)

    def _http_check(self, entry: Entry, r: httpx.Response, *, whole: bool) -> None:
        """Compare the answer's ETag (or, without one, Last-Modified) with what was recorded.

        A whole download of an entry with a digest is verified by the digest instead of
        Last-Modified, so a touched but unchanged file is still served.
        """
        if not is_pinned(entry):
            return
        info = _info(entry)
        rec, got = info.get("etag"), r.headers.get("etag")
        if rec and got and _weak(got) != _weak(rec):
            raise _changed(entry, f"ETag {got}, recorded {rec}")
        if not rec and not (whole and entry.digest):
            lm, glm = info.get("last_modified"), r.headers.get("last-modified")
            if lm and glm and lm != glm:
                raise _changed(entry, f"Last-Modified {glm}, recorded {lm}")

    def _http_status(self, entry: Entry, r: httpx.Response) -> None:
        s = r.status_code
        if s == 412:
            raise _changed(entry, "the server says its ETag no longer matches")
        if s in (404, 410) and is_pinned(entry):
            raise _changed(entry, f"HTTP {s}: it no longer exists")
        check_status(r, f"{entry.path}: reference {entry.ref}")

    def _size_check(self, entry: Entry, total: int | None) -> None:
        if is_pinned(entry) and total is not None and total != entry.size:
            raise _changed(entry, f"{total} bytes now, {entry.size} recorded")

    def _http_range(self, entry: Entry, scheme: str, bucket: str, key: str, offset: int, length: int) -> bytes:
        r, check = self._http_request(entry, scheme, bucket, key, {"Range": f"bytes={offset}-{offset + length - 1}"})
        try:
            if r.status_code == 416:
                self._size_check(entry, _total_from_content_range(r.headers.get("content-range")))
                return b""
            self._http_status(entry, r)
            check(r)
            try:
                if r.status_code == 206:
                    self._size_check(entry, _total_from_content_range(r.headers.get("content-range")))
                    start = _start_from_content_range(r.headers.get("content-range"))
                    if start is not None and start != offset:
                        raise StoreUnavailable(f"{entry.ref}: asked for bytes from {offset}, got from {start}")
                    return r.read()[:length]
                self._size_check(entry, _int(r.headers.get("content-length")))
                self._warn_no_range(entry.ref or "")
                from .backends.http import _slice_stream

                return _slice_stream(r, offset, length)
            except httpx.TransportError as e:
                raise StoreUnavailable(f"{entry.path}: reading {entry.ref} broke off: {e}") from None
        finally:
            r.close()

    def _warn_no_range(self, uri: str) -> None:
        host = urlparse(uri).netloc
        with self._lock:
            if host in self._warned_range:
                return
            self._warned_range.add(host)
        log.warning("%s ignores HTTP Range requests; partial reads of its references fetch whole files", host)

    def _http_download(self, entry: Entry, scheme: str, bucket: str, key: str, path: str, h: Any) -> int:
        r, check = self._http_request(entry, scheme, bucket, key, {}, whole=True)
        try:
            self._http_status(entry, r)
            check(r)
            self._size_check(entry, _int(r.headers.get("content-length")))
            n = 0
            with open(path, "wb") as f:
                try:
                    for chunk in r.iter_bytes(_CHUNK):
                        f.write(chunk)
                        if h is not None:
                            h.update(chunk)
                        n += len(chunk)
                except httpx.TransportError as e:
                    raise StoreUnavailable(f"{entry.path}: download of {entry.ref} broke off: {e}") from None
            return n
        finally:
            r.close()

    def _resolve_http(self, uri: str, name: str | None, checksum: bool) -> list[Entry]:
        base = unquote(urlparse(uri).path.rstrip("/").rsplit("/", 1)[-1])
        if not (name or base):
            raise ArtfsError(f"{uri}: cannot tell a file name from the URL; pass name=")
        path = _entry_path(uri, name or base, "")
        if not checksum:
            return [Entry(path, None, 0, ref=uri, ref_info={"checksum": False})]
        r = self._head(uri)
        check_status(r, f"reference {uri}")
        etag, lm, cl = r.headers.get("etag"), r.headers.get("last-modified"), _int(r.headers.get("content-length"))
        info = _clean({"etag": etag, "last_modified": lm})
        if etag and not etag.startswith("W/") and cl is not None:
            return [Entry(path, None, cl, ref=uri, ref_info=info)]
        # the server gives no strong identity (or no length): hash the content once
        h = xxhash.xxh3_128()
        n = 0
        r = send(self._http, "GET", uri, stream=True, what=uri)
        try:
            check_status(r, f"reference {uri}")
            etag, lm = r.headers.get("etag") or etag, r.headers.get("last-modified") or lm
            try:
                for chunk in r.iter_bytes(_CHUNK):
                    h.update(chunk)
                    n += len(chunk)
            except httpx.TransportError as e:
                raise StoreUnavailable(f"reference {uri}: reading it broke off: {e}") from None
        finally:
            r.close()
        return [Entry(path, finish(h), n, ref=uri, ref_info=_clean({"etag": etag, "last_modified": lm}))]

    # ==========================================================================================
    # file://
    # ==========================================================================================
    def _file_path(self, entry: Entry | None, path: str) -> str:
        real = os.path.realpath(path)
        if self.allow_file or any(real == r or real.startswith(r.rstrip("/") + "/") for r in self.file_roots):
            return real
        what = f"{entry.path}: reference {entry.ref}" if entry else f"file://{path}"
        raise PermissionDenied(
            f"{what} is a file on this machine; reading local files is off "
            "(pass allow_file=True or file_roots=[...] to allow it)"
        )

    @staticmethod
    def _file_error(entry: Entry, e: OSError) -> ArtfsError:
        if isinstance(e, FileNotFoundError):
            if is_pinned(entry):
                return _changed(entry, "the file no longer exists")
            return NotFound(f"{entry.path}: reference {entry.ref} not found")
        if isinstance(e, PermissionError):
            return PermissionDenied(f"{entry.path}: reference {entry.ref}: {e.strerror}")
        return StoreUnavailable(f"{entry.path}: reference {entry.ref}: {e.strerror or e}")

    @staticmethod
    def _file_check(entry: Entry, fd: int) -> None:
        st = os.fstat(fd)
        if not is_pinned(entry):
            return
        mtime = _info(entry).get("mtime_ns")
        if st.st_size != entry.size:
            raise _changed(entry, f"{st.st_size} bytes now, {entry.size} recorded")
        if mtime is not None and st.st_mtime_ns != mtime:
            raise _changed(entry, "modified since it was logged")

    @contextlib.contextmanager
    def _file_open(self, entry: Entry, path: str) -> Iterator[int]:
        real = self._file_path(entry, path)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise self._file_error(entry, e) from None
        try:
            self._file_check(entry, fd)
            yield fd
        finally:
            os.close(fd)

    def _file_range(self, entry: Entry, path: str, offset: int, length: int) -> bytes:
        with self._file_open(entry, path) as fd:
            try:
                return os.pread(fd, length, offset)
            except OSError as e:
                raise self._file_error(entry, e) from None

    def _file_download(self, entry: Entry, path: str, target: str, h: Any) -> int:
        with self._file_open(entry, path) as fd:
            n = 0
            with open(target, "wb") as out:
                while True:
                    try:
                        chunk = os.read(fd, _CHUNK)
                    except OSError as e:
                        raise self._file_error(entry, e) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    if h is not None:
                        h.update(chunk)
                    n += len(chunk)
            self._file_check(entry, fd)  # changed while we copied?
            return n

    def _resolve_file(self, uri: str, path: str, name: str | None, checksum: bool, limit: int) -> list[Entry]:
        real = self._file_path(None, path)
        if os.path.isdir(real):
            files = []
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for fn in sorted(filenames):
                    full = os.path.join(dirpath, fn)
                    if os.path.isfile(full):
                        files.append((full, os.path.relpath(full, path).replace(os.sep, "/")))
                        if len(files) > limit:
                            raise _too_many(uri, limit)
        elif os.path.isfile(real):
            files = [(path, "" if name else os.path.basename(path))]
        else:
            raise NotFound(f"{uri}: no such file or directory")
        out = []
        for full, rel in files:
            try:
                os.fsencode(rel).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidPath(f"reference {uri}: {full!r}: file name is not UTF-8") from None
            epath = _entry_path(uri, name, rel)
            ref = "file://" + os.path.abspath(full)
            if not checksum:
                out.append(Entry(epath, None, os.path.getsize(full), ref=ref, ref_info={"checksum": False}))
                continue
            before = os.stat(full)
            digest, size = digest_file(full)
            after = os.stat(full)
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or size != after.st_size:
                raise ArtfsError(f"{full}: changed while it was being hashed; try again")
            out.append(Entry(epath, digest, size, ref=ref, ref_info={"mtime_ns": after.st_mtime_ns}))
        return out


# --------------------------------------------------------------------------------------------
# module-level helpers
# --------------------------------------------------------------------------------------------


def resolve_reference(uri: str, *, name: str | None = None, checksum: bool = True,
                      max_objects: int | None = DEFAULT_MAX_OBJECTS) -> list[Entry]:
    """Entries for ``uri``: one object, or every object under an ``s3://``/``gs://`` prefix or a directory.

    ``name`` is where the entries go in the artifact: the entry path of a single object (default:
    its base name), the directory of a prefix's objects (default: the artifact's root). More than
    ``max_objects`` objects is an error, never a silent cut. Entry paths are validated; a listing
    with ``../`` keys is refused. ``file://`` is allowed here: naming a local file is the user's
    own act (reading it back later is what :class:`RefReader` guards).
    """
    with RefReader(allow_file=True) as r:
        return r.resolve(uri, name=name, checksum=checksum, max_objects=max_objects)


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


def _int(s: str | None) -> int | None:
    return int(s) if s is not None and s.isdigit() else None


def _total_from_content_range(cr: str | None) -> int | None:
    """``bytes 0-9/1234`` -> 1234 (None when absent or ``*``)."""
    if not cr or "/" not in cr:
        return None
    return _int(cr.rsplit("/", 1)[1].strip())


def _start_from_content_range(cr: str | None) -> int | None:
    if not cr:
        return None
    spec = cr.strip().split(" ", 1)[-1]
    return _int(spec.split("-", 1)[0])
