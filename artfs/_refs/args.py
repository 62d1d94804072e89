"""The CLI's part of references: ``artfs put --reference [NAME=]URI ...`` (and ``artfs upsert``).

(argparse options, kept beside the references they make until the CLI package takes them.)
"""

from __future__ import annotations

from typing import Any

from .base import DEFAULT_MAX_OBJECTS


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


