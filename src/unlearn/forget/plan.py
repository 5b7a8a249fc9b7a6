"""What ``unlearn forget`` does without protocol knowledge: the method, learning rate, batch and budget
chosen from the forget set's size and the model's, each one the user did not set themselves.

The choices are the settings the demo measured to forget and keep (``unlearn demo``: ME+GD at the
paper's forget weight forgets half of Forget ROUGE or more and keeps 80% of Retain ROUGE or more,
on the tiny model and on SmolLM2-135M; IDK+AP answers "I don't know" on the forget set):

==================  =========================  =========================  ==========================
model size          forget (ME+GD)             refuse (IDK+AP)            measured on
==================  =========================  =========================  ==========================
under 50M params    lr 1e-3, 15 epochs         lr 1e-3, 5 epochs          the demo's tiny model
under 2B params     lr 5e-5, 15 epochs         lr 1e-4, 20 epochs         SmolLM2-135M-Instruct demo
2B and more         lr 1e-5, 5 epochs          lr 1e-5, 5 epochs          the paper's settings (7B)
==================  =========================  =========================  ==========================

ME+GD is the default because it is untargeted and does not collapse the model: it pushes the forget
answers towards uniform next-token distributions while the retain set keeps the rest (GA, NPO and
their variants drive the forget NLL up without bound and degrade the model's fluency). Without a
retain set the regulariser has nothing to keep: the forget term runs alone and the report says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

STYLES = {"forget": ("ME+GD", "ME"), "refuse": ("IDK+AP", "IDK")}  # (with a retain set, without)
KEEP_WITHIN = 0.1  # retain metrics may fall at most 10% below the model's own before unlearning
NOT_MET = 3  # exit status of a run whose goal was not met within its budget
EVALUATIONS = 10  # evaluations while unlearning (the stopping points)
SIZES = (  # (largest parameter count, {style: (lr, epochs)})
    (50e6, {"forget": (1e-3, 15), "refuse": (1e-3, 5)}),
    (2e9, {"forget": (5e-5, 15), "refuse": (1e-4, 20)}),
    (math.inf, {"forget": (1e-5, 5), "refuse": (1e-5, 5)}),
)
FLOPS = {"cpu": 2e10, "cuda": 1e14}  # rough sustained FLOP/s of a 2-core CPU and of one GPU, for the estimate


@dataclass
class ForgetPlan:
    """The settings of one ``unlearn forget`` and where each came from."""

    style: str
    method: str
    lr: float
    epochs: float
    batch_size: int
    steps: int
    eval_every: int
    params: float
    n_forget: int
    n_retain: int
    holdout: bool
    keep_within: float
    seconds: float
    chosen: list[str] = field(default_factory=list)  # the settings chosen here (the others were given)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def lines(self) -> list[str]:
        goal = (
            "the forget records are recalled and predicted no better than the holdout records (never seen)"
            if self.holdout
            else "the forget records' ROUGE and probability fall to half of their values before (no --holdout: "
            "weaker, it shows the model changed, not that the records look unseen)"
        )
        return [
            f"forget {self.n_forget} records ({self.style} style: {self.method}), keep {self.n_retain} retain records",
            f"model: {self.params / 1e6:,.1f}M parameters; lr {self.lr:g}, batch {self.batch_size}, at most "
            f"{self.steps} steps ({self.epochs:g} epochs), evaluated every {self.eval_every} steps",
            f"stops at the first evaluation where {goal}, while the retain records keep at least "
            f"{100 * (1 - self.keep_within):.0f}% of their ROUGE (--keep-within {self.keep_within:g})",
            f"rough time estimate: {_duration(self.seconds)} (then the audit)",
            "chosen here: " + (", ".join(self.chosen) if self.chosen else "nothing (every setting was given)"),
        ]


def choose(
    style: str,
    n_forget: int,
    n_retain: int,
    params: float,
    given: dict,
    *,
    holdout: bool,
    keep_within: float,
    max_steps: int | None,
    device: str,
    processes: int = 1,
) -> tuple[ForgetPlan, dict]:
    """``(plan, settings)``: the plan, and the Config values to set (those not in ``given``)."""
    method = given.get("method") or STYLES[style][0 if n_retain else 1]
    lr, epochs = next(v[style] for limit, v in SIZES if params < limit)
    lr = given.get("lr", lr)
    epochs = given.get("epochs", epochs)
    batch = given.get("batch_size", min(4, n_forget))
    accum = given.get("grad_accum") or 1
    effective = batch * accum * processes
    steps = max(1, int(epochs * n_forget) // effective)
    if max_steps is not None and max_steps < steps:
        steps = max_steps
        epochs = steps * effective / n_forget
    every = given.get("eval_every", max(1, steps // EVALUATIONS))
    settings = {
        "method": method,
        "lr": lr,
        "epochs": epochs,
        "batch_size": batch,
        "grad_accum": accum,
        "eval_every": every,
        "save_every": every,  # resumable at each stopping point
        "keep": "best" if n_retain else None,  # a goal never met keeps the best evaluated weights
        "warmup": 0,
    }
    chosen = [k for k in settings if k not in given]
    tokens = 64  # a question and its answer, roughly
    train = steps * effective * tokens * 6 * params * (2 if n_retain else 1)
    evals = (steps // every + 1) * (n_forget + n_retain + n_forget) * tokens * 2 * params * 4
    seconds = (train + evals) / FLOPS["cuda" if device == "cuda" else "cpu"]
    plan = ForgetPlan(
        style, method, lr, epochs, batch, steps, every, params, n_forget, n_retain, holdout, keep_within, seconds,
        [k for k in chosen if k in ("method", "lr", "epochs", "batch_size", "eval_every")],
    )  # fmt: skip
    return plan, {k: v for k, v in settings.items() if k not in given}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
