"""What a benchmark protocol is: the questions the rest of the code asks it, with the default answers.

A protocol owns everything that differs between benchmarks: where its data comes from and how it
is read, its defaults (lengths, splits), its prompt template, what it evaluates and how, and its
summary keys and table. The registry (:mod:`unlearn.protocols`) maps a ``--benchmark`` name to
one instance; nothing outside a protocol module compares that name.

The defaults here are the data layouts' (:mod:`unlearn.data`): a TOFU or real-world folder, or
your own files, trained on as they are. A protocol overrides only what it does differently.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import torch

from unlearn import distributed
from unlearn.data import (
    DEFAULT_MAX_LENGTH,
    IDK_FILE,
    SCENARIO_MAX_LENGTH,
    UnlearningData,
    continual_task_data,
    continual_tasks,
    detect_layout,
    load_unlearning_data,
)
from unlearn.errors import ConfigError
from unlearn.evaluation.intervals import as_json, read_intervals
from unlearn.evaluation.verdicts import print_before_after, verdict_on
from unlearn.io import atomic_write_json, json_safe
from unlearn.methods import parse_method
from unlearn.rundir import INTERVALS, RunDir


class Protocol:
    """A benchmark protocol (see the module docstring). Subclasses set the class attributes and
    override the methods whose default does not fit."""

    name: ClassVar[str]
    description: ClassVar[str]
    six_metrics: ClassVar[bool] = False
    """Evaluates the paper's six metrics on question/answer sets (so ``--eval-every``, ``--eval-data``,
    ``--holdout``, ``--retain-model`` as a ratio source and the judges apply)."""
    max_length: ClassVar[int | None] = None  # the training length; None: the data layout's
    reads_retain_logs: ClassVar[bool] = False  # takes --retain-logs (a retain model's saved evaluation)
    downstream_is_evaluation: ClassVar[bool] = False  # its lm-eval tasks are its evaluation
    before_after: ClassVar[bool] = True  # --baseline: a before/after table of its summary
    table: ClassVar[tuple[str, tuple[str, ...]] | None] = None  # report: (title, summary keys) of its own table
    text_packing: ClassVar[str] = "muse"  # how raw text is cut (unlearn.encoding.PACKINGS)
    rows_follow_method: ClassVar[bool] = False  # its training rows depend on the method (RWKU's corpora)
    in_context: ClassVar[bool] = False  # evaluates an in-context method (ICU: an instruction before every prompt)
    own_eval_sets: ClassVar[bool] = False  # --eval-sets picks the groups its evaluation runs (not --eval-every's)

    # ------------------------------------------------------------------ data
    def layout(self, cfg) -> str:
        """``files`` (``--forget``), a folder's layout (``tofu`` | ``real_world`` | ``hub``), or ``none``."""
        if cfg.forget is not None:
            return "files"
        return detect_layout(cfg.data) if cfg.data else "none"

    def defaults(self, cfg) -> dict:
        """The settings it fills in where ``cfg`` leaves them unset: TOFU's task 1, the layout's
        training length, the official refusals when they lie beside the data."""
        layout = self.layout(cfg)
        changes: dict = {}
        if cfg.task_id is None and layout == "tofu":
            changes["task_id"] = 1
        if cfg.max_length is None:
            changes["max_length"] = self.max_length or SCENARIO_MAX_LENGTH.get(layout, DEFAULT_MAX_LENGTH)
        if cfg.idk is None and layout in ("tofu", "real_world"):
            here = Path(cfg.data)
            found = next((d / IDK_FILE for d in (here, here.parent) if (d / IDK_FILE).is_file()), None)
            if found is not None:
                changes["idk"] = str(found)
        return changes

    def with_defaults(self, cfg):
        changes = self.defaults(cfg)
        return dataclasses.replace(cfg, **changes) if changes else cfg

    def training_data(self, cfg, unlearned=()) -> UnlearningData:
        """The forget and retain rows a run of ``cfg`` trains on."""
        return load_unlearning_data(cfg.data, cfg.split, cfg.task_id, cfg.forget, cfg.retain, unlearned)

    def continual_tasks(self, cfg) -> list[int]:
        """The task ids continual unlearning can take, in the data's order."""
        return continual_tasks(cfg.data, cfg.split)

    def task_data(self, cfg, order: list[int], task: int) -> UnlearningData:
        """Task ``task``'s forget rows, and a retain set holding the tasks not unlearned before it."""
        return continual_task_data(cfg.data, cfg.split, order, task)

    def template(self, fmt):
        """The prompt format its sequences are encoded with, from the model's own ``fmt``."""
        return fmt

    # ------------------------------------------------------------------ evaluation
    def check_flags(self, cfg) -> None:
        """Flags that belong to another protocol, refused before anything loads."""
        if parse_method(cfg.method)[0].in_context and not self.in_context:
            raise ConfigError(f"{cfg.method} (in-context unlearning) is evaluated with --benchmark rwku")
        if cfg.retain_logs and not self.reads_retain_logs:
            raise ConfigError(
                "--retain-logs reads a TOFU_EVAL.json for the TOFU standard: add --benchmark tofu "
                "(the closer-look protocol takes --retain-model)"
            )

    def check(self, cfg):
        """Its evaluation inputs read and checked, nothing loaded (a sweep plans every run this way).
        Returns the six-metric sets when it has them, else None."""
        raise NotImplementedError

    def plan(self, cfg, plan, judges=None, sets=None) -> None:
        """Fill ``plan`` (:class:`unlearn.protocols.plan.EvalPlan`) with what it evaluates, checked now."""
        raise NotImplementedError

    def evaluate(self, plan, model, tokenizer, fmt, out, shard: bool, done: dict | None) -> dict | None:
        """Evaluate ``model`` as ``plan`` says; the main process writes into ``out``. Returns the summary."""
        raise NotImplementedError

    def evaluate_before(self, plan, model, tokenizer, fmt, out_dir):
        """``(summary, intervals)`` of the model before unlearning, written to ``out_dir`` (read back
        when it is there), for the run's verdict; None when the protocol gives no verdict."""
        return None

    def conclude(self, plan, out, before, steps: int | None, steps_hint: str, refusals: list[str]):
        """The run's :class:`~unlearn.evaluation.verdicts.Verdict` from its evaluation in ``out`` and
        ``before`` (:meth:`evaluate_before`), added to its ``summary.json``; None without one."""
        return None

    def before_with(self, out_dir, compute):
        """``(summary, intervals, folder)`` of the model before unlearning in ``out_dir``: read back when
        a resumed run has it, else ``compute()`` -> (summary, intervals, files to write: name -> JSON),
        written there by the main process (the run's random draws left as they were)."""
        out = RunDir(out_dir)
        saved = out.read_summary()
        if saved is not None:
            return saved, read_intervals(out.path), out.path
        with torch.random.fork_rng():
            summary, intervals, files = compute()
        if distributed.is_main_process():
            out.path.mkdir(parents=True, exist_ok=True)
            for name, content in files.items():
                atomic_write_json(out.path / name, json_safe(content))
            if intervals:
                atomic_write_json(out.path / INTERVALS, json_safe(as_json(intervals)))
            atomic_write_json(out.summary, json_safe(summary))  # last: it marks a complete result
        return summary, intervals, out.path

    def conclude_on(self, out, before, forget: tuple, keep: tuple, steps, steps_hint):
        """The verdict from this protocol's own ``forget`` and ``keep`` keys (:func:`verdict_on`), with
        the before/after table printed, added to ``summary.json``."""
        summary = out.read_summary()
        if before is None or summary is None:
            return None
        before_summary, before_iv = before[:2]
        print_before_after(before_summary, summary, before_iv, read_intervals(out.path), forget + keep)
        found = verdict_on(before_summary, summary, before_iv, forget, keep, steps, steps_hint)
        atomic_write_json(out.summary, json_safe({**summary, "verdict": found.as_dict()}))
        return found

    def eval_texts(self, plan) -> list[str]:
        """The texts its evaluation encodes (a model converted on the fly takes its vocabulary from them)."""
        return []

    def audit_sets(self, cfg):
        """``(sets, holdout)``: the forget (and retain) sets an audit attacks, and its holdout rows (or None)."""
        raise NotImplementedError

    def table_keys(self, summaries: list[dict]) -> tuple[str, ...]:
        """The summary keys of its report table."""
        return self.table[1] if self.table else ()

    def reference(self, plan):
        """What it computed from the retain model (shared by a sweep's runs on the same sets)."""
        return plan.reference

    def set_reference(self, plan, value) -> None:
        plan.reference = value
