"""POSIX attributes, special files and hard links in the metadata service (SQLite and
PostgreSQL), and the migration that gives old drives their values."""

import pytest
from alembic import command
from sqlalchemy import text

from backend.db import create_engine_for, migrate
from backend.db.engine import alembic_config
from backend.metadata.service import MetadataService
from backend.metadata.types import CommitRequest, Principal
from backend.protocol import errors
from tests import postgres

database_url = postgres.database_url
postgres_server = postgres.postgres_server
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier
metadata = postgres.metadata
alice = postgres.alice

T = 1_800_000_000_000_000_000


def _write(metadata: MetadataService, who: Principal, path: str, **attrs) -> None:
    metadata.commit(who, CommitRequest(path, None, 0, [], attrs=attrs))


def test_owner_and_times_are_kept_and_checked(metadata: MetadataService, alice) -> None:
    node, _ = metadata.mkdir(alice, "/d", 0o2775, T, False, {"uid": 1000, "gid": 100})
    assert (node.uid, node.gid, node.mode, node.ctime_ns) == (1000, 100, 0o2775, node.ctime_ns)
    _write(metadata, alice, "/d/f", uid=5, ctime_ns=T + 7)
    folder = metadata.stat(alice, "/d")
    assert (folder.mtime_ns, folder.ctime_ns) == (T + 7, T + 7)  # its entries changed then
    node = metadata.setattr(
        alice, "/d/f", 0o4755, None, {"gid": 7, "atime_ns": T, "ctime_ns": T + 9}
    )
    assert (node.uid, node.gid, node.mode, node.atime_ns, node.ctime_ns) == (5, 7, 0o4755, T, T + 9)
    for bad in ({"uid": -1}, {"gid": 2**32 - 1}, {"uid": "0"}, {"ctime_ns": 2**64}, {"x": 1}):
        with pytest.raises(errors.InvalidRequest):
            metadata.setattr(alice, "/d/f", None, None, bad)
    assert metadata.stat(alice, "/d/f") == node
    made = metadata.list_dir(alice, "/")[0]
    assert metadata.stat(alice, "/").uid is None and made.name == "d"  # the root: nobody's


def test_special_files(metadata: MetadataService, alice) -> None:
    fifo = metadata.mknod(alice, "/p", "fifo", 0o600, 0, None, {"uid": 3})
    dev = metadata.mknod(alice, "/null", "chr", 0o666, 259, T, None)
    assert (fifo.type, fifo.mode, fifo.uid, fifo.size) == ("fifo", 0o600, 3, 0)
    assert (dev.type, dev.rdev, dev.mtime_ns) == ("chr", 259, T)
    for kind, rdev in (("file", 0), ("chr", -1), ("blk", "1")):
        with pytest.raises(errors.InvalidRequest):
            metadata.mknod(alice, "/bad", kind, 0o600, rdev, None, None)
    with pytest.raises(errors.AlreadyExists):
        metadata.mknod(alice, "/p", "socket", 0o600, 0, None, None)
    with pytest.raises(errors.InvalidRequest):
        metadata.block_list(alice, "/p", None, None)  # no content


def test_hard_links_share_their_file(metadata: MetadataService, alice) -> None:
    _write(metadata, alice, "/a")
    metadata.mkdir(alice, "/d", None, None, False)
    link = metadata.link(alice, "/a", "/d/b", {"ctime_ns": T})
    first = metadata.stat(alice, "/a")
    assert (link.type, link.link_id, first.nlink, first.ctime_ns) == ("hardlink", first.id, 2, T)
    result = metadata.commit(alice, CommitRequest("/d/b", 1, 0, [], mtime_ns=T))
    assert result.node.id == first.id and result.rev == 2  # content belongs to the file
    assert [r.rev for r in metadata.history(alice, "/d/b", 10)] == [2, 1]
    with pytest.raises(errors.Forbidden):
        metadata.link(alice, "/d", "/d2")
    with pytest.raises(errors.AlreadyExists):
        metadata.link(alice, "/a", "/d/b")
    _moved, replaced = metadata.move(alice, "/a", "/d/b", "replace")  # the same file: nothing
    assert replaced is None and metadata.stat(alice, "/d/b").type == "hardlink"
    metadata.delete(alice, "/a", False)  # the file moves to its other name, which goes
    heir = metadata.stat(alice, "/d/b")
    assert (heir.id, heir.type, heir.nlink, heir.rev) == (first.id, "file", 1, 2)
    assert [n.name for n in metadata.list_dir(alice, "/")] == ["d"]


def test_deleting_a_folder_keeps_files_named_outside_it(metadata: MetadataService, alice) -> None:
    metadata.mkdir(alice, "/d", None, None, False)
    _write(metadata, alice, "/d/f")
    _write(metadata, alice, "/d/g")
    metadata.link(alice, "/d/f", "/keep", None)
    metadata.link(alice, "/d/g", "/d/g2", None)
    metadata.delete(alice, "/d", True)
    kept = metadata.stat(alice, "/keep")
    assert (kept.type, kept.nlink) == ("file", 1)
    assert [n.name for n in metadata.list_dir(alice, "/")] == ["keep"]


def test_old_drives_migrate_with_sensible_values(tmp_path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0002")
            conn.execute(text("INSERT INTO users (id, name, created) VALUES (1, 'a', 0)"))
            conn.execute(
                text(
                    "INSERT INTO namespaces (id, user_id, cursor, bytes_received)"
                    " VALUES (1, 1, 0, 0)"
                )
            )
            conn.execute(text(
                "INSERT INTO nodes (id, namespace_id, parent_id, name, type, mode, mtime_ns, size,"
                " rev, head_rev, xattrs, deleted) VALUES (1, 1, NULL, '', 'dir', 493, 42, 0, 0,"
                " 0, '{}', 0)"
            ))  # fmt: skip
        migrate(engine)
        with engine.connect() as conn:
            row = conn.execute(text("SELECT uid, gid, atime_ns, ctime_ns, rdev, nlink FROM nodes"))
            assert row.one() == (None, None, 42, 42, 0, 1)
    finally:
        engine.dispose()
