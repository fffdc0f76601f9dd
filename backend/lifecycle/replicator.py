"""Draining the replication queue: the copies and deletes regions and tiers still owe.

Each pass takes the rows that are due (oldest first), runs them on a pool of threads and
records the outcomes in one transaction: a done row is struck off, a failed one is pushed
back with a doubling, jittered delay (backend/metadata/replication.py). A copy reads the
block from another store, checks it (authenticated decryption and the hash) and only then
writes it; a copy that nobody can give verified stays queued.

A delete runs under the same fencing as a garbage collection (docs/blocks.md): it is
claimed first, under the block's row lock, for a lease (LEASE_NS); an upload of the block
that is recorded while the claim holds is refused and written again once the delete has
ended, and each delete moves the block's deletion mark, so an upload written before the
delete and recorded after it is written again too. A worker runs a claimed delete only
while its lease is young; a claim whose worker died is taken over when its lease ends.
"""

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from backend.blockstore.base import each_copy
from backend.db.engine import writer
from backend.db.models import COPY, DELETING, Block
from backend.lifecycle.gc import LEASE_NS
from backend.lifecycle.layout import Layout
from backend.metadata.blockrefs import lock_blocks
from backend.metadata.replication import (
    Task,
    claim_deletes,
    due,
    finish,
    mark_deleted,
    owe_deletes,
    postpone,
)

log = logging.getLogger(__name__)

BATCH = 64
WORKERS = 8
_IN_BATCH = 500

Check = Callable[[str, bytes], None]


class CopyFailed(Exception):
    """No other store could give a verified copy of the block (yet)."""


class ClaimExpired(Exception):
    """A claimed delete waited so long in the pool that another worker may take it over."""


class Replicator:
    def __init__(self, engine: Engine, layout: Layout, check: Check) -> None:
        """check(hash, object) raises unless the object is a whole, authentic block."""
        self.engine = engine
        self.layout = layout
        self.check = check
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="replicate")

    def drain_once(self) -> int:
        """Run the due tasks (at most BATCH); return how many were tried."""
        with Session(self.engine) as session:
            found = due(session, BATCH)
        tasks = self._claimed(found) if found else []
        if not tasks:
            return 0
        outcomes = list(self._pool.map(self._run, tasks))
        with Session(writer(self.engine)) as session, session.begin():
            ran = sorted({task.hash for task in tasks if task.action == DELETING})
            lock_blocks(session, ran)
            mark_deleted(session, ran, time.time_ns())
            for task, error in zip(tasks, outcomes, strict=True):
                if error is None:
                    finish(session, task)
                    continue
                delay = postpone(session, task)
                log.warning(
                    "%s of %s to %s failed (attempt %d, next in %.1f s): %s",
                    task.action, task.hash, task.store, task.attempts + 1, delay, error,
                )  # fmt: skip
        return len(tasks)

    def _claimed(self, tasks: list[Task]) -> list[Task]:
        """The copies, and the deletes this worker claimed (another may have taken some)."""
        deletes = [task for task in tasks if task.action != COPY]
        if not deletes:
            return tasks
        with Session(writer(self.engine)) as session, session.begin():
            lock_blocks(session, sorted({task.hash for task in deletes}))
            claimed = claim_deletes(session, deletes, time.time_ns() + LEASE_NS)
        return [task for task in tasks if task.action == COPY] + claimed

    def _run(self, task: Task) -> Exception | None:
        target = self.layout.stores.get(task.store)
        try:
            if target is None:
                raise CopyFailed(f"no store is configured under the name {task.store!r}")
            if task.action == COPY:
                target.put(task.hash, self._verified_copy(task))
            elif time.time_ns() > task.next_try - LEASE_NS // 2:
                raise ClaimExpired("the claim is too old to delete under; retried later")
            else:
                target.delete(task.hash)
        except Exception as exc:
            return exc
        return None

    def _verified_copy(self, task: Task) -> bytes:
        """The block from the first other store that holds a copy passing the check."""
        reasons = []
        for name, source in self.layout.sources(task.store):
            try:
                for obj in each_copy(source, task.hash):
                    self.check(task.hash, obj)
                    return obj
            except Exception as exc:
                reasons.append(f"{name}: {exc}")
        raise CopyFailed(f"no verified copy of {task.hash}: " + "; ".join(reasons))

    def retire(self, hashes: Sequence[str]) -> None:
        """Queue deletes of blocks from every region and tier, in one transaction."""
        retire_blocks(self.engine, list(self.layout.stores), hashes)


def retire_blocks(engine: Engine, stores: list[str], hashes: Sequence[str]) -> None:
    wanted = sorted(set(hashes))
    with Session(writer(engine)) as session, session.begin():
        sizes: dict[str, int] = {}
        for start in range(0, len(wanted), _IN_BATCH):
            query = select(Block.hash, Block.stored_size).where(
                Block.hash.in_(wanted[start : start + _IN_BATCH])
            )
            sizes.update((hash, size or 0) for hash, size in session.execute(query))
        owe_deletes(
            session, [(hash, sizes.get(hash, 0)) for hash in wanted], stores, time.time_ns()
        )
