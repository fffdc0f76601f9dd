"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

import threading
from concurrent.futures import ThreadPoolExecutor

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from backend.db import create_engine_for, migrate
from backend.db.engine import alembic_config
from backend.db.models import Base
from backend.protocol.paths import PATH_MAX
from tests import postgres

# Fixtures: a database per test, on SQLite and on PostgreSQL.
database_url = postgres.database_url
postgres_server = postgres.postgres_server


def migration_heads() -> set[str]:
    """The newest revision of every migration branch: what a migrated database records."""
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def test_migrate_creates_the_model_schema_and_is_idempotent(database_url: str) -> None:
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        migrate(engine)  # a second server start changes nothing
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            tables = set(inspect(conn).get_table_names())
            versions = {
                version
                for (version,) in conn.execute(text("SELECT version_num FROM alembic_version"))
            }
        assert set(Base.metadata.tables) <= tables
        assert versions == migration_heads()
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
        assert {version for (version,) in versions} == migration_heads()
        assert len(versions) == len(migration_heads())
    finally:
        for engine in engines:
            engine.dispose()


def test_upload_sessions_from_a_server_spool_restart_from_zero(database_url: str) -> None:
    """Migration 0008: a session whose bytes were in one server's spool keeps its id but
    starts again from byte 0 (no other server could read those bytes)."""
    engine = create_engine_for(database_url)
    try:
        # 0007, then the other features' branches
        _old_drive_with_a_session(engine, ["0007", *(_heads_before("0012") - {"0008"})], "old")
        migrate(engine)
        with engine.connect() as connection:
            row = connection.execute(text("SELECT received, tail FROM upload_sessions")).one()
            blocks = connection.execute(text("SELECT count(*) FROM upload_blocks")).scalar()
        assert tuple(row) == (0, None) and blocks == 0
    finally:
        engine.dispose()


def _heads_before(revision: str) -> set[str]:
    """The heads a database had before `revision` was written: of every migration but it
    and those after it, the ones no other one follows."""
    script = ScriptDirectory.from_config(alembic_config())
    parents = {rev.revision: _down(rev.down_revision) for rev in script.walk_revisions()}
    later = {revision}
    while grown := {name for name, down in parents.items() if down & later} - later:
        later |= grown
    earlier = set(parents) - later
    return earlier - set().union(*(parents[name] for name in earlier))


def _down(down_revision: str | tuple[str, ...] | None) -> set[str]:
    if down_revision is None:
        return set()
    return {down_revision} if isinstance(down_revision, str) else set(down_revision)


def _old_drive_with_a_session(engine, revisions: list[str], session: str) -> None:
    """A drive migrated to `revisions` only, with user alice and an upload session 5 bytes in."""
    from alembic import command

    from backend.metadata.service import MetadataService
    from tests.postgres import RecordingNotifier

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        for revision in revisions:
            command.upgrade(config, revision)
    MetadataService(engine, RecordingNotifier()).create_user("alice")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO upload_sessions (id, namespace_id, path, total_size, received,"
                " device, created, updated, expires)"
                " VALUES (:id, 1, '/a', 10, 5, NULL, 1, 1, 9)"
            ),
            {"id": session},
        )


def test_paths_of_8192_bytes_fit_and_open_sessions_keep_their_blocks(database_url: str) -> None:
    """Migration 0012 widens the path columns; on SQLite it copies upload_sessions, whose
    upload blocks must survive the copy."""
    engine = create_engine_for(database_url)
    long_path = "/" + "/".join(["d" * 255] * 33)[: PATH_MAX - 1]
    try:
        _old_drive_with_a_session(engine, sorted(_heads_before("0012")), "s")
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO upload_blocks (upload_id, \"offset\", hash, size)"
                " VALUES ('s', 0, 'h', 5)"
            ))  # fmt: skip
        migrate(engine)
        with engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM upload_blocks")).scalar() == 1
            connection.execute(
                text("UPDATE upload_sessions SET path = :path WHERE id = 's'"),
                {"path": long_path},
            )
            stored = connection.execute(text("SELECT path FROM upload_sessions")).scalar()
        assert stored == long_path and len(long_path) == PATH_MAX == 8192
    finally:
        engine.dispose()
