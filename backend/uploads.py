"""Whole-file uploads (the API's simple and resumable ones): cut into blocks and committed.

A simple upload streams its body into a temporary spool on this server's disk; once the body
is whole, the spool is cut by FastCDC (the same chunking as the mount, so both dedupe against
each other), each block stored unless the drive already has it and recorded as the drive's
(through the garbage collector's protocol: a block collected meanwhile is written again),
then one transaction commits the file's new revision. Blocks stored by an upload that fails
before its commit are the drive's but unreferenced: they are not counted against its quota,
and the collector deletes them after its grace period.

A resumable session keeps nothing on the server that takes a PUT, so any server behind a
balancer can take any PUT of it, and it survives the death of the server that started it. Its
bytes are cut into blocks as they arrive (the same cut points as the whole file: see
StreamCutter) and stored in the block store, which every server shares; the bytes after the
last cut (under 2 MiB) wait in the session's row. Once the PUT's body is all stored, its new
blocks are recorded as the drive's, then one transaction notes them with the new tail and
moves `received`, only if no other PUT moved it first, and only after it commits is the
client answered. A PUT that fails before that acknowledges nothing (blocks it recorded are
the drive's but unreferenced, like those of a mount's upload that never got its commit). The
last byte's PUT commits the noted block list, with the upload id as commit id, so a repeat
after a crash is harmless.
"""

import asyncio
import re
import secrets
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from backend.blocks import BlockService
from backend.db import writer
from backend.db.failover import repeatable
from backend.db.models import UploadBlock, UploadSession
from backend.lifecycle.gc import Collector
from backend.metadata.service import MetadataService
from backend.metadata.types import BlockRef, CommitRequest, NodeInfo, Principal
from backend.protocol.chunking import Chunk, StreamCutter, iter_file_chunks
from backend.protocol.errors import (
    BlockBeingCollected,
    CirrusError,
    InvalidRequest,
    IsADirectory,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
)
from backend.protocol.hashing import block_hash
from backend.protocol.limits import MAX_FILE_SIZE
from backend.upload_limits import UploadLimits

# Blocks a simple upload stores and records together (one query and one transaction).
STORE_GROUP = 16
# Bytes gathered from the request before one write() in a worker thread.
WRITE_BUFFER = 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes (?:(\d{1,20})-(\d{1,20})|\*)/(\d{1,20})")
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class ContentRange:
    """`bytes A-B/N` (first=A, last=B) or `bytes */N` (a progress query: first is None)."""

    total: int
    first: int | None = None
    last: int | None = None

    @classmethod
    def parse(cls, header: str | None) -> "ContentRange":
        match = _CONTENT_RANGE.fullmatch((header or "").strip())
        if match is None:
            raise RangeNotSatisfiable("Content-Range must be 'bytes A-B/N' or 'bytes */N'")
        first, last, total = (None if g is None else int(g) for g in match.groups())
        if first is not None and not first <= last < total:
            raise RangeNotSatisfiable(f"Content-Range {header!r} is not within 0-{total - 1}")
        return cls(total, first, last)

    @property
    def length(self) -> int:
        return 0 if self.first is None else self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class UploadState:
    """Where a resumable upload stands: `node` is set once the file is committed."""

    upload_id: str
    received: int
    total: int
    expires_ns: int
    node: NodeInfo | None = None


def check_file_size(size: int) -> int:
    if not 0 <= size <= MAX_FILE_SIZE:
        raise PayloadTooLarge(f"file size must be 0-{MAX_FILE_SIZE} bytes, got {size}")
    return size


class UploadManager:
    """Simple uploads' spools, resumable sessions and the store-and-commit of uploaded files."""

    def __init__(
        self,
        engine: Engine,
        spool_dir: Path,
        metadata: MetadataService,
        blocks: BlockService,
        limits: UploadLimits,
        collector: Collector,
    ) -> None:
        self._engine = engine
        self._limits = limits
        self._writer = writer(engine)
        self._spool_dir = spool_dir
        self._tmp_dir = spool_dir / "tmp"
        self._metadata = metadata
        self._blocks = blocks
        self._collector = collector
        # One PUT at a time per session in this process (weak: gone when nobody holds it).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def clear_temporary(self) -> None:
        """Drop spools a previous process left behind: simple uploads' (never answered) and
        resumable sessions' from before their bytes moved to the block store (0008)."""
        self._tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (self._tmp_dir, self._spool_dir):
            for leftover in folder.iterdir():
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)

    # simple uploads and the common store-and-commit step

    async def receive_whole(
        self,
        who: Principal,
        path: str,
        body: AsyncIterator[bytes],
        mode: int | None,
        mtime_ns: int | None,
    ) -> NodeInfo:
        """Spool a simple upload's body, then store and commit it as one new revision."""
        await anyio.to_thread.run_sync(self._refuse_folder, who, path)
        spool = self._tmp_dir / secrets.token_hex(16)
        try:
            with open(spool, "wb") as file:
                too_large = PayloadTooLarge(f"files are limited to {MAX_FILE_SIZE} bytes")
                await _write_body(body, file, MAX_FILE_SIZE, too_large)
            request = CommitRequest(path, None, 0, [], mode, mtime_ns, overwrite=True)
            return await anyio.to_thread.run_sync(self._store_and_commit, who, request, spool)
        finally:
            spool.unlink(missing_ok=True)

    def _refuse_folder(self, who: Principal, path: str) -> None:
        """Fail before any byte is spooled when the upload could never be committed."""
        try:
            node = self._metadata.stat(who, path)
        except NotFound:
            return
        if node.type == "dir":
            raise IsADirectory(f"a folder is in the way: {path}")

    def _store_and_commit(self, who: Principal, request: CommitRequest, spool: Path) -> NodeInfo:
        """Store the spool's blocks (each recorded as the drive's once stored, through the
        collector's protocol), then commit them: if the disk fills up on the way, nothing is
        committed and the request can be retried; what was stored unused is collected."""
        blocks: list[BlockRef] = []
        with open(spool, "rb") as file:
            group: list[Chunk] = []
            for chunk in iter_file_chunks(file):
                group.append(chunk)
                if len(group) == STORE_GROUP:
                    blocks += self._store_chunks(who, group)
                    group = []
            blocks += self._store_chunks(who, group)
        return self._commit(who, replace(request, blocks=blocks))

    def _commit(self, who: Principal, request: CommitRequest) -> NodeInfo:
        """Commit the stored blocks as the file's new revision (never a conflicted copy)."""
        size = sum(block.size for block in request.blocks)
        commit = replace(request, base_rev=None, size=size, overwrite=True)
        result = self._metadata.commit(who, commit)
        if result.missing:  # a collection took blocks the drive held after they were checked
            raise BlockBeingCollected("blocks of this upload were collected; send it again")
        return result.node

    def _store_chunks(self, who: Principal, chunks: list[Chunk]) -> list[BlockRef]:
        """Store the chunks this drive does not hold yet and record them as its own."""
        refs = [BlockRef(block_hash(chunk.data), len(chunk.data), chunk.offset) for chunk in chunks]
        if not refs:
            return refs
        missing = set(self._metadata.missing_blocks(who, [ref.hash for ref in refs]))
        plain: dict[str, bytes] = {}
        for ref, chunk in zip(refs, chunks, strict=True):
            if ref.hash in missing and ref.hash not in plain:
                plain[ref.hash] = bytes(chunk.data)
        if plain:  # recorded through the collector, which writes again what it took meanwhile
            write = lambda hashes: [self._blocks.put_plain(plain[h]) for h in hashes]  # noqa: E731
            self._collector.store(self._metadata, who, list(plain), write)
        return refs

    # resumable sessions

    def create(self, who: Principal, path: str, total: int) -> UploadState:
        self._refuse_folder(who, path)
        check_file_size(total)
        self._metadata.check_size_quota(who, total)
        now = time.time_ns()
        row = UploadSession(
            id=secrets.token_urlsafe(24),
            namespace_id=who.namespace_id,
            path=path,
            total_size=total,
            received=0,
            device=who.device,
            created=now,
            updated=now,
            expires=now + self._limits.lifetime_ns,
        )
        with self._transaction() as session, session.begin():
            self._limits.check_room(session, who.namespace_id, total, now)
            session.add(row)
        return UploadState(row.id, 0, total, row.expires)

    async def receive_range(
        self, who: Principal, upload_id: str, content_range: str | None, body: AsyncIterator[bytes]
    ) -> UploadState:
        """Apply one PUT of the resumable protocol (a ranged body or a progress query)."""
        wanted = ContentRange.parse(content_range)
        lock = self._locks.setdefault(upload_id, asyncio.Lock())
        async with lock:
            row = await anyio.to_thread.run_sync(self._load, who, upload_id)
            if wanted.total != row.total_size:
                raise RangeNotSatisfiable(f"the upload's total is {row.total_size} bytes")
            if wanted.first is not None and wanted.last >= row.received:
                if wanted.first > row.received:
                    raise RangeNotSatisfiable(
                        f"range starts at {wanted.first} but only {row.received} bytes arrived"
                    )
                await self._append(who, row, wanted, body)
            if row.received == row.total_size:
                return await anyio.to_thread.run_sync(self._finish, who, row)
            return UploadState(upload_id, row.received, row.total_size, row.expires)

    async def _append(
        self, who: Principal, row: UploadSession, wanted: ContentRange, body: AsyncIterator[bytes]
    ) -> None:
        """Cut the new part of the range into blocks and store them as it arrives; then
        record the new ones to the drive, and note them with the uncut tail and move
        `received` in one transaction. A PUT that fails before (a full disk) records and
        acknowledges nothing."""
        tail = row.tail or b""
        cutter = StreamCutter(row.received - len(tail), tail)
        blocks: list[BlockRef] = []
        too_long = InvalidRequest(f"body is longer than the {wanted.length} bytes announced")
        reader = _BodyReader(body, row.received - wanted.first, wanted.length, too_long)
        async for piece in reader:
            chunks = cutter.feed(piece)
            if chunks:
                blocks += await anyio.to_thread.run_sync(self._store_chunks, who, chunks)
        if reader.length != wanted.length:
            raise InvalidRequest(
                f"body has {reader.length} bytes but Content-Range announces {wanted.length}"
            )
        final = cutter.cut(final=wanted.last + 1 == row.total_size)
        blocks += await anyio.to_thread.run_sync(self._store_chunks, who, final)
        await anyio.to_thread.run_sync(self._advance, row, wanted.last + 1, blocks, cutter.tail)

    def _advance(
        self, row: UploadSession, received: int, blocks: list[BlockRef], tail: bytes
    ) -> None:
        now = time.time_ns()
        values = {
            "received": received,
            "tail": tail or None,
            "updated": now,
            "expires": now + self._limits.lifetime_ns,
        }
        with self._transaction() as session, session.begin():
            done = session.execute(
                update(UploadSession)
                .where(UploadSession.id == row.id, UploadSession.received == row.received)
                .values(**values)
            )
            if done.rowcount != 1:
                raise RangeNotSatisfiable("the upload changed concurrently; ask for progress")
            if blocks:
                session.execute(insert(UploadBlock), [
                    {"upload_id": row.id, "offset": b.offset, "hash": b.hash, "size": b.size}
                    for b in blocks
                ])  # fmt: skip
        row.received, row.tail, row.updated, row.expires = (
            received, values["tail"], now, values["expires"]
        )  # fmt: skip

    @repeatable
    def _load(self, who: Principal, upload_id: str) -> UploadSession:
        """The caller's live session (an expired one is removed and reported missing)."""
        if not _SESSION_ID.fullmatch(upload_id):
            raise NotFound(f"no such upload: {upload_id[:64]}")
        with self._transaction() as session, session.begin():
            row = session.get(UploadSession, upload_id)
            if row is None or row.namespace_id != who.namespace_id:
                raise NotFound(f"no such upload: {upload_id}")
            if row.expires < time.time_ns():
                self._discard(session, row.id)
                raise NotFound(f"upload {upload_id} has expired")
        return row

    def _finish(self, who: Principal, row: UploadSession) -> UploadState:
        """Commit the noted blocks; the upload id makes a repeat after a crash harmless."""
        author = Principal(who.user_id, who.user_name, who.namespace_id, row.device)
        with self._transaction() as session, session.begin():
            noted = session.execute(
                select(UploadBlock.hash, UploadBlock.size, UploadBlock.offset)
                .where(UploadBlock.upload_id == row.id)
                .order_by(UploadBlock.offset)
            ).all()
        blocks = [BlockRef(*block) for block in noted]
        request = CommitRequest(row.path, None, 0, blocks, commit_id=f"upload:{row.id}")
        node = self._commit(author, request)  # its blocks were recorded with each PUT
        with self._transaction() as session, session.begin():
            self._discard(session, row.id)
        return UploadState(row.id, row.received, row.total_size, row.expires, node)

    def cancel(self, who: Principal, upload_id: str) -> None:
        row = self._load(who, upload_id)
        with self._transaction() as session, session.begin():
            self._discard(session, row.id)

    def sweep_expired(self) -> int:
        """Delete sessions past their expiry; return how many."""
        now = time.time_ns()
        with self._transaction() as session, session.begin():
            expired = session.scalars(
                select(UploadSession.id).where(UploadSession.expires < now)
            ).all()
            for upload_id in expired:
                self._discard(session, upload_id)
        return len(expired)

    def _discard(self, session: Session, upload_id: str) -> None:
        session.execute(delete(UploadBlock).where(UploadBlock.upload_id == upload_id))
        session.execute(delete(UploadSession).where(UploadSession.id == upload_id))

    def _transaction(self) -> Session:
        """A write session (SQLite's lock taken at BEGIN); rows stay readable after commit."""
        return Session(self._writer, expire_on_commit=False)


class _BodyReader:
    """A request body's pieces, its first `skip` bytes dropped; `length` counts every byte
    read. Raises overflow as soon as the body exceeds limit, so an oversized body is never
    read to its end."""

    def __init__(
        self, body: AsyncIterator[bytes], skip: int, limit: int, overflow: CirrusError
    ) -> None:
        self._body = body
        self._skip = skip
        self._limit = limit
        self._overflow = overflow
        self.length = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._body:
            if self.length + len(piece) > self._limit:
                raise self._overflow
            start = max(0, min(len(piece), self._skip - self.length))
            self.length += len(piece)
            if start < len(piece):
                yield piece[start:] if start else piece


async def _write_body(
    body: AsyncIterator[bytes], file: BinaryIO, limit: int, overflow: CirrusError
) -> None:
    """Copy a request body of at most limit bytes into file, in worker threads, a megabyte
    at a time."""
    pending: list[bytes] = []
    buffered = 0
    async for piece in _BodyReader(body, 0, limit, overflow):
        pending.append(piece)
        buffered += len(piece)
        if buffered >= WRITE_BUFFER:
            await anyio.to_thread.run_sync(file.write, b"".join(pending))
            pending, buffered = [], 0
    if pending:
        await anyio.to_thread.run_sync(file.write, b"".join(pending))
