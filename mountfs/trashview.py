"""What the mount's `.cirrus/trash/` shows: the server's trash, one entry per item.

An item is named as `published.trash_names` names it (the user CLI resolves the same names),
dated by its deletion; a deleted folder is a folder holding what it held, its files dated by
their own modification time. Only files and folders are shown. The list of items is asked
of the server (`GET /v1/trash`) when the folder is listed or looked into, again once the
mirror's change cursor has moved (a deletion, restore or purge that the feed applied) or
REFRESH_S after the last ask (a purge is not in the change journal). What a folder item
holds (`GET /v1/trash/ID`) never changes while it is in the trash and is kept per deletion.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from backend.protocol.errors import NotFound
from mountfs.published import trash_names
from mountfs.remote import RemoteDrive

REFRESH_S = 1.0
_SHOWN = ("file", "dir")


@dataclass(frozen=True, slots=True)
class Trashed:
    """One node of a trash item: the item's top node or a node in a deleted folder."""

    item_id: int
    deleted_ns: int  # tells a deletion from a later one of the same node
    node_id: int
    type: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple:
        return ("trashed", self.item_id, self.deleted_ns, self.node_id)


class TrashView:
    def __init__(self, remote: RemoteDrive, cursor: Callable[[], object]) -> None:
        self._remote = remote
        self._cursor = cursor
        self._items: dict[str, Trashed] = {}
        self._asked: tuple[object, float] | None = None  # (cursor, monotonic time) of the ask
        # (item id, deleted_ns) -> node id -> the node's JSON, for folder items
        self._members: dict[tuple[int, int], dict[int, dict]] = {}

    async def items(self) -> dict[str, Trashed]:
        """The items by name, most recently deleted first."""
        cursor, now = self._cursor(), time.monotonic()
        if self._asked is None or self._asked[0] != cursor or now - self._asked[1] > REFRESH_S:
            answer = await self._remote.trash()
            named = trash_names(answer)  # over every item, as the user CLI names them
            shown = {name: item for name, item in named.items() if item["type"] in _SHOWN}
            self._items = {name: _top(item) for name, item in shown.items()}
            self._asked = (cursor, now)
            alive = {(t.item_id, t.deleted_ns) for t in self._items.values()}
            self._members = {k: v for k, v in self._members.items() if k in alive}
        return self._items

    async def children(self, folder: Trashed) -> dict[str, Trashed]:
        """The files and folders a trashed folder held."""
        members = await self._nodes(folder)
        return {
            node["name"]: _member(folder, node)
            for node in members.values()
            if node["parent_id"] == folder.node_id and node["type"] in _SHOWN
        }

    async def revision(self, file: Trashed) -> int:
        """The revision a trashed file held when deleted (0: it never had content)."""
        node = (await self._nodes(file)).get(file.node_id)
        if node is None:
            raise NotFound("the item has left the trash")
        return node["rev"]

    async def _nodes(self, trashed: Trashed) -> dict[int, dict]:
        key = (trashed.item_id, trashed.deleted_ns)
        known = self._members.get(key)
        if known is None:
            entries = await self._remote.trash_contents(trashed.item_id)  # NotFound: gone
            known = self._members[key] = {node["id"]: node for node in entries}
        return known


def _top(item: dict) -> Trashed:
    deleted = item["deleted_ns"]
    return Trashed(item["id"], deleted, item["id"], item["type"], item["size"], deleted)


def _member(folder: Trashed, node: dict) -> Trashed:
    size = node["size"] if node["type"] == "file" else 0
    return Trashed(
        folder.item_id, folder.deleted_ns, node["id"], node["type"], size, node["mtime_ns"]
    )
