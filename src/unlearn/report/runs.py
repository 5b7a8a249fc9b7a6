"""Run folders read for a report: summaries, configs, per-item records, continual curves."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from unlearn.errors import DataError
from unlearn.evaluation.intervals import read_intervals
from unlearn.io import as_number, read_csv_rows, read_jsonl_log
from unlearn.rundir import BEFORE, CONFIG, CONTINUAL, DATA, EVAL_CONFIG, EVAL_LOG, SUMMARY, TRAIN_LOG, eval_file

# The evaluation's vocabulary (unlearn.evaluation.six_metrics), repeated here so a report never imports torch.
SETS = ("Retain", "Real Authors", "Real World", "Forget", "Forget Paraphrased")
METRICS = ("ROUGE", "Probability", "Truth Ratio", "Token Entropy", "Cosine Similarity", "Entailment Score")
HEADLINE = ("Model Utility", "Model Utility Retain", "Forget Efficacy", "Forget Quality")
EXAMPLE_SETS = ("Forget", "Retain")
MAX_ANSWER_CHARS = 400
DASH = "–"


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
    trajectory: list[dict] | None = None  # --eval-every: eval_log.jsonl, one row per evaluation while unlearning
    intervals: dict = field(default_factory=dict)  # summary key -> its 95% Interval (intervals.json)
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
        # Only an unlearning run's config.yaml names a method; an evaluated model has none, unless it was
        # evaluated with in-context unlearning (its eval_config.yaml keeps the method).
        if self.config.get("_kind") == "run" or self.summary.get("in_context_unlearning"):
            return str(self.config.get("method") or DASH)
        return DASH

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
            path = self.eval_dir / eval_file(set_name) if self.eval_dir else None
            rows = read_jsonl(path) if path else []
            self._records[set_name] = {r["question"]: r for r in rows if isinstance(r.get("question"), str)}
        return self._records[set_name]


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


def _read_mapping(path: Path, parse, required: bool = False) -> dict:
    """A JSON/YAML mapping; an unreadable optional file reads as empty, a required one is an error."""
    try:
        obj = parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as e:
        if required:
            raise DataError(
                f"{path}: not readable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            ) from None
        return {}
    if required and not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object of metrics")
    return obj if isinstance(obj, dict) else {}


def _read_config(folder: Path) -> dict:
    """config.yaml of an unlearning run, else eval_config.yaml of an evaluated model."""
    for name, kind in ((CONFIG, "run"), (EVAL_CONFIG, "eval")):
        cfg = _read_mapping(folder / name, yaml.safe_load)
        if cfg:
            return {**cfg, "_kind": kind}
    return {}


def _task_dirs(folder: Path) -> list[Path]:
    found = [
        (int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := re.fullmatch(r"task_(\d+)", p.name))
    ]
    return [p for _, p in sorted(found)]


def _curve(folder: Path) -> list[dict]:
    rows = []
    for row in read_csv_rows(folder / CONTINUAL):
        parsed = {k: (as_number(v) if k != "task" else v) for k, v in row.items() if k}
        rows.append(parsed)
    return sorted(rows, key=lambda r: (r.get("n_unlearned") is None, r.get("n_unlearned") or 0))


def load_run(folder: str | Path, name: str | None = None) -> Run:
    """A run (or continual run) folder as a :class:`Run`."""
    folder = Path(folder)
    summary_path = folder / SUMMARY
    if (folder / CONTINUAL).is_file():
        curve = _curve(folder)
        tasks = [t for t in _task_dirs(folder) if (t / SUMMARY).is_file()]
        # The last task unlearned is the curve's last row (tasks may run in any order).
        last_row = folder / f"task_{curve[-1].get('task')}" if curve else None
        last = last_row if last_row in tasks else (tasks[-1] if tasks else None)
        if summary_path.is_file():
            summary = _read_mapping(summary_path, json.loads, required=True)
        elif last is not None:
            summary = _read_mapping(last / SUMMARY, json.loads, required=True)
        else:
            summary = {
                k: v for k, v in (curve[-1] if curve else {}).items() if k not in ("task", "n_unlearned", "seconds")
            }
        config = _read_config(folder) or (_read_config(tasks[0]) if tasks else {})
        info = _read_mapping(folder / DATA, json.loads) or (_read_mapping(tasks[0] / DATA, json.loads) if tasks else {})
        return Run(
            name or folder.name,
            folder,
            summary,
            config,
            info,
            curve=curve,
            eval_dir=last if last is not None else folder,
        )
    if not summary_path.is_file():
        raise DataError(f"{folder}: no summary.json (evaluate the model first: unlearn eval)")
    return Run(
        name or folder.name,
        folder,
        _read_mapping(summary_path, json.loads, required=True),
        _read_config(folder),
        _read_mapping(folder / DATA, json.loads),
        eval_dir=folder,
        trajectory=read_jsonl_log(folder / EVAL_LOG) or None,
        intervals=read_intervals(folder),
    )


def shown_path(path: Path) -> str:
    """A run's folder as the report prints it: relative to the working directory when inside it (a report
    committed beside its runs names no machine's absolute path), else as it is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _inside(path: Path, parents: Iterable[Path]) -> bool:
    return any(p == path or p in path.parents for p in parents)


def collect_runs(paths: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> list[Run]:
    """Every run folder under ``paths`` (recursive), sorted by path; continual runs once each.

    Names are paths relative to the common parent of the run folders (``a``, ``sweep/lr=1e-05``).
    """
    found: set[Path] = set()
    continual: set[Path] = set()
    for p in paths:
        root = Path(p)
        if not root.is_dir():
            raise DataError(f"{root}: result folder not found")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if BEFORE in dirnames and ({SUMMARY, CONFIG, TRAIN_LOG} & set(filenames)):
                dirnames.remove(BEFORE)  # a run's evaluation of its model before unlearning, not a run
            here = Path(dirpath).resolve()
            if CONTINUAL in filenames:
                continual.add(here)
            elif SUMMARY in filenames:
                found.add(here)
    skip = {Path(e).resolve() for e in exclude}
    folders = sorted(continual | {f for f in found if not _inside(f, continual)})
    folders = [f for f in folders if f not in skip]
    if not folders:
        raise DataError(f"no evaluated runs (summary.json or continual.csv) under {', '.join(map(str, paths))}")
    parent = Path(os.path.commonpath([str(f.parent) for f in folders]))
    return [load_run(f, f.relative_to(parent).as_posix()) for f in folders]


def short_labels(names: list[str]) -> list[str]:
    """Plot labels: names without the parts (split at ``/``, ``__`` and ``,``) that carry no information.

    Dropped: a part every name has, and a ``key-value`` (or ``key=value``) part whose key has that
    one value in every name (two or more) that has the key (``split-forget01`` in a sweep over methods).
    A key only one name has stays: it is what tells that run apart (``method-GA+GD`` beside a reference).
    """
    tokens = [re.split(r"(/|__|,)", n) for n in names]
    parts = [t[::2] for t in tokens]
    values: dict[str, list[str]] = {}  # key -> its part in each name that has the key
    for p in parts:
        for x in p:
            key = re.match(r"^([a-z][a-z0-9_]*)[=-]", x)
            if key:
                values.setdefault(key.group(1), []).append(x)
    shared = set.intersection(*(set(p) for p in parts)) if len(parts) > 1 else set()
    shared |= {v[0] for v in values.values() if len(v) > 1 and len(set(v)) == 1}
    labels = []
    for name, t in zip(names, tokens, strict=False):
        kept = [(t[i - 1] if i else "", t[i]) for i in range(0, len(t), 2) if t[i] not in shared]
        label = "".join(sep + x for sep, x in kept).lstrip("/,_")
        labels.append(label or name)
    return labels
