"""Journal compaction: trimming change-journal entries nobody needs any more.

The journal is every client's offline queue, so an entry stays while some known device has
not read it: each device's read mark (devices.cursor) is the cursor it last asked for
changes after (or that of the snapshot it started from), which says it holds everything up
to there. A device that never asked has no mark and holds nothing back; while no device of
the drive has a mark, only the age rule trims. Entries older than the server keeps
(journal_days) go whatever the marks say: a device offline that long starts again from a
snapshot.

A drive's `compacted` is the newest cursor trimmed; a client asking for changes after an
older cursor gets 410 cursor_expired (backend/metadata/journal.py) and re-syncs from a
snapshot. Trimming runs in the drive's write transaction, so it never races a writer.
"""

import threading

from sqlalchemy import delete, func, select, update

from backend.db.models import ChangeEntry, Device, Namespace
from backend.metadata.txn import Database
from backend.metadata.types import Principal


class ReadMarks:
    """Records how far each device has read, at most one write per device and new cursor."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._written: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()

    def note(self, who: Principal, cursor: int) -> None:
        """The device `who` holds every entry up to `cursor` (never moves a mark back)."""
        if who.device is None:
            return
        key = (who.user_id, who.device)
        with self._lock:
            if self._written.get(key, -1) >= cursor:
                return
        with self.db.write_session() as session:
            session.execute(
                update(Device)
                .where(Device.user_id == who.user_id, Device.name == who.device)
                .where((Device.cursor < cursor) | Device.cursor.is_(None))
                .values(cursor=cursor)
            )
        with self._lock:
            self._written[key] = max(cursor, self._written.get(key, -1))


def compact(db: Database, before_ns: int) -> int:
    """Trim every drive's journal: entries all devices have read, and those written before
    `before_ns`. The number of entries removed."""
    with db.read() as session:
        query = select(Namespace.id, Namespace.user_id)
        namespaces = session.execute(query.where(Namespace.compacted < Namespace.cursor)).all()
    return sum(_compact_drive(db, *row, before_ns) for row in namespaces)


def _compact_drive(db: Database, namespace_id: int, user_id: int, before_ns: int) -> int:
    with db.write(namespace_id) as tx:
        session = tx.session
        marks = select(func.min(Device.cursor)).where(
            Device.user_id == user_id, Device.cursor.is_not(None)
        )
        read_by_all = session.scalar(marks)
        aged = session.scalar(
            select(func.max(ChangeEntry.cursor)).where(
                ChangeEntry.namespace_id == namespace_id, ChangeEntry.created < before_ns
            )
        )
        trim_to = min(max(read_by_all or 0, aged or 0), tx.namespace.cursor)
        if trim_to <= tx.namespace.compacted:
            return 0
        removed = session.execute(
            delete(ChangeEntry).where(
                ChangeEntry.namespace_id == namespace_id, ChangeEntry.cursor <= trim_to
            )
        ).rowcount
        tx.namespace.compacted = trim_to
        return removed
