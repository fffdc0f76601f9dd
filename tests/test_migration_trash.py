"""Migration 0006 upgrades an existing drive: its deletions become trash items, its journal
entries get a date, and its quota usage is counted from its revisions."""

from alembic import command
from sqlalchemy import text

from backend.db import create_engine_for, migrate
from backend.db.engine import alembic_config
from backend.metadata.service import MetadataService
from backend.metadata.types import Principal
from backend.notify import LocalNotifier
from tests import postgres

database_url = postgres.database_url
postgres_server = postgres.postgres_server

HASH_A, HASH_B = "a" * 64, "b" * 64
# id, parent, name, type, size, deleted: /live.txt; /old (deleted) with /old/inner.txt.
NODES = [
    (1, None, "", "dir", 0, False),
    (2, 1, "live.txt", "file", 30, False),
    (3, 1, "old", "dir", 0, True),
    (4, 3, "inner.txt", "file", 20, True),
]
# revision id, node, number, size; revision blocks (revision, seq, hash, size).
REVISIONS = [(1, 2, 1, 10), (2, 2, 2, 30), (3, 4, 1, 20)]
BLOCKS = [(1, 0, HASH_A, 10), (2, 0, HASH_A, 10), (2, 1, HASH_B, 20), (3, 0, HASH_B, 20)]


def _fill_version_0002(connection) -> None:
    run = connection.execute
    run(text("INSERT INTO users (id, name, created) VALUES (1, 'alice', 0)"))
    run(text("INSERT INTO namespaces (id, user_id, cursor, bytes_received) VALUES (1, 1, 2, 0)"))
    for node_id, parent, name, kind, size, deleted in NODES:
        run(
            text(
                "INSERT INTO nodes (id, namespace_id, parent_id, name, type, mode, mtime_ns, "
                "size, rev, head_rev, xattrs, deleted) VALUES (:id, 1, :parent, :name, :type, "
                "420, 0, :size, 0, 0, '{}', :deleted)"
            ),
            {"id": node_id, "parent": parent, "name": name, "type": kind, "size": size,
             "deleted": deleted},
        )  # fmt: skip
    for revision_id, node_id, number, size in REVISIONS:
        run(
            text(
                "INSERT INTO revisions (id, namespace_id, node_id, number, size, mtime_ns, "
                "device, created, status, conflict) VALUES (:id, 1, :node, :number, :size, 0, "
                "'d', 0, 'uploaded', false)"
            ),
            {"id": revision_id, "node": node_id, "number": number, "size": size},
        )
    for revision_id, seq, block_hash, size in BLOCKS:
        run(
            text(
                'INSERT INTO revision_blocks (revision_id, seq, "offset", hash, size) '
                "VALUES (:revision, :seq, 0, :hash, :size)"
            ),
            {"revision": revision_id, "seq": seq, "hash": block_hash, "size": size},
        )
    run(text("INSERT INTO changes (namespace_id, cursor, node_id, node) VALUES (1, 1, 2, '{}')"))


def test_an_existing_drive_upgrades(database_url: str) -> None:
    engine = create_engine_for(database_url)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
            _fill_version_0002(connection)
        migrate(engine)
        with engine.connect() as connection:
            used = connection.execute(text("SELECT used_bytes FROM namespaces")).scalar()
            dated = connection.execute(text("SELECT created FROM changes")).scalar()
        assert used == 30  # blocks a and b, each counted once
        assert dated > 0
        metadata = MetadataService(engine, LocalNotifier(lambda _namespace: 0))
        alice = Principal(1, "alice", 1)
        (item,) = metadata.trash(alice)
        assert (item.path, item.files, item.size, item.device) == ("/old", 1, 20, None)
        assert metadata.restore_from_trash(alice, item.id).path == "/old"
        assert metadata.stat(alice, "/old/inner.txt").size == 20
    finally:
        engine.dispose()
