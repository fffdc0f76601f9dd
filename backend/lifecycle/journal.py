"""Trimming the change journal: what every device has read, and what is older than kept."""

import time

from backend.config import ServerConfig
from backend.lifecycle.periodic import run_every
from backend.lifecycle.trash import NS_PER_DAY
from backend.metadata.service import MetadataService


async def compact_journal_forever(config: ServerConfig, metadata: MetadataService) -> None:
    """Compact every drive's journal every `journal_interval_s` seconds."""

    def compact_journal() -> int:
        cutoff = time.time_ns() - int(config.journal_days * NS_PER_DAY)
        return metadata.compact_journal(cutoff)

    await run_every(config.journal_interval_s, compact_journal, "trimmed %d change journal entries")
