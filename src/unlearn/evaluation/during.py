"""Evaluation while unlearning (``--eval-every N``): the paper's trajectories, collapse warnings, ``--keep best``.

Before the first step and every ``N`` optimiser steps the training loop hands the model to
:class:`TrainingEval`, which evaluates the chosen sets (``--eval-sets``) with the evaluation of
:mod:`unlearn.evaluation.six_metrics` and appends one row to ``OUT/eval_log.jsonl``: the step, the epoch
and every summary value. ``unlearn report`` draws Model Utility and Forget Efficacy (and any
metric of the log) against steps.

**Collapse.** A row whose Retain ROUGE or Forget Token Entropy has fallen below half its value
before training is marked (``collapse``: what fell) and said in the log, once per metric: a
model that answers nothing, or repeats one token, forgets "perfectly" and is useless.

**--keep best.** Among the evaluated weights whose Model Utility is at least ``--mu-floor``
times the starting one, the model saved is the one with the highest Forget Efficacy (ties: the
earlier step). Each new best is written to ``OUT/.best-<step>`` (safetensors); older ones are
deleted once no checkpoint can need them, so a resumed run (whose log is cut back to its
checkpoint) still finds the weights of its best step. The run says which step it kept, and
``OUT/kept.json`` records it.

**The last step, the kept step.** When the weights saved are ones evaluated while training (the last
step's, or the best step's that ``--keep best`` put back, evaluated in this process) and nothing
changed them since (not negated, merged or reloaded), the evaluation after training takes those
sets' records (:meth:`TrainingEval.reusable`) instead of scoring them a second time.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import load_model, save_model

from unlearn import distributed
from unlearn.errors import ConfigError
from unlearn.evaluation.six_metrics import evaluate
from unlearn.io import append_jsonl, atomic_write_json, atomic_write_jsonl, read_jsonl_log
from unlearn.rundir import EVAL_LOG, KEPT

log = logging.getLogger("unlearn")

BEST = ".best-"
COLLAPSE = {"Retain ROUGE": 0.5, "Forget Token Entropy": 0.5}  # a value below this share of its start


def select_sets(sets: list, names: str | None) -> list:
    """The sets ``--eval-sets`` names (``forget,retain``, ``real_authors``, any case; default every set)."""
    if not names:
        return list(sets)
    by = {s.name.lower().replace(" ", "_"): s for s in sets}
    chosen = []
    for raw in str(names).split(","):
        key = raw.strip().lower().replace(" ", "_").replace("-", "_")
        if key not in by:
            raise ConfigError(f"--eval-sets: no set '{raw.strip()}' (this data has: {', '.join(by)})")
        chosen.append(by[key])
    return chosen


def best_row(rows: list[dict], mu_floor: float) -> dict | None:
    """The row ``--keep best`` keeps: the highest Forget Efficacy among the rows whose Model Utility is
    at least ``mu_floor`` × the first row's (ties: the earliest); None when no row qualifies."""
    if not rows:
        return None
    floor = mu_floor * rows[0]["Model Utility"]
    fit = [
        r
        for r in rows
        if r.get("Model Utility") is not None
        and r["Model Utility"] >= floor - 1e-12
        and r.get("Forget Efficacy") is not None
    ]
    return max(fit, key=lambda r: (r["Forget Efficacy"], -r["step"])) if fit else None


def collapse(row: dict, start: dict) -> list[str]:
    """What fell below its collapse share of the starting value (:data:`COLLAPSE`)."""
    out = []
    for key, share in COLLAPSE.items():
        if row.get(key) is not None and start.get(key) and row[key] < share * start[key]:
            out.append(f"{key} {row[key]:.3f} < {share:g} × {start[key]:.3f}")
    return out


@dataclass
class TrainingEval:
    """The evaluation the training loop calls (:func:`unlearn.train.train`)."""

    plan: object  # EvalPlan: judges, retain ratios, batch size
    sets: list
    tokenizer: object
    fmt: object
    out_dir: Path
    every: int
    keep_best: bool = False
    mu_floor: float = 0.9
    checkpointing: bool = False  # the run writes checkpoints: saved bests are pruned when one is written
    rows: list[dict] = field(default_factory=list)
    warned: set = field(default_factory=set)
    best: dict | None = None
    last: tuple[int, dict] | None = None  # (step, per-item records by set) of the latest evaluation
    best_items: tuple[int, dict] | None = None  # (step, per-item records by set) of the best, this process
    start: dict | None = None  # per-item records of the weights before training (the run's before-evaluation)
    goal: object | None = None  # goal(row, items) -> bool: training stops at the first evaluation it accepts
    met: dict | None = None  # the row that met the goal

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)

    def resume(self, step: int) -> None:
        """A run resumed from its checkpoint at ``step``: the rows after it are dropped."""
        self.rows = [r for r in read_jsonl_log(self.out_dir / EVAL_LOG) if r["step"] <= step]
        self.met = next((r for r in self.rows if r.get("goal met")), None) if self.goal else None
        if distributed.is_main_process():
            atomic_write_jsonl(self.out_dir / EVAL_LOG, self.rows)
        self.best = best_row(self.rows, self.mu_floor) if self.keep_best else None

    def due(self, step: int) -> bool:
        return step % self.every == 0 and not any(r["step"] == step for r in self.rows)

    def __call__(self, step: int, epoch: float, model) -> dict:
        was_training = model.training
        ev = evaluate(
            model,
            self.tokenizer,
            self.fmt,
            self.sets,
            self.plan.judges.embedder,
            self.plan.judges.nli,
            self.plan.batch_size,
            self.plan.retain_ratios if any(s.name == "Forget" for s in self.sets) else None,
            shard=True,
            gen_batch_size=self.plan.gen_batch_size,
            done=self.start if step == 0 else None,  # the weights before training are evaluated once
        )
        model.train(was_training)
        self.last = (step, ev.items)
        row = {"step": step, "epoch": epoch, **{k: v for k, v in ev.summary.items() if k != "unavailable"}}
        fell = collapse(row, self.rows[0]) if self.rows else []
        if fell:
            row["collapse"] = fell
            for what in fell:
                key = what.split(" ")[0] + " " + what.split(" ")[1]
                if key not in self.warned:
                    self.warned.add(key)
                    log.warning("step %d: the model may be collapsing: %s", step, what)
        if self.goal is not None and self.met is None:
            row["goal met"] = bool(self.goal(row, ev.items))
            self.met = row if row["goal met"] else None
        self.rows.append(row)
        if distributed.is_main_process():
            append_jsonl(self.out_dir / EVAL_LOG, row)
        if self.keep_best:
            best = best_row(self.rows, self.mu_floor)
            if best is not None and best is row:
                self.best = row
                self.best_items = (step, ev.items)
                self._save_best(model, step)
        return row

    def _save_best(self, model, step: int) -> None:
        if distributed.is_main_process():
            tmp = self.out_dir / f".{BEST}{step}.tmp"
            tmp.mkdir(parents=True, exist_ok=True)
            save_model(model, str(tmp / "weights.safetensors"))  # (tied weights stored once)
            target = self.out_dir / f"{BEST}{step}"
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        distributed.wait_for_everyone()
        if not self.checkpointing:
            self.prune()

    def prune(self) -> None:
        """Delete the saved bests older than the current one (call when a checkpoint is written:
        a resume from it needs the current best only)."""
        if not distributed.is_main_process() or self.best is None:
            return
        for p in self.out_dir.glob(f"{BEST}*"):
            tail = p.name[len(BEST) :]
            if tail.isdigit() and int(tail) != self.best["step"]:
                shutil.rmtree(p, ignore_errors=True)

    def finish(self, model) -> dict | None:
        """``--keep best``: the best weights put back into ``model``; returns the kept row. A run stopped
        by its goal keeps the weights that met it (the model's own)."""
        if self.met is not None:
            kept = {"step": self.met["step"], "goal met": True}
            if distributed.is_main_process():
                atomic_write_json(self.out_dir / KEPT, kept)
            return kept
        if not self.keep_best:
            return None
        best = best_row(self.rows, self.mu_floor)
        if best is None:
            log.warning(
                "--keep best: no evaluation kept Model Utility at %.0f%% of its start; keeping the last weights",
                100 * self.mu_floor,
            )
            return None
        load_model(
            model,
            str(self.out_dir / f"{BEST}{best['step']}" / "weights.safetensors"),
            device=str(next(model.parameters()).device),
        )
        kept = {
            "step": best["step"],
            "Forget Efficacy": best["Forget Efficacy"],
            "Model Utility": best["Model Utility"],
            "mu_floor": self.mu_floor,
            "starting Model Utility": self.rows[0]["Model Utility"],
        }
        if distributed.is_main_process():
            atomic_write_json(self.out_dir / KEPT, kept)
            log.info(
                "--keep best: kept the weights of step %d (Forget Efficacy %.4f, Model Utility %.4f)",
                best["step"],
                best["Forget Efficacy"],
                best["Model Utility"],
            )
        distributed.wait_for_everyone()
        return kept

    def reusable(self, step: int, kept: dict | None = None) -> dict[str, list[dict]] | None:
        """The per-item records of the evaluation of the weights saved: the run's last (at ``step``), or
        the best one ``--keep best`` put back (``kept``: what :meth:`finish` returned), evaluated in this
        process. The final evaluation takes them instead of evaluating those sets again. None otherwise."""
        if kept is not None and kept["step"] != step:
            found = self.best_items
            return found[1] if found is not None and found[0] == kept["step"] else None
        if self.last is None or self.last[0] != step:
            return None
        return self.last[1]

    def cleanup(self) -> None:
        if distributed.is_main_process():
            for p in self.out_dir.glob(f"{BEST}*"):
                shutil.rmtree(p, ignore_errors=True)
            for p in self.out_dir.glob(f".{BEST}*"):
                shutil.rmtree(p, ignore_errors=True)
