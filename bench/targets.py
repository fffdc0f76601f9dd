"""Where a workload runs: a plain local directory (the limit) or an rclone mount.

A target offers a directory to work in, a way to make the next read cold, and a way to wait
until what was written has reached its backend (the moment the drive is "in sync"). The Cirrus
target lives in `bench.cirrus`.
"""

import shutil
import subprocess
from abc import ABC, abstractmethod
from pathlib import Path

from bench import procs

Manifest = dict[str, int]
"""Relative path under the target's root → the size in bytes it must reach on the backend."""


class Target(ABC):
    """One place to benchmark; `start` before use, `stop` always (it is idempotent)."""

    name: str

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch / self.name

    @property
    @abstractmethod
    def root(self) -> Path:
        """The directory workloads create their files in."""

    @abstractmethod
    def start(self) -> None:
        """Prepare fresh state (empty directories, processes, mounts)."""

    @abstractmethod
    def stop(self) -> None:
        """Unmount and stop everything `start` created; safe to call more than once."""

    def cold(self) -> None:
        """Make the next read cold: drop the kernel caches (subclasses also drop their own)."""
        procs.drop_kernel_caches()

    def wait_synced(self, manifest: Manifest, timeout: float) -> float:
        """Seconds until the backend holds every file of `manifest` (0 for a local directory)."""
        return 0.0

    def settle(self) -> None:
        """After a workload: leave no backlog that would slow the next one (nothing to do here)."""
        return None


class LocalTarget(Target):
    """A directory on the local disk: the upper bound every other target is compared with."""

    name = "local"

    @property
    def root(self) -> Path:
        return self.scratch / "dir"

    def start(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.root.mkdir(parents=True)

    def stop(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def holds(base: Path, manifest: Manifest) -> bool:
    """True when every file in `manifest` exists under `base` with (at least) its size."""
    for rel, size in manifest.items():
        try:
            if (base / rel).stat().st_size < size:
                return False
        except OSError:
            return False
    return True


class RcloneTarget(Target):
    """`rclone mount` of a local-directory remote with `--vfs-cache-mode full` (its defaults
    otherwise, so uploads start 5 s after close: rclone's `--vfs-write-back`)."""

    name = "rclone"

    def __init__(self, scratch: Path) -> None:
        super().__init__(scratch)
        self.proc: subprocess.Popen | None = None
        self.generation = 0

    @staticmethod
    def available() -> bool:
        """rclone on PATH; the target is skipped (with a note) otherwise."""
        return shutil.which("rclone") is not None

    @property
    def remote(self) -> Path:
        """The backend: a plain directory that rclone uploads into."""
        return self.scratch / "remote"

    @property
    def mountpoint(self) -> Path:
        return self.scratch / "mnt"

    @property
    def root(self) -> Path:
        return self.mountpoint

    def start(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        for path in (self.remote, self.mountpoint):
            path.mkdir(parents=True)
        (self.scratch / "rclone.conf").touch()
        self._mount()

    def _mount(self) -> None:
        self.generation += 1
        cache = self.scratch / f"cache-{self.generation}"
        cmd = [
            "rclone",
            "mount",
            str(self.remote),
            str(self.mountpoint),
            "--vfs-cache-mode",
            "full",
            "--cache-dir",
            str(cache),
            "--config",
            str(self.scratch / "rclone.conf"),
        ]
        self.proc = procs.start(cmd, self.scratch / "rclone.log")
        procs.wait_until(lambda: procs.listed_in_mounts(self.mountpoint), 30, what="rclone mount")

    def _unmount(self) -> None:
        procs.unmount(self.mountpoint)
        procs.stop(self.proc)
        self.proc = None

    def cold(self) -> None:
        """Remount with a new, empty VFS cache, then drop the kernel caches."""
        self._unmount()
        shutil.rmtree(self.scratch / f"cache-{self.generation}", ignore_errors=True)
        self._mount()
        super().cold()

    def wait_synced(self, manifest: Manifest, timeout: float) -> float:
        return procs.wait_until(
            lambda: holds(self.remote, manifest), timeout, 0.1, "rclone to upload"
        )

    def stop(self) -> None:
        self._unmount()
        shutil.rmtree(self.scratch, ignore_errors=True)
