"""Child processes and mounts the harness starts, and the guarantees for tearing them down.

Every benchmark leaves the machine as it found it, even on a failure or Ctrl-C: processes are
stopped and FUSE mounts detached (a normal unmount first, a lazy one when something is busy).
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    check: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition"
) -> float:
    """Poll `check` until it holds; return the seconds waited, raise TimeoutError otherwise."""
    start = time.perf_counter()
    while True:
        if check():
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a child in its own session, output to `log`, so it can be signalled as a group."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )


def stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM the child's group, then SIGKILL it if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def is_mounted(path: Path) -> bool:
    """True when `path` is a mount point (any error, e.g. a dead FUSE daemon, counts as mounted)."""
    try:
        return os.path.ismount(path)
    except OSError:
        return True


def listed_in_mounts(path: Path) -> bool:
    """True when /proc/self/mounts lists `path`; works even when the FUSE daemon is gone."""
    target = str(path.resolve(strict=False))
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def unmount(path: Path, first: list[str] | None = None) -> None:
    """Detach a FUSE mount: the tool's own command, then fusermount3 -u, then -uz."""
    attempts = ([first] if first else []) + [
        ["fusermount3", "-u", str(path)],
        ["fusermount3", "-uz", str(path)],
    ]
    for cmd in attempts:
        if not listed_in_mounts(path):
            return
        with contextlib.suppress(subprocess.TimeoutExpired):  # a busy mount: try harder
            subprocess.run(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False
            )
        time.sleep(0.1)


def drop_kernel_caches() -> None:
    """Write back and drop the page, dentry and inode caches, so the next read is cold."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:  # not root, or a container without the knob
        raise RuntimeError(f"cannot drop kernel caches: {exc}") from exc
