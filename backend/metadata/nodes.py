"""Reading the drive tree inside one transaction: path lookup, full paths, NodeInfo values.

`Tree` is bound to a session and a namespace, so a lookup can never wander into another
user's drive. Full paths are computed by walking parents and cached per transaction, and so
are the live children found by name: a batch of hundreds of operations in one folder
resolves each path component once, not once per operation. A transaction that writes keeps
the child cache true through `placed`/`displaced` and drops it when a savepoint rolls back.
"""

import base64
from functools import cache

from sqlalchemy import Select, and_, bindparam, exists, false, select
from sqlalchemy.orm import Session, aliased

from backend.db.models import DIR, HARDLINK, Node
from backend.metadata.types import NodeInfo
from backend.protocol.errors import (
    InvalidPathError,
    InvalidRequest,
    NameTooLong,
    NotADirectory,
    NotFound,
)
from backend.protocol.paths import NAME_MAX, PATH_MAX, InvalidPath, split_path

MODE_MASK = 0o7777
INT64_MAX = 2**63 - 1
MAX_CHAIN = 16  # names below one another resolved by one query at most
# Statements of every lookup, built once: building one cost about as much as running it.
_ROOT = select(Node).where(Node.namespace_id == bindparam("namespace"), Node.parent_id.is_(None))
_SOME_CHILDREN = (
    select(Node)
    .where(Node.parent_id == bindparam("parent"), Node.deleted == false())
    .limit(bindparam("limit"))
)
_HAS_CHILDREN = select(
    exists().where(Node.parent_id == bindparam("parent"), Node.deleted == false())
)


def parse_path(path: object) -> list[str]:
    """The components of a canonical drive path, or the API's path error."""
    try:
        return split_path(path)  # type: ignore[arg-type]
    except InvalidPath as exc:
        names = path.split("/") if isinstance(path, str) else []
        if any(len(n.encode("utf-8", "surrogatepass")) > NAME_MAX for n in names):
            raise NameTooLong(f"a name in the path is longer than {NAME_MAX} bytes") from exc
        raise InvalidPathError(str(exc)) from exc


def format_path(parts: list[str]) -> str:
    return "/" + "/".join(parts)


def check_mode(mode: object) -> int:
    if type(mode) is not int or not 0 <= mode <= MODE_MASK:
        raise InvalidRequest(f"mode must be an integer between 0 and 0o7777, not {mode!r}")
    return mode


def check_mtime(mtime_ns: object) -> int:
    if type(mtime_ns) is not int or not -INT64_MAX <= mtime_ns <= INT64_MAX:
        raise InvalidRequest(f"mtime_ns must be a 64-bit integer, not {mtime_ns!r}")
    return mtime_ns


def node_info(node: Node, path: str, shown: Node | None = None) -> NodeInfo:
    """The node at `path`; `shown`: whose attributes and content it shows (a hard link's
    file), else its own."""
    name = node
    node = shown or node
    return NodeInfo(
        id=name.id,
        parent_id=name.parent_id,
        name=name.name,
        path=path,
        type=name.type,  # type: ignore[arg-type]
        mode=node.mode,
        mtime_ns=node.mtime_ns,
        size=node.size,
        rev=node.rev,
        head_rev=node.head_rev,
        target=node.target,
        xattrs={k: base64.b64decode(v) for k, v in (node.xattrs or {}).items()},
        deleted=name.deleted,
        uid=node.uid,
        gid=node.gid,
        atime_ns=node.atime_ns,
        ctime_ns=node.ctime_ns,
        rdev=node.rdev or 0,
        nlink=node.nlink or 1,
        link_id=name.link_id,
    )


def node_info_from_json(data: dict) -> NodeInfo:
    """Rebuild a journaled snapshot (NodeInfo.to_json) into a NodeInfo."""
    return NodeInfo(
        id=data["id"],
        parent_id=data["parent_id"],
        name=data["name"],
        path=data["path"],
        type=data["type"],
        mode=data["mode"],
        mtime_ns=data["mtime_ns"],
        size=data["size"],
        rev=data["rev"],
        head_rev=data["head_rev"],
        target=data["target"],
        xattrs={k: base64.b64decode(v) for k, v in data["xattrs"].items()},
        deleted=data["deleted"],
        uid=data.get("uid"),
        gid=data.get("gid"),
        atime_ns=data.get("atime_ns"),
        ctime_ns=data.get("ctime_ns"),
        rdev=data.get("rdev", 0),
        nlink=data.get("nlink", 1),
        link_id=data.get("link_id"),
    )


class Tree:
    """The live tree of one namespace, seen through one session."""

    def __init__(self, session: Session, namespace_id: int) -> None:
        self.session = session
        self.namespace_id = namespace_id
        self._paths: dict[int, str] = {}
        self._root: Node | None = None
        self._children: dict[tuple[int, str], Node] = {}
        # Names found absent by a chained lookup (placed() strikes them off).
        self._absent: set[tuple[int, str]] = set()
        # Folders created in this transaction or read whole: every live child of theirs is
        # in _children, so a name missing there is absent without a query.
        self._complete: set[int] = set()
        # A folder with at most this many children is read whole at its second lookup (0:
        # never); folders found bigger are looked up name by name.
        self.read_whole = 0
        self._looked_up: set[int] = set()
        self._big: set[int] = set()

    def root(self) -> Node:
        if self._root is None:
            self._root = self.session.scalars(_ROOT, {"namespace": self.namespace_id}).one()
        return self._root

    def child(self, parent: Node, name: str, below: list[str] | None = None) -> Node | None:
        """The live child named `name`. `below`: the names a walk will look up under it
        next (folders on the way), resolved by the same query when it is not cached: a
        path of cold folders costs one query, not one per folder."""
        key = (parent.id, name)
        found = self._children.get(key)
        if found is not None or parent.id in self._complete or key in self._absent:
            return found
        if not below and self._second_lookup(parent) and self._read_whole(parent):
            return self._children.get(key)
        return self._chain(parent, [name, *(below or [])[: MAX_CHAIN - 1]])

    def _chain(self, parent: Node, names: list[str]) -> Node | None:
        """Look up names[0] under parent, names[1] under it ... in one query; cache every
        node found and the first name found absent; the first node, if any."""
        query = _chain_query(len(names))
        params = {f"name{depth}": name for depth, name in enumerate(names)}
        row = self.session.execute(query, {"namespace": self.namespace_id,
                                           "parent": parent.id, **params}).first()  # fmt: skip
        above = parent
        for name, node in zip(names, row or [None], strict=False):
            if node is None:
                self._absent.add((above.id, name))
                break
            self._children[(above.id, name)] = node
            above = node
        return row[0] if row else None

    def _second_lookup(self, parent: Node) -> bool:
        """True at the second lookup of a name in this folder: the folders of a path's
        ancestors, looked up once each, are not worth reading whole."""
        if not self.read_whole or parent.id in self._big:
            return False
        if parent.id in self._looked_up:
            return True
        self._looked_up.add(parent.id)
        return False

    def _read_whole(self, parent: Node) -> bool:
        """Read a small folder's live children at once: a batch looking up many names in
        one folder (or finding them absent) then pays one query, not one per name."""
        params = {"parent": parent.id, "limit": self.read_whole + 1}
        children = self.session.scalars(_SOME_CHILDREN, params).all()
        if len(children) > self.read_whole:
            self._big.add(parent.id)
            return False
        for node in children:
            self._children[(parent.id, node.name)] = node
        self._complete.add(parent.id)
        return True

    def placed(self, node: Node, fresh: bool = False) -> None:
        """Note a live node at its (parent, name); `fresh`: a folder made in this
        transaction, whose children all pass through here."""
        self._children[(node.parent_id, node.name)] = node
        self._absent.discard((node.parent_id, node.name))
        if fresh:
            self._complete.add(node.id)

    def displaced(self, node: Node) -> None:
        """Forget the node at its current (parent, name): it is leaving that place."""
        if self._children.get((node.parent_id, node.name)) is node:
            del self._children[(node.parent_id, node.name)]

    def children(self, parent: Node) -> list[Node]:
        query = (
            select(Node)
            .where(Node.parent_id == parent.id, Node.deleted == false())
            .order_by(Node.name)
        )
        return list(self.session.scalars(query))

    def subtree(self, top: Node) -> list[Node]:
        """The node and every live node below it, parents before children."""
        found = [top]
        for current in found:  # grows while iterating: a breadth-first walk
            if current.type == DIR:
                found.extend(self.children(current))
        return found

    def has_children(self, parent: Node) -> bool:
        return bool(self.session.scalar(_HAS_CHILDREN, {"parent": parent.id}))

    def lookup(self, parts: list[str]) -> Node:
        """The live node at a parsed path; NotADirectory when a file is in the way."""
        node = self.root()
        for depth, name in enumerate(parts):
            if node.type != DIR:
                raise NotADirectory(f"not a folder: {format_path(parts[:depth])}")
            found = self.child(node, name, parts[depth + 1 : -1])
            if found is None:
                raise NotFound(f"no such file or folder: {format_path(parts[: depth + 1])}")
            node = found
        return node

    def lookup_dir(self, parts: list[str]) -> Node:
        node = self.lookup(parts)
        if node.type != DIR:
            raise NotADirectory(f"not a folder: {format_path(parts)}")
        return node

    def by_id(self, node_id: object, *, deleted_ok: bool = False) -> Node:
        """A node of this namespace by id (ids of other drives look absent)."""
        if type(node_id) is not int:
            raise InvalidRequest("a node id must be an integer")
        node = self.session.get(Node, node_id) if 0 < node_id <= INT64_MAX else None
        if node is None or node.namespace_id != self.namespace_id:
            raise NotFound(f"no such node: {node_id}")
        if node.deleted and not deleted_ok:
            raise NotFound(f"node {node_id} was deleted")
        return node

    def is_within(self, node: Node, ancestor: Node) -> bool:
        """True when node is ancestor itself or lies somewhere below it."""
        current: Node | None = node
        for _ in range(PATH_MAX):
            if current is None:
                return False
            if current.id == ancestor.id:
                return True
            current = self.session.get(Node, current.parent_id) if current.parent_id else None
        raise AssertionError("the tree has a cycle")

    def path_of(self, node: Node) -> str:
        chain: list[Node] = []
        current = node
        for _ in range(PATH_MAX):
            if current.parent_id is None or current.id in self._paths:
                break
            chain.append(current)
            current = self.session.get(Node, current.parent_id)
        path = "/" if current.parent_id is None else self._paths[current.id]
        for below in reversed(chain):
            path = f"/{below.name}" if path == "/" else f"{path}/{below.name}"
            self._paths[below.id] = path
        return path

    def forget_paths(self) -> None:
        """Drop cached paths after a move changed some."""
        self._paths.clear()

    def forget(self) -> None:
        """Drop everything cached: a rolled back savepoint undid changes it knew of."""
        self._paths.clear()
        self._children.clear()
        self._absent.clear()
        self._complete.clear()
        self._looked_up.clear()
        self._big.clear()
        self._root = None

    def info(self, node: Node) -> NodeInfo:
        """A hard link shows its file's attributes under its own id, name and path."""
        shown = self.session.get(Node, node.link_id) if node.type == HARDLINK else None
        return node_info(node, self.path_of(node), shown)


@cache
def _chain_query(length: int) -> Select:
    """Live nodes named :name0, :name1 ... each under the one before, the first under
    :parent: one row, None from the first name absent on (built once per length)."""
    nodes = [aliased(Node) for _ in range(length)]
    query = select(*nodes).where(
        nodes[0].namespace_id == bindparam("namespace"),
        nodes[0].parent_id == bindparam("parent"),
        nodes[0].name == bindparam("name0"),
        nodes[0].deleted == false(),
    )
    for depth in range(1, length):
        below, above = nodes[depth], nodes[depth - 1]
        query = query.outerjoin(below, and_(
            below.parent_id == above.id,
            below.name == bindparam(f"name{depth}"),
            below.deleted == false(),
        ))  # fmt: skip
    return query
