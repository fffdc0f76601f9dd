"""Two mounts of one drive write the same files at the same time. Conflicts must never lose
data: every version whose close() returned survives on the server, as a revision of the file or
of one of its conflicted copies; no revision is a torn or mixed write; and once both mounts are
quiet they converge on the same content.

Sizes: CIRRUS_TORTURE_TWO_MOUNT_SECONDS of concurrent writing (5 in CI, 120 with --runslow).
"""

from __future__ import annotations

import random
import time

import pytest

from .drives import Drive
from .harness import env_int, report, wait_until
from .workload import RevisionAudit, VersionedWriter, conflicted_copies, digest, known_versions

NAMES = ["shared0.txt", "shared1.txt", "shared2"]
SYNC_TIMEOUT_S = 90.0


def lost_versions(
    first: Drive, writers: list[VersionedWriter], audit: RevisionAudit
) -> tuple[list[str], list[str]]:
    """(acknowledged versions found nowhere on the server, revisions that are no full version).

    A mount may coalesce its own successive writes (a version it replaced itself before
    uploading it is not lost), so what must survive is the last version each mount wrote of
    each file: as a revision of the file, or of one of its conflicted copies."""
    assert first.view is not None
    lost, torn = [], []
    for name in NAMES:
        versions = known_versions(writers, name)
        paths = ["/" + name, *conflicted_copies(first.view, "/", name)]
        for path in paths:
            torn += audit.audit(path, versions)
        found = set().union(*(audit.labels_of(path) for path in paths))
        for writer in writers:
            last = writer.acked_digests.get(name, [])[-1:]
            lost += [
                f"{name}: {versions[key]} ({len(found)} versions seen)"
                for key in last
                if versions[key] not in found
            ]
    return lost, torn


def divergence(drives: list[Drive]) -> list[str]:
    """Files whose content differs between the server and the mounts."""
    assert drives[0].view is not None
    problems = []
    for name in NAMES:
        server = drives[0].view.content("/" + name)
        seen = [server, *((drive.root / name).read_bytes() for drive in drives)]
        if len({None if data is None else digest(data) for data in seen}) != 1:
            sizes = [None if data is None else len(data) for data in seen]
            problems.append(f"{name}: server/mount sizes {sizes} differ")
    return problems


def run_two_mounts(pair: tuple[Drive, Drive], seconds: float) -> None:
    first, second = pair
    if first.view is None:
        pytest.skip("two mounts need a real server")
    seed = env_int("CIRRUS_TORTURE_SEED", random.randrange(2**32))
    writers = [
        VersionedWriter(drive.root, tag, NAMES, 1 << 20, seed + index)
        for index, (drive, tag) in enumerate(((first, "A"), (second, "B")))
    ]
    for writer in writers:
        writer.start(pause_s=0.02)
    try:
        time.sleep(seconds)
    finally:
        for writer in writers:
            writer.stop()
    acked = sum(len(v) for writer in writers for v in writer.acked_digests.values())
    report(
        f"two mounts seed={seed}: {acked} versions acknowledged, failures "
        f"{[w.failures for w in writers]}"
    )
    assert all(writer.failures == 0 for writer in writers), "writes failed on a live mount"
    audit = RevisionAudit(first.view)
    outcome: dict[str, list[str]] = {}

    def check() -> list[str]:
        outcome["lost"], outcome["torn"] = lost_versions(first, writers, audit)
        return outcome["lost"]

    assert not wait_until(check, SYNC_TIMEOUT_S, interval_s=1.0), f"lost: {outcome['lost']}"
    assert not outcome["torn"], f"torn revisions: {outcome['torn']}"
    problems = wait_until(lambda: divergence([first, second]), SYNC_TIMEOUT_S)
    assert not problems, problems
    copies = sum(len(conflicted_copies(first.view, "/", name)) for name in NAMES)
    report(
        f"two mounts: {len(audit.seen)} revisions verified, {copies} conflicted copies, "
        f"each mount's last version survives, mounts converged"
    )


def test_two_mounts_short(drive_pair: tuple[Drive, Drive]) -> None:
    run_two_mounts(drive_pair, env_int("CIRRUS_TORTURE_TWO_MOUNT_SECONDS", 5))


@pytest.mark.slow
def test_two_mounts_long(drive_pair: tuple[Drive, Drive]) -> None:
    run_two_mounts(drive_pair, env_int("CIRRUS_TORTURE_TWO_MOUNT_SECONDS", 120))
