"""Recognising a full disk, whichever layer hit it: the block store or a spool (ENOSPC,
EDQUOT), SQLite (SQLITE_FULL) or PostgreSQL (disk_full, SQLSTATE 53100).

The API answers these 507 insufficient_storage rather than 500: the request may succeed
later, once space is freed, and clients (the mount) keep their data and retry.
"""

import errno

_OS_FULL = (errno.ENOSPC, errno.EDQUOT)
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"


def is_disk_full(exc: BaseException | None) -> bool:
    """True when exc, or an error it wraps (driver error, cause, context), is a full disk."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _OS_FULL:
            return True
        if getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if getattr(exc, "sqlstate", None) == _PG_DISK_FULL:
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False
