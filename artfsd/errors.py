"""The one place where errors become errno values for the kernel.

FUSE handlers raise only ``pyfuse3.FUSEError``. Everything else that escapes a handler passes
through :func:`errno_for` (via the :func:`fuse_handler` decorator or :func:`to_fuse`), which maps
the artfs exception tree to an errno and logs one line naming the operation and the failure:

    NotFound                    ENOENT
    StoreUnavailable            EIO     (the store failed after its bounded retries / --timeout)
    CorruptData                 EIO     (bytes or a manifest do not match their digest)
    PermissionDenied            EACCES
    InvalidName, InvalidPath    EINVAL
    DraftBusy                   EBUSY   (another process holds the draft: another mount, artfs commit)
    OSError with an errno       that errno
    anything else               EIO, logged with its traceback (a bug)
"""

from __future__ import annotations

import errno
import functools
import logging
from typing import Any, Awaitable, Callable, TypeVar

import pyfuse3

from artfs import CorruptData, InvalidName, InvalidPath, NotFound, PermissionDenied, StoreUnavailable
from artfs.lowlevel import DraftBusy

log = logging.getLogger("artfsd")

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])

# most specific first
_MAP: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, errno.ENOENT),
    (StoreUnavailable, errno.EIO),
    (CorruptData, errno.EIO),
    (PermissionDenied, errno.EACCES),
    (InvalidName, errno.EINVAL),
    (InvalidPath, errno.EINVAL),
    (DraftBusy, errno.EBUSY),
)


_ORDINARY = frozenset({errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR, errno.EXDEV,
                       errno.EINVAL, errno.EPERM, errno.ENOTSUP, errno.ENODATA, errno.ENAMETOOLONG,
                       errno.EACCES})


class Timeout(Exception):
    """A store call did not finish within the mount's ``--timeout``."""


def errno_for(exc: BaseException, what: str = "") -> int:
    """The errno for ``exc``; logs one line (a traceback for unexpected errors)."""
    where = f"{what}: " if what else ""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    if isinstance(exc, Timeout):
        log.error("%s%s", where, exc or "timed out")
        return errno.EIO
    for cls, code in _MAP:
        if isinstance(exc, cls):
            level = logging.DEBUG if code == errno.ENOENT else logging.ERROR
            log.log(level, "%s%s (%s)", where, exc, errno.errorcode[code])
            return code
    if isinstance(exc, OSError) and exc.errno:
        # a draft's ordinary answers (a lookup that misses, mkdir of an existing name) are no errors
        log.log(logging.DEBUG if exc.errno in _ORDINARY else logging.ERROR, "%s%s", where, exc)
        return exc.errno
    log.error("%sunexpected %s: %s", where, type(exc).__name__, exc, exc_info=exc)
    return errno.EIO


def to_fuse(exc: BaseException, what: str = "") -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno_for(exc, what))


def fuse_handler(fn: _F) -> _F:
    """Decorate an ``Operations`` method so that it raises nothing but ``FUSEError``."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:  # trio.Cancelled is a BaseException and passes through
            raise to_fuse(e, name) from None

    return wrapper  # type: ignore[return-value]
