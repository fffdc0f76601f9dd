"""Where a workload runs: a plain local directory (the limit), an rclone mount, or a
pass-through pyfuse3 mount (the ceiling of the FUSE binding Cirrus uses).

A target offers a directory to work in, a way to make the next read cold, and a way to wait
until what was written has reached its backend (the moment the drive is "in sync"). The Cirrus
target lives in `bench.cirrus`.
"""

import shutil
import subprocess
import sys
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

    def wait_removed(self, folder: str, timeout: float) -> float:
        """Seconds until the backend no longer holds `folder` (0 for a local directory)."""
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


class MountTarget(Target):
    """A FUSE mount served by one child process over a backend directory."""

    def __init__(self, scratch: Path) -> None:
        super().__init__(scratch)
        self.proc: subprocess.Popen | None = None

    @property
    def remote(self) -> Path:
        """The backend: a plain directory the mount stores into."""
        return self.scratch / "remote"

    @property
    def mountpoint(self) -> Path:
        return self.scratch / "mnt"

    @property
    def root(self) -> Path:
        return self.mountpoint

    @abstractmethod
    def command(self) -> list[str]:
        """The command that mounts `remote` on `mountpoint` and serves it in the foreground."""

    def start(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        for path in (self.remote, self.mountpoint):
            path.mkdir(parents=True)
        self._mount()

    def _mount(self) -> None:
        self.proc = procs.start(self.command(), self.scratch / f"{self.name}.log")
        procs.wait_until(
            lambda: procs.listed_in_mounts(self.mountpoint), 30, what=f"the {self.name} mount"
        )

    def _unmount(self) -> None:
        procs.unmount(self.mountpoint)
        procs.stop(self.proc)
        self.proc = None

    def stop(self) -> None:
        self._unmount()
        shutil.rmtree(self.scratch, ignore_errors=True)


class RcloneTarget(MountTarget):
    """`rclone mount` of a local-directory remote with `--vfs-cache-mode full` (its defaults
    otherwise, so uploads start 5 s after close: rclone's `--vfs-write-back`)."""

    name = "rclone"

    def __init__(self, scratch: Path) -> None:
        super().__init__(scratch)
        self.generation = 0

    @staticmethod
    def available() -> bool:
        """rclone on PATH; the target is skipped (with a note) otherwise."""
        return shutil.which("rclone") is not None

    def command(self) -> list[str]:
        self.generation += 1
        config = self.scratch / "rclone.conf"
        config.touch()
        return [
            "rclone",
            "mount",
            str(self.remote),
            str(self.mountpoint),
            "--vfs-cache-mode",
            "full",
            "--cache-dir",
            str(self.scratch / f"cache-{self.generation}"),
            "--config",
            str(config),
        ]

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

    def wait_removed(self, folder: str, timeout: float) -> float:
        gone = self.remote / folder
        return procs.wait_until(lambda: not gone.exists(), timeout, 0.1, "rclone to delete")


class PassthroughTarget(MountTarget):
    """`bench.passthrough`: pyfuse3 and trio passing each request to a local directory, the
    ceiling of the binding the Cirrus mount is built on (its data is local: in sync at once)."""

    name = "pyfuse3"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.passthrough", str(self.remote), str(self.mountpoint)]
