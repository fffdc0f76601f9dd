"""A block store that keeps every object in several stores (e.g. two regions' buckets).

A write succeeds only when every replica holds the object, so an acknowledged block survives
the loss of all but one replica. A read takes the first replica that answers and copies the
object back to earlier replicas that lacked it (read repair), so a replica that was down or
replaced converges on its own. A replica that fails (rather than lacks the key) is skipped on
reads: one region's outage does not stop downloads.
"""

import logging
from collections.abc import Callable, Iterator, Sequence

from backend.blockstore.base import BlockNotFound, BlockStore, check_key

log = logging.getLogger(__name__)


class ReplicatedBlockStore(BlockStore):
    """Mirror of objects over stores, in order of read preference (nearest first)."""

    def __init__(self, stores: Sequence[BlockStore]) -> None:
        if not stores:
            raise ValueError("a replicated block store needs at least one replica")
        self.stores = list(stores)

    def __repr__(self) -> str:
        return f"ReplicatedBlockStore({self.stores!r})"

    def put(self, key: str, data: bytes) -> None:
        self.put_many([(key, data)])

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for store in self.stores:
            store.put_many(items)

    def held(self, keys: Sequence[str], intact: Callable[[str, bytes], bool]) -> dict[str, int]:
        """Only what every replica holds intact: a write must still reach the others."""
        found = self.stores[0].held(keys, intact)
        for store in self.stores[1:]:
            if not found:
                break
            theirs = store.held(list(found), intact)
            found = {key: size for key, size in found.items() if key in theirs}
        return found

    def get(self, key: str) -> bytes:
        check_key(key)  # a bad key is the caller's error, not a replica failure
        lacking: list[BlockStore] = []
        failure: Exception | None = None
        for store in self.stores:
            try:
                data = store.get(key)
            except BlockNotFound:
                lacking.append(store)
                continue
            except Exception as exc:  # an unreachable replica: try the next one
                log.warning("replica %r failed to read %s: %s", store, key, exc)
                failure = exc
                continue
            self._repair(key, data, lacking)
            return data
        if failure is not None:
            raise failure
        raise BlockNotFound(key)

    def _repair(self, key: str, data: bytes, lacking: list[BlockStore]) -> None:
        """Copy an object to replicas that lacked it; a failure here must not fail the read."""
        for store in lacking:
            try:
                store.put(key, data)
            except Exception as exc:
                log.warning("replica %r could not be repaired with %s: %s", store, key, exc)

    def delete(self, key: str) -> None:
        for store in self.stores:
            store.delete(key)

    def delete_many(self, keys: Sequence[str]) -> None:
        for store in self.stores:
            store.delete_many(keys)

    def exists(self, key: str) -> bool:
        return any(store.exists(key) for store in self.stores)

    def check(self) -> None:
        """Reachable while one replica is: reads are served from any of them."""
        failures = []
        for store in self.stores:
            try:
                store.check()
                return
            except Exception as exc:
                failures.append(exc)
        raise OSError(f"no replica is reachable: {failures[0]}")

    def keys(self) -> Iterator[str]:
        seen: set[str] = set()
        for store in self.stores:
            for key in store.keys():  # noqa: SIM118 (a BlockStore, not a dict)
                if key not in seen:
                    seen.add(key)
                    yield key
