"""The results table as a chart: people compare bars faster than numbers.

One panel per metric (each has its own unit), grouped by workload in the table's order, one
bar per target in the same colour everywhere; a missing figure leaves its bar out. matplotlib
is optional (the `bench` extra): without it the chart is skipped and the table still printed.
"""

import math
from pathlib import Path

from bench.results import Metric, Table

DEFAULT_CHART = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.png"
COLUMNS = 3
COLOURS = {"local": "#7f7f7f", "cirrus": "#1f77b4", "rclone": "#ff7f0e", "pyfuse3": "#2ca02c"}


def draw(table: Table, path: Path) -> str:
    """Save the chart of `table` at path; a line saying where, or why it was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
        from matplotlib import pyplot
    except ImportError:
        return "skipped (matplotlib is not installed: pip install -e '.[bench]')"
    rows = [row for row in table.metrics if any(_drawable(v) for v in row.values.values())]
    if not rows:
        return "skipped (no figures)"
    lines = math.ceil(len(rows) / COLUMNS)
    figure, axes = pyplot.subplots(
        lines, COLUMNS, figsize=(4.2 * COLUMNS, 3.0 * lines), squeeze=False
    )
    for ax, row in zip(axes.flat, rows, strict=False):
        _panel(ax, row, table.targets)
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    pyplot.close(figure)
    return str(path)


def _panel(ax: object, row: Metric, targets: list[str]) -> None:
    """One metric: a bar per target that has a figure, its value written above it."""
    names = [t for t in targets if _drawable(row.values.get(t))]
    values = [row.values[t] for t in names]
    bars = ax.bar(names, values, color=[COLOURS.get(t, "#9467bd") for t in names])
    ax.bar_label(bars, labels=[f"{v:,.3g}" for v in values], fontsize=7)
    better = "higher is better" if row.higher_better else "lower is better"
    ax.set_title(f"{row.workload}\n{row.name}", fontsize=8)
    ax.set_ylabel(f"{row.unit} ({better})", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.margins(y=0.15)


def _drawable(value: float | None) -> bool:
    return value is not None and not math.isnan(value)
