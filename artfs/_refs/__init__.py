"""References: entries whose bytes stay elsewhere (``s3://``, ``gs://``, ``http(s)://``, ``file://``).

One module per scheme (``file``, ``s3``, ``gs``, ``http``) implements :class:`~artfs._refs.base.Scheme`;
:class:`RefReader` (``reader``) imports a scheme's module on its first reference, so local-only
use never imports httpx or boto3. This package's names are the ones the rest of artfs imports.

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

from .base import DEFAULT_MAX_OBJECTS, SCHEMES, Scheme, is_pinned, parse_uri, ref_key
from .reader import RefReader, resolve_reference

__all__ = [
    "DEFAULT_MAX_OBJECTS", "SCHEMES", "RefReader", "Scheme", "is_pinned", "parse_uri", "ref_key", "resolve_reference",
]
