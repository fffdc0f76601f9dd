"""A hot store in front of an archive store: where blocks go when nobody needs them fast.

Writes go to the hot store. A read asks the hot store first and the archive when the hot
store lacks the block, so a block is readable at every step of a move to the archive
(copied, verified, recorded, then deleted from the hot store: backend/lifecycle/archive.py)
and the caller never needs to know its tier. An archive in a class that needs a restore
(S3 GLACIER, DEEP_ARCHIVE) answers BlockRestoring until the restore is done.
"""

from collections.abc import Iterator, Sequence

from backend.blockstore.base import BlockNotFound, BlockStore, each_copy


class TieredBlockStore(BlockStore):
    def __init__(self, hot: BlockStore, archive: BlockStore) -> None:
        self.hot = hot
        self.archive = archive

    def __repr__(self) -> str:
        return f"TieredBlockStore({self.hot!r}, archive={self.archive!r})"

    def check(self) -> None:
        self.hot.check()
        self.archive.check()

    def put(self, key: str, data: bytes) -> None:
        self.hot.put(key, data)

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.hot.put_many(items)

    def put_many_owing(self, items: Sequence[tuple[str, bytes]]) -> list[str]:
        owing = getattr(self.hot, "put_many_owing", None)
        if owing is None:
            self.hot.put_many(items)
            return []
        return owing(items)

    def get(self, key: str) -> bytes:
        return next(self.get_each(key))

    def get_each(self, key: str) -> Iterator[bytes]:
        """The hot copies, then the archive's; the hot store's failure is raised when the
        archive lacks the block too (it may be hot in a region that is down)."""
        failure: Exception | None = None
        try:
            yield from each_copy(self.hot, key)
        except BlockNotFound:
            pass
        except Exception as exc:
            failure = exc
        try:
            yield from each_copy(self.archive, key)
        except BlockNotFound:
            if failure is not None:
                raise failure from None
            raise

    def prepare_reads(self, keys: Sequence[str]) -> None:
        """Only the keys the hot store lacks are read from the archive."""
        self.archive.prepare_reads([key for key in keys if not self.hot.exists(key)])

    def delete(self, key: str) -> None:
        self.hot.delete(key)
        self.archive.delete(key)

    def exists(self, key: str) -> bool:
        return self.hot.exists(key) or self.archive.exists(key)

    def keys(self) -> Iterator[str]:
        seen = set(self.hot.keys())
        yield from seen
        yield from (key for key in self.archive.keys() if key not in seen)  # noqa: SIM118
