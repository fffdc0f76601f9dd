"""Model-based test: one random sequence of file operations runs on the drive and on a plain
local directory, and every result must agree — return values, the exact errno of each failing
call, listings, sizes, modes, owners, link counts and contents. The operations include hard
links, chown and special files (mknod); fallocate is not among them: the mount does not offer
it (pyfuse3 has no handler for it). Remounts happen in the middle of the sequence; at the
end of each sequence the server must hold exactly what the local directory holds, and so must
a second mount of the same drive (with a cache of its own), through the long poll.

Sizes: CIRRUS_TORTURE_MODEL_EXAMPLES sequences of CIRRUS_TORTURE_MODEL_STEPS steps each
(the slow variant runs about 100,000 operations).
"""

from __future__ import annotations

import itertools
import os
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    precondition,
    rule,
)

from .drives import Drive
from .harness import (
    attempt,
    describe_diff,
    env_int,
    local_owners,
    local_snapshot,
    owner_diff,
    report,
    unsynced_files,
    wait_server_matches,
    wait_until,
)

NAMES = ("a", "b", "c")
# Every path of depth 1 to 3 over three names: small enough that operations collide often
# (renames over existing files and folders, ENOTDIR, ENOTEMPTY, EISDIR ...).
LEVELS = [["/".join(p) for p in itertools.product(NAMES, repeat=depth)] for depth in (1, 2, 3)]
# Each depth equally likely, so that shallow paths (which exist more often) dominate.
paths = st.one_of(*(st.sampled_from(level) for level in LEVELS))
folders = st.one_of(st.just(""), st.sampled_from(LEVELS[0]), st.sampled_from(LEVELS[1]))
sizes = st.one_of(st.integers(0, 64), st.integers(0, 5000), st.integers(0, 300_000))
offsets = st.one_of(st.integers(0, 100), st.integers(0, 8192), st.integers(0, 400_000))
modes = st.sampled_from([0o600, 0o644, 0o755, 0o700, 0o444, 0o400])
# No "..": a link must never lead out of the sequence's own folder.
link_targets = st.sampled_from(["a", "b/c", "missing", "c/a/b"])
OPEN_FLAGS = [
    os.O_RDWR | os.O_CREAT,
    os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    os.O_RDWR | os.O_CREAT | os.O_EXCL,
    os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    os.O_RDWR,
    os.O_RDONLY,
]
owners = st.sampled_from([(0, 0), (65534, 65534), (1000, 100)])
# Special files live at names the other rules never reach (see DriveVersusModel.mknod).
SPECIAL_NAMES = {"p": (stat.S_IFIFO, 0), "n": (stat.S_IFCHR, os.makedev(1, 3))}
MAX_HANDLES = 4
SYNC_TIMEOUT_S = 60.0


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def lstat_summary(path: Path) -> tuple:
    """What must agree between drive and model: type, permission bits, owner, device; size
    and link count (not for folders, where both are file-system specific)."""
    st_ = os.lstat(path)
    folder = stat.S_ISDIR(st_.st_mode)
    size, nlink = (None, None) if folder else (st_.st_size, st_.st_nlink)
    kind, mode = stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode)
    return (kind, mode, size, nlink, st_.st_uid, st_.st_gid, st_.st_rdev)


@dataclass(eq=False)
class Handle:
    """One file open on both sides at once."""

    rel: str
    flags: int
    real_fd: int
    model_fd: int


@dataclass
class Counters:
    examples: int = 0
    operations: int = 0
    errors: int = 0
    remounts: int = 0
    server_checks: int = 0
    witness_checks: int = 0


class DriveVersusModel(RuleBasedStateMachine):
    """Applies each rule to the drive and to the model and insists on identical outcomes."""

    drive: Drive
    witness: Drive | None = None  # a second mount of the drive: sees every sequence by sync
    model_base: Path
    counters: Counters
    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        number = self.counters.examples
        self.counters.examples += 1
        self.name = f"model{number}"
        self.real = self.drive.root / self.name
        self.model = self.model_base / self.name
        self.real.mkdir()
        self.model.mkdir()
        self.open: list[Handle] = []

    def both(self, op: Callable[[Path], Any]) -> Any:
        """Run op on the drive and on the model; the outcomes (or errno names) must match."""
        got = attempt(lambda: op(self.real))
        want = attempt(lambda: op(self.model))
        self.counters.operations += 1
        self.counters.errors += want[0] == "err"
        assert got == want, f"drive gave {got!r}, the local model {want!r}"
        return want

    def both_fd(self, handle: Handle, op: Callable[[int], Any]) -> Any:
        got = attempt(lambda: op(handle.real_fd))
        want = attempt(lambda: op(handle.model_fd))
        self.counters.operations += 1
        self.counters.errors += want[0] == "err"
        assert got == want, f"{handle.rel}: drive gave {got!r}, the local model {want!r}"
        return want

    @initialize()
    def start(self) -> None:
        for rel in ("a", "a/b"):
            self.both(lambda root, rel=rel: os.mkdir(root / rel))

    # --- whole-file and namespace operations -------------------------------------------------

    @rule(rel=paths, seed=st.integers(0, 2**32), size=sizes)
    def write_file(self, rel: str, seed: int, size: int) -> None:
        self.both(lambda root: (root / rel).write_bytes(payload(seed, size)))

    @rule(rel=paths)
    def read_file(self, rel: str) -> None:
        self.both(lambda root: (root / rel).read_bytes())

    @rule(rel=paths, size=offsets)
    def truncate(self, rel: str, size: int) -> None:
        self.both(lambda root: os.truncate(root / rel, size))

    @rule(rel=paths)
    def mkdir(self, rel: str) -> None:
        self.both(lambda root: os.mkdir(root / rel))

    @rule(rel=paths)
    def makedirs(self, rel: str) -> None:
        self.both(lambda root: os.makedirs(root / rel, exist_ok=True))

    @rule(rel=paths)
    def rmdir(self, rel: str) -> None:
        self.both(lambda root: os.rmdir(root / rel))

    @rule(rel=paths)
    def unlink(self, rel: str) -> None:
        self.both(lambda root: os.unlink(root / rel))

    @rule(src=paths, dst=paths)
    def rename(self, src: str, dst: str) -> None:
        self.both(lambda root: os.rename(root / src, root / dst))

    @rule(rel=folders)
    def listdir(self, rel: str) -> None:
        self.both(lambda root: sorted(os.listdir(root / rel)))

    @rule(rel=paths)
    def lstat(self, rel: str) -> None:
        self.both(lambda root: lstat_summary(root / rel))

    @rule(rel=paths, mode=modes)
    def chmod(self, rel: str, mode: int) -> None:
        self.both(lambda root: os.chmod(root / rel, mode))

    @rule(rel=paths, link=link_targets, roll=st.integers(0, 2))
    def symlink(self, rel: str, link: str, roll: int) -> None:
        """Rarer than other rules: a symlink inside a path turns most later calls into ELOOP
        or ENOTDIR."""
        if roll == 0:
            self.both(lambda root: os.symlink(link, root / rel))

    @rule(rel=paths)
    def readlink(self, rel: str) -> None:
        self.both(lambda root: os.readlink(root / rel))

    @rule(src=paths, dst=paths)
    def link(self, src: str, dst: str) -> None:
        self.both(lambda root: os.link(root / src, root / dst, follow_symlinks=False))

    @rule(rel=paths, owner=owners)
    def chown(self, rel: str, owner: tuple[int, int]) -> None:
        self.both(lambda root: os.lchown(root / rel, *owner))

    @rule(folder=folders, name=st.sampled_from(sorted(SPECIAL_NAMES)), owner=owners)
    def mknod(self, folder: str, name: str, owner: tuple[int, int]) -> None:
        """FIFOs and devices, at names no rule opens (opening a FIFO would wait for a
        writer); folders holding them still move, and refuse rmdir."""
        kind, rdev = SPECIAL_NAMES[name]
        self.both(lambda root: os.mknod(root / folder / name, 0o640 | kind, rdev))
        self.both(lambda root: os.lchown(root / folder / name, *owner))
        self.both(lambda root: lstat_summary(root / folder / name))

    # --- open files -----------------------------------------------------------------------

    def open_both(self, rel: str, flags: int) -> Handle | None:
        """Open rel on both sides; both must succeed or fail with the same errno."""
        real = attempt(lambda: os.open(self.real / rel, flags, 0o644))
        model = attempt(lambda: os.open(self.model / rel, flags, 0o644))
        self.counters.operations += 1
        self.counters.errors += model[0] == "err"
        if (real[0], model[0]) != ("ok", "ok"):
            for outcome in (real, model):
                if outcome[0] == "ok":
                    os.close(outcome[1])
            assert real == model, f"open {rel} {flags:#o}: drive gave {real!r}, model {model!r}"
            return None
        handle = Handle(rel, flags, real[1], model[1])
        self.open.append(handle)
        return handle

    @precondition(lambda self: len(self.open) < MAX_HANDLES)
    @rule(target=handles, rel=paths, flags=st.sampled_from(OPEN_FLAGS))
    def open_file(self, rel: str, flags: int) -> Handle | None:
        return self.open_both(rel, flags)

    def live(self, handle: Handle | None) -> bool:
        return handle is not None and handle in self.open

    @rule(handle=handles, offset=offsets, seed=st.integers(0, 2**32), size=sizes)
    def pwrite(self, handle: Handle | None, offset: int, seed: int, size: int) -> None:
        if self.live(handle):
            data = payload(seed, size)
            self.both_fd(handle, lambda fd: os.pwrite(fd, data, offset))

    @rule(handle=handles, offset=offsets, size=sizes)
    def pread(self, handle: Handle | None, offset: int, size: int) -> None:
        if self.live(handle):
            self.both_fd(handle, lambda fd: os.pread(fd, size, offset))

    @rule(handle=handles, size=offsets)
    def ftruncate(self, handle: Handle | None, size: int) -> None:
        if self.live(handle):
            self.both_fd(handle, lambda fd: os.ftruncate(fd, size))

    @rule(handle=handles)
    def fstat_size(self, handle: Handle | None) -> None:
        if self.live(handle):
            self.both_fd(handle, lambda fd: os.fstat(fd).st_size)

    @rule(handle=handles)
    def fsync(self, handle: Handle | None) -> None:
        if self.live(handle):
            self.both_fd(handle, os.fsync)

    @rule(handle=consumes(handles))
    def close(self, handle: Handle | None) -> None:
        if self.live(handle):
            self.open.remove(handle)
            self.both_fd(handle, os.close)

    @rule(handle=handles)
    def close_reopen(self, handle: Handle | None) -> None:
        """Close and open the same path again: close-to-open must show what was written."""
        if not self.live(handle):
            return
        self.open.remove(handle)
        self.both_fd(handle, os.close)
        reopened = self.open_both(handle.rel, os.O_RDWR)
        if reopened is not None:
            self.both_fd(reopened, lambda fd: os.pread(fd, 1 << 20, 0))
            self.open.remove(reopened)
            self.both_fd(reopened, os.close)

    # --- whole-tree checks and restarts ----------------------------------------------------

    def close_all(self) -> None:
        while self.open:
            self.both_fd(self.open.pop(), os.close)

    @rule()
    def compare_trees(self) -> None:
        problems = describe_diff(local_snapshot(self.model), local_snapshot(self.real))
        assert not problems, "drive differs from the model:\n" + "\n".join(problems)
        owners = local_owners(self.model)
        assert local_owners(self.real) == owners, "owners or link counts differ"

    @rule(roll=st.integers(0, 3))
    def remount(self, roll: int) -> None:
        """Unmounts and mounts again with the same cache directory (one time in four, so
        about one step in a hundred)."""
        if roll:
            return
        self.close_all()
        self.drive.remount()
        self.counters.remounts += 1
        self.compare_trees()

    def teardown(self) -> None:
        self.close_all()
        self.compare_trees()
        expected = local_snapshot(self.model)
        if self.drive.view is not None:
            pending = wait_until(lambda: unsynced_files(self.real), SYNC_TIMEOUT_S)
            assert not pending, f"files never reported synced: {pending}"
            problems = wait_server_matches(
                self.drive.view, "/" + self.name, expected, SYNC_TIMEOUT_S
            )
            self.counters.server_checks += 1
            assert not problems, "server differs from the model:\n" + "\n".join(problems)
            # Waited for like the tree: a node replaced by one of the same name and type
            # (a FIFO made again by another owner) matches the tree while its replay is due.
            default = (os.getuid(), os.getgid())
            view, wanted = self.drive.view, local_owners(self.model)
            owners = wait_until(
                lambda: owner_diff(view.owners("/" + self.name, default), wanted),
                SYNC_TIMEOUT_S,
            )
            assert not owners, "the server's owners differ: " + "; ".join(owners)
        if self.witness is not None:
            seen = self.witness.root / self.name
            problems = wait_until(
                lambda: (
                    describe_diff(expected, local_snapshot(seen))
                    or owner_diff(local_owners(seen), local_owners(self.model))
                ),
                SYNC_TIMEOUT_S,
            )
            self.counters.witness_checks += 1
            assert not problems, "the second mount differs from the model:\n" + "\n".join(problems)


def run_model(drives: tuple[Drive, Drive], tmp_path: Path, examples: int, steps: int) -> Counters:
    """Run the state machine on the first drive, the second (when they are two mounts of
    one drive) as its witness; returns what was done, for the report."""
    counters = Counters()
    drive, second = drives
    witness = second if drive.view is not None else None
    machine = type(
        "Machine",
        (DriveVersusModel,),
        {"drive": drive, "witness": witness, "model_base": tmp_path, "counters": counters},
    )
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("CIRRUS_TORTURE_SHRINK"):
        phases.append(Phase.shrink)
    config = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
        # Every step of every sequence printed as it runs: a failure hypothesis cannot replay
        # (a race) still shows the steps that led to it.
        verbosity=Verbosity.debug if os.environ.get("CIRRUS_TORTURE_STEPS") else Verbosity.normal,
    )
    from hypothesis.stateful import run_state_machine_as_test

    try:
        run_state_machine_as_test(machine, settings=config)
    finally:
        report(
            f"model: {counters.examples} sequences, {counters.operations} operations "
            f"({counters.errors} expected errors), {counters.remounts} remounts, "
            f"{counters.server_checks} server comparisons, "
            f"{counters.witness_checks} second-mount comparisons"
        )
    return counters


def test_model_short(drive_pair: tuple[Drive, Drive], tmp_path: Path) -> None:
    """A few thousand operations: the CI version."""
    examples = env_int("CIRRUS_TORTURE_MODEL_EXAMPLES", 20)
    steps = env_int("CIRRUS_TORTURE_MODEL_STEPS", 80)
    counters = run_model(drive_pair, tmp_path, examples, steps)
    assert counters.operations >= examples * 20
    assert counters.witness_checks in (0, counters.examples)


@pytest.mark.slow
def test_model_long(drive_pair: tuple[Drive, Drive], tmp_path: Path) -> None:
    """About 100,000 operations, by hand (--runslow)."""
    run_model(drive_pair, tmp_path, env_int("CIRRUS_TORTURE_MODEL_EXAMPLES", 750), 200)
