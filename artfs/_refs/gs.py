"""``gs://`` references: Google Cloud Storage through its JSON API over httpx.

Resolving reads the object's metadata or lists the prefix; records ``generation``, ``md5``,
``crc32c``. A read asks for ``generation=G`` and checks the answer's ``x-goog-generation`` (or,
from a server that does not send it, the object's metadata at that generation). The media
requests and their checks are the ``http(s)://`` scheme's (one client per reader, shared).
``$STORAGE_EMULATOR_HOST`` points at an emulator, as with Google's own clients;
``ARTFS_GCS_TOKEN`` holds an OAuth token (anonymous otherwise).
"""

from __future__ import annotations

import os
from typing import Any, Callable
from urllib.parse import quote

import httpx

from .._errors import NotFound
from .._manifest import Entry
from ..backends._httpio import check_status, send
from .base import changed, clean, entry_path, info_of, is_pinned, too_many
from .http import HTTPRefs


class GSRefs(HTTPRefs):
    def resolve(self, uri: str, bucket: str, key: str, name: str | None, checksum: bool,
                limit: int) -> list[Entry]:
        return self._resolve_gs(uri, bucket, key, name, checksum, limit)

    def read_range(self, entry: Entry, bucket: str, key: str, offset: int, length: int) -> bytes:
        return self._http_range(entry, "gs", bucket, key, offset, length)

    def download(self, entry: Entry, bucket: str, key: str, path: str, h: Any) -> int:
        return self._http_download(entry, "gs", bucket, key, path, h)

    def size(self, entry: Entry, bucket: str, key: str) -> int:
        meta = self._gs_meta(entry.ref or "", bucket, key)
        if meta is None:
            raise NotFound(f"{entry.path}: reference {entry.ref} not found")
        return int(meta.get("size") or 0)

    def _http_request(self, entry: Entry, scheme: str, bucket: str, key: str, headers: dict[str, str],
                      *, whole: bool = False) -> tuple[httpx.Response, Callable[[httpx.Response], None]]:
        """The media request of the recorded generation, and its check."""
        info = info_of(entry)
        params = {"alt": "media"}
        if is_pinned(entry) and info.get("generation"):
            params["generation"] = info["generation"]
        r = send(self.client, "GET", self._gs_url(bucket, key), headers={**self._gs_headers(), **headers},
                 params=params, stream=True, what=entry.ref)
        return r, lambda resp: self._gs_check(entry, resp, bucket, key)

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
        r = send(self.client, "GET", self._gs_url(bucket, key), headers=self._gs_headers(), params=params, what=uri)
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
        return Entry(path, None, int(item.get("size") or 0), ref=f"gs://{bucket}/{item['name']}", ref_info=clean(info))

    def _resolve_gs(self, uri: str, bucket: str, key: str, name: str | None, checksum: bool,
                    limit: int) -> list[Entry]:
        if key and not key.endswith("/"):
            meta = self._gs_meta(uri, bucket, key)
            if meta is not None and meta.get("name") == key:
                path = entry_path(uri, name, "" if name else key.rsplit("/", 1)[-1])
                return [self._gs_entry(uri, bucket, meta, path, checksum)]
            key += "/"
        entries: list[Entry] = []
        token: str | None = None
        while True:
            params = {"prefix": key, "maxResults": "1000"}
            if token:
                params["pageToken"] = token
            r = send(self.client, "GET", self._gs_url(bucket), headers=self._gs_headers(), params=params, what=uri)
            check_status(r, uri)
            doc = r.json()
            for item in doc.get("items") or []:
                oname = item.get("name")
                if not isinstance(oname, str) or not oname.startswith(key) or oname.endswith("/"):
                    continue
                if len(entries) >= limit:
                    raise too_many(uri, limit)
                entries.append(self._gs_entry(uri, bucket, item, entry_path(uri, name, oname[len(key):]), checksum))
            token = doc.get("nextPageToken")
            if not token:
                return entries

    def _gs_check(self, entry: Entry, r: httpx.Response, bucket: str, key: str) -> None:
        gen = info_of(entry).get("generation")
        if not is_pinned(entry) or not gen:
            return
        got = r.headers.get("x-goog-generation")
        if got is None:
            # a server that does not say which generation it served (emulators): ask
            meta = self._gs_meta(entry.ref or "", bucket, key, gen)
            got = str(meta.get("generation")) if meta else "none (deleted)"
        if got != gen:
            raise changed(entry, f"generation {got}, recorded {gen}")

