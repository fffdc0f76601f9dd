"""Block garbage collection: delete the objects of blocks no revision names.

The protocol is written down in docs/blocks.md ("Garbage collection"); in short: a block
whose refcount is 0 and whose mark (`last_used`) is older than the grace period is claimed
in a transaction that holds the locks of every drive that holds it and re-checks all of
that, loses its holders, has its object deleted, and is left as a tombstone. Uploads that
raced a deletion are written again (`Collector.record`).
"""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from backend import clock
from backend.blocks import BlockService, StoredBlock
from backend.db.engine import writer
from backend.db.models import Block, Namespace, NamespaceBlock, ReplicationTask, UploadBlock
from backend.metadata.blockrefs import lock_blocks
from backend.metadata.replication import deletes_running
from backend.metadata.service import MetadataService
from backend.metadata.types import Principal
from backend.protocol.errors import BlockBeingCollected

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 86_400.0
DEFAULT_INTERVAL_S = 3_600.0
# A claim older than this belongs to a collector that died; anyone may finish it.
LEASE_NS = 60 * 10**9
# A collector deletes under its claim only while the claim is younger than this.
_OWN_CLAIM_S = LEASE_NS / 2e9
TOMBSTONE_AGE_NS = 24 * 3600 * 10**9
BATCH = 500
_DELETE_GROUP = 100  # objects deleted with one shared flush
_WAIT_STEP_S = 0.02
_RECORD_ROUNDS = 10
_BLOCKS = Block.__table__


@dataclass(slots=True)
class GcReport:
    """What one collection did (or, for a dry run, would do)."""

    blocks: int = 0
    bytes: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def line(self) -> str:
        rate = self.blocks / self.seconds if self.seconds > 0 else 0.0
        verb = "would collect" if self.dry_run else "collected"
        return (
            f"{verb} {self.blocks} blocks, {self.bytes} bytes "
            f"in {self.seconds:.1f} s ({rate:.0f} blocks/s)"
        )


class Collector:
    """Collects garbage blocks of one metadata database from one block store."""

    def __init__(self, engine: Engine, blocks: BlockService, grace_s: float) -> None:
        if grace_s < 0:
            raise ValueError("the grace period cannot be negative")
        self._engine = engine
        self._writer = writer(engine)
        self._blocks = blocks
        self.grace_ns = int(grace_s * 1e9)

    def collect(self, dry_run: bool = False) -> GcReport:
        """One whole collection; safe to run in several processes at once."""
        started = time.monotonic()
        report = GcReport(dry_run=dry_run)
        cutoff = clock.now_ns() - self.grace_ns
        if not dry_run:
            self._recover(report, _stale_claims(self._engine))
        after = ""
        while True:
            batch = self._candidates(cutoff, after)
            if not batch:
                break
            after = batch[-1][0]
            if dry_run:
                report.blocks += len(batch)
                report.bytes += sum(size for _hash, size in batch)
                continue
            claim_ns, claimed = self._claim([h for h, _size in batch], cutoff)
            self._delete(claim_ns, claimed, report)
        if not dry_run:
            self._drop_tombstones()
        report.seconds = time.monotonic() - started
        return report

    def _candidates(self, cutoff: int, after: str) -> list[tuple[str, int]]:
        query = (
            select(Block.hash, Block.stored_size)
            .where(*_collectable(cutoff), Block.hash > after)
            .order_by(Block.hash)
            .limit(BATCH)
        )
        with self._engine.connect() as conn:
            return [(h, size) for h, size in conn.execute(query)]

    def _claim(self, hashes: list[str], cutoff: int) -> tuple[int, dict[str, int]]:
        """Claim what is still collectable, under the locks of the drives holding it, and
        take it from those drives; return the claim's time and {hash: stored size}."""
        with Session(self._writer) as session, session.begin():
            holders = select(NamespaceBlock.namespace_id).where(NamespaceBlock.hash.in_(hashes))
            owners = sorted(set(session.scalars(holders)))
            if owners:  # the lock every write to those drives takes first, in id order
                lock = select(Namespace.id).where(Namespace.id.in_(owners)).with_for_update()
                session.execute(lock.order_by(Namespace.id)).all()
            lock_blocks(session, sorted(hashes))
            claim_ns = clock.now_ns()
            claim = (
                update(_BLOCKS)
                .where(_BLOCKS.c.hash.in_(hashes), *_collectable(cutoff, _BLOCKS.c))
                .values(deleting_since=claim_ns)
                .returning(_BLOCKS.c.hash, _BLOCKS.c.stored_size)
            )
            claimed = {h: size for h, size in session.execute(claim)}
            if claimed:
                gone = NamespaceBlock.__table__.delete().where(
                    NamespaceBlock.hash.in_(sorted(claimed))
                )
                session.execute(gone)
        return claim_ns, claimed

    def _delete(self, claim_ns: int, claimed: dict[str, int], report: GcReport) -> None:
        """Delete the claimed objects, a group at a time while the claim is fresh; record
        those deleted."""
        started = time.monotonic()
        ordered = sorted(claimed)
        done: list[str] = []
        try:
            for start in range(0, len(ordered), _DELETE_GROUP):
                if time.monotonic() - started > _OWN_CLAIM_S:
                    log.warning("collection slowed down; %d claims left for later",
                                len(ordered) - len(done))  # fmt: skip
                    break
                group = ordered[start : start + _DELETE_GROUP]
                self._blocks.delete_many(group)
                done.extend(group)
        finally:
            self._finish(claim_ns, done)
        report.blocks += len(done)
        report.bytes += sum(claimed[h] or 0 for h in done)

    def _finish(self, claim_ns: int, hashes: list[str]) -> None:
        if not hashes:
            return
        with Session(self._writer) as session, session.begin():
            lock_blocks(session, sorted(hashes))
            session.execute(
                update(_BLOCKS)
                .where(_BLOCKS.c.hash.in_(hashes), _BLOCKS.c.deleting_since == claim_ns)
                .values(deleting_since=None, stored_size=None, deleted_at=clock.now_ns())
            )

    def _recover(self, report: GcReport, stale: list[tuple[str, int]]) -> None:
        """Take over claims whose collector died, and finish them."""
        for block_hash, old_claim in stale:
            with Session(self._writer) as session, session.begin():
                claim_ns = clock.now_ns()
                taken = session.execute(
                    update(_BLOCKS)
                    .where(_BLOCKS.c.hash == block_hash, _BLOCKS.c.deleting_since == old_claim)
                    .values(deleting_since=claim_ns)
                    .returning(_BLOCKS.c.stored_size)
                ).all()
            if taken:
                self._delete(claim_ns, {block_hash: taken[0][0]}, report)

    def _drop_tombstones(self) -> None:
        """Rows of deleted blocks nobody named for a day (their fencing job is done), unless
        a store still owes their delete: the row's deletion mark fences that delete too."""
        old = clock.now_ns() - TOMBSTONE_AGE_NS
        owed = select(ReplicationTask.hash).where(ReplicationTask.hash == _BLOCKS.c.hash)
        gone = (
            _BLOCKS.c.refcount == 0,
            _BLOCKS.c.stored_size.is_(None),
            _BLOCKS.c.deleting_since.is_(None),
            _BLOCKS.c.deleted_at < old,
            _BLOCKS.c.last_used < old,
            ~owed.exists(),
        )
        with self._engine.connect() as conn:
            hashes = sorted(conn.scalars(select(_BLOCKS.c.hash).where(*gone)))
        for start in range(0, len(hashes), BATCH):
            batch = hashes[start : start + BATCH]
            with Session(self._writer) as session, session.begin():
                lock_blocks(session, batch)
                session.execute(_BLOCKS.delete().where(_BLOCKS.c.hash.in_(batch), *gone))

    # uploads that raced a deletion

    def store(
        self,
        metadata: MetadataService,
        who: Principal,
        hashes: list[str],
        write: Callable[[list[str]], Sequence[StoredBlock]],
    ) -> list[StoredBlock]:
        """Write blocks (`write(hashes)` stores them) and record them for the drive; those a
        collection may have deleted meanwhile are written again once that collection is
        over, then recorded. The blocks first written are returned."""
        first: list[StoredBlock] | None = None
        for _round in range(_RECORD_ROUNDS):
            seen = metadata.deletion_marks(hashes)
            stored = list(write(hashes))
            first = stored if first is None else first
            rows = [(b.hash, b.size, b.stored_size) for b in stored]
            owed = [(b.hash, region) for b in stored for region in b.owed]
            clobbered = metadata.record_blocks(who, rows, seen, owed)
            if not clobbered:
                return first
            log.info("%d uploaded blocks met a collection; writing them again", len(clobbered))
            self.await_deletions(clobbered)
            hashes = clobbered
        raise BlockBeingCollected("the blocks of this upload keep being collected; send it again")

    def await_deletions(self, hashes: list[str]) -> None:
        """Wait until no collection claims any of the hashes (finishing abandoned claims)
        and no queued delete of them is under way (a replicator takes over an abandoned one
        when its lease ends)."""
        deadline = time.monotonic() + LEASE_NS / 1e9 + 10
        while time.monotonic() < deadline:
            claims = _claims(self._engine, hashes)
            if not claims and not _deletes_running(self._engine, hashes):
                return
            stale = [(h, since) for h, since in claims if since < clock.now_ns() - LEASE_NS]
            if stale:
                self._recover(GcReport(), stale)
            else:
                time.sleep(_WAIT_STEP_S)
        raise BlockBeingCollected("a collection of this upload's blocks did not end")


def _collectable(cutoff: int, columns=Block) -> tuple:
    """The conditions under which a block may be claimed (re-checked by the claim itself).
    A block an open resumable session has stored is not referenced by any revision yet, but
    the session's final commit will name it: it stays while the session lives."""
    in_session = select(UploadBlock.hash).where(UploadBlock.hash == columns.hash).exists()
    return (
        columns.refcount == 0,
        columns.stored_size.is_not(None),
        columns.deleting_since.is_(None),
        columns.last_used <= cutoff,
        ~in_session,
    )


def _claims(engine: Engine, hashes: list[str]) -> list[tuple[str, int]]:
    query = select(Block.hash, Block.deleting_since).where(
        Block.hash.in_(hashes), Block.deleting_since.is_not(None)
    )
    with engine.connect() as conn:
        return [(h, since) for h, since in conn.execute(query)]


def _deletes_running(engine: Engine, hashes: list[str]) -> bool:
    with Session(engine) as session:
        return bool(deletes_running(session, hashes))


def _stale_claims(engine: Engine) -> list[tuple[str, int]]:
    query = select(Block.hash, Block.deleting_since).where(
        Block.deleting_since < clock.now_ns() - LEASE_NS
    )
    with engine.connect() as conn:
        return [(h, since) for h, since in conn.execute(query)]
