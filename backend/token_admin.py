"""`cirrus admin tokens`, `cirrus admin revoke` and `cirrus admin login-code`: device tokens.

Like `create-user`, these work on the server's database directly (same --data/--db options),
so an administrator can revoke a token while every server keeps running: each refuses it
within a second (backend.metadata.users.TOKEN_CACHE_S).
"""

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from backend.cli import CommandError, _config, _fail_in_one_line, _open_failure
from backend.protocol.errors import CirrusError

if TYPE_CHECKING:
    from backend.metadata.service import MetadataService

# Mirrors backend.metadata.tokens, which is imported only when a command runs (the database
# layer stays unloaded for every other command).
LOGIN_CODE_TTL_MIN = 15
MAX_LOGIN_CODE_TTL_MIN = 7 * 24 * 60


def register(
    commands: argparse._SubParsersAction, storage_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    tokens = commands.add_parser(
        "tokens",
        help="list a user's device tokens",
        description="List a user's tokens: name, created, last used, revoked.",
    )
    tokens.add_argument("name", help="user name")
    tokens.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    storage_options(tokens)
    tokens.set_defaults(func=tokens_command)

    revoke = commands.add_parser(
        "revoke",
        help="revoke one of a user's tokens",
        description="Revoke a user's live token by name; every server refuses it within a "
        "second. The user's other tokens keep working.",
    )
    revoke.add_argument("name", help="user name")
    revoke.add_argument("token_name", metavar="TOKEN-NAME", help="as `admin tokens` lists it")
    storage_options(revoke)
    revoke.set_defaults(func=revoke_command)

    code = commands.add_parser(
        "login-code",
        help="issue a one-time login code for a user's new device",
        description="Print a one-time code that `cirrus login URL` (POST /v1/login) "
        "exchanges for a device token. The code is the last line printed.",
    )
    code.add_argument("name", help="user name")
    code.add_argument(
        "--ttl",
        type=_ttl,
        default=LOGIN_CODE_TTL_MIN,
        metavar="MINUTES",
        help=f"minutes the code stays valid ({LOGIN_CODE_TTL_MIN})",
    )
    storage_options(code)
    code.set_defaults(func=login_code_command)


def _ttl(text: str) -> int:
    try:
        minutes = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not 1 <= minutes <= MAX_LOGIN_CODE_TTL_MIN:
        raise argparse.ArgumentTypeError(f"from 1 to {MAX_LOGIN_CODE_TTL_MIN} minutes")
    return minutes


@contextlib.contextmanager
def _metadata(args: argparse.Namespace) -> Iterator["MetadataService"]:
    """The metadata service on the server's database; CirrusErrors become one line."""
    from backend.db import create_engine_for, migrate
    from backend.metadata.service import MetadataService
    from backend.notify import LocalNotifier

    config = _config(args)
    try:
        config.prepare()
        engine = create_engine_for(config.db_url)
        migrate(engine)
    except Exception as exc:
        raise _open_failure(exc) from exc
    try:
        yield MetadataService(engine, LocalNotifier(lambda _namespace: 0))
    except CirrusError as exc:
        raise CommandError(exc.message) from exc
    finally:
        engine.dispose()


@_fail_in_one_line("admin tokens")
def tokens_command(args: argparse.Namespace) -> int:
    with _metadata(args) as metadata:
        tokens = [token.to_json() for token in metadata.list_tokens(args.name)]
    if args.json:
        print(json.dumps(tokens, indent=2))
        return 0
    print(f"{'NAME':<24} {'CREATED':<20} {'LAST USED':<20} REVOKED")
    for token in tokens:
        print(
            f"{token['name']:<24} {token['created']:<20} {token['last_used'] or '-':<20} "
            f"{token['revoked'] or '-'}"
        )
    return 0


@_fail_in_one_line("admin revoke")
def revoke_command(args: argparse.Namespace) -> int:
    with _metadata(args) as metadata:
        metadata.revoke_token(args.name, args.token_name)
    print(f"revoked token {args.token_name} of {args.name}")
    return 0


@_fail_in_one_line("admin login-code")
def login_code_command(args: argparse.Namespace) -> int:
    """Print the code last, alone on its line, as create-user prints its token."""
    with _metadata(args) as metadata:
        code = metadata.create_login_code(args.name, args.ttl * 60)
    print(f"one-time login code for {args.name}, valid {args.ttl} minutes:")
    print(code)
    return 0
