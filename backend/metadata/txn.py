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
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from backend.db.engine import writer
from backend.db.models import DIR, ChangeEntry, Namespace, Node
from backend.metadata.nodes import Tree, format_path
from backend.metadata.types import NodeInfo, Notifier
from backend.protocol.errors import AlreadyExists, InvalidRequest, NotADirectory, NotFound

log = logging.getLogger(__name__)

DEFAULT_DIR_MODE = 0o755
_INSERT_BATCH = 500


class Txn(Tree):
    """A write transaction on one drive: the tree plus the means to change and journal it."""

    def __init__(self, session: Session, namespace: Namespace) -> None:
        super().__init__(session, namespace.id)
        self.namespace = namespace
        self.now_ns = time.time_ns()

    def journal(self, node: Node) -> NodeInfo:
        """Append the node's current snapshot to the change journal and return it."""
        self.session.flush()
        info = self.info(node)
        self.namespace.cursor += 1
        entry = ChangeEntry(
            namespace_id=self.namespace_id,
            cursor=self.namespace.cursor,
            node_id=node.id,
            node=info.to_json(),
        )
        self.session.add(entry)
        return info

    def create(
        self,
        parent: Node,
        name: str,
        type: str,
        mode: int,
        mtime_ns: int | None,
        target: str | None = None,
    ) -> Node:
        node = Node(
            namespace_id=self.namespace_id,
            parent_id=parent.id,
            name=name,
            type=type,
            mode=mode,
            mtime_ns=self.now_ns if mtime_ns is None else mtime_ns,
            size=0,
            rev=0,
            head_rev=0,
            target=target,
            xattrs={},
            deleted=False,
        )
        self.session.add(node)
        self.session.flush()
        return node

    def make_dirs(self, parts: list[str]) -> Node:
        """The folder at parts, creating (and journaling) missing ones like mkdir -p."""
        node = self.root()
        for depth, name in enumerate(parts):
            found = self.child(node, name)
            if found is None:
                found = self.create(node, name, DIR, DEFAULT_DIR_MODE, None)
                self.journal(found)
            elif found.type != DIR:
                raise NotADirectory(f"not a folder: {format_path(parts[: depth + 1])}")
            node = found
        return node

    @contextmanager
    def step(self) -> Iterator[None]:
        """One operation of a batch, in a SAVEPOINT: when it fails, it alone is undone
        (its journal cursors too) and the operations before it stay."""
        cursor = self.namespace.cursor
        try:
            with _mapped_errors(), self.session.begin_nested():
                yield
        except BaseException:
            self.namespace.cursor = cursor
            self.forget_paths()
            raise

    def remove(self, node: Node) -> NodeInfo:
        """Mark one node deleted and journal the removal."""
        node.deleted = True
        self.session.flush()
        return self.journal(node)


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
    def write(self, namespace_id: int) -> Iterator[Txn]:
        with Session(self.write_engine, expire_on_commit=False) as session:
            with _mapped_errors(), session.begin():
                query = select(Namespace).where(Namespace.id == namespace_id).with_for_update()
                namespace = session.scalars(query).one_or_none()
                if namespace is None:
                    raise NotFound(f"no such drive: {namespace_id}")
                first_cursor = namespace.cursor
                yield Txn(session, namespace)
            if namespace.cursor != first_cursor:
                self._publish(namespace_id, namespace.cursor)

    def _publish(self, namespace_id: int, cursor: int) -> None:
        """Tell subscribers; the change is committed already, so a failing notifier must
        not turn it into an error (pollers still see the cursor at their next poll)."""
        try:
            self.notifier.publish(namespace_id, cursor)
        except Exception:
            log.exception("could not publish cursor %d of drive %d", cursor, namespace_id)


def _dialect_insert(session: Session):
    """The INSERT construct with ON CONFLICT support of the session's database."""
    return sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert


def insert_ignore(session: Session, model: type, rows: list[dict]) -> None:
    """INSERT rows, skipping those whose key exists (races between drives are harmless)."""
    insert = _dialect_insert(session)
    for start in range(0, len(rows), _INSERT_BATCH):
        batch = rows[start : start + _INSERT_BATCH]
        session.execute(insert(model).values(batch).on_conflict_do_nothing())


def upsert(session: Session, model: type, row: dict, keys: list[str], update: list[str]) -> None:
    """INSERT the row, or UPDATE the `update` columns of the row with the same keys."""
    statement = _dialect_insert(session)(model).values(row)
    changes = {column: statement.excluded[column] for column in update}
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=changes))


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except IntegrityError as exc:
        raise AlreadyExists("the change collides with the current state of the drive") from exc
    except DataError as exc:
        raise InvalidRequest("a value is out of range for the database") from exc
