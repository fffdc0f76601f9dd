"""Sequential write, targets interleaved: a comparison that machine drift cannot skew.

Run by hand from the repository root, as root:

    python -m bench.interleaved [--rounds 3] [--targets cirrus,pyfuse3] [--size-mib 1024]

`python -m bench large` measures one target after another, so a machine that slows down
halfway (a shared VM's neighbours, the host's writeback) favours whichever went first. Here
every target stays mounted throughout and each round writes one file per target with the
same fio job as `bench large` (1 MiB writes, `end_fsync`, random content), the order
alternating between rounds; each line gives the rate and how long after fio returned the
target's backend held the file.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.__main__ import TARGETS
from bench.fio import run_fio
from bench.stats import median
from bench.targets import Target

MIB = 1024 * 1024


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.interleaved", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", default="cirrus,pyfuse3", help=", ".join(TARGETS))
    parser.add_argument("--size-mib", type=int, default=1024, help="per file")
    args = parser.parse_args(argv)
    unknown = set(args.targets.split(",")) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.rounds < 1 or args.size_mib < 1:
        parser.error("--rounds and --size-mib take positive numbers")
    return args


def write_round(target: Target, number: int, size_mib: int) -> tuple[float, float]:
    """MB/s of one fio write, and seconds until the backend held the file."""
    name = f"interleaved-{number}.bin"
    result = run_fio(target.root / name, "write", "1M", f"{size_mib}M", extra=["--end_fsync=1"])
    lag = target.wait_synced({name: size_mib * MIB}, 300)
    (target.root / name).unlink()
    return result.bytes_per_s / 1e6, lag


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    scratch = Path(tempfile.mkdtemp(prefix="cirrus-bench-", dir="/var/tmp"))
    targets = [TARGETS[name](scratch) for name in args.targets.split(",")]
    rates: dict[str, list[float]] = {target.name: [] for target in targets}
    try:
        for target in targets:
            target.start()
        for number in range(args.rounds):
            for target in targets if number % 2 == 0 else reversed(targets):
                rate, lag = write_round(target, number, args.size_mib)
                rates[target.name].append(rate)
                print(f"round {number} {target.name}: {rate:,.0f} MB/s, held {lag:.2f} s after")
                time.sleep(2)  # let the last upload's tail settle
    finally:
        for target in reversed(targets):
            target.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    for name, figures in rates.items():
        print(f"{name}: median {median(figures):,.0f} MB/s")


if __name__ == "__main__":
    main()
