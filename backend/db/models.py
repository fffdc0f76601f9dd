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
    LargeBinary,
    String,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

HASH_LEN = 64
NAME_LEN = 255  # bytes of UTF-8 in a path component (protocol.paths.NAME_MAX)
PATH_LEN = 8192  # bytes of a drive path (protocol.paths.PATH_MAX)
TARGET_LEN = 4096  # a symlink's target (protocol.paths.TARGET_MAX)
DEVICE_LEN = 64

# nodes.type
FILE, DIR, SYMLINK = "file", "dir", "symlink"
# nodes.type of metadata-only special files (FIFO, Unix socket, character and block device)
FIFO, SOCKET, CHR, BLK = "fifo", "socket", "chr", "blk"
SPECIAL_TYPES = (FIFO, SOCKET, CHR, BLK)
# nodes.type of a second name of a file (a hard link): `link_id` names the file
HARDLINK = "hardlink"
# revisions.status (STAGING: a large commit's block list being written, backend/metadata/staging.py)
PENDING, UPLOADED, STAGING = "pending", "uploaded", "staging"
# blocks.tier
HOT, ARCHIVE = "hot", "archive"
# replication_queue.action
COPY, DELETE = "copy", "delete"
# a delete a worker is running now; its row's next_try is when the worker's lease ends
DELETING = "deleting"
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
    # Bytes the user may use (namespaces.used_bytes); NULL: no quota.
    quota: Mapped[int | None] = mapped_column(BigInteger)


class Token(Base):
    """An API token of a user. Only the SHA-256 of the token is kept: tokens are 256 random
    bits, so a fast unsalted hash cannot be brute-forced and a leaked database reveals none."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # hex SHA-256 of the token text, unique: a lookup by it authenticates a request
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[int] = mapped_column(BigInteger)
    # The device or login it was issued to ("initial" for the token create-user prints);
    # unique among the user's live tokens, so an administrator can revoke it by name.
    name: Mapped[str] = mapped_column(String(DEVICE_LEN))
    # When a request last used it; NULL if never. Written at most once a minute per server.
    last_used: Mapped[int | None] = mapped_column(BigInteger)
    # When it was revoked; NULL while it is valid. A revoked token is kept for the record.
    revoked: Mapped[int | None] = mapped_column(BigInteger)


Index(
    "uq_tokens_live_name",
    Token.user_id,
    Token.name,
    unique=True,
    sqlite_where=text("revoked IS NULL"),
    postgresql_where=text("revoked IS NULL"),
)


class LoginCode(Base):
    """A one-time code an administrator issued so that a device can log in (POST /v1/login)
    and get a token of its own. Only its SHA-256 is kept, like a token's; it is deleted when
    used, and refused after `expires`."""

    __tablename__ = "login_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created: Mapped[int] = mapped_column(BigInteger)
    expires: Mapped[int] = mapped_column(BigInteger)


class Device(Base):
    """A client name a user has used (X-Cirrus-Device), recorded on first sight."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_devices_user_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(DEVICE_LEN))
    created: Mapped[int] = mapped_column(BigInteger)
    # The newest journal cursor this device has read (changes or snapshot); NULL until it
    # reads one. Journal compaction keeps what some device has not read yet.
    cursor: Mapped[int | None] = mapped_column(BigInteger)


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
    # The newest cursor trimmed from the change journal (0: nothing trimmed). Entries up to
    # it are gone: a client whose cursor is below it must start again from a snapshot.
    compacted: Mapped[int] = mapped_column(BigInteger, default=0)
    # Bytes counted against the owner's quota: the plaintext size of every distinct block
    # some revision of this drive names (namespace_refs), kept up to date by write_references.
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


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
    target: Mapped[str | None] = mapped_column(String(TARGET_LEN))  # symlinks only, else NULL
    # {"user.name": base64 value}; names start with "user.", values at most 64 KiB.
    xattrs: Mapped[dict] = mapped_column(JSON, default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Deleted nodes (the trash): when, by which device (Principal.author), and the id of
    # the node whose deletion took this one along (its own id for the node deleted by name;
    # NULL for nodes deleted before the trash existed: they go with their deleted folder).
    # All three are NULL on live nodes.
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)
    deleted_by: Mapped[str | None] = mapped_column(String(DEVICE_LEN))
    trash_id: Mapped[int | None] = mapped_column(Integer)
    # POSIX owner and group by numeric id; NULL (nodes made through the HTTP API and before
    # owners were kept): a mount shows the mounting user's.
    uid: Mapped[int | None] = mapped_column(BigInteger)
    gid: Mapped[int | None] = mapped_column(BigInteger)
    # Last access and last change of the node (a change's own time, sent by the mount).
    atime_ns: Mapped[int | None] = mapped_column(BigInteger)
    ctime_ns: Mapped[int | None] = mapped_column(BigInteger)
    rdev: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # devices
    # Names of a file (1 + its live HARDLINK nodes); 1 for every other node.
    nlink: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # HARDLINK nodes only: the file whose content, revisions and attributes this name shows.
    link_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", name="fk_nodes_link_id"))


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
Index("ix_nodes_deleted_at", Node.deleted_at)
Index("ix_nodes_trash", Node.trash_id)
Index("ix_nodes_link", Node.link_id)


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
    status: Mapped[str] = mapped_column(String(8))  # PENDING, UPLOADED or STAGING
    commit_id: Mapped[str | None] = mapped_column(String(64))
    # True when the commit was stored as a conflicted copy (repeats answer the same).
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    # Kept whatever the retention policy says (POST /v1/files/pin), like Drive's keepForever.
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


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
    # Garbage collection (docs/blocks.md): when a collector claimed the row to delete its
    # object (NULL: unclaimed), and when the object was deleted (NULL: never, or stored since).
    deleting_since: Mapped[int | None] = mapped_column(BigInteger)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)


# The collector's candidates: unreferenced blocks, oldest use first.
Index(
    "ix_blocks_unreferenced",
    Block.last_used,
    sqlite_where=text("refcount = 0"),
    postgresql_where=text("refcount = 0"),
)


class NamespaceBlock(Base):
    """The hashes a drive has uploaded itself (a row appears only after the drive sent the
    block's bytes). Answers /blocks/missing and block reads for that drive alone, so nothing
    is revealed about the blocks of other users even though storage is shared."""

    __tablename__ = "namespace_blocks"

    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespaces.id", ondelete="CASCADE"), primary_key=True
    )
    hash: Mapped[str] = mapped_column(String(HASH_LEN), primary_key=True)


class NamespaceRef(Base):
    """How many block-list rows of a drive's revisions name each hash: a drive's quota usage
    counts a block once however many of its files and revisions share it (and in full for
    every drive that has it, whatever other drives share). A row exists while refs > 0."""

    __tablename__ = "namespace_refs"

    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespaces.id", ondelete="CASCADE"), primary_key=True
    )
    hash: Mapped[str] = mapped_column(String(HASH_LEN), primary_key=True)
    refs: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(Integer)  # plaintext bytes of the block


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
    # When the entry was written (compaction trims entries older than the server keeps);
    # entries older than the trash migration carry its time.
    created: Mapped[int | None] = mapped_column(BigInteger)


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
    # when the answer was stored; a drive keeps its newest answers only (0: before 0003)
    created: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class UploadSession(Base):
    """A resumable upload in progress (the API's /v1/uploads/ID). `received` counts the bytes
    acknowledged (0 <= received <= total_size): those cut into blocks stored in the block
    store (upload_blocks) and then `tail`, the bytes after the last cut, which the next PUT
    continues (NULL when empty). Any server can continue it. A session is dead after
    `expires`; the upload layer deletes it then, or when it completes or is cancelled."""

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
    tail: Mapped[bytes | None] = mapped_column(LargeBinary)


class MasterKey(Base):
    """Which master key the drive's blocks are sealed with: a check value per key id (the
    key itself is never stored here). A server whose key gives another check value than
    the row of id 1, written by the first server that started, refuses to start."""

    __tablename__ = "master_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    check_value: Mapped[str] = mapped_column(String(HASH_LEN))
    created: Mapped[int] = mapped_column(BigInteger)


class UploadBlock(Base):
    """A block of a resumable upload, cut and stored (and recorded as the drive's) while the
    upload goes on: bytes [offset, offset + size) of the file. They become the revision's
    block list when the last byte arrives."""

    __tablename__ = "upload_blocks"

    upload_id: Mapped[str] = mapped_column(
        ForeignKey("upload_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(HASH_LEN))
    size: Mapped[int] = mapped_column(Integer)


class RetentionPolicy(Base):
    """A user's own retention settings (`cirrus admin set-retention`); a NULL column takes
    the server's setting. `thinning` is written like the server's --thinning option."""

    __tablename__ = "retention_policies"

    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespaces.id", ondelete="CASCADE"), primary_key=True
    )
    max_revisions: Mapped[int | None] = mapped_column(Integer)
    max_age_s: Mapped[int | None] = mapped_column(BigInteger)
    thinning: Mapped[str | None] = mapped_column(String(256))


class ReplicationTask(Base):
    """A copy or delete a block store still owes (docs/blocks.md, Regions and tiers).

    `store` names a store of the server's layout (a member URL of `replicated:`, the blocks
    URL, or the archive URL). A "copy" row is written in the transaction that records the
    block (record_blocks), so an acknowledged block is never forgotten by a restart; a
    "delete" row replaces it when the block is retired or moved to the archive. Workers
    drain rows whose `next_try` has come, and push it back with a growing delay on failure.
    A worker claims a delete (action "deleting") before it runs it, so that an upload of
    the same block waits for it to end and writes the block again (backend/lifecycle/
    replicator.py).
    """

    __tablename__ = "replication_queue"

    hash: Mapped[str] = mapped_column(String(HASH_LEN), primary_key=True)
    store: Mapped[str] = mapped_column(String(STORE_LEN), primary_key=True)
    action: Mapped[str] = mapped_column(String(8))  # COPY, DELETE or DELETING
    size: Mapped[int] = mapped_column(BigInteger)  # bytes at rest, for the lag report
    created: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try: Mapped[int] = mapped_column(BigInteger)


Index("ix_replication_queue_next_try", ReplicationTask.next_try)
# Which revisions name a block: the archive policy asks it of every candidate block.
Index("ix_revision_blocks_hash", RevisionBlock.hash)


# shares.access
READ, WRITE = "read", "write"


class Share(Base):
    """A folder of one drive shown in another user's drive (docs/sharing.md).

    The data stays in the owner's drive (`folder_id`); the recipient's drive holds a folder
    node of its own, `mount_id`, whose name and place the recipient chooses: a path through
    it is resolved in the owner's drive. A revoked share keeps its row, with `mount_path`
    (where the recipient had it), so edits the recipient made offline still land in their
    own drive as a conflicted copy.
    """

    __tablename__ = "shares"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespaces.id", ondelete="CASCADE"), index=True
    )
    folder_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    recipient_namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespaces.id", ondelete="CASCADE"), index=True
    )
    mount_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    access: Mapped[str] = mapped_column(String(8))  # READ or WRITE
    created: Mapped[int] = mapped_column(BigInteger)
    revoked: Mapped[int | None] = mapped_column(BigInteger)  # NULL while the share lives
    mount_path: Mapped[str | None] = mapped_column(String(PATH_LEN))  # set when revoked


class Link(Base):
    """A public read-only link to a file or folder of a drive, served without a token until
    it expires or is revoked. Only the SHA-256 of its secret is kept, like a token's."""

    __tablename__ = "links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespaces.id", ondelete="CASCADE"), index=True
    )
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    created: Mapped[int] = mapped_column(BigInteger)
    expires: Mapped[int] = mapped_column(BigInteger)
    revoked: Mapped[int | None] = mapped_column(BigInteger)  # NULL while it is valid
