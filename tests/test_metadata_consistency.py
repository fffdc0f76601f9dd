"""The consistency check finds each kind of damage (so it is a trustworthy test oracle)."""

import pytest
from sqlalchemy import text

from backend.metadata.consistency import find_problems
from backend.metadata.service import MetadataService
from backend.metadata.types import BlockRef, CommitRequest
from backend.protocol.hashing import block_hash
from tests import postgres

database_url = postgres.database_url
postgres_server = postgres.postgres_server
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier

STORED, AWAITED = block_hash(b"stored"), block_hash(b"awaited")

DAMAGE = {
    "refcount": "UPDATE blocks SET refcount = refcount + 1",
    "pending_blocks": "DELETE FROM pending_blocks",
    "which its drive holds": (
        "INSERT INTO namespace_blocks (namespace_id, hash) SELECT namespace_id, hash"
        " FROM pending_blocks"
    ),
    "is not stored": "DELETE FROM namespace_blocks",
    "add up": "UPDATE revisions SET size = size + 1 WHERE status = 'uploaded'",
    "rev/head_rev": "UPDATE nodes SET head_rev = head_rev + 1 WHERE type = 'file'",
    "has 10": "UPDATE nodes SET size = 11 WHERE type = 'file' AND rev = 1",
    "live folder": "UPDATE nodes SET parent_id = (SELECT MAX(id) FROM nodes) WHERE type = 'dir'"
    " AND parent_id IS NOT NULL",
    "journal": "UPDATE namespaces SET cursor = cursor + 1",
    "miscounted": "UPDATE namespace_refs SET refs = refs + 1",
    "not counted": "DELETE FROM namespace_refs",
    "used_bytes": "UPDATE namespaces SET used_bytes = used_bytes + 1",
    "compacted to": "UPDATE namespaces SET compacted = 1",
}


@pytest.mark.parametrize("expected", list(DAMAGE))
def test_each_kind_of_damage_is_found(
    migrated_engine, notifier: postgres.RecordingNotifier, expected: str
) -> None:
    metadata = MetadataService(migrated_engine, notifier)
    alice = metadata.authenticate(metadata.create_user("alice"), None)
    metadata.record_block(alice, STORED, 10, 12)
    metadata.commit(alice, CommitRequest("/d/done", None, 10, [BlockRef(STORED, 10)]))
    metadata.commit(alice, CommitRequest("/d/waiting", None, 10, [BlockRef(AWAITED, 10)]))
    assert find_problems(migrated_engine) == []
    with migrated_engine.begin() as conn:
        conn.execute(text(DAMAGE[expected]))
    problems = find_problems(migrated_engine)
    assert any(expected in problem for problem in problems), problems
