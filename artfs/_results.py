"""What a commit returns.

Below the store, so that every writer of versions (the store's commit, a distributed group's
finish, a draft's commit) builds one without importing the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CommitResult:
    """What a commit did: the version it created or matched, and what it uploaded."""

    project: str
    artifact: str
    version: int
    created: bool
    files: int
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    aliases: list[str] = field(default_factory=list)
    #: local files read to hash them (the others' digests came from the record of what was
    #: hashed, :mod:`artfs._hashes`); set by ``Artifact`` logs, 0 for other commits
    hashed_files: int = 0

    def __str__(self) -> str:
        what = "created" if self.created else "unchanged, matches"
        return f"{self.project}/{self.artifact}:v{self.version} ({what}; {self.files} files, {self.uploaded_blobs} new blobs, {self.uploaded_bytes} bytes uploaded)"
