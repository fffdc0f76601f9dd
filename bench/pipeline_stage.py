"""Workload 7: the write pipeline alone, as measured by `python -m bench.pipeline`.

That module prints its own table; the harness keeps its "whole pipeline" row (chunk, hash,
compress, encrypt, no disk, no network), which bounds what any Cirrus write can reach.
"""

import importlib.util
import subprocess
import sys

from bench.context import Bench

WORKLOAD = "7 pipeline"


def whole_pipeline(output: str) -> dict[str, float]:
    """Column name → MB/s of the "whole pipeline" row of bench.pipeline's table."""
    header: list[str] = []
    for line in output.splitlines():
        if line.startswith("MB/s"):
            words = line.split()[1:]
            header = [" ".join(words[i : i + 2]) for i in range(0, len(words), 2)]
        elif line.startswith("whole pipeline") and header:
            return dict(zip(header, map(float, line.split()[2:]), strict=False))
    return {}


def run(bench: Bench) -> None:
    """Run the pipeline benchmark (smaller with --quick) and record its figures."""
    if importlib.util.find_spec("bench.pipeline") is None:
        bench.table.note("pipeline: bench.pipeline is absent, row skipped")
        return
    size = "64" if bench.sizes.seq_bytes < (1 << 30) else "256"
    out = subprocess.run(
        [sys.executable, "-m", "bench.pipeline", "--size-mib", size],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    figures = whole_pipeline(out.stdout)
    if out.returncode != 0 or not figures:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        bench.table.note(f"pipeline: bench.pipeline failed: {last}")
        return
    for column, rate in figures.items():
        bench.table.record(
            WORKLOAD, f"chunk+hash+compress+encrypt, {column}", "MB/s", "cirrus", rate
        )
