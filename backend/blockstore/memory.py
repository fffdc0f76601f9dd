"""A block store in a dict: for tests of callers and throwaway servers (`memory://`)."""

import threading
from collections.abc import Iterator

from backend.blockstore.base import BlockNotFound, BlockStore, check_key


class MemoryBlockStore(BlockStore):
    """Objects in process memory, guarded by a lock because calls come from a thread pool."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryBlockStore({len(self._objects)} objects)"

    def put(self, key: str, data: bytes) -> None:
        check_key(key)
        with self._lock:
            self._objects[key] = bytes(data)

    def get(self, key: str) -> bytes:
        check_key(key)
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise BlockNotFound(key) from None

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def exists(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            return key in self._objects

    def keys(self) -> Iterator[str]:
        with self._lock:
            snapshot = list(self._objects)
        yield from snapshot
