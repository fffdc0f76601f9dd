"""The one small interface every block store implements.

Keys are block hashes (64 hex digits); values are opaque bytes (already compressed and
encrypted by the block service). Every operation is idempotent, so wrappers may retry freely.
"""

from collections.abc import Iterator
from typing import Protocol


class BlockNotFound(KeyError):
    """The store holds no object under that key."""


class BlockStore(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Store data under key, atomically and durably; overwriting is allowed."""

    def get(self, key: str) -> bytes:
        """Return the object under key or raise BlockNotFound."""

    def delete(self, key: str) -> None:
        """Remove key; removing an absent key is not an error."""

    def exists(self, key: str) -> bool: ...

    def keys(self) -> Iterator[str]:
        """Every key in the store, in no particular order."""
