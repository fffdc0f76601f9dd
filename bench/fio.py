"""Run one fio job and read its JSON summary: fio is the standard yardstick for block I/O."""

import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class FioResult:
    """The figures the harness reports from one fio job."""

    bytes_per_s: float
    iops: float
    seconds: float


def run_fio(
    filename: Path,
    rw: str,
    bs: str,
    size: str,
    *,
    runtime: float | None = None,
    extra: list[str] | None = None,
) -> FioResult:
    """One job, one thread, synchronous I/O (what an ordinary program does on a mount).

    `refill_buffers` makes every block random and a fresh `randseed` makes every run's data
    new (fio's default seed repeats it), so no dedup or compression flatters a write figure.
    """
    cmd = [
        "fio",
        "--name=bench",
        f"--filename={filename}",
        f"--rw={rw}",
        f"--bs={bs}",
        f"--size={size}",
        "--ioengine=psync",
        "--numjobs=1",
        "--refill_buffers",
        "--output-format=json",
        f"--randseed={secrets.randbits(63)}",
    ]
    if runtime is not None:
        cmd += [f"--runtime={runtime}", "--time_based"]
    cmd += extra or []
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"fio failed: {out.stderr.strip() or out.stdout[-500:]}")
    job = json.loads(out.stdout[out.stdout.index("{") :])["jobs"][0]
    side = job["write"] if "write" in rw else job["read"]
    return FioResult(side["bw_bytes"], side["iops"], job["job_runtime"] / 1000)
