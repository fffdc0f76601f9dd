"""Whether this server can serve requests: its database and its block store answer.

A load balancer asks every few seconds (`/v1/health`) and stops sending requests to a server
that answers 503. Each probe runs in a worker thread under a time limit, and concurrent
health checks share the probe in progress, so a database that hangs costs one thread, not
one per check. A change of state is logged once, with the reason the answer leaves out.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import text
from sqlalchemy.engine import Engine

from backend.blockstore.base import BlockStore

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
_SUBJECTS = {"database": "database is", "blocks": "blocks are"}  # for the log lines


@dataclass(frozen=True, slots=True)
class HealthReport:
    database: bool
    blocks: bool

    @property
    def ok(self) -> bool:
        return self.database and self.blocks

    def to_json(self) -> dict:
        def word(up: bool) -> str:
            return "ok" if up else "unreachable"

        status = "ok" if self.ok else "unavailable"
        return {"status": status, "database": word(self.database), "blocks": word(self.blocks)}


class HealthCheck:
    """Probes the database and the block store; one probe of each at a time."""

    def __init__(self, engine: Engine, store: BlockStore) -> None:
        self._probes: dict[str, Callable[[], None]] = {
            "database": lambda: _select_one(engine),
            "blocks": store.check,
        }
        self._running: dict[str, asyncio.Future[bool]] = {}
        self._last: dict[str, bool] = {}

    async def report(self) -> HealthReport:
        database, blocks = await asyncio.gather(self._probe("database"), self._probe("blocks"))
        return HealthReport(database, blocks)

    async def _probe(self, name: str) -> bool:
        running = self._running.get(name)
        if running is None:
            running = asyncio.ensure_future(self._run(name))
            self._running[name] = running
            running.add_done_callback(lambda _: self._running.pop(name, None))
        try:
            return await asyncio.wait_for(asyncio.shield(running), PROBE_TIMEOUT_S)
        except TimeoutError:
            self._note(name, False, f"no answer within {PROBE_TIMEOUT_S:g}s")
            return False

    async def _run(self, name: str) -> bool:
        try:
            await anyio.to_thread.run_sync(self._probes[name])
        except Exception as exc:
            self._note(name, False, str(exc).strip().splitlines()[0] if str(exc) else repr(exc))
            return False
        self._note(name, True, "")
        return True

    def _note(self, name: str, up: bool, reason: str) -> None:
        if self._last.get(name, True) != up:
            if up:
                log.warning("health: the %s reachable again", _SUBJECTS[name])
            else:
                log.warning("health: the %s unreachable: %s", _SUBJECTS[name], reason)
        self._last[name] = up


def _select_one(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
