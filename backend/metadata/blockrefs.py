"""Block bookkeeping: shared refcounts, each drive's own blocks, and upload completion.

Storage is deduplicated across users, but knowledge is not: a drive may skip uploading a
block, and may read one, only when it uploaded that block itself (namespace_blocks). So
/blocks/missing and block reads reveal nothing about what other users store.

A commit whose blocks the drive does not all have leaves its revision PENDING with one
pending_blocks row per missing hash; record_blocks() deletes the rows of the arriving hashes
and completes each revision left with none: O(1) work per block and waiting revision, and
one transaction (one commit to disk) per batch of blocks.

Garbage collection (docs/blocks.md) leans on two things here: `last_used` is the mark a
collector ages (every upload, reference change, and /blocks/missing answer that lets a drive
skip an unreferenced block renews it), and record_blocks refuses blocks whose object a
collection may have deleted after the upload wrote it (the caller writes them again).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, exists, select, update
from sqlalchemy.orm import Session

from backend.db.engine import insert_ignore
from backend.db.models import (
    HOT,
    PENDING,
    UPLOADED,
    Block,
    NamespaceBlock,
    Node,
    PendingBlock,
    Revision,
    RevisionBlock,
)
from backend.metadata.quota import count_usage
from backend.metadata.replication import cancel_deletes, deletes_running, owe_copies
from backend.metadata.share_feed import shared_readable
from backend.metadata.types import Principal
from backend.protocol.chunking import MAX_BLOCK_SIZE
from backend.protocol.errors import InvalidRequest
from backend.protocol.hashing import is_block_hash

if TYPE_CHECKING:  # txn.py calls write_references at the end of each transaction
    from backend.metadata.txn import Database, Txn

MAX_HASHES = 10_000
_IN_BATCH = 500
_OWNED = select(NamespaceBlock.hash).where(
    NamespaceBlock.namespace_id == bindparam("namespace"),
    NamespaceBlock.hash.in_(bindparam("hashes", expanding=True)),
)
_OWNED_SIZES = (
    select(NamespaceBlock.hash, Block.size)
    .join(Block, Block.hash == NamespaceBlock.hash)
    .where(
        NamespaceBlock.namespace_id == bindparam("namespace"),
        NamespaceBlock.hash.in_(bindparam("hashes", expanding=True)),
    )
)
# Revisions (of those asked about) that name a block with another size than its real one.
_MISSIZED = (
    select(RevisionBlock.revision_id)
    .join(Block, Block.hash == RevisionBlock.hash)
    .where(
        RevisionBlock.revision_id.in_(bindparam("revisions", expanding=True)),
        RevisionBlock.size != Block.size,
    )
    .distinct()
)
_BLOCKS = Block.__table__
_COUNT_REFERENCES = (
    update(_BLOCKS)
    .where(_BLOCKS.c.hash == bindparam("counted"))
    .values(refcount=_BLOCKS.c.refcount + bindparam("change"), last_used=bindparam("used"))
)


def check_hash(value: object) -> str:
    if not isinstance(value, str) or not is_block_hash(value):
        raise InvalidRequest(f"not a block hash (64 lower-case hex digits): {value!r:.80}")
    return value


def owned_hashes(session: Session, namespace_id: int, hashes: list[str]) -> set[str]:
    """The subset of hashes this drive has uploaded."""
    owned: set[str] = set()
    for start in range(0, len(hashes), _IN_BATCH):
        params = {"namespace": namespace_id, "hashes": hashes[start : start + _IN_BATCH]}
        owned.update(session.scalars(_OWNED, params))
    return owned


def owned_sizes(session: Session, namespace_id: int, hashes: list[str]) -> dict[str, int]:
    """The hashes of `hashes` this drive has uploaded, with their real (plaintext) sizes."""
    owned: dict[str, int] = {}
    for start in range(0, len(hashes), _IN_BATCH):
        params = {"namespace": namespace_id, "hashes": hashes[start : start + _IN_BATCH]}
        owned.update((h, size) for h, size in session.execute(_OWNED_SIZES, params))
    return owned


def write_references(tx: Txn, references: list[tuple[str, int, int]]) -> None:
    """Apply the reference changes (hash, size, +1 or -1) a transaction made, at its end:
    rows for unseen hashes appear (unstored), then one UPDATE executed once per hash with
    its net change, in hash order (a stable lock order between concurrent drives on
    PostgreSQL)."""
    sizes = {block_hash: size for block_hash, size, sign in references if sign > 0}
    rows = [
        {"hash": h, "size": s, "stored_size": None, "refcount": 0, "tier": HOT,
         "last_used": tx.now_ns}
        for h, s in sorted(sizes.items())
    ]  # fmt: skip
    insert_ignore(tx.session, Block, rows)
    net: Counter[str] = Counter()
    for block_hash, _size, sign in references:
        net[block_hash] += sign
    count_usage(tx, net, {block_hash: size for block_hash, size, _sign in references})
    changes = [
        {"counted": block_hash, "change": count, "used": tx.now_ns}
        for block_hash, count in sorted(net.items())
    ]
    tx.connection.execute(_COUNT_REFERENCES, changes)


def complete_revision(tx: Txn, revision: Revision) -> None:
    """Mark a revision whose blocks are all stored uploaded, and show it if it is newest."""
    revision.status = UPLOADED
    node = tx.session.get(Node, revision.node_id)
    if revision.number > node.rev:  # rev only moves forward
        node.rev = revision.number
        node.size = revision.size
        if not node.deleted:
            tx.journal(node)


def _wanted(hashes: object) -> list[str]:
    """The distinct hashes of a request, in order; at most MAX_HASHES, all well-formed."""
    if not isinstance(hashes, list) or len(hashes) > MAX_HASHES:
        raise InvalidRequest(f"ask about at most {MAX_HASHES} hashes at once")
    return list(dict.fromkeys(check_hash(h) for h in hashes))


class BlockRefs:
    def __init__(self, db: Database) -> None:
        self.db = db

    def missing_blocks(self, who: Principal, hashes: list[str]) -> list[str]:
        """The hashes the drive must upload. An unreferenced block it holds is kept out of
        the next collection for a grace period (its mark renewed) before it is reported
        held, so the client may rely on it until its commit."""
        wanted = _wanted(hashes)
        with self.db.read() as session:
            owned = owned_hashes(session, who.namespace_id, wanted)
            idle = _unreferenced(session, sorted(owned))
        if idle:
            with self.db.write(who.namespace_id) as tx:
                kept = owned_hashes(tx.session, tx.namespace_id, idle)  # under the drive's lock
                lock_blocks(tx.session, sorted(kept))
                tx.session.execute(
                    update(Block).where(Block.hash.in_(sorted(kept))).values(last_used=tx.now_ns)
                )
            owned = (owned - set(idle)) | kept
        return [h for h in wanted if h not in owned]

    def readable_blocks(self, who: Principal, hashes: list[str]) -> set[str]:
        """The drive's own blocks, and those of files in folders shared with it."""
        wanted = _wanted(hashes)
        with self.db.read() as session:
            owned = owned_hashes(session, who.namespace_id, wanted)
            rest = [h for h in wanted if h not in owned]
            return owned | shared_readable(session, who.namespace_id, rest)

    def block_known(self, hash: str) -> bool:
        check_hash(hash)
        with self.db.read() as session:
            stored = session.scalar(select(Block.stored_size).where(Block.hash == hash))
        return stored is not None

    def may_read_block(self, who: Principal, hash: str) -> bool:
        return hash in self.readable_blocks(who, [hash])

    def deletion_marks(self, hashes: list[str]) -> dict[str, int | None]:
        """When each block's object was last deleted by a collection (None: never, or no
        row): an upload notes this before it writes, for record_blocks to compare."""
        marks: dict[str, int | None] = dict.fromkeys(hashes)
        with self.db.read() as session:
            for start in range(0, len(hashes), _IN_BATCH):
                query = select(Block.hash, Block.deleted_at).where(
                    Block.hash.in_(hashes[start : start + _IN_BATCH])
                )
                marks.update((h, deleted) for h, deleted in session.execute(query))
        return marks

    def record_blocks(
        self,
        who: Principal,
        blocks: list[tuple[str, int, int]],
        seen: dict[str, int | None] | None = None,
        owed: Sequence[tuple[str, str]] = (),
    ) -> list[str]:
        """Note stored blocks (hash, size, stored_size) for the drive in ONE transaction, and
        complete the revisions they finish: a batch pays for one commit, not one per block.

        `seen` is deletion_marks() of the hashes from before the objects were written. A
        block that a collection claims now, or deleted since then, is not recorded but
        returned: its object may be gone, and the caller writes it again once the
        collection is over. `owed` (hash, store) are the copies other regions still need of
        the blocks recorded: queued in the same transaction, so an acknowledged block's
        replication survives any crash."""
        if not isinstance(blocks, list) or len(blocks) > MAX_HASHES:
            raise InvalidRequest(f"record at most {MAX_HASHES} blocks at once")
        rows = {check_hash(hash): _checked_sizes(size, stored) for hash, size, stored in blocks}
        if not rows:
            return []
        with self.db.write(who.namespace_id) as tx:
            clobbered = _clobbered(tx, sorted(rows), seen)
            # a stable lock order between concurrent drives on PostgreSQL
            ordered = sorted(set(rows) - clobbered)
            if not ordered:
                return sorted(clobbered)
            _upsert_blocks(tx, [(hash, *rows[hash]) for hash in ordered])
            insert_ignore(tx.session, NamespaceBlock, [
                {"namespace_id": tx.namespace_id, "hash": hash} for hash in ordered
            ])  # fmt: skip
            tx.namespace.bytes_received += sum(size for size, _stored in rows.values())
            cancel_deletes(tx.session, ordered)  # stored again: no longer to be retired
            recorded = set(ordered)
            copies = [(hash, store, rows[hash][1]) for hash, store in owed if hash in recorded]
            owe_copies(tx.session, copies, tx.now_ns)
            _complete_waiting(tx, ordered)
        return sorted(clobbered)


def lock_blocks(session: Session, hashes: list[str]) -> None:
    """Lock the blocks' rows in hash order, the order every writer of block rows takes them
    (refcounts, records, collections), so that two of them never wait on each other in a
    cycle on PostgreSQL (SQLite's one writer needs none of this)."""
    for start in range(0, len(hashes), _IN_BATCH):
        query = (
            select(Block.hash)
            .where(Block.hash.in_(hashes[start : start + _IN_BATCH]))
            .order_by(Block.hash)
            .with_for_update()
        )
        session.execute(query).all()


def _unreferenced(session: Session, hashes: list[str]) -> list[str]:
    """The hashes among these that no revision names (a collection may be aging them)."""
    idle: list[str] = []
    for start in range(0, len(hashes), _IN_BATCH):
        query = select(Block.hash).where(
            Block.hash.in_(hashes[start : start + _IN_BATCH]), Block.refcount == 0
        )
        idle.extend(session.scalars(query))
    return sorted(idle)


def _clobbered(tx: Txn, hashes: list[str], seen: dict[str, int | None] | None) -> set[str]:
    """The hashes whose object a collection or a queued delete may have deleted after it
    was written: claimed now, or deleted since `seen` (when given). The rows are locked, so
    no claim can slip in before this transaction records them."""
    found: set[str] = set()
    for start in range(0, len(hashes), _IN_BATCH):
        query = (
            select(Block.hash, Block.deleting_since, Block.deleted_at)
            .where(Block.hash.in_(hashes[start : start + _IN_BATCH]))
            .order_by(Block.hash)
            .with_for_update()
        )
        for block_hash, deleting, deleted in tx.session.execute(query):
            if deleting is not None or (seen is not None and deleted != seen.get(block_hash)):
                found.add(block_hash)
    return found | deletes_running(tx.session, hashes)


def _upsert_blocks(tx: Txn, rows: list[tuple[str, int, int]]) -> None:
    """Insert the blocks' rows or update their sizes: two statements whatever the count (an
    INSERT of every new row, then one executemany UPDATE by primary key)."""
    insert_ignore(tx.session, Block, [
        {"hash": hash, "size": size, "stored_size": stored_size, "refcount": 0, "tier": HOT,
         "last_used": tx.now_ns}
        for hash, size, stored_size in rows
    ])  # fmt: skip
    tx.session.execute(update(Block), [
        {"hash": hash, "size": size, "stored_size": stored_size, "last_used": tx.now_ns,
         "deleted_at": None, "tier": HOT}  # just written hot, even if an older copy was archived
        for hash, size, stored_size in rows
    ])  # fmt: skip


def _checked_sizes(size: object, stored_size: object) -> tuple[int, int]:
    for value, limit in ((size, MAX_BLOCK_SIZE), (stored_size, 2 * MAX_BLOCK_SIZE)):
        if type(value) is not int or not 0 <= value <= limit:
            raise InvalidRequest(f"a block size is an integer from 0 to {limit}")
    return size, stored_size  # type: ignore[return-value]


def _complete_waiting(tx: Txn, hashes: list[str]) -> None:
    """Strike the hashes off every revision of the drive awaiting them; complete those done."""
    waiting: set[int] = set()
    for start in range(0, len(hashes), _IN_BATCH):
        struck = (
            delete(PendingBlock)
            .where(
                PendingBlock.namespace_id == tx.namespace_id,
                PendingBlock.hash.in_(hashes[start : start + _IN_BATCH]),
            )
            .returning(PendingBlock.revision_id)
        )
        waiting.update(tx.session.scalars(struck))
    # A revision that announced a block's size wrongly stays pending: it is never shown.
    missized = (
        set(tx.session.scalars(_MISSIZED, {"revisions": sorted(waiting)})) if waiting else set()
    )
    for revision_id in sorted(waiting - missized):
        if not tx.session.scalar(select(exists().where(PendingBlock.revision_id == revision_id))):
            revision = tx.session.get(Revision, revision_id)
            if revision.status == PENDING:  # a STAGING one gets its status when adopted
                complete_revision(tx, revision)
