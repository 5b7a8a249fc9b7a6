"""``unlearn sweep``: a grid of unlearning runs, one folder each, resumable.

The grid is read and every run validated first (:mod:`unlearn.sweep.plan`); then the judges are
loaded once and each pending run's evaluation is planned (the retain model's truth ratios computed
once per forget set), so nothing a later run needs can fail after the first one trained. A
finished run (``summary.json``, or the model when the run has no evaluation) is skipped, so an
interrupted sweep resumes where it stopped; a run that stopped half-way goes on from its checkpoint
(with ``save_every``), else it is redone from scratch.
``overwrite: true`` in ``base`` redoes every run. Each run goes through :func:`unlearn.pipeline.run`,
like ``unlearn run``. ``sweep.csv`` has a row per run: its status, key metrics and wall time in
``seconds`` (a skipped run keeps the time its run took; a run resumed from its checkpoint, status
``done (resumed)``, later ``skipped (resumed)``, counts from the resume).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path

import torch

from unlearn import distributed, outputs, pipeline
from unlearn.audit.after_run import audit_saved
from unlearn.io import as_number, atomic_write_text, read_csv_rows, write_csv_rows
from unlearn.protocols import protocol_of
from unlearn.protocols.closer_look import load_judges
from unlearn.protocols.plan import plan_evaluation
from unlearn.rundir import FINISHED, PARTIAL, RunDir
from unlearn.sweep.plan import MAX_NAME, PlannedRun, plan_sweep, read_sweep, run_name  # noqa: F401 (the sweep's API)

KEY_METRICS = ("Model Utility", "Model Utility Retain", "Forget Efficacy", "Forget Quality")
STATE_TEXT = {FINISHED: "finished, skip", PARTIAL: "unfinished, redo", "absent": "run"}


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_one(cfg, plan) -> dict | None:
    """What ``unlearn run`` does for one run: unlearn, save, evaluate. Returns the summary (or None)."""
    try:
        return pipeline.run(cfg, plan=plan).summary
    finally:
        _free_memory()


def _plans(runs: list[PlannedRun], states: list[str]) -> dict[str, object]:
    """The evaluation plan of every run that will run: judges loaded once, the retain model's
    numbers once per forget set."""
    todo = [r for r, s in zip(runs, states, strict=False) if s != FINISHED]
    judges, references, plans = None, {}, {}
    for r in todo:
        c = r.cfg
        protocol = protocol_of(c)
        if r.evaluated and protocol.six_metrics and judges is None:
            judges = load_judges(c)
        key = (c.benchmark, c.retain_model, c.eval_data, c.data, c.split, c.task_id)
        own_tasks = protocol.downstream_is_evaluation  # its tasks are planned by the protocol itself
        plan = plan_evaluation(
            dataclasses.replace(
                c,
                retain_model=None if key in references else c.retain_model,
                downstream=c.downstream if own_tasks else None,
            ),
            judges=judges,
            sets=r.sets,
        )
        if key in references:  # the retain model's numbers, computed once per forget set
            if protocol.reference(plan) is None:
                protocol.set_reference(plan, references[key])
        elif r.evaluated:
            references[key] = protocol.reference(plan)
        if not own_tasks:
            plan.downstream = r.downstream  # validated when the sweep was planned
        plans[r.name] = plan
    return plans


def _is_main_process() -> bool:
    return distributed.is_main_process()


def _metrics_text(summary: dict | None) -> str:
    if not summary:
        return ""
    short = {"Model Utility": "MU", "Forget Efficacy": "FE", "Forget Quality": "FQ"}
    parts = [f"{s} {summary[k]:.4g}" for k, s in short.items() if isinstance(summary.get(k), (int, float))]
    return (": " + ", ".join(parts)) if parts else ""


def _csv_row(run: PlannedRun, status: str, summary: dict | None, seconds: float | None, error: str = "") -> dict:
    row = {"run": run.name, "status": status, **run.values}
    row.update({k: (summary or {}).get(k) for k in KEY_METRICS})
    row.update(seconds=None if seconds is None else round(seconds, 1), folder=str(run.out.path), error=error)
    return row


def run_sweep(
    path: str | Path, dry_run: bool = False, out: str | None = None, debug: bool = False, seeds: str | None = None
) -> int:
    """``unlearn sweep``: 0 when every run finished, 1 when some failed (the others still run)."""
    root, runs = plan_sweep(path, out, seeds)
    states = [PARTIAL if r.cfg.overwrite and s == FINISHED else s for r in runs for s in [r.state()]]
    n = len(runs)
    if dry_run:
        print(f"{n} run(s) planned in {root}:")
        for i, (r, state) in enumerate(zip(runs, states, strict=False), 1):
            print(f"[{i}/{n}] {r.out.path}  ({STATE_TEXT[state]}{'' if r.evaluated else ', no evaluation'})")
        return 0
    main = _is_main_process()
    with RunDir(root).locked(main):
        return _run_all(path, root, runs, states, main, debug)


def _run_all(path, root: Path, runs: list[PlannedRun], states: list[str], main: bool, debug: bool) -> int:
    n = len(runs)
    plans = _plans(runs, states)
    if main:  # a re-run continues the sweep: its entries are kept, a user's file of those names refused
        names = ["sweep.yaml", "sweep.csv", *(r.out.path.name for r in runs)]
        outputs.claim(root, names, keep=names, what="a sweep")
        atomic_write_text(root / "sweep.yaml", Path(path).read_text(encoding="utf-8"))
    rows, failed = [], set()
    earlier = {r.get("run"): r for r in read_csv_rows(root / "sweep.csv")}  # a skipped run keeps its time
    for i, (run, state) in enumerate(zip(runs, states, strict=False), 1):
        prefix = f"[{i}/{n}] {run.name}"
        if state == FINISHED and run.cfg.audit and not run.out.audited:
            print(f"{prefix}: finished; auditing it", flush=True)
            audit_saved(run.cfg, run.out, resume=True)  # (an interrupted audit goes on where it stopped)
            state = FINISHED
        if state == FINISHED:
            summary = run.out.read_summary()
            print(f"{prefix}: finished, skipped{_metrics_text(summary)}", flush=True)
            before = earlier.get(run.name, {})
            rows.append(
                _csv_row(
                    run,
                    "skipped (resumed)" if "resumed" in (before.get("status") or "") else "skipped",
                    summary,
                    as_number(before.get("seconds")),
                )
            )
        else:
            resume = state == PARTIAL and not run.cfg.overwrite and run.out.resumable()
            cfg = (
                dataclasses.replace(run.cfg, resume=True, overwrite=False)
                if resume
                else dataclasses.replace(run.cfg, overwrite=True)
                if state == PARTIAL
                else run.cfg
            )
            doing = "resuming from its checkpoint" if resume else "redoing" if state == PARTIAL else "running"
            print(f"{prefix}: {doing} -> {run.out.path}", flush=True)
            start = time.perf_counter()
            try:
                summary = run_one(cfg, plans[run.name])
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
                rows.append(_csv_row(run, "done (resumed)" if resume else "done", summary, seconds))
        if main:
            write_csv_rows(root / "sweep.csv", rows)
    print(f"sweep finished: {n - len(failed)}/{n} run(s) complete; summary in {root / 'sweep.csv'}")
    for run in runs:
        print(f"  {run.out.path}{'  (failed)' if run.name in failed else ''}")
    if failed:
        return 1
    print(f"next: unlearn report {root} --out {root / 'report'}")
    return 0
