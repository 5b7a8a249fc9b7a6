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

from unlearn.config import Config
from unlearn.distributed import is_main_process, wait_for_everyone
from unlearn.data import SPLITS, detect_layout, load_real_world, load_tofu, read_records, task_ids_of, with_scenario_defaults
from unlearn.errors import DataError
from unlearn.io import read_csv_rows, write_csv_rows
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
                        raise DataError(f"--tasks: the range {piece} is empty (write {hi}-{lo} for "
                                        "ascending order, or list the tasks: 3,2,1)")
                    tasks += list(range(lo, hi + 1))
                elif piece:
                    tasks.append(int(piece))
    except ValueError:
        raise DataError(f"--tasks: {text!r} is not a list of task numbers (e.g. 1,2,3 or 1-5)") from None
    if not tasks:
        raise DataError(f"--tasks: {text!r} names no task")
    missing = [t for t in tasks if t not in available]
    if missing:
        raise DataError(f"tasks {missing} do not exist (tasks: {', '.join(map(str, available))})")
    if len(set(tasks)) != len(tasks):
        raise DataError(f"a task is listed twice in {text!r}")
    return tasks


MUSE_SUSTAINABILITY = "sust/forget_{}"  # MUSE's successive unlearning requests: task N forgets sust/forget_N


def _layout(cfg: Config) -> str:
    return "muse" if cfg.benchmark == "muse" else detect_layout(cfg.data)


def _available_tasks(cfg: Config) -> list[int]:
    layout = _layout(cfg)
    if layout == "muse":  # sustainability: the four successive forget sets
        from unlearn.protocols.muse import MuseSource

        src = MuseSource(cfg.data)
        return [n for n in range(1, 5) if src.has("sust", f"forget_{n}")]
    if layout == "tofu":
        if cfg.split not in SPLITS:
            raise DataError(f"unknown split '{cfg.split}' (valid: {', '.join(SPLITS)})")
        return task_ids_of(read_records(Path(cfg.data) / f"{cfg.split}.json"))
    if layout == "real_world":
        return task_ids_of(read_records(Path(cfg.data) / "forget.json"))
    raise DataError("continual unlearning needs a TOFU or real-world folder with task ids")


def _task_data(cfg: Config, layout: str, task_list: list[int], task: int):
    """Task ``task``'s forget rows, and a retain set holding the tasks not unlearned before it."""
    if layout == "tofu":
        return load_tofu(cfg.data, cfg.split, task, unlearned=task_list[: task_list.index(task)])
    if layout == "muse":
        from unlearn.data import load_unlearning_data

        split = MUSE_SUSTAINABILITY.format(task)
        data = load_unlearning_data(cfg.data, split, benchmark="muse")
        data.info["task_id"] = task
        return data
    return load_real_world(cfg.data, task)


def continual(cfg: Config, tasks: str | list | None = None, keep_checkpoints: bool = False) -> list[dict]:
    """Unlearn ``tasks`` in order under ``cfg.out``; returns the rows of ``continual.csv``."""
    if cfg.data is None or cfg.out is None:
        raise DataError("continual unlearning needs --data DIR and --out DIR")
    if cfg.benchmark == "tofu":
        from unlearn.errors import ConfigError

        raise ConfigError("continual unlearning runs the closer-look protocol's tasks (task_id in the forget files); "
                          "the TOFU standard (--benchmark tofu) has none: unlearn each split with unlearn run")
    with RunDir(cfg.out).locked(is_main_process()):
        return _continual(cfg, tasks, keep_checkpoints)


def _continual(cfg: Config, tasks, keep_checkpoints: bool) -> list[dict]:
    from unlearn.protocols.plan import check_eval_matches, eval_sets_for, load_judges, plan_evaluation
    from unlearn.methods import resolve
    from unlearn.pipeline import run
    from unlearn.reference import pinned_stats

    if cfg.data is None or cfg.out is None:
        raise DataError("continual unlearning needs --data DIR and --out DIR")
    # The method and its arguments checked before anything runs, with the official continual
    # defaults written in (ME+GD's forget weight is 1.0 in the official continual script).
    _, cfg = resolve(with_scenario_defaults(cfg), "continual")
    task_list = parse_tasks(tasks, _available_tasks(cfg))
    layout = _layout(cfg)
    root = RunDir(cfg.out)
    root.path.mkdir(parents=True, exist_ok=True)
    csv_path = root / CONTINUAL
    done_rows = {int(r["task"]): r for r in read_csv_rows(csv_path)}
    original = cfg.model
    if cfg.fix_ref_model and not Path(original).is_dir():
        raise DataError("--fix-ref-model needs the original model as a saved folder (--model DIR)")

    def finished(task) -> bool:
        return root.task(task).status(evaluated=cfg.eval) == FINISHED and task in done_rows

    # Every task's evaluation sets are checked, and the judges loaded, before the first task trains.
    pending = [t for t in task_list if not finished(t)]
    sets = {t: eval_sets_for(replace(cfg, task_id=t)) if cfg.eval and layout != "muse" else None for t in pending}
    for t in pending:  # each task's Forget set is the one it trains on
        check_eval_matches(sets[t], _task_data(cfg, layout, task_list, t))
    judges = load_judges(cfg) if any(sets.values()) else None
    # With the reference pinned to the original model, NPO/DPO's reference NLLs of every task come
    # from one pass of the original model, before any training.
    ref_stats = pinned_stats(cfg, {t: _task_data(cfg, layout, task_list, t) for t in pending}) \
        if cfg.fix_ref_model else {}

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
        sub = replace(cfg, model=previous, out=str(task_dir.path), task_id=task, resume=resume, overwrite=not resume,
                      ref_model=original if cfg.fix_ref_model else cfg.ref_model)
        data = _task_data(cfg, layout, task_list, task)
        log.info("continual: task %s (%d of %d), %d forget / %d retain rows",
                 task, i + 1, len(task_list), len(data.forget), len(data.retain))
        start = time.perf_counter()
        result = run(sub, data=data, ref_stats=ref_stats.get(task),
                     plan=plan_evaluation(sub, judges=judges, sets=sets[task]))
        done_rows[task] = {"task": task, "n_unlearned": i + 1,
                           **{k: v for k, v in (result.summary or {}).items() if not isinstance(v, (dict, list))},
                           # wall time of the attempt that finished the task (from its checkpoint when resumed)
                           "seconds": round(time.perf_counter() - start, 1)}
        if is_main_process():
            write_csv_rows(csv_path, [done_rows[t] for t in task_list if t in done_rows])
            # Only the latest model is needed to go on; older ones are removed unless asked to keep them.
            if not keep_checkpoints and i > 0:
                old = root.task(task_list[i - 1]).model
                if old.exists() and str(old) != original:
                    shutil.rmtree(old)
        wait_for_everyone()
        previous = str(task_dir.model)
        del result
    return [done_rows[t] for t in task_list if t in done_rows]
