"""The `cirrus serve` options that set the server's limits against hostile clients.

Each option is a ServerConfig field of the same name (dashes for underscores), with its
default taken from there, so the two never disagree. An option not given is None, so that
a --config file's value for the field is kept.
"""

import argparse
import dataclasses

from backend.config import ServerConfig

_HELP = {
    "upload_sessions_per_user": "resumable uploads one user may have open",
    "upload_spool_bytes_per_user": "bytes one user's open resumable uploads may announce",
    "upload_lifetime_s": "seconds an untouched resumable upload lives",
    "header_timeout_s": "seconds a client has to send a request's headers",
    "body_timeout_s": "seconds a request body may pause before the connection is dropped",
    "max_connections": "open connections, beyond which requests get 503",
    "requests_per_user": "requests one user may have in progress (long polls aside)",
}
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(ServerConfig)}


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits")
    for name, text in _HELP.items():
        default = _DEFAULTS[name]
        group.add_argument(
            "--" + name.replace("_", "-"),
            type=_positive(type(default)),
            metavar="N",
            help=f"{text} ({default})",
        )


def _positive(kind: type) -> "argparse._ActionType":
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse
