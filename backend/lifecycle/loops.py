"""The server's background loops over stored blocks (replication, archive moves, garbage
collection), started with the app (app.py)."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from backend.lifecycle.replicator import Replicator

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Lifecycle:
    replicator: Replicator | None
    replication_interval_s: float
    jobs: tuple[tuple[str, Callable[[], int], float], ...] = ()  # (name, pass, interval)

    async def run(self) -> None:
        """Every loop until cancelled: the queue's drain, then any other periodic pass."""
        loops = list(self.jobs)
        if self.replicator is not None:
            loops.append(("replication", self.replicator.drain_once, self.replication_interval_s))
        async with asyncio.TaskGroup() as group:
            for name, one_pass, interval in loops:
                group.create_task(_repeat(name, one_pass, interval))


async def _repeat(name: str, one_pass: Callable[[], int], interval: float) -> None:
    """Run one_pass in a worker thread again and again; wait interval when it found
    nothing to do (or failed), so a backlog drains at full speed."""
    while True:
        try:
            done = await run_in_threadpool(one_pass)
        except Exception:
            log.exception("%s pass failed; retrying in %.1f s", name, interval)
            done = 0
        if not done:
            await asyncio.sleep(interval)
