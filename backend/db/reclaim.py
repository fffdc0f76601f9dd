"""Giving the metadata database's freed space back to the file system.

SQLite keeps the pages that deleted rows freed (collected blocks, pruned revisions, purged
trash, compacted journal entries) in its file for later rows: without more, a drive's data
directory never shrinks. New SQLite drives are therefore created with
`auto_vacuum=INCREMENTAL`, and the lifecycle pass (and `cirrus admin gc`) hands free pages
back with `incremental_vacuum`, RECLAIM_PAGES pages per write transaction so that other
writers wait for one short step, not for the whole file. A drive created before that mode
(auto_vacuum off) is converted by `cirrus admin fsck --repair`: a one-time VACUUM.

PostgreSQL reuses freed space itself (autovacuum); nothing here applies to it.
"""

from sqlalchemy.engine import Engine

from backend.db.engine import writer

INCREMENTAL = 2  # PRAGMA auto_vacuum's value for incremental mode
RECLAIM_PAGES = 2_000  # 8 MiB of 4 KiB pages per transaction: a few milliseconds


def gives_space_back(engine: Engine) -> bool:
    """False for a SQLite drive made before incremental vacuum (it needs a conversion)."""
    if engine.dialect.name != "sqlite":
        return True
    with engine.connect() as conn:
        return conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == INCREMENTAL


def reclaim_free_pages(engine: Engine) -> int:
    """Truncate the database file by its free pages; how many pages it gave back."""
    if engine.dialect.name != "sqlite" or not gives_space_back(engine):
        return 0
    freed = 0
    while True:
        with writer(engine).begin() as conn:
            step = min(conn.exec_driver_sql("PRAGMA freelist_count").scalar(), RECLAIM_PAGES)
            # The driver runs a pragma's statement one step at a time, and each step of
            # incremental_vacuum moves one page, so it is asked for a page at a time.
            for _ in range(step):
                conn.exec_driver_sql("PRAGMA incremental_vacuum(1)")
        freed += step
        if step < RECLAIM_PAGES:
            return freed


def convert_to_incremental(engine: Engine) -> None:
    """Switch an existing SQLite drive to incremental vacuum: a VACUUM rewrites the file
    (outside any transaction, so on the raw connection; it waits for the write lock)."""
    raw = engine.raw_connection()
    try:
        raw.driver_connection.execute(f"PRAGMA auto_vacuum={INCREMENTAL}")
        raw.driver_connection.execute("VACUUM")
    finally:
        raw.close()
