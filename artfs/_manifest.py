"""Manifests: the immutable list of entries of one version.

A manifest is written once as ``<project>/artifacts/<artifact>/versions/<N>.json`` and never
changed. Its entries are sorted by path. The *version digest* hashes ``(path, digest, executable,
reference)`` of every entry, so logging identical content again is recognised and creates nothing.

Everything read back from a store is validated as untrusted input: a tampered manifest with
``../x`` or an absolute path raises :class:`InvalidPath` instead of escaping a download root or
a mount.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import xxhash

from ._digest import check_digest
from ._errors import CorruptData, InvalidPath
from ._names import check_name, check_path

FORMAT = 1


@dataclass(frozen=True)
class Entry:
    """One file of a version.

    ``digest`` is the content digest (``xxh128:…``) when known; a reference entry (``ref`` set)
    keeps its bytes elsewhere and records what identifies them in ``ref_info`` (ETag, version id,
    generation) so a later read can tell whether the target changed.
    """

    path: str
    digest: str | None
    size: int
    executable: bool = False
    ref: str | None = None
    ref_info: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "digest": self.digest, "size": self.size}
        if self.executable:
            d["executable"] = True
        if self.ref is not None:
            d["ref"] = self.ref
            if self.ref_info:
                d["ref_info"] = self.ref_info
        return d

    @classmethod
    def from_json(cls, d: Any) -> "Entry":
        if not isinstance(d, dict):
            raise CorruptData(f"manifest entry is not an object: {d!r}")
        path = check_path(d.get("path"))
        digest = d.get("digest")
        ref = d.get("ref")
        if ref is not None and not isinstance(ref, str):
            raise CorruptData(f"entry {path!r}: invalid ref")
        if digest is not None:
            check_digest(digest)
        elif ref is None:
            raise CorruptData(f"entry {path!r}: neither digest nor ref")
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            if not (ref is not None and size is None):
                raise CorruptData(f"entry {path!r}: invalid size {size!r}")
            size = 0
        ref_info = d.get("ref_info")
        if ref_info is not None and not isinstance(ref_info, dict):
            raise CorruptData(f"entry {path!r}: invalid ref_info")
        return cls(path, digest, size, bool(d.get("executable", False)), ref, ref_info)


#: the ``ref_info`` fields that say *which* object a reference names (not when it was seen)
REF_IDENTITY = ("etag", "version_id", "generation", "checksum")


def version_digest(entries: Iterable[Entry]) -> str:
    """Hash of ``(path, digest, executable, ref)`` of every entry.

    A reference also contributes what identifies its object (ETag, version id, generation, and
    the size when no digest is known), so logging the same URI after its object changed makes a
    new version. Entries without ``ref`` hash exactly as before.
    """
    h = xxhash.xxh3_128()
    for e in sorted(entries, key=lambda e: e.path):
        rec_l: list[Any] = [e.path, e.digest, e.executable, e.ref]
        if e.ref is not None:
            ident = {k: (e.ref_info or {})[k] for k in REF_IDENTITY if k in (e.ref_info or {})}
            if e.digest is None:
                ident["size"] = e.size
            rec_l.append(ident)
        rec = json.dumps(rec_l, ensure_ascii=False, sort_keys=True)
        h.update(rec.encode("utf-8"))
        h.update(b"\n")
    return f"xxh128:{h.hexdigest()}"


def check_entries(entries: Iterable[Entry]) -> list[Entry]:
    """Sort entries; refuse duplicate paths and a path that is both a file and a directory."""
    out = sorted(entries, key=lambda e: e.path)
    files = set()
    for e in out:
        if e.path in files:
            raise InvalidPath(f"duplicate entry path {e.path!r}")
        files.add(e.path)
    for e in out:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise InvalidPath(f"entry {e.path!r} lies under the file {'/'.join(parts[:i])!r}")
    return out


@dataclass
class Manifest:
    project: str
    artifact: str
    version: int
    type: str
    entries: list[Entry]
    digest: str
    created: str
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    run: str | None = None
    commit_id: str | None = None

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "project": self.project,
            "artifact": self.artifact,
            "version": self.version,
            "type": self.type,
            "digest": self.digest,
            "created": self.created,
            "description": self.description,
            "metadata": self.metadata,
            "run": self.run,
            "commit_id": self.commit_id,
            "entries": [e.to_json() for e in self.entries],
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "manifest") -> "Manifest":
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptData(f"{where}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CorruptData(f"{where}: unknown manifest format")
        try:
            raw_entries = doc.get("entries", [])
            if not isinstance(raw_entries, list):
                raise CorruptData(f"{where}: entries is not a list")
            entries = check_entries(Entry.from_json(d) for d in raw_entries)
            version = doc["version"]
            if not isinstance(version, int) or isinstance(version, bool) or version < 0:
                raise CorruptData(f"{where}: invalid version {version!r}")
            metadata = doc.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise CorruptData(f"{where}: metadata is not an object")
            return cls(
                project=check_name(doc["project"], "project"),
                artifact=check_name(doc["artifact"], "artifact"),
                version=version,
                type=str(doc.get("type") or "unspecified"),
                entries=entries,
                digest=check_digest(doc["digest"]),
                created=str(doc.get("created") or ""),
                description=doc.get("description"),
                metadata=metadata,
                run=doc.get("run"),
                commit_id=doc.get("commit_id"),
            )
        except InvalidPath as e:
            raise InvalidPath(f"{where}: {e}") from None
        except KeyError as e:
            raise CorruptData(f"{where}: missing field {e}") from None
