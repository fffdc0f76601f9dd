"""`cirrus admin replication status|verify` and `cirrus admin tiers`: what the stores owe,
whether they hold what the database says, and where the bytes are."""

import argparse
import time
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from backend.blockstore.base import BlockStore
from backend.cli import CommandError, _config, _fail_in_one_line, _open_failure
from backend.db.engine import writer
from backend.db.models import ARCHIVE, COPY, HOT, Block, ReplicationTask
from backend.lifecycle.layout import Layout, open_layout
from backend.metadata.replication import lag, owe_copies
from backend.protocol.errors import BlockRestoring


def register_admin(commands: argparse._SubParsersAction, storage: Callable) -> None:
    replication = commands.add_parser(
        "replication", help="the replication queue between regions and tiers"
    )
    actions = replication.add_subparsers(dest="replication_command", required=True)
    status = actions.add_parser("status", help="what each store still owes (blocks, bytes)")
    storage(status)
    status.set_defaults(func=status_command)
    verify = actions.add_parser(
        "verify",
        help="list every store and queue copies of what is missing (or, with --read, corrupt)",
    )
    storage(verify)
    _add_store_options(verify)
    verify.add_argument(
        "--read", action="store_true", help="also read and check every object (slow)"
    )
    verify.set_defaults(func=verify_command)
    tiers = commands.add_parser("tiers", help="bytes per tier and per region")
    storage(tiers)
    _add_store_options(tiers)
    tiers.set_defaults(func=tiers_command)


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blocks", metavar="URL", help="block store, as given to cirrus serve")
    parser.add_argument("--archive", metavar="URL", help="archive store, as given to serve")


def _open(args: argparse.Namespace, with_stores: bool) -> tuple[Engine, Layout | None]:
    from backend.db import create_engine_for, migrate

    config = _config(args)
    try:
        config.prepare()
        engine = create_engine_for(config.db_url)
        migrate(engine)
        if not with_stores:
            return engine, None
        archive = getattr(args, "archive", None) or config.archive_url
        return engine, open_layout(config.blocks_url, archive)
    except Exception as exc:
        raise _open_failure(exc) from exc


def _age(created_ns: int | None) -> str:
    return "-" if created_ns is None else f"{(time.time_ns() - created_ns) / 1e9:.0f}s"


@_fail_in_one_line("admin")
def status_command(args: argparse.Namespace) -> int:
    """One line per store and action: blocks and bytes owed, the oldest's age."""
    engine, _layout = _open(args, with_stores=False)
    with Session(engine) as session:
        rows = lag(session)
    engine.dispose()
    print(f"{'store':<60} {'action':<7} {'blocks':>8} {'bytes':>14} {'oldest':>8}")
    for row in rows:
        print(
            f"{row.store:<60} {row.action:<7} {row.blocks:>8} {row.bytes:>14} "
            f"{_age(row.oldest_ns):>8}"
        )
    if not rows:
        print("nothing owed: every store holds what it should")
    return 0


@_fail_in_one_line("admin")
def verify_command(args: argparse.Namespace) -> int:
    """List each store, compare with the database, and queue a copy of every block a
    store lacks (or, with --read, holds corrupted). Exit status 1 when a block is in no
    store at all (lost), else 0."""
    engine, layout = _open(args, with_stores=True)
    assert layout is not None
    check = _checker(args, engine) if args.read else None
    lost = 0
    try:
        with Session(engine) as session:
            expected = {
                tier: dict(session.execute(
                    select(Block.hash, Block.stored_size).where(
                        Block.tier == tier, Block.stored_size.is_not(None)
                    )
                ).tuples().all())
                for tier in (HOT, ARCHIVE)
            }  # fmt: skip
            owed = set(session.execute(
                select(ReplicationTask.hash, ReplicationTask.store)
            ).tuples().all())  # fmt: skip
        held: dict[str, set[str]] = {}
        for name, store in layout.stores.items():
            tier = ARCHIVE if name in layout.archive else HOT
            wanted = expected[tier]
            try:
                present = set(store.keys()) & set(wanted)
            except Exception as exc:
                raise CommandError(f"cannot list {name}: {exc}") from exc
            corrupt = _corrupt(store, present, check) if check else set()
            held[name] = present - corrupt
            missing = sorted(h for h in set(wanted) - held[name] if (h, name) not in owed)
            _requeue(engine, name, [(h, wanted[h]) for h in missing])
            print(
                f"{name}: {len(wanted)} blocks expected, {len(held[name])} present, "
                f"{len(missing) - len(corrupt)} missing, {len(corrupt)} corrupt, "
                f"{len(missing)} copies queued"
            )
        everywhere = set().union(*held.values()) if held else set()
        lost = len((set(expected[HOT]) | set(expected[ARCHIVE])) - everywhere)
    finally:
        engine.dispose()
    if lost:
        print(f"{lost} blocks are in no store: lost")
        return 1
    return 0


def _checker(args: argparse.Namespace, engine: Engine) -> Callable[[str, bytes], None]:
    """Checks objects with the drive's key ring (every key id its blocks may carry)."""
    from backend.blocks import BlockService
    from backend.blockstore.memory import MemoryBlockStore
    from backend.keycheck import open_key_ring

    try:
        keys = open_key_ring(_config(args), engine)
    except Exception as exc:
        raise _open_failure(exc) from exc
    service = BlockService(MemoryBlockStore(), keys.current, keys.current_id, keys.readable)
    return service.check_object


def _corrupt(store: BlockStore, hashes: set[str], check: Callable[[str, bytes], None]) -> set[str]:
    bad = set()
    for block_hash in sorted(hashes):
        try:
            check(block_hash, store.get(block_hash))
        except BlockRestoring:
            continue  # sealed in a cold class: there, and checked when it was written
        except Exception:
            bad.add(block_hash)
    return bad


def _requeue(engine: Engine, store: str, blocks: list[tuple[str, int]]) -> None:
    if not blocks:
        return
    with Session(writer(engine)) as session, session.begin():
        owe_copies(session, [(h, store, size) for h, size in blocks], time.time_ns())


@_fail_in_one_line("admin")
def tiers_command(args: argparse.Namespace) -> int:
    """Bytes at rest per tier, and per hot region (what it holds: the hot bytes less the
    copies it is still owed)."""
    engine, layout = _open(args, with_stores=True)
    assert layout is not None
    with Session(engine) as session:
        tiers = (
            session.execute(
                select(Block.tier, func.count(), func.coalesce(func.sum(Block.stored_size), 0))
                .where(Block.stored_size.is_not(None))
                .group_by(Block.tier)
            )
            .tuples()
            .all()
        )
        owed = dict(session.execute(
            select(ReplicationTask.store, func.coalesce(func.sum(ReplicationTask.size), 0))
            .where(ReplicationTask.action == COPY)
            .group_by(ReplicationTask.store)
        ).tuples().all())  # fmt: skip
    engine.dispose()
    by_tier = {tier: (count, size) for tier, count, size in tiers}
    print(f"{'tier':<60} {'blocks':>8} {'bytes':>14}")
    for tier in (HOT, ARCHIVE):
        count, size = by_tier.get(tier, (0, 0))
        print(f"{tier:<60} {count:>8} {size:>14}")
    hot_bytes = by_tier.get(HOT, (0, 0))[1]
    print(f"{'region':<60} {'holds':>14} {'owed':>14}")
    for name in layout.regions:
        print(f"{name:<60} {hot_bytes - owed.get(name, 0):>14} {owed.get(name, 0):>14}")
    for name in layout.archive:
        archived = by_tier.get(ARCHIVE, (0, 0))[1]
        print(f"{name:<60} {archived - owed.get(name, 0):>14} {owed.get(name, 0):>14}")
    return 0
