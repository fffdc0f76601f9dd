"""The trash: deleted files and folders, listed, restored with their subtree, or purged.

A deletion keeps the rows (nodes.deleted) and notes when, by whom, and which node was
deleted by name (`trash_id`): a folder deleted with everything in it is one item of the
trash. An item is its top node and the deleted nodes below it whose trash_id is its own or
NULL (deleted before the trash existed); a file deleted on its own earlier, inside a folder
deleted later, stays an item of its own.

`rm -rf` through a mount deletes a folder's content one node at a time, then the folder:
deleting a folder takes along, into its own item, the items that were its children and were
deleted by the same device within GATHER_S before, so such a folder is one item too.

Restoring puts an item back where it was, under the same name, or, when that name is taken
now, under `NAME (restored).EXT` (then `NAME (restored 2).EXT` ...). When its folder has
been deleted meanwhile, the folders on its old path are made again. Every restored node is
journaled, so mounts see it appear.

Purging removes the rows for good, with their revisions: the block references they held are
dropped (the blocks themselves are left to garbage collection). Purging a folder also purges
what was deleted inside it earlier. The lifecycle job purges items older than the server
keeps them (backend/lifecycle/trash.py).
"""

import os

from sqlalchemy import bindparam, delete, select, true, update

from backend.db.models import DIR, FILE, Node, PendingBlock, Revision, RevisionBlock
from backend.metadata.nodes import Tree, format_path
from backend.metadata.txn import Database, Txn
from backend.metadata.types import NodeInfo, Principal, TrashItem
from backend.protocol.errors import AlreadyExists, InvalidRequest, NotFound
from backend.protocol.paths import NAME_MAX, split_path

MAX_RESTORED_NAMES = 1000
GATHER_S = 60
_IN_BATCH = 500


class Trash:
    def __init__(self, db: Database) -> None:
        self.db = db

    def contents(self, who: Principal, item_id: int) -> tuple[TrashItem, list[NodeInfo]]:
        """An item and its nodes as they were, parents before children (so a mount can
        show a deleted folder as a folder)."""
        with self.db.read() as session:
            tree = Tree(session, who.namespace_id)
            top = _item_node(tree, item_id)
            return _item(tree, top), [tree.info(node) for node in _members(tree, top)]

    def list(self, who: Principal) -> list[TrashItem]:
        """The items of the trash, most recently deleted first."""
        with self.db.read() as session:
            tree = Tree(session, who.namespace_id)
            query = (
                select(Node)
                .where(
                    Node.namespace_id == who.namespace_id,
                    Node.deleted == true(),
                    Node.trash_id == Node.id,
                )
                .order_by(Node.deleted_at.desc(), Node.id.desc())
            )
            return [_item(tree, node) for node in session.scalars(query)]

    def restore(self, who: Principal, item_id: int) -> NodeInfo:
        """Put an item back with its subtree; the restored top node."""
        with self.db.write(who.namespace_id, who.author) as tx:
            top = _item_node(tx, item_id)
            parent = _live_parent(tx, top)
            name = _free_name(tx, parent, top.name)
            members = _members(tx, top)
            for node in members:  # parents before children
                node.deleted = False
                node.deleted_at = node.deleted_by = node.trash_id = None
                if node is top:
                    node.parent_id, node.name = parent.id, name
                tx.session.flush()
                tx.placed(node)
            tx.forget_paths()
            infos = [tx.journal(node) for node in members]
            return infos[0]

    def purge(self, who: Principal, item_id: int | None) -> int:
        """Purge one item (or, with None, the whole trash); the number of items purged."""
        with self.db.write(who.namespace_id, who.author) as tx:
            if item_id is not None:
                purge_item(tx, _item_node(tx, item_id))
                return 1
            return purge_items(tx, _items(tx, None))

    def empty_older(self, before_ns: int) -> int:
        """Purge every drive's items deleted before `before_ns`; the number purged."""
        with self.db.read() as session:
            query = (
                select(Node.namespace_id)
                .where(Node.deleted == true(), Node.deleted_at < before_ns)
                .distinct()
            )
            namespaces = list(session.scalars(query))
        purged = 0
        for namespace_id in namespaces:
            with self.db.write(namespace_id) as tx:
                purged += purge_items(tx, _items(tx, before_ns))
        return purged


def gather(tx: Txn, folder: Node) -> None:
    """Make the recently trashed children of a folder just deleted part of its item."""
    params = {"folder": folder.id, "since": tx.now_ns - GATHER_S * 10**9, "author": tx.author}
    children = list(tx.session.scalars(_GATHERED, params))
    for start in range(0, len(children), _IN_BATCH):
        ids = children[start : start + _IN_BATCH]
        params = {"namespace": tx.namespace_id, "ids": ids, "item": folder.trash_id}
        for (node_id,) in tx.connection.execute(_REGATHER, params):
            node = tx.held(node_id)
            if node is not None:
                tx.written(node, trash_id=folder.trash_id)


# Built once: `rm -rf` gathers once per folder it deletes.
_GATHERED = select(Node.id).where(
    Node.parent_id == bindparam("folder"),
    Node.deleted == true(),
    Node.trash_id == Node.id,
    Node.deleted_at >= bindparam("since"),
    Node.id != bindparam("folder"),
    Node.deleted_by.is_not_distinct_from(bindparam("author")),
)
_REGATHER = (
    update(Node.__table__)
    .where(
        Node.__table__.c.namespace_id == bindparam("namespace"),
        Node.__table__.c.trash_id.in_(bindparam("ids", expanding=True)),
    )
    .values(trash_id=bindparam("item"))
    .returning(Node.__table__.c.id)
)  # a plain UPDATE: the nodes it changes that the session holds are told by `gather`


def _item(tree: Tree, top: Node) -> TrashItem:
    members = _members(tree, top)
    return TrashItem(
        id=top.id,
        path=tree.path_of(top),
        type=top.type,  # type: ignore[arg-type]
        size=sum(node.size for node in members if node.type == FILE),
        files=sum(1 for node in members if node.type == FILE),
        deleted_ns=top.deleted_at or 0,
        device=top.deleted_by,
    )


def _items(tx: Txn, before_ns: int | None) -> list[Node]:
    query = select(Node).where(
        Node.namespace_id == tx.namespace_id, Node.deleted == true(), Node.trash_id == Node.id
    )
    if before_ns is not None:
        query = query.where(Node.deleted_at < before_ns)
    return list(tx.session.scalars(query))


def _item_node(tree: Tree, item_id: object) -> Node:
    if type(item_id) is not int:
        raise InvalidRequest("a trash item is named by its integer id")
    node = tree.by_id(item_id, deleted_ok=True)
    if not node.deleted or node.trash_id != node.id:
        raise NotFound(f"no item {item_id} in the trash")
    return node


def _members(tree: Tree, top: Node) -> list[Node]:
    """The item's nodes, parents before children; of two deleted children with one name
    (only possible among nodes deleted before the trash existed), the newest."""
    found = [top]
    for folder in found:  # grows while iterating: a breadth-first walk
        if folder.type != DIR:
            continue
        query = (
            select(Node)
            .where(Node.parent_id == folder.id, Node.deleted == true())
            .where((Node.trash_id == top.id) | Node.trash_id.is_(None))
            .order_by(Node.id.desc())
        )
        names: set[str] = set()
        for child in tree.session.scalars(query):
            if child.name not in names:
                names.add(child.name)
                found.append(child)
    return found


def _live_parent(tx: Txn, top: Node) -> Node:
    """The folder the item goes back into: its own, or one made again at its old path."""
    parent = tx.session.get(Node, top.parent_id)
    if not parent.deleted:
        return parent
    return tx.make_dirs(split_path(tx.path_of(parent)))


def _free_name(tx: Txn, parent: Node, name: str) -> str:
    """`name` when free in `parent`, else `stem (restored).ext`, `stem (restored 2).ext` ..."""
    if tx.child(parent, name) is None:
        return name
    stem, ext = os.path.splitext(name)
    for number in range(1, MAX_RESTORED_NAMES + 1):
        label = " (restored)" if number == 1 else f" (restored {number})"
        budget = NAME_MAX - len(f"{label}{ext}".encode())
        short = stem.encode()[: max(budget, 1)].decode("utf-8", "ignore") or "_"
        candidate = f"{short}{label}{ext}"
        if tx.child(parent, candidate) is None:
            return candidate
    raise AlreadyExists(f"too many restored copies of {format_path([name])}")


def purge_items(tx: Txn, items: list[Node]) -> int:
    for top in items:
        purge_item(tx, top)
    return len(items)


def purge_item(tx: Txn, top: Node) -> None:
    """Delete the item's rows and every deleted node below it, with their revisions."""
    doomed = [top.id]
    for node_id in doomed:  # grows while iterating: a breadth-first walk
        below = select(Node.id).where(Node.parent_id == node_id, Node.deleted == true())
        doomed.extend(tx.session.scalars(below))
    for start in range(0, len(doomed), _IN_BATCH):
        _drop_revisions(tx, doomed[start : start + _IN_BATCH])
    for node_id in reversed(doomed):  # children before their folder
        tx.session.execute(delete(Node).where(Node.id == node_id))


def _drop_revisions(tx: Txn, node_ids: list[int]) -> None:
    """Drop the revisions of these nodes and the block references their lists held."""
    revisions = select(Revision.id).where(Revision.node_id.in_(node_ids))
    blocks = select(RevisionBlock.hash, RevisionBlock.size).where(
        RevisionBlock.revision_id.in_(revisions)
    )
    tx.refer(list(tx.session.execute(blocks).all()), -1)
    tx.session.execute(delete(RevisionBlock).where(RevisionBlock.revision_id.in_(revisions)))
    tx.session.execute(delete(PendingBlock).where(PendingBlock.revision_id.in_(revisions)))
    tx.session.execute(delete(Revision).where(Revision.node_id.in_(node_ids)))
