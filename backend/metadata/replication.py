"""The replication queue's rows: copies and deletes that block stores still owe.

A block store named in a row is one of the server's layout (a region of `replicated:`, the
hot store, or the archive). Rows are written in the transactions that decide them (the
copy with the block's record, the deletes with a retirement or an archive move), so a
crash never forgets one; the workers in backend/lifecycle/replicator.py drain them.
"""

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from backend.db.engine import insert_ignore
from backend.db.models import COPY, DELETE, ReplicationTask

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
    retired) must not be deleted."""
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
    """Queue a delete of each (hash, size) from every store, replacing any copy owed."""
    rows = list(blocks)
    for start in range(0, len(rows), _IN_BATCH):
        hashes = [hash for hash, _size in rows[start : start + _IN_BATCH]]
        session.execute(
            delete(ReplicationTask).where(
                ReplicationTask.hash.in_(hashes), ReplicationTask.store.in_(stores)
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
        Task(row.hash, row.store, row.action, row.size, row.attempts)
        for row in session.scalars(query)
    ]


def finish(session: Session, task: Task) -> bool:
    """Strike a done task off; False when it changed meanwhile (cancelled or replaced)."""
    done = session.execute(
        delete(ReplicationTask).where(
            ReplicationTask.hash == task.hash,
            ReplicationTask.store == task.store,
            ReplicationTask.action == task.action,
        )
    )
    return done.rowcount == 1


def postpone(session: Session, task: Task) -> float:
    """Push a failed task back by a jittered, doubling delay (capped); return the delay."""
    delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**task.attempts) * random.uniform(0.5, 1.0)
    session.execute(
        update(ReplicationTask)
        .where(
            ReplicationTask.hash == task.hash,
            ReplicationTask.store == task.store,
            ReplicationTask.action == task.action,
        )
        .values(attempts=task.attempts + 1, next_try=time.time_ns() + int(delay * 1e9))
    )
    return delay


def lag(session: Session) -> list[Lag]:
    """Per store and action: blocks and bytes owed, and when the oldest was queued."""
    query = (
        select(
            ReplicationTask.store,
            ReplicationTask.action,
            func.count(),
            func.coalesce(func.sum(ReplicationTask.size), 0),
            func.min(ReplicationTask.created),
        )
        .group_by(ReplicationTask.store, ReplicationTask.action)
        .order_by(ReplicationTask.store, ReplicationTask.action)
    )
    return [Lag(*row) for row in session.execute(query)]
