"""Shares in the metadata service, on SQLite and PostgreSQL: batches cut per drive, the
recipient's journal and notifications, and the consistency check after each test."""

import threading

from backend.metadata.batch import Outcome
from backend.metadata.service import MetadataService
from backend.metadata.types import BatchOp, CommitRequest, Principal
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
    value = outcome.value
    node = value[0] if isinstance(value, tuple) else getattr(value, "node", value)
    return {"body": {"path": node.path, "conflict": getattr(value, "conflict", False)}}


def op(kind: str, **args: object) -> BatchOp:
    attrs = {"mode": None, "mtime_ns": None, "parents": True} if kind == "mkdir" else {}
    return BatchOp(kind, {**attrs, **args})


def empty_file(path: str) -> BatchOp:
    return BatchOp("commit", {"request": CommitRequest(path, None, 0, [])})


def test_a_batch_through_shares(
    metadata: MetadataService, alice: Principal, notifier: postgres.RecordingNotifier
) -> None:
    bob = metadata.authenticate(metadata.create_user("bob"), "phone")
    metadata.mkdir(alice, "/rw", None, None, False)
    metadata.mkdir(alice, "/ro", None, None, False)
    metadata.share(alice, "/rw", "bob", "write")
    metadata.share(alice, "/ro", "bob", "read")
    answers = metadata.apply_batch(bob, [
        op("mkdir", path="/mine"),
        op("mkdir", path="/rw/sub"),
        empty_file("/rw/sub/f.txt"),
        op("move", src="/rw/sub/f.txt", dst="/rw/g.txt", mode="noreplace"),
        op("move", src="/rw/g.txt", dst="/mine/g.txt", mode="noreplace"),
        op("mkdir", path="/ro/no"),
        empty_file("/mine/h.txt"),
    ], render)  # fmt: skip
    assert answers == [
        {"body": {"path": "/mine", "conflict": False}},
        {"body": {"path": "/rw/sub", "conflict": False}},
        {"body": {"path": "/rw/sub/f.txt", "conflict": False}},
        {"body": {"path": "/rw/g.txt", "conflict": False}},
        {"error": "cross_share_move"},
        {"error": "read_only_share"},
        {"body": {"path": "/mine/h.txt", "conflict": False}},
    ]
    assert [n.name for n in metadata.list_dir(alice, "/rw")] == ["g.txt", "sub"]
    bob_drive = metadata.account(bob)["namespace_id"]
    page = metadata.changes(bob, 0, 1000)
    assert [c.cursor for c in page.entries] == list(range(1, len(page.entries) + 1))
    assert {"/rw/sub", "/rw/g.txt", "/mine/h.txt"} <= {c.node.path for c in page.entries}
    assert (bob_drive, page.cursor) in notifier.published
    mount = metadata.stat(bob, "/rw")
    assert all(c.node.parent_id != metadata.stat(alice, "/rw").id for c in page.entries)
    assert metadata.stat(bob, "/rw/g.txt").parent_id == mount.id


def test_users_sharing_with_each_other_write_at_once(metadata: MetadataService) -> None:
    """Each write also journals in the other's drive: the two drives' locks are taken in
    one order, so concurrent writers never deadlock (PostgreSQL would fail one of them)."""
    alice = metadata.authenticate(metadata.create_user("ann"), "a")
    bob = metadata.authenticate(metadata.create_user("ben"), "b")
    for who, other in ((alice, "ben"), (bob, "ann")):
        metadata.mkdir(who, f"/by-{who.user_name}", None, None, False)
        metadata.share(who, f"/by-{who.user_name}", other, "write")
    failures: list[BaseException] = []

    def write(who: Principal) -> None:
        try:
            for number in range(40):
                metadata.mkdir(who, f"/by-{who.user_name}/{number}", None, None, False)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(who,)) for who in (alice, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert len(metadata.list_dir(alice, "/by-ben")) == 40
