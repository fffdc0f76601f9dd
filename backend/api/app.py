"""Assembling the server: services from a ServerConfig, and the FastAPI app around them."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from backend.api import account, batch, blocks, changes, files, tree, uploads
from backend.api.deps import Services
from backend.api.errors import install_error_handlers
from backend.blocks import BlockService
from backend.config import ServerConfig
from backend.db import create_engine_for, migrate
from backend.keys import load_or_create_master_key
from backend.lifecycle.archive import archive_jobs
from backend.lifecycle.jobs import Lifecycle
from backend.lifecycle.layout import open_layout
from backend.lifecycle.replicator import Replicator
from backend.metadata.service import MetadataService
from backend.notify import LocalNotifier
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
    # The notifier reads a namespace's cursor through the service it is handed to (late bound).
    notifier = LocalNotifier(lambda namespace_id: metadata.current_cursor(namespace_id))
    metadata = MetadataService(engine, notifier)
    layout = open_layout(config.blocks_url, config.archive_url)
    layout.store.check()  # a missing bucket or refused credentials stop the start, in one line
    # The replicator checks copies with the block service's key (late bound, like notifier).
    replicator = Replicator(engine, layout, lambda hash, obj: blocks.check_object(hash, obj))
    blocks = BlockService(
        layout.store,
        load_or_create_master_key(config.master_key_path),
        retire=replicator.retire if layout.queued else None,
    )
    upload_manager = UploadManager(engine, config.uploads_dir, metadata, blocks)
    lifecycle = Lifecycle(
        replicator if layout.queued else None,
        config.replication_interval_s,
        archive_jobs(engine, layout, blocks, config),
    )
    return Services(config, metadata, blocks, upload_manager, notifier, lifecycle)


async def _sweep_forever(services: Services, interval: float) -> None:
    while True:
        try:
            expired = await run_in_threadpool(services.uploads.sweep_expired)
            if expired:
                log.info("removed %d expired upload sessions", expired)
        except Exception:
            log.exception("upload sweep failed; retrying at the next interval")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    await run_in_threadpool(services.uploads.clear_temporary)
    sweeper = asyncio.create_task(_sweep_forever(services, SWEEP_INTERVAL_S))
    lifecycle = asyncio.create_task(services.lifecycle.run()) if services.lifecycle else None
    try:
        yield
    finally:
        for task in (sweeper, lifecycle):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="Cirrus",
        version="1",
        summary="A cloud drive: files, revisions, blocks and a change journal per user.",
        lifespan=_lifespan,
    )
    app.state.services = services
    install_error_handlers(app)
    for module in (account, files, uploads, blocks, tree, batch, changes):
        app.include_router(module.router)
    return app
