"""The metadata schema: every table of the server's database, with its invariants.

Conventions for every table:
- Wall-clock instants (`created`, `updated`, `expires`, `last_used`) are integers, nanoseconds
  since the epoch in UTC, like file times (`mtime_ns`). Integers compare and sort the same on
  SQLite and PostgreSQL and never lose their time zone (SQLite has no zone-aware type).
- Sizes and times are 64-bit (`BigInteger`); ids are plain integers.
- Block hashes are 64 lower-case hex digits (`backend.protocol.hashing`).

The schema itself is created and changed only by the Alembic migrations in
`backend/migrations`; these classes must stay identical to what the migrations build.
"""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

HASH_LEN = 64
NAME_LEN = 255  # bytes of UTF-8 in a path component (protocol.paths.NAME_MAX)
PATH_LEN = 4096
DEVICE_LEN = 64

# nodes.type
FILE, DIR, SYMLINK = "file", "dir", "symlink"
# revisions.status
PENDING, UPLOADED = "pending", "uploaded"
# blocks.tier
HOT, ARCHIVE = "hot", "archive"
# replication_queue.action
COPY, DELETE = "copy", "delete"
STORE_LEN = 1024  # a block store's URL, as the operator wrote it


class Base(DeclarativeBase):
    pass


class User(Base):
    """An account. `name` is unique and never changes; it authors revisions made without a
    device name and appears in conflicted-copy names."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[int] = mapped_column(BigInteger)


class Token(Base):
    """An API token of a user. Only the SHA-256 of the token is kept: tokens are 256 random
    bits, so a fast unsalted hash cannot be brute-forced and a leaked database reveals none."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # hex SHA-256 of the token text, unique: a lookup by it authenticates a request
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[int] = mapped_column(BigInteger)


class Device(Base):
    """A client name a user has used (X-Cirrus-Device), recorded on first sight."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_devices_user_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(DEVICE_LEN))
    created: Mapped[int] = mapped_column(BigInteger)


class Namespace(Base):
    """A user's drive. Exactly one per user. Its row is the per-drive writer lock: every
    write transaction locks it first (SELECT ... FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on
    SQLite), so changes to one drive serialize and journal cursors never collide."""

    __tablename__ = "namespaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    # The cursor of the newest change-journal entry; 0 before the first. Only grows, by one
    # per entry, in the transaction that writes the entry (so there are no gaps).
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Plaintext bytes of every block upload this drive made (record_block), re-uploads
    # included: the traffic delta sync is meant to save shows here.
    bytes_received: Mapped[int] = mapped_column(BigInteger, default=0)


class Node(Base):
    """A file, folder or symlink of a drive.

    The root folder has parent_id NULL and name "" (one per namespace, by a partial unique
    index). A deleted node keeps its row with deleted = true, its last parent and name, so the
    history of a deleted file stays readable; the live-name index ignores it. The parent of a
    live node is always a live folder of the same namespace.
    """

    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    type: Mapped[str] = mapped_column(String(8))  # FILE, DIR or SYMLINK
    mode: Mapped[int] = mapped_column(Integer)  # permission bits only (& 0o7777)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    # Files: the size of revision `rev` (0 while rev is 0). Folders and symlinks: 0.
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    # Files: the newest revision whose blocks are all stored (what a read returns); 0 when
    # none is yet. Only moves forward, even if an older revision completes later.
    rev: Mapped[int] = mapped_column(Integer, default=0)
    # Files: the newest committed revision, uploaded or not (rev <= head_rev; a commit's
    # base_rev is checked against it). head_rev > rev means an upload is under way.
    head_rev: Mapped[int] = mapped_column(Integer, default=0)
    target: Mapped[str | None] = mapped_column(String(PATH_LEN))  # symlinks only, else NULL
    # {"user.name": base64 value}; names start with "user.", values at most 64 KiB.
    xattrs: Mapped[dict] = mapped_column(JSON, default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


# Names are unique among the live children of a folder; deleted nodes may repeat them.
Index(
    "uq_nodes_live_name",
    Node.namespace_id,
    Node.parent_id,
    Node.name,
    unique=True,
    sqlite_where=text("NOT deleted"),
    postgresql_where=text("NOT deleted"),
)
# One root per namespace; also the index by which the root is found.
Index(
    "uq_nodes_root",
    Node.namespace_id,
    unique=True,
    sqlite_where=text("parent_id IS NULL"),
    postgresql_where=text("parent_id IS NULL"),
)
Index("ix_nodes_parent", Node.parent_id)


class Revision(Base):
    """One committed version of a file. Numbers start at 1 per node and are never reused.

    A revision is PENDING while some of its blocks have not been uploaded by this drive (the
    hashes are in pending_blocks), then UPLOADED for good. Revisions outlive the deletion of
    their node. `commit_id`, when the client gave one, is unique per namespace: repeating a
    commit with it returns this revision instead of creating another.
    """

    __tablename__ = "revisions"
    __table_args__ = (UniqueConstraint("node_id", "number", name="uq_revisions_node_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    device: Mapped[str] = mapped_column(String(DEVICE_LEN))  # Principal.author at commit time
    created: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(8))  # PENDING or UPLOADED
    commit_id: Mapped[str | None] = mapped_column(String(64))
    # True when the commit was stored as a conflicted copy (repeats answer the same).
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)


Index(
    "uq_revisions_commit_id",
    Revision.namespace_id,
    Revision.commit_id,
    unique=True,
    sqlite_where=text("commit_id IS NOT NULL"),
    postgresql_where=text("commit_id IS NOT NULL"),
)


class RevisionBlock(Base):
    """The ordered block list of a revision: block `seq` (0, 1, ...) covers bytes
    [offset, offset + size) of the file; offsets are contiguous and the sizes add up to
    revisions.size. `hash` deliberately has no foreign key: a pending revision names blocks
    that are not stored yet."""

    __tablename__ = "revision_blocks"

    revision_id: Mapped[int] = mapped_column(
        ForeignKey("revisions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(HASH_LEN))
    size: Mapped[int] = mapped_column(Integer)


class Block(Base):
    """A block known to the server, shared by every drive that uses it (dedup).

    A row is created by the first commit that names the hash or by the first upload,
    whichever comes first. `stored_size` is NULL until the block store holds the block.
    `refcount` counts revision_blocks rows naming the hash, over all drives; a stored block
    with refcount 0 is garbage that may be collected.
    """

    __tablename__ = "blocks"

    hash: Mapped[str] = mapped_column(String(HASH_LEN), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)  # plaintext bytes
    stored_size: Mapped[int | None] = mapped_column(Integer)  # bytes in the store; NULL: absent
    refcount: Mapped[int] = mapped_column(BigInteger, default=0)
    tier: Mapped[str] = mapped_column(String(8), default=HOT)  # HOT or ARCHIVE
    last_used: Mapped[int] = mapped_column(BigInteger)  # last commit or upload naming it


class NamespaceBlock(Base):
    """The hashes a drive has uploaded itself (a row appears only after the drive sent the
    block's bytes). Answers /blocks/missing and block reads for that drive alone, so nothing
    is revealed about the blocks of other users even though storage is shared."""

    __tablename__ = "namespace_blocks"

    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespaces.id", ondelete="CASCADE"), primary_key=True
    )
    hash: Mapped[str] = mapped_column(String(HASH_LEN), primary_key=True)


class PendingBlock(Base):
    """The distinct hashes a PENDING revision still waits for. record_block deletes the
    rows of its hash in the drive; a revision with no row left is complete. A revision is
    UPLOADED exactly when it has no row here."""

    __tablename__ = "pending_blocks"

    revision_id: Mapped[int] = mapped_column(
        ForeignKey("revisions.id", ondelete="CASCADE"), primary_key=True
    )
    hash: Mapped[str] = mapped_column(String(HASH_LEN), primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))


Index("ix_pending_blocks_namespace_hash", PendingBlock.namespace_id, PendingBlock.hash)


class ChangeEntry(Base):
    """The change journal of a drive, the offline queue of every client.

    `cursor` runs 1, 2, 3 ... per namespace without gaps. `node` is the full snapshot of the
    node after the change (the JSON of NodeInfo, with "deleted": true for a removal), so a
    client applies entries idempotently without other lookups.
    """

    __tablename__ = "changes"
    __table_args__ = (
        UniqueConstraint("namespace_id", "cursor", name="uq_changes_namespace_cursor"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    cursor: Mapped[int] = mapped_column(BigInteger)
    node_id: Mapped[int] = mapped_column(Integer)
    node: Mapped[dict] = mapped_column(JSON)


class BatchAnswer(Base):
    """The answer given to each operation of a batch that a client tagged with its own
    sequence number (docs/api.md, Batches), so a batch sent again after its answer was lost
    gets the first answers back instead of moving or deleting a second time. A client sends
    its operations in sequence order and sends the next batch only once it has the answers,
    so its rows below the first sequence number of a new batch are dropped then.
    """

    __tablename__ = "batch_answers"

    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespaces.id", ondelete="CASCADE"), primary_key=True
    )
    client: Mapped[str] = mapped_column(String(DEVICE_LEN), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    answer: Mapped[dict] = mapped_column(JSON)


class UploadSession(Base):
    """A resumable upload in progress (the API's /v1/uploads/ID). Bytes received so far live
    on the server's disk; `received` counts those fsynced and acknowledged (0 <= received <=
    total_size). A session is dead after `expires`; the upload layer deletes it then, or
    when it completes or is cancelled."""

    __tablename__ = "upload_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespaces.id", ondelete="CASCADE"), index=True
    )
    path: Mapped[str] = mapped_column(String(PATH_LEN))
    total_size: Mapped[int] = mapped_column(BigInteger)
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    device: Mapped[str | None] = mapped_column(String(DEVICE_LEN))
    created: Mapped[int] = mapped_column(BigInteger)
    updated: Mapped[int] = mapped_column(BigInteger)
    expires: Mapped[int] = mapped_column(BigInteger, index=True)


class ReplicationTask(Base):
    """A copy or delete a block store still owes (docs/blocks.md, Regions and tiers).

    `store` names a store of the server's layout (a member URL of `replicated:`, the blocks
    URL, or the archive URL). A "copy" row is written in the transaction that records the
    block (record_blocks), so an acknowledged block is never forgotten by a restart; a
    "delete" row replaces it when the block is retired or moved to the archive. Workers
    drain rows whose `next_try` has come, and push it back with a growing delay on failure.
    """

    __tablename__ = "replication_queue"

    hash: Mapped[str] = mapped_column(String(HASH_LEN), primary_key=True)
    store: Mapped[str] = mapped_column(String(STORE_LEN), primary_key=True)
    action: Mapped[str] = mapped_column(String(8))  # COPY or DELETE
    size: Mapped[int] = mapped_column(BigInteger)  # bytes at rest, for the lag report
    created: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try: Mapped[int] = mapped_column(BigInteger)


Index("ix_replication_queue_next_try", ReplicationTask.next_try)
# Which revisions name a block: the archive policy asks it of every candidate block.
Index("ix_revision_blocks_hash", RevisionBlock.hash)
