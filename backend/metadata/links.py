"""Public read-only links to a file or folder (docs/sharing.md, Public links).

A link names a node, not a path, so it follows the node when its owner renames or moves it,
and dies with it. Its secret is 256 random bits, kept only as a SHA-256 like a token. Whoever
holds the URL reads through the owner's drive, never outside the linked node: a path asked
of a folder link is resolved below the folder.
"""

import secrets
from dataclasses import dataclass

from sqlalchemy import false, select

from backend import clock
from backend.db.models import Link, Namespace, Node, User
from backend.metadata.nodes import Tree, format_path, parse_path
from backend.metadata.txn import Database
from backend.metadata.types import Principal
from backend.metadata.users import hash_token
from backend.protocol.errors import InvalidRequest, LinkExpired, NotFound

MAX_LINK_S = 366 * 24 * 3600
SECOND_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads through a link: the owner's drive, at the path asked (inside the link)."""

    who: Principal
    path: str


class Links:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, who: Principal, path: str, expires_in_s: int) -> dict:
        """A new link to the node at `path` of the caller's own drive; its secret is in
        the answer only."""
        if type(expires_in_s) is not int or not 1 <= expires_in_s <= MAX_LINK_S:
            raise InvalidRequest(f"expires_in_s is 1 to {MAX_LINK_S} seconds")
        parts = parse_path(path)
        token = secrets.token_urlsafe(32)
        with self.db.write(who.namespace_id) as tx:
            node = tx.lookup(parts)
            link = Link(
                token_hash=hash_token(token), namespace_id=who.namespace_id, node_id=node.id,
                created=tx.now_ns, expires=tx.now_ns + expires_in_s * SECOND_NS,
            )  # fmt: skip
            tx.session.add(link)
            tx.session.flush()
            return {**_describe(link, tx.path_of(node)), "token": token}

    def list(self, who: Principal) -> list[dict]:
        """The caller's links that still work, newest first."""
        with self.db.read() as session:
            query = (
                select(Link, Node)
                .join(Node, Node.id == Link.node_id)
                .where(
                    Link.namespace_id == who.namespace_id,
                    Link.revoked.is_(None),
                    Link.expires > clock.now_ns(),
                    Node.deleted == false(),
                )
                .order_by(Link.id.desc())
            )
            tree = Tree(session, who.namespace_id)
            return [_describe(link, tree.path_of(node)) for link, node in session.execute(query)]

    def revoke(self, who: Principal, link_id: int) -> None:
        with self.db.write(who.namespace_id) as tx:
            link = tx.session.get(Link, link_id)
            if link is None or link.namespace_id != who.namespace_id or link.revoked:
                raise NotFound(f"no such link: {link_id}")
            link.revoked = tx.now_ns

    def resolve(self, token: str, path: str) -> Reader:
        """Who reads, and where, for a request of a link's URL (`path`: below the linked
        folder, "/" for the node itself). Unknown and revoked links are not found."""
        below = parse_path(path)
        with self.db.read() as session:
            link = session.scalars(
                select(Link).where(Link.token_hash == hash_token(token))
            ).one_or_none()
            node = None if link is None else session.get(Node, link.node_id)
            if link is None or link.revoked is not None or node is None or node.deleted:
                raise NotFound("no such link")
            if link.expires <= clock.now_ns():
                raise LinkExpired("this link has expired")
            user_id, name = session.execute(
                select(User.id, User.name)
                .join(Namespace, Namespace.user_id == User.id)
                .where(Namespace.id == link.namespace_id)
            ).one()
            top = Tree(session, link.namespace_id).path_of(node)
        inside = top if not below else format_path([*parse_path(top), *below])
        return Reader(Principal(user_id, name, link.namespace_id, device="public link"), inside)


def _describe(link: Link, path: str) -> dict:
    return {"id": link.id, "path": path, "created": link.created, "expires": link.expires}
