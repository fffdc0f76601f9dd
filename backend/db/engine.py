"""Opening the metadata database: engine settings, schema migration, sessions.

SQLite (the embedded default) gets:
- WAL, so readers never block the single writer and the writer never blocks readers;
- synchronous=FULL: in WAL mode NORMAL keeps the database consistent but may lose the last
  transactions on power loss, and a commit the API acknowledged must survive that (FULL
  syncs the WAL at every commit; one fsync per write transaction is the price);
- foreign_keys=ON (SQLite ignores foreign keys otherwise) and a busy timeout;
- BEGIN IMMEDIATE for write transactions, taken in arrival order within the process
  (backend/db/turnstile.py). pysqlite would begin lazily, at the first write,
  so two writers that both read first would deadlock-fail with "database is locked" when
  they upgrade; taking the write lock at BEGIN makes them queue instead. Sessions opened on
  `writer(engine)` ask for it; other sessions begin DEFERRED and only read.

PostgreSQL needs none of this: writers serialize per drive on the namespace row instead. Its
engine pings a pooled connection before lending it (`pool_pre_ping`), so connections to a
primary that died are replaced, through a multi-host URL, by ones to the new primary
(backend/db/failover.py, docs/architecture.md).
"""

import sqlite3
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.db.turnstile import Turnstile

SQLITE_BUSY_TIMEOUT_MS = 60_000
CONNECT_TIMEOUT_S = 5
_WRITE_OPTION = "cirrus_write"
_TURN = "cirrus_turn"  # connection.info: this connection's transaction holds the turnstile
_MIGRATION_LOCK = 0x43697272  # "Cirr": the advisory lock key of schema migrations
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def create_engine_for(url: str) -> Engine:
    """Create an engine for a database URL (sqlite:///path or postgresql+psycopg://...)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    # A host of a multi-host URL that does not answer (down, not refusing) must not hold a
    # connection attempt forever: libpq waits without limit unless told.
    connect_args = {} if "connect_timeout" in url else {"connect_timeout": CONNECT_TIMEOUT_S}
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args
    )


SQLITE_CACHE_KIB = 32 * 1024


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        # Autocommit at the driver level: SQLAlchemy's begin event below issues BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Takes effect on a new database only (before its first table): backend/db/reclaim.py
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # A page cache of 32 MiB (the default is 2 MiB): block hashes are random keys, and
        # inserting thousands of them into a cold B-tree otherwise reads a page per row.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    turnstile = Turnstile()

    @event.listens_for(engine, "begin")
    def on_begin(connection) -> None:
        if not connection.get_execution_options().get(_WRITE_OPTION, False):
            connection.exec_driver_sql("BEGIN")
            return
        turnstile.acquire()  # writers of this process take turns in order
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            turnstile.release()
            raise
        connection.info[_TURN] = True

    @event.listens_for(engine, "commit")
    def on_commit(connection) -> None:
        # SQLAlchemy tells of a commit before it makes it. Handed over then, the turn would
        # reach a writer whose BEGIN IMMEDIATE finds the lock still held by this commit's
        # fsync, and SQLite's busy handler sleeps up to 100 ms between tries. So commit
        # here (the driver's own commit that follows finds no transaction and does nothing).
        if connection.info.get(_TURN):
            try:
                connection.connection.dbapi_connection.commit()
            finally:
                on_end(connection)

    @event.listens_for(engine, "rollback")
    def on_end(connection) -> None:
        if connection.info.pop(_TURN, False):
            turnstile.release()


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """Put the database in WAL mode. Switching a new database takes its lock, and SQLite
    answers "database is locked" there without waiting the busy timeout, so servers starting
    together on one new database retry, for at most the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def writer(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take SQLite's write lock at BEGIN."""
    return engine.execution_options(**{_WRITE_OPTION: True})


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates it on an empty database).

    Migrations of independent features may branch from one parent; "heads" applies every
    branch, so they need no merge revision while they touch different tables and columns.
    Safe to run on every server start, by several servers at once: an up-to-date database
    is left alone, and concurrent starts take turns (SQLite's write lock, taken at BEGIN;
    a transaction-scoped advisory lock on PostgreSQL) so only the first one migrates.
    """
    config = alembic_config()
    with writer(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "heads")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for readers; objects stay usable after commit (expire_on_commit=False)."""
    return sessionmaker(engine, expire_on_commit=False)


def _dialect_insert(session: Session):
    """The INSERT construct with ON CONFLICT support of the session's database."""
    return sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert


def insert_ignore(session: Session, model: type, rows: list[dict]) -> None:
    """INSERT rows, skipping those whose key exists (races between drives are harmless).
    One statement executed for many rows on the session's connection: a multi-row VALUES
    built per call was compiled again for each new row count, and the ORM's bulk insert
    added its own work per row."""
    if rows:
        statement = _dialect_insert(session)(model.__table__).on_conflict_do_nothing()
        session.connection().execute(statement, rows)


def upsert(session: Session, model: type, row: dict, keys: list[str], update: list[str]) -> None:
    """INSERT the row, or UPDATE the `update` columns of the row with the same keys."""
    statement = _dialect_insert(session)(model).values(row)
    changes = {column: statement.excluded[column] for column in update}
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=changes))
