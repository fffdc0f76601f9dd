"""The one place where exceptions become errno values for the kernel.

Every FUSE handler is wrapped by `fuse_errors`. API errors (backend.protocol.errors) carry
their errno; `FsError` carries errno values the API has no code for (EPERM for a hard link
to a folder, ENODATA for a missing xattr, EFBIG past the drive's file size ...); an invalid
name is EINVAL. Anything else is a bug: it is logged with its traceback and the caller sees
EIO rather than a hung or crashed mount.
"""

import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import pyfuse3

from backend.protocol.errors import CirrusError
from backend.protocol.paths import InvalidPath

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class FsError(Exception):
    """A filesystem error with an errno and no API counterpart."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or errno.errorcode.get(code, str(code)))
        self.errno = code


def to_errno(exc: BaseException) -> int | None:
    """The errno for an expected error, or None for a bug."""
    if isinstance(exc, CirrusError | FsError):
        return exc.errno
    if isinstance(exc, InvalidPath):
        return errno.EINVAL
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return None


def fuse_errors(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn every exception a handler raises into a FUSEError with the right errno."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            code = to_errno(exc)
            if code is None:
                log.exception("unexpected error in %s", handler.__name__)
                code = errno.EIO
            raise pyfuse3.FUSEError(code) from None

    return wrapper
