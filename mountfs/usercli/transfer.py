"""`cirrus upload` and `cirrus download`: resumable transfers with a progress bar.

An upload goes through the resumable protocol (docs/api.md): the session's location is kept
in a small state file under `$XDG_STATE_HOME/cirrus/transfers/` (named by a hash of the
server, both paths, the local file's size and mtime), so running the same command again
asks the server how much arrived and sends only the rest. A download writes `LOCAL.cirrus-part`
and keeps the revision it reads in its state file; run again, it asks for the rest of that
same revision with a Range request (starting over if the file has changed since). The file
gets its name only once complete.

The progress bar (rich) shows bytes, speed and time left on stderr, and stays quiet when
stderr is not a terminal or with --json.
"""

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from mountfs.mount_cli import parse_size
from mountfs.usercli import add_connection_options, one_line_errors
from mountfs.usercli.api import Api, NotFoundError
from mountfs.usercli.commands import emit
from mountfs.usercli.context import CliError, drive_path, resolve

CHUNK = 8 << 20
PART_SUFFIX = ".cirrus-part"


def register(subparsers: argparse._SubParsersAction) -> None:
    upload = subparsers.add_parser(
        "upload",
        help="upload a file (resumable, with progress)",
        description="Upload LOCAL to the drive path REMOTE (a folder: into it, by LOCAL's "
        "name). An interrupted upload resumes when the same command runs again.",
    )
    upload.add_argument("local", metavar="LOCAL")
    upload.add_argument("remote", metavar="REMOTE")
    download = subparsers.add_parser(
        "download",
        help="download a file (resumable, with progress)",
        description="Download the drive file REMOTE to LOCAL (a folder: into it). An "
        "interrupted download resumes when the same command runs again.",
    )
    download.add_argument("remote", metavar="REMOTE")
    download.add_argument("local", metavar="LOCAL")
    for parser in (upload, download):
        parser.add_argument(
            "--chunk-size", type=parse_size, default=CHUNK, help="bytes per request (8M)"
        )
        parser.add_argument("--bwlimit", type=parse_size, help="bytes per second, e.g. 4M")
        parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
        add_connection_options(parser)
    upload.set_defaults(func=upload_command)
    download.set_defaults(func=download_command)


class StateFile:
    """The small JSON file that lets a rerun of the same transfer resume it."""

    def __init__(self, kind: str, key: list) -> None:
        base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        digest = hashlib.sha256(json.dumps([kind, *key]).encode()).hexdigest()[:32]
        self.path = Path(base) / "cirrus" / "transfers" / f"{kind}-{digest}.json"

    def load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def save(self, values: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.write_text(json.dumps(values))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Meter:
    """The progress bar and the bandwidth limit of one transfer."""

    def __init__(self, args: argparse.Namespace, label: str, total: int, done: int) -> None:
        quiet = args.quiet or args.json or not sys.stderr.isatty()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=quiet,
        )
        self._task = self._progress.add_task(label, total=total, completed=done)
        self._limit = args.bwlimit
        self._start, self._sent = time.monotonic(), 0

    def __enter__(self) -> "Meter":
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def advance(self, count: int) -> None:
        self._progress.advance(self._task, count)
        self._sent += count
        if self._limit:
            ahead = self._sent / self._limit - (time.monotonic() - self._start)
            if ahead > 0:
                time.sleep(ahead)


# -- upload -----------------------------------------------------------------------------------


@one_line_errors("upload")
def upload_command(args: argparse.Namespace) -> int:
    try:
        info = os.stat(args.local)
    except OSError as exc:
        raise CliError(f"{args.local}: {exc.strerror}") from None
    if not os.path.isfile(args.local):
        raise CliError(f"{args.local} is not a file")
    context = resolve(args.server, args.token_file, args.config, args.remote)
    remote = drive_path(args.remote, context)
    size = info.st_size
    with Api(context) as api:
        target = api.stat(remote)
        if args.remote.endswith("/") or (target is not None and target["type"] == "dir"):
            remote = remote.rstrip("/") + "/" + os.path.basename(args.local)
        key = [context.server, remote, os.path.abspath(args.local), size, info.st_mtime_ns]
        state = StateFile("upload", key)
        location = state.load().get("location")
        offset = _progress(api, location, size) if location else None
        resumed = offset or 0
        if location is None or offset is None:
            location, offset = _start(api, remote, size), 0
            state.save({"location": location})
        with open(args.local, "rb") as file, Meter(args, remote, size, offset) as meter:
            node = _send(api, location, file, offset, size, args.chunk_size, meter.advance)
        state.remove()
    document = {"local": args.local, "remote": node["path"], "size": size, "rev": node["rev"]}
    document["resumed_from"] = resumed
    line = f"uploaded {args.local} to {node['path']} ({size} bytes, revision {node['rev']})"
    return emit(args, document, [line + (f", resumed at byte {resumed}" if resumed else "")])


def _start(api: Api, remote: str, size: int) -> str:
    answer = api.json(
        "POST",
        "/v1/files",
        params={"uploadType": "resumable", "path": remote},
        headers={"X-Upload-Content-Length": str(size)},
    )
    return answer["location"]


def _progress(api: Api, location: str, size: int) -> int | None:
    """Bytes the server holds of a session; None when the session is gone (expired)."""
    try:
        answer = api.request("PUT", location, headers={"Content-Range": f"bytes */{size}"})
    except NotFoundError:
        return None
    return size if answer.status_code == 201 else _received(answer)


def _received(answer) -> int:
    """The offset after `Range: bytes=0-R` of a 308 (0 when there is none)."""
    header = answer.headers.get("Range", "")
    return int(header.rpartition("-")[2]) + 1 if header.startswith("bytes=0-") else 0


def _send(
    api: Api, location: str, file, offset: int, size: int, chunk: int, advance: Callable
) -> dict:
    if offset >= size:
        headers = {"Content-Range": f"bytes */{size}"}
        return api.json("PUT", location, headers=headers)
    while True:
        data = os.pread(file.fileno(), min(chunk, size - offset), offset)
        if not data:
            raise CliError("the local file shrank during the upload")
        last = offset + len(data) - 1
        headers = {"Content-Range": f"bytes {offset}-{last}/{size}"}
        answer = api.request("PUT", location, content=data, headers=headers)
        advance(len(data))
        if answer.status_code == 201:
            return answer.json()
        offset = _received(answer)


# -- download ---------------------------------------------------------------------------------


@one_line_errors("download")
def download_command(args: argparse.Namespace) -> int:
    context = resolve(args.server, args.token_file, args.config, args.remote)
    remote = drive_path(args.remote, context)
    local = args.local
    if local.endswith("/") or os.path.isdir(local):
        local = os.path.join(local, os.path.basename(remote))
    with Api(context) as api:
        node = api.stat(remote)
        if node is None:
            raise CliError(f"no such file: {remote}")
        if node["type"] != "file":
            raise CliError(f"{remote} is a {node['type']}, not a file")
        state = StateFile("download", [context.server, remote, os.path.abspath(local)])
        part = local + PART_SUFFIX
        offset = _resume_offset(state, node, part)
        try:
            with open(part, "ab") as out, Meter(args, remote, node["size"], offset) as meter:
                out.truncate(offset)
                _receive(api, node, offset, out, args.chunk_size, meter.advance)
                out.flush()
                os.fsync(out.fileno())
            os.replace(part, local)
        except OSError as exc:
            raise CliError(f"cannot write {exc.filename or local}: {exc.strerror}") from None
        state.remove()
    document = {"remote": remote, "local": local, "size": node["size"], "rev": node["rev"]}
    document["resumed_from"] = offset
    line = f"downloaded {remote} (revision {node['rev']}, {node['size']} bytes) to {local}"
    return emit(args, document, [line + (f", resumed at byte {offset}" if offset else "")])


def _resume_offset(state: StateFile, node: dict, part: str) -> int:
    """Where to go on: the part already written, if it is of the same revision."""
    saved = state.load()
    if saved == {"id": node["id"], "rev": node["rev"]} and os.path.exists(part):
        return min(os.path.getsize(part), node["size"])
    state.save({"id": node["id"], "rev": node["rev"]})
    return 0


def _receive(api: Api, node: dict, offset: int, out, chunk: int, advance: Callable) -> None:
    if offset >= node["size"]:
        return
    params = {"id": node["id"], "rev": node["rev"]}
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with api.stream("GET", "/v1/files/content", params=params, headers=headers) as answer:
        if offset and answer.status_code != 206:
            raise CliError("the server did not resume the download; run it again")
        for data in answer.iter_bytes(chunk):
            out.write(data)
            advance(len(data))
