"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

import threading
from concurrent.futures import ThreadPoolExecutor

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from backend.db import create_engine_for, migrate
from backend.db.models import Base
from tests import postgres

# Fixtures: a database per test, on SQLite and on PostgreSQL.
database_url = postgres.database_url
postgres_server = postgres.postgres_server


def test_migrate_creates_the_model_schema_and_is_idempotent(database_url: str) -> None:
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        migrate(engine)  # a second server start changes nothing
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            tables = set(inspect(conn).get_table_names())
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert set(Base.metadata.tables) <= tables
        assert version == "0004"
    finally:
        engine.dispose()


def test_sqlite_connections_are_durable_and_enforce_foreign_keys(tmp_path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with engine.connect() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragmas["journal_mode"] == "wal"
        assert pragmas["synchronous"] == 2  # FULL
        assert pragmas["foreign_keys"] == 1
        assert pragmas["busy_timeout"] > 0
    finally:
        engine.dispose()


def test_servers_starting_together_migrate_once(database_url: str) -> None:
    engines = [create_engine_for(database_url) for _ in range(4)]
    try:
        barrier = threading.Barrier(len(engines), timeout=30)

        def start(engine) -> None:
            barrier.wait()
            migrate(engine)

        with ThreadPoolExecutor(len(engines)) as pool:
            for future in [pool.submit(start, engine) for engine in engines]:
                future.result(timeout=120)
        with engines[0].connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        assert versions == [("0004",)]
    finally:
        for engine in engines:
            engine.dispose()
