"""Validation of drive paths: absolute, normalised, no `..`, NUL, control characters or
empty components.

Paths travel in query strings and JSON, so they are checked once, on entry, and every later
layer may assume a canonical path such as `/docs/a.txt` (the root is `/`).
"""

import re

NAME_MAX = 255
# A drive path, counted from the drive's root. The kernel's PATH_MAX (4,096) bounds the path
# one system call names, not how deep a node lies below a mount point: a folder deep in the
# drive must still hold a PATH_MAX-long path below it, as a local filesystem does.
PATH_MAX = 8192
# A symlink's target is one system call's path: the kernel's limit.
TARGET_MAX = 4096
# C0 and C1 control characters and DEL: no file manager, shell or web page shows them, and
# Windows refuses C0 in names.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class InvalidPath(ValueError):
    """A path that can never name a node; the message says why."""


def split_path(path: str) -> list[str]:
    """Return the components of a canonical absolute path; raise InvalidPath otherwise."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidPath("path must be absolute (start with '/')")
    if len(path.encode("utf-8", "surrogatepass")) > PATH_MAX:
        raise InvalidPath(f"path is longer than {PATH_MAX} bytes")
    if "\0" in path:
        raise InvalidPath("path contains a NUL byte")
    if path == "/":
        return []
    parts = path[1:].split("/")
    for part in parts:
        check_name(part)
    return parts


def check_name(name: str) -> str:
    """Validate one path component and return it."""
    if name == "":
        raise InvalidPath("path has an empty component")
    if name in (".", ".."):
        raise InvalidPath(f"path component {name!r} is not allowed")
    if "/" in name or "\0" in name:
        raise InvalidPath("name contains '/' or a NUL byte")
    if _CONTROL.search(name):
        raise InvalidPath("name contains a control character")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidPath("name is not valid UTF-8") from exc
    if len(encoded) > NAME_MAX:
        raise InvalidPath(f"name is longer than {NAME_MAX} bytes")
    return name


def normalize(path: str) -> str:
    """Return the canonical form of a valid path (it is already canonical or invalid)."""
    return "/" + "/".join(split_path(path))


def join(parent: str, name: str) -> str:
    check_name(name)
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


def parent_and_name(path: str) -> tuple[str, str]:
    """Split `/a/b/c` into (`/a/b`, `c`); the root has no parent."""
    parts = split_path(path)
    if not parts:
        raise InvalidPath("the root has no parent")
    return "/" + "/".join(parts[:-1]), parts[-1]
