"""The metadata service's public face: every operation the API layer may ask for.

Method names, arguments and return types here are what backend/api codes against. Each
method runs one database transaction; a method that changes the tree writes its
change-journal entries in the same transaction and, after commit, calls
notifier.publish(namespace_id, new_cursor). Errors are raised as the exceptions in
backend.protocol.errors (NotFound, AlreadyExists, ...), never as ORM errors.

The work is done by one module per concern (users, tree, revisions, blockrefs, journal);
this class only routes to them. The engine must come from backend.db.create_engine_for and
its schema from backend.db.migrate.
"""

import time
from collections.abc import Callable, Sequence

from sqlalchemy.engine import Engine

from backend.db.failover import repeatable, run_again
from backend.metadata import staging
from backend.metadata.batch import Batches, Outcome
from backend.metadata.blockrefs import BlockRefs
from backend.metadata.compaction import compact
from backend.metadata.journal import Journal
from backend.metadata.links import Links, Reader
from backend.metadata.quota import Quotas
from backend.metadata.retention import DEFAULT_MAX_REVISIONS, Policy, Retention
from backend.metadata.revisions import Revisions
from backend.metadata.sharing import Shares, routed
from backend.metadata.tokens import NewToken, TokenInfo, Tokens
from backend.metadata.trash import Trash
from backend.metadata.tree import TreeOps
from backend.metadata.txn import Database
from backend.metadata.types import (
    BatchOp,
    BlockList,
    ChangesPage,
    CommitRequest,
    CommitResult,
    MoveMode,
    NodeInfo,
    Notifier,
    Principal,
    RevisionInfo,
    SnapshotPage,
    TrashItem,
)
from backend.metadata.users import Users


class MetadataService:
    def __init__(
        self,
        engine: Engine,
        notifier: Notifier,
        max_revisions: int = DEFAULT_MAX_REVISIONS,
        retention: Policy | None = None,
    ) -> None:
        """max_revisions: versions kept per file (the oldest beyond it are dropped);
        retention: the server's whole policy, when more than a cap (it wins)."""
        if max_revisions < 1:
            raise ValueError("a file keeps at least one revision")
        self.engine = engine
        self.notifier = notifier
        db = Database(engine, notifier)
        self._db = db
        self._users = Users(db)
        self._tree = TreeOps(db)
        self._retention = Retention(db, retention or Policy(max_revisions=max_revisions))
        self._revisions = Revisions(db, self._retention)
        self._blocks = BlockRefs(db)
        self._journal = Journal(db)
        self._batches = Batches(db, self._retention)
        self._tokens = Tokens(db)
        self._trash = Trash(db)
        self._db = db
        self._quotas = Quotas(db)
        self._shares = Shares(db)
        self._links = Links(db)

    # users and tokens
    def create_user(self, name: str) -> str:
        """Create a user with their namespace (root folder) and return a new API token."""
        return self._users.create_user(name)

    @repeatable
    def authenticate(self, token: str, device: str | None) -> Principal:
        """Resolve a bearer token (stored hashed); raise Unauthorized when unknown."""
        return self._users.authenticate(token, device)

    def authenticate_cached(self, token: str, device: str | None) -> Principal | None:
        """The caller if known from a recent lookup (no I/O: safe on the event loop)."""
        return self._users.authenticate_cached(token, device)

    @repeatable
    def account(self, who: Principal) -> dict:
        """{"user", "namespace_id", "cursor", "used_bytes", "files", "bytes_received"}."""
        return self._users.account(who)

    # tree
    @repeatable
    @routed(write=False)
    def stat(self, who: Principal, path: str) -> NodeInfo:
        return self._tree.stat(who, path)

    @repeatable
    @routed(write=False)
    def stat_id(self, who: Principal, node_id: int) -> NodeInfo:
        return self._tree.stat_id(who, node_id)

    @repeatable
    @routed(write=False, at_top=True)
    def list_dir(self, who: Principal, path: str) -> list[NodeInfo]:
        """Children sorted by name; NotADirectory for a file."""
        return self._tree.list_dir(who, path)

    @routed(write=True)
    def mkdir(
        self,
        who: Principal,
        path: str,
        mode: int | None,
        mtime_ns: int | None,
        parents: bool,
        attrs: dict | None = None,
    ) -> tuple[NodeInfo, bool]:
        """Return (node, created). `attrs` (here and below): owner and times the change
        also sets (backend/metadata/posix.py)."""
        return self._tree.mkdir(who, path, mode, mtime_ns, parents, attrs)

    @routed(write=True)
    def symlink(
        self,
        who: Principal,
        path: str,
        target: str,
        mtime_ns: int | None,
        attrs: dict | None = None,
    ) -> NodeInfo:
        return self._tree.symlink(who, path, target, mtime_ns, attrs)

    @routed(write=True)
    def move(
        self, who: Principal, src: str, dst: str, mode: MoveMode, attrs: dict | None = None
    ) -> tuple[NodeInfo, NodeInfo | None]:
        """Return (moved node, replaced-or-exchanged node)."""
        return self._tree.move(who, src, dst, mode, attrs)

    @routed(write=True)
    def delete(
        self, who: Principal, path: str, recursive: bool, attrs: dict | None = None
    ) -> list[int]:
        return self._tree.delete(who, path, recursive, attrs)

    @routed(write=True)
    def setattr(
        self,
        who: Principal,
        path: str,
        mode: int | None,
        mtime_ns: int | None,
        attrs: dict | None = None,
    ) -> NodeInfo:
        return self._tree.setattr(who, path, mode, mtime_ns, attrs)

    @routed(write=True)
    def set_xattr(
        self, who: Principal, path: str, name: str, value: bytes | None, attrs: dict | None = None
    ) -> NodeInfo:
        return self._tree.set_xattr(who, path, name, value, attrs)

    @routed(write=True)
    def mknod(
        self,
        who: Principal,
        path: str,
        type: str,
        mode: int,
        rdev: int,
        mtime_ns: int | None,
        attrs: dict | None = None,
    ) -> NodeInfo:
        """A FIFO, socket or device node (metadata only)."""
        return self._tree.mknod(who, path, type, mode, rdev, mtime_ns, attrs)

    @routed(write=True)
    def link(self, who: Principal, src: str, dst: str, attrs: dict | None = None) -> NodeInfo:
        """A second name for a file (a hard link); the new name's node."""
        return self._tree.link(who, src, dst, attrs)

    def apply_batch(
        self,
        who: Principal,
        ops: list[BatchOp],
        render: Callable[[Outcome], dict],
        stop_on_error: bool = False,
        client: str | None = None,
    ) -> list[dict]:
        """Apply ops in order in one transaction, each undone alone when refused; the
        answers as `render` makes them (kept for ops with a seq, given again on a repeat)."""
        if client is not None and all(op.seq is not None for op in ops):
            return run_again(
                self._shares.batch, self._batches, who, ops, render, stop_on_error, client
            )
        return self._shares.batch(self._batches, who, ops, render, stop_on_error, client)

    # files and revisions
    @routed(write=True, commit=True)
    def commit(self, who: Principal, request: CommitRequest) -> CommitResult:
        if request.commit_id is not None:  # a repeat returns the first one's answer
            return run_again(self._revisions.commit, who, request)
        return self._revisions.commit(who, request)

    @repeatable
    @routed(write=False)
    def block_list(
        self, who: Principal, path: str | None, node_id: int | None, rev: int | None
    ) -> BlockList:
        """Blocks of the current uploaded revision (or rev); RevisionPending if not uploaded."""
        return self._revisions.block_list(who, path, node_id, rev)

    @repeatable
    @routed(write=False)
    def history(self, who: Principal, path: str, limit: int) -> list[RevisionInfo]:
        """Revisions newest first, at most limit (1..1000)."""
        return self._revisions.history(who, path, limit)

    @routed(write=True)
    def restore(self, who: Principal, path: str, rev: int) -> NodeInfo:
        """Make an uploaded revision current again, as a new revision."""
        return self._revisions.restore(who, path, rev).node

    @routed(write=True)
    def pin(self, who: Principal, path: str, rev: int, pinned: bool) -> RevisionInfo:
        """Pin (keep forever) or unpin an uploaded revision."""
        return self._revisions.pin(who, path, rev, pinned)

    # retention
    def retention_policy(self, who: Principal) -> Policy:
        """The policy that applies to the caller's drive (theirs over the server's)."""
        return self._retention.policy(who.namespace_id)

    def set_retention(self, user_name: str, settings: dict[str, int | str | None]) -> Policy:
        """Set a user's own retention settings (None: back to the server's)."""
        return self._retention.set_policy(user_name, settings)

    def prune_history(self) -> int:
        """Apply every drive's retention policy now; the number of revisions dropped."""
        return self._retention.sweep()

    # blocks
    @repeatable
    def missing_blocks(self, who: Principal, hashes: list[str]) -> list[str]:
        """Hashes this user has neither uploaded nor referenced (never looks at other users)."""
        return self._blocks.missing_blocks(who, hashes)

    def record_block(self, who: Principal, hash: str, size: int, stored_size: int) -> list[str]:
        """After the block store holds the block: note it, give this user a reference, and
        complete (mark uploaded, journal) every pending revision of the user now whole."""
        return self.record_blocks(who, [(hash, size, stored_size)])

    def record_blocks(
        self,
        who: Principal,
        blocks: list[tuple[str, int, int]],
        seen: dict[str, int | None] | None = None,
        owed: Sequence[tuple[str, str]] = (),
    ) -> list[str]:
        """record_block for several blocks (hash, size, stored_size) in one transaction,
        queueing the copies (hash, store) other regions still owe in it too.
        seen: deletion_marks() from before the objects were written; the hashes returned
        were not recorded because a garbage collection may have deleted them since (write
        them again: backend/lifecycle/gc.py does)."""
        return self._blocks.record_blocks(who, blocks, seen, owed)

    def deletion_marks(self, hashes: list[str]) -> dict[str, int | None]:
        """When a collection last deleted each block (None: never); see record_blocks."""
        return self._blocks.deletion_marks(hashes)

    def sweep_staged(self) -> int:
        """Remove the staged block lists of large commits a crash left behind; how many."""
        return staging.sweep(self._db, time.time_ns())

    @repeatable
    def readable_blocks(self, who: Principal, hashes: list[str]) -> set[str]:
        """The subset of hashes this user may read (may_read_block for many, one query)."""
        return self._blocks.readable_blocks(who, hashes)

    @repeatable
    def block_known(self, hash: str) -> bool:
        """True when the block is already stored (by anyone): the upload may skip the store."""
        return self._blocks.block_known(hash)

    @repeatable
    def may_read_block(self, who: Principal, hash: str) -> bool:
        return self._blocks.may_read_block(who, hash)

    # changes
    @repeatable
    def changes(self, who: Principal, cursor: int, limit: int) -> ChangesPage:
        return self._journal.changes(who, cursor, limit)

    @repeatable
    def current_cursor(self, namespace_id: int) -> int:
        return self._journal.current_cursor(namespace_id)

    @repeatable
    def snapshot(self, who: Principal, after_id: int, limit: int) -> SnapshotPage:
        return self._journal.snapshot(who, after_id, limit)

    # device tokens
    def list_tokens(self, user_name: str) -> list[TokenInfo]:
        return self._tokens.list(user_name)

    def revoke_token(self, user_name: str, token_name: str) -> None:
        """Servers that cached the token refuse it within users.TOKEN_CACHE_S."""
        self._tokens.revoke(user_name, token_name)

    def create_login_code(self, user_name: str, ttl_s: int) -> str:
        """A one-time code that POST /v1/login exchanges for a device token."""
        return self._tokens.create_login_code(user_name, ttl_s)

    def login(self, code: str, device: str | None) -> NewToken:
        return self._tokens.login(code, device)

    def compact_journal(self, before_ns: int) -> int:
        """Trim every drive's journal of entries all its devices have read and of those
        written before `before_ns`; the number removed (the lifecycle job)."""
        return compact(self._db, before_ns)

    # trash
    def trash(self, who: Principal) -> list[TrashItem]:
        """Deleted files and folders (one item per deletion), most recent first."""
        return self._trash.list(who)

    def trash_contents(self, who: Principal, item_id: int) -> tuple[TrashItem, list[NodeInfo]]:
        """A trash item and every node in it, as they were when deleted."""
        return self._trash.contents(who, item_id)

    def restore_from_trash(self, who: Principal, item_id: int) -> NodeInfo:
        """Put an item back with its subtree (renamed "(restored)" when its name is taken)."""
        return self._trash.restore(who, item_id)

    def purge_trash(self, who: Principal, item_id: int | None) -> int:
        """Purge one item, or every item with None; the number of items purged."""
        return self._trash.purge(who, item_id)

    def empty_trash(self, before_ns: int) -> int:
        """Purge the items of every drive deleted before `before_ns` (the lifecycle job)."""
        return self._trash.empty_older(before_ns)

    # quotas
    def usage(self, who: Principal) -> tuple[int, int | None]:
        """(bytes counted against the quota, the quota or None); see metadata/quota.py."""
        return self._quotas.usage(who)

    def check_upload_quota(self, who: Principal, blocks: list[tuple[str, int]]) -> None:
        """QuotaExceeded when these blocks (hash, bytes) new to the drive would not fit."""
        self._quotas.check_upload(who, blocks)

    def check_size_quota(self, who: Principal, size: int) -> None:
        """QuotaExceeded when a file of `size` bytes could not fit (before receiving it)."""
        self._quotas.check_size(who, size)

    def set_quota(self, name: str, quota: int | None) -> bool:
        """Set or (None) remove a user's quota in bytes; False when there is no such user."""
        return self._quotas.set_quota(name, quota)

    # shares (backend/metadata/sharing.py)
    def share(self, who: Principal, path: str, user: str, access: str) -> dict:
        """Share a folder with another user, "read" or "write"; the new share."""
        return self._shares.add(who, path, user, access)

    def shares(self, who: Principal) -> dict:
        """{"shared": what the caller shares, "received": what is shared with them}."""
        return self._shares.list(who)

    def unshare(self, who: Principal, share_id: int) -> None:
        """Revoke (owner) or leave (recipient) a share."""
        self._shares.remove(who, share_id)

    # public links (backend/metadata/links.py)
    def create_link(self, who: Principal, path: str, expires_in_s: int) -> dict:
        """A public read-only link to a file or folder of the caller's own drive."""
        self._shares.refuse_shared(who, path)
        return self._links.create(who, path, expires_in_s)

    def links(self, who: Principal) -> list[dict]:
        return self._links.list(who)

    def revoke_link(self, who: Principal, link_id: int) -> None:
        self._links.revoke(who, link_id)

    def open_link(self, token: str, path: str) -> Reader:
        """Who reads, and where, for a request of a public link (never through a share)."""
        reader = self._links.resolve(token, path)
        self._shares.refuse_shared(reader.who, reader.path)
        return reader
