"""kill -9 loops: the mount and the server are SIGKILLed at random moments while files are
being written. After each restart, every file whose close() returned must be intact on the
server once the mount has caught up, and no revision that can be downloaded may be a torn or
mixed write: each must be one of the versions the workload wrote in full.

Sizes: CIRRUS_TORTURE_KILL_CYCLES cycles (a few in CI, 100 with --runslow).
"""

from __future__ import annotations

import random
import time
from functools import partial

import pytest

from .drives import Drive
from .harness import env_int, report, wait_until
from .workload import RevisionAudit, VersionedWriter, conflicted_copies, digest, known_versions

NAMES = [f"file{i}.bin" for i in range(4)]
LOGS = ["app.log"]  # grown line by line: appends after an acknowledgement, cut by a crash
SYNC_TIMEOUT_S = 90.0
VICTIMS = ("mount", "server", "both")


def current_problems(drive: Drive, writer: VersionedWriter) -> list[str]:
    """Files whose server or mount copy is not acceptable (see `acceptable`)."""
    assert drive.view is not None
    problems = []
    for name, acked in writer.acked.items():
        for where, data in (
            ("server", drive.view.content("/" + name)),
            ("mount", (drive.root / name).read_bytes()),
        ):
            if not acceptable(writer, name, data):
                shown = "nothing" if data is None else f"{len(data)} bytes {data[:30]!r}"
                problems.append(f"{where} /{name}: acknowledged v{acked}, shows {shown}")
    return problems


def acceptable(writer: VersionedWriter, name: str, data: bytes | None) -> bool:
    """The newest acknowledged version or a later full one; or the empty file when a later
    version's truncating open had begun (the truncation itself may have been acknowledged).
    A log is never truncated: only its acknowledged lines or more will do."""
    if data is None:
        return False
    if data == b"" and name not in writer.logs:
        return writer.started.get(name, 0) > writer.acked[name]
    return writer.written[name].get(digest(data), -1) >= writer.acked[name]


def torn_revisions(drive: Drive, writer: VersionedWriter, audit: RevisionAudit) -> list[str]:
    """Every downloadable revision of every file and conflicted copy must be a full version."""
    assert drive.view is not None
    problems = []
    for name in NAMES + LOGS:
        versions = known_versions([writer], name)
        for path in ["/" + name, *conflicted_copies(drive.view, "/", name)]:
            problems += audit.audit(path, versions)
    return problems


def settled(drive: Drive, writer: VersionedWriter, audit: RevisionAudit, where: str) -> list[str]:
    """Fails at once on a torn revision (that never heals); else lists what is not yet right."""
    torn = torn_revisions(drive, writer, audit)
    assert not torn, f"{where}: torn revisions on the server: {torn}"
    return current_problems(drive, writer)


def kill(drive: Drive, victim: str) -> None:
    if victim in ("mount", "both"):
        drive.kill_mount()
    if victim in ("server", "both"):
        drive.kill_server()


def restart(drive: Drive, victim: str) -> None:
    if victim in ("server", "both"):
        drive.start_server()
    if victim in ("mount", "both"):
        drive.start_mount()


def run_kill_cycles(drive: Drive, cycles: int, max_size: int) -> None:
    if drive.view is None:
        pytest.skip("kill -9 cycles need a real server and mount")
    seed = env_int("CIRRUS_TORTURE_SEED", random.randrange(2**32))
    rng = random.Random(seed)
    writer = VersionedWriter(drive.root, "kill9", NAMES, max_size, seed, logs=LOGS)
    audit = RevisionAudit(drive.view)
    kills = {victim: 0 for victim in VICTIMS}
    for cycle in range(1, cycles + 1):
        writer.start()
        time.sleep(rng.uniform(0.05, 1.0))
        victim = rng.choice(VICTIMS)
        kill(drive, victim)
        kills[victim] += 1
        time.sleep(rng.uniform(0.0, 0.3))  # the writer meets a dead mount or an absent server
        writer.stop()
        restart(drive, victim)
        where = f"cycle {cycle} (killed {victim}, seed {seed})"
        problems = wait_until(partial(settled, drive, writer, audit, where), SYNC_TIMEOUT_S)
        assert not problems, f"{where}: {problems}"
        report(
            f"kill9 cycle {cycle}: killed {victim}; {writer.number} versions started, "
            f"{sum(len(v) for v in writer.acked_digests.values())} acknowledged, "
            f"{writer.failures} failed writes, {len(audit.seen)} revisions verified"
        )
    report(f"kill9 seed={seed}: {cycles} cycles, kills {kills}, all acknowledged files intact")


def test_kill9_short(drive: Drive) -> None:
    run_kill_cycles(drive, env_int("CIRRUS_TORTURE_KILL_CYCLES", 3), 2 << 20)


@pytest.mark.slow
def test_kill9_long(drive: Drive) -> None:
    run_kill_cycles(drive, env_int("CIRRUS_TORTURE_KILL_CYCLES", 100), 4 << 20)
