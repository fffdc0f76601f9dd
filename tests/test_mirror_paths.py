"""The mirror's server paths and kept rows stay right while folders are renamed, moved and
rolled back (every journaled operation names its path, and folder paths and node rows are
remembered between calls)."""

from pathlib import Path

import pytest

from cache.metadb import ROOT_INODE, MetaDB


@pytest.fixture
def db(tmp_path: Path):
    mirror = MetaDB(str(tmp_path / "metadata.db"))
    try:
        yield mirror
    finally:
        mirror.close()


def test_paths_follow_renames_moves_and_rollbacks(db: MetaDB) -> None:
    a = db.insert(ROOT_INODE, "a", "dir", 0o755)
    b = db.insert(a.inode, "b", "dir", 0o755)
    f = db.insert(b.inode, "f.txt", "file", 0o644)
    assert db.path(f.inode) == "/a/b/f.txt"
    assert db.path(ROOT_INODE) == "/"

    db.update(b.inode, name="c")
    assert db.path(f.inode) == "/a/c/f.txt"
    db.update(b.inode, parent=ROOT_INODE)
    assert db.path(f.inode) == "/c/f.txt"
    assert db.path(a.inode) == "/a"

    with pytest.raises(RuntimeError), db.transaction():
        db.update(b.inode, parent=a.inode, name="moved")
        assert db.path(f.inode) == "/a/moved/f.txt"
        raise RuntimeError("undo the move")
    assert db.path(f.inode) == "/c/f.txt"

    x = db.insert(ROOT_INODE, "x", "dir", 0o755)
    y = db.insert(x.inode, "y", "dir", 0o755)
    db.update(y.inode, parent=b.inode)  # a folder no path was asked of yet
    assert db.path(y.inode) == "/c/y"
    db.update(f.inode, name="g.txt")
    assert db.path(f.inode) == "/c/g.txt"

    db.update(b.inode, parent=None)
    with pytest.raises(LookupError):
        db.path(f.inode)


def test_kept_rows_follow_updates_deletes_and_rollbacks(db: MetaDB) -> None:
    """Rows read once are answered from memory afterwards: each answer is a fresh node, and
    what an update, a delete or a rolled-back transaction changed is read again."""
    f = db.insert(ROOT_INODE, "f.txt", "file", 0o644, xattrs={"user.k": "dg=="})
    seen = db.get(f.inode)
    seen.size, seen.xattrs["user.k"] = 99, "changed"
    again = db.get(f.inode)
    assert (again.size, again.xattrs) == (0, {"user.k": "dg=="})

    db.update(f.inode, size=5, xattrs={})
    assert (db.get(f.inode).size, db.get(f.inode).xattrs) == (5, {})

    with pytest.raises(RuntimeError), db.transaction():
        db.update(f.inode, size=7)
        assert db.get(f.inode).size == 7
        raise RuntimeError("undo the change")
    assert db.get(f.inode).size == 5

    assert [node.inode for node in db.children(ROOT_INODE)] == [f.inode]
    db.delete(f.inode)
    assert db.get(f.inode) is None
    assert db.is_ancestor(ROOT_INODE, f.inode) is False
