"""The replication queue against a real database (SQLite and PostgreSQL) and real local
stores: copies owed by a write, deletes queued for every region and tier, an outage that
delays them, a re-upload that cancels a pending delete, and a copy never made unverified."""

import os
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.blocks import BlockService
from backend.db.models import ReplicationTask
from backend.lifecycle.gc import Collector
from backend.lifecycle.layout import Layout, open_layout
from backend.lifecycle.replicator import Replicator
from backend.metadata.service import MetadataService
from backend.metadata.types import Principal
from backend.protocol.hashing import block_hash
from tests import postgres

database_url = postgres.database_url
postgres_server = postgres.postgres_server
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier
metadata = postgres.metadata
alice = postgres.alice

KEY = bytes(range(32))


def queue(metadata: MetadataService) -> list[tuple[str, str, str]]:
    with Session(metadata.engine) as session:
        rows = session.scalars(select(ReplicationTask)).all()
        return sorted((row.hash, row.store, row.action) for row in rows)


def make_due(metadata: MetadataService) -> None:
    """Bring every postponed task's time forward (what waiting out the backoff does)."""
    with Session(metadata.engine) as session, session.begin():
        for row in session.scalars(select(ReplicationTask)):
            row.next_try = 0


def setup(tmp_path: Path, metadata: MetadataService) -> tuple[Layout, BlockService, Replicator]:
    a, b, cold = (f"file://{tmp_path / name}" for name in ("a", "b", "cold"))
    layout = open_layout(f"replicated:{a}|{b}", cold)
    replicator = Replicator(metadata.engine, layout, lambda h, o: blocks.check_object(h, o))
    blocks = BlockService(layout.store, KEY, retire=replicator.retire)
    return layout, blocks, replicator


def store_and_record(metadata: MetadataService, who: Principal, blocks: BlockService) -> str:
    stored = blocks.put_plain(os.urandom(20_000))
    metadata.record_blocks(
        who,
        [(stored.hash, stored.size, stored.stored_size)],
        owed=[(stored.hash, region) for region in stored.owed],
    )
    return stored.hash


def break_store(root: Path) -> None:
    """A region outage: the store's directory is replaced by a file, every call fails."""
    root.rename(root.with_name(root.name + ".away"))
    root.write_bytes(b"down")


def mend_store(root: Path) -> None:
    root.unlink()
    root.with_name(root.name + ".away").rename(root)


def test_a_write_owes_the_secondary_a_copy_until_drained(
    tmp_path: Path, metadata: MetadataService, alice: Principal
) -> None:
    layout, blocks, replicator = setup(tmp_path, metadata)
    name = store_and_record(metadata, alice, blocks)
    primary, secondary = layout.regions
    assert layout.regions[primary].exists(name) and not layout.regions[secondary].exists(name)
    assert queue(metadata) == [(name, secondary, "copy")]
    assert replicator.drain_once() == 1
    assert layout.regions[secondary].get(name) == layout.regions[primary].get(name)
    assert queue(metadata) == []


def test_a_primary_outage_sends_writes_to_the_secondary_and_queues_them_back(
    tmp_path: Path, metadata: MetadataService, alice: Principal
) -> None:
    layout, blocks, replicator = setup(tmp_path, metadata)
    primary, _secondary = layout.regions
    break_store(tmp_path / "a")
    name = store_and_record(metadata, alice, blocks)
    assert queue(metadata) == [(name, primary, "copy")]
    assert blocks.get_plain(name)  # read from the secondary
    replicator.drain_once()
    assert queue(metadata) == [(name, primary, "copy")]  # postponed, not dropped
    mend_store(tmp_path / "a")
    make_due(metadata)
    replicator.drain_once()
    assert queue(metadata) == [] and layout.regions[primary].exists(name)


def test_deletes_reach_every_region_and_tier_even_through_an_outage(
    tmp_path: Path, metadata: MetadataService, alice: Principal
) -> None:
    layout, blocks, replicator = setup(tmp_path, metadata)
    name = store_and_record(metadata, alice, blocks)
    replicator.drain_once()
    (archive,) = layout.archive.values()
    archive.put(name, layout.regions[next(iter(layout.regions))].get(name))
    break_store(tmp_path / "b")
    blocks.delete(name)
    assert [row[1:] for row in queue(metadata)] == [(s, "delete") for s in sorted(layout.stores)]
    replicator.drain_once()
    assert [row[1] for row in queue(metadata)] == [f"file://{tmp_path / 'b'}"]  # delayed
    mend_store(tmp_path / "b")
    make_due(metadata)
    replicator.drain_once()
    assert queue(metadata) == []
    assert not any(store.exists(name) for store in layout.stores.values())


def test_a_re_upload_cancels_a_pending_delete(
    tmp_path: Path, metadata: MetadataService, alice: Principal
) -> None:
    layout, blocks, replicator = setup(tmp_path, metadata)
    name = store_and_record(metadata, alice, blocks)
    blocks.delete(name)
    data = blocks.get_plain(name)
    stored = blocks.put_plain(data)
    metadata.record_blocks(
        alice, [(name, stored.size, stored.stored_size)], owed=[(name, r) for r in stored.owed]
    )
    assert [row[2] for row in queue(metadata)] == ["copy"]
    replicator.drain_once()
    assert all(store.exists(name) for store in layout.regions.values())


def test_a_copy_is_never_made_from_a_corrupt_source(
    tmp_path: Path, metadata: MetadataService, alice: Principal
) -> None:
    layout, blocks, replicator = setup(tmp_path, metadata)
    name = store_and_record(metadata, alice, blocks)
    primary, secondary = layout.regions
    damaged = bytearray(layout.regions[primary].get(name))
    damaged[-1] ^= 0xFF
    layout.regions[primary].put(name, bytes(damaged))
    replicator.drain_once()
    assert not layout.regions[secondary].exists(name)
    assert queue(metadata) == [(name, secondary, "copy")]  # kept for a later try
    with pytest.raises(Exception, match="fails authentication"):
        blocks.get_plain(name)  # no region holds a good copy: refused, never served


def test_a_read_passes_over_a_corrupt_region(
    tmp_path: Path, metadata: MetadataService, alice: Principal
) -> None:
    layout, blocks, replicator = setup(tmp_path, metadata)
    name = store_and_record(metadata, alice, blocks)
    replicator.drain_once()
    good = blocks.get_plain(name)
    primary = next(iter(layout.regions))
    damaged = bytearray(layout.regions[primary].get(name))
    damaged[20] ^= 0x01
    layout.regions[primary].put(name, bytes(damaged))
    assert blocks.get_plain(name) == good  # from the secondary, verified


def test_garbage_collection_queues_copies_with_the_record_and_deletes_everywhere(
    tmp_path: Path, metadata: MetadataService, alice: Principal
) -> None:
    """The collector's upload path records the copies owed in the blocks' transaction, and
    its deletes go through the queue to every region and tier."""
    layout, blocks, replicator = setup(tmp_path, metadata)
    _primary, secondary = layout.regions
    collector = Collector(metadata.engine, blocks, grace_s=0)
    data = os.urandom(20_000)
    (stored,) = collector.store(
        metadata, alice, [block_hash(data)], lambda _hashes: [blocks.put_plain(data)]
    )
    assert queue(metadata) == [(stored.hash, secondary, "copy")]
    replicator.drain_once()
    assert collector.collect().blocks == 1
    assert [row[1:] for row in queue(metadata)] == [(s, "delete") for s in sorted(layout.stores)]
    replicator.drain_once()
    assert queue(metadata) == []
    assert not any(store.exists(stored.hash) for store in layout.stores.values())
