"""The evaluation plan of a run: what it evaluates after training, checked and loaded before it trains.

:func:`plan_evaluation` asks the run's protocol to read and check its sets now (the closer-look
protocol also loads its judges and computes the retain model's truth ratios for Forget Quality),
checks the downstream tasks, and returns an :class:`EvalPlan`. The run then calls
:meth:`EvalPlan.evaluate` on the trained model. Judges are objects passed in, loaded once by
whoever runs several evaluations (continual runs, sweeps, the demo).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unlearn import distributed
from unlearn.config import EVAL_BATCH_SIZE
from unlearn.errors import DataError
from unlearn.evaluation.downstream import downstream_after_unlearning, downstream_tasks_for
from unlearn.protocols import DEFAULT, get_protocol, protocol_of
from unlearn.protocols.base import Protocol
from unlearn.rundir import RunDir


@dataclass
class EvalPlan:
    """What a run evaluates after training. ``sets``/``judges``/``retain_ratios``/``holdout``: the
    six-metric evaluation's (closer-look); ``own``/``reference``: another protocol's own sets and what
    it took from the retain model (the TOFU standard's retain logs, MUSE's retain AUC)."""

    sets: list | None = None  # six-metric EvalSets
    judges: object | None = None  # closer_look.Judges
    retain_ratios: list[float] | None = None
    downstream: list[str] | None = None
    batch_size: int = EVAL_BATCH_SIZE
    gen_batch_size: int | None = None  # prompts decoded together (default: unlearn.evaluation.scoring.generation_batch)
    downstream_limit: int | None = None
    downstream_include: str | None = None
    holdout: list[dict] | None = None  # rows never trained on, for membership inference
    baseline: str | None = None  # an evaluation of the model before unlearning: before/after table and report
    before: str | None = None  # an evaluation of the model before unlearning the verdict may take as it is
    own: object | None = None  # a protocol's own sets (protocols.tofu.TofuSets, protocols.muse.MuseSets)
    reference: object | None = None  # what the protocol took from the retain model
    goal: object | None = None  # --eval-every: stop at the first evaluation goal(row, items) accepts (unlearn forget)
    protocol: Protocol = field(default_factory=lambda: get_protocol(DEFAULT))

    @property
    def evaluates(self) -> bool:
        """Whether a run of this plan writes an evaluation (its summary is part of a finished run)."""
        return bool(self.sets or self.downstream or self.own is not None)

    def check_baseline(self, cfg) -> None:
        """``--baseline``: an evaluation folder to compare with, checked now."""
        if cfg.baseline:
            if RunDir(cfg.baseline).read_summary() is None:
                raise DataError(
                    f"{cfg.baseline}: --baseline needs an evaluation folder (its summary.json is missing "
                    "or not readable; make one with unlearn eval)"
                )
            self.baseline = cfg.baseline

    def evaluate(
        self, model, tokenizer, fmt, out: RunDir, shard: bool = False, done: dict | None = None
    ) -> dict | None:
        """The protocol's evaluation (every process its share with ``shard``; the main one writes;
        ``done``: per-item records of sets already scored on this model), then the downstream tasks
        (main process). Returns the summary, or None."""
        summary = self.protocol.evaluate(self, model, tokenizer, fmt, out, shard, done)
        if self.downstream and distributed.is_main_process():
            downstream_after_unlearning(
                model,
                tokenizer,
                out,
                self.downstream,
                self.batch_size,
                self.downstream_limit,
                self.downstream_include,
                by_task=self.protocol.downstream_is_evaluation,
            )
            summary = out.read_summary() or summary
        return summary


def plan_evaluation(cfg, judges=None, sets: list | None = None) -> EvalPlan:
    """Everything ``cfg``'s run evaluates after training, checked now (see the module docstring).

    ``judges``: already loaded ones (continual runs and sweeps load them once); ``sets``: already
    validated six-metric sets."""
    protocol = protocol_of(cfg)
    protocol.check_flags(cfg)
    plan = EvalPlan(
        batch_size=cfg.eval_batch_size,
        gen_batch_size=cfg.gen_batch_size,
        downstream_limit=cfg.downstream_limit,
        downstream_include=cfg.downstream_include,
        protocol=protocol,
    )
    if cfg.eval:
        protocol.plan(cfg, plan, judges=judges, sets=sets)
    if cfg.downstream and not plan.downstream:
        plan.downstream = downstream_tasks_for(cfg)
    return plan
