"""Block garbage collection against real servers: each race of docs/blocks.md, for real.

The grace period is passed by moving the servers' clock (tests/support/lifecycle.py);
collections run as `cirrus admin gc` processes beside the server, as an operator runs them.
"""

import os
import random
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from backend.protocol.hashing import block_hash
from tests import postgres
from tests.support.lifecycle import (
    DAY,
    admin,
    clocked_server,
    collected,
    commit,
    content,
    delete,
    missing,
    put_block,
    stored_objects,
    upload,
)
from tests.support.server import COMMAND_TIMEOUT_S, ServerProcess, cirrus_executable

BLOCKS = [os.urandom(200_000) for _ in range(3)]
# Fixtures: a database on SQLite and on PostgreSQL.
database_url = postgres.database_url
postgres_server = postgres.postgres_server


served = clocked_server  # a server that collects only when told, and its clock


def fsck_is_clean(server: ServerProcess) -> None:
    result = admin(server, "fsck", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problems found" in result.stdout


def unreferenced(server: ServerProcess, client, blocks: list[bytes]) -> None:
    """Make blocks the drive holds but no revision names: committed, deleted, history pruned
    (with the default grace period nothing is collected yet)."""
    for data in blocks:
        put_block(client, data)
    commit(client, "/doomed", blocks)
    delete(client, "/doomed")
    assert collected(admin(server, "gc", "--prune", "--max-history", "0")) == 0


def test_blocks_of_a_deleted_file_leave_the_block_directory(served) -> None:
    server, clock = served
    client = server.client(server.create_user("alice"))
    data = os.urandom(3 * 1024 * 1024)
    upload(client, "/big.bin", data)
    upload(client, "/kept.bin", b"kept")
    before = stored_objects(server)
    assert len(before) >= 3
    delete(client, "/big.bin")
    pruned = admin(server, "gc", "--prune", "--max-history", "0")
    assert "retention dropped 1 revisions" in pruned.stdout
    assert collected(pruned) == 0 and stored_objects(server) == before  # the grace period
    assert collected(admin(server, "gc", "--dry-run")) == 0
    clock.advance(DAY + 60)
    assert collected(admin(server, "gc", "--dry-run")) == len(before) - 1
    assert stored_objects(server) == before
    result = admin(server, "gc")
    assert collected(result) == len(before) - 1
    assert stored_objects(server) == {block_hash(b"kept")}
    assert content(client, "/kept.bin") == b"kept"
    fsck_is_clean(server)


def test_missing_answer_renews_the_grace_period(served) -> None:
    """A client told it need not upload a block can rely on that until its commit."""
    server, clock = served
    client = server.client(server.create_user("alice"))
    unreferenced(server, client, BLOCKS)
    clock.advance(DAY - 60)
    assert missing(client, BLOCKS) == []  # the client will commit without uploading
    clock.advance(120)  # past the grace period counted from the deletion, not the answer
    assert collected(admin(server, "gc")) == 0
    answer = commit(client, "/again", BLOCKS)
    assert answer["status"] == "uploaded"
    assert content(client, "/again") == b"".join(BLOCKS)
    fsck_is_clean(server)


def test_commit_after_a_collection_waits_for_the_blocks(served) -> None:
    """A client that waited past the grace period after its question finds its commit
    pending, and completes it by uploading: nothing committed ever lacks a block."""
    server, clock = served
    client = server.client(server.create_user("alice"))
    unreferenced(server, client, BLOCKS)
    assert missing(client, BLOCKS) == []
    clock.advance(DAY + 60)
    assert collected(admin(server, "gc")) == len(BLOCKS)
    answer = commit(client, "/late", BLOCKS)
    assert answer["status"] == "pending"
    assert sorted(answer["missing"]) == sorted(block_hash(b) for b in BLOCKS)
    for data in BLOCKS:
        put_block(client, data)
    assert content(client, "/late") == b"".join(BLOCKS)
    fsck_is_clean(server)


def test_resumable_upload_across_a_collection(served) -> None:
    """A session whose content was garbage when it started finishes whole after that
    garbage is collected: the blocks the session already holds stay while it lives, the
    rest is collected and stored again by the PUTs that follow."""
    server, clock = served
    client = server.client(server.create_user("alice"))
    data = os.urandom(3 * 1024 * 1024)
    upload(client, "/first", data)
    delete(client, "/first")
    admin(server, "gc", "--prune", "--max-history", "0")
    started = client.post(
        "/v1/files",
        params={"uploadType": "resumable", "path": "/second"},
        headers={"X-Upload-Content-Length": str(len(data))},
    )
    location = started.json()["location"]
    half = len(data) // 2
    total = len(data)
    part = client.put(
        location, content=data[:half], headers={"Content-Range": f"bytes 0-{half - 1}/{total}"}
    )
    assert part.status_code == 308 or part.status_code == 200, part.text
    clock.advance(DAY + 60)
    assert collected(admin(server, "gc")) >= 1
    with sqlite3.connect(server.data_dir / "metadata.db") as db:
        held = {name for (name,) in db.execute("SELECT hash FROM upload_blocks")}
    assert stored_objects(server) == held
    rest = client.put(
        location,
        content=data[half:],
        headers={"Content-Range": f"bytes {half}-{total - 1}/{total}"},
    )
    assert rest.status_code in (200, 201), rest.text
    assert rest.json()["status"] == "uploaded"
    assert content(client, "/second") == data
    fsck_is_clean(server)


def test_two_collections_at_once_share_the_work(served) -> None:
    server, clock = served
    client = server.client(server.create_user("alice"))
    garbage = [os.urandom(1024) + bytes([i % 256, i // 256]) for i in range(1500)]
    for start in range(0, len(garbage), 64):
        batch = garbage[start : start + 64]
        body = b"".join(_framed(b) for b in batch)
        response = client.post("/v1/blocks/batch", content=body)
        assert response.status_code == 201, response.text
    assert len(stored_objects(server)) == len(garbage)
    clock.advance(DAY + 60)
    command = [cirrus_executable(), "admin", "gc", "--data", str(server.data_dir)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    try:
        outputs = [run.communicate(timeout=COMMAND_TIMEOUT_S) for run in runs]
    finally:
        for run in runs:
            run.kill()
    for run, (_out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
    counts = [collected(subprocess.CompletedProcess([], 0, out, "")) for out, _err in outputs]
    assert sum(counts) == len(garbage)
    assert stored_objects(server) == set()
    fsck_is_clean(server)


def _framed(data: bytes) -> bytes:
    import zstandard

    frame = zstandard.ZstdCompressor().compress(data)
    return block_hash(data).encode() + len(frame).to_bytes(8, "big") + frame


def test_stress_uploads_deletes_and_collections(tmp_path: Path, database_url: str) -> None:
    """Writers that share content, deleting as they go, against a server that prunes and
    collects every 0.3 s with no grace period, and collections from admin processes: every
    revision left reads back as committed and the consistency check finds nothing. On
    SQLite and on PostgreSQL, whose row locks let collections and writers truly overlap."""
    args = ("--gc-interval", "0.3", "--gc-grace", "0", "--max-history", "0")
    server = ServerProcess(tmp_path / "server", db_url=database_url, extra_args=args)
    pool = [os.urandom(20_000) + bytes([i]) for i in range(16)]
    freed: list[int] = []
    written: dict[tuple[int, int, int], bytes] = {}  # (user, node id, rev) → content
    failures: list[BaseException] = []
    try:
        server.start()
        tokens = [server.create_user("alice"), server.create_user("bob")]
        deadline = time.monotonic() + 15

        def write(worker: int) -> None:
            rng = random.Random(worker)
            client = server.client(tokens[worker % 2])
            try:
                for step in range(60):
                    if time.monotonic() > deadline:
                        return
                    path = f"/w{worker}/f{rng.randrange(3)}"
                    if step % 5 == 4:
                        client.post("/v1/tree/delete", json={"path": path})
                        continue
                    blocks = rng.sample(pool, rng.randrange(1, 4))
                    for data in (b for b in blocks if block_hash(b) in missing(client, blocks)):
                        put_block(client, data)
                    answer = commit(client, path, blocks, base_rev=_head(client, path))
                    for data in (b for b in blocks if block_hash(b) in answer["missing"]):
                        put_block(client, data)  # collected between the question and commit
                    written[(worker % 2, answer["node"]["id"], answer["rev"])] = b"".join(blocks)
            except BaseException as exc:
                failures.append(exc)
            finally:
                client.close()

        writing = threading.Event()
        writing.set()

        def collect() -> None:  # while the writers write (collecting after them races nothing)
            while writing.is_set() and time.monotonic() < deadline:
                result = admin(
                    server, "gc", "--prune", "--grace", "0", "--max-history", "0", check=False
                )
                if result.returncode != 0:
                    failures.append(AssertionError(result.stderr))
                else:
                    freed.append(collected(result))

        writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        collector = threading.Thread(target=collect)
        for thread in [*writers, collector]:
            thread.start()
        for thread in writers:
            thread.join(60)
        writing.clear()
        collector.join(60)
        assert not failures, failures[0]
        in_server = re.search(r"collected [1-9]", server.log_path.read_text())
        assert sum(freed) > 0 or in_server, "nothing was collected: the run raced nothing"
        fsck_is_clean(server)
        checked = 0
        for user, token in enumerate(tokens):
            with server.client(token) as client:
                checked += _check_revisions(client, user, written)
        assert checked > 0
    finally:
        server.stop()
    assert server.errors_logged() == [], server.log_tail(80)


def _head(client, path: str) -> int | None:
    response = client.get("/v1/tree/stat", params={"path": path})
    return response.json()["head_rev"] if response.status_code == 200 else None


def _check_revisions(client, user: int, written: dict[tuple[int, int, int], bytes]) -> int:
    """Every revision a writer committed reads back as written, or is gone by retention
    (never for want of a block); every live file reads as its head. Return the reads."""
    checked = 0
    for (owner, node_id, rev), data in written.items():
        if owner != user:
            continue
        response = client.get("/v1/files/content", params={"id": node_id, "rev": rev})
        if response.status_code == 404:
            assert response.json()["error"]["message"].startswith("no revision"), response.text
            continue
        assert response.status_code == 200 and response.content == data, (node_id, rev)
        checked += 1
    for folder in client.get("/v1/tree/list", params={"path": "/"}).json()["entries"]:
        listing = client.get("/v1/tree/list", params={"path": folder["path"]}).json()
        for node in listing["entries"]:
            assert node["status"] == "uploaded", node
            assert content(client, node["path"]) == written[(user, node["id"], node["rev"])]
    return checked


def test_the_server_prunes_and_collects_in_the_background(tmp_path: Path) -> None:
    args = ("--gc-interval", "0.2", "--gc-grace", "0", "--max-history", "0")
    server = ServerProcess(tmp_path / "server", extra_args=args)
    try:
        server.start()
        client = server.client(server.create_user("alice"))
        upload(client, "/gone", os.urandom(1024 * 1024))
        assert stored_objects(server)
        delete(client, "/gone")
        reported = "retention dropped 1 revisions; collected"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            stored_objects(server) or reported not in server.log_tail(400)
        ):
            time.sleep(0.1)
        assert stored_objects(server) == set()
        assert reported in server.log_tail(400)
    finally:
        server.stop()
    assert server.errors_logged() == [], server.log_tail(80)
