"""Folders shared between users (docs/sharing.md).

The data stays in the owner's drive. The recipient's drive holds a folder node of its own,
the *mount*, which the recipient may rename or move; the server resolves every path through
it, and every node id of the owner's folder, in the owner's drive (`route`), refusing
changes to a read-only share. The owner's changes under the folder are copied into the
recipient's change journal in the transaction that makes them, with the shared folder's id
and path replaced by the mount's (backend/metadata/share_feed.py).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import (
    DIR,
    READ,
    WRITE,
    Namespace,
    Node,
    Share,
    User,
)
from backend.metadata.nodes import Tree, parse_path
from backend.metadata.types import BatchOp, CommitResult, NodeInfo, Principal
from backend.protocol.errors import (
    AlreadyExists,
    CirrusError,
    CrossShareMove,
    Forbidden,
    InvalidRequest,
    NotADirectory,
    NotFound,
    ReadOnlyShare,
    UnknownUser,
)

if TYPE_CHECKING:
    from backend.metadata.batch import Batches
    from backend.metadata.txn import Database, Txn

# The mount's extended attribute: the access ("read" or "write") the recipient has. The
# recipient's mount refuses changes below a read-only one without asking the server.
SHARE_XATTR = "trusted.cirrus.share"
# The drive a routed write comes from (its user's blocks may complete the owner's commit).
GUEST: ContextVar[int | None] = ContextVar("cirrus_share_guest", default=None)


@dataclass(frozen=True, slots=True)
class Mount:
    """A live share as its recipient sees it."""

    share_id: int
    owner_namespace_id: int
    folder_id: int
    folder_path: str | None  # None: the owner deleted the folder
    mount_id: int
    mount_parent_id: int
    mount_name: str
    mount_path: str
    writable: bool

    def map_path(self, path: str) -> str:
        if self.folder_path is None:
            return path
        if path == self.folder_path:
            return self.mount_path
        if path.startswith(self.folder_path + "/"):
            return self.mount_path + path[len(self.folder_path) :]
        return path

    def map_json(self, data: dict) -> dict:
        """A journaled node of the owner's folder as the recipient's drive shows it."""
        data = dict(data)
        if data["parent_id"] == self.folder_id:
            data["parent_id"] = self.mount_id
        data["path"] = self.map_path(data["path"])
        return data

    def map_info(self, info: NodeInfo) -> NodeInfo:
        if info.id == self.folder_id:
            return dataclasses.replace(
                info, id=self.mount_id, parent_id=self.mount_parent_id, name=self.mount_name,
                path=self.mount_path,
            )  # fmt: skip
        parent = self.mount_id if info.parent_id == self.folder_id else info.parent_id
        return dataclasses.replace(info, parent_id=parent, path=self.map_path(info.path))


@dataclass(frozen=True, slots=True)
class Route:
    """Where a call of `who` goes: its principal there, its paths there, and how to show the
    answers (`mount` None: the caller's own drive)."""

    who: Principal
    mount: Mount | None = None
    rescued: bool = False  # a commit into a revoked share, kept as a conflicted copy
    guest: int | None = None  # the caller's own drive, when the call goes to another

    @property
    def key(self) -> int | None:
        """The share the call goes through (None: the caller's own drive)."""
        return self.mount.share_id if self.mount else None

    def value(self, value: Any) -> Any:
        """An answer of the owner's drive as the caller sees it."""
        if self.mount is None and not self.rescued:
            return value
        if isinstance(value, NodeInfo):
            return self.mount.map_info(value) if self.mount else value
        if isinstance(value, CommitResult):
            node = self.value(value.node)
            conflict = value.conflict or self.rescued
            return dataclasses.replace(value, node=node, path=node.path, conflict=conflict)
        if isinstance(value, tuple):
            return tuple(self.value(item) for item in value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Run the call as a guest of the owner's drive (see GUEST)."""
        token = GUEST.set(self.guest)
        try:
            yield
        finally:
            GUEST.reset(token)


def mounts_of(
    session: Session, namespace_id: int, shares: list[Share] | None = None
) -> list[Mount]:
    """The live shares shown in a drive (one query, plus a path walk per share);
    `shares`: the drive's share rows, when read already."""
    if shares is None:
        query = select(Share).where(Share.recipient_namespace_id == namespace_id)
        shares = list(session.scalars(query))
    mounts = []
    mine = Tree(session, namespace_id)
    for share in shares:
        if share.revoked is not None:
            continue
        placeholder = session.get(Node, share.mount_id)
        if placeholder is None or placeholder.deleted:
            continue
        folder = session.get(Node, share.folder_id)
        owner = Tree(session, share.owner_namespace_id)
        folder_path = None if folder is None or folder.deleted else owner.path_of(folder)
        mounts.append(Mount(
            share.id, share.owner_namespace_id, share.folder_id, folder_path, placeholder.id,
            placeholder.parent_id, placeholder.name, mine.path_of(placeholder),
            share.access == WRITE,
        ))  # fmt: skip
    return mounts


def _inside(path: str, top: str, at_top: bool) -> bool:
    return path.startswith(top + "/") or (at_top and path == top)


def conflicted_folder(path: str, author: str, now_ns: int) -> str:
    """Where a revoked share's late edits go: a conflicted copy of the mount beside it."""
    day = datetime.fromtimestamp(now_ns / 1e9, UTC).strftime("%Y-%m-%d")
    return f"{path} ({author.replace('/', '_')}'s conflicted copy {day})"


@dataclass(frozen=True, slots=True)
class View:
    mounts: list[Mount]
    revoked: list[tuple[str, int]]  # (where the mount was, when it was revoked)


def _enter(who: Principal, mount: Mount, write: bool) -> Route:
    if mount.folder_path is None:
        raise NotFound("the shared folder was deleted by its owner")
    if write and not mount.writable:
        raise ReadOnlyShare(f"{mount.mount_path} is shared with you read-only")
    there = dataclasses.replace(who, namespace_id=mount.owner_namespace_id)
    return Route(there, mount, guest=who.namespace_id)


def _owner_path(mount: Mount, path: str) -> str:
    return mount.folder_path + path[len(mount.mount_path) :] if mount.folder_path else path


def _check_xattr(name: object) -> None:
    """The share attribute of a mount node is the server's to set."""
    if isinstance(name, str) and name.startswith(SHARE_XATTR):
        raise Forbidden(f"{SHARE_XATTR} is set by the server")


class Shares:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- routing ---------------------------------------------------------------------------

    def view(self, who: Principal) -> View:
        """The shares shown in the caller's drive, live and revoked (one read)."""
        with self.db.read() as session:
            query = select(Share).where(Share.recipient_namespace_id == who.namespace_id)
            shares = list(session.scalars(query))
            revoked = [(s.mount_path, s.revoked) for s in shares if s.revoked and s.mount_path]
            return View(mounts_of(session, who.namespace_id, shares), revoked)

    def route(self, who: Principal, path: object, write: bool, *, at_top: bool = False,
              commit: bool = False, view: View | None = None) -> tuple[Route, object]:  # fmt: skip
        """(route, path there) of a path of `who`'s drive. `at_top`: the mount itself
        stands for the shared folder (listing it); `commit`: a commit into a revoked share
        is kept in the caller's drive as a conflicted copy."""
        if not isinstance(path, str):
            return Route(who), path
        view = view or self.view(who)
        for mount in view.mounts:
            if _inside(path, mount.mount_path, at_top):
                return _enter(who, mount, write), _owner_path(mount, path)
        if commit:
            for mount_path, revoked in view.revoked:
                if path.startswith(mount_path + "/") and not self._exists(who, mount_path):
                    folder = conflicted_folder(mount_path, who.author, revoked)
                    return Route(who, rescued=True), folder + path[len(mount_path) :]
        return Route(who), path

    def _exists(self, who: Principal, path: str) -> bool:
        """Whether the drive has something at `path` (a folder made after a revocation
        takes the revoked share's late edits as any folder would)."""
        with self.db.read() as session:
            try:
                Tree(session, who.namespace_id).lookup(parse_path(path))
            except (NotFound, NotADirectory):
                return False
        return True

    def route_id(self, who: Principal, node_id: object) -> Route:
        """The route of a node id of `who` (an id of a shared folder's node goes there)."""
        if type(node_id) is not int:
            return Route(who)
        with self.db.read() as session:
            node = session.get(Node, node_id) if 0 < node_id < 2**63 else None
            if node is None or node.namespace_id == who.namespace_id:
                return Route(who)
            owner = Tree(session, node.namespace_id)
            for mount in mounts_of(session, who.namespace_id):
                folder = session.get(Node, mount.folder_id)
                if mount.owner_namespace_id == node.namespace_id and owner.is_within(node, folder):
                    return _enter(who, mount, False)
        return Route(who)

    def refuse_shared(self, who: Principal, path: str) -> None:
        """Forbidden when `path` is a share received, or lies in one (links are the
        owner's to make)."""
        route, _there = self.route(who, path, False, at_top=True)
        if route.mount is not None:
            raise Forbidden(f"{path} is shared with you: only its owner can link to it")

    def route_move(self, who: Principal, src: object, dst: object,
                   view: View | None = None) -> tuple[Route, Any, Any]:  # fmt: skip
        """A move or hard link: both ends must be in the same drive."""
        view = view or self.view(who)
        route, src_there = self.route(who, src, True, view=view)
        dst_route, dst_there = self.route(who, dst, True, view=view)
        if route.key != dst_route.key:
            raise CrossShareMove("a shared folder and the rest of the drive are separate drives")
        return route, src_there, dst_there

    def batch(self, batches: Batches, who: Principal, ops: list[BatchOp], render: Callable,
              stop_on_error: bool, client: str | None) -> list[dict]:  # fmt: skip
        """Batches.apply, each run of operations on one drive in a transaction of its own;
        an operation refused by its route is answered alone."""
        from backend.metadata.batch import Outcome  # batch.py imports txn.py, which needs us

        view = self.view(who)
        if not view.mounts and not view.revoked:
            return batches.apply(who, ops, render, stop_on_error, client)
        planned = [self._route_op(who, op, view) for op in ops]
        answers: list[dict] = []
        index = 0
        while index < len(planned):
            route, op = planned[index]
            if isinstance(op, CirrusError):
                answers.append(render(Outcome(ops[index].kind, error=op)))
                index += 1
                if stop_on_error:
                    break
                continue
            end = index + 1
            while end < len(planned) and not isinstance(planned[end][1], CirrusError) and (
                planned[end][0].key == route.key
            ):  # fmt: skip
                end += 1
            run = [op for _route, op in planned[index:end]]

            def shown(outcome: Outcome, route: Route = route) -> dict:
                return render(dataclasses.replace(outcome, value=route.value(outcome.value)))

            with route.applied():
                got = batches.apply(route.who, run, shown, stop_on_error, client)
            answers.extend(got)
            index = end
            if stop_on_error and (
                len(got) < len(run) or "error" in got[-1] or got[-1]["body"].get("conflict")
            ):
                break
        return answers

    def _route_op(self, who: Principal, op: BatchOp, view: View) -> tuple[Route, Any]:
        """(route, the operation there), or (None, why it is refused)."""
        args = dict(op.args)
        try:
            if "src" in args:
                route, args["src"], args["dst"] = self.route_move(
                    who, args["src"], args["dst"], view
                )
            elif op.kind == "commit":
                request = args["request"]
                route, path = self.route(who, request.path, True, commit=True, view=view)
                args["request"] = dataclasses.replace(request, path=path)
            else:
                route, args["path"] = self.route(who, args.get("path"), True, view=view)
            if op.kind == "xattr":
                _check_xattr(args.get("name"))
        except CirrusError as exc:
            return Route(who), exc
        return route, dataclasses.replace(op, args=args)

    # -- sharing and revoking --------------------------------------------------------------

    def add(self, who: Principal, path: str, user: str, access: str) -> dict:
        if access not in (READ, WRITE):
            raise InvalidRequest('access is "read" or "write"')
        route, _there = self.route(who, path, False, at_top=True)
        if route.mount is not None:
            if not route.mount.writable:
                raise ReadOnlyShare(f"{path} is in a folder shared with you read-only")
            raise Forbidden("only the owner of a shared folder can share what is in it")
        parts = parse_path(path)
        with self.db.read() as session:
            recipient = session.execute(
                select(User.id, Namespace.id)
                .join(Namespace, Namespace.user_id == User.id)
                .where(User.name == user)
            ).one_or_none()
            if recipient is None:
                raise UnknownUser(f"no such user: {user}")
            if recipient[0] == who.user_id:
                raise InvalidRequest("a folder cannot be shared with its own owner")
            tree = Tree(session, who.namespace_id)
            folder = tree.lookup(parts)
            if folder.type != DIR:
                raise NotADirectory(f"only folders can be shared: {path}")
            if not parts:
                raise InvalidRequest("share a folder, not the whole drive")
            self._check_overlap(session, tree, folder, recipient[1])
        with self.db.write(recipient[1]) as tx:
            return self._mount(tx, who, folder.id, access)

    @staticmethod
    def _check_overlap(session: Session, tree: Tree, folder: Node, recipient_ns: int) -> None:
        """One node must not reach a recipient through two shares."""
        query = select(Share.folder_id).where(
            Share.owner_namespace_id == tree.namespace_id,
            Share.recipient_namespace_id == recipient_ns,
            Share.revoked.is_(None),
        )
        for folder_id in session.scalars(query):
            other = session.get(Node, folder_id)
            if other is not None and (
                tree.is_within(folder, other) or tree.is_within(other, folder)
            ):
                raise AlreadyExists(f"{tree.path_of(other)} is shared with this user already")

    def _mount(self, tx: Txn, who: Principal, folder_id: int, access: str) -> dict:
        """Make the mount in the recipient's drive and journal the folder's content there."""
        folder = tx.session.get(Node, folder_id)
        if folder is None or folder.deleted:
            raise NotFound("the folder was deleted meanwhile")
        root = tx.root()
        name = _free_name(tx, root, folder.name, who.user_name)
        mount = tx.create(root, name, DIR, 0o755, None)
        mount.xattrs = {SHARE_XATTR: base64.b64encode(access.encode()).decode()}
        tx.journal(mount)
        share = Share(
            owner_namespace_id=who.namespace_id, folder_id=folder.id,
            recipient_namespace_id=tx.namespace_id, mount_id=mount.id, access=access,
            created=tx.now_ns,
        )  # fmt: skip
        tx.session.add(share)
        tx.session.flush()
        owner = Tree(tx.session, who.namespace_id)
        view = Mount(share.id, who.namespace_id, folder.id, owner.path_of(folder), mount.id,
                     root.id, name, tx.path_of(mount), access == WRITE)  # fmt: skip
        for node in owner.subtree(folder)[1:]:
            tx.journal_snapshot(node.id, view.map_json(owner.info(node).to_json()))
        return {"id": share.id, "path": view.folder_path, "user": None, "access": access,
                "mount_path": view.mount_path}  # fmt: skip

    def remove(self, who: Principal, share_id: int) -> None:
        """Revoke (the owner) or leave (the recipient) a share: the mount leaves the
        recipient's drive; its path is kept for the recipient's late edits."""
        with self.db.read() as session:
            share = session.get(Share, share_id)
            mine = share is not None and who.namespace_id in (
                share.owner_namespace_id,
                share.recipient_namespace_id,
            )
            if not mine or share.revoked is not None:
                raise NotFound(f"no such share: {share_id}")
        with self.db.write(share.recipient_namespace_id, who.author) as tx:
            share = tx.session.get(Share, share_id)
            if share.revoked is not None:
                raise NotFound(f"no such share: {share_id}")
            share.revoked = tx.now_ns
            mount = tx.session.get(Node, share.mount_id)
            if mount is not None and not mount.deleted:
                share.mount_path = tx.path_of(mount)
                mount.xattrs = {}  # restored from the trash, it is a plain folder
                tx.remove(mount)

    def list(self, who: Principal) -> dict:
        with self.db.read() as session:
            users = dict(session.execute(
                select(Namespace.id, User.name).join(User, User.id == Namespace.user_id)
            ).all())  # fmt: skip
            mine = Tree(session, who.namespace_id)
            query = select(Share).where(
                Share.owner_namespace_id == who.namespace_id, Share.revoked.is_(None)
            )
            shared = []
            for share in session.scalars(query):
                folder = session.get(Node, share.folder_id)
                shared.append({
                    "id": share.id, "path": mine.path_of(folder) if not folder.deleted else None,
                    "user": users.get(share.recipient_namespace_id), "access": share.access,
                    "created": share.created,
                })  # fmt: skip
            received = [
                {"id": m.share_id, "path": m.mount_path, "owner": users.get(m.owner_namespace_id),
                 "access": "write" if m.writable else "read"}
                for m in mounts_of(session, who.namespace_id)
            ]  # fmt: skip
        return {"shared": shared, "received": received}


def _free_name(tx: Txn, parent: Node, name: str, owner: str) -> str:
    for candidate in [name, f"{name} ({owner})", *(f"{name} ({owner} {n})" for n in range(2, 100))]:
        if tx.child(parent, candidate) is None:
            return candidate
    raise AlreadyExists(f"no free name for {name} in the recipient's drive")


# -- the service's calls, routed -----------------------------------------------------------


def routed(*, write: bool, at_top: bool = False, commit: bool = False) -> Callable:
    """Route a MetadataService method whose second argument is a path (or `request` with
    a `.path`, or a `node_id`) through the caller's shares."""

    def decorate(method: Callable) -> Callable:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def wrapper(self, who: Principal, *args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(self, who, *args, **kwargs)
            arguments = bound.arguments
            shares: Shares = self._shares
            if "request" in arguments:
                request = arguments["request"]
                route, path = shares.route(who, request.path, write, commit=commit)
                arguments["request"] = dataclasses.replace(request, path=path)
            elif arguments.get("path") is not None:
                route, arguments["path"] = shares.route(
                    who, arguments["path"], write, at_top=at_top
                )
            elif "node_id" in arguments:
                route = shares.route_id(who, arguments["node_id"])
            else:
                route = Route(who)
            if "src" in arguments:
                route, arguments["src"], arguments["dst"] = shares.route_move(
                    who, arguments["src"], arguments["dst"]
                )
            _check_xattr(arguments.get("name"))
            arguments["who"] = route.who
            with route.applied():
                return route.value(method(*bound.args, **bound.kwargs))

        return wrapper

    return decorate
