"""`cirrus admin fsck`: the metadata's invariants, and the block store against the metadata.

Besides the consistency checks of backend/metadata/consistency.py it compares the store's
objects with the rows that say a block is stored: a row whose object is gone is data loss
(reported, not repairable); an object no row knows (a stray: left by a crash between a write
and its record, or written by an upload still in flight) is reported, and with --repair
adopted as an unreferenced block, which the collector deletes once the grace period has
passed without anyone uploading or naming it. An upload in flight therefore keeps its
object: its record renews the block like any upload.
"""

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from backend import clock
from backend.api.deps import Services
from backend.db.engine import insert_ignore, writer
from backend.db.models import HOT, Block
from backend.db.reclaim import convert_to_incremental, gives_space_back
from backend.metadata.consistency import find_problems
from backend.protocol.errors import CirrusError
from backend.protocol.hashing import is_block_hash

_IN_BATCH = 500


def check(services: Services, repair: bool) -> tuple[list[str], int]:
    """Every problem as one line, and how many were repaired."""
    engine = services.metadata.engine
    problems = find_problems(engine)
    store = services.blocks.store
    keys = sorted(key for key in store.keys() if is_block_hash(key))  # noqa: SIM118
    known = _stored_or_claimed(engine, keys)
    stray = [key for key in keys if key not in known]
    problems += [f"block {h}: recorded as stored, but not in the block store"
                 for h in _recorded_but_absent(engine, set(keys))]  # fmt: skip
    problems += [f"object {h}: in the block store, but no row knows it" for h in stray]
    repaired = 0
    if repair and stray:
        repaired = _adopt(services, [h for h in stray if store.exists(h)])
        services.collector.collect()
    if not gives_space_back(engine):
        problems.append("metadata database: keeps the pages it frees (made without incremental"
                        " vacuum); --repair converts it with a VACUUM")  # fmt: skip
        if repair:
            convert_to_incremental(engine)
            repaired += 1
    return problems, repaired


def _stored_or_claimed(engine, keys: list[str]) -> set[str]:
    found: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(keys), _IN_BATCH):
            query = select(Block.hash).where(
                Block.hash.in_(keys[start : start + _IN_BATCH]),
                or_(Block.stored_size.is_not(None), Block.deleting_since.is_not(None)),
            )
            found.update(conn.scalars(query))
    return found


def _recorded_but_absent(engine, keys: set[str]) -> list[str]:
    query = select(Block.hash).where(Block.stored_size.is_not(None), Block.deleting_since.is_(None))
    with engine.connect() as conn:
        return [h for h in conn.scalars(query) if h not in keys]


def _adopt(services: Services, stray: list[str]) -> int:
    """Give stray objects rows as stored, unreferenced blocks used now: the collector takes
    them after the grace period unless an upload records them first."""
    rows = []
    for block_hash in stray:
        stored = len(services.blocks.store.get(block_hash))
        try:
            size = len(services.blocks.get_plain(block_hash))
        except CirrusError:  # unreadable under this key: garbage all the same
            size = stored
        rows.append({"hash": block_hash, "size": size, "stored_size": stored})
    now = clock.now_ns()
    with Session(writer(services.metadata.engine)) as session, session.begin():
        insert_ignore(session, Block, [
            {**row, "refcount": 0, "tier": HOT, "last_used": now} for row in rows
        ])  # fmt: skip
        for row in rows:
            session.execute(
                update(Block)
                .where(Block.hash == row["hash"], Block.stored_size.is_(None),
                       Block.deleting_since.is_(None))
                .values(stored_size=row["stored_size"], last_used=now, deleted_at=None)
            )  # fmt: skip
    return len(rows)
