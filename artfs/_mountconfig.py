"""One mount's configuration: every option and switch the daemon's parts read, built once.

``artfs mount`` and the daemon parse the same options (:mod:`artfs._mounts`); the daemon turns
them into one :class:`MountConfig` (:meth:`MountConfig.from_args`), completes it with what only
opening the store tells (a read-only store, ``--allow-group``'s gid, the ``--as-of`` time, the
``--run`` view) and hands it down: :class:`artfsd.fs.Operations` and every handler, the
namespace, the drafts and the lazy reader read their settings from it, and none of them has a
default of its own for these. So the 30 s timeout and the 10 s refresh are defaulted here
alone, and so is the block size that ``stat`` and ``statfs`` report.

The switches that come from the environment rather than the command line are read here too,
once, when the configuration is built: ``ARTFS_PASSTHROUGH=0`` (as ``-o no_passthrough``),
``ARTFS_PREFETCH=0`` (no background fetch of a directory's small files) and
``ARTFS_S3_TIMEOUT`` (which, when set, keeps the S3 backend's own budget instead of the mount's
``--timeout``: :attr:`MountConfig.store_timeout`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

DEFAULT_REFRESH = 10.0  # seconds: new versions and moved aliases show up within this time
DEFAULT_TIMEOUT = 30.0  # seconds: a read the store cannot serve fails with EIO after this time
BLKSIZE = 1 << 20  # preferred I/O size reported by stat: tools then read in 1 MiB requests


@dataclass(frozen=True)
class MountConfig:
    """What one mount was asked for (see the module docstring). Frozen: built once, passed down."""

    store_url: str = ""
    mountpoint: str = ""
    #: no ``draft/`` for writing (``--read-only``, an ``https://`` store, ``--as-of``, ``--run``)
    read_only: bool = False
    cache_dir: str | None = None
    cache_size: int | None = None
    #: the drafts' staging directory (None: the default, beside the cache)
    staging: str | None = None
    refresh: float = DEFAULT_REFRESH
    timeout: float = DEFAULT_TIMEOUT
    #: the budget of each S3 request (the store's, its ``s3://`` references'): the mount's timeout
    #: unless ``$ARTFS_S3_TIMEOUT`` is set; None: the backend's own (that variable, else 15 s)
    store_timeout: float | None = None
    blksize: int = BLKSIZE
    allow_other: bool = False
    allow_group: str | None = None
    #: ``--allow-group``'s group id, resolved at mount (None: the daemon's group, all modes shown)
    gid: int | None = None
    allow_file: bool = False
    file_roots: tuple[str, ...] = ()
    #: distributed writers: commit each draft as a part of this group
    group: str | None = None
    lineage: bool = True
    #: who turned FUSE passthrough off ("-o no_passthrough", "ARTFS_PASSTHROUGH=0"; "": nobody)
    passthrough_off: str = ""
    #: fetch the small files of a directory in the background once one of them is read
    prefetch: bool = True
    as_of: str | None = None
    #: ``--as-of`` as nanoseconds since the epoch (None: now)
    as_of_ns: int | None = None
    replay_run: str | None = None
    #: ``--run``: the only artifacts shown, each with its versions and pinned aliases (None: all)
    pinned: Mapping[tuple[str, str], tuple[list[int], dict[str, int]]] | None = field(default=None, compare=False)
    read_threads: int = 64  # reads of version files in flight in threads
    store_threads: int = 16  # listings and manifests fetched at once
    draft_threads: int = 16  # worker threads per draft
    foreground: bool = False
    debug: bool = False
    log_file: str | None = None

    @property
    def passthrough(self) -> bool:
        """Whether to ask the kernel for passthrough of complete cache blobs."""
        return not self.passthrough_off

    @property
    def mode_clear(self) -> int:
        """Permission bits cleared from every mode shown (``--allow-group``: 0o007, so only the
        owner and the group pass the kernel's checks under ``default_permissions``)."""
        return 0o007 if self.gid is not None else 0

    @classmethod
    def from_args(cls, args: Any, environ: Mapping[str, str] | None = None) -> "MountConfig":
        """The configuration of parsed mount options (the ``argparse.Namespace`` of
        :func:`artfs._mounts.add_mount_arguments`, ``-o`` folded in)."""
        env: Mapping[str, str] = os.environ if environ is None else environ
        g: Any = lambda name, default=None: getattr(args, name, default)  # noqa: E731
        off = ("-o no_passthrough" if g("no_passthrough", False)
               else "ARTFS_PASSTHROUGH=0" if env.get("ARTFS_PASSTHROUGH") == "0" else "")
        timeout = float(g("timeout", DEFAULT_TIMEOUT))
        return cls(
            store_url=g("store_url") or "", mountpoint=args.mountpoint, read_only=bool(g("read_only", False)),
            cache_dir=g("cache_dir"), cache_size=g("cache_size"),
            refresh=float(g("refresh", DEFAULT_REFRESH)), timeout=timeout,
            store_timeout=None if "ARTFS_S3_TIMEOUT" in env else timeout,
            allow_other=bool(g("allow_other", False)), allow_group=g("allow_group"),
            allow_file=bool(g("allow_file", False)), file_roots=tuple(g("file_roots") or ()),
            group=g("group"), lineage=not g("no_lineage", False), passthrough_off=off,
            prefetch=env.get("ARTFS_PREFETCH", "1") != "0",
            as_of=g("as_of"), replay_run=g("replay_run"),
            foreground=bool(g("foreground", False)), debug=bool(g("debug", False)), log_file=g("log_file"),
        )
