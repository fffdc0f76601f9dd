"""Tree operations with POSIX semantics: stat, list, mkdir, symlink, rename, delete, attrs.

Each change journals the snapshot of every node it touched, in its own transaction. Moves
follow rename(2) (and renameat2's RENAME_NOREPLACE / RENAME_EXCHANGE).
"""

import base64

from backend.db.models import DIR, SYMLINK, Node
from backend.metadata.nodes import (
    Tree,
    check_mode,
    check_mtime,
    parse_path,
)
from backend.metadata.posix import (
    check_attrs,
    entries_changed,
    inode_of,
    link_in,
    mknod_in,
    stamp,
    unname,
)
from backend.metadata.sharing import SHARE_XATTR
from backend.metadata.trash import gather
from backend.metadata.txn import DEFAULT_DIR_MODE, Database, Txn
from backend.metadata.types import MoveMode, NodeInfo, Principal
from backend.protocol.errors import (
    AlreadyExists,
    Forbidden,
    InvalidMove,
    InvalidRequest,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    PayloadTooLarge,
)
from backend.protocol.paths import NAME_MAX, TARGET_MAX

SYMLINK_MODE = 0o777
# Namespaces of extended attributes kept (POSIX ACLs are system.posix_acl_access/default).
XATTR_PREFIXES = ("user.", "security.", "trusted.", "system.posix_acl_")
XATTR_VALUE_MAX = 64 * 1024
MOVE_MODES = ("replace", "noreplace", "exchange")


class TreeOps:
    def __init__(self, db: Database) -> None:
        self.db = db

    def stat(self, who: Principal, path: str) -> NodeInfo:
        parts = parse_path(path)
        with self.db.read() as session:
            tree = Tree(session, who.namespace_id)
            return tree.info(tree.lookup(parts))

    def stat_id(self, who: Principal, node_id: int) -> NodeInfo:
        with self.db.read() as session:
            tree = Tree(session, who.namespace_id)
            return tree.info(tree.by_id(node_id))

    def list_dir(self, who: Principal, path: str) -> list[NodeInfo]:
        parts = parse_path(path)
        with self.db.read() as session:
            tree = Tree(session, who.namespace_id)
            folder = tree.lookup_dir(parts)
            return [tree.info(child) for child in tree.children(folder)]

    def mkdir(
        self,
        who: Principal,
        path: str,
        mode: int | None,
        mtime_ns: int | None,
        parents: bool,
        attrs: dict | None = None,
    ) -> tuple[NodeInfo, bool]:
        with self.db.write(who.namespace_id) as tx:
            return mkdir_in(tx, path, mode, mtime_ns, parents, attrs)

    def symlink(
        self,
        who: Principal,
        path: str,
        target: str,
        mtime_ns: int | None,
        attrs: dict | None = None,
    ) -> NodeInfo:
        with self.db.write(who.namespace_id) as tx:
            return symlink_in(tx, path, target, mtime_ns, attrs)

    def delete(
        self, who: Principal, path: str, recursive: bool, attrs: dict | None = None
    ) -> list[int]:
        with self.db.write(who.namespace_id, who.author) as tx:
            return delete_in(tx, path, recursive, attrs)

    def setattr(
        self,
        who: Principal,
        path: str,
        mode: int | None,
        mtime_ns: int | None,
        attrs: dict | None = None,
    ) -> NodeInfo:
        with self.db.write(who.namespace_id) as tx:
            return setattr_in(tx, path, mode, mtime_ns, attrs)

    def set_xattr(
        self, who: Principal, path: str, name: str, value: bytes | None, attrs: dict | None = None
    ) -> NodeInfo:
        with self.db.write(who.namespace_id) as tx:
            return set_xattr_in(tx, path, name, value, attrs)

    def move(
        self, who: Principal, src: str, dst: str, mode: MoveMode, attrs: dict | None = None
    ) -> tuple[NodeInfo, NodeInfo | None]:
        with self.db.write(who.namespace_id, who.author) as tx:
            return move_in(tx, src, dst, mode, attrs)

    def mknod(
        self,
        who: Principal,
        path: str,
        type: str,
        mode: int,
        rdev: int,
        mtime_ns: int | None,
        attrs: dict | None,
    ) -> NodeInfo:
        with self.db.write(who.namespace_id) as tx:
            return mknod_in(tx, path, type, mode, rdev, mtime_ns, attrs or {})

    def link(self, who: Principal, src: str, dst: str, attrs: dict | None) -> NodeInfo:
        with self.db.write(who.namespace_id) as tx:
            return link_in(tx, src, dst, attrs or {})


# -- the changes, inside an open write transaction (alone, or one step of a batch) -------------


def mkdir_in(
    tx: Txn,
    path: str,
    mode: int | None,
    mtime_ns: int | None,
    parents: bool,
    attrs: dict | None = None,
) -> tuple[NodeInfo, bool]:
    """Return (node, created)."""
    parts = parse_path(path)
    attrs = check_attrs(attrs)
    mode = DEFAULT_DIR_MODE if mode is None else check_mode(mode)
    mtime_ns = None if mtime_ns is None else check_mtime(mtime_ns)
    if not parts:
        if parents:
            return tx.info(tx.root()), False
        raise AlreadyExists("the root folder exists")
    parent = tx.make_dirs(parts[:-1]) if parents else tx.lookup_dir(parts[:-1])
    existing = tx.child(parent, parts[-1])
    if existing is not None:
        if parents and existing.type == DIR:
            return tx.info(existing), False
        raise AlreadyExists(f"already exists: {path}")
    node = tx.create(parent, parts[-1], DIR, mode, mtime_ns, attrs=attrs)
    entries_changed(tx, parent, attrs)
    return tx.journal(node), True


def symlink_in(
    tx: Txn, path: str, target: str, mtime_ns: int | None, attrs: dict | None = None
) -> NodeInfo:
    parts = parse_path(path)
    attrs = check_attrs(attrs)
    if not parts:
        raise AlreadyExists("the root folder exists")
    if not isinstance(target, str) or not target or "\0" in target:
        raise InvalidRequest("a symlink target is a non-empty string without NUL bytes")
    if len(_utf8(target, "a symlink target")) > TARGET_MAX:
        raise InvalidRequest(f"a symlink target has at most {TARGET_MAX} bytes")
    mtime_ns = None if mtime_ns is None else check_mtime(mtime_ns)
    parent = tx.lookup_dir(parts[:-1])
    if tx.child(parent, parts[-1]) is not None:
        raise AlreadyExists(f"already exists: {path}")
    node = tx.create(parent, parts[-1], SYMLINK, SYMLINK_MODE, mtime_ns, target, attrs=attrs)
    entries_changed(tx, parent, attrs)
    return tx.journal(node)


def delete_in(
    tx: Txn,
    path: str,
    recursive: bool,
    attrs: dict | None = None,
    only: frozenset[int] | None = None,
) -> list[int]:
    """Delete the node at path (with its subtree when recursive); the ids deleted (a file
    that keeps another name outside the subtree moves there instead, see posix.unname).
    With `only`, a node to delete that is not in it refuses the whole delete."""
    parts = parse_path(path)
    attrs = check_attrs(attrs)
    if not parts:
        raise Forbidden("the root folder cannot be deleted")
    node = tx.lookup(parts)
    if node.type == DIR and not recursive:
        if tx.has_children(node):
            raise NotEmpty(f"folder not empty: {path}")
        doomed = [node]  # known empty: no walk
    else:
        doomed = tx.subtree(node)
    if only is not None and any(_not_named(victim, only) for victim in doomed):
        raise NotEmpty(f"{path} holds what the delete does not name")
    parent = tx.session.get(Node, node.parent_id)
    ids = {victim.id for victim in doomed}
    for victim in reversed(doomed):  # children before their folder
        unname(tx, victim, attrs, ids, node)
    if node.type == DIR:
        gather(tx, node)
    entries_changed(tx, parent, attrs)
    return [victim.id for victim in reversed(doomed)]


def _not_named(victim: Node, only: frozenset[int]) -> bool:
    """Whether a delete naming `only` must leave `victim` alone: not named, or the mount of
    a share (its content is in the owner's drive: the names the client deleted in it are
    deleted there one by one, as the owner's trash expects)."""
    return victim.id not in only or SHARE_XATTR in (victim.xattrs or {})


def setattr_in(
    tx: Txn, path: str, mode: int | None, mtime_ns: int | None, attrs: dict | None = None
) -> NodeInfo:
    parts = parse_path(path)
    mode = None if mode is None else check_mode(mode)
    mtime_ns = None if mtime_ns is None else check_mtime(mtime_ns)
    attrs = check_attrs(attrs)
    node = inode_of(tx, tx.lookup(parts))
    if mode is not None:
        node.mode = mode
    if mtime_ns is not None:
        node.mtime_ns = mtime_ns
    stamp(tx, node, attrs)
    return tx.journal(node)


def set_xattr_in(
    tx: Txn, path: str, name: str, value: bytes | None, attrs: dict | None = None
) -> NodeInfo:
    parts = parse_path(path)
    _check_xattr(name, value)
    attrs = check_attrs(attrs)
    node = inode_of(tx, tx.lookup(parts))
    xattrs = dict(node.xattrs or {})
    if value is None:
        if xattrs.pop(name, None) is None:
            raise NotFound(f"no extended attribute {name!r} on {path}")
    else:
        xattrs[name] = base64.b64encode(value).decode("ascii")
    node.xattrs = xattrs  # a new dict, so the JSON column sees the change
    stamp(tx, node, attrs)
    return tx.journal(node)


def move_in(
    tx: Txn, src: str, dst: str, mode: MoveMode, attrs: dict | None = None
) -> tuple[NodeInfo, NodeInfo | None]:
    """Return (moved node, replaced-or-exchanged node). Moving a name onto another name of
    the same file is a no-op, as rename(2) says."""
    src_parts, dst_parts = parse_path(src), parse_path(dst)
    attrs = check_attrs(attrs)
    if mode not in MOVE_MODES:
        raise InvalidRequest(f"move mode must be one of {', '.join(MOVE_MODES)}")
    if not src_parts or not dst_parts:
        raise Forbidden("the root folder cannot be moved or replaced")
    node = tx.lookup(src_parts)
    new_parent = tx.lookup_dir(dst_parts[:-1])
    new_name = dst_parts[-1]
    target = tx.child(new_parent, new_name)
    if target is not None and inode_of(tx, target).id == inode_of(tx, node).id:
        return tx.info(node), None
    if node.type == DIR and tx.is_within(new_parent, node):
        raise InvalidMove(f"cannot move {src} into itself")
    if target is None:
        if mode == "exchange":
            raise NotFound(f"nothing to exchange with at {dst}")
        return _relocate(tx, node, new_parent, new_name, attrs), None
    if mode == "noreplace":
        raise AlreadyExists(f"already exists: {dst}")
    if mode == "exchange":
        return _exchange(tx, node, target, attrs)
    _check_replace(tx, node, target, dst)
    unname(tx, target, attrs)
    replaced = tx.info(target)
    return _relocate(tx, node, new_parent, new_name, attrs), replaced


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{what} is not valid UTF-8") from exc


def _check_xattr(name: object, value: object) -> None:
    if not isinstance(name, str) or not name.startswith(XATTR_PREFIXES) or name.endswith("."):
        raise InvalidRequest(f"extended attribute names start with one of {XATTR_PREFIXES}")
    if "\0" in name or len(_utf8(name, "an extended attribute name")) > NAME_MAX:
        raise InvalidRequest(f"extended attribute names have at most {NAME_MAX} bytes, no NUL")
    if value is not None and not isinstance(value, bytes):
        raise InvalidRequest("an extended attribute value is bytes")
    if value is not None and len(value) > XATTR_VALUE_MAX:
        raise PayloadTooLarge(f"extended attribute values have at most {XATTR_VALUE_MAX} bytes")


def _check_replace(tx: Txn, node: Node, target: Node, dst: str) -> None:
    """rename(2)'s rules for replacing an existing target."""
    if node.type == DIR and target.type != DIR:
        raise NotADirectory(f"cannot replace the non-folder {dst} with a folder")
    if node.type != DIR and target.type == DIR:
        raise IsADirectory(f"cannot replace the folder {dst} with a non-folder")
    if target.type == DIR and tx.has_children(target):
        raise NotEmpty(f"folder not empty: {dst}")


def _relocate(tx: Txn, node: Node, parent: Node, name: str, attrs: dict) -> NodeInfo:
    old_parent = tx.session.get(Node, node.parent_id)
    tx.displaced(node)
    node.parent_id = parent.id
    node.name = name
    tx.session.flush()
    tx.placed(node)
    tx.forget_paths()
    _moved(tx, node, attrs)
    entries_changed(tx, old_parent, attrs)
    if parent.id != old_parent.id:
        entries_changed(tx, parent, attrs)
    return tx.journal(node)


def _moved(tx: Txn, node: Node, attrs: dict) -> None:
    """A moved name's file changes (its ctime, as Linux filesystems set it)."""
    inode = inode_of(tx, node)
    inode.ctime_ns = attrs.get("ctime_ns", tx.now_ns)
    if inode is not node:
        tx.journal(inode)


def _exchange(tx: Txn, node: Node, target: Node, attrs: dict) -> tuple[NodeInfo, NodeInfo]:
    """Swap two nodes' places; neither may end up inside itself."""
    node_parent = tx.session.get(Node, node.parent_id)
    target_parent = tx.session.get(Node, target.parent_id)
    if target.type == DIR and tx.is_within(node_parent, target):
        raise InvalidMove(f"cannot move {tx.path_of(target)} into itself")
    if node.type == DIR and tx.is_within(target_parent, node):
        raise InvalidMove(f"cannot move {tx.path_of(node)} into itself")
    node_place, target_place = (node.parent_id, node.name), (target.parent_id, target.name)
    tx.displaced(node)
    tx.displaced(target)
    # Step aside from the live-name index while the names cross.
    node.deleted = True
    tx.session.flush()
    target.parent_id, target.name = node_place
    tx.session.flush()
    node.parent_id, node.name = target_place
    node.deleted = False
    tx.session.flush()
    tx.placed(node)
    tx.placed(target)
    tx.forget_paths()
    for moved in (node, target):
        _moved(tx, moved, attrs)
    entries_changed(tx, node_parent, attrs)
    if target_parent.id != node_parent.id:
        entries_changed(tx, target_parent, attrs)
    return tx.journal(node), tx.journal(target)
