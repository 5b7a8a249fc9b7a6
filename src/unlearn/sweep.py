"""``unlearn sweep``: a grid of unlearning runs, one folder each, resumable.

The sweep file is YAML with three keys::

    base:              # any Config keys, shared by every run
      data: ../shared/data/tofu
      epochs: 5
    grid:              # Config key -> list of values; the runs are their Cartesian product
      method: [ME+GD, IDK+AP]
      lr: [1e-5, 5e-6]
    out: sweeps/tofu   # root folder: one sub-folder per run, plus sweep.csv

Runs go in a fixed order (``itertools.product`` over the grid keys as written, the first key varying
slowest) into ``OUT/<key>=<value>,...``. The whole grid is validated (keys, types, methods, data and
evaluation files) before the first model is loaded. A finished run (``summary.json``, or the model
when the run has no evaluation) is skipped, so an interrupted sweep resumes where it stopped; a run
that stopped half-way is redone from scratch. ``overwrite: true`` in ``base`` redoes every run.
Paths in the file are relative to the current directory, as in ``unlearn run --config``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import re
import time
from dataclasses import dataclass
from pathlib import Path


from .config import Config, config_from_args, config_keys, read_yaml_mapping
from .data import DataError
from .io import atomic_write_text, write_csv_rows

TOP_KEYS = ("base", "grid", "out")
KEY_METRICS = ("Model Utility", "Model Utility Retain", "Forget Efficacy", "Forget Quality")
MANAGED = ("out",)  # set by the sweep for each run
MAX_NAME = 150


@dataclass
class PlannedRun:
    name: str
    values: dict  # grid key -> the value as the Config holds it
    cfg: Config
    sets: list | None  # validated evaluation sets; None: the run is not evaluated
    downstream: list[str] | None = None  # validated lm-eval tasks, when the run has any

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def evaluated(self) -> bool:
        return bool(self.sets)


# --------------------------------------------------------------------------- planning


def _keys(section: dict, where: str, path: Path) -> dict:
    if not isinstance(section, dict):
        raise DataError(f"{path}: '{where}' must be a mapping of config keys to values")
    out = config_keys(section, f"{path}: {where}: ")
    for name in out:
        if name in MANAGED:
            raise DataError(f"{path}: {where}: '{name}' is set by the sweep; give the root folder as top-level 'out:'")
    return out


def read_sweep(path: str | Path) -> tuple[dict, dict, str | None]:
    """(base, grid, out) of a sweep file; every key checked against the Config schema."""
    path = Path(path)
    raw = read_yaml_mapping(path, "sweep file", f"a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise DataError(f"{path}: unknown top-level key '{unknown[0]}' (valid: {', '.join(TOP_KEYS)}; "
                        "config keys go under 'base:' or 'grid:')")
    base = _keys(raw.get("base") or {}, "base", path)
    grid = {}
    for key, values in _keys(raw.get("grid") or {}, "grid", path).items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise DataError(f"{path}: grid: '{key}' has no values")
        if key in base:
            raise DataError(f"{path}: '{key}' is in both base and grid; keep it in one")
        grid[key] = values
    out = raw.get("out")
    return base, grid, None if out is None else str(out)


def _text(value) -> str:
    return "none" if value is None else str(value)


def run_name(values: dict) -> str:
    """``method=ME+GD,lr=1e-05`` with every character a file system may refuse replaced by '_'."""
    if not values:
        return "run"
    name = ",".join(f"{k}={_text(v)}" for k, v in values.items())
    name = re.sub(r"[^A-Za-z0-9._+=,-]", "_", name).lstrip(".-") or "run"
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def _check(cfg: Config, name: str, cache: dict) -> tuple[list | None, list[str] | None]:
    """Validate one run before anything runs: method, training data, refusals, evaluation sets
    and downstream tasks. Returns (evaluation sets, downstream tasks), None where there are none."""
    from .methods import parse_method
    from .pipeline import load_data
    from .data import read_refusals

    try:
        parse_method(cfg.method)
    except ValueError as e:
        raise DataError(f"{name}: {e}") from None
    try:
        local = cfg.forget or (cfg.data and Path(cfg.data).exists())
        key = ("data", cfg.data, cfg.forget, cfg.retain, cfg.split, cfg.task_id)
        if local and key not in cache:
            load_data(cfg)  # reads and checks the files; the run reads them again
            cache[key] = None
        if ("idk", cfg.idk) not in cache:
            read_refusals(cfg.idk)
            cache[("idk", cfg.idk)] = None
        sets = downstream = None
        if cfg.eval:
            key = ("eval", cfg.eval_data, cfg.data, cfg.forget, cfg.split, cfg.task_id)
            if key not in cache:
                from .evals.commands import eval_sets_for

                cache[key] = eval_sets_for(cfg)
            sets = cache[key]
        if getattr(cfg, "downstream", None):
            key = ("downstream", cfg.downstream, cfg.downstream_include)
            if key not in cache:
                from .evals.downstream import downstream_tasks_for

                cache[key] = downstream_tasks_for(cfg)
            downstream = cache[key]
        return sets, downstream
    except DataError as e:
        raise DataError(f"{name}: {e}") from None


def plan_sweep(path: str | Path, out: str | None = None) -> tuple[Path, list[PlannedRun]]:
    """The root folder and every run of the grid, in order, each validated."""
    base, grid, root = read_sweep(path)
    root = out or root
    if not root:
        raise DataError(f"{path}: no output folder: add 'out: FOLDER' (or pass --out)")
    root_path = Path(root)
    runs, names, cache = [], {}, {}
    for combo in itertools.product(*grid.values()):
        given = dict(zip(grid, combo))
        cfg = config_from_args(argparse.Namespace(), **base, **given)
        values = {k: getattr(cfg, k) for k in grid}
        name = run_name(values)
        if name in names:
            raise DataError(f"{path}: runs {names[name]} and {given} get the same folder name '{name}'")
        names[name] = given
        cfg.out = str(root_path / name)
        runs.append(PlannedRun(name, values, cfg, *_check(cfg, name, cache)))
    return root_path, runs


def run_state(run: PlannedRun, redo: bool = False) -> str:
    """finished | partial (stopped half-way, or ``redo``) | new."""
    from .pipeline import RESULT_MARKERS

    out = run.out
    if run.evaluated:
        done = (out / "summary.json").is_file()
    else:
        done = (out / "model").is_dir() and (out / "config.yaml").is_file()
    if run.downstream:
        done = done and (out / "downstream.json").is_file()
    if done and not redo:
        return "finished"
    if any((out / m).exists() for m in RESULT_MARKERS) or (out / "config.yaml").exists():
        return "partial"
    return "new"


# --------------------------------------------------------------------------- running


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def run_one(cfg: Config, sets, downstream: list[str] | None = None) -> dict | None:
    """What ``unlearn run`` does for one run: unlearn, save, evaluate. Returns the summary (or None)."""
    from .pipeline import unlearn

    result = unlearn(cfg)
    try:
        if not result["accelerator"].is_main_process:
            return None
        summary = None
        if sets:
            from .evals.commands import evaluate_after_unlearning

            summary = evaluate_after_unlearning(cfg, result["model_obj"], result["tokenizer"],
                                                result["prompt_format"], result["out"], sets=sets)
        if downstream:
            from .evals.downstream import downstream_after_unlearning

            downstream_after_unlearning(cfg, result["model_obj"], result["tokenizer"], result["out"], downstream)
            summary = _read_summary(result["out"]) or summary
        return summary
    finally:
        result.clear()
        _free_memory()


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _read_summary(out: Path) -> dict | None:
    import json

    try:
        return json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _metrics_text(summary: dict | None) -> str:
    if not summary:
        return ""
    short = {"Model Utility": "MU", "Forget Efficacy": "FE", "Forget Quality": "FQ"}
    parts = [f"{s} {summary[k]:.4g}" for k, s in short.items() if isinstance(summary.get(k), (int, float))]
    return (": " + ", ".join(parts)) if parts else ""


def _csv_row(run: PlannedRun, status: str, summary: dict | None, seconds: float | None, error: str = "") -> dict:
    row = {"run": run.name, "status": status, **run.values}
    row.update({k: (summary or {}).get(k) for k in KEY_METRICS})
    row.update(seconds=None if seconds is None else round(seconds, 1), folder=str(run.out), error=error)
    return row


STATE_TEXT = {"finished": "finished, skip", "partial": "unfinished, redo", "new": "run"}


def run_sweep(path: str | Path, dry_run: bool = False, out: str | None = None, debug: bool = False) -> int:
    """``unlearn sweep``: 0 when every run finished, 1 when some failed (the others still run)."""
    root, runs = plan_sweep(path, out)
    states = [run_state(r, redo=r.cfg.overwrite) for r in runs]
    n = len(runs)
    if dry_run:
        print(f"{n} run(s) planned in {root}:")
        for i, (r, state) in enumerate(zip(runs, states), 1):
            print(f"[{i}/{n}] {r.out}  ({STATE_TEXT[state]}{'' if r.evaluated else ', no evaluation'})")
        return 0
    main = _is_main_process()
    if main:
        atomic_write_text(root / "sweep.yaml", Path(path).read_text(encoding="utf-8"))
    rows, failed = [], set()
    for i, (run, state) in enumerate(zip(runs, states), 1):
        prefix = f"[{i}/{n}] {run.name}"
        if state == "finished":
            summary = _read_summary(run.out)
            print(f"{prefix}: finished, skipped{_metrics_text(summary)}", flush=True)
            rows.append(_csv_row(run, "skipped", summary, None))
        else:
            if state == "partial":
                run.cfg.overwrite = True
            print(f"{prefix}: {'redoing' if state == 'partial' else 'running'} -> {run.out}", flush=True)
            start = time.perf_counter()
            try:
                summary = run_one(run.cfg, run.sets, run.downstream)
            except Exception as e:  # one diverging run must not stop the sweep
                if debug:
                    raise
                _free_memory()
                message = " ".join(str(e).split()) or type(e).__name__
                failed.add(run.name)
                print(f"{prefix}: failed: {message}", flush=True)
                rows.append(_csv_row(run, "failed", None, time.perf_counter() - start, message))
            else:
                seconds = time.perf_counter() - start
                print(f"{prefix}: done in {seconds:.0f}s{_metrics_text(summary)}", flush=True)
                rows.append(_csv_row(run, "done", summary, seconds))
        if main:
            write_csv_rows(root / "sweep.csv", rows)
    print(f"sweep finished: {n - len(failed)}/{n} run(s) complete; summary in {root / 'sweep.csv'}")
    for run in runs:
        print(f"  {run.out}{'  (failed)' if run.name in failed else ''}")
    if failed:
        return 1
    print(f"next: unlearn report {root} --out {root / 'report'}")
    return 0
