"""The sync engine settles a batch's answers in one commit of the mirror: the transactions
inside a group are savepoints (a failed one is undone alone), what must follow the commit
waits for it, and the group ends as soon as the settling task yields, before any other
task can see the mirror."""

from pathlib import Path

import pytest
import trio

from cache.metadb import ROOT_INODE, MetaDB
from mountfs.replay import _settled_together


def _names(path: Path) -> set[str]:
    """The root's children as a fresh connection finds them on the disk."""
    mirror = MetaDB(str(path))
    try:
        return {node.name for node in mirror.children(ROOT_INODE)}
    finally:
        mirror.close()


def test_a_group_commits_at_its_end_and_a_failed_step_alone_is_undone(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    db = MetaDB(str(path))
    with db.group():
        with db.transaction():
            db.insert(ROOT_INODE, "kept", "file", 0o644)
        with pytest.raises(RuntimeError), db.transaction():
            db.insert(ROOT_INODE, "undone", "file", 0o644)
            raise RuntimeError("this step fails")
        with db.transaction():
            db.insert(ROOT_INODE, "after", "file", 0o644)
        assert db.child(ROOT_INODE, "undone") is None
    db.close()
    assert _names(path) == {"kept", "after"}


def test_a_crash_inside_a_group_loses_the_group_only(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    db = MetaDB(str(path))
    with db.transaction():
        db.insert(ROOT_INODE, "before", "file", 0o644)
    with db.group():
        with db.transaction():
            db.insert(ROOT_INODE, "settled", "file", 0o644)
        db._db.close()  # the process dies before the group's commit
        db._grouped = False
    assert _names(path) == {"before"}


def test_what_follows_the_commit_waits_for_the_group(tmp_path: Path) -> None:
    db = MetaDB(str(tmp_path / "metadata.db"))
    done: list[str] = []
    db.after_commit(lambda: done.append("alone"))
    assert done == ["alone"]
    with db.group():
        with db.transaction():
            db.insert(ROOT_INODE, "f", "file", 0o644)
        db.after_commit(lambda: done.append("grouped"))
        assert done == ["alone"]
    assert done == ["alone", "grouped"]
    db.close()


def test_the_group_ends_when_the_settling_task_yields(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    db = MetaDB(str(path))
    seen: list[bool] = []
    answered = trio.Event()

    async def other_task() -> None:
        seen.append(db._db.in_transaction)  # a FUSE request arriving meanwhile
        with db.transaction():
            db.insert(ROOT_INODE, "request", "file", 0o644)
        answered.set()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with _settled_together(db):
                with db.transaction():
                    db.insert(ROOT_INODE, "first", "file", 0o644)
                assert db._db.in_transaction  # still grouped: nothing yielded yet
                nursery.start_soon(other_task)
                await answered.wait()  # a settle that waits for the server
                assert seen == [False]
                with db.transaction():
                    db.insert(ROOT_INODE, "second", "file", 0o644)
                assert not db._db.in_transaction

    trio.run(main)
    db.close()
    assert _names(path) == {"first", "request", "second"}


def test_a_failure_after_the_groups_commit_does_not_stop_the_settling(tmp_path: Path) -> None:
    """What waited for the commit fails when the task yields (trio then drops the
    instrument that ran it): the commit stands and the settling goes on."""
    path = tmp_path / "metadata.db"
    db = MetaDB(str(path))

    def fails() -> None:
        raise PermissionError("a dirty copy that cannot be removed")

    async def main() -> None:
        with _settled_together(db):
            with db.transaction():
                db.insert(ROOT_INODE, "settled", "file", 0o644)
            db.after_commit(fails)
            await trio.sleep(0)
            with db.transaction():
                db.insert(ROOT_INODE, "next", "file", 0o644)

    trio.run(main)
    db.close()
    assert _names(path) == {"settled", "next"}
