"""A write workload that remembers every version it wrote, for the crash and conflict tests.

Each version of a file is a whole file whose bytes are fixed by (writer tag, file name, version
number): a header line naming it, then pseudo-random bytes. So any content found later on the
server can be identified as exactly one full version, or as none (a torn or mixed write).
A log (`logs`) grows instead: each version is the file as it was plus one more line, appended
with O_APPEND, so its versions are the prefixes that end at a line.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .harness import ServerView, is_conflicted_copy


def version_bytes(tag: str, name: str, number: int, size: int) -> bytes:
    header = f"{tag} {name} v{number}\n".encode()
    return header + random.Random(f"{tag}/{name}/{number}").randbytes(size)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class VersionedWriter:
    """Writes whole versions of a few files on a drive, in a thread, until told to stop.

    `written[name]` maps the digest of every version ever started to its number;
    `acked[name]` is the newest version whose close() (and fsync, when used) returned;
    `started[name]` the newest one whose O_TRUNC open was attempted."""

    root: Path
    tag: str
    names: list[str]
    max_size: int
    seed: int
    written: dict[str, dict[str, int]] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)
    acked_digests: dict[str, list[str]] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)  # names grown by appends, not rewritten
    failures: int = 0
    number: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.root_fd = -1

    def write_one(self) -> None:
        """Overwrite one file in place (O_TRUNC) with a new full version, sometimes fsynced.

        Files are opened relative to a descriptor of the mount's root taken at start(): after
        the mount is killed and lazily unmounted, writes fail (ENOTCONN) instead of landing
        in the bare directory under the mount point and counting as acknowledged."""
        name = self.rng.choice(self.names + self.logs)
        self.number += 1
        data = self._append_one(name) if name in self.logs else self._rewrite_one(name)
        self.acked[name] = self.number
        self.acked_digests.setdefault(name, []).append(digest(data))

    def _rewrite_one(self, name: str) -> bytes:
        size = self.rng.choice([0, 100, 5000, self.rng.randrange(self.max_size)])
        data = version_bytes(self.tag, name, self.number, size)
        self.written.setdefault(name, {})[digest(data)] = self.number
        self.started[name] = self.number
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = os.open(name, flags, 0o644, dir_fd=self.root_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.rng.random() < 0.3:
                os.fsync(fd)
        finally:
            os.close(fd)
        return data

    def _append_one(self, name: str) -> bytes:
        """Append a line to the log as the mount shows it now (after a crash, that is the
        acknowledged prefix), then fsync (mostly, like a logger) or only close."""
        line = f"{self.tag} {name} line {self.number}\n".encode()
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644, dir_fd=self.root_fd)
        try:
            data = os.pread(fd, os.fstat(fd).st_size, 0) + line
            self.written.setdefault(name, {})[digest(data)] = self.number
            assert os.write(fd, line) == len(line)
            if self.rng.random() < 0.7:
                os.fsync(fd)
        finally:
            os.close(fd)
        return data

    def run(self, pause_s: float) -> None:
        while not self.stop_event.is_set():
            try:
                self.write_one()
            except OSError:
                self.failures += 1  # the mount was killed under us: nothing acknowledged
                self.stop_event.wait(0.05)
            self.stop_event.wait(pause_s)

    def start(self, pause_s: float = 0.0) -> None:
        self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        self.stop_event.clear()
        self.thread = threading.Thread(target=self.run, args=(pause_s,), daemon=True)
        self.thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout_s)
            assert not self.thread.is_alive(), "the writer is stuck in a file-system call"
            self.thread = None
            os.close(self.root_fd)


def known_versions(writers: list[VersionedWriter], name: str) -> dict[str, str]:
    """digest -> 'tag vN' for every version of name any writer started, plus the empty file
    (an O_TRUNC open that was cut short leaves a complete, empty file — not a torn one)."""
    versions = {digest(b""): "empty"}
    for writer in writers:
        for key, number in writer.written.get(name, {}).items():
            versions[key] = f"{writer.tag} v{number}"
    return versions


def conflicted_copies(view: ServerView, folder: str, name: str) -> list[str]:
    """Server paths of the conflicted copies of folder/name."""
    stem = os.path.splitext(name)[0]
    return [
        node["path"]
        for node in view.list(folder)
        if is_conflicted_copy(node["name"]) and node["name"].startswith(stem + " (")
    ]


@dataclass
class RevisionAudit:
    """Downloads every uploaded revision of some paths once, and names each as a version."""

    view: ServerView
    seen: dict[tuple[str, int], str] = field(default_factory=dict)

    def audit(self, path: str, versions: dict[str, str]) -> list[str]:
        """Problems: revisions whose content is no full version (torn, mixed or foreign)."""
        problems = []
        for revision in self.view.history(path):
            key = (path, revision["rev"])
            if key in self.seen or revision["status"] != "uploaded":
                continue
            data = self.view.content(path, revision["rev"])
            if data is None:
                continue
            self.seen[key] = versions.get(digest(data), "")
            if not self.seen[key]:
                problems.append(f"{path} rev {revision['rev']}: {len(data)} bytes {data[:40]!r}")
        return problems

    def labels_of(self, path: str) -> set[str]:
        """The version labels of every revision of path audited so far."""
        return {label for (p, _), label in self.seen.items() if p == path}
