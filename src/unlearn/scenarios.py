"""Continual unlearning (PAPER.md §3.2): tasks unlearned one after another.

Task k starts from the model unlearned at task k-1. Its retain set is ``retain(100-10*XX)``
plus the forget rows of the tasks not unlearned yet. The reference model is the previous
checkpoint (the model itself when the task starts), unless ``--fix-ref-model`` pins it to the
original model. After every task the model is evaluated and one row is added to
``continual.csv``; rerunning the command resumes at the first unfinished task.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from .config import Config
from .distributed import is_main_process, wait_for_everyone
from .data import DataError, detect_layout, load_real_world, load_tofu, task_ids_of, read_records, SPLITS
from .io import read_csv_rows, write_csv_rows

log = logging.getLogger("unlearn")


def parse_tasks(text: str | list | None, available: list[int]) -> list[int]:
    """``"1,2,3"``, ``"1-5"`` or a list; None means every task of the split, in order."""
    if text is None:
        return available
    if isinstance(text, (list, tuple)):
        tasks = [int(t) for t in text]
    else:
        tasks = []
        for piece in str(text).split(","):
            piece = piece.strip()
            if "-" in piece:
                lo, hi = piece.split("-", 1)
                tasks += list(range(int(lo), int(hi) + 1))
            elif piece:
                tasks.append(int(piece))
    missing = [t for t in tasks if t not in available]
    if missing:
        raise DataError(f"tasks {missing} do not exist (tasks: {', '.join(map(str, available))})")
    if len(set(tasks)) != len(tasks):
        raise DataError(f"a task is listed twice in {text!r}")
    return tasks


def _available_tasks(cfg: Config) -> list[int]:
    layout = detect_layout(cfg.data)
    if layout == "tofu":
        if cfg.split not in SPLITS:
            raise DataError(f"unknown split '{cfg.split}' (valid: {', '.join(SPLITS)})")
        return task_ids_of(read_records(Path(cfg.data) / f"{cfg.split}.json"))
    if layout == "real_world":
        return task_ids_of(read_records(Path(cfg.data) / "forget.json"))
    raise DataError("continual unlearning needs a TOFU or real-world folder with task ids")


def _task_done(task_dir: Path, evaluated: bool) -> bool:
    return (task_dir / ("summary.json" if evaluated else "model")).exists()


def _task_data(cfg: Config, layout: str, task_list: list[int], task: int):
    """Task ``task``'s forget rows, and a retain set holding the tasks not unlearned before it."""
    if layout == "tofu":
        return load_tofu(cfg.data, cfg.split, task, unlearned=task_list[: task_list.index(task)])
    return load_real_world(cfg.data, task)


def original_reference_stats(cfg: Config, task_data: dict) -> dict[int, dict]:
    """``{task: reference NLLs}`` of the original model ``cfg.model`` for NPO/DPO; ``{}`` for other methods.

    Reference statistics exist only for forget-side sequences (the forget answer and its
    refusal), which do not depend on the retain set (a refusal is drawn before the retain
    partner), so each task's are those :func:`unlearn.pipeline.unlearn` would compute from the
    task's own data set with the original model as ``--ref-model``.
    """
    from . import distributed
    from .data import UnlearningDataset, read_refusals
    from .methods import build_objective
    from .models import load_model
    from .pipeline import resolve_method_defaults
    from .prompts import detect_prompt_format
    from .train import reference_nlls

    c = resolve_method_defaults(dataclasses.replace(cfg))
    objective = build_objective(c.method, c.forget_coeff, c.reg_coeff, c.beta)
    if not objective.ref_nll_parts or not task_data:
        return {}
    refusals = read_refusals(c.idk)
    accelerator = distributed.make_accelerator(c)
    ref, tokenizer = load_model(c.model, dtype=c.dtype, trust_remote_code=c.trust_remote_code,
                                attn_implementation=c.attn_implementation)
    fmt = detect_prompt_format(tokenizer, c.model, c.prompt_format)
    ref = distributed.prepare_reference(ref, accelerator)
    stats = {}
    for task, data in task_data.items():
        dataset = UnlearningDataset(data.forget, data.retain, tokenizer, fmt, objective.ref_nll_parts, refusals,
                                    c.max_length, mask_forget=c.mask, seed=c.seed)
        stats[task] = reference_nlls(ref, dataset, objective.ref_nll_parts, tokenizer, c.batch_size, accelerator,
                                     desc=f"reference NLLs of task {task}")
    del ref
    return stats


def continual(cfg: Config, tasks: str | list | None = None, keep_checkpoints: bool = False) -> list[dict]:
    """Unlearn ``tasks`` in order under ``cfg.out``; returns the rows of ``continual.csv``."""
    from .evals.commands import eval_sets_for, evaluate_after_unlearning
    from .methods import parse_method
    from .pipeline import unlearn

    if cfg.data is None or cfg.out is None:
        raise DataError("continual unlearning needs --data DIR and --out DIR")
    try:
        parse_method(cfg.method)
    except ValueError as e:
        raise DataError(str(e)) from None
    task_list = parse_tasks(tasks, _available_tasks(cfg))
    layout = detect_layout(cfg.data)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / "continual.csv"
    rows = read_csv_rows(csv_path)
    done_rows = {int(r["task"]): r for r in rows}
    original = cfg.model
    if cfg.fix_ref_model and not Path(original).is_dir():
        raise DataError("--fix-ref-model needs the original model as a saved folder (--model DIR)")

    # With the reference pinned to the original model, NPO/DPO's reference NLLs of every task come
    # from one pass of the original model, before any training: it is loaded once, never per task,
    # and never beside a model being trained.
    pending = [t for t in task_list if not (_task_done(root / f"task_{t}", cfg.eval) and t in done_rows)]
    ref_stats = original_reference_stats(cfg, {t: _task_data(cfg, layout, task_list, t) for t in pending}) \
        if cfg.fix_ref_model else {}

    previous = original
    for i, task in enumerate(task_list):
        task_dir = root / f"task_{task}"
        sub = dataclasses.replace(cfg, model=previous, out=str(task_dir), task_id=task,
                                  ref_model=original if cfg.fix_ref_model else cfg.ref_model)
        if _task_done(task_dir, cfg.eval) and task in done_rows:
            log.info("task %s already done, resuming after it", task)
            previous = str(task_dir / "model")
            continue
        from . import checkpoint

        # A task killed mid-training resumes from its checkpoint (with --save-every); a task
        # killed without one is redone from its start.
        sub.resume = checkpoint.resumable(task_dir)
        sub.overwrite = not sub.resume
        data = _task_data(cfg, layout, task_list, task)
        sets = eval_sets_for(sub) if cfg.eval else None
        log.info("continual: task %s (%d of %d), %d forget / %d retain rows",
                 task, i + 1, len(task_list), len(data.forget), len(data.retain))
        result = unlearn(sub, data=data, ref_stats=ref_stats.get(task))
        summary = {}
        if sets:  # every process evaluates its share; the main process writes
            summary = evaluate_after_unlearning(sub, result["model_obj"], result["tokenizer"],
                                                result["prompt_format"], task_dir, sets=sets, shard=True) or {}
        done_rows[task] = {"task": task, "n_unlearned": i + 1,
                           **{k: v for k, v in summary.items() if not isinstance(v, (dict, list))}}
        if is_main_process():
            write_csv_rows(csv_path, [done_rows[t] for t in task_list if t in done_rows])
            # Only the latest model is needed to go on; older ones are removed unless asked to keep them.
            if not keep_checkpoints and i > 0:
                old = root / f"task_{task_list[i - 1]}" / "model"
                if old.exists() and str(old) != original:
                    shutil.rmtree(old)
        wait_for_everyone()
        previous = str(task_dir / "model")
        del result
    return [done_rows[t] for t in task_list if t in done_rows]
