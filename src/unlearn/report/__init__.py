"""``unlearn report``: tables, plots and before/after examples from evaluated run folders.

A *run* is a folder holding ``summary.json`` (``unlearn run``, ``unlearn eval``, a sweep entry); a
*continual run* is a folder holding ``continual.csv`` (one row per task: ``task``, ``n_unlearned``,
then the summary keys), whose ``task_<k>`` folders become curves rather than table rows. The report
is ``report.md`` + ``report.html`` (same content; the HTML is self-contained apart from the PNGs it
names by relative path), ``table.csv`` and the plots ``tradeoff.png`` and ``continual.png``.

Everything is computed by pure functions (``collect_runs`` -> ``report_blocks`` -> ``render_*``);
only ``write_report`` and the ``plot_*`` functions touch the disk, and every write is atomic.
"""

from __future__ import annotations

from pathlib import Path

from unlearn import outputs
from unlearn.io import atomic_write_text, write_csv_rows
from unlearn.report.compare import versus
from unlearn.report.plots import plot_continual, plot_tradeoff, plot_trajectories, scenario_of
from unlearn.report.render import md_escape, render_html, render_markdown
from unlearn.report.runs import Run, collect_runs, load_run, short_labels
from unlearn.report.tables import report_blocks, table_rows

__all__ = [
    "Run",
    "collect_runs",
    "load_run",
    "md_escape",
    "plot_continual",
    "plot_tradeoff",
    "render_html",
    "render_markdown",
    "report_blocks",
    "short_labels",
    "table_rows",
    "write_report",
]


REPORT_FILES = [
    "report.md",
    "report.html",
    "table.csv",
    "tradeoff.png",
    "tradeoff_real_world.png",
    "continual.png",
    "trajectory.png",
]


def write_report(
    results: list[str | Path],
    out: str | Path,
    baseline: str | Path | None = None,
    title: str = "Unlearning report",
    examples: int = 3,
    against: str | None = None,
) -> Path:
    """``unlearn report``: read the runs, write report.md/html, table.csv and the plots into ``out``."""
    out = Path(out)
    # a report is remade from the runs: an earlier report of ours is replaced, a user's file refused
    outputs.claim(out, REPORT_FILES, keep=REPORT_FILES, what="a report")
    base = load_run(Path(baseline).resolve(), f"{Path(baseline).resolve().name} (baseline)") if baseline else None
    runs = collect_runs(results, exclude=[base.path] if base else [])
    paired = versus(runs, against)  # (before anything is written: an unknown --against is one line)
    images = {}
    # One scatter per scenario: TOFU and real-world metrics are not comparable.
    for bench, name in (("tofu", "tradeoff.png"), ("real_world", "tradeoff_real_world.png")):
        group = [r for r in runs if scenario_of(r) == bench]
        ref = base if base and scenario_of(base) == bench else None
        if group and plot_tradeoff(group, out / name, ref):
            images["tradeoff" if bench == "tofu" else "tradeoff_real_world"] = name
    if plot_continual(runs, out / "continual.png", base):
        images["continual"] = "continual.png"
    if plot_trajectories(runs, out / "trajectory.png"):
        images["trajectory"] = "trajectory.png"
    rows = table_rows(([base] if base else []) + runs)
    write_csv_rows(out / "table.csv", rows)
    blocks = report_blocks(runs, base, title, images, examples, paired)
    atomic_write_text(out / "report.md", render_markdown(blocks))
    atomic_write_text(out / "report.html", render_html(blocks, title))
    return out
