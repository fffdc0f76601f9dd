"""The slow-test switch: long runs only when asked for (`--runslow` or CIRRUS_RUNSLOW=1)."""

import os

import pytest


def runslow(config: pytest.Config) -> bool:
    """Whether long runs were asked for: `slow` tests run, and tests that scale with it take
    their long sizes."""
    return bool(config.getoption("--runslow", default=False) or os.environ.get("CIRRUS_RUNSLOW"))
