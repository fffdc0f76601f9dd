"""The benchmark harness draws its table as a chart: one panel per row, a bar per target."""

import math
from pathlib import Path

import pytest

from bench.chart import draw
from bench.results import Table

pytest.importorskip("matplotlib")


def test_the_table_is_drawn_as_a_png_with_a_panel_per_row(tmp_path: Path) -> None:
    table = Table(targets=["local", "cirrus", "rclone", "pyfuse3"])
    table.record("1 large files", "seq write", "MB/s", "local", 1289.0)
    table.record("1 large files", "seq write", "MB/s", "cirrus", 457.9)
    table.record("2 small files", "rm -rf", "s", "cirrus", 5.1, higher_better=False)
    table.record("2 small files", "rm -rf", "s", "rclone", math.nan, higher_better=False)
    chart = tmp_path / "out" / "chart.png"
    assert draw(table, chart) == str(chart)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    small = tmp_path / "one.png"
    table.metrics.pop()
    draw(table, small)
    assert small.stat().st_size < chart.stat().st_size  # one panel, not two


def test_a_table_without_figures_draws_nothing(tmp_path: Path) -> None:
    table = Table(targets=["local"])
    table.record("9 small appends", "lines/s", "lines/s", "local", math.nan)
    assert draw(table, tmp_path / "none.png").startswith("skipped")
    assert not (tmp_path / "none.png").exists()
