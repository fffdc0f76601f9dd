"""Large commits staged in bounded transactions, so that one user's huge commit never holds
the drive's write lock (on SQLite: the whole server's) for seconds.

A commit naming more than STAGE_ABOVE blocks writes its block list beforehand, STAGE_CHUNK
blocks per write transaction, under a revision row in status STAGING parked on the drive's
root folder with a negative number: never shown, never listed (history, downloads and
retention look at the revisions of file nodes only). Each chunk keeps the schema's
invariants as any commit does: the blocks' rows exist and count the chunk's references, the
hashes the drive lacks get pending_blocks rows (a block uploaded meanwhile strikes its row
off as for any revision, but never completes a STAGING revision), and a block the drive
holds with another size than announced refuses the commit (block_size_mismatch).

The commit's own transaction then only moves that row onto the file (`adopt`: one UPDATE),
so the commit stays all-or-nothing: until then nothing of it is visible. A staged revision
that was not adopted (the commit was refused, or a repeat found its commit_id used) is
removed again in bounded transactions (`discard`); one left by a crash is removed by
`sweep`, once it is older than STALE_AFTER_NS.
"""

import secrets

from sqlalchemy import bindparam, delete, select, update

from backend.db.engine import insert_ignore
from backend.db.models import STAGING, Node, PendingBlock, Revision, RevisionBlock
from backend.metadata.blockrefs import owned_sizes
from backend.metadata.txn import Database, Txn
from backend.metadata.types import BlockRef, Principal
from backend.protocol.errors import BlockSizeMismatch

STAGE_ABOVE = 16_384
# Blocks per staging transaction: on SQLite every other writer of the server waits for one
# such transaction (about 30 ms for 256 blocks on a 2-core machine, fsync included).
STAGE_CHUNK = 256
STALE_AFTER_NS = 3600 * 10**9

_ROOT = select(Node.id).where(Node.namespace_id == bindparam("namespace"), Node.parent_id.is_(None))
_BLOCKS_FROM = (
    select(RevisionBlock.seq, RevisionBlock.hash, RevisionBlock.size)
    .where(
        RevisionBlock.revision_id == bindparam("revision"), RevisionBlock.seq >= bindparam("first")
    )
    .order_by(RevisionBlock.seq)
    .limit(STAGE_CHUNK)
)
_PENDING_OF = (
    select(PendingBlock.hash)
    .where(PendingBlock.revision_id == bindparam("revision"))
    .limit(STAGE_CHUNK)
)


def stage(db: Database, who: Principal, blocks: list[BlockRef]) -> int:
    """Write a commit's block list under a new STAGING revision; return the revision's id.
    On a refusal (block_size_mismatch) nothing staged is left behind."""
    with db.write(who.namespace_id) as tx:
        revision = Revision(
            namespace_id=tx.namespace_id,
            node_id=tx.session.scalars(_ROOT, {"namespace": tx.namespace_id}).one(),
            number=-1 - secrets.randbelow(2**31 - 2),
            size=0,
            mtime_ns=0,
            device=who.author,
            created=tx.now_ns,
            status=STAGING,
            conflict=False,
        )
        tx.session.add(revision)
        tx.session.flush()
        revision_id = revision.id
    try:
        for start in range(0, len(blocks), STAGE_CHUNK):
            with db.write(who.namespace_id) as tx:
                _stage_chunk(tx, revision_id, start, blocks[start : start + STAGE_CHUNK])
    except BaseException:
        discard(db, who.namespace_id, revision_id)
        raise
    return revision_id


def _stage_chunk(tx: Txn, revision_id: int, first_seq: int, blocks: list[BlockRef]) -> None:
    real = owned_sizes(tx.session, tx.namespace_id, list({b.hash: None for b in blocks}))
    for block in blocks:
        if real.get(block.hash, block.size) != block.size:
            raise BlockSizeMismatch(
                f"block {block.hash} holds {real[block.hash]} bytes, not the {block.size} announced"
            )
    tx.connection.execute(
        RevisionBlock.__table__.insert(),
        [
            {
                "revision_id": revision_id,
                "seq": first_seq + i,
                "offset": b.offset,
                "hash": b.hash,
                "size": b.size,
            }
            for i, b in enumerate(blocks)
        ],
    )
    tx.refer([(b.hash, b.size) for b in blocks], +1)
    missing = sorted({b.hash for b in blocks if b.hash not in real})
    insert_ignore(
        tx.session,
        PendingBlock,
        [{"revision_id": revision_id, "hash": h, "namespace_id": tx.namespace_id} for h in missing],
    )


def adopt(tx: Txn, revision_id: int, values: dict) -> None:
    """Make a staged revision the revision `values` describe (node_id, number, status, ...):
    one UPDATE however many blocks it has."""
    tx.session.execute(
        update(Revision)
        .where(Revision.id == revision_id, Revision.status == STAGING)
        .values(**values)
    )


def discard(db: Database, namespace_id: int, revision_id: int) -> None:
    """Remove a staged revision that was not adopted, a chunk per transaction (a no-op once
    it was adopted or removed)."""
    first = 0
    while True:
        with db.write(namespace_id) as tx:
            status = tx.session.scalar(select(Revision.status).where(Revision.id == revision_id))
            if status != STAGING:
                return
            rows = tx.session.execute(_BLOCKS_FROM, {"revision": revision_id, "first": first}).all()
            pending = list(tx.session.scalars(_PENDING_OF, {"revision": revision_id}))
            if pending:
                tx.session.execute(
                    delete(PendingBlock).where(
                        PendingBlock.revision_id == revision_id, PendingBlock.hash.in_(pending)
                    )
                )
            if rows:
                tx.session.execute(
                    delete(RevisionBlock).where(
                        RevisionBlock.revision_id == revision_id,
                        RevisionBlock.seq.between(rows[0].seq, rows[-1].seq),
                    )
                )
                tx.refer([(row.hash, row.size) for row in rows], -1)
                first = rows[-1].seq + 1
            elif not pending:
                tx.session.execute(delete(Revision).where(Revision.id == revision_id))
                return


def sweep(db: Database, now_ns: int) -> int:
    """Remove staged revisions a crash left behind (older than STALE_AFTER_NS); how many."""
    with db.read() as session:
        stale = session.execute(
            select(Revision.id, Revision.namespace_id).where(
                Revision.status == STAGING, Revision.created < now_ns - STALE_AFTER_NS
            )
        ).all()
    for revision_id, namespace_id in stale:
        discard(db, namespace_id, revision_id)
    return len(stale)
