"""The report's content as blocks of tables, notes and examples (pure functions)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from unlearn.protocols import PROTOCOLS
from unlearn.report.runs import (
    DASH,
    EXAMPLE_SETS,
    HEADLINE,
    MAX_ANSWER_CHARS,
    METRICS,
    SETS,
    Run,
    fmt_short,
    shown_path,
)


def fmt_value(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.2e}"
    return f"{v:.4f}"


def sets_present(runs: list[Run]) -> list[str]:
    present = {s for r in runs for s in SETS if any(f"{s} {m}" in r.summary for m in METRICS)}
    return [s for s in SETS if s in present]


def downstream_keys(runs: list[Run]) -> list[str]:
    """``Downstream <task>`` keys (lm-eval scores) of any run, ``Downstream Average`` last."""
    keys = dict.fromkeys(k for r in runs for k in r.summary if k.startswith("Downstream "))
    return sorted(keys, key=lambda k: (k == "Downstream Average", k))


def table_rows(runs: list[Run]) -> list[dict]:
    """One flat row per run (the content of table.csv); numbers as floats, None when missing."""
    rows = []
    sets, extra = sets_present(runs), downstream_keys(runs)
    for r in runs:
        row = {
            "run": r.name,
            "path": shown_path(r.path),
            "method": r.method,
            "lr": r.lr,
            "split": r.split,
            "task": r.task,
        }
        row.update({k: r.value(k) for k in HEADLINE})
        row.update({f"{s} {m}": r.value(f"{s} {m}") for s in sets for m in METRICS})
        row.update({k: r.value(k) for k in extra})
        reasons = {k: r.reason(k) for k in row if r.reason(k) and row[k] is None}
        row["unavailable"] = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        rows.append(row)
    return rows


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Block:
    """One piece of the report. ``kind``: heading (``text``, ``level``), text, list (``items``),
    table (``table``) or image (``text`` = PNG file name, ``items[0]`` = alt text)."""

    kind: str
    text: str = ""
    level: int = 2
    items: list[str] = field(default_factory=list)
    table: Table | None = None


class Notes:
    """Numbered footnotes for "n/a" cells: one number per distinct (metric, reason)."""

    def __init__(self):
        self.numbers: dict[str, int] = {}

    def cell(self, run: Run, key: str) -> str:
        v = run.value(key)
        if v is not None:
            iv = run.intervals.get(key)
            text = fmt_value(v) + (f" ± {iv.half_width:.3f}" if iv is not None else "")
            partial = run.summary.get("partial")
            if isinstance(partial, dict) and key in partial:
                n = self.numbers.setdefault(f"{key}: computed from {partial[key]}", len(self.numbers) + 1)
                text += f"* [{n}]"
            return text
        if key not in run.summary:
            return DASH  # not computed for this run (e.g. Forget Quality without a retain model)
        reason = run.reason(key)
        if reason is None:
            return "n/a"
        metric = next((m for m in METRICS if key.endswith(" " + m)), key)
        note = f"{metric}: {reason}"
        n = self.numbers.setdefault(note, len(self.numbers) + 1)
        return f"n/a [{n}]"

    def items(self) -> list[str]:
        return [f"[{n}] {note}" for note, n in self.numbers.items()]


def _summary_table(runs: list[Run], notes: Notes) -> Table:
    extra = [k for k in ("Downstream Average",) if k in downstream_keys(runs)]
    header = ["run", "method", "lr", "split", "task", "MU", "MU Retain", "FE", "Forget Quality", *extra]
    rows = [[r.name, r.method, r.lr, r.split, r.task, *(notes.cell(r, k) for k in (*HEADLINE, *extra))] for r in runs]
    verdicts = [r.summary.get("verdict") if isinstance(r.summary.get("verdict"), dict) else {} for r in runs]
    if any(verdicts):  # what each run did, from its numbers and intervals (unlearn.evaluation.verdicts)
        header.append("verdict")
        for row, v in zip(rows, verdicts, strict=True):
            row.append(v.get("kind", DASH))
    return Table(header, rows)


def _protocol_table(runs: list[Run], protocol) -> Table:
    """Runs evaluated with a protocol that has its own table (``--benchmark tofu|muse|wmdp|rwku``): its
    metrics, each with half its 95% interval where ``intervals.json`` has one."""
    keys = protocol.table_keys([r.summary for r in runs])

    def cell(r: Run, k: str) -> str:
        if r.value(k) is None:
            return DASH
        iv = r.intervals.get(k)
        return fmt_value(r.value(k)) + (f" ± {iv.half_width:.3f}" if iv is not None else "")

    rows = [[r.name, r.method, r.lr, r.split, *(cell(r, k) for k in keys)] for r in runs]
    return Table(["run", "method", "lr", "split", *keys], rows)


SEED_KEYS = ("Model Utility", "Forget Efficacy", "Forget Quality", "Forget ROUGE", "Retain ROUGE")
_SEED = re.compile(r"(^|__|/)seed-(\d+)$")


def seed_groups(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs that differ only by their seed (``…__seed-1001`` in a sweep, ``OUT/seed-1001`` from
    ``unlearn run --seeds``), by the name they share; only groups of two or more."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        m = _SEED.search(r.name)
        if m:
            groups.setdefault(r.name[: m.start()] or "(runs)", []).append(r)
    return {k: v for k, v in groups.items() if len(v) > 1}


def _seed_table(runs: list[Run]) -> Table | None:
    """Each headline number over seeds: mean ± standard deviation, and the 95% t-interval of the mean (cut
    to [0, 1]: every one of :data:`SEED_KEYS` is a share or a p-value)."""
    groups = seed_groups(runs)
    if not groups:
        return None
    keys = [k for k in SEED_KEYS if any(r.value(k) is not None for g in groups.values() for r in g)]
    rows = []
    for name, group in groups.items():
        cells = []
        for k in keys:
            values = np.array([v for r in group if (v := r.value(k)) is not None], float)
            if values.size < 2:
                cells.append(DASH if values.size == 0 else f"{values[0]:.4f} (1 seed)")
                continue
            sd = float(values.std(ddof=1))
            half = float(stats.t.ppf(0.975, values.size - 1)) * sd / np.sqrt(values.size)
            mean = float(values.mean())
            lo, hi = max(mean - half, 0.0), min(mean + half, 1.0)  # each of SEED_KEYS lies in [0, 1]
            cells.append(f"{mean:.4f} ± {sd:.4f} [{lo:.4f}, {hi:.4f}]")
        rows.append([name, str(len(group)), *cells])
    return Table(["setting", "seeds", *keys], rows)


def _set_table(runs: list[Run], set_name: str, notes: Notes) -> Table:
    header = ["run", *METRICS]
    rows = [
        [r.name, *(notes.cell(r, f"{set_name} {m}") for m in METRICS)]
        for r in runs
        if any(f"{set_name} {m}" in r.summary for m in METRICS)
    ]
    return Table(header, rows)


def _curve_table(run: Run) -> Table:
    keys = [k for k in HEADLINE if any(row.get(k) is not None for row in run.curve or [])]
    header = ["tasks unlearned", "task", *keys]
    rows = [
        [fmt_short(row.get("n_unlearned")), str(row.get("task") or DASH), *(fmt_value(row.get(k)) for k in keys)]
        for row in run.curve or []
    ]
    return Table(header, rows)


def clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_ANSWER_CHARS else text[: MAX_ANSWER_CHARS - 1] + "…"


def _representative(source: Run, ranker: Run | None, set_name: str, n: int) -> list[tuple[str, str, dict]]:
    """``(caption, question, record)``: the lowest, median and highest ROUGE of ``ranker`` on the set,
    else the first ``n`` questions."""
    items = list(source.records(set_name).items())
    ranked = (
        sorted(
            (rec.get("rouge"), q, base)
            for q, base in items
            if (rec := ranker.records(set_name).get(q)) is not None and rec.get("rouge") is not None
        )
        if ranker is not None and n >= 3
        else []
    )
    if len(ranked) < 3:
        return [("", q, rec) for q, rec in items[:n]]
    picks = (("lowest", ranked[0]), ("median", ranked[len(ranked) // 2]), ("highest", ranked[-1]))
    return [(f" ({which} ROUGE, {v:.2f})", q, rec) for which, (v, q, rec) in picks]


def example_blocks(runs: list[Run], baseline: Run | None, n: int = 3) -> list[Block]:
    """Before/after on forget and retain questions, matched by question text: with a run to rank by, the
    questions where its ROUGE is lowest, median and highest (what the mean averages, and its spread),
    each captioned; else the first ``n``."""
    source = baseline or next((r for r in runs if r.records("Forget") or r.records("Retain")), None)
    blocks: list[Block] = []
    if source is None or n <= 0:
        return [Block("text", "No evaluation records (eval_<Set>.jsonl) were found.")]
    if baseline is None:
        blocks.append(Block("text", "No --baseline given: the answers of the model before unlearning are not shown."))
    ranker = next((r for r in runs if r is not baseline), None)
    if ranker is not None and n >= 3:
        blocks.append(
            Block("text", f"For each set, the questions where {ranker.name}'s ROUGE is lowest, median and highest: "
                  "the table's mean averages answers this different.")
        )  # fmt: skip
    for set_name in EXAMPLE_SETS:
        for i, (caption, question, rec) in enumerate(_representative(source, ranker, set_name, n), 1):
            rows = [["ground truth", clip(rec.get("ground_truth", rec.get("answer", DASH)))]]
            if baseline is not None:
                rows.append([baseline.name, clip(rec.get("generation", DASH))])
            for r in runs:
                other = r.records(set_name).get(question)
                label = (
                    f"{r.name} (after task {r.eval_dir.name[5:]})"
                    if r.is_continual and r.eval_dir is not None and r.eval_dir.name.startswith("task_")
                    else r.name
                )
                rows.append(
                    [
                        label,
                        DASH + " (not evaluated on this question)"
                        if other is None
                        else clip(other.get("generation", DASH)),
                    ]
                )
            blocks.append(Block("heading", f"{set_name} {i}{caption}: {clip(question)}", level=3))
            blocks.append(Block("table", table=Table(["model", "answer"], rows)))
    return blocks


def _versus_blocks(reference: Run, rows: list) -> list[Block]:
    """Each run against the reference on the same items: the difference, its interval, n.d. if not distinguishable."""

    def cell(d) -> str:
        if d is None:
            return DASH
        p = "" if d.p_value is None else f", p {d.p_value:.2g}"
        return f"{d.diff.value:+.3f} [{d.diff.lo:+.3f}, {d.diff.hi:+.3f}]{p}" + ("" if d.distinguishable else " n.d.")

    keys = ("Forget Efficacy", "Model Utility", "Forget ROUGE")
    table = Table(["run", "FE − ref", "MU − ref", "Forget ROUGE − ref"], [])
    for run, diffs in rows:
        table.rows.append([run.name, *(cell(diffs.get(k)) for k in keys)])
    text = (
        f"Each run minus the reference run, {reference.name} (FE {fmt_value(reference.summary.get('Forget Efficacy'))}"
        "; the highest Forget Efficacy unless --against names another), on the same items matched by question: "
        "the difference with its 95% bootstrap interval (MU and FE through their definitions), and for Forget "
        "ROUGE the paired permutation test's p-value. n.d. = not distinguishable: the interval covers 0 or p is "
        "0.05 or more."
    )
    return [Block("heading", "Against the reference run", level=3), Block("text", text), Block("table", table=table)]


def report_blocks(
    runs: list[Run],
    baseline: Run | None = None,
    title: str = "Unlearning report",
    images: dict[str, str] | None = None,
    examples: int = 3,
    paired=None,
) -> list[Block]:
    """The whole report as blocks; ``images`` maps ``tradeoff`` / ``continual`` to PNG file names;
    ``paired``: :func:`unlearn.report.compare.versus` of the runs (a section comparing them)."""
    images = images or {}
    notes = Notes()
    listed = ([baseline] if baseline else []) + runs
    blocks = [
        Block("heading", title, level=1),
        Block(
            "text",
            f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
            + (f", compared with the model before unlearning ({shown_path(baseline.path)})" if baseline else "")
            + ". MU = Model Utility, FE = Forget Efficacy (higher is better for both); "
            f"n/a = no value (see the notes), {DASH} = not computed for that run; ± half the 95% bootstrap "
            "interval over the evaluated items (intervals.json); * computed without some of its parts.",
        ),
        Block("heading", "Summary"),
    ]
    tabled = {name: p for name, p in PROTOCOLS.items() if p.table}
    other = {name: [r for r in listed if r.summary.get("benchmark") == name] for name in tabled}
    closer = [r for r in listed if r.summary.get("benchmark") not in tabled]
    if closer:
        blocks.append(Block("table", table=_summary_table(closer, notes)))
    for name, protocol in tabled.items():
        title = protocol.table[0]
        if other[name]:
            blocks += [Block("heading", title, level=3), Block("table", table=_protocol_table(other[name], protocol))]
    if paired is not None:
        blocks += _versus_blocks(*paired)
    across = _seed_table(runs)
    if across is not None:
        blocks += [
            Block("heading", "Across seeds", level=3),
            Block(
                "text",
                "Each setting run with several seeds: mean ± standard deviation over its seeds, and the "
                "95% t-interval of the mean [lo, hi], cut to [0, 1], the range of these metrics (with few "
                "seeds a t-interval is wide: with 3, its half-width is 2.48 standard deviations).",
            ),
            Block("table", table=across),
        ]
    blocks.append(Block("heading", "Metrics by evaluation set"))
    for s in sets_present(listed):
        blocks += [Block("heading", s, level=3), Block("table", table=_set_table(listed, s, notes))]
    if notes.numbers:
        blocks += [Block("text", "Notes:"), Block("list", items=notes.items())]
    blocks.append(Block("heading", "Model utility vs forget efficacy"))
    if "tradeoff" in images:
        blocks.append(Block("image", images["tradeoff"], items=["Model Utility against Forget Efficacy"]))
    if "tradeoff_real_world" in images:
        blocks.append(
            Block("image", images["tradeoff_real_world"], items=["Model Utility against Forget Efficacy (real world)"])
        )
    if "tradeoff" not in images and "tradeoff_real_world" not in images:
        blocks.append(Block("text", "No run has both Model Utility and Forget Efficacy."))
    continual = [r for r in runs if r.is_continual]
    if continual:
        blocks.append(Block("heading", "Continual unlearning"))
        if "continual" in images:
            blocks.append(Block("image", images["continual"], items=["MU and FE against tasks unlearned"]))
        for r in continual:
            blocks += [Block("heading", r.name, level=3), Block("table", table=_curve_table(r))]
    traced = [r for r in runs if r.trajectory]
    if traced:
        blocks.append(Block("heading", "While unlearning"))
        if "trajectory" in images:
            blocks.append(
                Block(
                    "image",
                    images["trajectory"],
                    items=["MU and FE against optimiser steps (x: collapse, star: the step kept)"],
                )
            )
        covered = [s for s in SETS if any(f"{s} ROUGE" in row for r in traced for row in r.trajectory)]
        if set(covered) != set(SETS):
            utility = [s for s in covered if not s.startswith("Forget")]
            said = (
                f"Model Utility there is over {', '.join(utility)} alone (the final evaluation's is over every "
                "utility set)"
                if utility
                else "no utility set, so no Model Utility there"
            )
            blocks.append(Block("text", f"Evaluated while unlearning: {', '.join(covered)}; {said}."))
        warnings = [
            f"{r.name}, step {row['step']}: {'; '.join(row['collapse'])}"
            for r in traced
            for row in r.trajectory
            if row.get("collapse")
        ]
        if warnings:
            blocks += [
                Block(
                    "text",
                    "Collapse: these evaluations fell below half of the starting Retain ROUGE or "
                    "Forget Token Entropy (the model stops answering or repeats itself):",
                ),
                Block("list", items=warnings[:20] + ([f"... {len(warnings) - 20} more"] if len(warnings) > 20 else [])),
            ]
    blocks.append(Block("heading", "Before / after"))
    blocks += example_blocks(runs, baseline, examples)
    return blocks
