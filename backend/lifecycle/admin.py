"""`cirrus admin gc`, `cirrus admin fsck` and `cirrus admin set-retention` (their bodies;
backend/cli.py registers them), and the lifecycle options of `cirrus serve`."""

import argparse
import time
from typing import TYPE_CHECKING

from backend.cli import (
    CommandError,
    _add_storage_options,
    _config,
    _fail_in_one_line,
    _open_failure,
)
from backend.config import ServerConfig
from backend.db.reclaim import reclaim_free_pages
from backend.lifecycle.gc import DEFAULT_GRACE_S, DEFAULT_INTERVAL_S
from backend.metadata.retention import (
    DEFAULT_MAX_REVISIONS,
    DEFAULT_THINNING,
    FOREVER,
    parse_duration,
    parse_thinning,
)
from backend.protocol.errors import CirrusError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from backend.api.deps import Services
    from backend.lifecycle.replicator import Replicator

# How long `admin gc` drains the replication queue after a collection, at most.
DRAIN_S = 600.0


def _duration(text: str) -> float:
    try:
        return float(parse_duration(text))
    except CirrusError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _history(text: str) -> float | None:
    return None if text.strip().lower() == "forever" else _duration(text)


def _thinning(text: str) -> str:
    try:
        parse_thinning(text)
    except CirrusError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def _revisions(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a revision cap is a whole number from 1: {text!r}")
    return value


def add_lifecycle_options(parser: argparse.ArgumentParser, serving: bool) -> None:
    """Retention (and, for `serve`, collection schedule) options; durations like 90s, 24h.
    For `serve` they default to None, so that only those given override its --config file."""

    def default(value: object) -> object:
        return None if serving else value

    if serving:
        parser.add_argument(
            "--gc-interval",
            metavar="DURATION",
            type=_duration,
            default=default(DEFAULT_INTERVAL_S),
            help="collect garbage blocks this often; 0 never (1h)",
        )
    parser.add_argument(
        "--gc-grace",
        "--grace",
        metavar="DURATION",
        type=_duration,
        default=default(DEFAULT_GRACE_S),
        dest="gc_grace",
        help="collect blocks unreferenced for at least this long (24h)",
    )
    parser.add_argument(
        "--max-revisions",
        metavar="N",
        type=_revisions,
        default=default(DEFAULT_MAX_REVISIONS),
        help=f"revisions kept per file ({DEFAULT_MAX_REVISIONS})",
    )
    parser.add_argument(
        "--max-history",
        metavar="DURATION",
        type=_history,
        default=None,
        help="drop revisions older than this; 'forever' keeps all (forever)",
    )
    parser.add_argument(
        "--thinning",
        metavar="TIERS",
        type=_thinning,
        default=default(DEFAULT_THINNING),
        help=f"AGE:EVERY tiers, youngest first, or none ({DEFAULT_THINNING})",
    )


def lifecycle_settings(args: argparse.Namespace) -> dict:
    """The ServerConfig fields the lifecycle options set."""
    settings = {
        "gc_grace_s": args.gc_grace,
        "max_revisions": args.max_revisions,
        "max_history_s": args.max_history,
        "thinning": args.thinning,
    }
    if hasattr(args, "gc_interval"):
        settings["gc_interval_s"] = args.gc_interval
    return {name: value for name, value in settings.items() if value is not None}


def register(commands: argparse._SubParsersAction) -> None:
    gc = commands.add_parser(
        "gc",
        help="delete blocks no revision needs (after applying retention, with --prune)",
        description="Delete the blocks that no revision has named for the grace period and "
        "print how many blocks and bytes were freed; with --prune, first apply the retention "
        "policy the options describe (give the server's own settings). Safe while servers "
        "run, and in several processes at once.",
    )
    gc.add_argument("--dry-run", action="store_true", help="only count what would be freed")
    gc.add_argument("--prune", action="store_true", help="apply retention first")
    _add_stores(gc)
    gc.set_defaults(func=gc_command)

    fsck = commands.add_parser(
        "fsck",
        help="check the metadata and the block store",
        description="Check the metadata database's invariants and look for objects in the "
        "block store that no row knows; exit 1 when something is wrong.",
    )
    fsck.add_argument(
        "--repair",
        action="store_true",
        help="leave stray objects to the collector (gone after the grace period)",
    )
    _add_stores(fsck)
    fsck.set_defaults(func=fsck_command)

    retention = commands.add_parser(
        "set-retention",
        help="set a user's own retention policy",
        description="Override the server's retention settings for one user; 'default' puts "
        "a setting back to the server's.",
    )
    retention.add_argument("name", help="user name")
    retention.add_argument("--max-revisions", metavar="N|default")
    retention.add_argument("--max-history", metavar="DURATION|forever|default")
    retention.add_argument("--thinning", metavar="TIERS|none|default")
    _add_storage_options(retention)
    retention.set_defaults(func=set_retention_command)


def _add_stores(parser: argparse.ArgumentParser) -> None:
    _add_storage_options(parser)
    parser.add_argument("--blocks", metavar="URL", help="block store URL (default: DIR/blocks)")
    parser.add_argument(
        "--archive", dest="archive_url", metavar="URL",
        help="archive store, as given to cirrus serve (needed once blocks are archived)",
    )  # fmt: skip
    add_lifecycle_options(parser, serving=False)


def _open(args: argparse.Namespace) -> "Services":
    """The server's services, opened like `cirrus serve` does (no listening), with its
    stores: the --config file's, overridden by --blocks and --archive."""
    from backend.api.app import open_services

    config = _config(args, **lifecycle_settings(args))
    try:
        services = open_services(config)
    except Exception as exc:
        raise _open_failure(exc) from exc
    if config.archive_url is None and _archived(services.metadata.engine):
        services.metadata.engine.dispose()
        raise CommandError(
            "blocks are in the archive tier: give the server's --archive URL (or its --config)"
        )
    return services


def _archived(engine: "Engine") -> bool:
    """Whether any stored block lives in the archive tier."""
    from sqlalchemy import select

    from backend.db.models import ARCHIVE, Block

    query = select(Block.hash).where(Block.tier == ARCHIVE, Block.stored_size.is_not(None))
    with engine.connect() as conn:
        return conn.execute(query.limit(1)).first() is not None


@_fail_in_one_line("admin gc")
def gc_command(args: argparse.Namespace) -> int:
    services = _open(args)
    try:
        if args.prune and not args.dry_run:
            dropped = services.metadata.prune_history()
            print(f"retention dropped {dropped} revisions")
        print(services.collector.collect(dry_run=args.dry_run).line())
        replicator = services.lifecycle.replicator if services.lifecycle else None
        if replicator is not None and not args.dry_run:
            _drain(replicator)
        if not args.dry_run:
            pages = reclaim_free_pages(services.metadata.engine)
            print(f"metadata database: {pages} free pages given back")
    finally:
        services.metadata.engine.dispose()
    return 0


def _drain(replicator: "Replicator") -> None:
    """Run the queue's due copies and deletes (those of this collection among them) until
    none is due; what a store that does not answer owes stays queued for the servers."""
    from sqlalchemy.orm import Session

    from backend.metadata.replication import lag

    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline and replicator.drain_once():
        pass
    with Session(replicator.engine) as session:
        left = lag(session)
    if left:
        owed = sum(row.blocks for row in left)
        print(f"{owed} copies and deletes still queued (the servers' replication retries them)")


@_fail_in_one_line("admin fsck")
def fsck_command(args: argparse.Namespace) -> int:
    from backend.lifecycle.fsck import check

    services = _open(args)
    try:
        problems, repaired = check(services, repair=args.repair)
    finally:
        services.metadata.engine.dispose()
    for line in problems:
        print(line)
    if repaired:
        print(f"repaired: {repaired} (stray objects are left to the collector's grace period)")
    left = len(problems) - repaired
    print(f"{len(problems)} problems found, {repaired} repaired")
    return 1 if left > 0 else 0


def _setting(text: str | None, parse) -> object:
    """None (not given), the parsed value, or "default" → None in the row."""
    if text is None:
        return ...
    if text.strip().lower() == "default":
        return None
    try:
        return parse(text)
    except (CirrusError, ValueError, argparse.ArgumentTypeError) as exc:
        raise CommandError(getattr(exc, "message", None) or str(exc)) from None


@_fail_in_one_line("admin set-retention")
def set_retention_command(args: argparse.Namespace) -> int:
    from backend.db import create_engine_for, migrate
    from backend.metadata.service import MetadataService
    from backend.notify import LocalNotifier

    given = {
        "max_revisions": _setting(args.max_revisions, _revisions),
        "max_age_s": _setting(
            args.max_history,
            lambda t: FOREVER if t.strip().lower() == "forever" else round(parse_duration(t)),
        ),
        "thinning": _setting(args.thinning, _thinning),
    }
    settings = {name: value for name, value in given.items() if value is not ...}
    if not settings:
        raise CommandError("give --max-revisions, --max-history or --thinning")
    config = ServerConfig.build(args.data, args.db)
    try:
        engine = create_engine_for(config.db_url)
        migrate(engine)
    except Exception as exc:
        raise _open_failure(exc) from exc
    try:
        metadata = MetadataService(engine, LocalNotifier(lambda _namespace: 0))
        policy = metadata.set_retention(args.name, settings)
    except CirrusError as exc:
        raise CommandError(exc.message) from exc
    finally:
        engine.dispose()
    shown = ", ".join(f"{k} {v}" for k, v in policy.to_json().items())
    print(f"retention of {args.name} (over the default server settings): {shown}")
    return 0
