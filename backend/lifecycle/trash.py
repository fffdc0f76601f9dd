"""Emptying the trash: items deleted longer ago than the server keeps them are purged."""

import time

from backend.config import ServerConfig
from backend.lifecycle.periodic import run_every
from backend.metadata.service import MetadataService

NS_PER_DAY = 86_400 * 10**9


async def empty_trash_forever(config: ServerConfig, metadata: MetadataService) -> None:
    """Purge trash items older than `trash_days`, every `trash_interval_s` seconds."""

    def empty_trash() -> int:
        cutoff = time.time_ns() - int(config.trash_days * NS_PER_DAY)
        return metadata.empty_trash(cutoff)

    await run_every(config.trash_interval_s, empty_trash, "emptied %d items from the trash")
