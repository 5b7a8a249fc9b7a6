"""The run path: what ``unlearn finetune`` and every unlearning command do, as functions of a
:class:`~unlearn.config.Config`.

:func:`run` is the one function ``run``, ``sweep``, ``continual`` and ``demo`` call: it checks
everything first (method and its arguments, data files, evaluation sets, judges, retain model,
downstream tasks) before any model is loaded, then unlearns, saves and evaluates, and returns a
:class:`RunResult`. Bad input fails in a second with a message naming the file, line and field.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from unlearn import checkpoint, distributed, lora, methods, models, train
from unlearn.audit.after_run import audit_saved, check_audit
from unlearn.config import Config, inputs_of
from unlearn.data import (
    DEFAULT_MAX_LENGTH,
    UnlearningData,
    read_records,
    read_refusals,
    row_text,
)
from unlearn.datasets import QADataset, UnlearningDataset, check_method_rows
from unlearn.errors import ConfigError, OutputError, UnlearnError
from unlearn.evaluation.during import TrainingEval, select_sets
from unlearn.evaluation.intervals import read_intervals
from unlearn.io import atomic_write_json, read_jsonl_log
from unlearn.loading import check_run_inputs, load_for_training, validate_model_settings
from unlearn.lora import is_peft
from unlearn.models import save_model
from unlearn.protocols import prompt_format_for, protocol_of, with_defaults
from unlearn.protocols.closer_look import check_eval_matches
from unlearn.protocols.plan import EvalPlan, plan_evaluation
from unlearn.report.before_after import before_after
from unlearn.rundir import BEFORE, MODEL_CONFIG, RunDir

log = logging.getLogger("unlearn")


@dataclass
class RunResult:
    """What a run leaves: its folder, the trained model in memory, and its numbers."""

    out: RunDir
    model: object  # the model as saved in OUT/model (merged for LoRA), on this process's device
    tokenizer: object
    prompt_format: object
    config: Config  # as resolved and saved in OUT/config.yaml
    data: UnlearningData | None
    steps: int
    history: list[dict]
    resumed_from: int | None = None
    summary: dict | None = None
    is_main_process: bool = True


def prepare_out(cfg: Config, evaluated: bool = False, scope: str = "run") -> tuple[RunDir, str]:
    """``(folder, mode)``: ``cfg.out`` checked and made ready (:meth:`RunDir.prepare`); every
    process waits for it. Call it holding the folder's lock."""
    out = RunDir(cfg.out)
    mode = out.prepare(
        resume=cfg.resume,
        overwrite=cfg.overwrite,
        main_process=distributed.is_main_process(),
        evaluated=evaluated,
        inputs=inputs_of(cfg),
        scope=scope,
    )
    distributed.wait_for_everyone()
    return out, mode


def _require_out(cfg: Config) -> RunDir:
    if not cfg.out:
        raise OutputError("no output folder: give --out DIR")
    return RunDir(cfg.out)


def save_trained(result, out: RunDir, tokenizer, cfg: Config):
    """Every process: write the trained model to ``OUT/model`` (a LoRA adapter to ``OUT/adapter``)
    and ``OUT/config.yaml``, drop the checkpoint, and return the model to evaluate.

    Under ZeRO-3 or FSDP the weights are gathered first (every process takes part); the main
    process writes. A LoRA run saves the adapter and the merged model. The model returned is the
    merged one for LoRA, and under ZeRO-3/FSDP the saved model loaded whole (the trained one
    exists only in pieces).
    """
    acc, model = result.accelerator, result.model
    state_dict = distributed.full_state_dict(acc, result.prepared_model, model)
    to_save = model
    if lora.is_peft(model):
        to_save = model.get_base_model()
        if acc.is_main_process:
            lora.save_adapter(model, state_dict, out.adapter)
            state_dict = lora.merge_state_dict(model.state_dict() if state_dict is None else state_dict, model)
    if acc.is_main_process:
        saved = dataclasses.replace(cfg, resume=False)  # the saved config describes the run, reusable as --config
        save_model(
            to_save, tokenizer, out.model, state_dict=state_dict, extra_files={MODEL_CONFIG: saved.to_yaml()}
        )  # published with the weights
        saved.save(out.config)
        checkpoint.remove(out.path)  # superseded by the final model
    del state_dict
    acc.wait_for_everyone()  # nobody reads OUT/model before it is complete
    sharded = distributed.is_sharded(acc)
    result.prepared_model = None
    acc.free_memory()  # the optimiser states (and a DeepSpeed engine) are not needed any more
    distributed.partitioned_loading(acc, False)  # ZeRO-3: models loaded from now on (evaluation) are whole
    if sharded:
        return models.load_model(out.model, dtype=cfg.dtype)[0].to(acc.device)
    if lora.is_peft(model):
        return model.merge_and_unload()  # what OUT/model holds, on every process
    return model


def finetune(cfg: Config, train_files: list[str]) -> Path:
    """Fine-tune ``cfg.model`` on question/answer files; saves ``OUT/model``."""
    with _require_out(cfg).locked(distributed.is_main_process()):
        return _finetune(cfg, train_files)


def _finetune(cfg: Config, train_files: list[str]) -> Path:
    rows = [r for f in train_files for r in read_records(f)]
    # what the saved config.yaml (and reports) call this run; TOFU's fine-tuning length
    cfg = dataclasses.replace(cfg, method="finetune", max_length=cfg.max_length or DEFAULT_MAX_LENGTH)
    validate_model_settings(cfg)
    out, _ = prepare_out(cfg)
    accelerator = distributed.make_accelerator(cfg)  # before loading: ZeRO-3 may load the weights partitioned
    model, tokenizer, fmt, cfg = load_for_training(cfg, [r["question"] + " " + r["answer"] for r in rows])
    dataset = QADataset(rows, tokenizer, fmt, cfg.max_length)
    trained = train.fit(
        model,
        tokenizer,
        dataset,
        methods.FINETUNE,
        cfg,
        out.path,
        desc="fine-tuning",
        accelerator=accelerator,
        finetune=True,
    )
    save_trained(trained, out, tokenizer, cfg)
    if accelerator.is_main_process:
        out.discard_previous()
    return out.model


def load_data(cfg: Config, unlearned=()) -> UnlearningData:
    """The rows ``cfg``'s run trains on, as its protocol reads them."""
    return protocol_of(cfg).training_data(cfg, unlearned)


def run(cfg: Config, *, data: UnlearningData | None = None, ref_stats: dict | None = None, plan=None) -> RunResult:
    """Unlearn, save, evaluate: ``cfg.data`` (or ``data``) forgotten by ``cfg.model`` into ``cfg.out``.

    ``plan``: the evaluation, checked already (:func:`unlearn.protocols.plan.plan_evaluation`;
    made from ``cfg`` when not given). ``ref_stats``: reference NLLs known already (continual runs
    with ``--fix-ref-model``). With ``cfg.save_every`` a checkpoint is written as it trains; with
    ``cfg.resume`` the run continues from it (same settings, same ``cfg.model``: the original
    model, not the checkpoint) and ends with the weights an uninterrupted run would have had; a run
    whose model is saved but whose evaluation is missing is evaluated.
    """
    with _require_out(cfg).locked(distributed.is_main_process()):
        return _run(cfg, data, ref_stats, plan)


def _run(cfg: Config, data, ref_stats, plan) -> RunResult:
    cfg = with_defaults(cfg)
    objective, cfg = methods.resolve(cfg, "real_world" if protocol_of(cfg).layout(cfg) == "real_world" else None)
    check_run_inputs(cfg, objective)
    data = data or load_data(cfg)
    check_method_rows(objective, data)
    refusals = read_refusals(cfg.idk)
    audit = check_audit(cfg, _require_out(cfg) if cfg.audit else None)
    plan = plan if plan is not None else plan_evaluation(cfg)
    check_eval_matches(plan.sets, data)
    check_training_eval(cfg, plan, objective)
    out, mode = prepare_out(cfg, evaluated=plan.evaluates)
    main = distributed.is_main_process()
    if mode == "evaluate":
        result = _evaluate_saved(cfg, out, data, plan, main)
        saved_before = out / BEFORE
        if plan.baseline or RunDir(saved_before).read_summary() is not None:
            where = plan.baseline or saved_before
            before = RunDir(where).read_summary(), read_intervals(where), Path(where)
            result.summary = (
                _conclude(cfg, plan, out, before, None, len(data.forget), read_refusals(cfg.idk)) or result.summary
            )
        audit_saved(cfg, out, audit)
        return result
    texts = [row_text(r) for r in data.forget + data.retain] + refusals
    accelerator = distributed.make_accelerator(cfg)  # before loading: ZeRO-3 may load the weights partitioned
    built = {}  # the data encoded (and checked) with the tokenizer, before the weights load
    model, tokenizer, fmt, cfg = load_for_training(
        cfg,
        texts,
        lambda tok, f: built.setdefault(
            "dataset",
            UnlearningDataset(
                data.forget,
                data.retain,
                tok,
                f,
                objective.parts,
                refusals,
                cfg.max_length,
                mask_forget=cfg.mask,
                packing=protocol_of(cfg).text_packing,
            ),
        ),
    )
    dataset = built["dataset"]
    before = _before(plan, model, tokenizer, fmt, out, accelerator)
    original = _before_task_vector(objective, model, accelerator)
    evaluator = _training_eval(cfg, plan, tokenizer, fmt, out, accelerator)
    if evaluator is not None and before is not None and len(before) > 3:
        evaluator.start = before[3]  # its evaluation at step 0 is the one just made
    trained = train.fit(
        model,
        tokenizer,
        dataset,
        objective,
        cfg,
        out.path,
        accelerator=accelerator,
        ref_stats=ref_stats,
        texts=texts,
        evaluator=evaluator,
    )
    if original is not None:
        methods.negate_task_vector(trained.model, original, objective.forget_args["alpha"])
    kept = evaluator.finish(trained.model) if evaluator is not None else None  # --keep best: the best weights
    model = save_trained(trained, out, tokenizer, cfg)
    done = None
    if evaluator is not None:
        evaluator.cleanup()
        if original is None and model is trained.model:  # evaluated as trained (not negated, merged or reloaded)
            done = evaluator.reusable(trained.steps, kept)
    if main:
        atomic_write_json(
            out.data,
            {
                "layout": data.layout,
                "source": data.source,
                "forget": len(data.forget),
                "retain": len(data.retain),
                **data.info,
            },
        )
        print(f"saved the unlearned model to {out.model}")
    summary = _evaluate(plan, model, tokenizer, fmt, out, done)
    summary = _conclude(cfg, plan, out, before, trained.steps, len(dataset), refusals) or summary
    audit_saved(cfg, out, audit)
    if main:
        out.discard_previous()
    return RunResult(
        out, model, tokenizer, fmt, cfg, data, trained.steps, trained.history, trained.resumed_from, summary, main
    )


def _before(plan: EvalPlan, model, tokenizer, fmt, out: RunDir, accelerator):
    """The model's evaluation before unlearning, for the verdict: ``--baseline``'s, else its own
    (``OUT/before``, kept for a resumed run); None when the run has none to compare with."""
    given = plan.baseline or plan.before
    if given:
        found = RunDir(given)
        # plan.before was evaluated with this very plan (the demo's target): its per-item records are the
        # training-time evaluation's step 0 too. A --baseline folder may come from other settings.
        items = {} if plan.baseline else {s.name: read_jsonl_log(found.eval_file(s.name)) for s in plan.sets}
        return found.read_summary(), read_intervals(given), Path(given), {k: v for k, v in items.items() if v}
    if not (plan.sets or plan.own is not None) or distributed.is_sharded(accelerator):  # (ZeRO-3/FSDP: in pieces)
        return None
    model.to(accelerator.device)
    return plan.protocol.evaluate_before(plan, model, tokenizer, fmt, out / BEFORE)


def _conclude(cfg: Config, plan: EvalPlan, out: RunDir, before, steps, n_items: int, refusals) -> dict | None:
    """Say what the run did (:mod:`unlearn.evaluation.verdicts`), in its summary and on the terminal."""
    if before is None or not distributed.is_main_process():
        return None
    processes = distributed.state().num_processes
    batch = cfg.batch_size * distributed.accumulation(cfg, processes) * processes
    hint = (
        f"; {n_items} forget item(s) at an effective batch of {batch} over {cfg.epochs} epoch(s): raise --epochs "
        "or lower --batch-size / --grad-accum"
    )
    found = plan.protocol.conclude(plan, out, before, steps, hint, refusals)
    if found is None:
        return None
    print(f"verdict: {found.text}")
    for note in found.notes:
        print(f"  also: {note}")
    return out.read_summary()


def check_training_eval(cfg: Config, plan, objective) -> None:
    """``--eval-every``, ``--eval-sets``, ``--keep``, ``--mu-floor`` checked before anything loads."""
    if cfg.keep not in ("last", "best"):
        raise ConfigError(f"--keep: last or best, got {cfg.keep!r}")
    if cfg.mu_floor > 1:
        raise ConfigError(f"--mu-floor: a share of the starting Model Utility, at most 1, got {cfg.mu_floor}")
    if cfg.eval_every is None:
        if cfg.keep == "best":
            raise ConfigError("--keep best chooses among the evaluations while unlearning: add --eval-every N")
        if cfg.eval_sets and not plan.protocol.own_eval_sets:
            raise ConfigError("--eval-sets chooses what --eval-every evaluates: add --eval-every N")
        return
    name = plan.protocol.name
    if not plan.protocol.six_metrics:
        raise ConfigError(
            f"--eval-every evaluates with the closer-look protocol's sets; it does not run with "
            f"--benchmark {name} (evaluate the saved model with unlearn eval --benchmark {name})"
        )
    if not plan.sets:
        raise ConfigError(
            "--eval-every needs evaluation data (a data folder with *_perturbed.json files, or "
            "--forget/--retain files); this run has none"
        )
    chosen = select_sets(plan.sets, cfg.eval_sets)
    if cfg.keep == "best":
        names = {s.name for s in chosen}
        if "Forget" not in names or not any(s.kind in ("retain", "general") for s in chosen):
            raise ConfigError(
                "--keep best compares Forget Efficacy and Model Utility: --eval-sets must include "
                "forget and a retain or general set"
            )
        if objective.forget.task_vector:
            raise ConfigError(
                f"--keep best: {objective.name} is negated after training; its evaluations while "
                "training are of the fine-tuned model, not of the one saved"
            )


def _training_eval(cfg: Config, plan, tokenizer, fmt, out: RunDir, accelerator):
    """The evaluator ``--eval-every`` hands the training loop (None without it)."""
    if cfg.eval_every is None:
        return None
    if distributed.is_sharded(accelerator):
        raise ConfigError(
            "--eval-every evaluates the weights as they train, which ZeRO-3 / FSDP hold in pieces; "
            "run it with DDP or on one device"
        )
    return TrainingEval(
        plan,
        select_sets(plan.sets, cfg.eval_sets),
        tokenizer,
        fmt,
        out.path,
        cfg.eval_every,
        keep_best=cfg.keep == "best",
        mu_floor=cfg.mu_floor,
        checkpointing=bool(cfg.save_every),
        goal=plan.goal,
    )


def _before_task_vector(objective, model, accelerator) -> dict | None:
    """The weights before training, for task-vector negation (None for other methods); a LoRA model
    needs none (its adapter is the delta)."""
    if not objective.forget.task_vector:
        return None
    if distributed.is_sharded(accelerator):
        raise ConfigError(f"{objective.name}: task-vector negation needs whole weights; run it without ZeRO-3/FSDP")
    if is_peft(model):
        return {}
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def _evaluate(plan: EvalPlan, model, tokenizer, fmt, out: RunDir, done: dict | None = None) -> dict | None:
    """The evaluation after training (``done``: sets the last evaluation while training already
    scored on these weights); a failure says how to finish it without training again."""
    try:
        summary = plan.evaluate(model, tokenizer, fmt, out, shard=True, done=done)
    except UnlearnError as e:
        raise type(e)(f"{e} (the model is saved in {out.model}; finish its evaluation with --resume)") from e
    if plan.baseline and summary is not None and distributed.is_main_process():
        before_after(summary, out, plan.baseline)
    return summary


def _evaluate_saved(cfg: Config, out: RunDir, data, plan, main: bool) -> RunResult:
    """``--resume`` of a run whose model is saved but whose evaluation is missing."""
    log.info("%s: the model is saved; evaluating it", out.model)
    model, tokenizer = models.load_model(
        out.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation
    )
    model.to(distributed.state().device)
    fmt = prompt_format_for(tokenizer, cfg, str(out.model))
    summary = _evaluate(plan, model, tokenizer, fmt, out)
    return RunResult(out, model, tokenizer, fmt, cfg, data, 0, [], None, summary, main)
