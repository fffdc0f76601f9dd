"""The one small interface every block store implements.

Keys are block hashes (64 hex digits); values are opaque bytes (already compressed and
encrypted by the block service). Every operation is idempotent, so wrappers may retry freely.
Stores refuse a key that is not a block hash, so no key can ever name a path outside a store.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from backend.protocol.errors import InvalidRequest
from backend.protocol.hashing import is_block_hash

PROBE_KEY = "0" * 64  # a well-formed name no block has (its plaintext would be unknown)


class BlockNotFound(KeyError):
    """The store holds no object under that key."""


class StoreUnavailable(OSError):
    """The store did not answer (no connection, a timeout, a server error): a region outage
    rather than a wrong key or a misconfiguration."""


class BlockStore(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Store data under key, atomically and durably; overwriting is allowed."""

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store several objects, each atomically and all durably before returning.

        A store that can share the cost of durability between objects (one directory sync,
        parallel flushes, one multi-object request) overrides this; the default is one put
        per object. A failure may leave some of the objects stored, which is harmless:
        objects are immutable under their name and nothing refers to them yet.
        """
        for key, data in items:
            self.put(key, data)

    def held(self, keys: Sequence[str], intact: Callable[[str, bytes], bool]) -> dict[str, int]:
        """The keys whose object this store holds and `intact(key, object)` accepts, each
        with its object's size: objects that need not be written again.

        A store of several copies overrides this to answer only what every copy holds, so a
        write still reaches the copies that lack the object.
        """
        found: dict[str, int] = {}
        for key in keys:
            try:
                data = self.get(key)
            except BlockNotFound:
                continue
            if intact(key, data):
                found[key] = len(data)
        return found

    def get(self, key: str) -> bytes:
        """Return the object under key or raise BlockNotFound."""

    def delete(self, key: str) -> None:
        """Remove key; removing an absent key is not an error."""

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove several keys. A store that can share the cost (one flush, one request)
        overrides this; the default is one delete per key."""
        for key in keys:
            self.delete(key)

    def exists(self, key: str) -> bool: ...

    def prepare_reads(self, keys: Sequence[str]) -> None:
        """Make keys readable before a reader commits to them (a download's first byte).

        A store whose objects need a restore first (an archive class) asks for the restore
        of every one not readable yet, all at once, and raises BlockRestoring while any is
        still restoring; the default has nothing to do.
        """

    def keys(self) -> Iterator[str]:
        """Every key in the store, in no particular order."""

    def check(self) -> None:
        """Raise if the store cannot be reached now: ValueError for a configuration that
        cannot work (no such bucket, refused credentials), StoreUnavailable (an OSError) when
        it does not answer. The server asks once when it starts, so a mistake is one line
        there rather than a failed upload, and again in its health check.

        The default asks for an object no one stores: a network store's answer proves it
        reachable, its failure raises. Stores that can tell more cheaply override this.
        """
        self.exists(PROBE_KEY)


def each_copy(store: BlockStore, key: str) -> Iterator[bytes]:
    """Every copy of an object a store can offer, best first: a replicated store yields one
    per region (`get_each`), so a caller whose check fails on one can take the next."""
    get_each = getattr(store, "get_each", None)
    if get_each is not None:
        yield from get_each(key)
    else:
        yield store.get(key)


def check_key(key: str) -> str:
    """Return key when it is a block hash; raise InvalidRequest otherwise."""
    if not isinstance(key, str) or not is_block_hash(key):
        raise InvalidRequest(f"not a block hash: {key!r:.80}")
    return key
