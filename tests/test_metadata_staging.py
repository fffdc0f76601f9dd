"""Large commits staged in bounded transactions, on SQLite and PostgreSQL: adopted whole,
completed by later uploads like any revision, and gone without a trace when refused (the
consistency check runs after each test)."""

import os

import pytest

from backend.metadata.service import MetadataService
from backend.metadata.staging import STAGE_ABOVE
from backend.metadata.types import BlockRef, CommitRequest, Principal
from backend.protocol import errors
from tests import postgres

database_url = postgres.database_url
postgres_server = postgres.postgres_server
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier
metadata = postgres.metadata
alice = postgres.alice

COUNT = STAGE_ABOVE + 1
SIZE = 10


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
    for start in range(1, COUNT, 8000):
        metadata.record_blocks(alice, [(h, SIZE, SIZE) for h in hashes[start : start + 8000]])
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
