"""`cirrus serve` (the API server) and `cirrus admin create-user`.

The server is one process: uvicorn runs the FastAPI app on asyncio, blocking work goes to a
thread pool, and idle long polls cost a coroutine and a socket each. Every failure the
operator can cause (a bad option, an unreachable database, a taken port) ends in one line on
stderr and a non-zero exit, never a traceback.
"""

import argparse
import logging
import resource
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from backend.config import DEFAULT_HOST, DEFAULT_PORT, LOG_LEVELS, ServerConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("cirrus")

# Pending connections the kernel queues before accept(); a burst of reconnecting long polls
# (every mount after a server restart) must not be refused.
LISTEN_BACKLOG = 4096
# After SIGTERM, requests in flight get this long to finish; long polls are then cut, and
# their clients simply poll again.
GRACEFUL_SHUTDOWN_S = 3


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
    serve.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on ({DEFAULT_HOST})"
    )
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"TCP port, 0 for any ({DEFAULT_PORT})"
    )
    serve.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="log verbosity (info)"
    )
    _add_lifecycle_options(serve)
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
    from backend.lifecycle.admin import register_admin

    register_admin(admin_commands, _add_storage_options)


def _add_lifecycle_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--archive", metavar="URL", help="archive store for cold blocks (e.g. an S3 URL with "
        "&storage_class=GLACIER, or a directory)",
    )  # fmt: skip
    serve.add_argument(
        "--archive-after-days", metavar="DAYS", type=float,
        help="archive blocks nobody has read or written for this many days",
    )  # fmt: skip
    serve.add_argument(
        "--archive-old-revisions", action="store_true",
        help="archive blocks that only old revisions and deleted files use",
    )  # fmt: skip
    serve.add_argument(
        "--archive-interval", metavar="SECONDS", type=float, default=3600.0,
        help="time between archive passes (3600)",
    )  # fmt: skip
    serve.add_argument(
        "--replication-interval", metavar="SECONDS", type=float, default=1.0,
        help="how often an idle replication queue is checked (1)",
    )  # fmt: skip


def _add_storage_options(parser: argparse.ArgumentParser) -> None:
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


def _config(args: argparse.Namespace, **listen: object) -> ServerConfig:
    return ServerConfig.build(args.data, args.db, getattr(args, "blocks", None), **listen)


@_fail_in_one_line("serve")
def serve_command(args: argparse.Namespace) -> int:
    config = _config(
        args,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        archive_url=args.archive,
        archive_after_days=args.archive_after_days,
        archive_old_revisions=args.archive_old_revisions,
        archive_interval_s=args.archive_interval,
        replication_interval_s=args.replication_interval,
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step
    logging.getLogger("botocore").setLevel(logging.WARNING)  # a line per credential lookup
    signal.signal(signal.SIGTERM, _exit_cleanly)
    _raise_open_file_limit()
    from backend.api.app import create_app, open_services

    try:
        services = open_services(config)
    except Exception as exc:
        raise _open_failure(exc) from exc
    return _run_server(create_app(services), config)


def _run_server(app: "FastAPI", config: ServerConfig) -> int:
    import uvicorn

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
            http="httptools",
            loop="uvloop",
            lifespan="on",
            backlog=LISTEN_BACKLOG,
            limit_concurrency=None,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            server_header=False,
        )
    )
    server.run()
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
    from backend.db import create_engine_for, migrate
    from backend.metadata.service import MetadataService
    from backend.notify import LocalNotifier
    from backend.protocol.errors import CirrusError

    config = _config(args)
    try:
        config.prepare()
        engine = create_engine_for(config.db_url)
        migrate(engine)
    except Exception as exc:
        raise _open_failure(exc) from exc
    metadata = MetadataService(engine, LocalNotifier(lambda _namespace: 0))
    try:
        token = metadata.create_user(args.name)
    except CirrusError as exc:
        raise CommandError(exc.message) from exc
    finally:
        engine.dispose()
    print(f"created user {args.name}; API token:")
    print(token)
    return 0
