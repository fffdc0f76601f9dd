"""`cirrus login`, `status`, `history`, `restore` and `pin`."""

import argparse
import getpass
import json
import os
import socket
import sys
from datetime import datetime

import httpx
from rich.filesize import decimal

from mountfs.published import STATUS_XATTR, VIRTUAL_DIR
from mountfs.usercli import add_command, one_line_errors
from mountfs.usercli.api import Api, check, unreachable
from mountfs.usercli.context import (
    CliError,
    check_url,
    config_path,
    drive_path,
    resolve,
    write_config,
)

HISTORY_LIMIT = 100


def register(subparsers: argparse._SubParsersAction) -> None:
    login = subparsers.add_parser(
        "login",
        help="log this device in and store its token",
        description="Exchange a one-time login code (from `cirrus admin login-code`) for a "
        "token of this device, stored with mode 0600 in ~/.config/cirrus/config.toml.",
    )
    login.add_argument("url", metavar="URL", help="the server, e.g. http://server:8080")
    login.add_argument("--code", help="the login code (asked for when omitted)")
    login.add_argument("--device", help="this device's name (default: the host name)")
    login.add_argument("--config", metavar="FILE", help="config file to write")
    login.add_argument("--json", action="store_true", help="print one JSON document")
    login.set_defaults(func=login_command)

    status = add_command(
        subparsers,
        "status",
        status_command,
        "show what is synced, pending or conflicted",
        "Inside a mount: connection, pending operations, files and bytes still to upload, "
        "conflicted copies, and PATH's own state. Elsewhere: the account.",
    )
    status.add_argument("path", metavar="PATH", nargs="?", help="a file or folder in a mount")

    history = add_command(
        subparsers,
        "history",
        history_command,
        "list a file's kept revisions",
        "List a file's revisions.",
    )
    history.add_argument("path", metavar="PATH", help="a file in a mount, or a drive path")
    history.add_argument("--limit", type=int, default=HISTORY_LIMIT, help="at most this many")

    restore = add_command(
        subparsers,
        "restore",
        restore_command,
        "bring back an old revision of a file",
        "Make revision R of PATH current again, as a new revision (the default R is the one "
        "before the current). With --to P the revision is copied to P instead.",
    )
    restore.add_argument("path", metavar="PATH", help="a file in a mount, or a drive path")
    restore.add_argument("--rev", type=int, metavar="R", help="revision number (see history)")
    restore.add_argument("--to", metavar="P", help="restore as another file")

    pin = add_command(
        subparsers,
        "pin",
        pin_command,
        "keep a revision whatever the retention policy says",
        "Pin revision R of PATH: the server keeps it however old it gets (history's STATUS "
        "shows `pinned`). --unpin lets retention drop it again.",
    )
    pin.add_argument("path", metavar="PATH", help="a file in a mount, or a drive path")
    pin.add_argument("--rev", type=int, metavar="R", required=True, help="revision number")
    pin.add_argument("--unpin", action="store_true", help="stop keeping it")


def emit(args: argparse.Namespace, document: object, lines: list[str]) -> int:
    print(json.dumps(document, indent=2) if args.json else "\n".join(lines))
    return 0


# -- login ------------------------------------------------------------------------------------


def _read_code(given: str | None) -> str:
    if given:
        return given.strip()
    code = getpass.getpass("login code: ") if sys.stdin.isatty() else sys.stdin.readline()
    if not code.strip():
        raise CliError("no login code given (get one from `cirrus admin login-code USER`)")
    return code.strip()


@one_line_errors("login")
def login_command(args: argparse.Namespace) -> int:
    server = check_url(args.url)
    code = _read_code(args.code)
    device = args.device or socket.gethostname()[:64] or "cirrus"
    try:
        with httpx.Client(base_url=server, timeout=30.0) as client:
            answer = client.post("/v1/login", json={"code": code, "device": device})
    except httpx.TransportError as exc:
        raise unreachable(server, exc) from None
    if answer.status_code == 401:
        raise CliError("the server refused the login code (unknown, used or expired)")
    check(answer)
    new = answer.json()
    path = config_path(args.config)
    settings = {"server": server, "token": new["token"], "device": device, "user": new["user"]}
    write_config(path, settings)
    document = {"server": server, "user": new["user"], "token_name": new["name"]}
    document["config"] = str(path)
    lines = [f"logged in to {server} as {new['user']} (token {new['name']!r}), saved in {path}"]
    return emit(args, document, lines)


# -- status -----------------------------------------------------------------------------------


@one_line_errors("status")
def status_command(args: argparse.Namespace) -> int:
    context = resolve(args.server, args.token_file, args.config, args.path)
    if context.mountpoint is None:
        if args.path:
            raise CliError(f"{args.path} is not in a Cirrus mount (status needs a mount)")
        return _account_status(args, context)
    with open(os.path.join(context.mountpoint, VIRTUAL_DIR, "status.json"), "rb") as file:
        status = json.load(file)
    status["mountpoint"] = context.mountpoint
    lines = [
        f"{context.mountpoint} on {status['server']} (device {status['device']})",
        f"connection:  {status['connection']}",
        f"pending:     {status['pending_operations']} operations; "
        f"{status['upload_files']} files ({decimal(status['upload_bytes'])}) to upload",
        f"conflicts:   {', '.join(status['conflicts']) or 'none'}",
    ]
    if args.path:
        try:
            state = os.getxattr(args.path, STATUS_XATTR).decode()
        except OSError as exc:
            raise CliError(f"{args.path}: {exc.strerror}") from None
        status["path"] = {"path": drive_path(args.path, context), "state": state}
        lines.append(f"{status['path']['path']}: {state}")
    return emit(args, status, lines)


def _account_status(args: argparse.Namespace, context) -> int:
    with Api(context) as api:
        account = api.json("GET", "/v1/account")
    document = {"server": context.server, "connection": "online", **account}
    lines = [
        f"{account['user']} on {context.server} (not in a mount)",
        "connection:  online",
        f"drive:       {account['files']} files, {decimal(account['used_bytes'])}",
    ]
    return emit(args, document, lines)


# -- history and restore ----------------------------------------------------------------------


def local_time(iso: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@one_line_errors("history")
def history_command(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise CliError("--limit must be 1 to 1000")
    context = resolve(args.server, args.token_file, args.config, args.path)
    path = drive_path(args.path, context)
    with Api(context) as api:
        node = api.stat(path)
        answer = api.json("GET", "/v1/files/history", params={"path": path, "limit": args.limit})
    current = node["rev"] if node else None
    lines = [f"{'REV':>5}  {'DATE':<19}  {'SIZE':>10}  {'DEVICE':<16} STATUS"]
    for revision in answer["revisions"]:
        mark = " (current)" if revision["rev"] == current else ""
        mark += " pinned" if revision.get("pinned") else ""
        lines.append(
            f"{revision['rev']:>5}  {local_time(revision['created']):<19}  "
            f"{decimal(revision['size']):>10}  {revision['device']:<16} "
            f"{revision['status']}{mark}"
        )
    return emit(args, {"path": path, "current": current, **answer}, lines)


def _previous_revision(api: Api, path: str) -> int:
    """The newest uploaded revision before the current one: what an undo brings back."""
    node = api.stat(path)
    answer = api.json("GET", "/v1/files/history", params={"path": path, "limit": 1000})
    current = node["rev"] if node else None
    for revision in answer["revisions"]:
        if revision["status"] == "uploaded" and (current is None or revision["rev"] < current):
            return revision["rev"]
    raise CliError(f"{path} has no revision before the current one")


@one_line_errors("restore")
def restore_command(args: argparse.Namespace) -> int:
    context = resolve(args.server, args.token_file, args.config, args.path)
    path = drive_path(args.path, context)
    with Api(context) as api:
        rev = args.rev if args.rev is not None else _previous_revision(api, path)
        if args.to is None:
            body = {"path": path, "rev": rev}
            node = api.json("POST", "/v1/files/restore", json=body)
            target = path
        else:
            target = drive_path(args.to, context)
            node = _copy_revision(api, path, rev, target)
    document = {"path": path, "rev": rev, "to": node["path"], "node": node}
    lines = [f"restored {path} revision {rev} as {node['path']} (revision {node['rev']})"]
    if node["path"] != target:
        lines.append(f"{target} had changed meanwhile: the copy is a conflicted copy")
    return emit(args, document, lines)


def _copy_revision(api: Api, path: str, rev: int, target: str) -> dict:
    """Commit revision `rev` of `path` at `target` from its block list: the blocks are the
    user's already, so nothing is downloaded or uploaded again."""
    blocks = api.json("GET", "/v1/files/blocks", params={"path": path, "rev": rev})
    existing = api.stat(target)
    if existing is not None and existing["type"] != "file":
        raise CliError(f"{target} is a {existing['type']}, not a file")
    body = {
        "path": target,
        "base_rev": existing["head_rev"] if existing else None,
        "size": blocks["size"],
        "blocks": [{"hash": b["hash"], "size": b["size"]} for b in blocks["blocks"]],
    }
    answer = api.json("POST", "/v1/files/commit", json=body)
    return answer["node"]


@one_line_errors("pin")
def pin_command(args: argparse.Namespace) -> int:
    context = resolve(args.server, args.token_file, args.config, args.path)
    path = drive_path(args.path, context)
    with Api(context) as api:
        url = "/v1/files/unpin" if args.unpin else "/v1/files/pin"
        revision = api.json("POST", url, json={"path": path, "rev": args.rev})
    verb = "pinned" if revision["pinned"] else "unpinned"
    lines = [f"{verb} {path} revision {revision['rev']} ({decimal(revision['size'])})"]
    return emit(args, {"path": path, **revision}, lines)
