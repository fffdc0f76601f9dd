"""The mount's local metadata mirror and its durable journal of pending operations.

Both live in ONE SQLite database in the cache directory so that a local change and the journal
entry that will replay it on the server commit in the same transaction: after a crash either
both exist or neither does. Commits are synchronous=NORMAL (in WAL mode: atomic and ordered, they
survive a crash of the mount but not necessarily a power loss); what must survive a power loss
(acknowledgements of close/fsync) is made durable by `sync`, one fsync of the WAL that covers
every commit before it. The mount answers every metadata request from here,
without a network round trip, and keeps working offline.

Schema (every column's special values):

    nodes       one row per local inode; inode 1 is the root (pyfuse3.ROOT_INODE).
      inode     local inode number, never reused (AUTOINCREMENT), so the kernel never confuses
                a new file with a forgotten one.
      remote_id the server's node id; NULL until the server has the node (its creation is
                still in the journal).
      parent    parent inode; NULL for the root and for a *detached* node: unlinked or
                replaced while the kernel still knows it (deleted in forget).
      name      the node's name in its parent ('' for the root).
      type      'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chr' | 'blk', or
                'hardlink': a second name of the file `link_inode` (the kernel sees that
                inode; this row only holds the name and its server node id).
      mode      permission bits with setuid/setgid/sticky (0o7777); the type is in `type`.
      uid, gid  owner and group by numeric id; NULL: the mounting user's (nodes made
                through the HTTP API).
      atime_ns  last access (relatime: reads update it once after each change, or daily).
      rdev      device number of 'chr' and 'blk' nodes, else 0.
      size      bytes of the content the mount shows (the dirty file's when dirty).
      rev       the server revision the content comes from; 0 = no uploaded revision (empty).
      head_rev  newest server revision known, the base_rev of the next commit; NULL when the
                server has no revision of this file from us (the next commit creates it).
      target    the text of a symlink, else NULL.
      xattrs    JSON object: `user.` name -> base64 value.
      dirty     1 while the content lives in the local dirty file cache/dirty/<inode>; such a
                file is never evicted and is what the uploader reads.
      conflict  1 after a commit of ours became a conflicted copy on the server.
      modified  1 while the dirty file holds changes made since the last acknowledgement
                (close/fsync) or since it was made; set once per write cycle, not per write.
                After a crash such a file is put back to its acknowledged state (docs/client.md).
    blocklists  (remote_id, rev) -> JSON [[offset, size, hash], ...]: the block list a read of
                that revision uses; revisions are immutable so entries never go stale.
    journal     pending operations in replay order (seq). `inode` is the node the entry is
                about, `other` a second one (the replaced target of a rename); `args` is JSON
                with the server paths as they were when the operation happened.
    state       key/value: `cursor` (last change applied), `client_id` (random, per cache).
"""

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

ROOT_INODE = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    inode     INTEGER PRIMARY KEY AUTOINCREMENT,
    remote_id INTEGER UNIQUE,
    parent    INTEGER,
    name      TEXT NOT NULL,
    type      TEXT NOT NULL,
    mode      INTEGER NOT NULL,
    size      INTEGER NOT NULL DEFAULT 0,
    mtime_ns  INTEGER NOT NULL,
    ctime_ns  INTEGER NOT NULL,
    rev       INTEGER NOT NULL DEFAULT 0,
    head_rev  INTEGER,
    target    TEXT,
    xattrs    TEXT NOT NULL DEFAULT '{}',
    dirty     INTEGER NOT NULL DEFAULT 0,
    conflict  INTEGER NOT NULL DEFAULT 0,
    modified  INTEGER NOT NULL DEFAULT 0,
    uid       INTEGER,
    gid       INTEGER,
    atime_ns  INTEGER,
    rdev      INTEGER NOT NULL DEFAULT 0,
    link_inode INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS nodes_by_name ON nodes(parent, name) WHERE parent IS NOT NULL;
CREATE TABLE IF NOT EXISTS blocklists (
    remote_id INTEGER NOT NULL,
    rev       INTEGER NOT NULL,
    blocks    TEXT NOT NULL,
    PRIMARY KEY (remote_id, rev)
);
CREATE TABLE IF NOT EXISTS journal (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    op    TEXT NOT NULL,
    inode INTEGER NOT NULL,
    other INTEGER,
    args  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_by_inode ON journal(inode);
CREATE INDEX IF NOT EXISTS journal_by_other ON journal(other) WHERE other IS NOT NULL;
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Created after the columns they index exist (an older cache gets them in _migrate first).
_INDEXES = """
CREATE INDEX IF NOT EXISTS nodes_by_link ON nodes(link_inode) WHERE link_inode IS NOT NULL;
CREATE INDEX IF NOT EXISTS nodes_subfolders ON nodes(parent) WHERE type = 'dir';
"""
# A folder's link count; `nodes_subfolders` answers it without reading its files.
SUBFOLDER_COUNT = "SELECT COUNT(*) FROM nodes WHERE parent = ? AND type = 'dir'"
# Columns added since the first schema: (name, definition), in the order they were added.
_ADDED_COLUMNS = (
    ("modified", "INTEGER NOT NULL DEFAULT 0"),
    ("uid", "INTEGER"),
    ("gid", "INTEGER"),
    ("atime_ns", "INTEGER"),
    ("rdev", "INTEGER NOT NULL DEFAULT 0"),
    ("link_inode", "INTEGER"),
)

# Rows kept by `MetaDB.get` (about 200 bytes each); all are dropped when it is full.
_ROWS_KEPT = 50_000

_NODE_COLUMNS = (
    "inode, remote_id, parent, name, type, mode, size, mtime_ns, ctime_ns, rev, head_rev, "
    "target, xattrs, dirty, conflict, modified, uid, gid, atime_ns, rdev, link_inode"
)
# Positions in a row of _NODE_COLUMNS that path walks read without making a Node.
_PARENT, _NAME, _TYPE = 2, 3, 4


@dataclass(slots=True)
class Node:
    inode: int
    remote_id: int | None
    parent: int | None
    name: str
    type: str
    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    rev: int
    head_rev: int | None
    target: str | None
    xattrs: dict[str, str] = field(default_factory=dict)
    dirty: bool = False
    conflict: bool = False
    modified: bool = False
    uid: int | None = None
    gid: int | None = None
    atime_ns: int | None = None
    rdev: int = 0
    link_inode: int | None = None

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def is_link(self) -> bool:
        """A second name of a file (a hard link): `link_inode` is the file."""
        return self.type == "hardlink"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    op: str
    inode: int
    other: int | None
    args: dict[str, Any]


def _node(row: tuple) -> Node:
    values = list(row)
    values[12] = json.loads(values[12]) if values[12] != "{}" else {}
    values[13] = bool(values[13])
    values[14] = bool(values[14])
    values[15] = bool(values[15])
    return Node(*values)


class MetaDB:
    """The mirror and journal; every method is synchronous and short (local disk only)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # The mount is the only user of its cache (a lock file says so: mountfs/daemon.py),
        # so the database lock is taken once and kept, not taken and dropped with fcntl()
        # calls in every transaction; the WAL index then lives in memory, not in a -shm file.
        self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._path = path
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._db.executescript(_INDEXES)
        self._depth = 0
        self._grouped = False  # a `group` is open: its transactions are savepoints
        self._after_group: list[Callable[[], object]] = []
        self._folder_paths: dict[int, str] = {ROOT_INODE: "/"}
        # Rows by inode as last read: a request reads its node several times (attributes
        # before and after a change, its parent, the path), and the mount is the only writer.
        self._rows: dict[int, tuple] = {}
        # Whether any hard link was ever known: until then a file's link count needs no query.
        query = "SELECT 1 FROM nodes WHERE link_inode IS NOT NULL LIMIT 1"
        self._hard_links = self._db.execute(query).fetchone() is not None
        if self.get(ROOT_INODE) is None:
            now = time.time_ns()
            self._db.execute(
                "INSERT INTO nodes (inode, parent, name, type, mode, mtime_ns, ctime_ns) "
                "VALUES (?, NULL, '', 'dir', ?, ?, ?)",
                (ROOT_INODE, 0o755, now, now),
            )
        if self.get_state("client_id") is None:
            self.set_state("client_id", uuid.uuid4().hex)

    def _migrate(self) -> None:
        """Bring a cache made by an older version up to the current schema (nodes it knew
        get no owner: they show as the mounting user's, as before)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(nodes)")}
        for name, definition in _ADDED_COLUMNS:
            if name not in columns:
                self._db.execute(f"ALTER TABLE nodes ADD COLUMN {name} {definition}")

    def close(self) -> None:
        self._db.close()

    def sync(self) -> None:
        """Make every commit so far durable (blocking: run it in a worker thread). In WAL mode
        a commit is in the WAL file, or already checkpointed into the database (which the
        checkpoint synced), so one fsync of the WAL is enough."""
        for suffix in ("-wal", ""):
            try:
                fd = os.open(self._path + suffix, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return

    def commits(self) -> int:
        """A counter that moves with every change committed (to tell whether a sync is due)."""
        return self._db.total_changes

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group changes so they reach the disk together (nested uses join the outer one;
        directly inside a `group`, a transaction is a savepoint of it)."""
        if self._depth == 1 and self._grouped:
            yield from self._savepoint()
            return
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._rollback("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    def _savepoint(self) -> Iterator[None]:
        self._db.execute("SAVEPOINT step")
        self._depth = 2
        try:
            yield
        except BaseException:
            self._rollback("ROLLBACK TO step")
            raise
        finally:
            self._db.execute("RELEASE step")
            self._depth = 1

    def _rollback(self, statement: str) -> None:
        self._db.execute(statement)
        self._forget_paths()
        self._rows.clear()

    @contextmanager
    def group(self) -> Iterator[None]:
        """Commit the transactions made inside once, at the end (or at `end_group`): each
        is a savepoint that a failure rolls back alone. For bookkeeping that a crash may
        lose (it is redone): the sync engine settling a batch's answers, not a change a
        FUSE request acknowledges. Whoever opens a group ends it before anything else can
        use the mirror (mountfs/replay.py ends it when its task yields)."""
        if self._depth:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth, self._grouped = 1, True
        try:
            yield
        finally:
            self.end_group()

    def end_group(self) -> None:
        """Commit an open group now, then run what waited for it (`after_commit`)."""
        if not self._grouped or self._depth != 1:
            return
        self._grouped, self._depth = False, 0
        waiting, self._after_group = self._after_group, []
        try:
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._rollback("ROLLBACK")
            raise
        for action in waiting:
            action()

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run `action` once what was changed so far is committed: at once outside a group
        (call it after the transaction), else when the group commits. For what must follow
        the commit on the disk (dropping a dirty copy the mirror no longer needs)."""
        if self._grouped:
            self._after_group.append(action)
        else:
            action()

    # -- nodes --------------------------------------------------------------------------------

    def _select(self, where: str, params: tuple) -> tuple | None:
        """The one row matching `where`, read from the database and kept."""
        row = self._db.execute(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE {where}", params
        ).fetchone()
        return None if row is None else self._keep(row)

    def _one(self, where: str, params: tuple) -> Node | None:
        row = self._select(where, params)
        return None if row is None else _node(row)

    def _keep(self, row: tuple) -> tuple:
        if len(self._rows) >= _ROWS_KEPT:
            self._rows.clear()
        self._rows[row[0]] = row
        return row

    def _row(self, inode: int) -> tuple | None:
        row = self._rows.get(inode)
        return self._select("inode = ?", (inode,)) if row is None else row

    def get(self, inode: int) -> Node | None:
        """The node (a fresh object: changing it changes nothing else)."""
        row = self._row(inode)
        return None if row is None else _node(row)

    def with_xattr(self, name: str) -> list[Node]:
        """The nodes carrying an extended attribute (a text search, then an exact check)."""
        rows = self._db.execute(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE xattrs LIKE ?", (f'%"{name}"%',)
        ).fetchall()
        return [node for node in map(_node, rows) if name in node.xattrs]

    def by_remote(self, remote_id: int) -> Node | None:
        return self._one("remote_id = ?", (remote_id,))

    def child(self, parent: int, name: str) -> Node | None:
        return self._one("parent = ? AND name = ?", (parent, name))

    def children(self, parent: int, after_inode: int = 0, limit: int = 1000) -> list[Node]:
        """Children in inode order: a stable position for readdir across concurrent changes."""
        rows = self._db.execute(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE parent = ? AND inode > ? "
            "ORDER BY inode LIMIT ?",
            (parent, after_inode, limit),
        )
        return [_node(self._keep(row)) for row in rows]

    def has_children(self, parent: int) -> bool:
        row = self._db.execute("SELECT 1 FROM nodes WHERE parent = ? LIMIT 1", (parent,))
        return row.fetchone() is not None

    def insert(self, parent: int, name: str, type: str, mode: int, **fields: Any) -> Node:
        now = time.time_ns()
        values = {"mtime_ns": now, "ctime_ns": now, **fields}
        self._hard_links |= values.get("link_inode") is not None
        if "xattrs" in values:
            values["xattrs"] = json.dumps(values["xattrs"])
        columns = ["parent", "name", "type", "mode", *values]
        cursor = self._db.execute(
            f"INSERT INTO nodes ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            (parent, name, type, mode, *values.values()),
        )
        node = self.get(cursor.lastrowid)
        assert node is not None
        return node

    def update(self, inode: int, **fields: Any) -> None:
        if ("parent" in fields or "name" in fields) and inode in self._folder_paths:
            self._forget_paths()  # a folder whose path is not known has none known below it
        if "xattrs" in fields:
            fields["xattrs"] = json.dumps(fields["xattrs"])
        self._hard_links |= fields.get("link_inode") is not None
        self._rows.pop(inode, None)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(
            f"UPDATE nodes SET {assignments} WHERE inode = ?", (*fields.values(), inode)
        )

    def delete(self, inode: int) -> None:
        self._folder_paths.pop(inode, None)
        self._rows.pop(inode, None)
        self._db.execute("DELETE FROM nodes WHERE inode = ?", (inode,))

    def _forget_paths(self) -> None:
        """A move or rename of a known folder, or a rollback, may change any known path (a
        folder's path is only known together with its parents')."""
        self._folder_paths = {ROOT_INODE: "/"}

    def detached(self) -> list[int]:
        rows = self._db.execute("SELECT inode FROM nodes WHERE parent IS NULL AND inode != ?", (1,))
        return [row[0] for row in rows]

    def dirty_inodes(self) -> list[int]:
        return [row[0] for row in self._db.execute("SELECT inode FROM nodes WHERE dirty = 1")]

    def inodes_with_local_content(self) -> set[int]:
        """The inodes whose dirty copy is read: dirty ones, and any with an upload pending."""
        query = (
            "SELECT inode FROM nodes WHERE dirty = 1 "
            "UNION SELECT inode FROM journal WHERE op = 'upload'"
        )
        return {row[0] for row in self._db.execute(query)}

    def path(self, inode: int) -> str:
        """The server path of an attached node (walks up the parents to a folder whose path
        is known: every journaled operation names its path, and trees are deep)."""
        chain: list[tuple[int, str, bool]] = []
        current = inode
        while (known := self._folder_paths.get(current)) is None:
            row = self._row(current)
            if row is None or row[_PARENT] is None:
                raise LookupError(f"inode {inode} is not attached to the tree")
            chain.append((current, row[_NAME], row[_TYPE] == "dir"))
            current = row[_PARENT]
        path = known
        for current, name, is_dir in reversed(chain):
            path = f"{path.rstrip('/')}/{name}"
            if is_dir:
                self._folder_paths[current] = path
        return path

    def at_path(self, path: str) -> Node | None:
        """The attached node at a server path, if the mirror has one."""
        node = self.get(ROOT_INODE)
        for name in [part for part in path.split("/") if part]:
            if node is None:
                return None
            node = self.child(node.inode, name)
        return node

    def is_ancestor(self, ancestor: int, inode: int) -> bool:
        """True when `ancestor` is `inode` or one of its parents."""
        current: int | None = inode
        while current is not None:
            if current == ancestor:
                return True
            row = self._row(current)
            current = None if row is None else row[_PARENT]
        return False

    def attached_remote_ids(self) -> list[int]:
        """The server ids of the nodes in the tree (the root and detached nodes excluded)."""
        query = "SELECT remote_id FROM nodes WHERE parent IS NOT NULL AND remote_id IS NOT NULL"
        return [row[0] for row in self._db.execute(query)]

    def nlink(self, node: Node) -> int:
        """Names of a node: a file's own and its hard links (0 once unlinked); a folder's
        `.`, its name and each subfolder's `..` (counted in `nodes_subfolders`, so a
        folder of many files costs no more than an empty one: the kernel asks again after
        every change inside it)."""
        if node.is_dir:
            return 2 + self._db.execute(SUBFOLDER_COUNT, (node.inode,)).fetchone()[0]
        if not self._hard_links:
            return int(node.parent is not None)
        links = self._db.execute(
            "SELECT COUNT(*) FROM nodes WHERE link_inode = ? AND parent IS NOT NULL",
            (node.inode,),
        ).fetchone()[0]
        return links + (node.parent is not None)

    def links(self, inode: int) -> list[Node]:
        """The attached hard links of a file, in the order the server promotes them (by its
        node id, then those it does not know yet)."""
        if not self._hard_links:
            return []
        rows = self._db.execute(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE link_inode = ? AND parent IS NOT NULL "
            "ORDER BY remote_id IS NULL, remote_id, inode",
            (inode,),
        )
        return [_node(row) for row in rows]

    def totals(self) -> tuple[int, int]:
        """(node count, total file bytes), for statfs."""
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM nodes").fetchone()
        return row[0], row[1]

    # -- block lists --------------------------------------------------------------------------

    def blocklist(self, remote_id: int, rev: int) -> list[tuple[int, int, str]] | None:
        row = self._db.execute(
            "SELECT blocks FROM blocklists WHERE remote_id = ? AND rev = ?", (remote_id, rev)
        ).fetchone()
        return None if row is None else [tuple(item) for item in json.loads(row[0])]

    def put_blocklist(self, remote_id: int, rev: int, blocks: list[tuple[int, int, str]]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO blocklists (remote_id, rev, blocks) VALUES (?, ?, ?)",
            (remote_id, rev, json.dumps(blocks)),
        )

    # -- journal ------------------------------------------------------------------------------

    def append(self, op: str, inode: int, args: dict[str, Any], other: int | None = None) -> int:
        cursor = self._db.execute(
            "INSERT INTO journal (op, inode, other, args) VALUES (?, ?, ?, ?)",
            (op, inode, other, json.dumps(args)),
        )
        return cursor.lastrowid

    def first_entry(self) -> JournalEntry | None:
        row = self._db.execute(
            "SELECT seq, op, inode, other, args FROM journal ORDER BY seq LIMIT 1"
        ).fetchone()
        return None if row is None else JournalEntry(*row[:4], json.loads(row[4]))

    def first_entries(self, limit: int) -> list[JournalEntry]:
        rows = self._db.execute(
            "SELECT seq, op, inode, other, args FROM journal ORDER BY seq LIMIT ?", (limit,)
        )
        return [JournalEntry(*row[:4], json.loads(row[4])) for row in rows]

    def next_entry_for(self, inode: int, after_seq: int) -> JournalEntry | None:
        row = self._db.execute(
            "SELECT seq, op, inode, other, args FROM journal WHERE (inode = ? OR other = ?) "
            "AND seq > ? ORDER BY seq LIMIT 1",
            (inode, inode, after_seq),
        ).fetchone()
        return None if row is None else JournalEntry(*row[:4], json.loads(row[4]))

    def set_entry_args(self, seq: int, args: dict[str, Any]) -> None:
        self._db.execute("UPDATE journal SET args = ? WHERE seq = ?", (json.dumps(args), seq))

    def remove_entry(self, seq: int) -> None:
        self._db.execute("DELETE FROM journal WHERE seq = ?", (seq,))

    def has_pending_upload(self, inode: int) -> bool:
        """Whether acknowledged content of `inode` is still waiting to be uploaded."""
        row = self._db.execute(
            "SELECT 1 FROM journal WHERE inode = ? AND op = 'upload' LIMIT 1", (inode,)
        )
        return row.fetchone() is not None

    def has_pending(self, inode: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM journal WHERE inode = ? OR other = ? LIMIT 1", (inode, inode)
        )
        return row.fetchone() is not None

    def journal_length(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM journal").fetchone()[0]

    def pending_uploads(self) -> tuple[int, int]:
        """(files, bytes) whose content is still waiting to be uploaded, for `cirrus status`."""
        return self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM nodes "
            "WHERE inode IN (SELECT inode FROM journal WHERE op = 'upload')"
        ).fetchone()

    def conflicted(self) -> list[int]:
        """Attached nodes that a commit of ours turned into conflicted copies."""
        rows = self._db.execute("SELECT inode FROM nodes WHERE conflict = 1 AND parent IS NOT NULL")
        return [row[0] for row in rows]

    # -- state --------------------------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_state(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))


def open_metadb(cache_dir: str) -> MetaDB:
    os.makedirs(cache_dir, exist_ok=True)
    return MetaDB(os.path.join(cache_dir, "metadata.db"))
