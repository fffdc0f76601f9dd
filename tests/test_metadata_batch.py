"""Batches of tree operations in the metadata service, on SQLite and PostgreSQL."""

import threading

import pytest

from backend.metadata import batch as batch_module
from backend.metadata.batch import Outcome
from backend.metadata.revisions import commit_in
from backend.metadata.service import MetadataService
from backend.metadata.tree import delete_in, mkdir_in
from backend.metadata.types import BatchOp, BlockRef, CommitRequest, Principal
from backend.protocol import errors
from backend.protocol.hashing import block_hash
from tests import postgres

database_url = postgres.database_url
postgres_server = postgres.postgres_server
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier
metadata = postgres.metadata
alice = postgres.alice


def render(outcome: Outcome) -> dict:
    if outcome.error is not None:
        return {"error": outcome.error.code}
    return {"body": {"ok": True}}


def mkdir(path: str) -> BatchOp:
    return BatchOp("mkdir", {"path": path, "mode": None, "mtime_ns": None, "parents": True})


def test_a_step_that_fails_after_journaling_is_undone_with_its_entries(
    metadata: MetadataService, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def journal_then_fail(tx, path, mode, mtime_ns, *_attrs):
        mkdir_in(tx, "/ghost", None, None, False)
        raise errors.NotFound("refused after a change")

    monkeypatch.setattr(batch_module, "setattr_in", journal_then_fail)
    before = metadata.current_cursor(alice.namespace_id)
    ops = [mkdir("/a"), BatchOp("setattr", {"path": "/a", "mode": 1, "mtime_ns": None})]
    answers = metadata.apply_batch(alice, [*ops, mkdir("/b")], render)
    assert answers == [{"body": {"ok": True}}, {"error": "not_found"}, {"body": {"ok": True}}]
    assert sorted(node.name for node in metadata.list_dir(alice, "/")) == ["a", "b"]
    page = metadata.changes(alice, before, 100)
    assert [c.cursor for c in page.entries] == [before + 1, before + 2]
    assert [c.node.path for c in page.entries] == ["/a", "/b"]
    assert metadata.current_cursor(alice.namespace_id) == before + 2


def test_concurrent_batches_of_one_drive_serialise(
    metadata: MetadataService, alice: Principal
) -> None:
    before = metadata.current_cursor(alice.namespace_id)
    failures: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for round_ in range(5):
                ops = [mkdir(f"/shared/{round_}/{i}") for i in range(10)]
                ops += [mkdir(f"/{name}/{round_}")]
                answers = metadata.apply_batch(alice, ops, render)
                assert all("body" in answer for answer in answers)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    page = metadata.changes(alice, before, 1000)
    cursors = [c.cursor for c in page.entries]
    assert cursors == list(range(before + 1, before + 1 + len(cursors)))
    created = [c.node.path for c in page.entries]
    assert len(created) == len(set(created))  # each folder created (journaled) once
    assert len(metadata.list_dir(alice, "/shared")) == 5


def op(kind: str, **args: object) -> BatchOp:
    return BatchOp(kind, args)


def commit(path: str, data: bytes, commit_id: str, base_rev: int | None = None) -> BatchOp:
    blocks = [BlockRef(block_hash(data), len(data))] if data else []
    request = CommitRequest(path, base_rev, len(data), blocks, commit_id=commit_id)
    return BatchOp("commit", {"request": request})


def detailed(outcome: Outcome) -> dict:
    if outcome.error is not None:
        return {"error": outcome.error.code}
    if outcome.op == "commit":
        return {"path": outcome.value.path, "rev": outcome.value.rev, "id": outcome.value.node.id}
    return {"ok": True}


def test_one_batch_sees_its_own_moves_deletions_and_undone_steps(
    metadata: MetadataService, alice: Principal
) -> None:
    """Names resolved earlier in a batch are looked up again correctly after the ops that
    change them: a move, an exchange, a deletion, a step undone by a refusal."""
    ops = [
        mkdir("/d"),
        commit("/d/a", b"one", "c1"),
        op("move", src="/d/a", dst="/d/b", mode="noreplace"),
        commit("/d/a", b"two", "c2"),  # the name is free again: a new file, no conflict
        mkdir("/e"),
        commit("/e/x", b"three", "c3"),
        op("move", src="/d/b", dst="/e/x", mode="exchange"),
        op("delete", path="/d/a", recursive=False),
        mkdir("/d/a/sub"),  # /d/a is gone: made again, as a folder
        op("setattr", path="/missing", mode=0o600, mtime_ns=None),  # refused, undone alone
        commit("/d/a/sub/f", b"four", "c4"),
        commit("/d/a/sub/f", b"five", "c4"),  # the same commit id: the first answer
        op("delete", path="/e", recursive=True),
        commit("/e/x", b"six", "c5"),  # made again in a folder made again
    ]
    answers = metadata.apply_batch(alice, ops, detailed)
    assert answers[9] == {"error": "not_found"}
    assert (answers[3]["path"], answers[3]["rev"]) == ("/d/a", 1)
    assert answers[3]["id"] != answers[1]["id"]
    assert answers[10] == answers[11]
    assert (answers[10]["path"], answers[10]["rev"]) == ("/d/a/sub/f", 1)
    assert (answers[13]["path"], answers[13]["rev"]) == ("/e/x", 1)
    assert sorted(n.name for n in metadata.list_dir(alice, "/")) == ["d", "e"]
    assert [n.name for n in metadata.list_dir(alice, "/d")] == ["a", "b"]
    assert metadata.stat(alice, "/d/b").id == answers[5]["id"]  # exchanged into /d
    assert metadata.stat(alice, "/e/x").id == answers[13]["id"]
    assert metadata.stat(alice, "/d/a").type == "dir"


def test_a_refused_step_drops_its_block_references(
    metadata: MetadataService, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """References are counted at the end of the transaction: an undone step's are not (the
    consistency check after the test compares every refcount with the block lists)."""
    data = b"shared block"

    def commit_then_fail(tx, path, mode, mtime_ns, *_attrs):
        request = CommitRequest("/ghost", None, len(data), [BlockRef(block_hash(data), len(data))])
        commit_in(tx, alice, ["ghost"], request, request.blocks, 10)
        raise errors.NotFound("refused after a commit")

    monkeypatch.setattr(batch_module, "setattr_in", commit_then_fail)
    ops = [commit("/kept", data, "k1"), op("setattr", path="/kept", mode=1, mtime_ns=None)]
    answers = metadata.apply_batch(alice, [*ops, commit("/also", data, "k2")], detailed)
    assert answers[1] == {"error": "not_found"}
    assert sorted(n.name for n in metadata.list_dir(alice, "/")) == ["also", "kept"]


def test_names_made_by_an_undone_step_are_gone_for_the_steps_after_it(
    metadata: MetadataService, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def mkdir_then_fail(tx, path, mode, mtime_ns, *_attrs):
        mkdir_in(tx, "/ghost", None, None, False)
        raise errors.NotFound("refused after a change")

    monkeypatch.setattr(batch_module, "setattr_in", mkdir_then_fail)
    ops = [mkdir("/a"), op("setattr", path="/a", mode=1, mtime_ns=None), mkdir("/ghost/sub")]
    answers = metadata.apply_batch(alice, ops, render)
    assert answers == [{"body": {"ok": True}}, {"error": "not_found"}, {"body": {"ok": True}}]
    assert [n.name for n in metadata.list_dir(alice, "/ghost")] == ["sub"]


def test_a_refused_step_that_only_inserted_rows_is_undone(
    metadata: MetadataService, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step whose only writes are plain INSERTs into a folder the batch made (no query
    at all) is undone too: its savepoint exists before its first write."""

    def mkdir_then_fail(tx, path, mode, mtime_ns, *_attrs):
        mkdir_in(tx, "/d/ghost", None, None, False)
        raise errors.NotFound("refused after a change")

    monkeypatch.setattr(batch_module, "setattr_in", mkdir_then_fail)
    before = metadata.current_cursor(alice.namespace_id)
    refused = op("setattr", path="/d", mode=1, mtime_ns=None)
    answers = metadata.apply_batch(alice, [mkdir("/d/x"), refused, mkdir("/d/y")], render)
    assert answers == [{"body": {"ok": True}}, {"error": "not_found"}, {"body": {"ok": True}}]
    assert [n.name for n in metadata.list_dir(alice, "/d")] == ["x", "y"]
    page = metadata.changes(alice, before, 100)
    assert [c.node.path for c in page.entries] == ["/d", "/d/x", "/d/y"]
    assert [c.cursor for c in page.entries] == [before + 1, before + 2, before + 3]


def test_deletions_undone_by_a_refusal_are_undone_for_the_steps_after_it(
    metadata: MetadataService, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removals are plain UPDATEs the session is only told of: a rolled back step must
    not leave its objects marked deleted, nor a folder's trash item holding its files."""

    held = []  # objects of the session someone still refers to after the rollback

    def delete_then_fail(tx, path, mode, mtime_ns, *_attrs):
        held.append(tx.lookup(["d", "f"]))
        delete_in(tx, "/d", True)
        raise errors.NotFound("refused after deleting")

    setup = [mkdir("/d/sub"), commit("/d/f", b"one", "c1"), commit("/d/sub/g", b"two", "c2")]
    metadata.apply_batch(alice, setup, detailed)
    monkeypatch.setattr(batch_module, "setattr_in", delete_then_fail)
    before = metadata.current_cursor(alice.namespace_id)
    ops = [
        op("delete", path="/d/sub/g", recursive=False),  # done, undone, done again
        op("delete", path="/d/sub", recursive=False),
        op("setattr", path="/d", mode=1, mtime_ns=None),  # refused after deleting /d
        op("move", src="/d/f", dst="/d/h", mode="noreplace"),
    ]
    answers = metadata.apply_batch(alice, ops, detailed)
    assert answers == [{"ok": True}, {"ok": True}, {"error": "not_found"}, {"ok": True}]
    assert [n.name for n in metadata.list_dir(alice, "/d")] == ["h"]
    page = metadata.changes(alice, before, 100)
    assert [(c.node.path, c.node.deleted) for c in page.entries] == [
        ("/d/sub/g", True),
        ("/d/sub", True),
        ("/d/h", False),
    ]
    assert [(item.path, item.files) for item in metadata.trash(alice)] == [("/d/sub", 1)]
