"""Open a block store from the URL an operator writes in the server's configuration.

    /srv/cirrus/blocks                      a local directory (relative paths too)
    file:///srv/cirrus/blocks               the same, as a URL
    memory://                               process memory, lost at exit (tests, demos)
    replicated:file:///a|file:///b          every object in each store, read from the first
    s3://bucket/prefix?endpoint=URL&region=R  an S3-compatible bucket (backend/blockstore/s3.py)

Each scheme maps to a factory in `SCHEMES`; a new backend (an `s3://bucket/prefix` store)
registers itself there with `register_scheme` and needs no other change.
"""

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from backend.blockstore.base import BlockStore
from backend.blockstore.local import LocalBlockStore
from backend.blockstore.memory import MemoryBlockStore
from backend.blockstore.replicated import ReplicatedBlockStore

REPLICATED_PREFIX = "replicated:"
REPLICA_SEPARATOR = "|"

StoreFactory = Callable[[str], BlockStore]
SCHEMES: dict[str, StoreFactory] = {}


def register_scheme(scheme: str, factory: StoreFactory) -> None:
    """Make open_store hand URLs of scheme (e.g. `s3`) to factory, which gets the whole URL."""
    SCHEMES[scheme] = factory


def open_store(url: str) -> BlockStore:
    """Return the store url describes; raise ValueError with a readable reason otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("block store URL is empty")
    if url.startswith(REPLICATED_PREFIX):
        return _open_replicated(url)
    if "://" not in url:
        return LocalBlockStore(Path(url))
    scheme = url.split("://", 1)[0].lower()
    factory = SCHEMES.get(scheme)
    if factory is None:
        known = ", ".join(sorted([*SCHEMES, "replicated"]))
        raise ValueError(f"unknown block store scheme {scheme!r} in {url!r} (known: {known})")
    return factory(url)


def _open_local(url: str) -> BlockStore:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file URL {url!r} names host {parts.netloc!r}; use file:///abs/path")
    path = unquote(parts.path)
    if not path.startswith("/") or parts.query or parts.fragment:
        raise ValueError(f"file URL {url!r} must be file:///absolute/path")
    return LocalBlockStore(Path(path))


def _open_memory(url: str) -> BlockStore:
    if url.lower() != "memory://":
        raise ValueError(f"memory store URL takes no path or options: {url!r}; use memory://")
    return MemoryBlockStore()


def _open_replicated(url: str) -> BlockStore:
    members = url[len(REPLICATED_PREFIX) :].split(REPLICA_SEPARATOR)
    if len(members) < 2 or any(not member.strip() for member in members):
        raise ValueError(
            f"replicated store URL {url!r} needs at least two replicas: replicated:URL1|URL2[|...]"
        )
    if any(member.startswith(REPLICATED_PREFIX) for member in members):
        raise ValueError(f"replicated stores cannot be nested: {url!r}")
    stores = [open_store(member) for member in members]
    return ReplicatedBlockStore(stores, names=[member.strip() for member in members])


def _open_s3(url: str) -> BlockStore:
    from backend.blockstore.s3 import open_s3  # boto3 loads only for servers that use S3

    return open_s3(url)


register_scheme("file", _open_local)
register_scheme("memory", _open_memory)
register_scheme("s3", _open_s3)
