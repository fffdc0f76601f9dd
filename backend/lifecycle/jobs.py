"""The server's periodic lifecycle pass: apply retention, collect garbage blocks, then give
the metadata database's freed pages back (backend/db/reclaim.py).

Retention runs first so that the revisions it drops free their blocks' references; those
blocks are collected a grace period later (docs/blocks.md). Every server runs the pass; the
collector's claims make concurrent passes safe, and retention sweeps serialize per drive.
"""

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from backend.config import ServerConfig
from backend.db.reclaim import reclaim_free_pages
from backend.lifecycle.gc import Collector, GcReport
from backend.metadata.retention import Policy, parse_thinning
from backend.metadata.service import MetadataService

log = logging.getLogger(__name__)


def server_policy(config: ServerConfig) -> Policy:
    """The retention policy a server's settings describe (ValueError when they are wrong)."""
    max_age = None if config.max_history_s is None else int(config.max_history_s)
    return Policy(config.max_revisions, max_age, parse_thinning(config.thinning))


def lifecycle_pass(metadata: MetadataService, collector: Collector) -> GcReport:
    dropped = metadata.prune_history()
    report = collector.collect()
    pages = reclaim_free_pages(metadata.engine)
    if dropped or report.blocks or pages:
        log.info(
            "retention dropped %d revisions; %s; %d free database pages given back",
            dropped, report.line(), pages,
        )  # fmt: skip
    return report


async def lifecycle_forever(
    metadata: MetadataService, collector: Collector, interval_s: float
) -> None:
    """Run a pass every interval_s seconds; a failure is logged and retried next time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await run_in_threadpool(lifecycle_pass, metadata, collector)
        except Exception:
            log.exception("lifecycle pass failed; retrying at the next interval")
