"""The mount's mirror schema: a cache made before POSIX attributes opens with them added."""

import sqlite3
from pathlib import Path

from cache.metadb import SUBFOLDER_COUNT, MetaDB

# The nodes table as the first release created it (before `modified` and the POSIX columns).
_OLD_NODES = """
CREATE TABLE nodes (
    inode INTEGER PRIMARY KEY AUTOINCREMENT, remote_id INTEGER UNIQUE, parent INTEGER,
    name TEXT NOT NULL, type TEXT NOT NULL, mode INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    rev INTEGER NOT NULL DEFAULT 0, head_rev INTEGER, target TEXT,
    xattrs TEXT NOT NULL DEFAULT '{}', dirty INTEGER NOT NULL DEFAULT 0,
    conflict INTEGER NOT NULL DEFAULT 0
);
INSERT INTO nodes (inode, parent, name, type, mode, mtime_ns, ctime_ns)
    VALUES (1, NULL, '', 'dir', 493, 5, 5), (2, 1, 'a', 'file', 420, 7, 7);
"""


def test_an_old_cache_gains_the_posix_columns(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    with sqlite3.connect(path) as old:
        old.executescript(_OLD_NODES)
    db = MetaDB(str(path))
    try:
        node = db.get(2)
        assert (node.name, node.uid, node.gid, node.atime_ns, node.rdev) == (
            "a",
            None,
            None,
            None,
            0,
        )
        assert (node.link_inode, node.modified, db.nlink(node)) == (None, False, 1)
        link = db.insert(1, "b", "hardlink", 420, link_inode=2)
        assert db.nlink(db.get(2)) == 2 and [n.inode for n in db.links(2)] == [link.inode]
    finally:
        db.close()
    MetaDB(str(path)).close()  # opening again changes nothing
    with sqlite3.connect(path) as raw:
        indexes = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    assert "nodes_subfolders" in indexes


def test_a_folders_link_count_reads_its_subfolders_only(tmp_path: Path) -> None:
    """The kernel asks for a folder's attributes after every change inside it: counting
    its subfolders through all its files made `rm` in a large folder quadratic."""
    path = tmp_path / "metadata.db"
    db = MetaDB(str(path))
    try:
        folder = db.insert(1, "big", "dir", 0o755)
        for number in range(50):
            db.insert(folder.inode, f"f{number}", "file", 0o644)
        for number in range(3):
            db.insert(folder.inode, f"d{number}", "dir", 0o755)
        assert db.nlink(db.get(folder.inode)) == 5
    finally:
        db.close()
    with sqlite3.connect(path) as raw:
        plan = raw.execute("EXPLAIN QUERY PLAN " + SUBFOLDER_COUNT, (folder.inode,)).fetchall()
    assert "nodes_subfolders" in str(plan)
