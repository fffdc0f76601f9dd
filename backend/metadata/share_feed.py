"""What a recipient learns of the folders shared with them (docs/sharing.md).

The owner's changes under a shared folder are copied into each recipient's change journal
in the transaction that makes them (`fan_out`), mapped under the recipient's mount, so a
recipient's mount learns of them from its own long poll; a new client's snapshot lists the
shared nodes too (`shared_snapshot`). A recipient reads a block only when it is named by a
revision of a file it reaches through its own drive or a share (`shared_readable`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from backend.db.models import (
    DIR,
    UPLOADED,
    ChangeEntry,
    Namespace,
    Node,
    Revision,
    RevisionBlock,
    Share,
)
from backend.metadata.nodes import Tree
from backend.metadata.sharing import Mount, mounts_of
from backend.metadata.types import NodeInfo

if TYPE_CHECKING:
    from backend.metadata.txn import Txn

_INSERT_CHANGES = insert(ChangeEntry.__table__)


def recipients(session: Session, namespace_id: int) -> list[int]:
    """The drives a transaction of this drive may journal in: its shares' recipients."""
    query = select(Share.recipient_namespace_id).where(
        Share.owner_namespace_id == namespace_id, Share.revoked.is_(None)
    )
    return sorted(set(session.scalars(query)))


def fan_out(tx: Txn, entries: list[dict]) -> None:
    """Copy the journal entries of nodes under this drive's shared folders into each
    recipient's journal (called by Txn.finish, just before the entries are written)."""
    _left(tx, entries)
    query = select(Share).where(
        Share.owner_namespace_id == tx.namespace_id, Share.revoked.is_(None)
    )
    shares = list(tx.session.scalars(query))
    for share in shares:
        folder = tx.session.get(Node, share.folder_id)
        mount = tx.session.get(Node, share.mount_id)
        if folder is None or mount is None or mount.deleted:
            continue
        recipient = Tree(tx.session, share.recipient_namespace_id)
        view = Mount(share.id, tx.namespace_id, folder.id, tx.path_of(folder), mount.id,
                     mount.parent_id, mount.name, recipient.path_of(mount), True)  # fmt: skip
        copies = [copy for entry in entries for copy in _copies(tx, view, folder, entry)]
        if folder.deleted:
            copies.append(_end(tx, share, mount, recipient))
        if copies:
            _append(tx, share.recipient_namespace_id, copies)


def _left(tx: Txn, entries: list[dict]) -> None:
    """A recipient who deletes the mount node of a share leaves it (as if revoked)."""
    gone = {e["node_id"]: e["node"] for e in entries if e["node"]["deleted"]}
    gone = {i: node for i, node in gone.items() if node["type"] == DIR}
    if not gone:
        return
    query = select(Share).where(Share.mount_id.in_(sorted(gone)), Share.revoked.is_(None))
    for share in tx.session.scalars(query):
        share.revoked, share.mount_path = tx.now_ns, gone[share.mount_id]["path"]
        tx.session.get(Node, share.mount_id).xattrs = {}


def _end(tx: Txn, share: Share, mount: Node, recipient: Tree) -> dict:
    """The owner deleted the shared folder: the share ends as if revoked (the mount's
    removal, to journal in the recipient's drive)."""
    share.revoked, share.mount_path = tx.now_ns, recipient.path_of(mount)
    mount.deleted, mount.deleted_at, mount.deleted_by = True, tx.now_ns, tx.author
    mount.trash_id, mount.xattrs = mount.id, {}
    tx.session.flush()
    return recipient.info(mount).to_json()


def _copies(tx: Txn, view: Mount, folder: Node, entry: dict) -> list[dict]:
    """What the recipient must learn of one entry (moves in and out of the folder too)."""
    node = tx.session.get(Node, entry["node_id"])
    if node is None or node.id == folder.id:
        return []
    inside = tx.is_within(node, folder)
    left = tx.left.get(node.id)
    was_inside = left is not None and tx.is_within(tx.session.get(Node, left), folder)
    if inside and left is not None and not was_inside and node.type == DIR:
        return [view.map_json(tx.info(n).to_json()) for n in tx.subtree(node)]
    if inside:
        return [view.map_json(entry["node"])]
    if was_inside:
        return [{**entry["node"], "deleted": True, "parent_id": view.mount_id}]
    return []


def _append(tx: Txn, namespace_id: int, nodes: list[dict]) -> None:
    """Journal nodes in another drive, its cursor moved under its row's lock."""
    last = tx.session.execute(
        update(Namespace)
        .where(Namespace.id == namespace_id)
        .values(cursor=Namespace.cursor + len(nodes))
        .returning(Namespace.cursor)
    ).scalar_one()
    first = last - len(nodes) + 1
    rows = [
        {"namespace_id": namespace_id, "cursor": first + i, "node_id": node["id"],
         "node": node, "created": tx.now_ns}
        for i, node in enumerate(nodes)
    ]  # fmt: skip
    tx.connection.execute(_INSERT_CHANGES, rows)
    tx.published.append((namespace_id, last))


# -- what a recipient may read ---------------------------------------------------------------


def shared_snapshot(session: Session, namespace_id: int, after_id: int) -> list[NodeInfo]:
    """The live nodes of the shares shown in a drive, with ids above after_id, by id."""
    found: list[NodeInfo] = []
    for mount in mounts_of(session, namespace_id):
        folder = session.get(Node, mount.folder_id)
        if mount.folder_path is None:
            continue
        owner = Tree(session, mount.owner_namespace_id)
        found.extend(
            mount.map_info(owner.info(node))
            for node in owner.subtree(folder)[1:]
            if node.id > after_id
        )
    return sorted(found, key=lambda info: info.id)


def shared_readable(session: Session, namespace_id: int, hashes: list[str]) -> set[str]:
    """The hashes named by an uploaded revision of a file inside a share shown in the drive."""
    mounts = mounts_of(session, namespace_id) if hashes else []
    if not mounts:
        return set()
    owners = sorted({m.owner_namespace_id for m in mounts})
    query = (
        select(RevisionBlock.hash, Revision.node_id)
        .join(Revision, Revision.id == RevisionBlock.revision_id)
        .where(
            Revision.namespace_id.in_(owners),
            Revision.status == UPLOADED,
            RevisionBlock.hash.in_(hashes),
        )
    )
    readable: set[str] = set()
    for block_hash, node_id in session.execute(query):
        if block_hash in readable:
            continue
        node = session.get(Node, node_id)
        for mount in mounts:
            folder = session.get(Node, mount.folder_id)
            tree = Tree(session, mount.owner_namespace_id)
            if node.namespace_id == mount.owner_namespace_id and tree.is_within(node, folder):
                readable.add(block_hash)
                break
    return readable
