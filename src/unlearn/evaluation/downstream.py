"""General-ability evaluation with lm-evaluation-harness (docs/methods.md §3, real-world scenario).

The paper checks that unlearning leaves general abilities intact with five lm-eval tasks, each
scored by one metric after one filter (``PAPER_TASKS``). :func:`run_downstream` evaluates the
in-memory model (no save/reload round trip) through lm-eval's Hugging Face wrapper and writes
``downstream.json``::

    {"arc_challenge": {"acc_norm": 0.27}, "gsm8k": {"exact_match,flexible-extract": 0.02},
     "average": 0.145, "stderr": {"arc_challenge": 0.013, "gsm8k": 0.004, "average": 0.0068}}

A metric is named ``metric`` when lm-eval applied no filter (``none``), else ``metric,filter``,
exactly as lm-eval reports it. ``average`` is the mean of each task's headline metric: the paper's
metric for the five tasks, the first metric reported for any other task. ``stderr``: lm-eval's
standard error of each headline metric (closed form for a mean such as accuracy, its bootstrap of
:data:`STDERR_RESAMPLES` draws otherwise; none when it gives none), and of the average (the tasks taken
as independent). ``intervals.json`` gets ``value ± 1.96 · stderr`` of each (a normal approximation,
kept within [0, 1]), beside the bootstrap intervals of the other metrics.

lm-eval is an optional dependency: ``pip install 'unlearn-llm[downstream]'``.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from unlearn.errors import ConfigError, DataError, DependencyError, ModelError
from unlearn.io import atomic_write_json
from unlearn.rundir import DOWNSTREAM, INTERVALS

log = logging.getLogger(__name__)

#: task -> (metric, filter) the paper reports.
PAPER_TASKS: dict[str, tuple[str, str]] = {
    "arc_challenge": ("acc_norm", "none"),
    "mmlu": ("acc", "none"),
    "truthfulqa_mc1": ("acc", "none"),
    "triviaqa": ("exact_match", "remove_whitespace"),
    "gsm8k": ("exact_match", "flexible-extract"),
}
STDERR_RESAMPLES = 1000  # lm-eval's bootstrap_iters: its standard errors (closed form for means)
META = ("average", "stderr")  # the keys of downstream.json that are not tasks
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
PAPER_ALIAS = "paper"  # ``--downstream paper`` = the five tasks above
INSTALL_HINT = "downstream evaluation needs lm-eval: pip install 'unlearn-llm[downstream]'"


def parse_tasks(spec: str | list[str]) -> list[str]:
    """``"arc_challenge, mmlu"`` -> ``["arc_challenge", "mmlu"]``; ``paper`` expands to the five."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for name in (n.strip() for n in names):
        for task in PAPER_TASKS if name == PAPER_ALIAS else [name] if name else []:
            if task not in out:
                out.append(task)
    if not out:
        raise ConfigError("downstream: no task named (e.g. --downstream arc_challenge,mmlu or 'paper')")
    return out


def metric_name(metric: str, filt: str) -> str:
    return metric if filt == "none" else f"{metric},{filt}"


def check_downstream(tasks: list[str], include_path: str | Path | None = None) -> None:
    """Fail fast, before any training: lm-eval is installed, the folder exists, the tasks are known."""
    _require_lm_eval()
    if include_path is not None and not Path(include_path).is_dir():
        raise DataError(f"{include_path}: downstream task folder not found")
    _task_manager(tuple(tasks), None if include_path is None else str(include_path))


def run_downstream(
    model,
    tokenizer,
    tasks: list[str],
    out_dir: str | Path,
    batch_size: int = 8,
    limit: int | float | None = None,
    include_path: str | Path | None = None,
    num_fewshot: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on lm-eval ``tasks``; write ``out_dir/downstream.json`` and return it.

    ``tasks`` are lm-eval task or group names (``PAPER_TASKS`` for the paper's five) or names of
    tasks defined by YAML files under ``include_path``. ``limit`` caps the items per task (an
    int, or a fraction below 1) for quick checks; ``num_fewshot`` overrides the tasks' default.

    The hub tasks download their data sets from the Hugging Face Hub on first use, so they need
    the network (or a filled ``HF_DATASETS_CACHE``). Custom tasks on local files
    (``dataset_path: json`` with absolute ``data_files``) run offline; only these skip the
    ~10 s scan of lm-eval's built-in task list.

    Tasks run one at a time and ``downstream.json`` is rewritten (atomically) after each, so an
    interrupted run keeps what it finished. The model is left in eval mode.
    """
    lm_eval = _require_lm_eval()
    from lm_eval.models.huggingface import HFLM  # optional: the downstream extra (checked just above)

    tasks = list(tasks)
    manager = _task_manager(tuple(tasks), None if include_path is None else str(include_path))
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out_path = Path(out_dir) / DOWNSTREAM
    scores: dict[str, dict[str, float]] = {}
    headline: dict[str, float] = {}
    errors: dict[str, float] = {}
    for i, task in enumerate(tasks, 1):
        log.info("downstream [%d/%d] %s%s", i, len(tasks), task, f" (limit {limit})" if limit else "")
        try:
            res = lm_eval.simple_evaluate(
                model=lm,
                tasks=[task],
                num_fewshot=num_fewshot,
                limit=limit,
                task_manager=manager,
                log_samples=False,
                bootstrap_iters=STDERR_RESAMPLES,
            )
        except ConnectionError as e:
            raise ModelError(
                f"downstream task {task}: {e} (hub tasks need the network or their data in HF_DATASETS_CACHE)"
            ) from e
        scores[task], headline[task] = _task_scores(task, res)
        error = _headline_stderr(task, res, scores[task])
        if error is not None:
            errors[task] = error
        log.info(
            "downstream [%d/%d] %s: %s", i, len(tasks), task, ", ".join(f"{k} {v:.4f}" for k, v in scores[task].items())
        )
        atomic_write_json(out_path, _with_average(scores, headline, errors))
    return _with_average(scores, headline, errors)


def downstream_tasks_for(cfg) -> list[str]:
    """``cfg.downstream`` parsed and checked (lm-eval installed, tasks known) before training starts."""
    tasks = parse_tasks(cfg.downstream)
    check_downstream(tasks, cfg.downstream_include)
    return tasks


def downstream_after_unlearning(
    model,
    tokenizer,
    out,
    tasks: list[str],
    batch_size: int,
    limit: int | None = None,
    include_path: str | None = None,
    by_task: bool = False,
) -> dict[str, Any]:
    """After a run: write ``OUT/downstream.json`` and add its entries to ``OUT/summary.json``
    (``out``: a :class:`unlearn.rundir.RunDir`); ``by_task``: each task's headline value under the
    task's own name too (WMDP, whose tasks are its evaluation)."""
    result = run_downstream(
        model, tokenizer, tasks, out.path, batch_size=batch_size, limit=limit, include_path=include_path
    )
    summary = out.read_summary()
    if summary is not None:
        extra = _short_entries(result) if by_task else {}
        add_intervals(out.path / INTERVALS, result, by_task)
        atomic_write_json(out.summary, {**summary, **summary_entries(result), **extra})
    log.info("wrote the downstream evaluation to %s", out.downstream)
    return result


def _short_entries(downstream: dict[str, Any]) -> dict[str, float]:
    """``--benchmark wmdp``: each task's headline metric under the task's own name (``wmdp_bio``, ``mmlu``)."""
    return {
        task: metrics[_headline_key(task, metrics)]
        for task, metrics in downstream.items()
        if task not in META and metrics
    }


def summary_entries(downstream: dict[str, Any]) -> dict[str, float]:
    """``summary.json`` keys: ``Downstream <task>`` (headline metric) and ``Downstream Average``."""
    out = {}
    for task, metrics in downstream.items():
        if task in META or not metrics:
            continue
        out[f"Downstream {task}"] = metrics[_headline_key(task, metrics)]
    if downstream.get("average") is not None:
        out["Downstream Average"] = downstream["average"]
    return out


# ----------------------------------------------------------------------------------- internals


def _require_lm_eval():
    try:
        import lm_eval  # optional: the downstream extra; its absence is said plainly below
    except ImportError:
        raise DependencyError(INSTALL_HINT) from None
    return lm_eval


@lru_cache(maxsize=2)
def _task_manager(tasks: tuple[str, ...], include_path: str | None):
    """A TaskManager that knows ``tasks``. Indexing lm-eval's built-in tasks takes ~10 s, so when
    every task is defined under ``include_path`` the built-ins are left out."""
    from lm_eval.tasks import TaskManager  # optional: the downstream extra

    if include_path is not None:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
    manager = TaskManager(include_path=include_path)
    _check_known(tasks, manager, include_path)
    return manager


def _check_known(tasks, manager, include_path) -> None:
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        hints = {t: difflib.get_close_matches(t, manager.all_tasks, n=3) for t in unknown}
        where = f" or under {include_path}" if include_path else ""
        raise ConfigError(
            "unknown lm-eval task(s): "
            + "; ".join(f"{t}" + (f" (did you mean {', '.join(h)}?)" if h else "") for t, h in hints.items())
            + f". Known: lm-eval's built-in tasks{where}; the paper's are {', '.join(PAPER_TASKS)}"
        )


def _task_scores(task: str, res: dict | None) -> tuple[dict[str, float], float | None]:
    """The metrics to keep for ``task`` from ``simple_evaluate``'s result, and the headline one."""
    if res is None:  # a non-zero rank under a multi-process launch
        return {}, None
    row = res.get("results", {}).get(task) or res.get("groups", {}).get(task)
    if row is None:
        raise ValueError(f"lm-eval reported no result for task {task!r} (got {sorted(res.get('results', {}))})")
    numeric = {}
    for key, value in row.items():
        if "," not in key or "_stderr," in key or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            metric, filt = key.split(",", 1)
            numeric[metric_name(metric, filt)] = float(value)
    if task in PAPER_TASKS:
        name = metric_name(*PAPER_TASKS[task])
        if name not in numeric:
            raise ValueError(f"lm-eval reported no {name!r} for {task} (got {', '.join(numeric) or 'nothing'})")
        return {name: numeric[name]}, numeric[name]
    if not numeric:
        raise ValueError(f"lm-eval reported no numeric metric for task {task!r}")
    return numeric, numeric[_headline_key(task, numeric)]


def _headline_key(task: str, metrics: dict[str, float]) -> str:
    if task in PAPER_TASKS and metric_name(*PAPER_TASKS[task]) in metrics:
        return metric_name(*PAPER_TASKS[task])
    return next(iter(metrics))


def _with_average(scores: dict, headline: dict, errors: dict | None = None) -> dict[str, Any]:
    values = [v for v in headline.values() if v is not None]
    out = {**scores, "average": sum(values) / len(values) if values else None}
    errors = dict(errors or {})
    if values and len(errors) == len(values):  # the mean of independent tasks' headlines
        errors["average"] = math.sqrt(sum(e * e for e in errors.values())) / len(values)
    if errors:
        out["stderr"] = errors
    return out


def _headline_stderr(task: str, res: dict | None, metrics: dict[str, float]) -> float | None:
    """lm-eval's standard error of the task's headline metric (``<metric>_stderr,<filter>``), if finite."""
    if res is None or not metrics:
        return None
    row = res.get("results", {}).get(task) or res.get("groups", {}).get(task) or {}
    metric, _, filt = _headline_key(task, metrics).partition(",")
    value = row.get(f"{metric}_stderr,{filt or 'none'}")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def normal_interval(value: float, stderr: float) -> dict[str, float]:
    """``value ± 1.96 · stderr``, kept within [0, 1] (scores of a fraction of items)."""
    return {"value": value, "lo": max(0.0, value - Z95 * stderr), "hi": min(1.0, value + Z95 * stderr)}


def add_intervals(path: Path, downstream: dict[str, Any], by_task: bool = False) -> None:
    """Add each task's (and the average's) interval to ``intervals.json`` under its summary key."""
    errors = downstream.get("stderr") or {}
    entries = {}
    for task, error in errors.items():
        value = downstream["average"] if task == "average" else None
        if task != "average":
            metrics = downstream.get(task) or {}
            value = metrics.get(_headline_key(task, metrics)) if metrics else None
        if value is None:
            continue
        iv = normal_interval(value, error)
        entries["Downstream Average" if task == "average" else f"Downstream {task}"] = iv
        if by_task and task != "average":
            entries[task] = iv
    if not entries:
        return
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = {"intervals": {}}
    current.setdefault("intervals", {}).update(entries)
    current["downstream"] = "lm-eval's standard error: value ± 1.96 · stderr (a normal approximation)"
    atomic_write_json(path, current)
