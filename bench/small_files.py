"""Workload 2 (and the small-files half of 3): untar a real source tree, stat it, delete it.

Untar speed is files per second until `tar` returns; the harness then waits until the backend
holds every file. `stat` walks the tree with the kernel's dentry and inode caches dropped, so
every lookup reaches the filesystem; `rm -rf` deletes it all, and the harness waits until the
backend holds none of it before the next run (a deletion still replaying would otherwise be
counted in the next untar's time to sync).
"""

import os
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.context import Bench
from bench.procs import drop_kernel_caches
from bench.source_tree import fetch_tarball, manifest
from bench.stats import median, timed
from bench.targets import Target

WORKLOAD = "2 small files"


def run(bench: Bench) -> None:
    """Every target, `bench.runs` times each."""
    tar = fetch_tarball(bench.cache_dir)
    for target in bench.targets:
        try:
            measure(bench, target, tar)
        except Exception as exc:
            bench.table.note(f"{target.name}: small-files workload failed: {exc}")


def stat_tree(top: Path) -> int:
    """lstat every entry below `top` (what `find -ls` or a file manager does); the count."""
    count = 0
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lstat(os.path.join(folder, name))
            count += 1
    return count


def waited(bench: Bench, target: Target, wait: Callable[[float], float], what: str) -> float:
    """Seconds `wait(timeout)` took until the backend caught up; the timeout (with a note
    saying `what` was not done) if it never did."""
    limit = bench.sizes.small_sync_timeout
    try:
        return wait(limit)
    except TimeoutError:
        bench.table.note(f"{target.name}: {what} after {limit:.0f} s; the figure is that timeout")
        return limit


def measure(bench: Bench, target: Target, tar: Path) -> None:
    """untar → wait for sync → cold stat → rm -rf → wait for the deletion to reach the
    backend, repeated; medians into the table.

    A target slower than the time budget gets fewer runs (noted) so a full run stays short.
    """
    rates, lags, stats, removals, deletion_lags = [], [], [], [], []
    started = time.perf_counter()
    for i in range(bench.runs):
        if i and time.perf_counter() - started > bench.sizes.small_budget:
            bench.table.note(
                f"{target.name}: small files measured in {i} run(s), not "
                f"{bench.runs}: one run took over {bench.sizes.small_budget:.0f} s"
            )
            break
        dest = target.root / f"tree-{i}"
        dest.mkdir()
        files = manifest(tar, dest.name)
        with timed() as untar:
            subprocess.run(["tar", "-xf", str(tar), "-C", str(dest)], check=True)
        rates.append(len(files) / untar.seconds)
        lags.append(
            waited(bench, target, partial(target.wait_synced, files), "the tree was not in sync")
        )
        drop_kernel_caches()
        with timed() as walk:
            stat_tree(dest)
        stats.append(walk.seconds)
        with timed() as rm:
            subprocess.run(["rm", "-rf", str(dest)], check=True)
        removals.append(rm.seconds)
        # The next run starts once the deletion reached the backend: its own sync is measured.
        gone = partial(target.wait_removed, dest.name)
        deletion_lags.append(waited(bench, target, gone, "the deleted tree was still there"))
    target.settle()
    label = f"{len(files):,} files"
    table = bench.table
    table.record(WORKLOAD, f"untar {tar.name} ({label})", "files/s", target.name, median(rates))
    table.record(
        "3 in sync",
        "untar: backend has every file after",
        "s",
        target.name,
        median(lags),
        higher_better=False,
    )
    table.record(
        WORKLOAD,
        "stat every entry (os.walk + lstat, cold)",
        "s",
        target.name,
        median(stats),
        higher_better=False,
    )
    table.record(
        WORKLOAD, "rm -rf the tree", "s", target.name, median(removals), higher_better=False
    )
    table.record(
        "3 in sync",
        "rm -rf: backend has deleted the tree after",
        "s",
        target.name,
        median(deletion_lags),
        higher_better=False,
    )
