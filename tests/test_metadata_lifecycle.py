"""Trash, compaction and quota accounting in the metadata service, on SQLite and PostgreSQL,
each test ending with the consistency check (refcounts, usage counts, journal shape)."""

import time

import pytest
from sqlalchemy import select

from backend.db.models import Block
from backend.metadata.service import MetadataService
from backend.metadata.types import BlockRef, CommitRequest, Principal
from backend.protocol import errors
from backend.protocol.hashing import block_hash
from tests import postgres

database_url = postgres.database_url
postgres_server = postgres.postgres_server
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier
metadata = postgres.metadata
alice = postgres.alice

A, B, C = (block_hash(name) for name in (b"a", b"b", b"c"))


def commit(metadata: MetadataService, who: Principal, path: str, *hashes: str) -> None:
    blocks = [BlockRef(h, 100) for h in hashes]
    metadata.commit(who, CommitRequest(path, None, 100 * len(hashes), blocks, overwrite=True))


def refcount(metadata: MetadataService, h: str) -> int:
    with metadata.engine.connect() as conn:
        return conn.scalar(select(Block.refcount).where(Block.hash == h))


def test_purge_releases_references_and_usage(metadata: MetadataService, alice: Principal) -> None:
    metadata.record_blocks(alice, [(h, 100, 100) for h in (A, B, C)])
    commit(metadata, alice, "/d/one", A, B)
    commit(metadata, alice, "/d/one", B, C)  # a second revision: A, B and C are used
    commit(metadata, alice, "/keep", C)
    assert metadata.usage(alice) == (300, None)
    metadata.delete(alice, "/d", recursive=True)
    assert metadata.usage(alice)[0] == 300
    (item,) = metadata.trash(alice)
    assert (item.path, item.files, item.size, item.device) == ("/d", 1, 200, "laptop")
    assert metadata.purge_trash(alice, item.id) == 1
    assert metadata.usage(alice)[0] == 100  # C, still named by /keep
    assert [refcount(metadata, h) for h in (A, B, C)] == [0, 0, 1]
    with pytest.raises(errors.NotFound):
        metadata.restore_from_trash(alice, item.id)


def test_a_tree_deleted_bottom_up_is_one_item(metadata: MetadataService, alice: Principal) -> None:
    """What `rm -rf` through a mount sends: files, then each folder once it is empty."""
    metadata.record_blocks(alice, [(A, 100, 100)])
    for path in ("/t/a/one", "/t/a/b/two", "/t/three", "/kept"):
        commit(metadata, alice, path, A)
    for path in ("/t/a/b/two", "/t/a/b", "/t/a/one", "/t/a", "/t/three", "/t"):
        metadata.delete(alice, path, recursive=False)
    (item,) = metadata.trash(alice)
    assert (item.path, item.files, item.size) == ("/t", 3, 300)
    assert metadata.restore_from_trash(alice, item.id).path == "/t"
    assert metadata.trash(alice) == []


def test_quota_refuses_only_new_blocks(metadata: MetadataService, alice: Principal) -> None:
    assert metadata.set_quota("alice", 250)
    assert not metadata.set_quota("nobody", 250)
    commit(metadata, alice, "/a", A, B)
    with pytest.raises(errors.QuotaExceeded):
        commit(metadata, alice, "/c", C)
    commit(metadata, alice, "/copy", B, A)  # known blocks fit
    with pytest.raises(errors.QuotaExceeded):
        metadata.check_upload_quota(alice, [(C, 60)])
    metadata.check_upload_quota(alice, [(C, 50), (A, 100)])
    assert metadata.usage(alice) == (200, 250)


def test_compaction_trims_a_prefix_and_old_cursors_expire(
    metadata: MetadataService, alice: Principal
) -> None:
    for name in ("x", "y", "z"):
        metadata.mkdir(alice, f"/{name}", None, None, parents=False)
    metadata.changes(alice, 2, 10)  # the only device has read up to 2
    assert metadata.compact_journal(0) == 2
    assert metadata.compact_journal(0) == 0
    assert [c.cursor for c in metadata.changes(alice, 2, 10).entries] == [3]
    with pytest.raises(errors.CursorExpired):
        metadata.changes(alice, 1, 10)
    assert metadata.compact_journal(time.time_ns() + 1) == 1  # older than kept: all go
    assert metadata.snapshot(alice, 0, 10).cursor == 3
