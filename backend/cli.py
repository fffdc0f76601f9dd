"""`cirrus serve` (the API server) and `cirrus admin create-user`.

The server is one process: uvicorn runs the FastAPI app on asyncio, blocking work goes to a
thread pool, and idle long polls cost a coroutine and a socket each. Every failure the
operator can cause (a bad option, an unreachable database, a taken port) ends in one line on
stderr and a non-zero exit, never a traceback.
"""

import argparse
import dataclasses
import gc
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from backend.config import DEFAULT_HOST, DEFAULT_PORT, LOG_LEVELS, ServerConfig
from backend.heap import reuse_freed_buffers
from backend.limits_cli import add_limit_options

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy.engine import Engine

    from backend.metadata.service import MetadataService

log = logging.getLogger("cirrus")

# Pending connections the kernel queues before accept(); a burst of reconnecting long polls
# (every mount after a server restart) must not be refused.
LISTEN_BACKLOG = 4096


class CommandError(Exception):
    """An operator error: reported as one line, exit status 1."""


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the Cirrus API server",
        description="Run the Cirrus API server. With no options everything (metadata database, "
        "blocks, master key, upload spools) lives under one data directory.",
    )
    _add_storage_options(serve)
    serve.add_argument(
        "--blocks",
        metavar="URL",
        help="block store: a directory, file:///path, memory:// or replicated:URL|URL "
        "(default: DIR/blocks)",
    )
    # Flags default to None so that only those given override the --config file.
    serve.add_argument("--host", help=f"address to listen on ({DEFAULT_HOST})")
    serve.add_argument("--port", type=_port, help=f"TCP port, 0 for any ({DEFAULT_PORT})")
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="log verbosity (info)")
    add_key_options(serve)
    serve.add_argument(
        "--drain-timeout",
        dest="drain_timeout_s",
        metavar="SECONDS",
        type=float,
        help="after SIGTERM (stop) or SIGHUP (drain and restart in place), how long requests "
        "in flight may take to finish (10)",
    )
    _add_trash_and_journal_options(serve)
    from backend.lifecycle import admin as lifecycle

    lifecycle.add_lifecycle_options(serve, serving=True)
    add_limit_options(serve)
    _add_tier_options(serve)
    serve.set_defaults(func=serve_command)

    admin = subparsers.add_parser("admin", help="administer the server's users")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    create = admin_commands.add_parser(
        "create-user",
        help="create a user and print an API token",
        description="Create a user with an empty drive; the API token is the last line printed.",
    )
    create.add_argument("name", help="user name (unique)")
    _add_storage_options(create)
    create.set_defaults(func=create_user_command)
    quota = admin_commands.add_parser(
        "set-quota",
        help="set or remove a user's storage quota",
        description="Limit the bytes a user's drive may use (docs/api.md, Quotas): sizes "
        "like 10G or 500M count in powers of 1024; `none` removes the quota.",
    )
    quota.add_argument("name", help="user name")
    quota.add_argument("size", help="bytes, e.g. 10G, 500M, 1048576, or none")
    _add_storage_options(quota)
    quota.set_defaults(func=set_quota_command)
    from backend.token_admin import register as register_token_commands

    register_token_commands(admin_commands, _add_storage_options)
    from backend.admin_keys import register as register_key_commands

    register_key_commands(admin_commands)
    lifecycle.register(admin_commands)
    from backend.lifecycle.replication_admin import register_admin

    register_admin(admin_commands, _add_storage_options)


def _add_tier_options(serve: argparse.ArgumentParser) -> None:
    """Regions and tiers (docs/blocks.md); None unless given, like every serve flag."""
    serve.add_argument(
        "--archive", dest="archive_url", metavar="URL", help="archive store for cold blocks "
        "(e.g. an S3 URL with &storage_class=GLACIER, or a directory)",
    )  # fmt: skip
    serve.add_argument(
        "--archive-after-days", metavar="DAYS", type=_non_negative,
        help="archive blocks nobody has read or written for this many days",
    )  # fmt: skip
    serve.add_argument(
        "--archive-old-revisions", action="store_true", default=None,
        help="archive blocks that only old revisions and deleted files use",
    )  # fmt: skip
    serve.add_argument(
        "--archive-interval", dest="archive_interval_s", metavar="SECONDS",
        type=_non_negative, help="time between archive passes (3600)",
    )  # fmt: skip
    serve.add_argument(
        "--replication-interval", dest="replication_interval_s", metavar="SECONDS",
        type=_non_negative, help="how often an idle replication queue is checked (1)",
    )  # fmt: skip


def _add_storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="TOML file setting any server option by its name (db_url, blocks_url, key_file, "
        "port, ...); options given on the command line win",
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        type=Path,
        help="data directory (default: $XDG_DATA_HOME/cirrus, i.e. ~/.local/share/cirrus)",
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        help="metadata database URL, e.g. postgresql+psycopg://user@host/cirrus "
        "(default: sqlite:///DIR/metadata.db)",
    )


def _add_trash_and_journal_options(serve: argparse.ArgumentParser) -> None:
    """How long the trash and the change journal keep what they hold (ServerConfig)."""
    options = (
        ("--trash-days", "trash_days", "days a deleted file stays in the trash"),
        ("--trash-interval", "trash_interval_s", "seconds between two emptyings of the trash"),
        ("--journal-days", "journal_days", "days a change journal entry is kept at most"),
        ("--journal-interval", "journal_interval_s", "seconds between two journal trims"),
    )
    for flag, field, text in options:
        default = ServerConfig.__dataclass_fields__[field].default
        serve.add_argument(
            flag, dest=field, metavar="N", type=_non_negative, help=f"{text} ({default:g})"
        )


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-file",
        metavar="FILE",
        type=Path,
        help="the master key every server of the drive shares (default: $CIRRUS_MASTER_KEY, "
        "else DIR/master.key)",
    )
    parser.add_argument(
        "--read-key-file",
        dest="read_key_files",
        metavar="FILE",
        type=Path,
        action="append",
        help="an older master key still read during a key rotation (repeatable)",
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


Command = Callable[[argparse.Namespace], int]


def _fail_in_one_line(command: str) -> Callable[[Command], Command]:
    """Run a command function, turning operator errors into one line and exit status 1."""

    def decorate(function: Command) -> Command:
        def run(args: argparse.Namespace) -> int:
            try:
                return function(args)
            except CommandError as exc:
                print(f"cirrus {command}: error: {exc}", file=sys.stderr)
                return 1

        run.__doc__ = function.__doc__
        return run

    return decorate


def _open_failure(exc: Exception) -> CommandError:
    """A readable line for what can go wrong while opening the database and stores."""
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, SQLAlchemyError):
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return CommandError(f"cannot open the metadata database: {reason}")
    return CommandError(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))


def _config(args: argparse.Namespace, **overrides: object) -> ServerConfig:
    """The --config file's settings, overridden by every flag given (a flag whose dest is a
    ServerConfig field's name needs no mapping here), then by overrides."""
    from backend.config_file import read_config_file

    try:
        settings = read_config_file(args.config) if args.config else {}
        fields = {field.name for field in dataclasses.fields(ServerConfig)}
        flags = {
            name: tuple(value) if isinstance(value, list) else value
            for name, value in vars(args).items()
            if name in fields
        }
        flags |= {
            "data_dir": args.data,
            "db_url": args.db,
            "blocks_url": getattr(args, "blocks", None),
        }
        settings |= {
            name: value for name, value in (flags | overrides).items() if value is not None
        }
        return ServerConfig.build(**settings)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


@_fail_in_one_line("serve")
def serve_command(args: argparse.Namespace) -> int:
    from backend.lifecycle.admin import lifecycle_settings

    config = _config(args, **lifecycle_settings(args))
    logging.basicConfig(
        level=config.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step
    logging.getLogger("botocore").setLevel(logging.WARNING)  # a line per credential lookup
    signal.signal(signal.SIGTERM, _exit_cleanly)
    _raise_open_file_limit()
    reuse_freed_buffers()
    from backend.api.app import create_app, open_services

    try:
        services = open_services(config)
    except Exception as exc:
        raise _open_failure(exc) from exc
    return _run_server(create_app(services), config)


def _run_server(app: "FastAPI", config: ServerConfig) -> int:
    """Serve until SIGTERM; on SIGHUP drain the same way, then start again in this process
    (exec: same pid, configuration read afresh), which is systemd's ExecReload."""
    import uvicorn

    from backend.api.transport import guarded_protocol

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                print(f"cirrus serve: listening on http://{host}:{port}", flush=True)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            app.state.services.notifier.release_all()  # idle polls would hold the stop
            await super().shutdown(sockets)

    server = Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            http=guarded_protocol(
                config.header_timeout_s, config.body_timeout_s, config.max_connections
            ),
            loop="uvloop",
            lifespan="on",
            backlog=LISTEN_BACKLOG,
            limit_concurrency=None,  # connections are capped in backend/api/transport.py
            timeout_graceful_shutdown=config.drain_timeout_s,
            server_header=False,
        )
    )
    reload = []

    def drain_and_reload(_signum: int, _frame: object) -> None:
        reload.append(True)
        server.should_exit = True

    signal.signal(signal.SIGHUP, drain_and_reload)
    # What start-up made lives as long as the server: a full collection need not walk it.
    gc.collect()
    gc.freeze()
    # A thread that let the GIL go (for SQLite, a socket) gets it back within 1 ms rather
    # than 5 while another thread computes: a request takes the GIL dozens of times, and
    # waited for it ~200 ms in all while a large body was parsed in another thread.
    sys.setswitchinterval(0.001)
    server.run()
    if reload and server.started:
        log.info("drained; starting again with the configuration read afresh")
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return 0 if server.started else 1


def _exit_cleanly(signum: int, _frame: object) -> None:
    """SIGTERM outside uvicorn's own handling (during start-up, or re-raised after a graceful
    shutdown): exit with status 0, as a service manager expects from a stop."""
    raise SystemExit(0)


def _raise_open_file_limit() -> None:
    """Every idle long poll holds a socket: lift the soft descriptor limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit from %d: %s", soft, exc)


@_fail_in_one_line("admin")
def create_user_command(args: argparse.Namespace) -> int:
    """Print the new user's token last, alone on its line, so scripts can take `tail -n 1`."""
    from backend.protocol.errors import CirrusError

    metadata = _open_metadata(args)
    try:
        token = metadata.create_user(args.name)
    except CirrusError as exc:
        raise CommandError(exc.message) from exc
    finally:
        metadata.engine.dispose()
    print(f"created user {args.name}; API token:")
    print(token)
    return 0


@_fail_in_one_line("admin")
def set_quota_command(args: argparse.Namespace) -> int:
    from backend.quota_admin import set_quota

    metadata = _open_metadata(args)
    try:
        print(set_quota(metadata, args.name, args.size))
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        metadata.engine.dispose()
    return 0


def open_database(args: argparse.Namespace) -> tuple[ServerConfig, "Engine"]:
    """The configuration and its migrated database, for admin commands."""
    from backend.db import create_engine_for, migrate

    config = _config(args)
    try:
        config.prepare()
        engine = create_engine_for(config.db_url)
        migrate(engine)
    except Exception as exc:
        raise _open_failure(exc) from exc
    return config, engine


def _open_metadata(args: argparse.Namespace) -> "MetadataService":
    """The metadata service on the command's database (migrated), for admin commands."""
    from backend.metadata.service import MetadataService
    from backend.notify import LocalNotifier

    return MetadataService(open_database(args)[1], LocalNotifier(lambda _namespace: 0))
