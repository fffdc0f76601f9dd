"""`python -m bench [all|WORKLOAD ...] [--quick]`: run workloads on every target, print one table.

Targets: a local directory (the limit), a Cirrus mount (server and mount started here, on
127.0.0.1, with fresh directories) and an rclone mount (skipped when rclone is absent).
"""

import argparse
import importlib
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.chart import DEFAULT_CHART, draw
from bench.cirrus import CirrusTarget
from bench.context import Bench, Sizes
from bench.results import Table
from bench.targets import LocalTarget, PassthroughTarget, RcloneTarget, Target

WORKLOADS: dict[str, str] = {
    "large": "bench.io",
    "small": "bench.small_files",
    "delta": "bench.delta",
    "latency": "bench.latency",
    "longpoll": "bench.longpoll",
    "pipeline": "bench.pipeline_stage",
    "repeat": "bench.repetitive",
    "appends": "bench.appends",
    "posix": "bench.pjdfstest",
}
TARGETS: dict[str, Callable[[Path], Target]] = {
    "local": LocalTarget,
    "cirrus": CirrusTarget,
    "rclone": RcloneTarget,
    "pyfuse3": PassthroughTarget,
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "workloads",
        nargs="*",
        default=["all"],
        choices=["all", *WORKLOADS],
        metavar="WORKLOAD",
        help=f"all (default) or any of: {', '.join(WORKLOADS)}",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    parser.add_argument("--runs", type=int, help="runs per workload (default 3, 1 with --quick)")
    parser.add_argument(
        "--targets",
        default="local,cirrus,rclone,pyfuse3",
        help="comma-separated subset of local,cirrus,rclone,pyfuse3 (a pass-through pyfuse3 "
        "mount: what the FUSE binding alone reaches)",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        help="where targets keep their files "
        "(default: a new temporary directory, on disk, not tmpfs)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "cirrus-bench",
        help="where the downloaded source tarball is kept between runs",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    parser.add_argument(
        "--chart",
        type=Path,
        help=f"draw the table as bars, one panel per metric, into this image (default: "
        f"{DEFAULT_CHART.name} beside docs/benchmarks.md, except with --quick); needs the "
        "`bench` extra (matplotlib)",
    )
    return parser.parse_args(argv)


def make_targets(names: list[str], scratch: Path, table: Table) -> list[Target]:
    """Instantiate the requested targets, noting the ones this machine cannot run."""
    chosen = []
    for name in names:
        if name == "rclone" and not RcloneTarget.available():
            table.note("rclone: not installed, column skipped")
            continue
        chosen.append(TARGETS[name](scratch))
    return chosen


def raise_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so `finally` blocks unmount and stop children."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str]) -> int:
    args = parse(argv)
    raise_on_sigterm()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    names = list(WORKLOADS) if "all" in args.workloads else args.workloads
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="cirrus-bench-", dir="/var/tmp"))
    scratch.mkdir(parents=True, exist_ok=True)
    owned_scratch = args.scratch is None
    table = Table(targets=[n for n in args.targets.split(",") if n])
    targets = make_targets(table.targets, scratch, table)
    table.targets = [t.name for t in targets]
    bench = Bench(
        table,
        [],
        Sizes.quick() if args.quick else Sizes(),
        args.runs or (1 if args.quick else 3),
        scratch,
        args.cache,
    )
    try:
        for target in targets:
            try:
                target.start()
                bench.targets.append(target)
            except Exception as exc:
                table.note(f"{target.name}: could not start ({exc}); column empty")
                target.stop()
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            importlib.import_module(WORKLOADS[name]).run(bench)
            print(table.render_text() + "\n", file=sys.stderr, flush=True)  # partial results
    finally:
        for target in reversed(bench.targets):
            target.stop()
        if owned_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print("\n" + table.render_text())
    if args.markdown:
        args.markdown.write_text(table.render_markdown() + "\n")
    chart = args.chart or (None if args.quick else DEFAULT_CHART)
    if chart is not None:
        print(f"chart: {draw(table, chart)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
