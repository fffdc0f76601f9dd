"""Workload: pjdfstest, the POSIX conformance suite, on each target (run as root).

pjdfstest (github pjd/pjdfstest, BSD licence) is built from its source in a temporary copy
(`autoreconf -ifs && ./configure && make pjdfstest`: autoconf, automake and gcc) and run with
`prove -r` in a fresh folder of each target (of a fresh mount for Cirrus), as a user runs it;
the table gets the tests passed and the run time. The suite makes paths of PATH_MAX-1 bytes
below where it runs, which a drive holds (its paths may be 8,192 bytes from its root).
Its source is the nearest `shared/third_party/pjdfstest` above the repository, or the folder
named by CIRRUS_PJDFSTEST_SOURCE. The Cirrus mount is mounted with `--allow-other`: the
suite acts as other users, whom FUSE keeps out of a mount without it.
"""

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.cirrus import CirrusTarget
from bench.context import Bench

WORKLOAD = "7 POSIX conformance (pjdfstest)"
SOURCE_ENV = "CIRRUS_PJDFSTEST_SOURCE"
BUILD_TIMEOUT_S = 600
RUN_TIMEOUT_S = 3600
_FILE_RESULT = re.compile(r"^\S*?tests/(\S+\.t)\s+\(Wstat: \d+ Tests: (\d+) Failed: (\d+)\)")
_TOTAL = re.compile(r"^Files=\d+, Tests=(\d+)", re.MULTILINE)
_PLANNED = re.compile(r"You planned (\d+) tests but ran (\d+)")


@dataclass
class Result:
    """One run: tests run, tests failed (a file that died early counts what it skipped) and,
    per failing file, prove's lines about it."""

    tests: int
    failed: int
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return self.tests - self.failed


def source_dir() -> Path | None:
    """Where the pjdfstest source is, if anywhere."""
    if os.environ.get(SOURCE_ENV):
        return Path(os.environ[SOURCE_ENV])
    for folder in Path(__file__).resolve().parents[1:]:
        candidate = folder / "shared" / "third_party" / "pjdfstest"
        if (candidate / "configure.ac").exists():
            return candidate
    return None


def build(source: Path, workdir: Path) -> Path:
    """Build pjdfstest in a copy of `source` at `workdir` (the source stays untouched)."""
    shutil.copytree(source, workdir, ignore=shutil.ignore_patterns(".git"))
    for step in (["autoreconf", "-ifs"], ["./configure"], ["make", "pjdfstest"]):
        done = subprocess.run(
            step, cwd=workdir, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
        )
        if done.returncode != 0:
            raise RuntimeError(f"pjdfstest build: {' '.join(step)} failed:\n{done.stderr[-2000:]}")
    return workdir


def run_suite(built: Path, folder: Path, timeout: float = RUN_TIMEOUT_S) -> Result:
    """`prove -r` of every test file inside `folder`, parsed."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done = subprocess.run(
        ["prove", "-r", str(built / "tests")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = parse(done.stdout + done.stderr)
    result.seconds = time.monotonic() - started
    return result


def parse(output: str) -> Result:
    """prove's summary: the total, and the failed tests of each file that had some."""
    total = _TOTAL.search(output)
    if total is None:
        raise RuntimeError(f"prove gave no summary:\n{output[-2000:]}")
    result = Result(int(total.group(1)), 0)
    current = None
    for line in output.splitlines():
        found = _FILE_RESULT.match(line)
        if found:
            current = found.group(1)
            result.failures[current] = ""
            result.failed += int(found.group(3))
        elif current is not None and line.startswith(" "):
            result.failures[current] += line.strip() + " "
            planned = _PLANNED.search(line)
            if planned:
                skipped = int(planned.group(1)) - int(planned.group(2))
                result.failed += skipped
                result.tests += skipped
        else:
            current = None
    result.failures = {name: text for name, text in result.failures.items() if "Failed" in text
                       or "planned" in text}  # fmt: skip
    return result


def run(bench: Bench) -> None:
    """Build once, run on the local directory and on a Cirrus mount (with --allow-other)."""
    source = source_dir()
    if source is None or os.geteuid() != 0 or shutil.which("autoreconf") is None:
        bench.table.note("pjdfstest: needs root, autoconf and its source; skipped")
        return
    built = build(source, bench.scratch / "pjdfstest-build")
    try:
        for target in bench.targets:
            if target.name not in ("local", "cirrus"):
                continue
            _run_on(bench, target, built)
    finally:
        shutil.rmtree(built, ignore_errors=True)


def _run_on(bench: Bench, target, built: Path) -> None:
    mount = None
    try:
        folder = target.root / "pjdfstest"
        if isinstance(target, CirrusTarget):
            mount = target.new_mount(target.scratch / "mnt-pjdfstest", ("--allow-other",))
            folder = mount.mountpoint / "pjdfstest"
        result = run_suite(built, folder)
    except Exception as exc:
        bench.table.note(f"{target.name}: pjdfstest failed to run: {exc!r}")
        return
    finally:
        if mount is not None:
            target.drop_mount(mount)
    bench.table.record(WORKLOAD, f"tests passed of {result.tests}", "tests", target.name,
                       result.passed)  # fmt: skip
    bench.table.record(WORKLOAD, "run time", "s", target.name, result.seconds, False)
    for name, text in sorted(result.failures.items()):
        bench.table.note(f"{target.name}: pjdfstest {name}: {text.strip()}")
