"""`cirrus trash list|restore|purge`: the deleted files and folders the server keeps.

An ITEM argument is an item's id (`cirrus trash list` shows it), the path where the item was
(a drive path, or a local path in a mount: the most recently deleted item of that path), or
the item's entry in a mount's `.cirrus/trash/` (named as `published.trash_names` names it).
Only whole items are restored or purged: a file inside a deleted folder comes back with its
folder, or is copied out of `.cirrus/trash/`.
"""

import argparse
import os

from rich.filesize import decimal

from mountfs.published import VIRTUAL_DIR, trash_names
from mountfs.usercli import add_command, one_line_errors
from mountfs.usercli.api import Api
from mountfs.usercli.commands import emit, local_time
from mountfs.usercli.context import CliError, Context, drive_path, resolve

TRASH_DIR = f"/{VIRTUAL_DIR}/trash"


def register(subparsers: argparse._SubParsersAction) -> None:
    trash = subparsers.add_parser(
        "trash",
        help="list, restore or purge deleted files and folders",
        description="The trash keeps deleted files and folders (for the server's "
        "--trash-days). ITEM is an id from `cirrus trash list`, the path where the item was, "
        "or its entry in a mount's .cirrus/trash/.",
    )
    actions = trash.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_command(
        actions,
        "list",
        list_command,
        "list the trash, most recently deleted first",
        "List the trash: id, deletion time, size, files, device and path of each item.",
    )
    restore = add_command(
        actions,
        "restore",
        restore_command,
        "put items back where they were",
        "Put each ITEM back where it was, with everything in it. When its name is taken "
        "now, it comes back as `NAME (restored).EXT`.",
    )
    restore.add_argument("items", metavar="ITEM", nargs="+")
    purge = add_command(
        actions,
        "purge",
        purge_command,
        "delete items for good",
        "Delete each ITEM (or, with --all, the whole trash) for good, with its history. "
        "Its space is freed.",
    )
    purge.add_argument("items", metavar="ITEM", nargs="*")
    purge.add_argument("--all", action="store_true", help="empty the whole trash")


@one_line_errors("trash list")
def list_command(args: argparse.Namespace) -> int:
    context = resolve(args.server, args.token_file, args.config)
    with Api(context) as api:
        items = api.json("GET", "/v1/trash")["items"]
    lines = [f"{'ID':>6}  {'DELETED':<19}  {'SIZE':>10}  {'FILES':>5}  {'DEVICE':<16} PATH"]
    for item in items:
        path = item["path"] + ("/" if item["type"] == "dir" else "")
        lines.append(
            f"{item['id']:>6}  {local_time(item['deleted']):<19}  {decimal(item['size']):>10}  "
            f"{item['files']:>5}  {item['device'] or '-':<16} {path}"
        )
    if not items:
        lines = ["the trash is empty"]
    return emit(args, {"items": items}, lines)


@one_line_errors("trash restore")
def restore_command(args: argparse.Namespace) -> int:
    context = resolve(args.server, args.token_file, args.config, args.items[0])
    restored = []
    with Api(context) as api:
        items = api.json("GET", "/v1/trash")["items"]
        for argument in args.items:
            item = find_item(items, argument, context)
            node = api.json("POST", "/v1/trash/restore", json={"id": item["id"]})
            restored.append({"id": item["id"], "path": item["path"], "to": node["path"]})
            items.remove(item)
    lines = [f"restored {r['path']} (item {r['id']}) as {r['to']}" for r in restored]
    return emit(args, {"restored": restored}, lines)


@one_line_errors("trash purge")
def purge_command(args: argparse.Namespace) -> int:
    if args.all == bool(args.items):
        raise CliError("give the items to purge, or --all to empty the whole trash")
    near = args.items[0] if args.items else None
    context = resolve(args.server, args.token_file, args.config, near)
    with Api(context) as api:
        if args.all:
            purged = api.json("POST", "/v1/trash/purge", json={"all": True})["purged"]
        else:
            items = api.json("GET", "/v1/trash")["items"]
            chosen = [find_item(items, argument, context) for argument in args.items]
            for item in {item["id"]: item for item in chosen}.values():
                api.json("POST", "/v1/trash/purge", json={"id": item["id"]})
            purged = len({item["id"] for item in chosen})
    return emit(args, {"purged": purged}, [f"purged {purged} item(s) for good"])


def find_item(items: list[dict], argument: str, context: Context) -> dict:
    """The trash item an ITEM argument names (see the module's docstring)."""
    if not items:
        raise CliError("the trash is empty: nothing to restore or purge")
    if argument.isdigit():
        for item in items:
            if item["id"] == int(argument):
                return item
        raise CliError(f"no item {argument} in the trash (see `cirrus trash list`)")
    path = drive_path(argument, context)
    if path.startswith(TRASH_DIR + "/") and context.mountpoint is not None:
        return _by_entry(items, path.removeprefix(TRASH_DIR + "/"))
    for item in items:  # most recently deleted first
        if item["path"] == path:
            return item
    raise CliError(f"nothing in the trash was at {path} (see `cirrus trash list`)")


def _by_entry(items: list[dict], entry: str) -> dict:
    name, _, inside = entry.partition("/")
    item = trash_names(items).get(name)
    if item is None:
        raise CliError(f"no item {name!r} in the trash (see `cirrus trash list`)")
    if inside:
        where = os.path.join(item["path"], inside)
        raise CliError(f"{where} is inside the trash item {item['path']}: restore that item")
    return item
