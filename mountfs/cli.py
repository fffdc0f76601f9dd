"""The `cirrus` command: `serve` and `admin` (the server), `mount` and `unmount` (the drive),
and the user's commands (`login`, `status`, `history`, `restore`, `upload`, `download`).

Each part registers its own subcommands, imported lazily so that `cirrus mount` never loads
the server's database layer and `cirrus serve` never loads FUSE.
"""

import argparse
import sys
from importlib.metadata import version
from typing import NoReturn


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line, `cirrus serve: error: ...` (the usage itself is in --help).

    Subcommand parsers inherit the class, so every command reports errors the same way.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="cirrus", description="Cirrus cloud drive")
    parser.add_argument("--version", action="version", version=f"cirrus {version('cirrus')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from backend.cli import register as register_server
    from mountfs.mount_cli import register as register_mount

    register_server(commands)
    register_mount(commands)
    from mountfs.usercli import register as register_user

    register_user(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mountfs.mount_cli import rewrite_mount_helper_argv

    args = build_parser().parse_args(
        rewrite_mount_helper_argv(sys.argv[1:] if argv is None else argv)
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
