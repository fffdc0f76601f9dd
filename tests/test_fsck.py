"""`cirrus admin fsck [--repair]` on a real server's data: metadata invariants, the block
store against the rows, and the grace period that keeps an upload's object from repair."""

import os
import sqlite3
from pathlib import Path

from backend.protocol.hashing import block_hash
from tests.support.lifecycle import (
    DAY,
    admin,
    clocked_server,
    collected,
    commit,
    content,
    put_block,
    stored_objects,
    upload,
)
from tests.support.server import ServerProcess

served = clocked_server  # a server that collects only when told, and its clock


def object_path(server: ServerProcess, name: str) -> Path:
    return server.data_dir / "blocks" / name[:2] / name[2:4] / name


def plant(server: ServerProcess, data: bytes) -> str:
    """An object in the store that no row knows (as a crash after a write leaves one)."""
    name = block_hash(data)
    path = object_path(server, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(100))
    return name


def fsck(server: ServerProcess, *args: str):
    return admin(server, "fsck", *args, check=False)


def test_a_clean_drive_passes(served) -> None:
    server, _clock = served
    upload(server.client(server.create_user("alice")), "/a", os.urandom(100_000))
    result = fsck(server)
    assert result.returncode == 0 and "0 problems found" in result.stdout, result.stdout


def test_stray_object_is_reported_then_removed_after_the_grace_period(served) -> None:
    server, clock = served
    name = plant(server, b"stray")
    result = fsck(server)
    assert result.returncode == 1
    assert f"object {name}: in the block store, but no row knows it" in result.stdout
    repaired = fsck(server, "--repair")
    assert repaired.returncode == 0, repaired.stdout
    assert "repaired: 1 (stray objects" in repaired.stdout
    assert name in stored_objects(server)  # adopted, kept for the grace period
    assert fsck(server).returncode == 0
    clock.advance(DAY + 60)
    assert collected(admin(server, "gc")) == 1
    assert stored_objects(server) == set()


def test_repair_spares_an_upload_in_flight(served) -> None:
    """The object of an upload whose record has not happened yet looks stray; the upload
    records it within the grace period and it is never collected."""
    server, clock = served
    client = server.client(server.create_user("alice"))
    data = os.urandom(50_000)
    name = plant(server, data)  # the upload's write...
    assert fsck(server, "--repair").returncode == 0
    put_block(client, data)  # ...and its record
    commit(client, "/f", [data])
    clock.advance(DAY + 60)
    assert collected(admin(server, "gc")) == 0
    assert name in stored_objects(server)
    assert content(client, "/f") == data
    assert fsck(server).returncode == 0


def test_lost_object_and_broken_counts_are_reported_and_not_repaired(served) -> None:
    server, _clock = served
    client = server.client(server.create_user("alice"))
    data = os.urandom(50_000)
    upload(client, "/f", data)
    name = block_hash(data)
    object_path(server, name).unlink()
    with sqlite3.connect(server.data_dir / "metadata.db") as db:
        db.execute("UPDATE blocks SET refcount = 7 WHERE hash = ?", (name,))
    for args in ((), ("--repair",)):
        result = fsck(server, *args)
        assert result.returncode == 1
        assert f"block {name}: recorded as stored, but not in the block store" in result.stdout
        assert f"block {name}: refcount 7, referenced 1 times" in result.stdout


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", db_url="postgresql+psycopg://nobody@127.0.0.1:1/x")
    result = admin(server, "fsck", "--db", server.db_url, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("cirrus admin fsck: error: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def _pragma(server: ServerProcess, name: str) -> int:
    with sqlite3.connect(server.data_dir / "metadata.db") as db:
        return db.execute(f"PRAGMA {name}").fetchone()[0]


def test_collection_gives_the_database_pages_back(served) -> None:
    """Deleted, purged and collected rows leave no free pages in metadata.db."""
    server, clock = served
    assert _pragma(server, "auto_vacuum") == 2  # incremental, from the drive's creation
    client = server.client(server.create_user("alice"))
    for index in range(4):  # block lists of pending revisions: thousands of rows
        blocks = [{"hash": os.urandom(32).hex(), "size": 1000} for _ in range(3000)]
        answer = client.post(
            "/v1/files/commit", json={"path": f"/big/{index}", "size": 3_000_000, "blocks": blocks}
        )
        assert answer.status_code == 201, answer.text
    grown = _pragma(server, "page_count")
    client.post("/v1/tree/delete", json={"path": "/big", "recursive": True}).raise_for_status()
    client.post("/v1/trash/purge", json={"all": True}).raise_for_status()
    clock.advance(DAY + 60)
    result = admin(server, "gc")
    assert "free pages given back" in result.stdout
    given_back = int(result.stdout.split("metadata database: ")[1].split()[0])
    assert given_back > 100, result.stdout
    assert _pragma(server, "freelist_count") == 0
    assert _pragma(server, "page_count") < grown - 100


def test_repair_converts_a_drive_that_keeps_its_free_pages(served) -> None:
    server, _clock = served
    client, data = server.client(server.create_user("alice")), os.urandom(10_000)
    upload(client, "/a", data)
    with sqlite3.connect(server.data_dir / "metadata.db", isolation_level=None) as db:
        db.execute("PRAGMA auto_vacuum=0")
        db.execute("VACUUM")  # as a drive made before incremental vacuum
    assert _pragma(server, "auto_vacuum") == 0
    result = fsck(server)
    assert result.returncode == 1 and "keeps the pages it frees" in result.stdout, result.stdout
    repaired = fsck(server, "--repair")
    assert repaired.returncode == 0, repaired.stdout
    assert _pragma(server, "auto_vacuum") == 2
    assert fsck(server).returncode == 0
    assert content(client, "/a") == data
