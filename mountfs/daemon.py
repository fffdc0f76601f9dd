"""Running one mount: check the server, fill the mirror, serve FUSE, flush on the way out.

`serve` is what the mount process runs inside trio. It reports readiness (or the reason it
cannot mount) through `ready`, so the command that started it can return only once the
directory really is mounted, and never leaves a half-mounted directory behind.
"""

import fcntl
import logging
import os
import resource
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pyfuse3
import trio

from backend.heap import reuse_freed_buffers
from backend.protocol.errors import CirrusError, Unauthorized
from cache.blockcache import MAX_OPEN_FILES, BlockCache
from cache.dirty import DirtyFiles
from cache.metadb import open_metadb
from mountfs.content import Content
from mountfs.feed import Feed
from mountfs.fs import CirrusOperations
from mountfs.kernel import Kernel
from mountfs.quota import Usage
from mountfs.readahead import raise_read_ahead
from mountfs.remote import RemoteDrive, ServerUnreachable
from mountfs.replay import Replayer
from mountfs.sync import SyncEngine, Wakeup
from mountfs.vfs import VFS
from mountfs.virtual import MountInfo, VirtualTree

log = logging.getLogger(__name__)

# How long an unmount waits for pending uploads before leaving them to the next mount.
FLUSH_SECONDS = 10.0
# How long an unmount waits for cache invalidations in flight before closing the session.
INVALIDATIONS_WAIT_SECONDS = 5.0


class MountError(Exception):
    """A reason the drive cannot be mounted, worded for the user."""


@dataclass(frozen=True, slots=True)
class MountOptions:
    server_url: str
    mountpoint: str
    token: str
    cache_dir: str
    cache_size: int
    allow_other: bool = False
    device: str = socket.gethostname()[:64] or "cirrus"


def run(opts: MountOptions, ready: Callable[[str | None], None]) -> str | None:
    """Serve the mount in this process; the reason when it could not mount, else None."""
    reuse_freed_buffers()
    try:
        trio.run(serve, opts, ready)
    except BaseException as exc:
        error = _mount_error(exc)
        if error is None:
            raise
        return str(error)
    return None


def _mount_error(exc: BaseException) -> MountError | None:
    """The MountError inside what trio raised (nurseries wrap errors in groups)."""
    if isinstance(exc, MountError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _mount_error(inner)) is not None:
                return found
    return None


def lock_cache_dir(cache_dir: str) -> int:
    """Hold the cache directory for this process: two mounts must never share a journal."""
    os.makedirs(cache_dir, exist_ok=True)
    fd = os.open(os.path.join(cache_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MountError(f"cache directory {cache_dir} is in use by another mount") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


async def _check_server(remote: RemoteDrive, fresh: bool, url: str) -> None:
    try:
        await remote.account()
    except Unauthorized:
        raise MountError(f"the server at {url} refused the token") from None
    except ServerUnreachable as exc:
        if fresh:
            raise MountError(f"cannot reach the server at {url} ({exc})") from None
        log.warning("server unreachable; mounting from the cache: %s", exc)
    except CirrusError as exc:
        raise MountError(f"the server at {url} refused the mount: {exc}") from None


def _fuse_options(opts: MountOptions) -> set[str]:
    options = set(pyfuse3.default_options)
    options |= {"fsname=cirrus", "subtype=cirrus"}
    if opts.allow_other:
        options.add("allow_other")
    return options


def _raise_open_files_limit() -> None:
    """Allow the block cache's open descriptors (MAX_OPEN_FILES) beside sockets and dirty
    files: the usual soft limit of 1,024 is too tight, the hard limit rarely is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * MAX_OPEN_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), hard))


async def serve(opts: MountOptions, ready: Callable[[str | None], None]) -> None:
    """Mount, serve until unmounted (or SIGTERM/SIGINT), then flush what is pending."""
    _raise_open_files_limit()
    lock_cache_dir(opts.cache_dir)
    db = open_metadb(opts.cache_dir)
    remote = RemoteDrive(opts.server_url, opts.token, device=opts.device)
    blocks = BlockCache(os.path.join(opts.cache_dir, "blocks"), opts.cache_size)
    wakeup = Wakeup()
    try:
        async with trio.open_nursery() as nursery:
            kernel = Kernel(nursery)
            content = Content(
                db, DirtyFiles(os.path.join(opts.cache_dir, "dirty")), blocks, remote, nursery
            )
            usage = Usage()
            vfs = VFS(db, content, wakeup.set, usage)
            feed = Feed(db, vfs, kernel)
            replayer = Replayer(db, vfs, remote, blocks, kernel, feed)
            engine = SyncEngine(db, remote, feed, replayer, wakeup, usage)
            info = MountInfo(
                opts.server_url, opts.token, opts.device, opts.mountpoint, opts.cache_dir
            )
            virtual = VirtualTree(db, content, remote, info, lambda: engine.online)
            fresh = not engine.has_cursor
            await _check_server(remote, fresh, opts.server_url)
            if fresh:
                await engine.initial_sync()
            await _run_fuse(opts, vfs, virtual, kernel, engine, nursery, ready)
    finally:
        await remote.aclose()
        blocks.close()
        db.close()


async def _run_fuse(
    opts: MountOptions,
    vfs: VFS,
    virtual: VirtualTree,
    kernel: Kernel,
    engine: SyncEngine,
    nursery: trio.Nursery,
    ready: Callable[[str | None], None],
) -> None:
    try:
        pyfuse3.init(CirrusOperations(vfs, virtual), opts.mountpoint, _fuse_options(opts))
    except RuntimeError as exc:
        raise MountError(f"cannot mount on {opts.mountpoint}: {exc}") from None
    kernel.mounted = True
    sync_scope, commit_scope = trio.CancelScope(), trio.CancelScope()
    try:
        nursery.start_soon(_run_cancellable, engine.run, sync_scope)
        nursery.start_soon(_run_cancellable, vfs.durability.run, commit_scope)
        nursery.start_soon(_on_signals)
        vfs.content.dirty.spares.start()
        nursery.start_soon(
            partial(trio.to_thread.run_sync, abandon_on_cancel=True),
            raise_read_ahead,
            opts.mountpoint,
        )
        ready(None)
        await pyfuse3.main()
        log.info("the FUSE session ended (unmounted or signalled); flushing")
    finally:
        with trio.CancelScope(shield=True):
            await kernel.unmounting(INVALIDATIONS_WAIT_SECONDS)
        pyfuse3.close(unmount=is_mounted(opts.mountpoint))
        vfs.content.dirty.close_all()
        vfs.content.dirty.spares.stop()
    sync_scope.cancel()
    commit_scope.cancel()
    with trio.CancelScope(shield=True):
        await vfs.durability.group_commit()  # what was closed last is on the disk too
    await engine.drain(FLUSH_SECONDS)
    nursery.cancel_scope.cancel()


async def _run_cancellable(func: Callable, scope: trio.CancelScope) -> None:
    with scope:
        await func()


async def _on_signals() -> None:
    """SIGTERM and SIGINT unmount cleanly (the flush still runs)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for _signal in signals:
            pyfuse3.terminate()
            return


def is_mounted(mountpoint: str) -> bool:
    """Whether something is mounted there, read from the mount table (never stat the mount:
    a FUSE directory whose process stopped serving would hang the caller)."""
    target = os.path.abspath(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        for line in table:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            if point == target:
                return True
    return False
