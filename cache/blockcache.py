"""The disk cache of clean blocks: plaintext copies of blocks the server already stores.

Layout: `ROOT/ab/abcdef…` (the block's hash, fanned out by its first two hex digits so no
folder holds more than a few hundred files). Everything here can be fetched again, so every
file is evictable and nothing is fsynced; blocks not yet uploaded live elsewhere (the mount's
dirty files) and never enter this cache.

Recency: an in-memory LRU index (hash → size), rebuilt at start from a scan of the folder
ordered by file mtime. A hit moves the entry to the recent end and sets the file's mtime, but
at most once per TOUCH_INTERVAL per file: the order after a restart is then right to within a
minute, which is all an LRU cache needs, while a block read many times a second does not write
its inode each time.

Integrity: a block is checked against its name once per session, not on every read. One
put here was checked already (fetched blocks by the remote client, uploaded ones were hashed to
be named), and a file found on disk at start is checked in full the first time it is read (the
names checked this session are kept in memory). A torn or corrupt file fails that check, is
deleted and reads as a miss, so it is fetched again. After that, `read` serves a range with one
`pread` straight from the trio thread: a page-cache hit costs microseconds, less than a hop to a
worker thread, and re-hashing 512 KiB to hand out 4 KiB was most of a random read's cost. That
pread never waits for the disk (`wait=False`, RWF_NOWAIT): a range not in the page cache is
refused, the kernel asked to load the whole block, and the caller reads it in a worker thread.
A file found short of its length afterwards is discarded the same way.

Threads: `get`, `put` and `discard` may run in worker threads at once; `_lock` guards the index
and the byte count, never file I/O. `get_or_fetch` runs on the trio loop and keeps one fetch in
flight per hash (singleflight), so many readers of one missing block cost one download.
"""

import contextlib
import errno
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio

from backend.protocol.hashing import block_hash, is_block_hash
from cache.filler import CacheFiller

log = logging.getLogger(__name__)

TOUCH_INTERVAL = 60.0
# Descriptors kept open for range reads: random reads over a thousand blocks (~512 MiB of
# 512 KiB blocks) then cost one pread each, without a path lookup, open and close.
MAX_OPEN_FILES = 1024
_TMP_SUFFIX = ".tmp"


class _Flight:
    """One fetch in progress: the waiters' rendezvous with its outcome."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.data: bytes | None = None
        self.error: BaseException | None = None


class BlockCache:
    """A size-capped LRU cache of verified blocks on disk, named by hash."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] = OrderedDict()
        self._touched: dict[str, float] = {}
        self._total = 0
        self._flights: dict[str, _Flight] = {}
        self._verified: set[str] = set()
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._folders: set[Path] = set()
        self._root = str(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._load()
        self.filler = CacheFiller(self)

    @property
    def total_bytes(self) -> int:
        return self._total

    def _path(self, hash: str) -> Path:
        return self.root / hash[:2] / hash

    def _load(self) -> None:
        """Rebuild the index from the files on disk, oldest first; drop leftover temp files."""
        found: list[tuple[int, str, int]] = []
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if entry.name.endswith(_TMP_SUFFIX):
                    _unlink(Path(entry.path))
                elif is_block_hash(entry.name) and entry.name[:2] == folder.name:
                    info = entry.stat()
                    found.append((info.st_mtime_ns, entry.name, info.st_size))
        for _, hash, size in sorted(found):
            self._index[hash] = size
            self._total += size
        self._evict()

    def contains(self, hash: str) -> bool:
        with self._lock:
            return hash in self._index

    def get(self, hash: str) -> bytes | None:
        """Return the whole block if cached and intact (marking it recently used), else None.

        The content is hashed only if it was not verified yet this session.
        """
        if not self.contains(hash):
            return None
        path = self._path(hash)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._forget(hash)
            return None
        if hash in self._verified:
            if len(data) != self._index.get(hash, len(data)):
                return self._reject(hash, "is not the length it was")
        elif block_hash(data) != hash:
            return self._reject(hash, "does not match its hash")
        else:
            self._verified.add(hash)
        self._mark_used(hash, path)
        return data

    def verified(self, hash: str) -> bool:
        """Whether the block is cached and was checked this session (so `read` needs no thread)."""
        return hash in self._verified

    def read(self, hash: str, offset: int, length: int, wait: bool = True) -> bytes | None:
        """Return `length` bytes at `offset` of a block verified this session, else None.

        One pread, on a descriptor kept open for the next reads of the same block
        (MAX_OPEN_FILES at most). None means a miss: not cached, not verified yet (call `get`
        in a worker thread first), or found damaged. With `wait` false the read never waits
        for the disk, so it is cheap enough for the trio thread: when the range is not in the
        page cache (evicted, or the caches were dropped) BlockingIOError is raised; read again
        in a worker thread, which first asks the kernel to load the whole block (the next reads
        of it are likely near).
        """
        if hash not in self._verified:
            return None
        path = f"{self._root}/{hash[:2]}/{hash}"
        try:
            if wait:  # on a descriptor of its own: the lock is never held across a disk read
                data = _pread_whole_block_ahead(path, length, offset)
            else:
                with self._lock:  # no other thread closes the descriptor while it is read
                    data = _pread_cached(self._open(hash, path), length, offset)
        except FileNotFoundError:
            self._forget(hash)
            return None
        if len(data) < min(length, self._index.get(hash, 0) - offset):
            return self._reject(hash, "is shorter than it was")
        self._mark_used(hash, path)
        return data

    def _open(self, hash: str, path: str) -> int:
        """The block's open descriptor, opening it if needed (the caller holds `_lock`)."""
        fd = self._fds.get(hash)
        if fd is None:
            fd = self._fds[hash] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            # Reads of a block come in groups (a file is read around a place): bring the
            # whole block into the page cache now, in the background, rather than one
            # random disk read per request.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            if len(self._fds) > MAX_OPEN_FILES:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(hash)
        return fd

    def _close(self, hash: str) -> None:
        """Close the block's descriptor if open (the caller holds `_lock`)."""
        fd = self._fds.pop(hash, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Stop filling in the background, close the descriptors kept open for range reads."""
        self.filler.close()
        with self._lock:
            for hash in list(self._fds):
                self._close(hash)

    def _reject(self, hash: str, reason: str) -> None:
        log.warning("block cache: %s %s; discarding it", self._path(hash), reason)
        self.discard(hash)

    def _mark_used(self, hash: str, path: str | Path) -> None:
        now = time.monotonic()
        with self._lock:
            if hash not in self._index:
                return
            self._index.move_to_end(hash)
            stale = now - self._touched.get(hash, 0.0) >= TOUCH_INTERVAL
            if stale:
                self._touched[hash] = now
        if stale:
            # Evicted meanwhile: the recency of a gone file does not matter.
            with contextlib.suppress(OSError):
                os.utime(path)

    def _refreshed(self, hash: str) -> bool:
        """Whether the block is cached already (same name, same content: only its recency
        changes, which this does)."""
        if not self.contains(hash):
            return False
        self._mark_used(hash, self._path(hash))
        return True

    def put(self, hash: str, data: bytes) -> None:
        """Store a block (atomically: temp file then rename), then evict down to the cap.

        The caller vouches that `data` is named by `hash` (the remote client checks what it
        fetches; uploads hash what they name), so it counts as verified for this session.
        """
        if not is_block_hash(hash):
            raise ValueError(f"not a block hash: {hash!r}")
        if len(data) > self.max_bytes:
            return
        if self._refreshed(hash):
            return
        self._install(hash, partial(_write_all, data), len(data), verified=True)

    def copy_in(self, hash: str, source: int, offset: int, size: int) -> None:
        """Store the block that `size` bytes at `offset` of the open file `source` should
        hold, copied in the kernel (`copy_file_range`: no trip through Python's memory).
        The file may have changed since it was hashed, so the block is checked against its
        name the first time it is read, like a block found on disk at start."""
        if not is_block_hash(hash):
            raise ValueError(f"not a block hash: {hash!r}")
        if size > self.max_bytes:
            return
        if self._refreshed(hash):
            return
        self._install(hash, partial(_copy_range, source, offset, size), size, verified=False)

    def adopt(self, hash: str, size: int, source: str) -> bool:
        """Take over the file at `source`, which should hold the block (the committed dirty
        copy of a one-block file, about to be dropped): renamed in, no new file and no copy.
        Checked against its name the first time it is read, like `copy_in`. False when it
        is not taken (the caller deletes it)."""
        if not is_block_hash(hash) or size > self.max_bytes:
            return False
        if self._refreshed(hash):
            return False
        try:
            if os.stat(source).st_size != size:
                return False
            self._place(hash, partial(os.replace, source), size, verified=False)
        except OSError:
            return False
        return True

    def _install(self, hash: str, fill: Callable[[int], object], size: int, verified: bool) -> None:
        """Write a block through `fill(fd)` to a temp file, rename it in place, index it."""

        def write(path: Path) -> None:
            temp = f"{path}.{secrets.token_hex(6)}{_TMP_SUFFIX}"
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    fill(fd)
                finally:
                    os.close(fd)
                os.replace(temp, path)
            except BaseException:
                _unlink(Path(temp))
                raise

        self._place(hash, write, size, verified)

    def _place(self, hash: str, put: Callable[[Path], object], size: int, verified: bool) -> None:
        """Have `put(path)` make the block's file, then index it and evict down to the cap."""
        path = self._path(hash)
        folder = path.parent
        if folder not in self._folders:
            folder.mkdir(exist_ok=True)
            self._folders.add(folder)
        put(path)
        with self._lock:
            self._total += size - self._index.get(hash, 0)
            self._index[hash] = size
            self._index.move_to_end(hash)
            self._touched[hash] = time.monotonic()
            if verified:
                self._verified.add(hash)
            else:
                self._verified.discard(hash)
                self._close(hash)
        self._evict()

    def discard(self, hash: str) -> None:
        self._forget(hash)
        _unlink(self._path(hash))

    def _forget(self, hash: str) -> None:
        with self._lock:
            self._total -= self._index.pop(hash, 0)
            self._touched.pop(hash, None)
            self._verified.discard(hash)
            self._close(hash)

    def _evict(self) -> None:
        """Delete least recently used blocks while the cache is over its cap."""
        while True:
            with self._lock:
                if self._total <= self.max_bytes or not self._index:
                    return
                hash, size = self._index.popitem(last=False)
                self._touched.pop(hash, None)
                self._verified.discard(hash)
                self._close(hash)
                self._total -= size
            _unlink(self._path(hash))

    async def get_or_fetch(self, hash: str, fetch: Callable[[], Awaitable[bytes]]) -> bytes:
        """Return the block from disk, or fetch it once however many tasks ask at the same time.

        The first task to miss runs `fetch`; the others wait for it and get its data or its
        exception. If that task is cancelled, a waiter retries rather than inherit another
        task's cancellation. A failure to store the fetched block only costs a later refetch.
        """
        while (flight := self._flights.get(hash)) is not None:
            await flight.done.wait()
            if flight.data is not None:
                return flight.data
            if isinstance(flight.error, Exception):
                raise flight.error
        flight = _Flight()
        self._flights[hash] = flight
        try:
            data = await trio.to_thread.run_sync(self.get, hash)
            if data is None:
                data = await fetch()
                await self._store_quietly(hash, data)
            flight.data = data
            return data
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[hash]
            flight.done.set()

    async def _store_quietly(self, hash: str, data: bytes) -> None:
        try:
            await trio.to_thread.run_sync(self.put, hash, data)
        except OSError as exc:
            log.warning("block cache: cannot store %s: %s", hash, exc)


def _pread_cached(fd: int, length: int, offset: int) -> bytes:
    """pread of a range inside the file that takes only what the page cache holds
    (RWF_NOWAIT); BlockingIOError when that is not all of the range."""
    global _nowait
    if _nowait:
        buffer = bytearray(length)
        try:
            got = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            got = 0
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            _nowait = False  # this file system cannot tell: plain reads from now on
            return os.pread(fd, length, offset)
        if got == length:
            return bytes(buffer)
        raise BlockingIOError(errno.EAGAIN, "not in the page cache")
    return os.pread(fd, length, offset)


def _pread_whole_block_ahead(path: str, length: int, offset: int) -> bytes:
    """pread of a range, after asking the kernel to load the whole file in the background."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


# Whether preadv(RWF_NOWAIT) works on the cache's file system (Linux ≥ 4.14, most do).
_nowait = hasattr(os, "RWF_NOWAIT")


def _write_all(data: bytes | memoryview, target: int) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(target, view) :]


def _copy_range(source: int, offset: int, size: int, target: int) -> None:
    """Copy `size` bytes at `offset` of `source` to the start of `target`; OSError if the
    source ends first."""
    done = 0
    while done < size:
        copied = os.copy_file_range(source, target, size - done, offset + done, done)
        if copied == 0:
            raise OSError(f"the source ended {size - done} bytes short")
        done += copied


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
