"""`cirrus mount` and `cirrus unmount` (placeholder until the mount's command line lands)."""

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the mount's subcommands (none yet)."""


def rewrite_mount_helper_argv(argv: list[str]) -> list[str]:
    """Translate mount(8)'s helper calling convention; nothing to translate yet."""
    return argv
