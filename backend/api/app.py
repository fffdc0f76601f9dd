"""Assembling the server: services from a ServerConfig, and the FastAPI app around them."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from backend import web
from backend.api import account, batch, blocks, changes, files, trash, tree, uploads, usage
from backend.api import links as links_api
from backend.api import login as login_api
from backend.api import shares as shares_api
from backend.api.deps import Services
from backend.api.errors import install_error_handlers
from backend.api.guard import RequestGuard
from backend.blocks import BlockService
from backend.config import ServerConfig
from backend.db import create_engine_for, migrate
from backend.health import HealthCheck
from backend.keycheck import open_key_ring
from backend.lifecycle.archive import archive_jobs
from backend.lifecycle.gc import Collector
from backend.lifecycle.jobs import lifecycle_forever, server_policy
from backend.lifecycle.journal import compact_journal_forever
from backend.lifecycle.layout import open_layout
from backend.lifecycle.loops import Lifecycle
from backend.lifecycle.replicator import Replicator
from backend.lifecycle.trash import empty_trash_forever
from backend.metadata.service import MetadataService
from backend.notify_pg import notifier_for
from backend.upload_limits import UploadLimits
from backend.uploads import UploadManager

log = logging.getLogger(__name__)

# Blocking calls (database, block store, hashing) run on this many worker threads. The
# default of 40 is low for a server whose every call blocks on I/O; long polls use none.
WORKER_THREADS = 64
SWEEP_INTERVAL_S = 3600.0


def open_services(config: ServerConfig) -> Services:
    """Open (and migrate) the database, the block store and the master key."""
    config.prepare()
    engine = create_engine_for(config.db_url)
    migrate(engine)
    keys = open_key_ring(config, engine)
    # The notifier reads a namespace's cursor through the service it is handed to (late bound).
    notifier = notifier_for(engine, lambda namespace_id: metadata.current_cursor(namespace_id))
    metadata = MetadataService(engine, notifier, retention=server_policy(config))
    layout = open_layout(config.blocks_url, config.archive_url)
    layout.store.check()  # a missing bucket or refused credentials stop the start, in one line
    # The replicator checks copies with the block service's keys (late bound, like notifier).
    replicator = Replicator(engine, layout, lambda hash, obj: blocks.check_object(hash, obj))
    blocks = BlockService(
        layout.store,
        keys.current,
        keys.current_id,
        keys.readable,
        retire=replicator.retire if layout.queued else None,
    )
    collector = Collector(engine, blocks, config.gc_grace_s)
    limits = UploadLimits(
        config.upload_sessions_per_user,
        config.upload_spool_bytes_per_user,
        config.upload_lifetime_s,
    )
    upload_manager = UploadManager(engine, config.uploads_dir, metadata, blocks, limits, collector)
    health = HealthCheck(engine, blocks.store)
    lifecycle = Lifecycle(
        replicator if layout.queued else None,
        config.replication_interval_s,
        archive_jobs(engine, layout, blocks, config),
    )
    return Services(
        config, metadata, blocks, upload_manager, notifier, health, collector, lifecycle
    )


async def _sweep_forever(services: Services, interval: float) -> None:
    while True:
        try:
            expired = await run_in_threadpool(services.uploads.sweep_expired)
            if expired:
                log.info("removed %d expired upload sessions", expired)
            staged = await run_in_threadpool(services.metadata.sweep_staged)
            if staged:
                log.info("removed %d staged commits left by a crash", staged)
        except Exception:
            log.exception("upload sweep failed; retrying at the next interval")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    await run_in_threadpool(services.uploads.clear_temporary)
    tasks = [
        asyncio.create_task(_sweep_forever(services, SWEEP_INTERVAL_S)),
        asyncio.create_task(empty_trash_forever(services.config, services.metadata)),
        asyncio.create_task(compact_journal_forever(services.config, services.metadata)),
    ]
    if services.config.gc_interval_s > 0:
        lifecycle = lifecycle_forever(
            services.metadata, services.collector, services.config.gc_interval_s
        )
        tasks.append(asyncio.create_task(lifecycle))
    if services.lifecycle is not None:  # replication and archive moves
        tasks.append(asyncio.create_task(services.lifecycle.run()))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await run_in_threadpool(services.notifier.close)


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="Cirrus",
        version="1",
        summary="A cloud drive: files, revisions, blocks and a change journal per user.",
        lifespan=_lifespan,
    )
    app.state.services = services
    install_error_handlers(app)
    app.add_middleware(
        RequestGuard,
        metadata=services.metadata,
        requests_per_user=services.config.requests_per_user,
    )
    for module in (account, files, uploads, blocks, tree, batch, changes, trash, usage):
        app.include_router(module.router)
    app.include_router(login_api.router)
    app.include_router(shares_api.router)
    app.include_router(links_api.router)
    app.include_router(links_api.public)
    web.install(app)
    return app
