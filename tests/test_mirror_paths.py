"""The mirror's server paths stay right while folders are renamed, moved and rolled back
(every journaled operation names its path, and folder paths are remembered between calls)."""

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
