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

import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from .io import atomic_write_bytes, atomic_write_text, read_csv_rows, write_csv_rows

# The evaluation's vocabulary (evals.suites), repeated here so a report never imports torch.
SETS = ("Retain", "Real Authors", "Real World", "Forget", "Forget Paraphrased")
METRICS = ("ROUGE", "Probability", "Truth Ratio", "Token Entropy", "Cosine Similarity", "Entailment Score")
HEADLINE = ("Model Utility", "Model Utility Retain", "Forget Efficacy", "Forget Quality")
EXAMPLE_SETS = ("Forget", "Retain")
MAX_ANSWER_CHARS = 400
DASH = "–"


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One evaluated folder. ``curve`` (continual runs only) has one row per task, in order."""

    name: str
    path: Path
    summary: dict
    config: dict = field(default_factory=dict)
    data_info: dict = field(default_factory=dict)
    curve: list[dict] | None = None
    eval_dir: Path | None = None  # where the eval_<Set>.jsonl files are (continual: the last task)
    _records: dict = field(default_factory=dict, repr=False)

    @property
    def is_continual(self) -> bool:
        return self.curve is not None

    def value(self, key: str) -> float | None:
        return as_number(self.summary.get(key))

    def reason(self, key: str) -> str | None:
        """Why ``key`` has no value, from the summary's ``unavailable`` map (by key or by metric)."""
        unavailable = self.summary.get("unavailable")
        if not isinstance(unavailable, dict):
            return None
        if key in unavailable:
            return str(unavailable[key])
        for metric in METRICS:
            if key.endswith(" " + metric) and metric in unavailable:
                return str(unavailable[metric])
        return None

    @property
    def method(self) -> str:
        # Only an unlearning run's config.yaml names a method; an evaluated model has none.
        return str(self.config.get("method") or DASH) if self.config.get("_kind") == "run" else DASH

    @property
    def lr(self) -> str:
        return fmt_short(self.config.get("lr")) if self.config.get("_kind") == "run" else DASH

    @property
    def split(self) -> str:
        layout = self.data_info.get("layout")
        if layout == "real_world":
            return "real world"
        if layout == "files" or self.config.get("forget"):
            return "own files"
        return str(self.config.get("split") or DASH)

    @property
    def task(self) -> str:
        if self.curve:
            tasks = [r.get("task") for r in self.curve if r.get("task") not in (None, "")]
            if tasks:
                return f"{tasks[0]}{DASH}{tasks[-1]} (continual)"
        if self.split == "own files":
            return DASH
        task = self.config.get("task_id")
        return DASH if task is None else str(task)

    def records(self, set_name: str) -> dict[str, dict]:
        """Per-item evaluation records of a set, by question text (empty when not evaluated)."""
        if set_name not in self._records:
            path = self.eval_dir / f"eval_{set_name.replace(' ', '_')}.jsonl" if self.eval_dir else None
            rows = read_jsonl(path) if path else []
            self._records[set_name] = {r["question"]: r for r in rows if isinstance(r.get("question"), str)}
        return self._records[set_name]


def as_number(v) -> float | None:
    """A finite float, or None (null, missing, NaN, text that is not a number)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return None
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def fmt_short(v) -> str:
    """``1e-05``, ``3``: a learning rate or a count in its shortest form."""
    n = as_number(v)
    return DASH if n is None else f"{n:g}"


def read_jsonl(path: Path) -> list[dict]:
    """Objects of a JSON-lines file; unreadable lines are skipped (a report never fails on them)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


def _read_mapping(path: Path, parse) -> dict:
    try:
        obj = parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _read_config(folder: Path) -> dict:
    """config.yaml of an unlearning run, else eval_config.yaml of an evaluated model."""
    for name, kind in (("config.yaml", "run"), ("eval_config.yaml", "eval")):
        cfg = _read_mapping(folder / name, yaml.safe_load)
        if cfg:
            return {**cfg, "_kind": kind}
    return {}


def _task_dirs(folder: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_dir() and (m := re.fullmatch(r"task_(\d+)", p.name))]
    return [p for _, p in sorted(found)]


def _curve(folder: Path) -> list[dict]:
    rows = []
    for row in read_csv_rows(folder / "continual.csv"):
        parsed = {k: (as_number(v) if k != "task" else v) for k, v in row.items() if k}
        rows.append(parsed)
    return sorted(rows, key=lambda r: (r.get("n_unlearned") is None, r.get("n_unlearned") or 0))


def load_run(folder: str | Path, name: str | None = None) -> "Run":
    """A run (or continual run) folder as a :class:`Run`."""
    from .data import DataError

    folder = Path(folder)
    summary_path = folder / "summary.json"
    if (folder / "continual.csv").is_file():
        curve = _curve(folder)
        tasks = [t for t in _task_dirs(folder) if (t / "summary.json").is_file()]
        # The last task unlearned is the curve's last row (tasks may run in any order).
        last_row = folder / f"task_{curve[-1].get('task')}" if curve else None
        last = last_row if last_row in tasks else (tasks[-1] if tasks else None)
        if summary_path.is_file():
            summary = _read_mapping(summary_path, json.loads)
        elif last is not None:
            summary = _read_mapping(last / "summary.json", json.loads)
        else:
            summary = {k: v for k, v in (curve[-1] if curve else {}).items() if k not in ("task", "n_unlearned")}
        config = _read_config(folder) or (_read_config(tasks[0]) if tasks else {})
        info = _read_mapping(folder / "data.json", json.loads) or (
            _read_mapping(tasks[0] / "data.json", json.loads) if tasks else {})
        return Run(name or folder.name, folder, summary, config, info, curve=curve,
                   eval_dir=last if last is not None else folder)
    if not summary_path.is_file():
        raise DataError(f"{folder}: no summary.json (evaluate the model first: unlearn eval)")
    return Run(name or folder.name, folder, _read_mapping(summary_path, json.loads), _read_config(folder),
               _read_mapping(folder / "data.json", json.loads), eval_dir=folder)


def _inside(path: Path, parents: Iterable[Path]) -> bool:
    return any(p == path or p in path.parents for p in parents)


def collect_runs(paths: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> list[Run]:
    """Every run folder under ``paths`` (recursive), sorted by path; continual runs once each.

    Names are paths relative to the common parent of the run folders (``a``, ``sweep/lr=1e-05``).
    """
    from .data import DataError

    found: set[Path] = set()
    continual: set[Path] = set()
    for p in paths:
        root = Path(p)
        if not root.is_dir():
            raise DataError(f"{root}: result folder not found")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            here = Path(dirpath).resolve()
            if "continual.csv" in filenames:
                continual.add(here)
            elif "summary.json" in filenames:
                found.add(here)
    skip = {Path(e).resolve() for e in exclude}
    folders = sorted(continual | {f for f in found if not _inside(f, continual)})
    folders = [f for f in folders if f not in skip]
    if not folders:
        raise DataError(f"no evaluated runs (summary.json or continual.csv) under {', '.join(map(str, paths))}")
    parent = Path(os.path.commonpath([str(f.parent) for f in folders]))
    return [load_run(f, f.relative_to(parent).as_posix()) for f in folders]


def short_labels(names: list[str]) -> list[str]:
    """Plot labels: names without the parts (split at ``/`` and ``,``) that carry no information.

    Dropped: a part every name has, and a ``key=value`` part whose key has that one value in every
    name that has the key (``split=forget01`` in a sweep over methods).
    """
    tokens = [re.split(r"([/,])", n) for n in names]
    parts = [t[::2] for t in tokens]
    values: dict[str, set[str]] = {}
    for p in parts:
        for x in p:
            if "=" in x:
                values.setdefault(x.split("=", 1)[0], set()).add(x)
    shared = set.intersection(*(set(p) for p in parts)) if len(parts) > 1 else set()
    shared |= {next(iter(v)) for v in values.values() if len(v) == 1} if len(parts) > 1 else set()
    labels = []
    for name, t in zip(names, tokens):
        kept = [(t[i - 1] if i else "", t[i]) for i in range(0, len(t), 2) if t[i] not in shared]
        label = "".join(sep + x for sep, x in kept).lstrip("/,")
        labels.append(label or name)
    return labels


# --------------------------------------------------------------------------- tables


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
        row = {"run": r.name, "path": str(r.path), "method": r.method, "lr": r.lr, "split": r.split,
               "task": r.task}
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
            return fmt_value(v)
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
    rows = [[r.name, r.method, r.lr, r.split, r.task, *(notes.cell(r, k) for k in (*HEADLINE, *extra))]
            for r in runs]
    return Table(header, rows)


def _set_table(runs: list[Run], set_name: str, notes: Notes) -> Table:
    header = ["run", *METRICS]
    rows = [[r.name, *(notes.cell(r, f"{set_name} {m}") for m in METRICS)]
            for r in runs if any(f"{set_name} {m}" in r.summary for m in METRICS)]
    return Table(header, rows)


def _curve_table(run: Run) -> Table:
    keys = [k for k in HEADLINE if any(row.get(k) is not None for row in run.curve or [])]
    header = ["tasks unlearned", "task", *keys]
    rows = [[fmt_short(row.get("n_unlearned")), str(row.get("task") or DASH), *(fmt_value(row.get(k)) for k in keys)]
            for row in run.curve or []]
    return Table(header, rows)


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_ANSWER_CHARS else text[: MAX_ANSWER_CHARS - 1] + "…"


def example_blocks(runs: list[Run], baseline: Run | None, n: int = 3) -> list[Block]:
    """Before/after: the first ``n`` forget and retain questions, matched by question text."""
    source = baseline or next((r for r in runs if r.records("Forget") or r.records("Retain")), None)
    blocks: list[Block] = []
    if source is None or n <= 0:
        return [Block("text", "No evaluation records (eval_<Set>.jsonl) were found.")]
    if baseline is None:
        blocks.append(Block("text", "No --baseline given: the answers of the model before unlearning are not shown."))
    for set_name in EXAMPLE_SETS:
        questions = list(source.records(set_name).items())[:n]
        for i, (question, rec) in enumerate(questions, 1):
            rows = [["ground truth", _clip(rec.get("ground_truth", rec.get("answer", DASH)))]]
            if baseline is not None:
                rows.append([baseline.name, _clip(rec.get("generation", DASH))])
            for r in runs:
                other = r.records(set_name).get(question)
                label = f"{r.name} (after task {r.eval_dir.name[5:]})" if r.is_continual and \
                    r.eval_dir is not None and r.eval_dir.name.startswith("task_") else r.name
                rows.append([label, DASH + " (not evaluated on this question)" if other is None
                             else _clip(other.get("generation", DASH))])
            blocks.append(Block("heading", f"{set_name} {i}: {_clip(question)}", level=3))
            blocks.append(Block("table", table=Table(["model", "answer"], rows)))
    return blocks


def report_blocks(runs: list[Run], baseline: Run | None = None, title: str = "Unlearning report",
                  images: dict[str, str] | None = None, examples: int = 3) -> list[Block]:
    """The whole report as blocks; ``images`` maps ``tradeoff`` / ``continual`` to PNG file names."""
    images = images or {}
    notes = Notes()
    listed = ([baseline] if baseline else []) + runs
    blocks = [Block("heading", title, level=1),
              Block("text", f"{len(runs)} run(s)" + (f"; baseline: {baseline.name} ({baseline.path})" if baseline else "")
                    + ". MU = Model Utility, FE = Forget Efficacy (higher is better for both); "
                    f"n/a = no value (see the notes), {DASH} = not computed for that run."),
              Block("heading", "Summary"), Block("table", table=_summary_table(listed, notes))]
    blocks.append(Block("heading", "Metrics by evaluation set"))
    for s in sets_present(listed):
        blocks += [Block("heading", s, level=3), Block("table", table=_set_table(listed, s, notes))]
    if notes.numbers:
        blocks += [Block("text", "Notes:"), Block("list", items=notes.items())]
    blocks.append(Block("heading", "Model utility vs forget efficacy"))
    if "tradeoff" in images:
        blocks.append(Block("image", images["tradeoff"], items=["Model Utility against Forget Efficacy"]))
    else:
        blocks.append(Block("text", "No run has both Model Utility and Forget Efficacy."))
    continual = [r for r in runs if r.is_continual]
    if continual:
        blocks.append(Block("heading", "Continual unlearning"))
        if "continual" in images:
            blocks.append(Block("image", images["continual"], items=["MU and FE against tasks unlearned"]))
        for r in continual:
            blocks += [Block("heading", r.name, level=3), Block("table", table=_curve_table(r))]
    blocks.append(Block("heading", "Before / after"))
    blocks += example_blocks(runs, baseline, examples)
    return blocks


# --------------------------------------------------------------------------- rendering

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#])")


def md_escape(text: str) -> str:
    """Plain text for a Markdown line or table cell (no markup, no HTML, no line breaks)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind == "heading":
            out.append("#" * b.level + " " + md_escape(b.text))
        elif b.kind == "text":
            out.append(md_escape(b.text))
        elif b.kind == "list":
            out.append("\n".join("- " + md_escape(i) for i in b.items))
        elif b.kind == "image":
            alt = md_escape(b.items[0] if b.items else b.text)
            out.append(f"![{alt}]({b.text})")
        elif b.kind == "table":
            t = b.table
            lines = ["| " + " | ".join(md_escape(h) for h in t.header) + " |",
                     "|" + "|".join("---" for _ in t.header) + "|"]
            lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in t.rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 80rem;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #eee; }
h3 { font-size: 1rem; margin: 1.4rem 0 .4rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; vertical-align: top; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; }
"""

_NUMERIC = re.compile(r"^(n/a( \[\d+\])?|-?\d[\d.e+-]*)$")


def render_html(blocks: list[Block], title: str = "Unlearning report") -> str:
    esc = html.escape
    body: list[str] = []
    for b in blocks:
        if b.kind == "heading":
            body.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif b.kind == "text":
            body.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "image":
            alt = b.items[0] if b.items else b.text
            body.append(f'<p><img src="{esc(b.text)}" alt="{esc(alt)}"></p>')
        elif b.kind == "table":
            t = b.table
            head = "".join(f"<th>{esc(h)}</th>" for h in t.header)
            rows = "".join(
                "<tr>" + "".join(f'<td class="num">{esc(c)}</td>' if j and _NUMERIC.match(c) else f"<td>{esc(c)}</td>"
                                 for j, c in enumerate(row)) + "</tr>"
                for row in t.rows)
            body.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# --------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float):
    # The Agg canvas directly, not pyplot: no global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _colors(keys: list[str]) -> dict[str, str]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {k: cmap(i % 10) for i, k in enumerate(dict.fromkeys(keys))}


def plot_tradeoff(runs: list[Run], path: str | Path, baseline: Run | None = None) -> bool:
    """MU (y) against FE (x), one labelled point per run, colour by method; False when nothing to plot."""
    points = [r for r in runs if r.value("Model Utility") is not None and r.value("Forget Efficacy") is not None]
    if not points:
        return False
    fig = _new_figure(7.5, 5.5)
    ax = fig.add_subplot()
    colors = _colors([r.method for r in points])
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=m) for m, c in colors.items()]
    if any(r.is_continual for r in points):
        handles.append(Line2D([], [], marker="s", linestyle="", color="grey", label="continual (last task)"))
    at: dict[tuple[float, float], list[str]] = {}  # runs on the same spot share one label
    for r, label in zip(points, short_labels([r.name for r in points])):
        x, y = r.value("Forget Efficacy"), r.value("Model Utility")
        ax.scatter([x], [y], color=colors[r.method], marker="s" if r.is_continual else "o", s=36, zorder=3)
        at.setdefault((round(x, 4), round(y, 4)), []).append(label)
    for (x, y), labels in at.items():
        right = x > 0.6  # labels point inwards so they stay inside the axes
        ax.annotate("\n".join(labels), (x, y), xytext=(-5 if right else 5, 4), textcoords="offset points",
                    fontsize=7, ha="right" if right else "left", va="bottom")
    if baseline and baseline.value("Model Utility") is not None:
        x = baseline.value("Forget Efficacy")
        y = baseline.value("Model Utility")
        if x is not None:
            ax.scatter([x], [y], marker="*", s=160, color="black", zorder=4)
            handles.append(Line2D([], [], marker="*", markersize=10, linestyle="", color="black", label="baseline"))
        else:
            ax.axhline(y, color="black", linestyle="--", linewidth=1)
            handles.append(Line2D([], [], linestyle="--", color="black", label="baseline MU"))
    xs = [r.value("Forget Efficacy") for r in points]
    ys = [r.value("Model Utility") for r in points]
    ax.set_xlim(min(0.0, *xs) - 0.03, max(1.0, *xs) + 0.03)
    ax.set_ylim(min(0.0, *ys) - 0.03, max(1.0, *ys) + 0.03)
    ax.set_xlabel("Forget Efficacy (higher: more forgotten)")
    ax.set_ylabel("Model Utility (higher: more kept)")
    ax.set_title("Utility vs forgetting")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="best")
    _save_png(fig, path)
    return True


def plot_continual(runs: list[Run], path: str | Path, baseline: Run | None = None) -> bool:
    """MU and FE against the number of tasks unlearned, one line per continual run."""
    from matplotlib.ticker import MaxNLocator

    keys = ("Model Utility", "Forget Efficacy")
    curves = [r for r in runs if any(row.get(k) is not None for row in r.curve or [] for k in keys)]
    if not curves:
        return False
    fig = _new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    colors = _colors([r.name for r in curves])
    labels = dict(zip([r.name for r in curves], short_labels([r.name for r in curves])))
    for ax, key in zip(axes, keys):
        for r in curves:
            pts = [(i + 1 if row.get("n_unlearned") is None else row["n_unlearned"], row.get(key))
                   for i, row in enumerate(r.curve)]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=4, color=colors[r.name], label=labels[r.name])
        if baseline and baseline.value(key) is not None:
            ax.axhline(baseline.value(key), color="black", linestyle="--", linewidth=1, label="baseline")
        ax.set_xlabel("tasks unlearned")
        ax.set_ylabel(key)
        ax.set_ylim(-0.03, 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.set_title(key)
    axes[0].legend(fontsize=8, loc="best")
    _save_png(fig, path)
    return True


# --------------------------------------------------------------------------- command


def write_report(results: list[str | Path], out: str | Path, baseline: str | Path | None = None,
                 title: str = "Unlearning report", examples: int = 3) -> Path:
    """``unlearn report``: read the runs, write report.md/html, table.csv and the plots into ``out``."""
    out = Path(out)
    base = load_run(Path(baseline).resolve(), f"{Path(baseline).resolve().name} (baseline)") if baseline else None
    runs = collect_runs(results, exclude=[base.path] if base else [])
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    if plot_tradeoff(runs, out / "tradeoff.png", base):
        images["tradeoff"] = "tradeoff.png"
    if plot_continual(runs, out / "continual.png", base):
        images["continual"] = "continual.png"
    rows = table_rows(([base] if base else []) + runs)
    write_csv_rows(out / "table.csv", rows)
    blocks = report_blocks(runs, base, title, images, examples)
    atomic_write_text(out / "report.md", render_markdown(blocks))
    atomic_write_text(out / "report.html", render_html(blocks, title))
    return out
