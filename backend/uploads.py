"""Whole-file uploads: bytes spooled to disk, then cut into blocks and committed.

Both upload types of the API end here. A simple upload streams its body into a temporary
spool; a resumable upload (Google Drive's protocol) appends each ranged PUT to a spool named
after its session. Either way the file never sits in memory: the finished spool is cut by
FastCDC through a memory map (the same chunking as the mount, so both dedupe against each
other), each block stored unless the store already has it, and one commit makes the file's
new revision.

Durability of a resumable session: the bytes of a PUT are fsynced before the session row's
`received` moves, and the client is answered only after that. After a crash the spool may hold
more than `received` (an unacknowledged tail) or, if the disk lost it, less; the next access
trusts min(spool size, received) and truncates the spool to it.

A session's spool lives on this server's disk, so with several API servers a resumable upload
must reach the same one (sticky routing on the upload id) or the spools a shared filesystem.
"""

import asyncio
import logging
import os
import re
import secrets
import stat
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from backend.blocks import BlockService
from backend.db import writer
from backend.db.models import UploadSession
from backend.metadata.service import MetadataService
from backend.metadata.types import BlockRef, CommitRequest, NodeInfo, Principal
from backend.protocol.chunking import iter_file_chunks
from backend.protocol.errors import (
    CirrusError,
    InvalidRequest,
    IsADirectory,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
)
from backend.protocol.hashing import block_hash

log = logging.getLogger(__name__)

MAX_FILE_SIZE = 64 * 1024**3
SESSION_LIFETIME_NS = 7 * 24 * 3600 * 10**9
# A spool with no session row is removed once it is this old (never while being created).
ORPHAN_AGE_NS = 3600 * 10**9
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
    """Spools, resumable sessions and the final store-and-commit of uploaded files."""

    def __init__(
        self, engine: Engine, spool_dir: Path, metadata: MetadataService, blocks: BlockService
    ) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._spool_dir = spool_dir
        self._tmp_dir = spool_dir / "tmp"
        self._metadata = metadata
        self._blocks = blocks
        # One PUT at a time per session in this process (weak: gone when nobody holds it).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def clear_temporary(self) -> None:
        """Drop simple-upload spools a previous process left behind (they were never answered)."""
        self._tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in self._tmp_dir.iterdir():
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
                await _write_body(body, file, 0, MAX_FILE_SIZE, too_large)
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
        blocks: list[BlockRef] = []
        with open(spool, "rb") as file:
            for chunk in iter_file_chunks(file):
                blocks.append(self._store_block(who, chunk.data, chunk.offset))
        size = sum(block.size for block in blocks)
        result = self._metadata.commit(
            who,
            CommitRequest(
                path=request.path,
                base_rev=None,
                size=size,
                blocks=blocks,
                mode=request.mode,
                mtime_ns=request.mtime_ns,
                commit_id=request.commit_id,
                overwrite=True,
            ),
        )
        return result.node

    def _store_block(self, who: Principal, data: bytes, offset: int) -> BlockRef:
        """Store a block unless this drive already uploaded it (then it is known stored)."""
        name = block_hash(data)
        if self._metadata.missing_blocks(who, [name]):
            stored = self._blocks.put_plain(data)
            self._metadata.record_blocks(
                who,
                [(name, stored.size, stored.stored_size)],
                [(name, region) for region in stored.owed],
            )
        return BlockRef(name, len(data), offset)

    # resumable sessions

    def create(self, who: Principal, path: str, total: int) -> UploadState:
        self._refuse_folder(who, path)
        check_file_size(total)
        now = time.time_ns()
        upload_id = secrets.token_urlsafe(24)
        self._spool(upload_id).touch(mode=0o600)
        row = UploadSession(
            id=upload_id,
            namespace_id=who.namespace_id,
            path=path,
            total_size=total,
            received=0,
            device=who.device,
            created=now,
            updated=now,
            expires=now + SESSION_LIFETIME_NS,
        )
        with self._transaction() as session, session.begin():
            session.add(row)
        return UploadState(upload_id, 0, total, row.expires)

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
                await self._append(row, wanted, body)
            if row.received == row.total_size:
                return await anyio.to_thread.run_sync(self._finish, who, row)
            return UploadState(upload_id, row.received, row.total_size, row.expires)

    async def _append(
        self, row: UploadSession, wanted: ContentRange, body: AsyncIterator[bytes]
    ) -> None:
        """Write the new part of the range, fsync it, then move `received` (or undo)."""
        skip = row.received - wanted.first
        with open(self._spool(row.id), "r+b") as file:
            file.seek(row.received)
            try:
                too_long = InvalidRequest(
                    f"body is longer than the {wanted.length} bytes announced"
                )
                sent = await _write_body(body, file, skip, wanted.length, too_long)
                if sent != wanted.length:
                    raise InvalidRequest(
                        f"body has {sent} bytes but Content-Range announces {wanted.length}"
                    )
                await anyio.to_thread.run_sync(_sync, file)
                await anyio.to_thread.run_sync(self._advance, row, wanted.last + 1)
            except BaseException:
                file.truncate(row.received)
                raise

    def _advance(self, row: UploadSession, received: int) -> None:
        now = time.time_ns()
        values = {"received": received, "updated": now, "expires": now + SESSION_LIFETIME_NS}
        with self._transaction() as session, session.begin():
            done = session.execute(
                update(UploadSession)
                .where(UploadSession.id == row.id, UploadSession.received == row.received)
                .values(**values)
            )
            if done.rowcount != 1:
                raise RangeNotSatisfiable("the upload changed concurrently; ask for progress")
        row.received, row.updated, row.expires = received, now, values["expires"]

    def _load(self, who: Principal, upload_id: str) -> UploadSession:
        """The caller's live session, its spool reconciled with the committed offset."""
        if not _SESSION_ID.fullmatch(upload_id):
            raise NotFound(f"no such upload: {upload_id[:64]}")
        with self._transaction() as session, session.begin():
            row = session.get(UploadSession, upload_id)
            if row is None or row.namespace_id != who.namespace_id:
                raise NotFound(f"no such upload: {upload_id}")
            if row.expires < time.time_ns():
                self._discard(session, row.id)
                raise NotFound(f"upload {upload_id} has expired")
            spool = self._spool(upload_id)
            with open(spool, "ab") as file:
                size = file.tell()
                if size > row.received:
                    file.truncate(row.received)
            if size < row.received:
                log.warning("upload %s: spool has %d of %d bytes", upload_id, size, row.received)
                row.received = size
        return row

    def _finish(self, who: Principal, row: UploadSession) -> UploadState:
        """Commit the complete spool; the upload id makes a repeat after a crash harmless."""
        author = Principal(who.user_id, who.user_name, who.namespace_id, row.device)
        request = CommitRequest(row.path, None, 0, [], commit_id=f"upload:{row.id}")
        node = self._store_and_commit(author, request, self._spool(row.id))
        with self._transaction() as session, session.begin():
            self._discard(session, row.id)
        return UploadState(row.id, row.received, row.total_size, row.expires, node)

    def cancel(self, who: Principal, upload_id: str) -> None:
        row = self._load(who, upload_id)
        with self._transaction() as session, session.begin():
            self._discard(session, row.id)

    def sweep_expired(self) -> int:
        """Delete sessions past their expiry and spools without a session; return how many."""
        now = time.time_ns()
        with self._transaction() as session, session.begin():
            expired = session.scalars(
                select(UploadSession.id).where(UploadSession.expires < now)
            ).all()
            for upload_id in expired:
                self._discard(session, upload_id)
            live = set(session.scalars(select(UploadSession.id)).all())
        for spool in self._spool_dir.iterdir():
            if spool.name not in live and _older_than(spool, now - ORPHAN_AGE_NS):
                spool.unlink(missing_ok=True)
        return len(expired)

    def _discard(self, session: Session, upload_id: str) -> None:
        session.execute(delete(UploadSession).where(UploadSession.id == upload_id))
        self._spool(upload_id).unlink(missing_ok=True)

    def _transaction(self) -> Session:
        """A write session (SQLite's lock taken at BEGIN); rows stay readable after commit."""
        return Session(self._writer, expire_on_commit=False)

    def _spool(self, upload_id: str) -> Path:
        return self._spool_dir / upload_id


def _older_than(spool: Path, instant_ns: int) -> bool:
    """A spool file last written before instant (one being created now is left alone)."""
    try:
        info = spool.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_mtime_ns < instant_ns


def _sync(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


async def _write_body(
    body: AsyncIterator[bytes], file: BinaryIO, skip: int, limit: int, overflow: CirrusError
) -> int:
    """Copy a request body into file, dropping its first `skip` bytes; return its length.

    Raise overflow as soon as the body exceeds limit, so an oversized body is never read to
    its end. Writes happen in worker threads, a megabyte at a time.
    """
    seen = 0
    pending: list[bytes] = []
    buffered = 0
    async for piece in body:
        if seen + len(piece) > limit:
            raise overflow
        start = max(0, min(len(piece), skip - seen))
        seen += len(piece)
        if start < len(piece):
            pending.append(piece[start:] if start else piece)
            buffered += len(piece) - start
        if buffered >= WRITE_BUFFER:
            await anyio.to_thread.run_sync(file.write, b"".join(pending))
            pending, buffered = [], 0
    if pending:
        await anyio.to_thread.run_sync(file.write, b"".join(pending))
    return seen
