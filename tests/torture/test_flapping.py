"""Offline flapping: the server is stopped (or killed) and started again every few seconds while
a workload runs on the mount. The workload applies each operation to the mount and then to a
local directory (the model); at the end the server holds exactly what the model holds
(conflicted copies aside), and no operation on the mount failed for lack of a server.

Sizes: CIRRUS_TORTURE_FLAP_SECONDS of workload (12 in CI, 300 with --runslow).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .drives import Drive
from .harness import env_int, is_conflicted_copy, local_snapshot, report, wait_server_matches

SYNC_TIMEOUT_S = 90.0
NAMES = ("a.txt", "b.bin", "c", "d.log")

# An operation: a label and a function of the root it applies to.
Op = tuple[str, Callable[[Path], object]]


def existing(model: Path) -> tuple[list[str], list[str]]:
    """(files, folders) of the model, as relative paths; folders include the root ""."""
    files, folders = [], [""]
    for dirpath, dirnames, filenames in os.walk(model):
        rel = os.path.relpath(dirpath, model)
        base = "" if rel == "." else rel
        folders += [os.path.join(base, d) for d in dirnames]
        files += [os.path.join(base, f) for f in filenames]
    return files, folders


def choose_op(rng: random.Random, model: Path) -> Op:
    """An operation that should succeed, picked from the model's current state."""
    files, folders = existing(model)
    fresh = os.path.join(rng.choice(folders), rng.choice(NAMES))
    data = rng.randbytes(rng.choice([0, 10, 4000, rng.randrange(400_000)]))
    empty_folders = [f for f in folders[1:] if not os.listdir(model / f)]
    mode = rng.choice([0o600, 0o644])
    options: list[Op] = []
    if not (model / fresh).is_dir():
        options.append((f"write {fresh}", lambda root: (root / fresh).write_bytes(data)))
    if not (model / fresh).exists() and fresh.count("/") < 2:
        options.append((f"mkdir {fresh}", lambda root: os.mkdir(root / fresh)))
    if files:
        old = rng.choice(files)
        options += [
            (f"append {old}", lambda root: append(root / old, data[:5000])),
            (f"truncate {old}", lambda root: os.truncate(root / old, len(data) // 3)),
            (f"unlink {old}", lambda root: os.unlink(root / old)),
            (f"chmod {old}", lambda root: os.chmod(root / old, mode)),
        ]
        if not (model / fresh).is_dir():
            options.append(
                (f"rename {old} {fresh}", lambda root: os.rename(root / old, root / fresh))
            )
    if empty_folders or not options:
        gone = rng.choice(empty_folders or folders[1:])
        options.append((f"rmdir {gone}", lambda root: os.rmdir(root / gone)))
    return rng.choice(options)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as out:
        out.write(data)


class Workload:
    """Applies random operations to the drive, then (when they succeed) to the model."""

    def __init__(self, real: Path, model: Path, seed: int) -> None:
        self.real, self.model = real, model
        self.rng = random.Random(seed)
        self.done = 0
        self.failed: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop_event.is_set():
            label, op = choose_op(self.rng, self.model)
            try:
                op(self.real)
            except OSError as exc:
                self.failed.append(f"{label}: {exc!r}")
                self.stop_event.wait(0.1)
                continue
            op(self.model)
            self.done += 1
            self.stop_event.wait(0.01)


def flap(drive: Drive, seconds: float, rng: random.Random) -> dict[str, int]:
    """Stop or kill the server and start it again every few seconds, for about `seconds`."""
    counts = {"stop": 0, "kill": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(1.0, 3.0))
        how = rng.choice(["stop", "kill"])
        drive.stop_server() if how == "stop" else drive.kill_server()
        counts[how] += 1
        time.sleep(rng.uniform(0.5, 2.5))
        drive.start_server()
    return counts


def run_flapping(drive: Drive, tmp_path: Path, seconds: float) -> None:
    if drive.view is None:
        pytest.skip("flapping needs a real server and mount")
    seed = env_int("CIRRUS_TORTURE_SEED", random.randrange(2**32))
    real, model = drive.root / "flap", tmp_path / "flap-model"
    real.mkdir()
    model.mkdir()
    workload = Workload(real, model, seed)
    workload.thread.start()
    try:
        counts = flap(drive, seconds, random.Random(seed + 1))
    finally:
        workload.stop_event.set()
        workload.thread.join(60)
    assert not workload.thread.is_alive(), "the workload is stuck in a file-system call"
    report(f"flapping seed={seed}: {workload.done} operations, server {counts}")
    problems = wait_server_matches(
        drive.view, "/flap", local_snapshot(model), SYNC_TIMEOUT_S, skip=is_conflicted_copy
    )
    assert not problems, "server differs from the model:\n" + "\n".join(problems)
    assert not workload.failed, f"{len(workload.failed)} operations failed: {workload.failed[:10]}"
    report(f"flapping: server equals the model ({len(local_snapshot(model))} entries)")


def test_flapping_short(drive: Drive, tmp_path: Path) -> None:
    run_flapping(drive, tmp_path, env_int("CIRRUS_TORTURE_FLAP_SECONDS", 12))


@pytest.mark.slow
def test_flapping_long(drive: Drive, tmp_path: Path) -> None:
    run_flapping(drive, tmp_path, env_int("CIRRUS_TORTURE_FLAP_SECONDS", 300))
