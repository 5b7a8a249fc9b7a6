"""``unlearn run --audit``: the audit of a run's saved model, checked before the run trains."""

from __future__ import annotations

import dataclasses

from unlearn.audit.inputs import check_inputs
from unlearn.audit.run import run_audit
from unlearn.config import Config
from unlearn.errors import UnlearnError
from unlearn.rundir import AUDIT, RunDir


def audit_config(cfg: Config, out: RunDir, resume: bool = False) -> Config:
    """The settings of ``--audit``: the saved model audited into ``OUT/audit``, beside the model it
    was unlearned from (``--target-model``, else the run's ``--model``)."""
    target = cfg.target_model or (None if cfg.model == "tiny" else cfg.model)
    return dataclasses.replace(
        cfg,
        model=str(out.model),
        target_model=target,
        out=str(out / AUDIT),
        resume=resume,
        overwrite=cfg.overwrite and not resume,
    )


def check_audit(cfg: Config, out: RunDir | None):
    """``--audit``: the audit's inputs checked before training (None without ``--audit``)."""
    if not cfg.audit:
        return None
    return check_inputs(audit_config(cfg, out))


def audit_saved(cfg: Config, out: RunDir, inputs=None, resume: bool = False) -> None:
    """Run ``--audit`` on the saved model (one process: checked before training)."""
    if not cfg.audit:
        return
    acfg = audit_config(cfg, out, resume)
    try:
        run_audit(acfg, inputs)
    except UnlearnError as e:
        raise type(e)(
            f"{e} (the model is saved in {out.model}; finish its audit with unlearn audit --model "
            f"{out.model} --out {acfg.out} --resume and the same data flags)"
        ) from e
