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

from collections.abc import Callable, Sequence

from sqlalchemy.engine import Engine

from backend.metadata.batch import Batches, Outcome
from backend.metadata.blockrefs import BlockRefs
from backend.metadata.journal import Journal
from backend.metadata.retention import DEFAULT_MAX_REVISIONS
from backend.metadata.revisions import Revisions
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
)
from backend.metadata.users import Users


class MetadataService:
    def __init__(
        self, engine: Engine, notifier: Notifier, max_revisions: int = DEFAULT_MAX_REVISIONS
    ) -> None:
        """max_revisions: versions kept per file (the oldest beyond it are dropped)."""
        if max_revisions < 1:
            raise ValueError("a file keeps at least one revision")
        self.engine = engine
        self.notifier = notifier
        db = Database(engine, notifier)
        self._users = Users(db)
        self._tree = TreeOps(db)
        self._revisions = Revisions(db, max_revisions)
        self._blocks = BlockRefs(db)
        self._journal = Journal(db)
        self._batches = Batches(db, max_revisions)

    # users and tokens
    def create_user(self, name: str) -> str:
        """Create a user with their namespace (root folder) and return a new API token."""
        return self._users.create_user(name)

    def authenticate(self, token: str, device: str | None) -> Principal:
        """Resolve a bearer token (stored hashed); raise Unauthorized when unknown."""
        return self._users.authenticate(token, device)

    def authenticate_cached(self, token: str, device: str | None) -> Principal | None:
        """The caller if known from a recent lookup (no I/O: safe on the event loop)."""
        return self._users.authenticate_cached(token, device)

    def account(self, who: Principal) -> dict:
        """{"user", "namespace_id", "cursor", "used_bytes", "files", "bytes_received"}."""
        return self._users.account(who)

    # tree
    def stat(self, who: Principal, path: str) -> NodeInfo:
        return self._tree.stat(who, path)

    def stat_id(self, who: Principal, node_id: int) -> NodeInfo:
        return self._tree.stat_id(who, node_id)

    def list_dir(self, who: Principal, path: str) -> list[NodeInfo]:
        """Children sorted by name; NotADirectory for a file."""
        return self._tree.list_dir(who, path)

    def mkdir(
        self, who: Principal, path: str, mode: int | None, mtime_ns: int | None, parents: bool
    ) -> tuple[NodeInfo, bool]:
        """Return (node, created)."""
        return self._tree.mkdir(who, path, mode, mtime_ns, parents)

    def symlink(self, who: Principal, path: str, target: str, mtime_ns: int | None) -> NodeInfo:
        return self._tree.symlink(who, path, target, mtime_ns)

    def move(
        self, who: Principal, src: str, dst: str, mode: MoveMode
    ) -> tuple[NodeInfo, NodeInfo | None]:
        """Return (moved node, replaced-or-exchanged node)."""
        return self._tree.move(who, src, dst, mode)

    def delete(self, who: Principal, path: str, recursive: bool) -> list[int]:
        return self._tree.delete(who, path, recursive)

    def setattr(
        self, who: Principal, path: str, mode: int | None, mtime_ns: int | None
    ) -> NodeInfo:
        return self._tree.setattr(who, path, mode, mtime_ns)

    def set_xattr(self, who: Principal, path: str, name: str, value: bytes | None) -> NodeInfo:
        return self._tree.set_xattr(who, path, name, value)

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
        return self._batches.apply(who, ops, render, stop_on_error, client)

    # files and revisions
    def commit(self, who: Principal, request: CommitRequest) -> CommitResult:
        return self._revisions.commit(who, request)

    def block_list(
        self, who: Principal, path: str | None, node_id: int | None, rev: int | None
    ) -> BlockList:
        """Blocks of the current uploaded revision (or rev); RevisionPending if not uploaded."""
        return self._revisions.block_list(who, path, node_id, rev)

    def history(self, who: Principal, path: str, limit: int) -> list[RevisionInfo]:
        """Revisions newest first, at most limit (1..1000)."""
        return self._revisions.history(who, path, limit)

    def restore(self, who: Principal, path: str, rev: int) -> NodeInfo:
        """Make an uploaded revision current again, as a new revision."""
        return self._revisions.restore(who, path, rev).node

    # blocks
    def missing_blocks(self, who: Principal, hashes: list[str]) -> list[str]:
        """Hashes this user has neither uploaded nor referenced (never looks at other users)."""
        return self._blocks.missing_blocks(who, hashes)

    def record_block(self, who: Principal, hash: str, size: int, stored_size: int) -> None:
        """After the block store holds the block: note it, give this user a reference, and
        complete (mark uploaded, journal) every pending revision of the user now whole."""
        self._blocks.record_block(who, hash, size, stored_size)

    def record_blocks(
        self,
        who: Principal,
        blocks: list[tuple[str, int, int]],
        owed: Sequence[tuple[str, str]] = (),
    ) -> None:
        """record_block for several blocks (hash, size, stored_size) in one transaction,
        queueing the copies (hash, store) other regions still owe in it too."""
        self._blocks.record_blocks(who, blocks, owed)

    def readable_blocks(self, who: Principal, hashes: list[str]) -> set[str]:
        """The subset of hashes this user may read (may_read_block for many, one query)."""
        return self._blocks.readable_blocks(who, hashes)

    def block_known(self, hash: str) -> bool:
        """True when the block is already stored (by anyone): the upload may skip the store."""
        return self._blocks.block_known(hash)

    def may_read_block(self, who: Principal, hash: str) -> bool:
        return self._blocks.may_read_block(who, hash)

    # changes
    def changes(self, who: Principal, cursor: int, limit: int) -> ChangesPage:
        return self._journal.changes(who, cursor, limit)

    def current_cursor(self, namespace_id: int) -> int:
        return self._journal.current_cursor(namespace_id)

    def snapshot(self, who: Principal, after_id: int, limit: int) -> SnapshotPage:
        return self._journal.snapshot(who, after_id, limit)
