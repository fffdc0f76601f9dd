"""The one table the harness prints: a row per metric, a column per target, ratios to local."""

import math
from dataclasses import dataclass, field

LOCAL = "local"


@dataclass
class Metric:
    """One measured quantity; `higher_better` only decides the wording of the ratio column."""

    workload: str
    name: str
    unit: str
    higher_better: bool = True
    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class Table:
    """Collects metrics in the order they were first measured."""

    targets: list[str]
    metrics: list[Metric] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def metric(self, workload: str, name: str, unit: str, higher_better: bool = True) -> Metric:
        """Return the row for (workload, name), creating it on first use."""
        for row in self.metrics:
            if (row.workload, row.name) == (workload, name):
                return row
        row = Metric(workload, name, unit, higher_better)
        self.metrics.append(row)
        return row

    def record(
        self,
        workload: str,
        name: str,
        unit: str,
        target: str,
        value: float,
        higher_better: bool = True,
    ) -> None:
        """Store one target's figure for a metric."""
        self.metric(workload, name, unit, higher_better).values[target] = value
        if target not in self.targets:  # a Cirrus-only row still gets its column
            self.targets.append(target)

    def note(self, text: str) -> None:
        """Add a line printed under the table (skips, failures, caveats)."""
        if text not in self.notes:
            self.notes.append(text)

    def rows(self) -> list[list[str]]:
        """Header plus one row per metric: value and ratio to local for every non-local target."""
        header = ["workload", "metric", "unit"]
        for target in self.targets:
            header.append(target)
            if target != LOCAL:
                header.append(f"{target}/local")
        out = [header]
        for row in self.metrics:
            cells = [row.workload, row.name, row.unit]
            base = row.values.get(LOCAL)
            for target in self.targets:
                value = row.values.get(target)
                cells.append(fmt(value))
                if target != LOCAL:
                    cells.append(ratio(value, base))
            out.append(cells)
        return out

    def render_text(self) -> str:
        """Fixed-width table for the terminal."""
        rows = self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(
                c.ljust(w) if i < 3 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def render_markdown(self) -> str:
        """The same table as Markdown, for docs/benchmarks.md."""
        rows = self.rows()
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        lines.insert(1, "|" + "|".join("---" for _ in rows[0]) + "|")
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes])


def fmt(value: float | None) -> str:
    """Three significant figures, grouped thousands; a dash for a missing figure."""
    if value is None:
        return "—"
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def ratio(value: float | None, base: float | None) -> str:
    """value / local, or a dash when either is missing or local is zero."""
    if value is None or base is None or base == 0 or math.isnan(value) or math.isnan(base):
        return "—"
    return f"{value / base:.2f}x"
