"""POSIX attributes of nodes: owners, times, special files and hard links.

Owners are numeric ids (uid, gid), kept as the mount sent them, like NFS without idmapping:
machines that share a drive should share their ids. A node made through the HTTP API has none
(NULL), and a mount shows it as the mounting user's.

Times: every change of a node sets its `ctime_ns`, and every change of a folder's entries
sets the folder's mtime and ctime (without a change entry of its own), to the instant the
operation carries (`ctime_ns`: the
mount sends the moment the change happened on it, so its echo matches what it showed) or the
server's clock. `atime_ns` is only what clients send.

Hard links: a second name of a file is a node of type `hardlink` whose `link_id` names the
file (the *inode*: content, revisions, history, attributes and xattrs are its). The file's
`nlink` counts its names. Removing the file's own name while other names remain moves the
file to the oldest of them (which goes): the file keeps its id and history, and every name
stays what it was.
"""

from sqlalchemy import select

from backend.db.models import DIR, HARDLINK, SPECIAL_TYPES, Node
from backend.metadata.nodes import INT64_MAX, Tree, check_mode, check_mtime, parse_path
from backend.metadata.txn import Txn
from backend.metadata.types import NodeInfo
from backend.protocol.errors import AlreadyExists, Forbidden, InvalidRequest

ATTRS = ("uid", "gid", "atime_ns", "ctime_ns")
ID_MAX = 2**32 - 2  # (uid_t) -1 means "unchanged" to chown(2)


def check_attrs(attrs: dict | None) -> dict:
    """The owner and times an operation sets, checked; absent keys are left alone."""
    checked: dict = {}
    for key, value in (attrs or {}).items():
        if value is None:
            continue
        if key not in ATTRS:
            raise InvalidRequest(f"unknown attribute {key!r}")
        if key in ("uid", "gid"):
            if type(value) is not int or not 0 <= value <= ID_MAX:
                raise InvalidRequest(f"{key} must be an integer between 0 and {ID_MAX}")
        else:
            check_mtime(value)
        checked[key] = value
    return checked


def stamp(tx: Txn, node: Node, attrs: dict) -> None:
    """Apply the owner and times `attrs` set; the node's ctime becomes the change's."""
    for key in ("uid", "gid", "atime_ns"):
        if key in attrs:
            setattr(node, key, attrs[key])
    node.ctime_ns = attrs.get("ctime_ns", tx.now_ns)


def entries_changed(tx: Txn, folder: Node, attrs: dict) -> None:
    """A folder gained or lost a name: its mtime and ctime become the change's instant,
    unless the folder changed later already (a mount replaying `mkdir` with the times `tar`
    set after the folder's contents, then the contents). Not journaled (one entry per change,
    not two): clients see it in the folder's next snapshot, and a mount has set the same
    times itself."""
    at = attrs.get("ctime_ns", tx.now_ns)
    if folder.ctime_ns is None or folder.ctime_ns <= at:
        folder.mtime_ns = folder.ctime_ns = at


def inode_of(tree: Tree, node: Node) -> Node:
    """The node holding a name's content and attributes (itself unless a hard link)."""
    if node.type != HARDLINK or node.link_id is None:
        return node
    return tree.session.get(Node, node.link_id)


def mknod_in(
    tx: Txn, path: str, kind: str, mode: int, rdev: int, mtime_ns: int | None, attrs: dict
) -> NodeInfo:
    """A FIFO, socket or device node: metadata only (type, mode, rdev), no content."""
    parts = parse_path(path)
    if kind not in SPECIAL_TYPES:
        raise InvalidRequest(f"type must be one of {', '.join(SPECIAL_TYPES)}")
    if not parts:
        raise AlreadyExists("the root folder exists")
    if type(rdev) is not int or not 0 <= rdev <= INT64_MAX:
        raise InvalidRequest("rdev is a non-negative 64-bit integer")
    check_mode(mode)
    mtime_ns = None if mtime_ns is None else check_mtime(mtime_ns)
    attrs = check_attrs(attrs)
    parent = tx.lookup_dir(parts[:-1])
    if tx.child(parent, parts[-1]) is not None:
        raise AlreadyExists(f"already exists: {path}")
    node = tx.create(parent, parts[-1], kind, mode, mtime_ns, attrs=attrs, rdev=rdev)
    entries_changed(tx, parent, attrs)
    return tx.journal(node)


def link_in(tx: Txn, src: str, dst: str, attrs: dict) -> NodeInfo:
    """A second name `dst` for the file at `src` (link(2)); the new name's node."""
    src_parts, dst_parts = parse_path(src), parse_path(dst)
    attrs = check_attrs(attrs)
    if not dst_parts:
        raise AlreadyExists("the root folder exists")
    inode = inode_of(tx, tx.lookup(src_parts))
    if inode.type == DIR:
        raise Forbidden(f"a folder cannot have a second name: {src}")
    parent = tx.lookup_dir(dst_parts[:-1])
    if tx.child(parent, dst_parts[-1]) is not None:
        raise AlreadyExists(f"already exists: {dst}")
    name = tx.create(
        parent, dst_parts[-1], HARDLINK, inode.mode, inode.mtime_ns, attrs=attrs, link_id=inode.id
    )
    inode.nlink = (inode.nlink or 1) + 1
    inode.ctime_ns = attrs.get("ctime_ns", tx.now_ns)
    tx.journal(inode)
    entries_changed(tx, parent, attrs)
    return tx.journal(name)


def other_names(tx: Txn, inode: Node) -> list[Node]:
    """The live hard links of a file, oldest first."""
    if inode.type == DIR or (inode.nlink or 1) <= 1:
        return []
    query = select(Node).where(Node.link_id == inode.id, Node.deleted.is_(False)).order_by(Node.id)
    return list(tx.session.scalars(query))


def unname(
    tx: Txn, node: Node, attrs: dict, doomed: set[int] = frozenset(), top: Node | None = None
) -> None:
    """Remove one name: a hard link goes (its file loses a link); a file with other names
    (outside `doomed`, the names going too) moves to the oldest of them, which goes. What
    goes is trashed with `top`, the node deleted by name (itself when None)."""
    at = attrs.get("ctime_ns", tx.now_ns)
    if node.type == HARDLINK:
        tx.remove(node, top)
        inode = tx.session.get(Node, node.link_id)
        if inode is not None and not inode.deleted:
            inode.nlink = max((inode.nlink or 1) - 1, 1)
            inode.ctime_ns = at
            tx.journal(inode)
        return
    survivors = [name for name in other_names(tx, node) if name.id not in doomed]
    if not survivors:
        tx.remove(node, top)
        return
    heir = survivors[0]
    place = (heir.parent_id, heir.name)
    tx.remove(heir)
    tx.displaced(node)
    node.parent_id, node.name = place
    node.nlink = max((node.nlink or 1) - 1, 1)
    node.ctime_ns = at
    tx.session.flush()
    tx.placed(node)
    tx.forget_paths()
    tx.journal(node)
