"""Large commits staged in bounded transactions, on SQLite and PostgreSQL: adopted whole,
completed by later uploads like any revision, and gone without a trace when refused (the
consistency check runs after each test).

The threshold is lowered for these tests (STAGE_ABOVE is read at each commit): a commit of
COUNT blocks is still staged in many STAGE_CHUNK transactions, and what it awaits is still
read back in more than one slice (revisions._AWAITED), at a quarter of the shipped size. On
PostgreSQL each staging transaction costs tens of milliseconds, so the shipped threshold
made one test here take a minute.
"""

import os
from collections.abc import Iterator
from dataclasses import replace

import pytest

from backend.metadata import revisions, staging
from backend.metadata.batch import Outcome
from backend.metadata.service import MetadataService
from backend.metadata.types import BatchOp, BlockRef, CommitRequest, Principal
from backend.protocol import errors
from tests import postgres

database_url = postgres.database_url
postgres_server = postgres.postgres_server
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier
metadata = postgres.metadata
alice = postgres.alice

STAGE_ABOVE = 4_100  # above one slice of revisions._AWAITED (4096 rows)
COUNT = STAGE_ABOVE + 1
SIZE = 10


@pytest.fixture(autouse=True)
def lower_threshold(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Commits of more than STAGE_ABOVE blocks are staged, in STAGE_CHUNK-block transactions;
    every test here stages at least once."""
    assert COUNT > 8 * staging.STAGE_CHUNK
    assert revisions._AWAITED.get_execution_options()["yield_per"] < COUNT
    monkeypatch.setattr(staging, "STAGE_ABOVE", STAGE_ABOVE)
    stage, staged = staging.stage, []

    def counted(*args, **kwargs) -> int:
        staged.append(len(args[2]))
        return stage(*args, **kwargs)

    monkeypatch.setattr(staging, "stage", counted)
    yield
    assert staged and min(staged) == COUNT


def _large(path: str) -> tuple[CommitRequest, list[str]]:
    hashes = [os.urandom(32).hex() for _ in range(COUNT)]
    blocks = [BlockRef(h, SIZE, i * SIZE) for i, h in enumerate(hashes)]
    return CommitRequest(path, None, SIZE * COUNT, blocks), hashes


def test_a_staged_commit_is_adopted_whole_and_completes(
    metadata: MetadataService, alice: Principal
) -> None:
    request, hashes = _large("/big")
    metadata.record_block(alice, hashes[0], SIZE, SIZE)  # one block held already
    result = metadata.commit(alice, request)
    assert result.status == "pending" and sorted(result.missing) == sorted(hashes[1:])
    for start in range(1, COUNT, 2000):
        metadata.record_blocks(alice, [(h, SIZE, SIZE) for h in hashes[start : start + 2000]])
    blocks = metadata.block_list(alice, "/big", None, None)
    assert blocks.size == SIZE * COUNT and [b.hash for b in blocks.blocks] == hashes


def test_a_refused_staged_commit_leaves_nothing(
    metadata: MetadataService, alice: Principal
) -> None:
    metadata.mkdir(alice, "/folder", None, None, False)
    request, _hashes = _large("/folder")
    with pytest.raises(errors.IsADirectory):
        metadata.commit(alice, request)
    held = os.urandom(32).hex()
    metadata.record_block(alice, held, 3, 3)
    request, _hashes = _large("/lies")
    request.blocks[-1] = BlockRef(held, SIZE, request.blocks[-1].offset)
    with pytest.raises(errors.BlockSizeMismatch):
        metadata.commit(alice, request)
    with pytest.raises(errors.NotFound):
        metadata.stat(alice, "/lies")


def _render(outcome: Outcome) -> dict:
    """The shape of the API's answers, with what a commit's answer carries."""
    if outcome.error is not None:
        return {"status": outcome.error.status, "error": {"code": outcome.error.code}}
    result = outcome.value
    return {"status": 201, "body": {"missing": result.missing, "status": result.status}}


def test_a_staged_commit_in_a_batch_lists_what_it_awaits(
    metadata: MetadataService, alice: Principal
) -> None:
    """The awaited hashes are read after the batch's write transaction (half a million of
    them held every writer of the server back), and still answer in full."""
    request, hashes = _large("/big")
    metadata.record_block(alice, hashes[0], SIZE, SIZE)
    refused = BatchOp("mkdir", {"path": "/big/under", "mode": None, "mtime_ns": None,
                                "parents": False, "attrs": {}})  # fmt: skip
    commit = BatchOp("commit", {"request": request})
    answers = metadata.apply_batch(alice, [commit, refused, commit], _render)
    assert answers[1]["status"] == 409
    for answer in (answers[0], answers[2]):  # the second lands beside it, a conflicted copy
        assert answer["body"]["status"] == "pending"
        assert sorted(answer["body"]["missing"]) == sorted(hashes[1:])


def test_a_staged_commit_sent_again_lists_what_it_still_awaits(
    metadata: MetadataService, alice: Principal
) -> None:
    request, hashes = _large("/again")
    request = replace(request, commit_id="c-1")
    assert len(metadata.commit(alice, request).missing) == COUNT
    for start in range(0, COUNT - 2, 2000):
        end = min(start + 2000, COUNT - 2)
        metadata.record_blocks(alice, [(h, SIZE, SIZE) for h in hashes[start:end]])
    again = metadata.commit(alice, request)
    assert again.status == "pending" and sorted(again.missing) == sorted(hashes[COUNT - 2 :])
    metadata.record_blocks(alice, [(h, SIZE, SIZE) for h in hashes[COUNT - 2 :]])
    done = metadata.commit(alice, request)
    assert done.status == "uploaded" and done.missing == []
