"""Applying the server's view to the mirror: the initial snapshot and the changes feed.

Each change entry is the full node after the change, so applying one is idempotent. The
journal wins: a node with pending local operations is left alone until they are replayed
(their own echoes then bring the final state), and so is a local node, not yet on the server,
whose name a remote node would take. Every visible change is passed on to the kernel.
"""

import logging
from typing import Any

from cache.metadb import ROOT_INODE, MetaDB, Node
from mountfs.kernel import Kernel
from mountfs.vfs import VFS

log = logging.getLogger(__name__)


def remote_fields(remote: dict[str, Any], with_content: bool = True) -> dict[str, Any]:
    """Mirror columns for a server Node (content columns only when the local copy is clean)."""
    fields: dict[str, Any] = {
        "remote_id": remote["id"],
        "mode": remote["mode"] & 0o7777,
        "head_rev": remote["head_rev"] if remote["type"] == "file" else None,
        "target": remote.get("target"),
        "xattrs": remote.get("xattrs") or {},
        "uid": remote.get("uid"),
        "gid": remote.get("gid"),
        "rdev": remote.get("rdev") or 0,
    }
    if remote.get("atime_ns") is not None:
        fields["atime_ns"] = remote["atime_ns"]
    if remote.get("ctime_ns") is not None:
        fields["ctime_ns"] = remote["ctime_ns"]
    if with_content:
        fields.update(size=remote["size"], rev=remote["rev"], mtime_ns=remote["mtime_ns"])
    return fields


# What a server snapshot older than the mirror's (by ctime) may not overwrite: the folder
# times the mount set itself when entries came and went, which the server keeps without a
# change entry of their own.
_ATTRIBUTES = ("mode", "uid", "gid", "atime_ns", "ctime_ns", "mtime_ns", "xattrs")


def _older(local: Node, remote: dict[str, Any]) -> bool:
    ctime = remote.get("ctime_ns")
    return ctime is not None and ctime < local.ctime_ns


class Feed:
    """Applies server nodes to the mirror and reports what the kernel must forget."""

    def __init__(self, db: MetaDB, vfs: VFS, kernel: Kernel) -> None:
        self._db = db
        self._vfs = vfs
        self._kernel = kernel
        # Remote ids placed by the nodes being applied together; an occupant among them is
        # parked (taken out of the tree whole) rather than detached, which would take its
        # subtree apart: names swapped by renames meet their old holders here.
        self._placed: set[int] = set()
        self._parked: list[int] = []

    def apply(self, remote: dict[str, Any]) -> bool:
        """Apply one node; False when its parent is not known yet (retry after others)."""
        local = self._db.by_remote(remote["id"])
        if local is not None and self._db.has_pending(local.inode):
            return True
        if remote.get("deleted"):
            if local is not None and local.parent is not None:
                self._kernel.forget_entry(local.parent, local.name)
                self._vfs.detach(local)
            return True
        if remote["parent_id"] is None:
            self._apply_root(remote)
            return True
        parent = self._db.by_remote(remote["parent_id"])
        if parent is None or (parent.parent is None and parent.inode != ROOT_INODE):
            return False
        occupant = self._db.child(parent.inode, remote["name"])
        if occupant is not None and (local is None or occupant.inode != local.inode):
            if occupant.remote_id is None or self._db.has_pending(occupant.inode):
                return True
            log.debug("remote %s takes %s from inode %s", remote["id"], remote["name"], occupant)
            self._kernel.forget_entry(parent.inode, occupant.name)
            if occupant.remote_id in self._placed:  # its own state puts it back, children and all
                self._db.update(occupant.inode, parent=None)
                self._parked.append(occupant.inode)
            else:
                self._vfs.detach(occupant)
        fields = _insert_fields(remote)
        if remote["type"] == "hardlink":
            inode = self._db.by_remote(remote.get("link_id") or 0)
            if inode is None:
                return False  # its file comes later in this batch of changes
            fields["link_inode"] = inode.inode
        if local is None:
            log.debug("remote %s inserted: %s", remote["id"], remote)
            self._db.insert(parent.inode, remote["name"], remote["type"], **fields)
            self._kernel.forget_entry(parent.inode, remote["name"])
        else:
            self._update(local, parent.inode, remote)
        return True

    def _apply_root(self, remote: dict[str, Any]) -> None:
        fields = remote_fields(remote)
        fields.pop("size")
        if _older(self._db.get(ROOT_INODE), remote):
            for key in _ATTRIBUTES:
                fields.pop(key, None)
        self._db.update(ROOT_INODE, **fields)

    def _update(self, local: Node, parent: int, remote: dict[str, Any]) -> None:
        # Revisions only grow: an echo older than what the mirror holds (our own commits are
        # folded in before their echoes arrive) must not roll the content back.
        stale = local.type == "file" and remote["rev"] < local.rev
        clean = not local.dirty and not stale
        fields = remote_fields(remote, with_content=clean)
        if not clean:
            fields.pop("head_rev")
        if _older(local, remote):
            for key in _ATTRIBUTES:
                fields.pop(key, None)
        moved = (local.parent, local.name) != (parent, remote["name"])
        content_changed = clean and local.type == "file" and local.rev != remote["rev"]
        self._db.update(local.inode, parent=parent, name=remote["name"], **fields)
        if moved and local.parent is not None:
            self._kernel.forget_entry(local.parent, local.name)
            self._kernel.forget_entry(parent, remote["name"])
        if content_changed:
            self._vfs.stale.add(local.inode)
            self._vfs.content.forget_revision(remote["id"])
            self._kernel.forget_inode(local.inode)
        elif _visible_change(local, remote):
            self._kernel.forget_inode(local.inode, attr_only=True)

    def apply_latest(self, nodes: list[dict[str, Any]]) -> None:
        """Apply the latest states of changed nodes: deletions first, so the names they free
        are there for the nodes that take them."""
        self.apply_all([node for node in nodes if node.get("deleted")])
        self.apply_all([node for node in nodes if not node.get("deleted")])

    def apply_all(self, nodes: list[dict[str, Any]]) -> None:
        """Apply nodes in any order (a snapshot lists a moved child before its new parent)."""
        self._placed = {node["id"] for node in nodes if not node.get("deleted")}
        try:
            waiting = nodes
            while waiting:
                left = [node for node in waiting if not self.apply(node)]
                if len(left) == len(waiting):
                    log.warning("%d nodes have no known parent; skipped", len(left))
                    return
                waiting = left
        finally:
            self._placed = set()
            self._unpark()

    def _unpark(self) -> None:
        """Detach for good what was parked and not put back (its state was skipped)."""
        parked, self._parked = self._parked, []
        for inode in parked:
            node = self._db.get(inode)
            if node is not None and node.parent is None:
                self._vfs.detach(node)


def _insert_fields(remote: dict[str, Any]) -> dict[str, Any]:
    fields = remote_fields(remote)
    return {"mode": fields.pop("mode"), **fields}


def _visible_change(local: Node, remote: dict[str, Any]) -> bool:
    return (
        local.mode != remote["mode"] & 0o7777
        or local.mtime_ns != remote["mtime_ns"]
        or local.size != remote["size"]
        or (local.uid, local.gid) != (remote.get("uid"), remote.get("gid"))
        or local.ctime_ns != remote.get("ctime_ns", local.ctime_ns)
    )
