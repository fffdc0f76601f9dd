"""Concurrent writers on one drive serialize and lose nothing (SQLite file and PostgreSQL).

Two service instances with engines of their own stand for two API servers sharing the
database; eight threads commit to one file with stale bases and upload the blocks.
"""

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from backend.db import create_engine_for
from backend.metadata.service import MetadataService
from backend.metadata.types import BlockRef, CommitRequest, CommitResult, Principal
from backend.protocol.hashing import block_hash
from tests import postgres

database_url = postgres.database_url
postgres_server = postgres.postgres_server
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier
metadata = postgres.metadata

THREADS = 8
COMMITS = 20
PATH = "/shared/notes.txt"


def writer(service: MetadataService, who: Principal, worker: int) -> list[CommitResult]:
    """Commit COMMITS revisions, basing each on what this writer last saw, then upload."""
    results, base = [], None
    for n in range(COMMITS):
        h = block_hash(f"{worker}-{n}".encode())
        request = CommitRequest(PATH, base, 10, [BlockRef(h, 10)], commit_id=f"{worker}-{n}")
        result = service.commit(who, request)
        assert result.missing == [h]
        service.record_block(who, h, 10, 12)
        if not result.conflict:
            base = result.rev
        results.append(result)
    return results


def test_parallel_commits_to_one_file_lose_nothing(
    metadata: MetadataService,
    migrated_engine,
    database_url: str,
    notifier: postgres.RecordingNotifier,
) -> None:
    token = metadata.create_user("alice")
    second_engine = create_engine_for(database_url)
    try:
        services = [metadata, MetadataService(second_engine, notifier)]
        who = [s.authenticate(token, f"dev{i}") for i, s in enumerate(services)]
        barrier = threading.Barrier(THREADS, timeout=30)

        def run(worker: int) -> list[CommitResult]:
            barrier.wait()
            return writer(services[worker % 2], who[worker % 2], worker)

        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(run, worker) for worker in range(THREADS)]
            results = [r for f in futures for r in f.result(timeout=240)]
    finally:
        second_engine.dispose()
    alice = who[0]
    on_file = [r for r in results if not r.conflict]
    copies = [r for r in results if r.conflict]
    assert len(results) == THREADS * COMMITS and on_file and copies
    # Every commit that landed on the file got its own revision number, without holes.
    assert sorted(r.rev for r in on_file) == list(range(1, len(on_file) + 1))
    # Every conflict became a copy of its own, and every copy is there, complete.
    assert len({r.path for r in copies}) == len(copies)
    listing = {n.path: n for n in metadata.list_dir(alice, "/shared")}
    assert set(listing) == {PATH} | {r.path for r in copies}
    assert all(n.status == "uploaded" and n.size == 10 for n in listing.values())
    final = listing[PATH]
    assert final.rev == final.head_rev == len(on_file)
    history = metadata.history(alice, PATH, 1000)
    assert [r.rev for r in history] == list(range(len(on_file), 0, -1))
    assert all(r.status == "uploaded" for r in history)
    # The journal: cursors 1..N without gaps, one publish per cursor reached at most once.
    page = metadata.changes(alice, 0, 10_000)
    assert [c.cursor for c in page.entries] == list(range(1, len(page.entries) + 1))
    assert page.cursor == metadata.account(alice)["cursor"] and not page.has_more
    published = [cursor for _, cursor in notifier.published]
    assert max(published) == page.cursor
    assert all(count == 1 for count in Counter(published).values())
    assert metadata.account(alice)["bytes_received"] == THREADS * COMMITS * 10
