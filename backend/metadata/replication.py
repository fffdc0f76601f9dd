"""The replication queue's rows: copies and deletes that block stores still owe.

A block store named in a row is one of the server's layout (a region of `replicated:`, the
hot store, or the archive). Rows are written in the transactions that decide them (the
copy with the block's record, the deletes with a retirement or an archive move), so a
crash never forgets one; the workers in backend/lifecycle/replicator.py drain them.

A delete is claimed before it runs (`claim_deletes`: action DELETING, `next_try` the end of
the worker's lease), the fencing that keeps a re-upload of the block whole: an upload that
meets a claimed delete is written again once the delete is over, and each delete run moves
the block's deletion mark, so an upload written before the delete sees its record refused
(backend/metadata/blockrefs.py, record_blocks).
"""

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.orm import Session

from backend.db.engine import insert_ignore
from backend.db.models import COPY, DELETE, DELETING, Block, ReplicationTask

_IN_BATCH = 500
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 60.0


@dataclass(frozen=True, slots=True)
class Task:
    hash: str
    store: str
    action: str
    size: int
    attempts: int
    next_try: int  # for a claimed delete (DELETING), when the claim's lease ends


@dataclass(frozen=True, slots=True)
class Lag:
    """What one store still owes: copies and deletes, their bytes, the oldest's age."""

    store: str
    action: str
    blocks: int
    bytes: int
    oldest_ns: int


def owe_copies(session: Session, owed: Iterable[tuple[str, str, int]], now_ns: int) -> None:
    """Queue a copy of each (hash, store, size) (one already owed stays as it is)."""
    rows = list(owed)
    insert_ignore(session, ReplicationTask, [
        {"hash": hash, "store": store, "action": COPY, "size": size, "created": now_ns,
         "attempts": 0, "next_try": now_ns}
        for hash, store, size in rows
    ])  # fmt: skip


def cancel_deletes(session: Session, hashes: Sequence[str]) -> None:
    """Drop pending deletes of hashes: a block recorded again (re-uploaded after it was
    retired) must not be deleted. A claimed delete stays: the record waits for it to end
    (deletes_running) and writes the block again."""
    for start in range(0, len(hashes), _IN_BATCH):
        session.execute(
            delete(ReplicationTask).where(
                ReplicationTask.hash.in_(hashes[start : start + _IN_BATCH]),
                ReplicationTask.action == DELETE,
            )
        )


def owe_deletes(
    session: Session, blocks: Iterable[tuple[str, int]], stores: Sequence[str], now_ns: int
) -> None:
    """Queue a delete of each (hash, size) from every store, replacing any copy owed (a
    delete under way stays: it fences uploads until it ends)."""
    rows = list(blocks)
    for start in range(0, len(rows), _IN_BATCH):
        hashes = [hash for hash, _size in rows[start : start + _IN_BATCH]]
        session.execute(
            delete(ReplicationTask).where(
                ReplicationTask.hash.in_(hashes),
                ReplicationTask.store.in_(stores),
                ReplicationTask.action != DELETING,
            )
        )
    insert_ignore(session, ReplicationTask, [
        {"hash": hash, "store": store, "action": DELETE, "size": size, "created": now_ns,
         "attempts": 0, "next_try": now_ns}
        for hash, size in rows for store in stores
    ])  # fmt: skip


def due(session: Session, limit: int) -> list[Task]:
    """Up to limit rows whose time has come, oldest first."""
    query = (
        select(ReplicationTask)
        .where(ReplicationTask.next_try <= time.time_ns())
        .order_by(ReplicationTask.next_try)
        .limit(limit)
    )
    return [
        Task(row.hash, row.store, row.action, row.size, row.attempts, row.next_try)
        for row in session.scalars(query)
    ]


def _same(task: Task) -> tuple:
    """The row a task was read from, unchanged (a claim also by its lease)."""
    same = (
        ReplicationTask.hash == task.hash,
        ReplicationTask.store == task.store,
        ReplicationTask.action == task.action,
    )
    if task.action == DELETING:
        return (*same, ReplicationTask.next_try == task.next_try)
    return same


def claim_deletes(session: Session, tasks: Sequence[Task], lease_end_ns: int) -> list[Task]:
    """Claim due deletes (new, or claimed by a worker whose lease ran out) until lease_end_ns;
    return those claimed here. The caller holds the blocks' row locks, the lock a record of
    the same blocks takes first, so no record slips between its check and the claim."""
    claimed = []
    for task in tasks:
        taken = session.execute(
            update(ReplicationTask)
            .where(*_same(task), ReplicationTask.next_try <= time.time_ns())
            .values(action=DELETING, next_try=lease_end_ns)
        )
        if taken.rowcount == 1:
            claimed.append(Task(task.hash, task.store, DELETING, task.size, task.attempts,
                                lease_end_ns))  # fmt: skip
    return claimed


def mark_deleted(session: Session, hashes: Sequence[str], now_ns: int) -> None:
    """Move the deletion marks of blocks a delete ran on (done or not: it may have removed
    the object either way), so an upload that noted the old mark writes its block again."""
    for start in range(0, len(hashes), _IN_BATCH):
        session.execute(
            update(Block)
            .where(Block.hash.in_(hashes[start : start + _IN_BATCH]))
            .values(deleted_at=now_ns)
        )


def deletes_running(session: Session, hashes: Sequence[str]) -> set[str]:
    """The hashes among these that a worker has claimed a delete of."""
    running: set[str] = set()
    for start in range(0, len(hashes), _IN_BATCH):
        query = select(ReplicationTask.hash).where(
            ReplicationTask.hash.in_(hashes[start : start + _IN_BATCH]),
            ReplicationTask.action == DELETING,
        )
        running.update(session.scalars(query))
    return running


def finish(session: Session, task: Task) -> bool:
    """Strike a done task off; False when it changed meanwhile (cancelled or replaced)."""
    done = session.execute(delete(ReplicationTask).where(*_same(task)))
    return done.rowcount == 1


def postpone(session: Session, task: Task) -> float:
    """Push a failed task back by a jittered, doubling delay (capped); return the delay. A
    claimed delete becomes a pending one again."""
    delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**task.attempts) * random.uniform(0.5, 1.0)
    session.execute(
        update(ReplicationTask)
        .where(*_same(task))
        .values(
            action=DELETE if task.action == DELETING else task.action,
            attempts=task.attempts + 1,
            next_try=time.time_ns() + int(delay * 1e9),
        )
    )
    return delay


def lag(session: Session) -> list[Lag]:
    """Per store and action: blocks and bytes owed, and when the oldest was queued (a
    delete under way counts as a delete)."""
    action = case((ReplicationTask.action == DELETING, DELETE), else_=ReplicationTask.action)
    query = (
        select(
            ReplicationTask.store,
            action,
            func.count(),
            func.coalesce(func.sum(ReplicationTask.size), 0),
            func.min(ReplicationTask.created),
        )
        .group_by(ReplicationTask.store, action)
        .order_by(ReplicationTask.store, action)
    )
    return [Lag(*row) for row in session.execute(query)]
