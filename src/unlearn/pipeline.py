"""What ``unlearn finetune`` and ``unlearn run`` do, as functions of a :class:`Config`.

Inputs are validated (data files read, method parsed) before any model is loaded, so bad input
fails in a second with a message naming the file, line and field.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .config import Config
from .data import (DataError, QADataset, UnlearningDataset, load_unlearning_data, read_records,
                   read_refusals)
from .io import atomic_write_json
from .methods import build_objective, method_defaults, parse_method

log = logging.getLogger("unlearn")

RESULT_MARKERS = ("model", "summary.json", "train_log.jsonl")


def prepare_out(cfg: Config) -> Path:
    """The output folder; one that already holds results is refused unless ``--overwrite``."""
    if not cfg.out:
        raise DataError("no output folder: give --out DIR")
    out = Path(cfg.out)
    existing = [m for m in RESULT_MARKERS if (out / m).exists()]
    if existing and not cfg.overwrite:
        raise DataError(f"{out}: already holds results ({', '.join(existing)}); "
                        "choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:
        (out / "train_log.jsonl").unlink(missing_ok=True)
    return out


def load_for_training(cfg: Config, texts: list[str]):
    from .models import load_model
    from .prompts import detect_prompt_format, prompt_format_spec

    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                                  attn_implementation=cfg.attn_implementation, texts=texts)
    fmt = detect_prompt_format(tokenizer, cfg.model, cfg.prompt_format)
    cfg.prompt_format = prompt_format_spec(fmt)  # saved with the model, so it is reused later
    return model, tokenizer, fmt


def _warn_truncated(dataset, cfg: Config) -> None:
    if dataset.truncated:
        log.warning("%d sequences were longer than --max-length %d and were truncated",
                    dataset.truncated, cfg.max_length)


def finetune(cfg: Config, train_files: list[str]) -> Path:
    """Fine-tune ``cfg.model`` on question/answer files; saves ``OUT/model``."""
    from .methods import FINETUNE
    from .models import save_model
    from .train import train

    rows = [r for f in train_files for r in read_records(f)]
    out = prepare_out(cfg)
    model, tokenizer, fmt = load_for_training(cfg, [r["question"] + " " + r["answer"] for r in rows])
    dataset = QADataset(rows, tokenizer, fmt, cfg.max_length)
    _warn_truncated(dataset, cfg)
    result = train(model, tokenizer, dataset, FINETUNE, cfg, out, desc="fine-tuning")
    if result["accelerator"].is_main_process:
        save_model(result["model"], tokenizer, out / "model")
        cfg.save(out / "model" / "unlearn_config.yaml")
        cfg.save(out / "config.yaml")
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
    """Unlearn ``cfg.data`` from ``cfg.model``; saves ``OUT/model`` and returns the train result."""
    from .models import save_model
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
    model, tokenizer, fmt = load_for_training(cfg, texts)
    dataset = UnlearningDataset(data.forget, data.retain, tokenizer, fmt, objective.parts, refusals,
                                cfg.max_length, mask_forget=cfg.mask, seed=cfg.seed)
    _warn_truncated(dataset, cfg)
    if objective.needs_ref_model and ref_model is None and cfg.ref_model:
        from .models import load_model

        ref_model, _ = load_model(cfg.ref_model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    if objective.ref_nll_parts and ref_stats is None and cfg.ref_model:
        from .models import load_model
        from .train import reference_nlls

        ref, _ = load_model(cfg.ref_model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
        ref_stats = reference_nlls(ref, dataset, objective.ref_nll_parts, tokenizer, cfg.batch_size)
        del ref
    result = train(model, tokenizer, dataset, objective, cfg, out, ref_model=ref_model, ref_stats=ref_stats)
    if result["accelerator"].is_main_process:
        save_model(result["model"], tokenizer, out / "model")
        cfg.save(out / "model" / "unlearn_config.yaml")
        cfg.save(out / "config.yaml")
        atomic_write_json(out / "data.json", {"layout": data.layout, "source": data.source,
                                              "forget": len(data.forget), "retain": len(data.retain),
                                              **data.info})
    result.update(model_obj=result["model"], tokenizer=tokenizer, prompt_format=fmt, data=data, out=out)
    return result
