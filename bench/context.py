"""What every workload receives: the started targets, the sizes for this run, the table."""

from dataclasses import dataclass
from pathlib import Path

from bench.results import Table
from bench.targets import Target

MiB = 1 << 20


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; `--quick` shrinks them so a smoke test takes a minute or two."""

    seq_bytes: int = 1024 * MiB
    rand_bytes: int = 256 * MiB
    rand_seconds: float = 10.0
    delta_bytes: int = 200 * MiB
    copy_bytes: int = 256 * MiB
    latency_samples: int = 100
    long_polls: int = 10_000
    sync_timeout: float = 600.0
    small_sync_timeout: float = 300.0
    small_budget: float = 240.0
    repeat_bytes: int = 1024 * MiB
    append_lines: int = 10_000

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(
            seq_bytes=64 * MiB,
            rand_bytes=32 * MiB,
            rand_seconds=3.0,
            delta_bytes=32 * MiB,
            copy_bytes=32 * MiB,
            latency_samples=20,
            long_polls=1000,
            sync_timeout=120.0,
            repeat_bytes=64 * MiB,
            append_lines=500,
        )


@dataclass
class Bench:
    """The state shared by all workloads in one harness run."""

    table: Table
    targets: list[Target]
    sizes: Sizes
    runs: int
    scratch: Path
    cache_dir: Path

    def target(self, name: str) -> Target | None:
        """The started target called `name`, if it is part of this run."""
        return next((t for t in self.targets if t.name == name), None)
