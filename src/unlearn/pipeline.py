"""What ``unlearn finetune`` and ``unlearn run`` do, as functions of a :class:`Config`.

Inputs are validated (data files read, method parsed) before any model is loaded, so bad input
fails in a second with a message naming the file, line and field.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from . import distributed
from .config import Config
from .data import (DataError, QADataset, UnlearningDataset, load_unlearning_data, read_records,
                   read_refusals)
from .io import atomic_write_json
from .methods import build_objective, method_defaults, parse_method

log = logging.getLogger("unlearn")

RESULT_MARKERS = ("model", "summary.json", "train_log.jsonl", "checkpoint")


def prepare_out(cfg: Config) -> Path:
    """The output folder; one that already holds results is refused unless ``--overwrite``.

    ``--resume`` accepts a folder whose run stopped before its final model (a checkpoint and the
    training log); ``--overwrite`` starts again, removing the earlier results and checkpoint so
    that nothing of the old run can pass for the new one.
    """
    from . import checkpoint

    if not cfg.out:
        raise DataError("no output folder: give --out DIR")
    out = Path(cfg.out)
    existing = [m for m in RESULT_MARKERS if (out / m).exists()]
    if getattr(cfg, "resume", False):
        if cfg.overwrite:
            raise DataError("--resume continues the run in --out and --overwrite starts it again: give one")
        finished = [m for m in existing if m not in ("train_log.jsonl", "checkpoint")]
        if finished:
            raise DataError(f"{out}: the run there has finished ({', '.join(finished)}); nothing to resume "
                            "(pass --overwrite to run it again)")
        if not checkpoint.exists(out):
            raise DataError(f"{out}: no checkpoint to resume from ({checkpoint.path(out)} is missing or "
                            "incomplete; runs write one with --save-every N)")
        return out
    if checkpoint.exists(out) and "checkpoint" not in existing:  # caught between two renames
        existing.append("checkpoint")
    if existing and not cfg.overwrite:
        hint = ", --resume to continue it" if checkpoint.exists(out) else ""
        raise DataError(f"{out}: already holds results ({', '.join(existing)}); "
                        f"choose another --out{hint} or pass --overwrite")
    if distributed.is_main_process():  # with several processes, one changes the folder; all wait
        out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite:
            checkpoint.remove(out)
            for name in ("summary.json", "train_log.jsonl", "config.yaml", "data.json"):
                (out / name).unlink(missing_ok=True)
            for name in ("model", "adapter"):
                if (out / name).is_dir():
                    shutil.rmtree(out / name)
    distributed.wait_for_everyone()
    return out


def finish_run(out: Path, model, tokenizer, cfg: Config, state_dict: dict | None = None) -> None:
    """Save the final model and config atomically, then drop the checkpoint they supersede."""
    import dataclasses

    from . import checkpoint
    from .models import save_model

    cfg = dataclasses.replace(cfg, resume=False)  # the saved config describes the run, reusable as --config
    save_model(model, tokenizer, out / "model", state_dict=state_dict,
               extra_files={"unlearn_config.yaml": cfg.to_yaml()})  # published with the weights
    cfg.save(out / "config.yaml")
    checkpoint.remove(out)


def load_for_training(cfg: Config, texts: list[str]):
    from .models import load_model
    from .prompts import detect_prompt_format, prompt_format_spec

    distributed.check_optim(cfg.optim)
    model, tokenizer = load_model(cfg.model, dtype=distributed.training_dtype(cfg.dtype),
                                  trust_remote_code=cfg.trust_remote_code,
                                  attn_implementation=cfg.attn_implementation, texts=texts)
    fmt = detect_prompt_format(tokenizer, cfg.model, cfg.prompt_format)
    cfg.prompt_format = prompt_format_spec(fmt)  # saved with the model, so it is reused later
    if cfg.lora:
        from .lora import apply_lora

        model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.gradient_checkpointing, cfg.seed)
    return model, tokenizer, fmt


def save_trained(result: dict, out: Path, tokenizer, cfg: Config) -> None:
    """Every process: write the trained model to ``OUT/model`` (and a LoRA adapter to ``OUT/adapter``).

    Under ZeRO-3 or FSDP the weights are gathered first (every process takes part); the main
    process writes. A LoRA run saves the adapter and the merged model. Afterwards
    ``result["model"]`` is the model to evaluate: the merged one for LoRA, and under ZeRO-3/FSDP
    the saved model loaded whole (the trained one exists only in pieces).
    """
    from . import lora

    acc, model = result["accelerator"], result["model"]
    state_dict = distributed.full_state_dict(acc, result.pop("prepared_model", None), model)
    to_save = model
    if lora.is_peft(model):
        to_save = model.get_base_model()
        if acc.is_main_process:
            lora.save_adapter(model, state_dict, out / "adapter")
            state_dict = lora.merge_state_dict(model.state_dict() if state_dict is None else state_dict, model)
    if acc.is_main_process:
        finish_run(out, to_save, tokenizer, cfg, state_dict=state_dict)
    del state_dict
    acc.wait_for_everyone()  # nobody reads OUT/model before it is complete
    sharded = distributed.is_sharded(acc)
    acc.free_memory()  # the optimiser states (and a DeepSpeed engine) are not needed any more
    distributed.partitioned_loading(acc, False)  # ZeRO-3: models loaded from now on (evaluation) are whole
    if sharded:
        from .models import load_model

        result["model"] = load_model(out / "model", dtype=cfg.dtype)[0].to(acc.device)
    elif lora.is_peft(model):
        result["model"] = model.merge_and_unload()  # what OUT/model holds, on every process


def _warn_truncated(dataset, cfg: Config) -> None:
    if dataset.truncated:
        log.warning("%d sequences were longer than --max-length %d and were truncated",
                    dataset.truncated, cfg.max_length)


def finetune(cfg: Config, train_files: list[str]) -> Path:
    """Fine-tune ``cfg.model`` on question/answer files; saves ``OUT/model``."""
    from .methods import FINETUNE
    from .train import train

    rows = [r for f in train_files for r in read_records(f)]
    cfg.method = "finetune"  # what the saved config.yaml (and reports) call this run
    out = prepare_out(cfg)
    accelerator = distributed.make_accelerator(cfg)  # before loading: ZeRO-3 may load the weights partitioned
    model, tokenizer, fmt = load_for_training(cfg, [r["question"] + " " + r["answer"] for r in rows])
    dataset = QADataset(rows, tokenizer, fmt, cfg.max_length)
    _warn_truncated(dataset, cfg)
    result = train(model, tokenizer, dataset, FINETUNE, cfg, out, desc="fine-tuning", accelerator=accelerator)
    save_trained(result, out, tokenizer, cfg)
    return out / "model"


def resolve_method_defaults(cfg: Config) -> Config:
    defaults = method_defaults(cfg.method)
    if cfg.forget_coeff is None:
        cfg.forget_coeff = defaults["forget_coeff"]
    if cfg.mask is None:
        cfg.mask = defaults["mask"]
    return cfg


def load_data(cfg: Config, unlearned=()):
    return load_unlearning_data(cfg.data, cfg.split, cfg.task_id, cfg.forget, cfg.retain, unlearned)


def unlearn(cfg: Config, data=None, ref_stats: dict | None = None, ref_model=None) -> dict:
    """Unlearn ``cfg.data`` from ``cfg.model``; saves ``OUT/model`` and returns the train result.

    With ``cfg.save_every`` a checkpoint is written to ``OUT/checkpoint`` as it trains; with
    ``cfg.resume`` the run continues from it (same settings, same ``cfg.model``: the original
    model, not the checkpoint) and ends with the weights an uninterrupted run would have had.
    """
    from .train import train

    try:
        parse_method(cfg.method)
    except ValueError as e:
        raise DataError(str(e)) from None
    resolve_method_defaults(cfg)
    objective = build_objective(cfg.method, cfg.forget_coeff, cfg.reg_coeff, cfg.beta)
    data = data or load_data(cfg)
    refusals = read_refusals(cfg.idk)
    out = prepare_out(cfg)
    texts = [r["question"] + " " + r["answer"] for r in data.forget + data.retain] + refusals
    accelerator = distributed.make_accelerator(cfg)  # before loading: ZeRO-3 may load the weights partitioned
    model, tokenizer, fmt = load_for_training(cfg, texts)
    dataset = UnlearningDataset(data.forget, data.retain, tokenizer, fmt, objective.parts, refusals,
                                cfg.max_length, mask_forget=cfg.mask, seed=cfg.seed)
    _warn_truncated(dataset, cfg)
    if objective.needs_ref_model and ref_model is None and cfg.ref_model:
        from .models import load_model

        ref_model, _ = load_model(cfg.ref_model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    elif objective.needs_ref_model and ref_model is None and not cfg.lora and distributed.zero_stage(accelerator) == 3:
        # A partitioned model cannot be copied: the reference is loaded again, partitioned too.
        from .models import load_model

        ref_model, _ = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code, texts=texts)
    if objective.ref_nll_parts and ref_stats is None and cfg.ref_model and not cfg.resume:
        # (a resumed run takes the statistics cached in its checkpoint)
        from .models import load_model
        from .train import reference_nlls

        ref, _ = load_model(cfg.ref_model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
        ref = distributed.prepare_reference(ref, accelerator)
        ref_stats = reference_nlls(ref, dataset, objective.ref_nll_parts, tokenizer, cfg.batch_size, accelerator)
        del ref
    result = train(model, tokenizer, dataset, objective, cfg, out, ref_model=ref_model, ref_stats=ref_stats,
                   accelerator=accelerator)
    save_trained(result, out, tokenizer, cfg)
    if result["accelerator"].is_main_process:
        atomic_write_json(out / "data.json", {"layout": data.layout, "source": data.source,
                                              "forget": len(data.forget), "retain": len(data.retain),
                                              **data.info})
    result.update(model_obj=result["model"], tokenizer=tokenizer, prompt_format=fmt, data=data, out=out)
    return result
