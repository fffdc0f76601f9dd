"""Moving blocks nobody needs fast to the archive store (`--archive URL`).

The policy (ServerConfig): blocks that only old revisions and deleted files use
(`archive_old_revisions`), and/or blocks nobody has read or written for
`archive_after_days`. A pass moves up to BATCH blocks, each crash-safely:

1. read the block from the hot store and check it (decryption and hash);
2. write it to the archive and read it back (or, for a class that needs a restore, check
   that the archive holds an object of the right size);
3. record tier = archive and queue the hot copies' deletes, in one transaction;
4. the replication queue deletes the hot copies (every region).

A crash before 3 leaves the block hot (the archive copy is written again next time); after
3 the deletes are in the queue. Reads never notice: the tiered store asks the hot store,
then the archive (backend/blockstore/tiered.py).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from backend.blocks import BlockService
from backend.blockstore.base import BlockStore, each_copy
from backend.blockstore.tiered import TieredBlockStore
from backend.config import ServerConfig
from backend.db.engine import writer
from backend.db.models import ARCHIVE, HOT, Block, Node, Revision, RevisionBlock
from backend.lifecycle.layout import Layout
from backend.metadata.replication import owe_deletes
from backend.protocol.errors import CirrusError

log = logging.getLogger(__name__)

BATCH = 64
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True, slots=True)
class Policy:
    old_revisions: bool
    unread_days: float | None

    @property
    def active(self) -> bool:
        return self.old_revisions or self.unread_days is not None


class Archiver:
    def __init__(
        self, engine: Engine, layout: Layout, blocks: BlockService, policy: Policy
    ) -> None:
        if not isinstance(layout.store, TieredBlockStore):
            raise ValueError("archiving needs an archive store (--archive URL)")
        self.engine = engine
        self.hot: BlockStore = layout.store.hot
        self.archive: BlockStore = layout.store.archive
        self.regions = list(layout.regions)
        self.blocks = blocks
        self.policy = policy

    def run_once(self) -> int:
        """Move one batch of blocks the policy picks; return how many moved."""
        self._note_reads()
        moved = [(hash, size) for hash, size in self._candidates() if self._copy(hash, size)]
        if moved:
            self._record(moved)
            log.info("moved %d blocks to the archive", len(moved))
        return len(moved)

    def _note_reads(self) -> None:
        """Write down which blocks were read since the last pass (last_used), so a block
        in use is not archived as unread."""
        read = self.blocks.take_reads()
        if not read:
            return
        with Session(writer(self.engine)) as session, session.begin():
            session.execute(
                update(Block).where(Block.hash.in_(read)).values(last_used=time.time_ns())
            )

    def _candidates(self) -> list[tuple[str, int]]:
        rules = []
        if self.policy.old_revisions:
            current = (
                select(RevisionBlock.hash)
                .join(Revision, Revision.id == RevisionBlock.revision_id)
                .join(Node, and_(Node.id == Revision.node_id, Node.rev == Revision.number))
                .where(RevisionBlock.hash == Block.hash, Node.deleted.is_(False))
            )
            rules.append(~exists(current))
        if self.policy.unread_days is not None:
            cutoff = time.time_ns() - int(self.policy.unread_days * DAY_NS)
            rules.append(Block.last_used < cutoff)
        query = (
            select(Block.hash, Block.stored_size)
            .where(Block.tier == HOT, Block.stored_size.is_not(None), Block.refcount > 0)
            .where(or_(*rules))
            .limit(BATCH)
        )
        with Session(self.engine) as session:
            return [(hash, size) for hash, size in session.execute(query)]

    def _copy(self, hash: str, size: int) -> bool:
        """Steps 1 and 2 for one block; False (logged) when it cannot move now."""
        try:
            obj = self._verified_hot_copy(hash)
            self.archive.put(hash, obj)
            self._check_archived(hash, obj)
        except Exception as exc:
            log.warning("cannot archive block %s now: %s", hash, exc)
            return False
        return True

    def _verified_hot_copy(self, hash: str) -> bytes:
        failure: Exception | None = None
        for obj in each_copy(self.hot, hash):
            try:
                self.blocks.check_object(hash, obj)
                return obj
            except CirrusError as exc:
                failure = exc
        raise failure or LookupError(hash)

    def _check_archived(self, hash: str, obj: bytes) -> None:
        """Read the copy back; in a class that needs a restore (a GET would start one),
        check the object is there (S3 checked its checksum when it took the upload)."""
        if getattr(self.archive, "needs_restore", False):
            if not self.archive.exists(hash):
                raise OSError(f"the archive lost {hash} just after it was written")
        elif self.archive.get(hash) != obj:
            raise OSError(f"the archive's copy of {hash} differs from what was written")

    def _record(self, moved: list[tuple[str, int]]) -> None:
        """Step 3: tier = archive, and the hot copies' deletes queued, in one transaction."""
        hashes = [hash for hash, _size in moved]
        with Session(writer(self.engine)) as session, session.begin():
            session.execute(
                update(Block).where(Block.hash.in_(hashes), Block.tier == HOT).values(tier=ARCHIVE)
            )
            owe_deletes(session, moved, self.regions, time.time_ns())


def archive_jobs(
    engine: Engine, layout: Layout, blocks: BlockService, config: ServerConfig
) -> tuple[tuple[str, Callable[[], int], float], ...]:
    """The archive pass as a background job, when there is an archive and a policy."""
    policy = Policy(config.archive_old_revisions, config.archive_after_days)
    if not layout.archive or not policy.active:
        return ()
    archiver = Archiver(engine, layout, blocks, policy)
    return (("archive", archiver.run_once, config.archive_interval_s),)
