"""Version retention: a file keeps its newest revisions up to a cap; older ones are dropped.

The seed asks for a cap on versions per file so history cannot grow without bound. The
revision a read returns (node.rev) and revisions still pending are never dropped, so
nothing a client reads or uploads disappears. Dropping a revision releases its block
references; blocks left at refcount 0 are garbage for the block store's collector.
"""

from sqlalchemy import delete, select

from backend.db.models import UPLOADED, Node, Revision, RevisionBlock
from backend.metadata.txn import Txn

DEFAULT_MAX_REVISIONS = 100


def prune_revisions(tx: Txn, node: Node, keep: int) -> list[int]:
    """Drop the file's revisions older than its newest `keep`; return their numbers."""
    if node.head_rev <= keep:  # numbers run 1..head_rev: there are no more than keep
        return []
    query = (
        select(Revision.id, Revision.number, Revision.status)
        .where(Revision.node_id == node.id)
        .order_by(Revision.number.desc())
        .offset(keep)
    )
    doomed = [
        (revision_id, number)
        for revision_id, number, status in tx.session.execute(query)
        if status == UPLOADED and number != node.rev
    ]
    if not doomed:
        return []
    ids = [revision_id for revision_id, _ in doomed]
    hashes = select(RevisionBlock.hash, RevisionBlock.size).where(
        RevisionBlock.revision_id.in_(ids)
    )
    tx.refer([(block_hash, size) for block_hash, size in tx.session.execute(hashes)], -1)
    tx.session.execute(delete(RevisionBlock).where(RevisionBlock.revision_id.in_(ids)))
    tx.session.execute(delete(Revision).where(Revision.id.in_(ids)))
    return [number for _, number in doomed]
