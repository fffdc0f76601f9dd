"""Commits, the pending -> uploaded flow, conflicts, history, blocks and the change journal."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

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

H1, H2, H3 = (block_hash(bytes([n])) for n in range(3))


@pytest.fixture
def bob(metadata: MetadataService) -> Principal:
    return metadata.authenticate(metadata.create_user("bob"), None)


def request(path: str, base_rev: int | None, *blocks: tuple[str, int], **kw) -> CommitRequest:
    refs = [BlockRef(h, size) for h, size in blocks]
    return CommitRequest(path, base_rev, sum(size for _, size in blocks), refs, **kw)


def upload(metadata: MetadataService, who: Principal, *hashes: str, size: int = 10) -> None:
    for h in hashes:
        metadata.record_block(who, h, size, size + 1)


def refcount(metadata: MetadataService, h: str) -> int:
    with metadata.engine.connect() as conn:
        query = text("SELECT refcount FROM blocks WHERE hash = :h")
        return conn.execute(query, {"h": h}).scalar() or 0


def test_commit_with_missing_blocks_stays_pending_until_the_last_block(
    metadata: MetadataService, alice: Principal, notifier: postgres.RecordingNotifier
) -> None:
    result = metadata.commit(alice, request("/docs/a.txt", None, (H1, 10), (H2, 10), (H1, 10)))
    assert (result.rev, result.status, result.conflict) == (1, "pending", False)
    assert result.missing == [H1, H2] and result.path == "/docs/a.txt"
    node = result.node
    assert (node.rev, node.head_rev, node.size, node.status) == (0, 1, 0, "pending")
    assert metadata.stat(alice, "/docs").type == "dir"  # parents were created
    assert metadata.block_list(alice, "/docs/a.txt", None, None).blocks == []
    with pytest.raises(errors.RevisionPending):
        metadata.block_list(alice, "/docs/a.txt", None, 1)
    upload(metadata, alice, H1)
    assert metadata.stat(alice, "/docs/a.txt").status == "pending"
    upload(metadata, alice, H2)
    done = metadata.stat(alice, "/docs/a.txt")
    assert (done.rev, done.head_rev, done.size, done.status) == (1, 1, 30, "uploaded")
    listing = metadata.block_list(alice, None, done.id, None)
    assert [(b.hash, b.offset, b.size) for b in listing.blocks] == [
        (H1, 0, 10),
        (H2, 10, 10),
        (H1, 20, 10),
    ]
    journal = metadata.changes(alice, 0, 100)
    assert [(c.node.path, c.node.status) for c in journal.entries] == [
        ("/docs", "uploaded"),
        ("/docs/a.txt", "pending"),
        ("/docs/a.txt", "uploaded"),
    ]
    assert [c.cursor for c in journal.entries] == [1, 2, 3]
    # Every publish came after its commit, with the cursor it reached.
    assert notifier.published == [(alice.namespace_id, 2), (alice.namespace_id, 3)]
    assert metadata.account(alice)["bytes_received"] == 20


def test_blocks_the_drive_holds_make_a_commit_uploaded_at_once(
    metadata: MetadataService, alice: Principal
) -> None:
    upload(metadata, alice, H1)
    result = metadata.commit(alice, request("/a", None, (H1, 10)))
    assert result.missing == [] and result.status == "uploaded"
    assert (result.node.rev, result.node.size) == (1, 10)
    empty = metadata.commit(alice, request("/empty", None))
    assert empty.status == "uploaded" and empty.node.size == 0
    assert metadata.block_list(alice, "/empty", None, None).blocks == []
    assert metadata.account(alice)["files"] == 2 and metadata.account(alice)["used_bytes"] == 10


def test_blocks_of_other_users_stay_invisible(
    metadata: MetadataService, alice: Principal, bob: Principal
) -> None:
    upload(metadata, alice, H1)
    assert metadata.block_known(H1) and not metadata.block_known(H2)
    assert metadata.missing_blocks(alice, [H1, H2, H1]) == [H2]
    assert metadata.missing_blocks(bob, [H1, H2]) == [H1, H2]
    assert metadata.may_read_block(alice, H1) and not metadata.may_read_block(bob, H1)
    # Bob must send the bytes himself before the block counts as his.
    assert metadata.commit(bob, request("/b", None, (H1, 10))).missing == [H1]
    upload(metadata, bob, H1)
    assert metadata.may_read_block(bob, H1) and metadata.stat(bob, "/b").status == "uploaded"
    for bad in (["zz"], [H1.upper()], "notalist", [H1] * 10_001):
        with pytest.raises(errors.InvalidRequest):
            metadata.missing_blocks(alice, bad)


def test_refcounts_count_every_reference(metadata: MetadataService, alice: Principal) -> None:
    upload(metadata, alice, H1)
    metadata.commit(alice, request("/a", None, (H1, 10), (H1, 10)))
    assert refcount(metadata, H1) == 2
    metadata.commit(alice, request("/a", 1, (H1, 10), (H2, 10)))
    assert (refcount(metadata, H1), refcount(metadata, H2)) == (3, 1)
    assert not metadata.block_known(H2)  # referenced but not stored yet


def test_stale_or_missing_base_rev_becomes_a_conflicted_copy(
    metadata: MetadataService, alice: Principal, bob: Principal
) -> None:
    upload(metadata, alice, H1, H2)
    metadata.commit(alice, request("/r/report.txt", None, (H1, 10)))
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    first = metadata.commit(alice, request("/r/report.txt", None, (H2, 10)))
    assert first.conflict and first.path == f"/r/report (laptop's conflicted copy {day}).txt"
    second = metadata.commit(alice, request("/r/report.txt", 7, (H2, 10)))
    assert second.path == f"/r/report (laptop's conflicted copy {day}) (1).txt"
    current = metadata.stat(alice, "/r/report.txt")
    assert (current.rev, current.size) == (1, 10)
    ok = metadata.commit(alice, request("/r/report.txt", 1, (H2, 10)))
    assert not ok.conflict and ok.rev == 2 and ok.path == "/r/report.txt"
    forced = metadata.commit(alice, request("/r/report.txt", None, (H1, 10), overwrite=True))
    assert not forced.conflict and forced.rev == 3
    metadata.commit(bob, request("/.bashrc", None))
    copy = metadata.commit(bob, request("/.bashrc", None))
    assert copy.path == f"/.bashrc (bob's conflicted copy {day})"


def test_conflicted_copy_names_fit_the_name_limit(
    metadata: MetadataService, alice: Principal
) -> None:
    name = "/" + "n" * 250 + ".txt"
    metadata.commit(alice, request(name, None))
    copy = metadata.commit(alice, request(name, None))
    assert copy.conflict and len(copy.node.name.encode()) <= 255
    assert copy.node.name.endswith(
        "conflicted copy " + datetime.now(UTC).strftime("%Y-%m-%d") + ").txt"
    )


def test_commit_onto_a_folder_or_with_bad_input_changes_nothing(
    metadata: MetadataService, alice: Principal
) -> None:
    metadata.mkdir(alice, "/d", None, None, False)
    cursor = metadata.account(alice)["cursor"]
    bad_requests = [
        (request("/d", None), errors.IsADirectory),
        (request("/", None), errors.IsADirectory),
        (request("/x/../y", None), errors.InvalidPathError),
        (CommitRequest("/f", None, 11, [BlockRef(H1, 10)]), errors.InvalidRequest),
        (CommitRequest("/f", None, 10, [BlockRef("nothex", 10)]), errors.InvalidRequest),
        (CommitRequest("/f", None, 0, [BlockRef(H1, 0)]), errors.InvalidRequest),
        (request("/f", None, (H1, 5 * 1024 * 1024)), errors.InvalidRequest),
        (request("/f", -1), errors.InvalidRequest),
        (request("/f", None, mode=0o20000), errors.InvalidRequest),
        (request("/f", None, commit_id="c" * 65), errors.InvalidRequest),
        (request("/f", None, commit_id="nul\0"), errors.InvalidRequest),
        (request("/d/sub/../f", None), errors.InvalidPathError),
    ]
    for bad, error in bad_requests:
        with pytest.raises(error):
            metadata.commit(alice, bad)
    metadata.symlink(alice, "/link", "t", None)
    with pytest.raises(errors.NotADirectory):
        metadata.commit(alice, request("/link/f", None))
    assert metadata.account(alice)["cursor"] == cursor + 1  # only the symlink


def test_commit_onto_a_symlink(metadata: MetadataService, alice: Principal) -> None:
    metadata.symlink(alice, "/l", "t", None)
    assert metadata.commit(alice, request("/l", None)).conflict
    replaced = metadata.commit(alice, request("/l", None, overwrite=True))
    assert not replaced.conflict and replaced.node.type == "file" and replaced.path == "/l"


def test_commit_ids_make_commits_idempotent(
    metadata: MetadataService, alice: Principal, bob: Principal
) -> None:
    first = metadata.commit(alice, request("/a", None, (H1, 10), commit_id="c1"))
    cursor = metadata.account(alice)["cursor"]
    again = metadata.commit(alice, request("/a", None, (H1, 10), commit_id="c1"))
    assert (again.rev, again.missing, again.path, again.conflict) == (1, [H1], "/a", False)
    assert metadata.account(alice)["cursor"] == cursor
    assert [r.rev for r in metadata.history(alice, "/a", 10)] == [1]
    copy = metadata.commit(alice, request("/a", None, commit_id="c2"))
    assert copy.conflict
    repeat = metadata.commit(alice, request("/a", None, commit_id="c2"))
    assert repeat.conflict and repeat.path == copy.path and repeat.rev == copy.rev
    # Commit ids are per drive: bob's c1 is a commit of its own.
    assert metadata.commit(bob, request("/a", None, commit_id="c1")).node.id != first.node.id


def test_rev_only_moves_forward(metadata: MetadataService, alice: Principal) -> None:
    upload(metadata, alice, H3)
    metadata.commit(alice, request("/f", None, (H1, 10)))  # rev 1 waits for H1
    second = metadata.commit(alice, request("/f", 1, (H2, 10), (H3, 10)))  # rev 2 waits for H2
    assert second.missing == [H2]
    upload(metadata, alice, H2)
    node = metadata.stat(alice, "/f")
    assert (node.rev, node.size, node.head_rev) == (2, 20, 2)
    cursor = metadata.account(alice)["cursor"]
    upload(metadata, alice, H1)  # the older revision completes late
    node = metadata.stat(alice, "/f")
    assert (node.rev, node.size) == (2, 20)
    assert metadata.account(alice)["cursor"] == cursor  # nothing visible changed
    assert [(r.rev, r.status) for r in metadata.history(alice, "/f", 10)] == [
        (2, "uploaded"),
        (1, "uploaded"),
    ]


def test_history_and_restore(metadata: MetadataService, alice: Principal) -> None:
    upload(metadata, alice, H1, H2)
    for n, h in enumerate([H1, H2, H1]):
        metadata.commit(alice, request("/f", n or None, (h, 10), mtime_ns=100 + n))
    history = metadata.history(alice, "/f", 2)
    assert [(r.rev, r.mtime_ns, r.device, r.status) for r in history] == [
        (3, 102, "laptop", "uploaded"),
        (2, 101, "laptop", "uploaded"),
    ]
    assert history[0].created_ns >= history[1].created_ns
    restored = metadata.restore(alice, "/f", 2)
    assert (restored.rev, restored.head_rev, restored.mtime_ns) == (4, 4, 101)
    assert [b.hash for b in metadata.block_list(alice, "/f", None, None).blocks] == [H2]
    assert [b.hash for b in metadata.block_list(alice, "/f", None, 1).blocks] == [H1]
    for bad in (0, 99):
        with pytest.raises(errors.NotFound):
            metadata.restore(alice, "/f", bad)
    for bad_limit in (0, 1001):
        with pytest.raises(errors.InvalidRequest):
            metadata.history(alice, "/f", bad_limit)
    metadata.mkdir(alice, "/d", None, None, False)
    with pytest.raises(errors.IsADirectory):
        metadata.history(alice, "/d", 10)
    with pytest.raises(errors.IsADirectory):
        metadata.block_list(alice, "/d", None, None)
    with pytest.raises(errors.InvalidRequest):
        metadata.block_list(alice, "/f", 1, None)


def test_restore_of_a_pending_revision_is_refused(
    metadata: MetadataService, alice: Principal
) -> None:
    metadata.commit(alice, request("/f", None, (H1, 10)))
    with pytest.raises(errors.RevisionPending):
        metadata.restore(alice, "/f", 1)


def test_deleted_files_keep_their_history(metadata: MetadataService, alice: Principal) -> None:
    upload(metadata, alice, H1, H2)
    node = metadata.commit(alice, request("/d/f", None, (H1, 10))).node
    metadata.commit(alice, request("/d/f", 1, (H2, 10)))
    metadata.delete(alice, "/d/f", False)
    assert metadata.block_list(alice, None, node.id, None).blocks[0].hash == H2
    with pytest.raises(errors.NotFound):
        metadata.block_list(alice, "/d/f", None, None)
    assert [r.rev for r in metadata.history(alice, "/d/f", 10)] == [2, 1]
    undeleted = metadata.restore(alice, "/d/f", 1)
    assert undeleted.id != node.id and (undeleted.rev, undeleted.size) == (1, 10)
    assert [b.hash for b in metadata.block_list(alice, "/d/f", None, None).blocks] == [H1]
    with pytest.raises(errors.NotFound):
        metadata.history(alice, "/d/never", 10)


def test_changes_and_snapshot_paging(metadata: MetadataService, alice: Principal) -> None:
    for n in range(5):
        metadata.mkdir(alice, f"/d{n}", None, None, False)
    page = metadata.changes(alice, 0, 2)
    assert [c.cursor for c in page.entries] == [1, 2] and page.cursor == 2 and page.has_more
    page = metadata.changes(alice, 4, 2)
    assert [c.node.path for c in page.entries] == ["/d4"] and not page.has_more
    assert (
        metadata.changes(alice, 5, 10).entries == [] and metadata.changes(alice, 5, 10).cursor == 5
    )
    first = metadata.snapshot(alice, 0, 4)
    assert first.cursor == 5 and first.has_more and first.nodes[0].path == "/"
    rest = metadata.snapshot(alice, first.nodes[-1].id, 4)
    assert [n.path for n in first.nodes + rest.nodes] == ["/", "/d0", "/d1", "/d2", "/d3", "/d4"]
    assert not rest.has_more
    assert metadata.current_cursor(alice.namespace_id) == 5
    for bad in ((-1, 10), (0, 0), (0, 10_001), ("1", 10)):
        with pytest.raises(errors.InvalidRequest):
            metadata.changes(alice, *bad)
        with pytest.raises(errors.InvalidRequest):
            metadata.snapshot(alice, *bad)
    with pytest.raises(errors.NotFound):
        metadata.current_cursor(999)


def test_record_block_validates_its_input(metadata: MetadataService, alice: Principal) -> None:
    for bad in (("x", 1, 1), (H1, -1, 1), (H1, 1, "1"), (H1, 5 * 1024 * 1024, 1)):
        with pytest.raises(errors.InvalidRequest):
            metadata.record_block(alice, *bad)
    assert metadata.account(alice)["bytes_received"] == 0


def test_old_versions_beyond_the_cap_are_dropped(
    migrated_engine, notifier: postgres.RecordingNotifier
) -> None:
    metadata = MetadataService(migrated_engine, notifier, max_revisions=3)
    alice = metadata.authenticate(metadata.create_user("alice"), None)
    hashes = [block_hash(bytes([100 + n])) for n in range(8)]
    upload(metadata, alice, *hashes[:6])
    for n in range(6):
        metadata.commit(alice, request("/f", n or None, (hashes[n], 10)))
    assert [r.rev for r in metadata.history(alice, "/f", 100)] == [6, 5, 4]
    assert [refcount(metadata, h) for h in hashes[:6]] == [0, 0, 0, 1, 1, 1]
    # Pending revisions count towards the cap but the revision reads return (6) stays.
    for n in (6, 7):
        metadata.commit(alice, request("/f", n, (hashes[n], 10)))
    assert [(r.rev, r.status) for r in metadata.history(alice, "/f", 100)] == [
        (8, "pending"),
        (7, "pending"),
        (6, "uploaded"),
    ]
    assert metadata.block_list(alice, "/f", None, None).rev == 6
    with pytest.raises(errors.NotFound):
        metadata.restore(alice, "/f", 1)


class BrokenNotifier:
    """A notifier whose fan-out is down (a fault a test cannot cause otherwise)."""

    def publish(self, namespace_id: int, cursor: int) -> None:
        raise ConnectionError("notification hub unreachable")


def test_a_failing_notifier_does_not_undo_or_fail_a_change(
    migrated_engine, caplog: pytest.LogCaptureFixture
) -> None:
    metadata = MetadataService(migrated_engine, BrokenNotifier())
    alice = metadata.authenticate(metadata.create_user("alice"), None)
    node, created = metadata.mkdir(alice, "/d", None, None, False)
    assert created and metadata.stat(alice, "/d").id == node.id
    assert metadata.changes(alice, 0, 10).cursor == 1
    assert "could not publish cursor 1" in caplog.text
