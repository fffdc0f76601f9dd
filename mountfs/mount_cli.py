"""`cirrus mount` and `cirrus unmount`, and the mount(8) helper calling convention.

Like sshfs, `cirrus mount` returns only once the directory is mounted: the checks that need no
server run first, then a child process (in its own session, logging to the cache directory)
connects, fills the mirror and mounts, and tells the parent through a pipe that it is ready
or why it cannot be. Every failure is one line on stderr and a non-zero exit, and leaves
nothing mounted.
"""

import argparse
import contextlib
import hashlib
import logging
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mountfs.daemon import MountOptions

READY_TIMEOUT_S = 300.0
UNMOUNT_WAIT_S = 30.0
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# mount(8) and fstab options that mean nothing to Cirrus but must be accepted.
_GENERIC_OPTIONS = {
    "rw", "ro", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "auto", "noauto",
    "user", "nouser", "users", "defaults", "_netdev", "nofail", "async", "sync",
    "atime", "noatime", "relatime", "strictatime", "nodiratime", "diratime",
}  # fmt: skip
_VALUE_OPTIONS = {
    "token_file": "--token-file",
    "cache_dir": "--cache-dir",
    "cache_size": "--cache-size",
}


class UsageError(Exception):
    """A problem with the command line or the machine, reported in one line."""


def parse_size(text: str) -> int:
    """'10G' -> bytes (K, M, G, T are powers of 1024)."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 10G or 500M)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def register(subparsers: argparse._SubParsersAction) -> None:
    mount = subparsers.add_parser("mount", help="mount a Cirrus drive on a directory")
    mount.add_argument("server_url", metavar="SERVER_URL", help="e.g. http://server:8080")
    mount.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing empty directory")
    mount.add_argument("--token-file", help="file holding the access token (or $CIRRUS_TOKEN)")
    mount.add_argument("--cache-dir", help="local cache (default ~/.cache/cirrus/<server>)")
    mount.add_argument("--cache-size", type=parse_size, default=parse_size("10G"),
                       help="block cache size, e.g. 10G (default)")  # fmt: skip
    mount.add_argument("--foreground", "-f", action="store_true", help="do not detach")
    mount.add_argument("--allow-other", action="store_true", help="let other users in")
    mount.add_argument("--debug", action="store_true", help="verbose log")
    mount.set_defaults(func=_mount_command)
    unmount = subparsers.add_parser("unmount", help="unmount a Cirrus drive")
    unmount.add_argument("mountpoint", metavar="MOUNTPOINT")
    unmount.add_argument("--lazy", "-z", action="store_true", help="detach even if busy")
    unmount.set_defaults(func=_unmount_command)


def rewrite_mount_helper_argv(argv: list[str]) -> list[str]:
    """`cirrus URL MOUNTPOINT -o k=v,...` (as mount.fuse3 runs us) -> a `mount` command line."""
    if len(argv) < 2 or "://" not in argv[0]:
        return argv
    rewritten = ["mount", argv[0], argv[1]]
    rest = argv[2:]
    while rest:
        item = rest.pop(0)
        if item == "-o" and rest:
            rewritten.extend(_translate_options(rest.pop(0)))
        elif item.startswith("-o") and len(item) > 2:
            rewritten.extend(_translate_options(item[2:]))
        else:
            rewritten.append(item)
    return rewritten


def _translate_options(text: str) -> list[str]:
    args: list[str] = []
    for option in filter(None, text.split(",")):
        key, _, value = option.partition("=")
        if key in _VALUE_OPTIONS and value:
            args += [_VALUE_OPTIONS[key], value]
        elif key == "allow_other":
            args.append("--allow-other")
        elif key in _GENERIC_OPTIONS or key.startswith("x-"):
            continue
        else:
            args.append(f"--unknown-option={option}")  # argparse reports it in one line
    return args


# -- mount ------------------------------------------------------------------------------------


def _default_cache_dir(server_url: str) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    digest = hashlib.sha256(server_url.encode()).hexdigest()[:12]
    return os.path.join(base, "cirrus", digest)


def _read_token(path: str | None, server_url: str) -> str:
    """The token from --token-file, else $CIRRUS_TOKEN, else the one `cirrus login` saved
    for this server."""
    if path is None:
        token = os.environ.get("CIRRUS_TOKEN", "") or _logged_in_token(server_url)
        if not token:
            raise UsageError(
                "no token: give --token-file FILE, set CIRRUS_TOKEN or `cirrus login` first"
            )
        return token.strip()
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except OSError as exc:
        raise UsageError(f"cannot read token file {path}: {exc.strerror}") from None
    if not token:
        raise UsageError(f"token file {path} is empty")
    return token


def _logged_in_token(server_url: str) -> str:
    from mountfs.usercli.context import CliError, config_path, read_config

    try:
        settings = read_config(config_path())
    except CliError as exc:
        raise UsageError(str(exc)) from None
    same = settings.get("server", "").rstrip("/") == server_url.rstrip("/")
    return settings.get("token", "") if same else ""


def _check_mountpoint(path: str) -> str:
    if not os.path.exists("/dev/fuse"):
        raise UsageError("/dev/fuse is missing: FUSE is not available on this machine")
    from mountfs.daemon import is_mounted

    if is_mounted(path):
        raise UsageError(f"{path} is already a mount point (a crashed mount? `cirrus unmount` it)")
    if not os.path.isdir(path):
        raise UsageError(f"mount point {path} does not exist or is not a directory")
    if os.listdir(path):
        raise UsageError(f"mount point {path} is not empty")
    return os.path.realpath(path)


def _options(args: argparse.Namespace) -> "MountOptions":

    from mountfs.daemon import MountOptions

    if not args.server_url.startswith(("http://", "https://")):
        raise UsageError(f"server URL must start with http:// or https://: {args.server_url}")
    return MountOptions(
        server_url=args.server_url,
        mountpoint=_check_mountpoint(args.mountpoint),
        token=_read_token(args.token_file, args.server_url),
        cache_dir=os.path.abspath(args.cache_dir or _default_cache_dir(args.server_url)),
        cache_size=args.cache_size,
        allow_other=args.allow_other,
    )


def _mount_command(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
    except UsageError as exc:
        return _fail("mount", str(exc))
    level = logging.DEBUG if args.debug else logging.INFO
    if args.foreground:
        _setup_logging(level)
        error = _run(options, lambda message: None)
        return _fail("mount", error) if error else 0
    return _daemonize(options, level)


def _setup_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _run(options: "MountOptions", ready: Callable[[str | None], None]) -> str | None:
    from mountfs.daemon import run

    return run(options, ready)


def _daemonize(options: "MountOptions", level: int) -> int:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = _child(options, level, write_end)
        os._exit(code)
    os.close(write_end)
    message = _wait_ready(read_end)
    if message == "ok":
        return 0
    os.waitpid(pid, 0)
    return _fail("mount", message or "the mount process exited without mounting")


def _child(options: "MountOptions", level: int, pipe: int) -> int:
    os.setsid()
    os.makedirs(options.cache_dir, exist_ok=True)
    log_fd = os.open(
        os.path.join(options.cache_dir, "mount.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
    )
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    _setup_logging(level)

    def ready(message: str | None) -> None:
        os.write(pipe, b"ok" if message is None else message.encode())
        os.close(pipe)

    try:
        error = _run(options, ready)
    except BaseException:
        logging.exception("the mount process failed")
        error = "the mount process failed; see mount.log in the cache directory"
    if error is not None:
        logging.error("%s", error)
        with contextlib.suppress(OSError):
            ready(error)
        return 1
    return 0


def _wait_ready(pipe: int) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    chunks = []
    while time.monotonic() < deadline:
        readable, _, _ = select.select([pipe], [], [], deadline - time.monotonic())
        if not readable:
            break
        data = os.read(pipe, 4096)
        if not data:
            break
        chunks.append(data)
    os.close(pipe)
    return b"".join(chunks).decode(errors="replace")


# -- unmount ----------------------------------------------------------------------------------


def _unmount_command(args: argparse.Namespace) -> int:
    from mountfs.daemon import is_mounted

    path = os.path.abspath(args.mountpoint)
    if not is_mounted(path):
        return _fail("unmount", f"{path} is not mounted")
    command = ["fusermount3", "-u", *(["-z"] if args.lazy else []), path]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=UNMOUNT_WAIT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _fail("unmount", f"fusermount3 failed: {exc}")
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["unknown error"]
        return _fail("unmount", detail[0])
    return 0


def _fail(command: str, message: str) -> int:
    print(f"cirrus {command}: error: {message}", file=sys.stderr)
    return 1
