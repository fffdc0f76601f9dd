"""A block store that keeps every object in several stores (e.g. two regions' buckets).

Two ways to write:
- `put_many` (a tool or test without a metadata database) writes every replica in turn and
  fails if any fails, so an acknowledged object exists everywhere;
- `put_many_owing` (the server) writes the first healthy region only (the primary, or the
  next when it fails) and returns the names of the others, which the server records in its
  durable replication queue in the same transaction as the block (docs/blocks.md). A write
  is acknowledged once one region holds it; one region down fails nothing.

A read asks the regions in order of preference, healthy ones first: a region that failed
is tried last for a while (DOWN_FIRST_S, doubling while it keeps failing, at most
DOWN_MAX_S), so an outage costs a timeout now and then, not one per block. A region that
lacks the object gets it back (read repair; off in the server, whose queue makes the
copies). `get_each` yields every region's copy in turn so the caller can go on to the next
when one fails its hash check.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from backend.blockstore.base import BlockNotFound, BlockStore, check_key
from backend.protocol.errors import CirrusError

log = logging.getLogger(__name__)

# How long a failed region is asked last: doubled after each failure, reset by an answer.
DOWN_FIRST_S = 10.0
DOWN_MAX_S = 120.0


class ReplicatedBlockStore(BlockStore):
    """Mirror of objects over stores, in order of read preference (nearest first)."""

    def __init__(
        self, stores: Sequence[BlockStore], names: Sequence[str] = (), repair: bool = True
    ) -> None:
        """repair: copy an object back to regions that lacked it when it is read. The server
        turns it off: its queue makes those copies, and a read must not bring back a copy a
        queued delete has just removed (an archive move, a retired block)."""
        if not stores:
            raise ValueError("a replicated block store needs at least one replica")
        self.stores = list(stores)
        self.names = list(names) or [f"replica {i}" for i in range(len(self.stores))]
        if len(self.names) != len(self.stores) or len(set(self.names)) != len(self.names):
            raise ValueError("each replica needs a name of its own")
        self.repair = repair
        self._down_until = [0.0] * len(self.stores)
        self._down_for = [0.0] * len(self.stores)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ReplicatedBlockStore({self.stores!r})"

    def check(self) -> None:
        """Every replica's configuration must be right; reachable while one replica is
        (reads are served from any of them, a region that was down catches up)."""
        failures = []
        for name, store in zip(self.names, self.stores, strict=True):
            try:
                store.check()
            except OSError as exc:
                log.warning("region %s does not answer at start: %s", name, exc)
                failures.append(exc)
        if len(failures) == len(self.stores):
            raise failures[0]

    def _order(self) -> list[int]:
        """Replica indices by preference, those marked down last."""
        now = time.monotonic()
        with self._lock:
            down = [self._down_until[i] > now for i in range(len(self.stores))]
        return sorted(range(len(self.stores)), key=lambda i: down[i])

    def _failed(self, index: int, what: str, exc: Exception) -> None:
        log.warning("region %s failed to %s: %s", self.names[index], what, exc)
        with self._lock:
            longer = min(DOWN_MAX_S, 2 * self._down_for[index]) or DOWN_FIRST_S
            self._down_for[index] = longer
            self._down_until[index] = time.monotonic() + longer

    def _answered(self, index: int) -> None:
        with self._lock:
            self._down_until[index] = self._down_for[index] = 0.0

    def put(self, key: str, data: bytes) -> None:
        self.put_many([(key, data)])

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for store in self.stores:
            store.put_many(items)

    def held(self, keys: Sequence[str], intact: Callable[[str, bytes], bool]) -> dict[str, int]:
        """Only what every replica holds intact: a write must still reach the others. A
        replica that does not answer holds nothing, so the write goes on as any write does
        (to the first region that takes it, the others' copies owed)."""
        try:
            found = self.stores[0].held(keys, intact)
            for store in self.stores[1:]:
                if not found:
                    break
                theirs = store.held(list(found), intact)
                found = {key: size for key, size in found.items() if key in theirs}
        except Exception as exc:  # a region down or failing: nothing counts as held
            log.info("a region did not answer which blocks it holds: %s", exc)
            return {}
        return found

    def put_many_owing(self, items: Sequence[tuple[str, bytes]]) -> list[str]:
        """Write to the first region that takes the objects; return the other regions'
        names (the copies still owed). Raise the last failure when no region takes them."""
        for key, _data in items:
            check_key(key)
        failure: Exception | None = None
        for index in self._order():
            try:
                self.stores[index].put_many(items)
            except Exception as exc:
                self._failed(index, "write", exc)
                failure = exc
                continue
            self._answered(index)
            return [name for i, name in enumerate(self.names) if i != index]
        assert failure is not None
        raise failure

    def get(self, key: str) -> bytes:
        return next(self.get_each(key))

    def get_each(self, key: str) -> Iterator[bytes]:
        """Each region's copy in order of preference (a region that fails is skipped);
        BlockNotFound when none holds it, or the failure when one that failed might."""
        check_key(key)  # a bad key is the caller's error, not a replica failure
        lacking: list[BlockStore] = []
        failure: Exception | None = None
        found = False
        for index in self._order():
            try:
                data = self.stores[index].get(key)
            except BlockNotFound:
                lacking.append(self.stores[index])
                continue
            except CirrusError:
                raise  # an answer about the block (being restored), not a region failure
            except Exception as exc:  # an unreachable replica: try the next one
                self._failed(index, f"read {key}", exc)
                failure = exc
                continue
            self._answered(index)
            if self.repair:
                self._repair(key, data, lacking)
            lacking, found = [], True
            yield data
        if not found:
            raise failure if failure is not None else BlockNotFound(key)

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

    def keys(self) -> Iterator[str]:
        seen: set[str] = set()
        for store in self.stores:
            for key in store.keys():  # noqa: SIM118 (a BlockStore, not a dict)
                if key not in seen:
                    seen.add(key)
                    yield key
