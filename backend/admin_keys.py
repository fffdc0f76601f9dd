"""`cirrus admin add-key` and `cirrus admin rotate-key`: rotating the drive's master key.

Rotation, while the servers keep serving (docs/cluster.md): register the new key (`add-key`),
give every server the new key as `key_file` and the old one in `read_key_files`, then
`rotate-key` re-seals every block still sealed with another key than `key_file`. Each block
is read, verified and written again atomically, so readers see the old object or the new
one; blocks written meanwhile are already sealed with the new key.
"""

import argparse
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backend.cli import (
    CommandError,
    _add_storage_options,
    _fail_in_one_line,
    add_key_options,
    open_database,
)

WORKERS = 4
PROGRESS_EVERY = 10_000  # blocks between progress lines
BATCH = 256


def register(admin_commands: argparse._SubParsersAction) -> None:
    add = admin_commands.add_parser(
        "add-key",
        help="register a new master key for a key rotation",
        description="Register the key in FILE (32 bytes or 64 hex digits) as the drive's next "
        "master key id. Servers then accept it as key_file or in read_key_files.",
    )
    add.add_argument("new_key_file", metavar="FILE", type=Path, help="the new key")
    _add_storage_options(add)
    add.set_defaults(func=add_key_command)

    rotate = admin_commands.add_parser(
        "rotate-key",
        help="re-seal every block with the current master key",
        description="Re-encrypt every stored block sealed with another key than the current "
        "one (key_file), while the servers keep serving. Needs the old keys in "
        "read_key_files; safe to interrupt and run again.",
    )
    _add_storage_options(rotate)
    rotate.add_argument("--blocks", metavar="URL", help="block store (default: DIR/blocks)")
    add_key_options(rotate)
    rotate.set_defaults(func=rotate_key_command)


@_fail_in_one_line("admin")
def add_key_command(args: argparse.Namespace) -> int:
    from backend.keycheck import register_key

    engine = open_database(args)[1]
    try:
        key_id, new = register_key(engine, args.new_key_file)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        engine.dispose()
    print(f"registered as master key {key_id}" if new else f"already master key {key_id}")
    return 0


@_fail_in_one_line("admin")
def rotate_key_command(args: argparse.Namespace) -> int:
    """Print a progress line every PROGRESS_EVERY blocks, and a summary at the end."""
    from backend.blocks import BlockService
    from backend.blockstore.registry import open_store
    from backend.keycheck import open_key_ring

    config, engine = open_database(args)
    try:
        keys = open_key_ring(config, engine)
        service = BlockService(
            open_store(config.blocks_url), keys.current, keys.current_id, keys.readable
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        engine.dispose()
    resealed, scanned, failures = _reseal_all(service)
    print(f"re-sealed {resealed} of {scanned} blocks with master key {keys.current_id}")
    if failures:
        raise CommandError(f"{len(failures)} blocks could not be re-sealed; first: {failures[0]}")
    return 0


def _reseal_all(service) -> tuple[int, int, list[str]]:
    """Walk the store in batches over a few threads; a block gone meanwhile is skipped."""
    from backend.protocol.errors import CirrusError, NotFound

    def reseal(hash: str) -> str | bool:
        try:
            return service.reseal(hash)
        except NotFound:
            return False  # deleted since it was listed
        except CirrusError as exc:
            return f"{hash}: {exc.message}"

    resealed = scanned = 0
    failures: list[str] = []
    hashes = service.store.keys()
    with ThreadPoolExecutor(WORKERS) as pool:
        while batch := list(itertools.islice(hashes, BATCH)):
            for outcome in pool.map(reseal, batch):
                if isinstance(outcome, str):
                    failures.append(outcome)
                resealed += outcome is True
            scanned += len(batch)
            if scanned % PROGRESS_EVERY < len(batch):
                print(f"scanned {scanned} blocks, re-sealed {resealed}", flush=True)
    return resealed, scanned, failures
