"""File revisions: commits (with conflicted copies), block lists, history and restore.

A commit records the revision and its journal entry at once (the seed's upload flow): it is
UPLOADED immediately when the drive already holds every block, else PENDING until
record_block() has seen the last one. A commit never overwrites a file whose head moved
past the client's base_rev: it lands beside it as a conflicted copy, as Dropbox does.
"""

import os
import time
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import bindparam, exists, false, insert, select, true

from backend.db.models import (
    ARCHIVE,
    DIR,
    FILE,
    PENDING,
    UPLOADED,
    Block,
    Node,
    PendingBlock,
    Revision,
    RevisionBlock,
)
from backend.metadata import staging
from backend.metadata.blockrefs import check_hash
from backend.metadata.nodes import INT64_MAX, Tree, check_mode, check_mtime, parse_path
from backend.metadata.posix import check_attrs, entries_changed, inode_of, stamp
from backend.metadata.quota import check_commit as check_quota
from backend.metadata.retention import Retention, prune_revisions
from backend.metadata.txn import Database, Txn
from backend.metadata.types import (
    BlockList,
    BlockRef,
    CommitRequest,
    CommitResult,
    Principal,
    RevisionInfo,
)
from backend.protocol.chunking import MAX_BLOCK_SIZE
from backend.protocol.errors import (
    AlreadyExists,
    BlockSizeMismatch,
    InvalidRequest,
    IsADirectory,
    NotFound,
    RevisionPending,
)
from backend.protocol.paths import NAME_MAX

DEFAULT_FILE_MODE = 0o644
MAX_COMMIT_ID = 64
MAX_HISTORY = 1000
MAX_CONFLICT_COPIES = 1000
_IN_BATCH = 500
_INSERT_REVISION = insert(Revision.__table__).returning(Revision.id)
_INSERT_BLOCK_LIST = insert(RevisionBlock.__table__)
_INSERT_PENDING = insert(PendingBlock.__table__)
# Read a slice at a time: one fetch of half a million rows held the GIL for ~300 ms.
_AWAITED = (
    select(PendingBlock.hash)
    .where(PendingBlock.revision_id == bindparam("revision"))
    .execution_options(yield_per=4096)
)
_AWAITS = select(exists().where(PendingBlock.revision_id == bindparam("revision")))
_USED_COMMIT_IDS = select(Revision.commit_id).where(
    Revision.namespace_id == bindparam("namespace"),
    Revision.commit_id.in_(bindparam("ids", expanding=True)),
)


class Revisions:
    def __init__(self, db: Database, retention: Retention) -> None:
        self.db = db
        self.retention = retention

    def commit(self, who: Principal, request: CommitRequest) -> CommitResult:
        parts, blocks = check_commit(request)
        staged = staging.stage(self.db, who, blocks) if len(blocks) > staging.STAGE_ABOVE else None
        try:
            with self.db.write(who.namespace_id, who.author) as tx:
                keep = self.retention.cap(tx)
                result = commit_once(tx, who, parts, request, blocks, keep, staged)
            return listed(self.db, result)
        finally:
            if staged is not None:
                staging.discard(self.db, who.namespace_id, staged)

    def restore(self, who: Principal, path: str, rev: int) -> CommitResult:
        parts = parse_path(path)
        with self.db.write(who.namespace_id, who.author) as tx:
            node = _file_or_deleted_at(tx, parts)  # restoring a deleted file undeletes it
            revision = _revision(tx, node, rev)
            blocks, _archived = _blocks_of(tx, revision)
            request = CommitRequest(
                path=path,
                base_rev=node.head_rev,
                size=revision.size,
                blocks=blocks,
                mtime_ns=revision.mtime_ns,
                overwrite=True,
            )
            return commit_in(tx, who, parts, request, blocks, self.retention.cap(tx))

    def block_list(
        self, who: Principal, path: str | None, node_id: int | None, rev: int | None
    ) -> BlockList:
        if (path is None) == (node_id is None):
            raise InvalidRequest("give either a path or a node id")
        with self.db.read() as session:
            tree = Tree(session, who.namespace_id)
            # By id, a deleted file still reads: a mount may hold it open after an unlink.
            node = tree.by_id(node_id, deleted_ok=True) if path is None else None
            node = _file_at(tree, parse_path(path)) if node is None else _check_file(node)
            if rev is None and node.rev == 0:
                return BlockList(node.id, 0, 0, [])
            revision = _revision(tree, node, node.rev if rev is None else rev)
            blocks, archived = _blocks_of(tree, revision)
            return BlockList(node.id, revision.number, revision.size, blocks, archived)

    def history(self, who: Principal, path: str, limit: int) -> list[RevisionInfo]:
        parts = parse_path(path)
        if type(limit) is not int or not 1 <= limit <= MAX_HISTORY:
            raise InvalidRequest(f"limit is an integer from 1 to {MAX_HISTORY}")
        with self.db.read() as session:
            node = _file_or_deleted_at(Tree(session, who.namespace_id), parts)
            query = (
                select(Revision)
                .where(Revision.node_id == node.id)
                .order_by(Revision.number.desc())
                .limit(limit)
            )
            return [_info(r) for r in session.scalars(query)]

    def pin(self, who: Principal, path: str, rev: int, pinned: bool) -> RevisionInfo:
        """Keep an uploaded revision whatever the retention policy says (or stop keeping it)."""
        parts = parse_path(path)
        with self.db.write(who.namespace_id) as tx:
            revision = _revision(tx, _file_or_deleted_at(tx, parts), rev)
            revision.pinned = pinned
            return _info(revision)


def _info(r: Revision) -> RevisionInfo:
    return RevisionInfo(r.number, r.size, r.mtime_ns, r.device, r.status, r.created, r.pinned)


def commit_once(
    tx: Txn,
    who: Principal,
    parts: list[str],
    request: CommitRequest,
    blocks: list[BlockRef],
    keep: int,
    staged: int | None = None,
) -> CommitResult:
    """commit_in, unless a commit with the same commit_id landed already: then its answer."""
    if request.commit_id is not None and request.commit_id not in tx.unused_commit_ids:
        query = select(Revision).where(
            Revision.namespace_id == tx.namespace_id,
            Revision.commit_id == request.commit_id,
        )
        prior = tx.session.scalars(query).one_or_none()
        if prior is not None:
            return _result_of(tx, prior)
    tx.unused_commit_ids.discard(request.commit_id)  # a repeat in the same batch must look
    return commit_in(tx, who, parts, request, blocks, keep, staged)


def note_unused_commit_ids(tx: Txn, commit_ids: list[str]) -> None:
    """Find out at once which of a batch's commit ids no revision has, so that its commits
    need no lookup each (a batch sent again finds its ids used and looks them up)."""
    unused = set(commit_ids)
    for start in range(0, len(commit_ids), _IN_BATCH):
        ids = commit_ids[start : start + _IN_BATCH]
        used = tx.connection.execute(_USED_COMMIT_IDS, {"namespace": tx.namespace_id, "ids": ids})
        unused.difference_update(used.scalars())
    tx.unused_commit_ids = unused


def commit_in(
    tx: Txn,
    who: Principal,
    parts: list[str],
    request: CommitRequest,
    blocks: list[BlockRef],
    keep: int,
    staged: int | None = None,
) -> CommitResult:
    """Record a checked commit inside an open write transaction, keeping `keep` versions;
    `staged`: the STAGING revision holding its block list already (staging.stage)."""
    awaiting = None
    if staged is None:
        distinct = list(dict.fromkeys(b.hash for b in blocks))
        owned = tx.owned(distinct)
        _check_sizes(blocks, owned)
        missing = [h for h in distinct if h not in owned]
    else:  # its awaited hashes are listed after the transaction
        missing, awaiting = [], staged if _awaits(tx, staged) else None
    pending = bool(missing) or awaiting is not None
    check_quota(tx, blocks)
    parent = tx.make_dirs(parts[:-1])
    name = parts[-1]
    node = tx.child(parent, name)
    node = None if node is None else inode_of(tx, node)  # a hard link commits to its file
    attrs = check_attrs(request.attrs)
    conflict = False
    if node is not None:
        if node.type == DIR:
            raise IsADirectory(f"a folder is in the way: {request.path}")
        if request.overwrite and node.type != FILE:
            tx.remove(node)
            node = None
        elif not request.overwrite and (node.type != FILE or request.base_rev != node.head_rev):
            name, node, conflict = _conflicted_name(tx, parent, name, who.author), None, True
    mtime_ns = tx.now_ns if request.mtime_ns is None else request.mtime_ns
    if node is None:  # a new file, inserted with its first revision shown unless pending
        mode = request.mode or DEFAULT_FILE_MODE
        revision = (1, 0, 0) if pending else (1, 1, request.size)
        node = tx.create(parent, name, FILE, mode, mtime_ns, revision=revision, attrs=attrs)
        entries_changed(tx, parent, attrs)
    else:
        if request.mode is not None:
            node.mode = request.mode
        node.mtime_ns = mtime_ns
        stamp(tx, node, attrs)
        node.head_rev += 1
        if not pending:
            node.rev, node.size = node.head_rev, request.size
    number = node.head_rev
    _add_revision(tx, node, who, request, blocks, conflict, missing, pending, staged)
    prune_revisions(tx, node, keep)
    info = tx.journal(node)
    return CommitResult(info, number, missing, conflict, info.path, awaiting)


def _awaits(tx: Txn, revision_id: int) -> bool:
    return bool(tx.session.scalar(_AWAITS, {"revision": revision_id}))


def listed(db: Database, result: CommitResult) -> CommitResult:
    """The result with the hashes its revision awaits read into `missing`, in a read
    transaction of its own (blocks that arrived meanwhile are no longer listed)."""
    if result.awaiting is None:
        return result
    missing: list[str] = []
    with db.read() as session:
        rows = session.scalars(_AWAITED, {"revision": result.awaiting})
        for part in rows.partitions():
            missing.extend(part)
            time.sleep(0)  # other threads take the GIL between slices
    return replace(result, missing=missing, awaiting=None)


def _check_sizes(blocks: list[BlockRef], real_sizes: dict[str, int]) -> None:
    """Refuse a commit that gives a block the drive holds another size than its own: the
    file's size, downloads and the user's usage all trust these sizes."""
    for block in blocks:
        real = real_sizes.get(block.hash, block.size)
        if real != block.size:
            raise BlockSizeMismatch(
                f"block {block.hash} holds {real} bytes, not the {block.size} announced"
            )


def _add_revision(
    tx: Txn,
    node: Node,
    who: Principal,
    request: CommitRequest,
    blocks: list[BlockRef],
    conflict: bool,
    missing: list[str],
    pending: bool,
    staged: int | None,
) -> None:
    """Insert the node's newest revision (its head_rev), its block list and the hashes it
    awaits (`missing`; `pending`: PENDING until they arrive). Plain INSERTs on the session's
    connection: no ORM object to flush, none of the ORM's bulk-insert machinery per row.
    A staged revision has its block list and pending hashes already: it is adopted."""
    row = {
        "namespace_id": tx.namespace_id,
        "node_id": node.id,
        "number": node.head_rev,
        "size": request.size,
        "mtime_ns": node.mtime_ns,
        "device": who.author,
        "created": tx.now_ns,
        "status": PENDING if pending else UPLOADED,
        "commit_id": request.commit_id,
        "conflict": conflict,
    }
    if staged is not None:
        staging.adopt(tx, staged, row)
        return
    revision_id = tx.connection.execute(_INSERT_REVISION, row).scalar_one()
    if blocks:
        rows = [
            {"revision_id": revision_id, "seq": seq, "offset": b.offset, "hash": b.hash,
             "size": b.size}
            for seq, b in enumerate(blocks)
        ]  # fmt: skip
        tx.connection.execute(_INSERT_BLOCK_LIST, rows)
        tx.refer([(b.hash, b.size) for b in blocks], +1)
    if missing:
        rows = [
            {"revision_id": revision_id, "hash": h, "namespace_id": tx.namespace_id}
            for h in missing
        ]
        tx.connection.execute(_INSERT_PENDING, rows)


def _result_of(tx: Txn, revision: Revision) -> CommitResult:
    """The answer a repeated commit gets: the revision its first attempt made."""
    node = tx.session.get(Node, revision.node_id)
    awaiting = revision.id if _awaits(tx, revision.id) else None
    info = tx.info(node)
    return CommitResult(info, revision.number, [], revision.conflict, info.path, awaiting)


def _conflicted_name(tx: Txn, parent: Node, name: str, author: str) -> str:
    """`stem (AUTHOR's conflicted copy YYYY-MM-DD).ext`, then ` (1)`, ` (2)` ... if taken."""
    stem, ext = os.path.splitext(name)
    day = datetime.fromtimestamp(tx.now_ns / 1e9, UTC).strftime("%Y-%m-%d")
    label = f" ({author.replace('/', '_')}'s conflicted copy {day})"
    head = _fit(stem, f"{label} ({MAX_CONFLICT_COPIES}){ext}")  # the shortest stem used
    query = select(Node.name).where(
        Node.parent_id == parent.id,
        Node.deleted == false(),
        Node.name.startswith(head, autoescape=True),
    )
    taken = set(tx.session.scalars(query))
    for number in range(MAX_CONFLICT_COPIES):
        suffix = label + (f" ({number})" if number else "") + ext
        candidate = _fit(stem, suffix) + suffix
        if candidate not in taken:
            return candidate
    raise AlreadyExists(f"too many conflicted copies of {name}")


def _fit(stem: str, suffix: str) -> str:
    """The stem, shortened so that stem + suffix stays within NAME_MAX bytes."""
    budget = NAME_MAX - len(suffix.encode("utf-8"))
    encoded = stem.encode("utf-8")
    if len(encoded) <= budget:
        return stem
    return encoded[: max(budget, 1)].decode("utf-8", "ignore") or "_"


def check_commit(request: CommitRequest) -> tuple[list[str], list[BlockRef]]:
    """Validate a commit request; return its path parts and its blocks with offsets."""
    parts = parse_path(request.path)
    if not parts:
        raise IsADirectory("the root is a folder")
    if request.base_rev is not None and (type(request.base_rev) is not int or request.base_rev < 0):
        raise InvalidRequest("base_rev is null or a revision number")
    if type(request.size) is not int or not 0 <= request.size <= INT64_MAX:
        raise InvalidRequest("size is a non-negative integer")
    if request.mode is not None:
        check_mode(request.mode)
    if request.mtime_ns is not None:
        check_mtime(request.mtime_ns)
    if request.commit_id is not None and (
        not isinstance(request.commit_id, str)
        or not 0 < len(request.commit_id) <= MAX_COMMIT_ID
        or not request.commit_id.isprintable()
    ):
        raise InvalidRequest(f"commit_id has 1 to {MAX_COMMIT_ID} printable characters")
    blocks, offset = [], 0
    for block in request.blocks:
        check_hash(block.hash)
        if type(block.size) is not int or not 0 < block.size <= MAX_BLOCK_SIZE:
            raise InvalidRequest(f"a block has 1 to {MAX_BLOCK_SIZE} bytes")
        blocks.append(BlockRef(block.hash, block.size, offset))
        offset += block.size
    if offset != request.size:
        raise InvalidRequest(f"the blocks add up to {offset} bytes, not size {request.size}")
    return parts, blocks


def _check_file(node: Node) -> Node:
    if node.type == DIR:
        raise IsADirectory("a folder has no content")
    if node.type != FILE:
        raise InvalidRequest("a symlink has no content")
    return node


def _file_at(tree: Tree, parts: list[str]) -> Node:
    return _check_file(inode_of(tree, tree.lookup(parts)))


def _file_or_deleted_at(tree: Tree, parts: list[str]) -> Node:
    """The live file at parts, else the file most recently deleted there (its history
    stays readable after the deletion)."""
    try:
        return _file_at(tree, parts)
    except NotFound:
        if not parts:
            raise
        parent = tree.lookup_dir(parts[:-1])
        query = (
            select(Node)
            .where(
                Node.parent_id == parent.id,
                Node.name == parts[-1],
                Node.type == FILE,
                Node.deleted == true(),
            )
            .order_by(Node.id.desc())
            .limit(1)
        )
        node = tree.session.scalars(query).first()
        if node is None:
            raise
        return node


def _revision(tree: Tree, node: Node, number: object) -> Revision:
    if type(number) is not int or not 0 < number <= INT64_MAX:
        raise NotFound(f"no revision {number!r}")
    query = select(Revision).where(Revision.node_id == node.id, Revision.number == number)
    revision = tree.session.scalars(query).one_or_none()
    if revision is None:
        raise NotFound(f"no revision {number} of {tree.path_of(node)}")
    if revision.status != UPLOADED:
        raise RevisionPending(f"revision {number} is still being uploaded")
    return revision


def _blocks_of(tree: Tree, revision: Revision) -> tuple[list[BlockRef], frozenset[str]]:
    """The revision's blocks in order, and those the archive tier keeps (which a download
    prepares first), in one query."""
    query = (
        select(RevisionBlock.hash, RevisionBlock.size, RevisionBlock.offset, Block.tier)
        .outerjoin(Block, Block.hash == RevisionBlock.hash)
        .where(RevisionBlock.revision_id == revision.id)
        .order_by(RevisionBlock.seq)
    )
    rows = tree.session.execute(query).all()
    archived = frozenset(hash for hash, _size, _offset, tier in rows if tier == ARCHIVE)
    return [BlockRef(hash, size, offset) for hash, size, offset, _tier in rows], archived
