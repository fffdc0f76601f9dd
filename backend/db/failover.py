"""Riding out a database failover: which errors mean "the connection is gone", and running
again the calls for which a second run is harmless.

Servers reach PostgreSQL through a libpq multi-host URL with `target_session_attrs=read-write`,
so a new connection always lands on the current primary. When the primary dies, the
connections in the pool die with it: the engine's pre-ping replaces a dead one at checkout,
and SQLAlchemy invalidates the whole pool on the first disconnect it sees, but a transaction
that was running at that moment fails. Whether it committed is then unknown, so only calls
that are harmless to repeat are run again here: reads, and writes that carry an id making a
repeat a no-op (a commit's `commit_id`, a batch whose operations all carry a `seq`). Any other
call fails with DatabaseUnavailable (503), and the client, which knows what it sent, decides.
"""

import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from backend.protocol.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# Pauses before each new attempt: a dropped connection is usually replaced at once (another
# host of the URL, or the pool's next connection); a primary still being promoted is waited
# for about two seconds before the client is told to come back.
RETRY_PAUSES_S = (0.05, 0.5, 1.5)

P = ParamSpec("P")
R = TypeVar("R")


def connection_lost(exc: BaseException) -> bool:
    """True for a database error that says nothing about the request: the connection broke
    during the call, or no server of the URL would take a new one."""
    if not isinstance(exc, DBAPIError):
        return False
    # A failed connect has no statement; a broken one is invalidated by SQLAlchemy.
    return exc.connection_invalidated or (isinstance(exc, OperationalError) and not exc.statement)


def unavailable(exc: DBAPIError) -> DatabaseUnavailable:
    lines = str(exc.orig or exc).strip().splitlines()
    reason = f": {lines[0]}" if lines else ""
    return DatabaseUnavailable(f"the metadata database is unreachable, retry shortly{reason}")


def run_again(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call function; when its connection is lost, call it again (a few times, with pauses).
    Only for calls that are safe to repeat (see the module's docstring)."""
    attempt = 0
    while True:
        try:
            return function(*args, **kwargs)
        except DBAPIError as exc:
            if not connection_lost(exc):
                raise
            if attempt == len(RETRY_PAUSES_S):
                raise unavailable(exc) from exc
            log.warning("database connection lost in %s; trying again", function.__name__)
            time.sleep(RETRY_PAUSES_S[attempt])
            attempt += 1


def repeatable(function: Callable[P, R]) -> Callable[P, R]:
    """Decorate a call that is harmless to repeat (a read) with run_again."""

    @wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return run_again(function, *args, **kwargs)

    return run
