"""The before/after table of a run against its ``--baseline`` evaluation, and its short report."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from unlearn.report import write_report
from unlearn.rundir import RunDir


def before_after(summary: dict, out: RunDir, baseline: str) -> None:
    """Print the numbers of ``summary`` beside the baseline's, and write a report into ``OUT/report``."""
    before = RunDir(baseline).read_summary() or {}
    keys = [k for k, v in summary.items() if isinstance(v, (int, float)) and isinstance(before.get(k), (int, float))]
    table = Table(title="Before and after unlearning")
    for column in ("metric", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for k in keys:
        table.add_row(k, f"{before[k]:.4f}", f"{summary[k]:.4f}", f"{summary[k] - before[k]:+.4f}")
    Console(width=110).print(table)
    report = write_report([out.path], out.path / "report", baseline=baseline, title="Unlearning report")
    print(f"report: {report / 'report.md'}")
