"""Continual unlearning (docs/methods.md, scenarios): tasks unlearned one after another.

Task k starts from the model unlearned at task k-1. Its retain set is ``retain(100-10*XX)``
plus the forget rows of the tasks not unlearned yet. The reference model is the previous
checkpoint (the model itself when the task starts), unless ``--fix-ref-model`` pins it to the
original model. After every task the model is evaluated and one row is added to
``continual.csv`` (the metrics, and ``seconds``: the wall time of the attempt that finished the
task); rerunning the command resumes at the first unfinished task.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from unlearn import distributed, outputs, pipeline
from unlearn.config import Config
from unlearn.errors import DataError
from unlearn.io import read_csv_rows, write_csv_rows
from unlearn.methods import resolve
from unlearn.protocols import protocol_of
from unlearn.protocols.closer_look import check_eval_matches, load_judges
from unlearn.protocols.plan import plan_evaluation
from unlearn.reference import pinned_stats
from unlearn.rundir import CONTINUAL, FINISHED, RunDir

log = logging.getLogger("unlearn")


def parse_tasks(text: str | list | None, available: list[int]) -> list[int]:
    """``"1,2,3"``, ``"1-5"`` or a list; None means every task of the split, in order."""
    if text is None:
        return available
    try:
        if isinstance(text, (list, tuple)):
            tasks = [int(t) for t in text]
        else:
            tasks = []
            for piece in str(text).split(","):
                piece = piece.strip()
                if "-" in piece:
                    lo, hi = (int(x) for x in piece.split("-", 1))
                    if lo > hi:
                        raise DataError(
                            f"--tasks: the range {piece} is empty (write {hi}-{lo} for "
                            "ascending order, or list the tasks: 3,2,1)"
                        )
                    outside = [t for t in (lo, hi) if t not in available]
                    if outside:  # (checked on the ends: a range of 10^8 is never built)
                        raise DataError(
                            f"--tasks: task {outside[0]} of {piece} does not exist (tasks: "
                            f"{', '.join(map(str, available))})"
                        )
                    tasks += list(range(lo, hi + 1))
                elif piece:
                    tasks.append(int(piece))
    except ValueError:
        raise DataError(f"--tasks: {text!r} is not a list of task numbers (e.g. 1,2,3 or 1-5)") from None
    if not tasks:
        raise DataError(f"--tasks: {text!r} names no task")
    missing = [t for t in tasks if t not in available]
    if missing:
        more = " ..." if len(missing) > 10 else ""
        raise DataError(f"tasks {missing[:10]}{more} do not exist (tasks: {', '.join(map(str, available))})")
    if len(set(tasks)) != len(tasks):
        raise DataError(f"a task is listed twice in {text!r}")
    return tasks


def continual(cfg: Config, tasks: str | list | None = None, keep_checkpoints: bool = False) -> list[dict]:
    """Unlearn ``tasks`` in order under ``cfg.out``; returns the rows of ``continual.csv``."""
    if cfg.data is None or cfg.out is None:
        raise DataError("continual unlearning needs --data DIR and --out DIR")
    protocol_of(cfg).continual_tasks(cfg)  # a protocol without tasks says so before anything is written
    with RunDir(cfg.out).locked(distributed.is_main_process()):
        return _continual(cfg, tasks, keep_checkpoints)


def _continual(cfg: Config, tasks, keep_checkpoints: bool) -> list[dict]:
    if cfg.data is None or cfg.out is None:
        raise DataError("continual unlearning needs --data DIR and --out DIR")
    # The method and its arguments checked before anything runs, with the official continual
    # defaults written in (ME+GD's forget weight is 1.0 in the official continual script).
    protocol = protocol_of(cfg)
    _, cfg = resolve(protocol.with_defaults(cfg), "continual")
    task_list = parse_tasks(tasks, protocol.continual_tasks(cfg))
    root = RunDir(cfg.out)
    names = [CONTINUAL, "task_*"]  # a re-run continues (finished tasks are skipped), nothing is replaced
    outputs.claim(root.path, names, keep=names, what="a continual run")
    csv_path = root / CONTINUAL
    done_rows = {int(r["task"]): r for r in read_csv_rows(csv_path)}
    original = cfg.model
    if cfg.fix_ref_model and not Path(original).is_dir():
        raise DataError("--fix-ref-model needs the original model as a saved folder (--model DIR)")

    def finished(task) -> bool:
        # continual.csv gets a task's row once it is complete; its model may since have been pruned
        # (only the latest is kept), so its config stands for it then
        folder = root.task(task)
        return task in done_rows and (folder.status(evaluated=cfg.eval) == FINISHED or folder.config.is_file())

    # Every task's evaluation sets are checked, and the judges loaded, before the first task trains.
    pending = [t for t in task_list if not finished(t)]
    sets = {t: protocol.check(replace(cfg, task_id=t)) if cfg.eval and protocol.six_metrics else None for t in pending}
    for t in pending:  # each task's Forget set is the one it trains on
        check_eval_matches(sets[t], protocol.task_data(cfg, task_list, t))
    judges = load_judges(cfg) if any(sets.values()) else None
    # With the reference pinned to the original model, NPO/DPO's reference NLLs of every task come
    # from one pass of the original model, before any training.
    ref_stats = (
        pinned_stats(cfg, {t: protocol.task_data(cfg, task_list, t) for t in pending}, template=protocol.template)
        if cfg.fix_ref_model
        else {}
    )

    previous = original
    for i, task in enumerate(task_list):
        task_dir = root.task(task)
        if task not in pending:
            log.info("task %s already done, resuming after it", task)
            previous = str(task_dir.model)
            continue
        # A task killed mid-training resumes from its checkpoint (with --save-every); a task
        # killed without one is redone from its start.
        resume = task_dir.resumable()
        sub = replace(
            cfg,
            model=previous,
            out=str(task_dir.path),
            task_id=task,
            resume=resume,
            overwrite=not resume,
            ref_model=original if cfg.fix_ref_model else cfg.ref_model,
        )
        data = protocol.task_data(cfg, task_list, task)
        log.info(
            "continual: task %s (%d of %d), %d forget / %d retain rows",
            task,
            i + 1,
            len(task_list),
            len(data.forget),
            len(data.retain),
        )
        start = time.perf_counter()
        result = pipeline.run(
            sub, data=data, ref_stats=ref_stats.get(task), plan=plan_evaluation(sub, judges=judges, sets=sets[task])
        )
        done_rows[task] = {
            "task": task,
            "n_unlearned": i + 1,
            **{k: v for k, v in (result.summary or {}).items() if not isinstance(v, (dict, list))},
            # wall time of the attempt that finished the task (from its checkpoint when resumed)
            "seconds": round(time.perf_counter() - start, 1),
        }
        if distributed.is_main_process():
            write_csv_rows(csv_path, [done_rows[t] for t in task_list if t in done_rows])
            # Only the latest model is needed to go on; older ones are removed unless asked to keep them.
            if not keep_checkpoints and i > 0:
                old = root.task(task_list[i - 1]).model
                if old.exists() and str(old) != original:
                    shutil.rmtree(old)
        distributed.wait_for_everyone()
        previous = str(task_dir.model)
        del result
    return [done_rows[t] for t in task_list if t in done_rows]
