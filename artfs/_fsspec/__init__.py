"""The fsspec filesystem of artfs (protocol ``artfs``); the public name is :mod:`artfs.fsspec`.

One noun per module: :mod:`.paths` (the path grammar, validated before any request),
:mod:`.tree` (a version's index), :mod:`.files` (opening files: cache file, small fetch, lazy
reader, draft writes), :mod:`.drafts` (transactions), :mod:`.lineage` (runs of readers and
writers), :mod:`.filesystem` (the filesystem class). Imports ``fsspec``: only loaded by fsspec's
registry or ``import artfs.fsspec``, never by ``import artfs``.
"""

from __future__ import annotations

from .filesystem import ArtfsFileSystem

__all__ = ["ArtfsFileSystem"]
