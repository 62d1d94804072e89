"""What ``artfs put`` logs: a DIR, and objects by reference (``--reference [NAME=]URI``).

Shared by ``put`` (:mod:`artfs.cli.artifacts`) and ``put --upsert`` (:mod:`artfs.cli.groups`),
which check the same sources in the same order and build the same draft ``Artifact``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .._artifact import Artifact
from .._errors import ArtfsError
from .._refs import DEFAULT_MAX_OBJECTS
from .context import UsageError


def add_reference_args(parser: Any) -> None:
    """Add ``--reference [NAME=]URI`` (repeatable), ``--no-checksum`` and ``--max-objects`` to ``parser``."""
    g = parser.add_argument_group("references (files that stay where they are)")
    g.add_argument("--reference", dest="references", action="append", default=[], metavar="[NAME=]URI",
                   help="add s3://, gs://, http(s):// or file:// objects by reference; NAME places them "
                        "in the artifact (repeatable)")
    g.add_argument("--no-checksum", dest="ref_checksum", action="store_false",
                   help="record only the URIs of references (no ETag/version pinning, no hashing)")
    g.add_argument("--max-objects", dest="ref_max_objects", type=int, default=DEFAULT_MAX_OBJECTS, metavar="N",
                   help=f"refuse a reference prefix with more than N objects (default {DEFAULT_MAX_OBJECTS})")


def split_reference_arg(arg: str) -> tuple[str | None, str]:
    """``NAME=URI`` -> (NAME, URI); a plain URI (even one with ``=`` in its query) -> (None, URI)."""
    head, sep, tail = arg.partition("=")
    if sep and "://" not in head and "://" in tail:
        return head or None, tail
    return None, arg


def add_references_from_args(artifact: Any, args: Any) -> int:
    """Apply the parsed ``--reference`` options to a draft ``Artifact``; returns the entries added."""
    n = 0
    for arg in getattr(args, "references", None) or []:
        name, uri = split_reference_arg(arg)
        n += len(artifact.add_reference(uri, name=name, checksum=getattr(args, "ref_checksum", True),
                                        max_objects=getattr(args, "ref_max_objects", DEFAULT_MAX_OBJECTS)))
    return n


def check_sources(a: argparse.Namespace) -> None:
    """A DIR that exists, or references, or both (before anything is read or sent)."""
    if a.dir is None and not a.references:
        raise UsageError("put: give a DIR to log, --reference URI, or both")
    if a.dir is not None and not os.path.exists(a.dir):
        raise FileNotFoundError(2, "No such file or directory", a.dir)
    if a.dir is not None and not os.path.isdir(a.dir) and not os.path.isfile(a.dir):
        raise ArtfsError(f"{a.dir}: neither a file nor a directory")


def fill(art: Artifact, a: argparse.Namespace) -> list[str]:
    """Add DIR's files (returned, as paths in the version) and then the references to ``art``;
    a FILE is logged as one file at the version's root (W&B's ``wandb artifact put FILE``)."""
    if a.dir is not None and os.path.isfile(a.dir):
        added = [art.add_file(a.dir)]
    else:
        added = art.add_dir(a.dir) if a.dir is not None else []
    if not added and not a.references:
        raise ArtfsError(f"{a.dir}: no files to log")
    add_references_from_args(art, a)  # entries whose bytes stay where they are
    return added
