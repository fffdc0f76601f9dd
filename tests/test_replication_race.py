"""A delete queued for the regions that runs while the same block is uploaded again: the
upload is written again once the delete has ended, so no region loses the block (the
replicator claims a delete and moves the block's deletion mark, the fencing a garbage
collection uses). Regions are two buckets of a real moto S3 server, the archive a local
directory, the database SQLite and PostgreSQL; each interleaving is forced step by step by
a region whose deletes wait for the test."""

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.blocks import BlockService, StoredBlock
from backend.blockstore.base import BlockStore
from backend.blockstore.replicated import ReplicatedBlockStore
from backend.blockstore.tiered import TieredBlockStore
from backend.db.models import ReplicationTask
from backend.lifecycle.gc import Collector
from backend.lifecycle.layout import Layout, open_layout
from backend.lifecycle.replicator import Replicator
from backend.metadata.service import MetadataService
from backend.metadata.types import Principal
from backend.protocol.hashing import block_hash
from tests import postgres
from tests.support.s3 import MotoServer

database_url = postgres.database_url
postgres_server = postgres.postgres_server
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier
metadata = postgres.metadata
alice = postgres.alice

KEY = bytes(range(32))
WAIT_S = 30


class GatedStore:
    """A real store whose deletes wait until the test lets them go on."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self.deleting = threading.Event()
        self.go_on = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def delete(self, key: str) -> None:
        self.deleting.set()
        assert self.go_on.wait(WAIT_S), "the test never let the delete go on"
        self.store.delete(key)

    def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.delete(key)


class Drive:
    """Two S3 regions (the primary's deletes gated) and an archive, with the server's
    replicator, block service and collector over them."""

    def __init__(self, tmp_path: Path, moto: MotoServer, metadata: MetadataService) -> None:
        urls = []
        for region in ("a", "b"):
            bucket = f"race-{region}-{os.urandom(4).hex()}"
            moto.create_bucket(bucket)
            urls.append(moto.store_url(bucket))
        opened = open_layout(f"replicated:{urls[0]}|{urls[1]}", f"file://{tmp_path / 'cold'}")
        self.primary = GatedStore(opened.regions[urls[0]])
        regions = {urls[0]: self.primary, urls[1]: opened.regions[urls[1]]}
        hot = ReplicatedBlockStore(list(regions.values()), list(regions), repair=False)
        cold = next(iter(opened.archive.values()))
        self.layout = Layout(TieredBlockStore(hot, cold), regions, opened.archive)
        self.replicator = Replicator(
            metadata.engine, self.layout, lambda h, o: self.blocks.check_object(h, o)
        )
        self.blocks = BlockService(self.layout.store, KEY, retire=self.replicator.retire)
        self.collector = Collector(metadata.engine, self.blocks, grace_s=0)

    def retired_block(self, metadata: MetadataService, who: Principal, data: bytes) -> str:
        """A block stored in both regions, then collected: its deletes are queued."""
        write = self.writer(data)
        self.collector.store(metadata, who, [block_hash(data)], write)
        self.replicator.drain_once()
        assert self.collector.collect().blocks == 1
        return block_hash(data)

    def writer(self, data: bytes):
        return lambda _hashes: [self.blocks.put_plain(data)]

    def assert_whole(self, metadata: MetadataService, name: str, data: bytes) -> None:
        """Once the queue has drained, every region holds the block and it reads back."""
        for _round in range(5):
            if not self.replicator.drain_once():
                break
        assert owed(metadata) == []
        assert all(region.exists(name) for region in self.layout.regions.values())
        assert self.blocks.get_plain(name) == data


def owed(metadata: MetadataService) -> list[tuple[str, str]]:
    with Session(metadata.engine) as session:
        return sorted((row.store, row.action) for row in session.scalars(select(ReplicationTask)))


def record(metadata: MetadataService, who: Principal, stored: StoredBlock, seen) -> list[str]:
    """The upload's record step (Collector.store): refused blocks are returned."""
    rows = [(stored.hash, stored.size, stored.stored_size)]
    return metadata.record_blocks(who, rows, seen, [(stored.hash, r) for r in stored.owed])


def test_an_upload_recorded_while_a_region_deletes_the_block_is_written_again(
    tmp_path: Path, moto: MotoServer, metadata: MetadataService, alice: Principal
) -> None:
    drive = Drive(tmp_path, moto, metadata)
    data = os.urandom(20_000)
    name = drive.retired_block(metadata, alice, data)
    drain = threading.Thread(target=drive.replicator.drain_once)
    drain.start()
    try:
        assert drive.primary.deleting.wait(WAIT_S)  # the primary's delete is under way
        seen = metadata.deletion_marks([name])
        stored = drive.blocks.put_plain(data)  # lands before the delete removes it
        assert record(metadata, alice, stored, seen) == [name]  # refused: to write again
    finally:
        drive.primary.go_on.set()
        drain.join(WAIT_S)
    assert not drive.primary.exists(name)  # the delete did remove the first write
    drive.collector.await_deletions([name])  # returns at once: the delete is over
    drive.collector.store(metadata, alice, [name], drive.writer(data))
    drive.assert_whole(metadata, name, data)


def test_an_upload_written_before_a_region_deletes_the_block_is_written_again(
    tmp_path: Path, moto: MotoServer, metadata: MetadataService, alice: Principal
) -> None:
    drive = Drive(tmp_path, moto, metadata)
    data = os.urandom(20_000)
    name = drive.retired_block(metadata, alice, data)
    drive.primary.go_on.set()  # deletes run straight through here
    written, deleted = threading.Event(), threading.Event()
    writes: list[int] = []

    def write(_hashes: list[str]) -> list[StoredBlock]:
        stored = [drive.blocks.put_plain(data)]
        writes.append(1)
        if len(writes) == 1:  # the first write waits while every region deletes the block
            written.set()
            assert deleted.wait(WAIT_S)
        return stored

    upload = threading.Thread(target=drive.collector.store, args=(metadata, alice, [name], write))
    upload.start()
    try:
        assert written.wait(WAIT_S)
        assert drive.replicator.drain_once() == len(drive.layout.stores)
        assert not any(store.exists(name) for store in drive.layout.stores.values())
    finally:
        deleted.set()
        upload.join(WAIT_S)
    assert len(writes) == 2  # the record saw the deletion mark move and wrote again
    drive.assert_whole(metadata, name, data)
