"""The user's commands: `cirrus login`, `status`, `history`, `restore`, `pin`, `trash`,
`upload`, `download`.

Each finds its server and token as `context` describes, prints for people by default and
one JSON document with `--json`, and reports a failure as one line,
`cirrus history: error: no such file or folder: /a.txt`, with exit status 1 (2 for a usage
error, as argparse does).
"""

import argparse
import functools
import sys
from collections.abc import Callable

from mountfs.usercli.context import CliError

Command = Callable[[argparse.Namespace], int]


def one_line_errors(name: str) -> Callable[[Command], Command]:
    def decorate(function: Command) -> Command:
        @functools.wraps(function)
        def run(args: argparse.Namespace) -> int:
            try:
                return function(args)
            except CliError as exc:
                print(f"cirrus {name}: error: {exc}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print(f"cirrus {name}: interrupted", file=sys.stderr)
                return 130

        return run

    return decorate


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="URL", help="server (default: the mount, or config)")
    parser.add_argument("--token-file", metavar="FILE", help="file holding the token")
    parser.add_argument("--config", metavar="FILE", help="config file (~/.config/cirrus/...)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    func: Command,
    summary: str,
    description: str,
) -> argparse.ArgumentParser:
    """The parser of a command that speaks to the server: connection options and --json."""
    parser = subparsers.add_parser(name, help=summary, description=description)
    add_connection_options(parser)
    parser.set_defaults(func=func)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    from mountfs.usercli import commands, share, transfer, trash

    commands.register(subparsers)
    transfer.register(subparsers)
    trash.register(subparsers)
    share.register(subparsers)
