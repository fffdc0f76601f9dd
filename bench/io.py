"""Workload 1 (and the large-file half of 3): sequential write and cold read, random 4 KiB reads.

The write is timed by fio including its final fsync; then the harness waits until the backend
holds the file, which is when the drive is really in sync. The read comes after every cache on
the client side is emptied, so its bytes travel from the backend.
"""

from bench.context import Bench
from bench.fio import run_fio
from bench.procs import drop_kernel_caches
from bench.stats import median
from bench.targets import Target

WORKLOAD = "1 large files"


def run(bench: Bench) -> None:
    """Every target, `bench.runs` times each; one failing target does not stop the others."""
    for target in bench.targets:
        try:
            sequential(bench, target)
            random_reads(bench, target)
        except Exception as exc:
            bench.table.note(f"{target.name}: large-file workload failed: {exc}")


def sequential(bench: Bench, target: Target) -> None:
    """Write 1 GiB in 1 MiB blocks, wait for the upload, read it back cold."""
    size = bench.sizes.seq_bytes
    writes, lags, reads = [], [], []
    for i in range(bench.runs):
        path = target.root / f"seq-{i}.bin"
        writes.append(run_fio(path, "write", "1M", str(size), extra=["--end_fsync=1"]).bytes_per_s)
        lags.append(target.wait_synced({path.name: size}, bench.sizes.sync_timeout))
        target.cold()
        reads.append(run_fio(path, "read", "1M", str(size)).bytes_per_s)
        path.unlink()
    label = f"{size >> 20} MiB"
    table = bench.table
    table.record(
        WORKLOAD, f"seq write {label} (fio, end_fsync)", "MB/s", target.name, median(writes) / 1e6
    )
    table.record(
        "3 in sync",
        f"seq write {label}: backend has it after",
        "s",
        target.name,
        median(lags),
        higher_better=False,
    )
    table.record(
        WORKLOAD, f"seq read {label}, cold client cache", "MB/s", target.name, median(reads) / 1e6
    )


def random_reads(bench: Bench, target: Target) -> None:
    """4 KiB random reads with O_DIRECT over a file the client has cached on its disk.

    The kernel page cache is dropped before each run (and O_DIRECT bypasses it), so every read
    goes through the filesystem: this measures the per-request path, not the network.
    """
    size = bench.sizes.rand_bytes
    path = target.root / "rand.bin"
    run_fio(path, "write", "1M", str(size), extra=["--end_fsync=1"])
    target.wait_synced({path.name: size}, bench.sizes.sync_timeout)
    iops = []
    for _ in range(bench.runs):
        drop_kernel_caches()
        iops.append(
            run_fio(
                path,
                "randread",
                "4k",
                str(size),
                runtime=bench.sizes.rand_seconds,
                extra=["--direct=1"],
            ).iops
        )
    path.unlink()
    bench.table.record(
        WORKLOAD,
        f"random 4 KiB read over {size >> 20} MiB (O_DIRECT)",
        "IOPS",
        target.name,
        median(iops),
    )
