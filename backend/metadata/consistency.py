"""A consistency check of the metadata database (an fsck): the invariants models.py states.

Each check is one aggregate query that lists violations, so the check runs in the database
even on a large drive collection. The test suite runs it after every metadata test as its
oracle; an operator may run it against a live server's database (it only reads).
"""

from collections.abc import Callable

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import aliased

from backend.db.models import (
    DIR,
    FILE,
    PENDING,
    UPLOADED,
    Block,
    ChangeEntry,
    Namespace,
    NamespaceBlock,
    NamespaceRef,
    Node,
    PendingBlock,
    Revision,
    RevisionBlock,
)

_Check = Callable[[Connection], list[str]]


def _refcounts(conn: Connection) -> list[str]:
    counted = (
        select(RevisionBlock.hash, func.count().label("n")).group_by(RevisionBlock.hash).subquery()
    )
    query = (
        select(Block.hash, Block.refcount, counted.c.n)
        .outerjoin(counted, counted.c.hash == Block.hash)
        .where(Block.refcount != func.coalesce(counted.c.n, 0))
    )
    problems = [
        f"block {h}: refcount {r}, referenced {n or 0} times" for h, r, n in conn.execute(query)
    ]
    orphans = select(RevisionBlock.hash).where(
        ~select(Block.hash).where(Block.hash == RevisionBlock.hash).exists()
    )
    problems += [f"block {h}: referenced but unknown" for h in conn.scalars(orphans.distinct())]
    return problems


def _pending_status(conn: Connection) -> list[str]:
    waits = select(PendingBlock.revision_id).where(PendingBlock.revision_id == Revision.id).exists()
    query = select(Revision.id, Revision.status).where(
        or_(and_(Revision.status == PENDING, ~waits), and_(Revision.status == UPLOADED, waits))
    )
    return [
        f"revision {i}: status {s} disagrees with pending_blocks" for i, s in conn.execute(query)
    ]


def _awaited_blocks_are_missing(conn: Connection) -> list[str]:
    query = select(PendingBlock.revision_id, PendingBlock.hash).join(
        NamespaceBlock,
        and_(
            NamespaceBlock.namespace_id == PendingBlock.namespace_id,
            NamespaceBlock.hash == PendingBlock.hash,
        ),
    )
    return [f"revision {i}: waits for {h}, which its drive holds" for i, h in conn.execute(query)]


def _uploaded_blocks_are_stored(conn: Connection) -> list[str]:
    query = (
        select(Revision.id, RevisionBlock.hash)
        .join(RevisionBlock, RevisionBlock.revision_id == Revision.id)
        .outerjoin(
            NamespaceBlock,
            and_(
                NamespaceBlock.namespace_id == Revision.namespace_id,
                NamespaceBlock.hash == RevisionBlock.hash,
            ),
        )
        .outerjoin(Block, Block.hash == RevisionBlock.hash)
        .where(
            Revision.status == UPLOADED,
            or_(NamespaceBlock.hash.is_(None), Block.stored_size.is_(None)),
        )
    )
    return [f"revision {i}: uploaded, but block {h} is not stored" for i, h in conn.execute(query)]


def _block_lists_add_up(conn: Connection) -> list[str]:
    query = (
        select(Revision.id, Revision.size, func.coalesce(func.sum(RevisionBlock.size), 0))
        .outerjoin(RevisionBlock, RevisionBlock.revision_id == Revision.id)
        .group_by(Revision.id, Revision.size)
        .having(Revision.size != func.coalesce(func.sum(RevisionBlock.size), 0))
    )
    problems = [f"revision {i}: size {s}, blocks add up to {t}" for i, s, t in conn.execute(query)]
    previous = aliased(RevisionBlock)
    gaps = (
        select(RevisionBlock.revision_id, RevisionBlock.seq)
        .join(
            previous,
            and_(
                previous.revision_id == RevisionBlock.revision_id,
                previous.seq == RevisionBlock.seq - 1,
            ),
        )
        .where(RevisionBlock.offset != previous.offset + previous.size)
    )
    problems += [f"revision {i}: block {q} is not contiguous" for i, q in conn.execute(gaps)]
    return problems


def _file_revisions(conn: Connection) -> list[str]:
    newest = (
        select(
            Revision.node_id,
            func.max(Revision.number).label("head"),
            func.max(Revision.number).filter(Revision.status == UPLOADED).label("rev"),
        )
        .group_by(Revision.node_id)
        .subquery()
    )
    current = aliased(Revision)
    query = (
        select(
            Node.id, Node.rev, Node.head_rev, Node.size, newest.c.head, newest.c.rev, current.size
        )
        .outerjoin(newest, newest.c.node_id == Node.id)
        .outerjoin(current, and_(current.node_id == Node.id, current.number == Node.rev))
        .where(Node.type == FILE, Node.deleted.is_(False))  # retention ages deleted history out
    )
    problems = []
    for node_id, rev, head, size, real_head, real_rev, rev_size in conn.execute(query):
        if (rev, head) != (real_rev or 0, real_head or 0):
            problems.append(f"node {node_id}: rev/head_rev {rev}/{head}, revisions say "
                            f"{real_rev or 0}/{real_head or 0}")  # fmt: skip
        elif size != (rev_size or 0):
            problems.append(f"node {node_id}: size {size}, revision {rev} has {rev_size}")
    return problems


def _tree_shape(conn: Connection) -> list[str]:
    parent = aliased(Node)
    query = (
        select(Node.id)
        .outerjoin(parent, parent.id == Node.parent_id)
        .where(
            Node.deleted.is_(False),
            Node.parent_id.is_not(None),
            or_(
                parent.deleted.is_(True),
                parent.type != DIR,
                parent.namespace_id != Node.namespace_id,
            ),
        )
    )
    problems = [
        f"node {i}: its parent is not a live folder of its drive" for i in conn.scalars(query)
    ]
    roots = select(Namespace.id).where(
        ~select(Node.id).where(Node.namespace_id == Namespace.id, Node.parent_id.is_(None)).exists()
    )
    problems += [f"namespace {i}: no root folder" for i in conn.scalars(roots)]
    return problems


def _journal(conn: Connection) -> list[str]:
    stats = (
        select(
            ChangeEntry.namespace_id,
            func.count().label("n"),
            func.max(ChangeEntry.cursor).label("last"),
        )
        .group_by(ChangeEntry.namespace_id)
        .subquery()
    )
    # Entries compacted+1 .. cursor, without gaps (compaction trims a prefix).
    query = (
        select(Namespace.id, Namespace.cursor, Namespace.compacted, stats.c.n, stats.c.last)
        .outerjoin(stats, stats.c.namespace_id == Namespace.id)
        .where(
            or_(
                Namespace.cursor != func.coalesce(stats.c.last, Namespace.compacted),
                Namespace.cursor - Namespace.compacted != func.coalesce(stats.c.n, 0),
            )
        )
    )
    return [
        f"namespace {i}: cursor {c}, compacted to {k}, journal has {n or 0} entries up to "
        f"{last or 0}"
        for i, c, k, n, last in conn.execute(query)
    ]


def _usage(conn: Connection) -> list[str]:
    """namespace_refs counts each drive's block-list rows per hash; used_bytes sums them."""
    counted = (
        select(
            Revision.namespace_id.label("namespace_id"),
            RevisionBlock.hash.label("hash"),
            func.count().label("n"),
        )
        .join(Revision, Revision.id == RevisionBlock.revision_id)
        .group_by(Revision.namespace_id, RevisionBlock.hash)
        .subquery()
    )
    wrong = select(NamespaceRef.namespace_id, NamespaceRef.hash).where(
        NamespaceRef.refs
        != select(counted.c.n)
        .where(
            counted.c.namespace_id == NamespaceRef.namespace_id,
            counted.c.hash == NamespaceRef.hash,
        )
        .scalar_subquery()
    )
    missing = select(counted.c.namespace_id, counted.c.hash).where(
        ~select(NamespaceRef.hash)
        .where(
            NamespaceRef.namespace_id == counted.c.namespace_id,
            NamespaceRef.hash == counted.c.hash,
        )
        .exists()
    )
    problems = [f"namespace {i}: block {h} miscounted" for i, h in conn.execute(wrong)]
    problems += [f"namespace {i}: block {h} not counted" for i, h in conn.execute(missing)]
    used = (
        select(NamespaceRef.namespace_id, func.sum(NamespaceRef.size).label("total"))
        .group_by(NamespaceRef.namespace_id)
        .subquery()
    )
    query = (
        select(Namespace.id, Namespace.used_bytes, used.c.total)
        .outerjoin(used, used.c.namespace_id == Namespace.id)
        .where(Namespace.used_bytes != func.coalesce(used.c.total, 0))
    )
    problems += [
        f"namespace {i}: used_bytes {u}, its blocks add up to {t or 0}"
        for i, u, t in conn.execute(query)
    ]
    return problems


CHECKS: list[_Check] = [
    _refcounts,
    _pending_status,
    _awaited_blocks_are_missing,
    _uploaded_blocks_are_stored,
    _block_lists_add_up,
    _file_revisions,
    _tree_shape,
    _journal,
    _usage,
]


def find_problems(engine: Engine) -> list[str]:
    """Every broken invariant, as one line each; an empty list means consistent."""
    with engine.connect() as conn:
        return [problem for check in CHECKS for problem in check(conn)]
