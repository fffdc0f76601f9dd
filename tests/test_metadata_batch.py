"""Batches of tree operations in the metadata service, on SQLite and PostgreSQL."""

import threading

import pytest

from backend.metadata import batch as batch_module
from backend.metadata.batch import Outcome
from backend.metadata.service import MetadataService
from backend.metadata.tree import mkdir_in
from backend.metadata.types import BatchOp, Principal
from backend.protocol import errors
from tests import postgres

database_url = postgres.database_url
postgres_server = postgres.postgres_server
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier
metadata = postgres.metadata


@pytest.fixture
def alice(metadata: MetadataService) -> Principal:
    return metadata.authenticate(metadata.create_user("alice"), "laptop")


def render(outcome: Outcome) -> dict:
    if outcome.error is not None:
        return {"error": outcome.error.code}
    return {"body": {"ok": True}}


def mkdir(path: str) -> BatchOp:
    return BatchOp("mkdir", {"path": path, "mode": None, "mtime_ns": None, "parents": True})


def test_a_step_that_fails_after_journaling_is_undone_with_its_entries(
    metadata: MetadataService, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def journal_then_fail(tx, path, mode, mtime_ns):
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
