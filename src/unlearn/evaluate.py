"""``unlearn eval``: evaluate a saved model under its protocol, into a folder of its own."""

from __future__ import annotations

import dataclasses

from unlearn import distributed, models
from unlearn.config import Config, inputs_of, save_fields
from unlearn.distributed import state
from unlearn.errors import ConfigError, DataError
from unlearn.loading import validate_model_settings
from unlearn.methods import parse_method
from unlearn.protocols import prompt_format_for, protocol_of
from unlearn.protocols.plan import plan_evaluation
from unlearn.report.before_after import before_after
from unlearn.rundir import RunDir


def run_eval(cfg) -> dict:
    """``unlearn eval``: evaluate ``cfg.model`` on the sets of ``cfg.eval_data or cfg.data`` (or its
    protocol's own sets)."""
    protocol = protocol_of(cfg)
    protocol.check_flags(cfg)
    if cfg.method != Config.method and not parse_method(cfg.method)[0].in_context:
        raise ConfigError(f"unlearn eval takes --method ICU only (in-context unlearning), got {cfg.method}")
    data = cfg.eval_data or cfg.data
    if not data and not cfg.forget and not protocol.downstream_is_evaluation:
        raise DataError(
            "no evaluation data: give --data DIR (a TOFU or real-world folder) or --forget FILE [--retain FILE]"
        )
    if not cfg.out:
        raise DataError("no output folder: give --out DIR")
    with RunDir(cfg.out).locked(distributed.is_main_process()):
        return _run_eval(cfg)


def _run_eval(cfg) -> dict:
    validate_model_settings(cfg)
    protocol = protocol_of(cfg)
    sets = protocol.command_sets(cfg) if protocol.six_metrics else None
    plan = plan_evaluation(dataclasses.replace(cfg, eval=True), sets=sets)
    out = RunDir(cfg.out)
    out.prepare(
        overwrite=cfg.overwrite, main_process=distributed.is_main_process(), inputs=inputs_of(cfg), scope="eval"
    )
    distributed.wait_for_everyone()
    model, tokenizer = models.load_model(
        cfg.model,
        dtype=cfg.dtype,
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
        texts=plan.protocol.eval_texts(plan) or None,
    )
    models.check_finite(model, cfg.model)  # a diverged model is not scored as if it had forgotten
    model.to(state().device)  # this process's GPU under accelerate launch / torchrun
    fmt = prompt_format_for(tokenizer, cfg)
    if distributed.is_main_process():
        in_context = ("method",) if parse_method(cfg.method)[0].in_context else ()  # ICU: said in the report
        save_fields(cfg, out.eval_config, ("model", "data", "eval", "out"), extra=in_context)  # its own settings
    summary = plan.evaluate(model, tokenizer, fmt, out, shard=True)
    if distributed.is_main_process():
        if plan.baseline and summary is not None:
            before_after(summary, out, plan.baseline)
        out.discard_previous()
    return summary
