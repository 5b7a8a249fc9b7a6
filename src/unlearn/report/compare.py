"""``unlearn report --compare A B``: two evaluated runs side by side, paired over the same items."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from unlearn import outputs
from unlearn.errors import DataError
from unlearn.evaluation.compare import Difference, compare
from unlearn.evaluation.six_metrics import ITEM_KEYS, composites
from unlearn.io import atomic_write_json, atomic_write_text
from unlearn.report.render import md_escape
from unlearn.report.runs import SETS, load_run

KIND = {
    "Retain": "retain",
    "Real Authors": "general",
    "Real World": "general",
    "Forget": "forget",
    "Forget Paraphrased": "forget",
}


@dataclass
class _Set:  # what composites() reads of an evaluation set
    name: str
    kind: str


VERSUS = ("Forget Efficacy", "Model Utility", "Forget ROUGE")  # the differences of the report's column


def _pair(a, b) -> list[Difference]:
    names = [s for s in SETS if a.records(s) and b.records(s)]
    if not names:
        return []
    sets = [_Set(s, KIND[s]) for s in names]
    keep = set(VERSUS)  # (the Forget set's ROUGE is "Forget ROUGE")
    return compare(
        {s: a.records(s) for s in names},
        {s: b.records(s) for s in names},
        ITEM_KEYS,
        lambda means: composites(means, sets),
        keep=keep,
    )


def versus(runs: list, against: str | None = None):
    """Each run against one reference run on the same items (``against``: a run's name or folder; by
    default the run with the highest Forget Efficacy): ``(reference, [(run, {metric: Difference})])``,
    or None when fewer than two runs have per-item records."""
    scored = [r for r in runs if any(r.records(s) for s in SETS)]
    if len(scored) < 2:
        return None
    if against is not None:
        found = [r for r in scored if against in (r.name, str(r.path), r.path.name)]
        if not found:
            names = ", ".join(r.name for r in scored)
            raise DataError(f"--against {against}: not one of the evaluated runs of this report ({names})")
        reference = found[0]
    else:
        reference = max(scored, key=lambda r: r.summary.get("Forget Efficacy") or float("-inf"))
    rows = []
    for run in scored:
        if run is not reference:
            diffs = {d.key: d for d in _pair(reference, run)}
            rows.append((run, diffs))
    return reference, rows


def compare_runs(a_dir: str | Path, b_dir: str | Path, out: str | Path) -> list[Difference]:
    """Compare two evaluated run folders; print the table and write ``compare.md`` / ``compare.json``."""
    a, b = load_run(Path(a_dir)), load_run(Path(b_dir))
    names = [s for s in SETS if a.records(s) and b.records(s)]
    if not names:
        raise DataError(f"{a_dir} and {b_dir}: no evaluation set with per-item records (eval_<Set>.jsonl) in both")
    sets = [_Set(s, KIND[s]) for s in names]
    diffs = compare(
        {s: a.records(s) for s in names},
        {s: b.records(s) for s in names},
        ITEM_KEYS,
        lambda means: composites(means, sets),
    )
    if not diffs:
        raise DataError(f"{a_dir} and {b_dir}: no question answered by both runs")
    out = Path(out)
    names = ["compare.json", "compare.md"]
    outputs.claim(out, names, keep=names, what="a comparison")  # remade from the runs; a user's file refused
    atomic_write_json(
        out / "compare.json", {"a": str(a_dir), "b": str(b_dir), "differences": {d.key: d.as_dict() for d in diffs}}
    )
    lines = [
        f"# {md_escape(b.name)} against {md_escape(a.name)}",
        "",
        "B − A on the same items (matched by question): the mean difference with its 95% bootstrap interval, "
        "and the paired permutation test's p-value. A difference whose interval covers 0, or whose p is 0.05 "
        "or more, is not distinguishable.",
        "",
        "| metric | A | B | B − A | 95% interval | p | |",
        "|---|---|---|---|---|---|---|",
    ]
    table = Table(title=f"{b.name} − {a.name}, paired over the same items")
    for column in ("metric", "A", "B", "B − A", "95% interval", "p", ""):
        table.add_column(column, justify="left" if column in ("metric", "") else "right")
    for d in diffs:
        verdict = "" if d.distinguishable else "not distinguishable"
        p = "–" if d.p_value is None else f"{d.p_value:.3g}"
        cells = [
            d.key,
            f"{d.a:.4f}",
            f"{d.b:.4f}",
            f"{d.diff.value:+.4f}",
            f"[{d.diff.lo:+.4f}, {d.diff.hi:+.4f}]",
            p,
            verdict,
        ]
        table.add_row(*cells)
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    Console(width=max(Console().width, 110)).print(table)
    atomic_write_text(out / "compare.md", "\n".join(lines) + "\n")
    return diffs
