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

    def __str__(self) -> str:
        what = "created" if self.created else "unchanged, matches"
        return f"{self.project}/{self.artifact}:v{self.version} ({what}; {self.files} files, {self.uploaded_blobs} new blobs, {self.uploaded_bytes} bytes uploaded)"
