"""The server's block stores by the names the replication queue uses.

`--blocks` gives the hot store: one store (named by its URL) or `replicated:A|B` (each
region named by its member URL, in order of preference). `--archive` adds a cold store
named by its URL. A name must stay the same while rows for it wait in the queue, so
changing a region's URL means draining the queue first (docs/deployment.md).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from backend.blockstore.base import BlockStore
from backend.blockstore.registry import open_store
from backend.blockstore.replicated import ReplicatedBlockStore
from backend.blockstore.tiered import TieredBlockStore


@dataclass(frozen=True, slots=True)
class Layout:
    store: BlockStore  # what the block service reads and writes
    regions: dict[str, BlockStore]  # the hot store's regions, in order of preference
    archive: dict[str, BlockStore]  # the archive store, if any (one entry)

    @property
    def stores(self) -> dict[str, BlockStore]:
        return self.regions | self.archive

    @property
    def queued(self) -> bool:
        """Whether copies and deletes go through the queue (more than one store)."""
        return len(self.stores) > 1

    def sources(self, exclude: str) -> Sequence[tuple[str, BlockStore]]:
        """Where a copy may be read from: the other hot regions, then the archive."""
        return [(name, store) for name, store in self.stores.items() if name != exclude]


def open_layout(blocks_url: str, archive_url: str | None = None) -> Layout:
    hot = open_store(blocks_url)
    if isinstance(hot, ReplicatedBlockStore):
        regions = dict(zip(hot.names, hot.stores, strict=True))
        hot = ReplicatedBlockStore(hot.stores, hot.names, repair=False)  # the queue repairs
    else:
        regions = {blocks_url: hot}
    if archive_url is None:
        return Layout(hot, regions, {})
    if archive_url in regions:
        raise ValueError("the archive must be another store than the hot one")
    archive = open_store(archive_url)
    return Layout(TieredBlockStore(hot, archive), regions, {archive_url: archive})
