"""pjdfstest, the POSIX conformance suite, against a real mount (--runslow, as root).

Built from its source in a temporary copy (bench/pjdfstest.py says where the source is found)
and run with `prove -r` in a fresh folder of a drive's mount made with `--allow-other` (the
suite acts as other users). Every test must pass (docs/client.md, "pjdfstest").
"""

import os
import shutil
from pathlib import Path

import pytest

from bench import pjdfstest
from tests.support.mount import MountProcess
from tests.support.server import ServerProcess

# The suite as pinned has 8,792 tests in 237 files; a few run more where Linux allows more.
EXPECTED_TESTS = 8792


@pytest.mark.slow
@pytest.mark.timeout(pjdfstest.BUILD_TIMEOUT_S + pjdfstest.RUN_TIMEOUT_S)
def test_pjdfstest_passes_on_a_mount(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    source = pjdfstest.source_dir()
    if source is None or os.geteuid() != 0 or shutil.which("autoreconf") is None:
        pytest.skip("needs root, autoconf/automake and the pjdfstest source")
    built = pjdfstest.build(source, tmp_path / "pjdfstest")
    with ServerProcess(tmp_path / "server") as server:
        token = server.create_user("posix")
        mount = MountProcess(
            server.url, token, tmp_path / "mnt", tmp_path / "cache", ("--allow-other",)
        )
        with mount as drive:
            result = pjdfstest.run_suite(built, drive.path / "pjdfstest")
            assert drive.errors_logged() == [], drive.log_tail()
        assert server.errors_logged() == []
    assert result.tests >= EXPECTED_TESTS
    assert result.failures == {} and result.passed == result.tests, result.failures
