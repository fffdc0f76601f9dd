"""`cirrus share add|list|remove`: folders shared with other users (docs/sharing.md)."""

import argparse
from datetime import datetime

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
    _register_links(actions)


def _register_links(actions: argparse._SubParsersAction) -> None:
    link = actions.add_parser(
        "link",
        help="public read-only links",
        description="Links that let anyone with the URL read a file or folder, without a "
        "token, until they expire or are removed.",
    )
    links = link.add_subparsers(dest="link_action", metavar="ACTION", required=True)
    add = links.add_parser(
        "add", help="make a link to PATH", description="Make a public read-only link to PATH."
    )
    add.add_argument("path", metavar="PATH", help="a file or folder (mount or drive path)")
    add.add_argument(
        "--expires", metavar="AGE", default="7d", help="lifetime: 30m, 12h, 7d ... (default 7d)"
    )
    add_connection_options(add)
    add.set_defaults(func=link_add_command)
    listing = links.add_parser("list", help="list your links", description="Your live links.")
    add_connection_options(listing)
    listing.set_defaults(func=link_list_command, path=None)
    remove = links.add_parser(
        "remove", help="revoke a link", description="Revoke link ID (see `cirrus share link list`)."
    )
    remove.add_argument("id", metavar="ID", type=int, help="the link's id")
    add_connection_options(remove)
    remove.set_defaults(func=link_remove_command, path=None)


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


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(age: str) -> int:
    """`90`, `30m`, `12h`, `7d` in seconds."""
    number, unit = (age[:-1], age[-1]) if age[-1:] in UNITS else (age, "s")
    if not number.isdigit() or int(number) == 0:
        raise CliError(f"--expires: not a lifetime: {age!r} (e.g. 30m, 12h, 7d)")
    return int(number) * UNITS[unit]


@one_line_errors("share link add")
def link_add_command(args: argparse.Namespace) -> int:
    context, path = _context(args)
    body = {"path": path, "expires_in_s": seconds(args.expires)}
    with Api(context) as api:
        made = api.json("POST", "/v1/links", json=body)
    made["url"] = context.server.rstrip("/") + made["url"]
    lines = [made["url"], f"link {made['id']} to {path}, until {_when(made['expires'])}"]
    return emit(args, made, lines)


@one_line_errors("share link list")
def link_list_command(args: argparse.Namespace) -> int:
    context, _path = _context(args)
    with Api(context) as api:
        links = api.json("GET", "/v1/links")
    lines = [f"{'ID':>5}  {'EXPIRES':<19}  PATH"]
    lines += [f"{k['id']:>5}  {_when(k['expires']):<19}  {k['path']}" for k in links["links"]]
    return emit(args, links, lines)


@one_line_errors("share link remove")
def link_remove_command(args: argparse.Namespace) -> int:
    context, _path = _context(args)
    with Api(context) as api:
        api.request("DELETE", f"/v1/links/{args.id}")
    return emit(args, {"removed": args.id}, [f"removed link {args.id}"])


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
