"""Shared pieces of the torture tests: snapshots of a directory tree, a reader of the server's
copy of a drive, and bounded waits until the server holds what a local model holds.

The torture tests never trust the mount to report its own state: what reached the server is
read back over HTTP and compared with a plain local directory that received the same
operations (the model).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import tls_context

# One entry of a tree snapshot: ("dir", mode) | ("file", mode, content) | ("symlink", target).
Entry = tuple
Snapshot = dict[str, Entry]

CONFLICT_MARK = "conflicted copy"
STATUS_XATTR = "user.cirrus.status"


def attempt(call: Callable[[], Any]) -> tuple[str, Any]:
    """Run one file-system call; the outcome is ("ok", value) or ("err", errno name).

    Errno names (not numbers) make a mismatch readable in the failure report."""
    try:
        return ("ok", call())
    except OSError as exc:
        return ("err", errno.errorcode.get(exc.errno or 0, str(exc.errno)))


def local_snapshot(root: Path, skip: Callable[[str], bool] = lambda _: False) -> Snapshot:
    """Every entry below root, keyed by its path relative to root ("a/b"), symlinks unfollowed."""
    snap: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if skip(rel):
                continue
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                snap[rel] = ("symlink", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                snap[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif not stat.S_ISREG(st.st_mode):  # a FIFO, socket or device: never opened
                snap[rel] = ("special", SPECIAL_KINDS[stat.S_IFMT(st.st_mode)], st.st_rdev)
            else:
                snap[rel] = ("file", stat.S_IMODE(st.st_mode), Path(full).read_bytes())
    return snap


SPECIAL_KINDS = {
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "chr",
    stat.S_IFBLK: "blk",
}


def local_owners(root: Path) -> dict[str, tuple[int, int, int]]:
    """(uid, gid, link count) of every entry below root but folders (whose link counts
    are file-system specific)."""
    owners = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            nlink = None if stat.S_ISDIR(st.st_mode) else st.st_nlink
            owners[os.path.relpath(full, root)] = (st.st_uid, st.st_gid, nlink)
    return owners


def owner_diff(seen: dict[str, tuple], wanted: dict[str, tuple]) -> list[str]:
    """The entries whose (uid, gid, link count) differ between two `local_owners` maps."""
    return [
        f"{rel}: {seen.get(rel)} instead of {wanted.get(rel)}"
        for rel in sorted(seen.keys() | wanted.keys())
        if seen.get(rel) != wanted.get(rel)
    ]


def describe_diff(expected: Snapshot, actual: Snapshot, limit: int = 20) -> list[str]:
    """Human-readable differences between two snapshots (empty when they are equal)."""
    lines: list[str] = []
    for rel in sorted(set(expected) | set(actual)):
        want, got = expected.get(rel), actual.get(rel)
        if want == got:
            continue
        lines.append(f"{rel}: expected {short(want)}, found {short(got)}")
        if len(lines) >= limit:
            lines.append("...")
            break
    return lines


def short(entry: Entry | None) -> str:
    """An entry with file contents abbreviated to their size and first bytes."""
    if entry is None or entry[0] != "file":
        return repr(entry)
    data: bytes = entry[2]
    return f"('file', {oct(entry[1])}, {len(data)} bytes {data[:24]!r})"


def is_conflicted_copy(rel: str) -> bool:
    return CONFLICT_MARK in os.path.basename(rel)


@dataclass
class ServerView:
    """Reads one user's drive straight from the server's HTTP API (docs/api.md)."""

    url: str
    token: str
    timeout_s: float = 30.0

    def _get(self, route: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.get(
            f"{self.url}{route}",
            params=params,
            headers=headers,
            timeout=self.timeout_s,
            trust_env=False,
            verify=tls_context(),
        )

    def list(self, path: str) -> list[dict]:
        """The entries of a folder (raises for anything but 200)."""
        response = self._get("/v1/tree/list", path=path)
        response.raise_for_status()
        return response.json()["entries"]

    def stat(self, path: str) -> dict | None:
        response = self._get("/v1/tree/stat", path=path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def content(self, path: str, rev: int | None = None) -> bytes | None:
        """A file's bytes; None while the revision is pending or the file is missing."""
        params: dict[str, Any] = {"path": path} if rev is None else {"path": path, "rev": rev}
        response = self._get("/v1/files/content", **params)
        if response.status_code in (404, 409):
            return None
        response.raise_for_status()
        return response.content

    def history(self, path: str, limit: int = 1000) -> list[dict]:
        response = self._get("/v1/files/history", path=path, limit=limit)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return response.json()["revisions"]

    def walk(self, root: str) -> Iterator[tuple[str, dict]]:
        """(path relative to root, Node) for every node below root, parents first."""
        pending = [root]
        while pending:
            folder = pending.pop()
            for node in self.list(folder):
                yield os.path.relpath(node["path"], root), node
                if node["type"] == "dir":
                    pending.append(node["path"])

    def owners(self, root: str, default: tuple[int, int]) -> dict[str, tuple[int, int, int]]:
        """local_owners of the server's copy; `default`: a mount's owner for nodes with none."""
        owners = {}
        for rel, node in self.walk(root):
            uid = default[0] if node.get("uid") is None else node["uid"]
            gid = default[1] if node.get("gid") is None else node["gid"]
            owners[rel] = (uid, gid, None if node["type"] == "dir" else node.get("nlink", 1))
        return owners

    def snapshot(self, root: str, skip: Callable[[str], bool] = lambda _: False) -> Snapshot:
        """The server's copy of a folder in the local_snapshot format.

        A file whose newest revision is still pending reads as ("pending", rev); a hard link
        reads as the node it names (a symlink's or a FIFO's hard link is one too)."""
        snap: Snapshot = {}
        nodes = list(self.walk(root))
        by_id = {node["id"]: node for _, node in nodes}
        for rel, node in nodes:
            if skip(rel):
                continue
            if node["type"] == "hardlink" and node["link_id"] in by_id:
                node = {**by_id[node["link_id"]], "path": node["path"]}
            if node["type"] == "dir":
                snap[rel] = ("dir", node["mode"] & 0o7777)
            elif node["type"] == "symlink":
                snap[rel] = ("symlink", node["target"])
            elif node["type"] in SPECIAL_KINDS.values():
                snap[rel] = ("special", node["type"], node.get("rdev", 0))
            elif node["head_rev"] != node["rev"]:
                snap[rel] = ("pending", node["head_rev"])
            else:
                data = self.content(node["path"], node["rev"]) if node["rev"] else b""
                mode = node["mode"] & 0o7777
                snap[rel] = ("unreadable", node["rev"]) if data is None else ("file", mode, data)
        return snap


def wait_until(
    check: Callable[[], list[str]], timeout_s: float, interval_s: float = 0.2
) -> list[str]:
    """Call check() until it reports no problem or the time is up; returns the last problems."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            problems = check()
        except (httpx.HTTPError, OSError) as exc:
            problems = [f"check raised {exc!r}"]
        if not problems or time.monotonic() >= deadline:
            return problems
        time.sleep(interval_s)


def wait_server_matches(
    view: ServerView,
    server_root: str,
    expected: Snapshot,
    timeout_s: float,
    skip: Callable[[str], bool] = lambda _: False,
) -> list[str]:
    """Wait (bounded) until the server's folder equals the expected snapshot; the differences
    that remain at the deadline are returned, so the caller can assert on an empty list."""
    return wait_until(lambda: describe_diff(expected, view.snapshot(server_root, skip)), timeout_s)


def unsynced_files(root: Path) -> list[str]:
    """Files below root whose `user.cirrus.status` attribute does not say "synced" (symlinks
    and special files have no user.* attributes on Linux)."""
    problems = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not stat.S_ISREG(os.lstat(full).st_mode):
                continue
            status = os.getxattr(full, STATUS_XATTR).decode()
            if status != "synced":
                problems.append(f"{os.path.relpath(full, root)}: {status}")
    return problems


def env_int(name: str, default: int) -> int:
    """A size knob of a torture test, overridable from the environment for long runs."""
    return int(os.environ.get(name, default))


def report(line: str) -> None:
    """One line of what a torture test did, visible with -s and in failure output."""
    print(f"[torture] {line}", flush=True)
