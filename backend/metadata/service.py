"""The metadata service's public face: every operation the API layer may ask for.

INTERFACE CONTRACT (implementation in progress): method names, arguments and return types
here are what backend/api codes against. Each method runs one database transaction; a
method that changes the tree writes its change-journal entries in the same transaction and,
after commit, calls notifier.publish(namespace_id, new_cursor). Errors are raised as the
exceptions in backend.protocol.errors (NotFound, AlreadyExists, ...), never as ORM errors.
"""

from sqlalchemy.engine import Engine

from backend.metadata.types import (
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


class MetadataService:
    def __init__(self, engine: Engine, notifier: Notifier) -> None:
        self.engine = engine
        self.notifier = notifier

    # users and tokens
    def create_user(self, name: str) -> str:
        """Create a user with their namespace (root folder) and return a new API token."""
        raise NotImplementedError

    def authenticate(self, token: str, device: str | None) -> Principal:
        """Resolve a bearer token (stored hashed); raise Unauthorized when unknown."""
        raise NotImplementedError

    def account(self, who: Principal) -> dict:
        """{"user", "namespace_id", "cursor", "used_bytes", "files"}."""
        raise NotImplementedError

    # tree
    def stat(self, who: Principal, path: str) -> NodeInfo: ...
    def stat_id(self, who: Principal, node_id: int) -> NodeInfo: ...
    def list_dir(self, who: Principal, path: str) -> list[NodeInfo]: ...

    def mkdir(
        self, who: Principal, path: str, mode: int | None, mtime_ns: int | None, parents: bool
    ) -> tuple[NodeInfo, bool]:
        """Return (node, created)."""
        raise NotImplementedError

    def symlink(self, who: Principal, path: str, target: str, mtime_ns: int | None) -> NodeInfo:
        raise NotImplementedError

    def move(
        self, who: Principal, src: str, dst: str, mode: MoveMode
    ) -> tuple[NodeInfo, NodeInfo | None]:
        """Return (moved node, replaced-or-exchanged node)."""
        raise NotImplementedError

    def delete(self, who: Principal, path: str, recursive: bool) -> list[int]:
        raise NotImplementedError

    def setattr(
        self, who: Principal, path: str, mode: int | None, mtime_ns: int | None
    ) -> NodeInfo:
        raise NotImplementedError

    def set_xattr(self, who: Principal, path: str, name: str, value: bytes | None) -> NodeInfo:
        raise NotImplementedError

    # files and revisions
    def commit(self, who: Principal, request: CommitRequest) -> CommitResult:
        raise NotImplementedError

    def block_list(
        self, who: Principal, path: str | None, node_id: int | None, rev: int | None
    ) -> BlockList:
        """Blocks of the current uploaded revision (or rev); RevisionPending if not uploaded."""
        raise NotImplementedError

    def history(self, who: Principal, path: str, limit: int) -> list[RevisionInfo]:
        raise NotImplementedError

    def restore(self, who: Principal, path: str, rev: int) -> NodeInfo:
        raise NotImplementedError

    # blocks
    def missing_blocks(self, who: Principal, hashes: list[str]) -> list[str]:
        """Hashes this user has neither uploaded nor referenced (never looks at other users)."""
        raise NotImplementedError

    def record_block(self, who: Principal, hash: str, size: int, stored_size: int) -> None:
        """After the block store holds the block: note it, give this user a reference, and
        complete (mark uploaded, journal) every pending revision of the user now whole."""
        raise NotImplementedError

    def block_known(self, hash: str) -> bool:
        """True when the block is already stored (by anyone): the upload may skip the store."""
        raise NotImplementedError

    def may_read_block(self, who: Principal, hash: str) -> bool:
        raise NotImplementedError

    # changes
    def changes(self, who: Principal, cursor: int, limit: int) -> ChangesPage: ...
    def current_cursor(self, namespace_id: int) -> int: ...
    def snapshot(self, who: Principal, after_id: int, limit: int) -> SnapshotPage: ...
