"""Transactions of the metadata service, and the per-drive writer lock.

Every change runs in `Database.write(namespace_id)`: one transaction that first locks the
drive's namespace row, so writers of one drive queue up (SQLite takes its database-wide write
lock at BEGIN IMMEDIATE; PostgreSQL locks the row with SELECT ... FOR UPDATE). Holding that
lock, the transaction may allocate journal cursors without gaps or collisions. After the
commit, and only then, subscribers hear of the new cursor, so a client that reacts to the
notification always finds the change.

Database errors never leave this module as ORM exceptions: a constraint violation becomes
AlreadyExists, a value the database refuses becomes InvalidRequest.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from backend import clock
from backend.db.engine import insert_ignore, writer
from backend.db.models import DIR, ChangeEntry, Namespace, NamespaceBlock, Node
from backend.metadata.blockrefs import owned_sizes, write_references
from backend.metadata.nodes import Tree, format_path
from backend.metadata.share_feed import fan_out, recipients
from backend.metadata.sharing import GUEST
from backend.metadata.types import NodeInfo, Notifier
from backend.protocol.errors import AlreadyExists, InvalidRequest, NotADirectory, NotFound

log = logging.getLogger(__name__)

DEFAULT_DIR_MODE = 0o755
_INSERT_NODE = insert(Node.__table__).returning(Node.id)
_INSERT_CHANGES = insert(ChangeEntry.__table__)
# SET takes the columns the parameters name (`Txn.update_node`).
_UPDATE_NODE = update(Node.__table__).where(Node.__table__.c.id == bindparam("node_id"))


class Txn(Tree):
    """A write transaction on one drive: the tree plus the means to change and journal it.

    Change-journal entries and block reference counts are kept in memory and written
    together just before the transaction commits (`finish`): a few statements for a whole
    batch rather than some per operation. They commit with the changes they describe or not
    at all, and a savepoint that rolls back drops its own.
    """

    def __init__(self, session: Session, namespace: Namespace, author: str | None = None) -> None:
        super().__init__(session, namespace.id)
        self.namespace = namespace
        self.author = author  # who deletes, as the trash shows it (Principal.author)
        # What other modules look up once per transaction (the owner's quota ...).
        self.facts: dict[str, Any] = {}
        # The journal's cursor, written to the namespace row once at the end (`finish`):
        # an UPDATE of that row per operation was a flush of its own each time.
        self.cursor = namespace.cursor
        self.now_ns = clock.now_ns()
        self.connection = session.connection()  # for plain INSERTs that skip the ORM
        self._entries: list[dict] = []
        self._references: list[tuple[str, int, int]] = []
        self._owned: dict[str, int | None] = {}  # hash -> its size, None: not this drive's
        self._created: list[Node] = []
        # Nodes whose columns plain UPDATEs changed (`written`): a rolled back savepoint
        # must expire them, since the session never saw those changes.
        self._written: list[Node] = []
        # Commit ids a batch found unused when it began (revisions.note_unused_commit_ids).
        self.unused_commit_ids: set[str] = set()
        # Where each node moved in this transaction came from (id -> first parent id), and
        # other drives' journals written (shared folders: backend/metadata/sharing.py).
        self.left: dict[int, int | None] = {}
        self.published: list[tuple[int, int]] = []
        self.guest = GUEST.get()  # the drive of a recipient writing into a shared folder

    def journal(self, node: Node) -> NodeInfo:
        """Append the node's current snapshot to the change journal and return it."""
        info = self.info(node)
        self.journal_snapshot(node.id, info.to_json())
        return info

    def journal_snapshot(self, node_id: int, data: dict) -> None:
        """Append a node's snapshot, as NodeInfo.to_json() makes it, to the journal."""
        self.cursor += 1
        self._entries.append({
            "namespace_id": self.namespace_id,
            "cursor": self.cursor,
            "node_id": node_id,
            "node": data,
            "created": self.now_ns,
        })  # fmt: skip

    def displaced(self, node: Node) -> None:
        self.left.setdefault(node.id, node.parent_id)
        super().displaced(node)

    def owned(self, hashes: list[str]) -> dict[str, int]:
        """The hashes of `hashes` this drive has uploaded, with their real sizes, each asked
        of the database once per transaction: only record_blocks adds any, in a write
        transaction of its own."""
        unknown = [h for h in hashes if h not in self._owned]
        if unknown:
            found = owned_sizes(self.session, self.namespace_id, unknown)
            if self.guest is not None:
                found.update(self._adopt([h for h in unknown if h not in found]))
            self._owned.update((h, found.get(h)) for h in unknown)
        return {h: size for h in hashes if (size := self._owned[h]) is not None}

    def _adopt(self, hashes: list[str]) -> dict[str, int]:
        """Blocks a recipient writing into a shared folder of this drive uploaded: the
        owner holds them from now on (the recipient proved it has their bytes)."""
        found = owned_sizes(self.session, self.guest, hashes) if hashes else {}
        if found:
            rows = [{"namespace_id": self.namespace_id, "hash": h} for h in sorted(found)]
            insert_ignore(self.session, NamespaceBlock, rows)
        return found

    def refer(self, blocks: list[tuple[str, int]], sign: int) -> None:
        """Count one more (sign +1) or one less (-1) reference per listed (hash, size)."""
        self._references.extend((block_hash, size, sign) for block_hash, size in blocks)

    def finish(self) -> None:
        """Write what was kept for the end (the transaction is about to commit)."""
        if self._references:
            write_references(self, self._references)
            self._references = []
        if self._entries:
            fan_out(self, self._entries)
            self.connection.execute(_INSERT_CHANGES, self._entries)
            self._entries = []
            self.namespace.cursor = self.cursor

    def create(
        self,
        parent: Node,
        name: str,
        type: str,
        mode: int,
        mtime_ns: int | None,
        target: str | None = None,
        revision: tuple[int, int, int] = (0, 0, 0),
        attrs: dict | None = None,
        rdev: int = 0,
        link_id: int | None = None,
    ) -> Node:
        """A new live node, inserted at once (its id is needed for children and journal)
        with a plain INSERT, then handed to the session as a loaded, unchanged object: an
        ORM flush per created node cost more than the rest of a typical operation.
        `revision`: (head_rev, rev, size) of a file created with its first revision, so
        that no UPDATE follows the INSERT. `attrs`: the owner and times it is made with
        (backend.metadata.posix.ATTRS; the server's clock for absent times)."""
        head_rev, rev, size = revision
        attrs = attrs or {}
        mtime_ns = self.now_ns if mtime_ns is None else mtime_ns
        row = {
            "namespace_id": self.namespace_id,
            "parent_id": parent.id,
            "name": name,
            "type": type,
            "mode": mode,
            "mtime_ns": mtime_ns,
            "size": size,
            "rev": rev,
            "head_rev": head_rev,
            "target": target,
            "xattrs": {},
            "deleted": False,
            "uid": attrs.get("uid"),
            "gid": attrs.get("gid"),
            "atime_ns": attrs.get("atime_ns", mtime_ns),
            "ctime_ns": attrs.get("ctime_ns", self.now_ns),
            "rdev": rdev,
            "nlink": 1,
            "link_id": link_id,
        }
        self.session.flush()  # earlier changes (a name freed ...) reach the database first
        node = Node(id=self.connection.execute(_INSERT_NODE, row).scalar_one(), **row)
        make_transient_to_detached(node)
        self.session.add(node)
        self._created.append(node)
        self.placed(node, fresh=type == DIR)
        return node

    def make_dirs(self, parts: list[str]) -> Node:
        """The folder at parts, creating (and journaling) missing ones like mkdir -p."""
        node = self.root()
        for depth, name in enumerate(parts):
            found = self.child(node, name, parts[depth + 1 :])
            if found is None:
                found = self.create(node, name, DIR, DEFAULT_DIR_MODE, None)
                self.journal(found)
            elif found.type != DIR:
                raise NotADirectory(f"not a folder: {format_path(parts[: depth + 1])}")
            node = found
        return node

    @contextmanager
    def step(self) -> Iterator[None]:
        """Operations of a batch in one SAVEPOINT: when one fails, they are undone together
        (with their journal cursors and what was kept in memory) and the ones before stay."""
        cursor = self.cursor
        journaled, referred, created = len(self._entries), len(self._references), len(self._created)
        written = len(self._written)
        unused = set(self.unused_commit_ids)
        try:
            with _mapped_errors(), self.session.begin_nested():
                # The session emits SAVEPOINT only once it uses the connection itself: plain
                # INSERTs on `connection` alone would land outside the savepoint.
                self.session.connection()
                yield
        except BaseException:
            self.cursor = cursor
            self.unused_commit_ids = unused
            del self._entries[journaled:]
            del self._references[referred:]
            # Rows inserted without the ORM are gone; so must their objects be (SQLite may
            # give a later row the same id).
            for node in self._created[created:]:
                if node in self.session:
                    self.session.expunge(node)
            del self._created[created:]
            for node in self._written[written:]:
                if node in self.session:
                    self.session.expire(node)
            del self._written[written:]
            self.forget()
            raise

    def remove(self, node: Node, top: Node | None = None) -> NodeInfo:
        """Mark one node deleted (into the trash, with the deletion of `top` when it goes
        along with a deleted folder) and journal the removal."""
        self.displaced(node)
        self.update_node(node, deleted=True, deleted_at=self.now_ns, deleted_by=self.author,
                         trash_id=(top or node).id)  # fmt: skip
        return self.journal(node)

    def update_node(self, node: Node, **values: Any) -> None:
        """Write columns of a node with a plain UPDATE (an ORM flush per removed node cost
        more than the rest of a deletion) and tell the session."""
        self.connection.execute(_UPDATE_NODE, {"node_id": node.id, **values})
        self.written(node, **values)

    def written(self, node: Node, **values: Any) -> None:
        """Tell the session what a plain UPDATE just wrote to a node it holds."""
        for key, value in values.items():
            set_committed_value(node, key, value)
        self._written.append(node)

    def held(self, node_id: int) -> Node | None:
        """The session's object for a node id, if it holds one (no query)."""
        found = self.session.identity_map.get(identity_key(Node, node_id))
        return found if isinstance(found, Node) else None


class Database:
    """The engine, its writer twin and the notifier: what every operation needs."""

    def __init__(self, engine: Engine, notifier: Notifier) -> None:
        self.engine = engine
        self.write_engine = writer(engine)
        self.notifier = notifier

    @contextmanager
    def read(self) -> Iterator[Session]:
        with (
            Session(self.engine, expire_on_commit=False) as session,
            _mapped_errors(),
            session.begin(),
        ):
            yield session

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A write transaction that belongs to no drive yet (creating users)."""
        with (
            Session(self.write_engine, expire_on_commit=False) as session,
            _mapped_errors(),
            session.begin(),
        ):
            yield session

    @contextmanager
    def write(self, namespace_id: int, author: str | None = None) -> Iterator[Txn]:
        with Session(self.write_engine, expire_on_commit=False) as session:
            with _mapped_errors(), session.begin():
                # The drives of its shares' recipients too, whose journals it may write
                # (share_feed.fan_out): all in one order, so no two writers deadlock.
                locked = [namespace_id, *recipients(session, namespace_id)]
                query = (
                    select(Namespace)
                    .where(Namespace.id.in_(locked))
                    .order_by(Namespace.id)
                    .with_for_update()
                )
                namespace = next((n for n in session.scalars(query) if n.id == namespace_id), None)
                if namespace is None:
                    raise NotFound(f"no such drive: {namespace_id}")
                first_cursor = namespace.cursor
                tx = Txn(session, namespace, author)
                yield tx
                tx.finish()
            if tx.cursor != first_cursor:
                self._publish(namespace_id, tx.cursor)
            for other, cursor in tx.published:
                self._publish(other, cursor)

    def _publish(self, namespace_id: int, cursor: int) -> None:
        """Tell subscribers; the change is committed already, so a failing notifier must
        not turn it into an error (pollers still see the cursor at their next poll)."""
        try:
            self.notifier.publish(namespace_id, cursor)
        except Exception:
            log.exception("could not publish cursor %d of drive %d", cursor, namespace_id)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except IntegrityError as exc:
        raise AlreadyExists("the change collides with the current state of the drive") from exc
    except DataError as exc:
        raise InvalidRequest("a value is out of range for the database") from exc
