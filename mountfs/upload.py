"""Sending one dirty file to the server: chunk, ask what is missing, upload that, commit.

The stages run at once, as a pipeline, so the upload of a large file starts with its first
blocks rather than after the whole file is chunked:

    chunker thread ──groups──▶ checker ──────────▶ packer ──batches──▶ UPLOAD_CONCURRENCY senders
    (FastCDC + BLAKE3)         (/blocks/missing)     │     (~16 MiB)     (/blocks/batch)
                                                    keeper (clean cache) ◀──┘

Memory stays bounded whatever the file size: the channels between stages hold at most one
item each, so about (4 + UPLOAD_CONCURRENCY) groups of ~16 MiB are alive at a time (with
the windows they are views of), and the chunker blocks when the uploads fall behind. The
checker asks about the next group while the blocks of the previous one are packed and sent.
Delta sync falls out of content-defined chunking: after an edit, only the chunks around it
have new names, so only they are missing.

A block is uploaded from the very bytes that were hashed to name it, so the server always
holds what the manifest names, even when the file changes while this runs (the caller then
sees a new generation and uploads again). `ContentChanged` is raised when the file shrinks
under the chunker, whose view of it would otherwise be torn.

Once the server holds a block, the block also goes to the clean block cache (the ones it had
already as soon as /blocks/missing says so, the others once sent): the dirty copy is dropped
after the upload, and without this a file just written would be fetched back block by block.
The cache is filled in the background at the lowest CPU priority (cache/filler.py), copying
each block's range of the file in the kernel (`copy_file_range`), so neither the upload nor
its commit waits for it and no block is held in memory for it; as the file may change
meanwhile, those copies are checked against their names when first read.
One upload keeps at most CACHE_SHARE of the cache's size, so a huge file does not evict
everything else; its first blocks are the ones kept.

Chunking reads the file a window at a time and hands on views of the window, not copies:
each byte is copied from the page cache once, into the window, until it is framed.

A large file does not wait for its close: `EarlyUploads` runs the same pipeline over the
part already written while the writer goes on (unless the writer is faster than the upload
could follow: then the early passes would only take its cores), and the upload at close
starts from the blocks the server holds by then (checked against the file's bytes first),
so after the close only the tail is left to chunk and send.
"""

import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import trio

from backend.blocks import MAX_BATCH_BLOCKS
from backend.protocol.chunking import FileShrank, chunk_file
from backend.protocol.hashing import block_hash
from cache.blockcache import BlockCache
from cache.dirty import DirtyFiles
from mountfs.remote import RemoteDrive

# Requests in flight: two keep the server's cores busy; more only make its threads wait
# for one another (its interpreter lock), using CPU the writer could use on the same machine.
UPLOAD_CONCURRENCY = 2
# Bytes of blocks per missing check and per upload request: big enough that the server's
# per-request costs (two flushes, one transaction, the request's own handling) are small
# beside the blocks' (measured: 1 GiB stored with ~20% less server CPU at 16 MiB than at
# 8 MiB), small enough to keep memory low.
BATCH_BYTES = 16 * 1024 * 1024
# Share of the block cache's size that one upload may fill with the blocks it sent.
CACHE_SHARE = 0.5
# A file being written gets its blocks sent early once this much is written beyond what the
# server already holds of it; smaller files are sent whole at close.
EARLY_BYTES = 32 * 1024 * 1024
# Files whose early blocks are remembered at once (the oldest is forgotten beyond that).
EARLY_FILES = 16
# A writer faster than this (more than a gigabit link carries) is not sent behind early: the
# upload could not keep up with it anyway, and on the same cores it would only slow the
# writer. Its file goes at close, or early once it slows down or pauses. The rate is taken
# over windows of EARLY_WINDOW_S.
EARLY_WRITER_RATE = 128 * 1024 * 1024
EARLY_WINDOW_S = 0.25

log = logging.getLogger(__name__)

Block = tuple[str, int, memoryview]  # (hash, offset in the file, data)
Located = tuple[int, int, str]  # (offset in the file, size, hash): a manifest entry
Held = Callable[[list[Located]], None]  # told of blocks the server holds
T = TypeVar("T")


class ContentChanged(Exception):
    """The dirty file changed during the upload; try again."""


def named_chunks(fd: int, size: int, start: int = 0, final: bool = True) -> Iterator[Block]:
    """The named chunks of bytes [start, size) of an open file (see `chunk_file`), each data
    a view into its read window; FileShrank when the file got shorter than `size` meanwhile,
    whose chunks would then mix two versions."""
    for chunk in chunk_file(fd, size, start, final):
        yield block_hash(chunk.data), chunk.offset, chunk.data
    if os.fstat(fd).st_size < size:
        raise FileShrank(f"the file shrank below {size} bytes while it was read")


class _Keeper:
    """Hands the blocks the server holds to the cache's filler, up to this upload's share of
    the cache: they are copied from the file in the background (cache/filler.py), so the
    upload never waits for them."""

    def __init__(self, cache: BlockCache, path: str) -> None:
        self._filler = cache.filler
        self._left = int(cache.max_bytes * CACHE_SHARE)
        self._fd = self._filler.open(path)

    def keep(self, blocks: list[Located]) -> None:
        chosen: list[Located] = []
        for block in blocks:
            if block[1] > self._left:
                self._left = 0  # keep a prefix of the file: its reader starts there
                break
            self._left -= block[1]
            chosen.append(block)
        if chosen and self._fd is not None:
            self._filler.submit(self._fd, chosen)

    def close(self) -> None:
        if self._fd is not None:
            self._filler.release(self._fd)
            self._fd = None


@dataclass(frozen=True, slots=True)
class Manifest:
    size: int
    blocks: list[Located]


def _emit_groups(
    blocks: Iterable[Block], emit: "trio.MemorySendChannel[list[Block]]", out: list[Located]
) -> None:
    """Hand blocks on in groups of about BATCH_BYTES (from a worker thread), listing each
    in `out` before its group leaves."""
    group: list[Block] = []
    group_bytes = 0
    for name, offset, data in blocks:
        out.append((offset, len(data), name))
        group.append((name, offset, data))
        group_bytes += len(data)
        if group_bytes >= BATCH_BYTES or len(group) == MAX_BATCH_BLOCKS:
            trio.from_thread.run(emit.send, group)
            group, group_bytes = [], 0
    if group:
        trio.from_thread.run(emit.send, group)


def _still_there(fd: int, size: int, known: Sequence[Located]) -> list[Located]:
    """The longest prefix of `known` (blocks from offset 0 on, in order) that the file still
    holds byte for byte: each block's range read again and hashed. Whatever the early upload
    recorded, only blocks whose names match the bytes now in the file reach a manifest."""
    kept: list[Located] = []
    end = 0
    for offset, length, name in known:
        if offset != end or offset + length > size:
            break
        data = os.pread(fd, length, offset)
        if len(data) != length or block_hash(data) != name:
            break
        kept.append((offset, length, name))
        end = offset + length
    return kept


def _chunk(
    path: str,
    limit: int | None,
    known: Sequence[Located],
    held: Held,
    emit: "trio.MemorySendChannel[list[Block]]",
) -> Manifest:
    """Cut the file (its first `limit` bytes, when given) into named blocks in a worker
    thread, handing them on in groups; the prefix of `known` the file still holds is taken
    as it is, not sent again."""
    with open(path, "rb") as file:
        fd = file.fileno()
        size = os.fstat(fd).st_size if limit is None else limit
        blocks = _still_there(fd, size, known)
        if blocks:
            trio.from_thread.run_sync(held, blocks)
        start = blocks[-1][0] + blocks[-1][1] if blocks else 0
        try:
            _emit_groups(named_chunks(fd, size, start), emit, blocks)
        except FileShrank as exc:
            raise ContentChanged(f"{path}: {exc}") from None
    return Manifest(size, blocks)


async def upload_blocks(
    remote: RemoteDrive,
    blocks: BlockCache,
    path: str,
    limiter: trio.CapacityLimiter,
    known: Sequence[Located] = (),
    size: int | None = None,
) -> Manifest:
    """Chunk the file at `path` (or its first `size` bytes) and make sure the server has
    every block; return the list. `known` are blocks the server holds that the file began
    with a moment ago (sent early, while it was written): those the file still holds are not
    chunked or sent again.

    The first failure of any stage stops the others and is raised as it is (not wrapped in
    an exception group), so callers can tell ContentChanged or ServerUnreachable apart.
    """
    keeper = _Keeper(blocks, path)
    try:
        chunk = partial(_chunk, path, size, known, keeper.keep)
        return await _pipeline(remote, limiter, chunk, keeper.keep)
    finally:
        keeper.close()


async def _pipeline(
    remote: RemoteDrive,
    limiter: trio.CapacityLimiter,
    chunk: Callable[["trio.MemorySendChannel[list[Block]]"], T],
    held: Held,
) -> T:
    """Run `chunk` in a worker thread and send what the server lacks of the groups it
    emits; `held` hears of every block the server holds. Answers what `chunk` returns."""
    found_in, found_out = trio.open_memory_channel[list[Block]](1)
    checked_in, checked_out = trio.open_memory_channel[tuple[list[Block], set[str]]](1)
    batch_in, batch_out = trio.open_memory_channel[list[Block]](1)
    result: list[T] = []
    failures: list[Exception] = []

    async def stage(work: Callable[[], Awaitable[object]]) -> None:
        try:
            await work()
        except Exception as exc:
            failures.append(exc)
            nursery.cancel_scope.cancel()

    async def chunker() -> None:
        async with found_in:
            result.append(await trio.to_thread.run_sync(chunk, found_in, limiter=limiter))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stage, chunker)
        nursery.start_soon(stage, partial(_check, remote, found_out, checked_in))
        nursery.start_soon(stage, partial(_pack, held, checked_out, batch_in))
        async with batch_out:
            for _ in range(UPLOAD_CONCURRENCY):
                nursery.start_soon(stage, partial(_send, remote, held, batch_out.clone()))
    if failures:
        raise failures[0]
    return result[0]


def located(blocks: Iterable[Block]) -> list[Located]:
    """Manifest entries of named blocks."""
    return [(offset, len(data), name) for name, offset, data in blocks]


async def _check(
    remote: RemoteDrive,
    found: "trio.MemoryReceiveChannel[list[Block]]",
    checked: "trio.MemorySendChannel[tuple[list[Block], set[str]]]",
) -> None:
    """Ask the server which blocks of each group it lacks (each name once per upload)."""
    seen: set[str] = set()
    async with found, checked:
        async for group in found:
            fresh = {block[0]: block for block in group if block[0] not in seen}
            seen.update(fresh)
            missing = await remote.missing_blocks(list(fresh)) if fresh else []
            await checked.send((list(fresh.values()), set(missing)))


async def _pack(
    held: Held,
    checked: "trio.MemoryReceiveChannel[tuple[list[Block], set[str]]]",
    batches: "trio.MemorySendChannel[list[Block]]",
) -> None:
    """Pack the blocks the server lacks into batches; report the ones it has."""
    batch: list[Block] = []
    batch_bytes = 0
    async with checked, batches:
        async for group, missing in checked:
            held(located([block for block in group if block[0] not in missing]))
            for block in group:
                if block[0] not in missing:
                    continue
                batch.append(block)
                batch_bytes += len(block[2])
                if batch_bytes >= BATCH_BYTES or len(batch) == MAX_BATCH_BLOCKS:
                    await batches.send(batch)
                    batch, batch_bytes = [], 0
        if batch:
            await batches.send(batch)


async def _send(
    remote: RemoteDrive,
    held: Held,
    batches: "trio.MemoryReceiveChannel[list[Block]]",
) -> None:
    """Upload batches until there are none left, reporting each once the server holds it."""
    async with batches:
        async for batch in batches:
            await remote.put_blocks([(name, data) for name, _offset, data in batch])
            held(located(batch))


# -- early upload: blocks of a file still being written ----------------------------------------


@dataclass(eq=False)
class _Early:
    """What the server holds of one file being written: `prefix`, its first blocks in order
    (contiguous from offset 0), and the pass sending the next ones, if any."""

    prefix: list[Located] = field(default_factory=list)
    written: int = 0  # the end of the furthest write
    resume_at: int = 0  # no pass starts before `written` reaches this (after a rewrite)
    touched: float = float("inf")  # the lowest offset written since the pass started
    pass_start: int = 0  # the bytes the running pass reads: [pass_start, pass_end)
    pass_end: int = 0
    scope: trio.CancelScope | None = None
    window_start: float = 0.0  # the writer's pace: bytes written since window_start
    window_bytes: int = 0
    fast: bool = True  # the last window was written faster than EARLY_WRITER_RATE, or none
    # was judged since the file was opened or the last pass ended
    waking: bool = False  # a check of the pace after a fast window is pending
    taken: bool = False  # the upload at close took the prefix: no pass until the next write

    def judge_afresh(self) -> None:
        """Count the writer as fast until a window from now on shows otherwise."""
        self.fast = True
        self.window_start, self.window_bytes = trio.current_time(), 0

    @property
    def end(self) -> int:
        return self.prefix[-1][0] + self.prefix[-1][1] if self.prefix else 0

    def cut(self, offset: int) -> None:
        """Forget the blocks that hold bytes at or past `offset` (they changed)."""
        while self.prefix and self.prefix[-1][0] + self.prefix[-1][1] > offset:
            self.prefix.pop()
        self.touched = min(self.touched, offset)
        if self.scope is not None and offset < self.pass_start:
            self.scope.cancel()  # what it reads no longer follows the prefix


class EarlyUploads:
    """Sends the blocks of a large file while it is still being written, so that at close
    only its tail is left to chunk and send.

    Content-defined chunks of the written part, except the last one (more data could still
    move its end), are the chunks the finished file will have if those bytes do not change;
    blocks are named by their content, so a block sent for bytes rewritten later only cost
    bandwidth. Nothing is committed here: the upload at close takes the prefix the server
    holds (`take`), checks that the file still holds those bytes, and chunks from its end.
    Writes and truncations cut the prefix at the lowest offset they touch; a rewrite below
    what was sent pauses the passes until another EARLY_BYTES have been appended.
    """

    def __init__(self, remote: RemoteDrive, dirty: DirtyFiles, nursery: trio.Nursery) -> None:
        self._remote = remote
        self._dirty = dirty
        self._nursery = nursery
        self._files: dict[int, _Early] = {}
        self._limiter = trio.CapacityLimiter(1)

    def wrote(self, inode: int, offset: int, end: int) -> None:
        state = self._files.get(inode)
        if state is None:
            if end < EARLY_BYTES:
                return
            state = self._track(inode)
        if offset < max(state.end, state.pass_end if state.scope else 0):
            state.cut(offset)
            state.resume_at = max(state.written, end) + EARLY_BYTES
        state.written = max(state.written, end)
        state.taken = False
        self._pace(state, end - offset)
        self._next_pass(inode, state)

    def _pace(self, state: _Early, written: int) -> None:
        """Note `written` bytes in the writer's pace; a window over, judge it."""
        now = trio.current_time()
        state.window_bytes += written
        elapsed = now - state.window_start
        if elapsed >= EARLY_WINDOW_S:
            state.fast = state.window_bytes > EARLY_WRITER_RATE * elapsed
            state.window_start, state.window_bytes = now, 0
        elif state.window_bytes > EARLY_WRITER_RATE * EARLY_WINDOW_S:
            state.fast = True  # over the rate already, however long the window goes on

    def truncated(self, inode: int, size: int) -> None:
        state = self._files.get(inode)
        if state is not None:
            state.cut(size)
            state.written = min(state.written, size)

    def forget(self, inode: int) -> None:
        """The dirty copy is made anew: what was sent of the old one says nothing of it."""
        state = self._files.pop(inode, None)
        if state is not None and state.scope is not None:
            state.scope.cancel()

    def take(self, inode: int) -> list[Located]:
        """The blocks the server holds that the file began with (stopping the pass under way:
        the upload at close sends the rest)."""
        state = self._files.get(inode)
        if state is None:
            return []
        if state.scope is not None:
            state.scope.cancel()
        state.taken = True
        return list(state.prefix)

    def _track(self, inode: int) -> _Early:
        if len(self._files) >= EARLY_FILES:
            self.forget(next(iter(self._files)))
        state = self._files[inode] = _Early()
        state.judge_afresh()
        return state

    def _next_pass(self, inode: int, state: _Early) -> None:
        """Start a pass when enough is written beyond what the server holds, unless the
        writer is fast: then look again once it may have slowed down or paused."""
        if (
            state.scope is None
            and state.written >= state.resume_at
            and state.written - state.end >= EARLY_BYTES
        ):
            if not state.fast:
                self._start(inode, state)
            elif not state.waking:
                state.waking = True
                self._nursery.start_soon(self._look_again, inode, state)

    async def _look_again(self, inode: int, state: _Early) -> None:
        """After a fast window: a writer that paused since counts as slow again."""
        await trio.sleep(EARLY_WINDOW_S)
        state.waking = False
        if self._files.get(inode) is state and not state.taken:
            self._pace(state, 0)
            self._next_pass(inode, state)

    def _start(self, inode: int, state: _Early) -> None:
        state.scope = trio.CancelScope()
        state.touched = float("inf")
        state.pass_start, state.pass_end = state.end, state.written
        self._nursery.start_soon(self._pass, inode, state, state.scope, state.end, state.written)

    async def _pass(
        self, inode: int, state: _Early, scope: trio.CancelScope, start: int, end: int
    ) -> None:
        """Send the blocks of bytes [start, end) of the file, extending the prefix with each
        run of them the server holds; any failure only leaves more for the close."""
        order: list[Located] = []
        held: set[str] = set()
        done = 0

        def extend(blocks: list[Located]) -> None:
            nonlocal done
            held.update(name for _offset, _size, name in blocks)
            while done < len(order) and order[done][2] in held:
                offset, size, _name = order[done]
                if self._files.get(inode) is not state or scope.cancel_called:
                    return
                if offset != state.end or offset + size > state.touched:
                    scope.cancel()
                    return
                state.prefix.append(order[done])
                done += 1

        def chunk(emit: "trio.MemorySendChannel[list[Block]]") -> None:
            with open(self._dirty.path(inode), "rb") as file:
                _emit_groups(named_chunks(file.fileno(), end, start, final=False), emit, order)

        with scope:
            try:
                await _pipeline(self._remote, self._limiter, chunk, extend)
            except Exception as exc:  # the close sends whatever is not on the server yet
                log.debug("early upload of inode %d stopped: %s", inode, exc)
                state.resume_at = state.written + EARLY_BYTES  # not again at the next write
        if state.scope is scope:
            state.scope = None
            if self._files.get(inode) is state and not scope.cancel_called:
                # A pass takes the writer's cores, so the windows it ran in may show a slow
                # writer that is only slowed by it: the next pass waits for a window
                # without one, or every pass would make the next one look justified.
                state.judge_afresh()
                self._next_pass(inode, state)
