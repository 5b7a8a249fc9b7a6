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
import json
import os
import shlex
import time
from pathlib import Path

import torch

from unlearn import distributed, outputs, pipeline
from unlearn.audit.after_run import audit_saved
from unlearn.engines import engine_for
from unlearn.errors import ConfigError
from unlearn.io import as_number, atomic_write_json, atomic_write_text, read_csv_rows, write_csv_rows
from unlearn.launchers import Job, Launcher, drive, ignored_settings
from unlearn.protocols import protocol_of
from unlearn.protocols.closer_look import load_judges
from unlearn.protocols.plan import plan_evaluation
from unlearn.rundir import FINISHED, PARTIAL, RunDir
from unlearn.sweep.plan import (  # noqa: F401 (the sweep's API)
    MAX_NAME,
    PlannedRun,
    launcher_of,
    plan_sweep,
    read_sweep,
    run_name,
)

KEY_METRICS = ("Model Utility", "Model Utility Retain", "Forget Efficacy", "Forget Quality")
STATE_TEXT = {FINISHED: "finished, skip", PARTIAL: "unfinished, redo", "absent": "run"}
JOBS = ".jobs"  # each job's row of sweep.csv, written by the job, read by the sweep


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
    path: str | Path,
    dry_run: bool = False,
    out: str | None = None,
    debug: bool = False,
    seeds: str | None = None,
    launcher: dict | None = None,
    only: str | None = None,
    job_result: str | None = None,
) -> int:
    """``unlearn sweep``: 0 when every run finished, 1 when some failed (the others still run).
    ``launcher``: the command line's launcher settings (:func:`unlearn.launchers.read_launcher`);
    ``only``: run that one run here (what each job of a launcher does), its row written to ``job_result``."""
    if only is not None:
        return _run_only(path, out, seeds, only, job_result, debug)
    settings = launcher_of(path, launcher)
    if not settings.in_process and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError(
            "a sweep with a launcher starts its runs' processes itself: run it without accelerate launch or "
            "torchrun (processes_per_run: N starts each run with accelerate launch)"
        )
    root, runs = plan_sweep(path, out, seeds)
    states = [PARTIAL if r.cfg.overwrite and s == FINISHED else s for r in runs for s in [r.state()]]
    n = len(runs)
    if dry_run:
        print(f"{n} run(s) planned in {root}:")
        for i, (r, state) in enumerate(zip(runs, states, strict=False), 1):
            resumes = _doing(r, state).startswith("resuming")
            what = "unfinished, resume from its checkpoint" if resumes else STATE_TEXT[state]
            print(f"[{i}/{n}] {r.out.path}  ({what}{'' if r.evaluated else ', no evaluation'})")
        if not settings.in_process:
            todo = [r for r, s in zip(runs, states, strict=False) if _needs_job(r, s)]
            limit = settings.parallel or (1 if settings.name == "local" else "no limit")
            print(f"launcher {settings.name}: {limit} at once; each run one job:")
            if todo:
                print("  python " + shlex.join(_job(root, todo[0], settings, seeds).python_args()))
        return 0
    for key in ignored_settings(settings):
        print(f"note: launcher setting '{key}' is for another launcher; {settings.name} ignores it")
    main = _is_main_process()
    with RunDir(root).locked(main):
        if settings.in_process:
            return _run_all(path, root, runs, states, main, debug)
        return _launch_all(path, root, runs, states, settings, seeds)


def _run_planned(run: PlannedRun, state: str, plan, prefix: str, earlier: dict, debug: bool) -> dict:
    """One run as the sweep does it: audited if only that is missing, skipped when finished, resumed from
    its checkpoint when it stopped half-way, else (re)done. Returns its row of sweep.csv."""
    if state == FINISHED and run.cfg.audit and not run.out.audited:
        print(f"{prefix}: finished; auditing it", flush=True)
        audit_saved(run.cfg, run.out, resume=True)  # (an interrupted audit goes on where it stopped)
    if state == FINISHED:
        summary = run.out.read_summary()
        print(f"{prefix}: finished, skipped{_metrics_text(summary)}", flush=True)
        before = earlier.get(run.name, {})
        status = "skipped (resumed)" if "resumed" in (before.get("status") or "") else "skipped"
        return _csv_row(run, status, summary, as_number(before.get("seconds")))
    resume = state == PARTIAL and not run.cfg.overwrite and run.out.resumable()
    cfg = (
        dataclasses.replace(run.cfg, resume=True, overwrite=False)
        if resume
        else dataclasses.replace(run.cfg, overwrite=True)
        if state == PARTIAL
        else run.cfg
    )
    print(f"{prefix}: {_doing(run, state)} -> {run.out.path}", flush=True)
    start = time.perf_counter()
    try:
        summary = run_one(cfg, plan)
    except Exception as e:  # one diverging run must not stop the sweep
        if debug:
            raise
        _free_memory()
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{prefix}: failed: {message}", flush=True)
        return _csv_row(run, "failed", None, time.perf_counter() - start, message)
    seconds = time.perf_counter() - start
    print(f"{prefix}: done in {seconds:.0f}s{_metrics_text(summary)}", flush=True)
    return _csv_row(run, "done (resumed)" if resume else "done", summary, seconds)


def _doing(run: PlannedRun, state: str) -> str:
    if state == FINISHED:
        return "auditing it"
    if state == PARTIAL and not run.cfg.overwrite and run.out.resumable():
        return "resuming from its checkpoint"
    return "redoing" if state == PARTIAL else "running"


def _run_all(path, root: Path, runs: list[PlannedRun], states: list[str], main: bool, debug: bool) -> int:
    n = len(runs)
    plans = _plans(runs, states)
    if main:  # a re-run continues the sweep: its entries are kept, a user's file of those names refused
        names = ["sweep.yaml", "sweep.csv", *(r.out.path.name for r in runs)]
        outputs.claim(root, names, keep=names, what="a sweep")
        atomic_write_text(root / "sweep.yaml", Path(path).read_text(encoding="utf-8"))
    rows = []
    earlier = {r.get("run"): r for r in read_csv_rows(root / "sweep.csv")}  # a skipped run keeps its time
    for i, (run, state) in enumerate(zip(runs, states, strict=False), 1):
        rows.append(_run_planned(run, state, plans.get(run.name), f"[{i}/{n}] {run.name}", earlier, debug))
        if main:
            write_csv_rows(root / "sweep.csv", rows)
    return _finish(root, rows, n)


def _run_only(path, out, seeds, only: str, job_result: str | None, debug: bool) -> int:
    """One run of the sweep in this process: the job a launcher started."""
    root, (run,) = plan_sweep(path, out, seeds, only=only)
    state = run.state()
    state = PARTIAL if run.cfg.overwrite and state == FINISHED else state
    plans = _plans([run], [state])
    earlier = {r.get("run"): r for r in read_csv_rows(root / "sweep.csv")}
    row = _run_planned(run, state, plans.get(run.name), run.name, earlier, debug)
    if job_result and _is_main_process():
        atomic_write_json(job_result, row)
    return 1 if row["status"] == "failed" else 0


def _needs_job(run: PlannedRun, state: str) -> bool:
    return state != FINISHED or bool(run.cfg.audit and not run.out.audited)


def _job(root: Path, run: PlannedRun, settings: Launcher, seeds: str | None) -> Job:
    root = root.resolve()
    args = ["sweep", "--config", str(root / "sweep.yaml"), "--out", str(root), "--only", run.name]
    args += ["--job-result", str(root / JOBS / f"{run.name}.json")] + (["--seeds", seeds] if seeds else [])
    config = settings.accelerate_config and str(Path(settings.accelerate_config).resolve())
    log = str(root / "logs" / f"{run.name}.log")
    return Job(run.name, args, os.getcwd(), log, settings.processes_per_run, config)


def _launch_all(path, root: Path, runs: list[PlannedRun], states: list[str], settings: Launcher, seeds) -> int:
    """Every pending run as its own process or job on the launcher; the rows gathered as they end."""
    engine = engine_for(settings, root)
    names = ["sweep.yaml", "sweep.csv", "logs", JOBS, *(["slurm"] if settings.name == "slurm" else [])]
    names += [r.out.path.name for r in runs]
    outputs.claim(root, names, keep=names, what="a sweep")
    atomic_write_text(root / "sweep.yaml", Path(path).read_text(encoding="utf-8"))
    (root / JOBS).mkdir(exist_ok=True)
    earlier = {r.get("run"): r for r in read_csv_rows(root / "sweep.csv")}
    n, rows, jobs, label, doing = len(runs), {}, [], {}, {}
    order = {r.name: i for i, r in enumerate(runs)}

    def write() -> None:
        write_csv_rows(root / "sweep.csv", [rows[r.name] for r in runs if r.name in rows])

    for i, (run, state) in enumerate(zip(runs, states, strict=False), 1):
        label[run.name] = f"[{i}/{n}] {run.name}"
        if not _needs_job(run, state):
            rows[run.name] = _run_planned(run, state, None, label[run.name], earlier, debug=False)
            continue
        (root / JOBS / f"{run.name}.json").unlink(missing_ok=True)  # an earlier job's result
        job = _job(root, run, settings, seeds)
        jobs.append(job)
        doing[run.name] = _doing(run, state)
    write()
    print(f"launcher {settings.name}: {engine.describe()}; {len(jobs)} run(s) to start", flush=True)

    def started(job: Job) -> None:
        verb = "started" if settings.name == "local" else "submitted"  # (Ray and SLURM start it when they can)
        print(f"{label[job.name]}: {verb} ({doing[job.name]}); log {job.log}", flush=True)

    def ended(job: Job, outcome) -> None:
        run = runs[order[job.name]]
        try:
            row = json.loads((root / JOBS / f"{job.name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # killed before it wrote one
            row = None
        if not isinstance(row, dict) or "status" not in row:
            row = _csv_row(run, "failed", None, None, _job_error(outcome, job.log))
        prefix = label[job.name]
        if row["status"] == "failed":
            print(f"{prefix}: failed: {row['error']} (log {job.log})", flush=True)
        else:
            print(f"{prefix}: {row['status']} in {row['seconds'] or 0:.0f}s{_metrics_text(row)}", flush=True)
        rows[job.name] = row
        write()

    limit = (settings.parallel or 1) if settings.name == "local" else settings.parallel
    drive(engine, jobs, limit, started, ended)
    return _finish(root, [rows[r.name] for r in runs], n)


def _job_error(outcome, log: str) -> str:
    """Why a job left no result: how it ended, and the last line it printed."""
    if outcome.code is None:
        why = outcome.error
    elif outcome.code < 0:
        why = f"killed by signal {-outcome.code}"
    else:
        why = f"ended with exit code {outcome.code} and no result"
    try:
        lines = [x.strip() for x in Path(log).read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
    except OSError:
        lines = []
    last = lines[-1] if lines and not lines[-1].startswith("==== ") else ""
    return f"{why}" + (f"; last line: {last[:300]}" if last else "")


def _finish(root: Path, rows: list[dict], n: int) -> int:
    """The end of a sweep: how many runs were done, failed, skipped; the failures' first error lines."""
    count = {k: sum(1 for r in rows if (r.get("status") or "").startswith(k)) for k in ("done", "failed", "skipped")}
    print(
        f"sweep finished: {count['done']} done, {count['failed']} failed, {count['skipped']} skipped "
        f"({n} run(s)); summary in {root / 'sweep.csv'}"
    )
    for r in rows:
        if r.get("status") == "failed":
            print(f"  failed: {r['folder']}: {r.get('error')}")
    if count["failed"]:
        return 1
    print(f"next: unlearn report {root} --out {root / 'report'}")
    return 0
