"""`cirrus share add|list|remove`: folders shared with other users (docs/sharing.md)."""

import argparse

from mountfs.usercli import add_connection_options, one_line_errors
from mountfs.usercli.api import Api
from mountfs.usercli.commands import emit
from mountfs.usercli.context import CliError, Context, drive_path, resolve


def register(subparsers: argparse._SubParsersAction) -> None:
    share = subparsers.add_parser(
        "share",
        help="share a folder with another user",
        description="Share a folder of your drive with another user, read-only or "
        "read-write; list what you share and what is shared with you; revoke a share.",
    )
    actions = share.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        help="share PATH with USER",
        description="Share the folder PATH with USER. It appears in their drive and mount "
        "under its name (they may rename it); --write lets them change it.",
    )
    add.add_argument("path", metavar="PATH", help="a folder in a mount, or a drive path")
    add.add_argument("user", metavar="USER", help="the user to share it with")
    access = add.add_mutually_exclusive_group(required=True)
    access.add_argument("--read", dest="access", action="store_const", const="read")
    access.add_argument("--write", dest="access", action="store_const", const="write")
    add_connection_options(add)
    add.set_defaults(func=add_command)

    listing = actions.add_parser(
        "list", help="list shares", description="What you share, and what is shared with you."
    )
    add_connection_options(listing)
    listing.set_defaults(func=list_command, path=None)

    remove = actions.add_parser(
        "remove",
        help="revoke a share, or leave one shared with you",
        description="Revoke the share of PATH (with USER only, when given), or leave the "
        "folder at PATH that someone shares with you. The folder leaves the recipient's "
        "drive; their edits not yet synced are kept as a conflicted copy in their drive.",
    )
    remove.add_argument("path", metavar="PATH", help="the shared folder (mount or drive path)")
    remove.add_argument("user", metavar="USER", nargs="?", help="only the share with USER")
    add_connection_options(remove)
    remove.set_defaults(func=remove_command)


def _context(args: argparse.Namespace) -> tuple[Context, str | None]:
    context = resolve(args.server, args.token_file, args.config, args.path)
    return context, drive_path(args.path, context) if args.path else None


@one_line_errors("share add")
def add_command(args: argparse.Namespace) -> int:
    context, path = _context(args)
    body = {"path": path, "user": args.user, "access": args.access}
    with Api(context) as api:
        made = api.json("POST", "/v1/shares", json=body)
    return emit(args, made, [f"shared {path} with {args.user} ({args.access})"])


@one_line_errors("share list")
def list_command(args: argparse.Namespace) -> int:
    context, _path = _context(args)
    with Api(context) as api:
        shares = api.json("GET", "/v1/shares")
    lines = [f"{'ID':>5}  {'ACCESS':<6}  {'WITH':<16} PATH"]
    lines += [
        f"{s['id']:>5}  {s['access']:<6}  {s['user']:<16} {s['path']}" for s in shares["shared"]
    ]
    lines += [
        f"{s['id']:>5}  {s['access']:<6}  {'from ' + s['owner']:<16} {s['path']}"
        for s in shares["received"]
    ]
    return emit(args, shares, lines)


@one_line_errors("share remove")
def remove_command(args: argparse.Namespace) -> int:
    context, path = _context(args)
    with Api(context) as api:
        shares = api.json("GET", "/v1/shares")
        chosen = [
            s for s in shares["shared"] if s["path"] == path and args.user in (None, s["user"])
        ] or [s for s in shares["received"] if s["path"] == path and args.user is None]
        if not chosen:
            whom = f" with {args.user}" if args.user else ""
            raise CliError(f"{path} is not shared{whom}")
        for share in chosen:
            api.request("DELETE", f"/v1/shares/{share['id']}")
    lines = [f"removed share {s['id']} of {path}" for s in chosen]
    return emit(args, {"removed": [s["id"] for s in chosen]}, lines)
