"""Where a user command finds its server and token, and what a path argument names.

In order, the first that gives a server wins (the token comes from the same place unless
`--token-file` or $CIRRUS_TOKEN gives one):

1. `--server URL`;
2. the Cirrus mount the path argument (or the current directory) lies in: the mount
   publishes its server and token in `.cirrus/mount.json` at its root, a file only the
   mount's owner can read;
3. the config file `cirrus login` writes, `$XDG_CONFIG_HOME/cirrus/config.toml`
   (`~/.config/cirrus/config.toml`), or `--config FILE`.

A path inside a mount names the drive file at the same place; any other path argument is a
drive path (`/docs/a.txt`; a relative one starts at the drive root).
"""

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mountfs.published import VIRTUAL_DIR

FSTYPE = "fuse.cirrus"


class CliError(Exception):
    """A failure of a user command, reported as one line with exit status 1."""


@dataclass(frozen=True, slots=True)
class Context:
    server: str
    token: str
    mountpoint: str | None = None  # the mount the command runs in, if any
    device: str | None = None  # authors the revisions the command makes


def config_path(override: str | None = None) -> Path:
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "cirrus" / "config.toml"


def read_config(path: Path) -> dict:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None


def write_config(path: Path, values: dict[str, str]) -> None:
    """Write string settings with mode 0600 (they include the token), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    # JSON strings are valid TOML basic strings (same escapes; ASCII only here).
    text = "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def mount_root(path: str) -> str | None:
    """The Cirrus mount point holding `path`, read from the mount table (the deepest one)."""
    target = os.path.realpath(path)
    best = None
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        for line in table:
            fields = line.split()
            separator = fields.index("-")
            if fields[separator + 1] != FSTYPE:
                continue
            point = fields[4].encode().decode("unicode_escape")
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and (best is None or len(point) > len(best)):
                best = point
    return best


def mount_info(root: str) -> dict:
    try:
        with open(os.path.join(root, VIRTUAL_DIR, "mount.json"), "rb") as file:
            return json.load(file)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the mount's settings at {root}: {exc}") from None


def _token_override(token_file: str | None) -> str | None:
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"cannot read token file {token_file}: {exc.strerror}") from None
        if not token:
            raise CliError(f"token file {token_file} is empty")
        return token
    return os.environ.get("CIRRUS_TOKEN", "").strip() or None


def resolve(
    server: str | None, token_file: str | None, config: str | None, near: str | None = None
) -> Context:
    """The server and token for a command about the local path `near` (when it lies in a
    mount), else run from the current directory."""
    token = _token_override(token_file)
    root = None if server is not None else mount_root(near or ".") or mount_root(".")
    if root is not None:
        info = mount_info(root)
        return Context(info["server"], token or info["token"], root, info.get("device"))
    settings = read_config(config_path(config))
    if server is None:
        server = settings.get("server")
        if server is None:
            raise CliError(
                "no server: run this inside a Cirrus mount, `cirrus login URL`, or give --server"
            )
    elif settings.get("server") != server:
        settings = {}
    token = token or settings.get("token")
    if not token:
        raise CliError(f"no token for {server}: `cirrus login {server}` or give --token-file")
    return Context(check_url(server), token, device=settings.get("device"))


def check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise CliError(f"server URL must start with http:// or https://: {url}")
    return url.rstrip("/")


def drive_path(argument: str, context: Context) -> str:
    """The drive path an argument names: a local path in the context's mount maps to the
    drive file there; anything else is a drive path already."""
    if context.mountpoint is not None:
        local = os.path.realpath(argument)
        root = context.mountpoint
        if local == root or local.startswith(root.rstrip("/") + "/"):
            relative = os.path.relpath(local, root)
            return "/" if relative == "." else "/" + relative
    return "/" + argument.strip("/")
