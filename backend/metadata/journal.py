"""Reading the change journal (the offline queue) and the snapshot a new client starts from."""

from sqlalchemy import false, select

from backend.db.models import ChangeEntry, Namespace, Node
from backend.metadata.compaction import ReadMarks
from backend.metadata.nodes import INT64_MAX, Tree, node_info_from_json
from backend.metadata.share_feed import shared_snapshot
from backend.metadata.txn import Database
from backend.metadata.types import Change, ChangesPage, Principal, SnapshotPage
from backend.protocol.errors import CursorExpired, InvalidRequest, NotFound

MAX_CHANGES = 10_000


def _check_page(position: object, limit: object, name: str) -> None:
    if type(position) is not int or not 0 <= position <= INT64_MAX:
        raise InvalidRequest(f"{name} is a non-negative integer")
    if type(limit) is not int or not 1 <= limit <= MAX_CHANGES:
        raise InvalidRequest(f"limit is an integer from 1 to {MAX_CHANGES}")


class Journal:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._marks = ReadMarks(db)

    def changes(self, who: Principal, cursor: int, limit: int) -> ChangesPage:
        """The entries after `cursor`; CursorExpired when compaction trimmed some of them.
        Asking from a cursor says the device has read everything up to it (ReadMarks)."""
        _check_page(cursor, limit, "cursor")
        with self.db.read() as session:
            latest, compacted = session.execute(
                select(Namespace.cursor, Namespace.compacted).where(
                    Namespace.id == who.namespace_id
                )
            ).one()
            if cursor < compacted:
                raise CursorExpired(
                    f"the change journal starts after cursor {compacted}: "
                    "start again from GET /v1/snapshot"
                )
            query = (
                select(ChangeEntry.cursor, ChangeEntry.node)
                .where(ChangeEntry.namespace_id == who.namespace_id, ChangeEntry.cursor > cursor)
                .order_by(ChangeEntry.cursor)
                .limit(limit + 1)
            )
            rows = session.execute(query).all()
        self._marks.note(who, min(cursor, latest))
        entries = [Change(c, node_info_from_json(node)) for c, node in rows[:limit]]
        last = entries[-1].cursor if entries else cursor
        return ChangesPage(entries, last, len(rows) > limit)

    def current_cursor(self, namespace_id: int) -> int:
        with self.db.read() as session:
            cursor = session.scalar(select(Namespace.cursor).where(Namespace.id == namespace_id))
        if cursor is None:
            raise NotFound(f"no such drive: {namespace_id}")
        return cursor

    def snapshot(self, who: Principal, after_id: int, limit: int) -> SnapshotPage:
        """Live nodes after after_id. The cursor is read first, so replaying the journal from
        it afterwards covers any change that raced with the page (entries are idempotent).
        A first page marks the device as holding everything up to its cursor (ReadMarks)."""
        _check_page(after_id, limit, "after_id")
        with self.db.read() as session:
            cursor = session.scalar(
                select(Namespace.cursor).where(Namespace.id == who.namespace_id)
            )
            query = (
                select(Node)
                .where(
                    Node.namespace_id == who.namespace_id,
                    Node.id > after_id,
                    Node.deleted == false(),
                )
                .order_by(Node.id)
                .limit(limit + 1)
            )
            nodes = list(session.scalars(query))
            tree = Tree(session, who.namespace_id)
            infos = [tree.info(node) for node in nodes[: limit + 1]]
            # Folders shared with the user, under their mounts (ids are unique over drives).
            shared = shared_snapshot(session, who.namespace_id, after_id)[: limit + 1]
            infos = sorted(infos + shared, key=lambda info: info.id)
        if after_id == 0:
            self._marks.note(who, cursor)
        return SnapshotPage(cursor, infos[:limit], len(infos) > limit)
