"""Running a lifecycle job in the server's background, again and again.

A job is a blocking call (database work) run in the threadpool, first at start-up, then
every interval. A failing run is logged and the next one tries again: a job never brings
the server down, and several servers running the same job at once only repeat work that is
idempotent (each run is its own transactions, under each drive's writer lock).
"""

import asyncio
import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.1  # an interval of 0 must not spin


async def run_every(interval_s: float, job: Callable[[], int], done: str) -> None:
    """Run `job` every interval_s seconds; log `done` with its result when it did something
    (`done` holds one %d)."""
    while True:
        try:
            count = await run_in_threadpool(job)
            if count:
                log.info(done, count)
        except Exception:
            log.exception("%s failed; retrying at the next interval", job.__name__)
        await asyncio.sleep(max(interval_s, MIN_INTERVAL_S))
