"""Loading a model for a run: the weights, the protocol's prompt format, a fresh LoRA adapter, and the
model settings checked before anything is written. Shared by the run path and the audit's relearning."""

from __future__ import annotations

import dataclasses

from unlearn import distributed, models
from unlearn.config import Config
from unlearn.errors import ConfigError
from unlearn.lora import apply_lora
from unlearn.models import ATTN_IMPLEMENTATIONS, resolve_dtype
from unlearn.prompts import check_prompt_format, prompt_format_spec
from unlearn.protocols import prompt_format_for
from unlearn.train import check_lr_schedule


def load_for_training(cfg: Config, texts: list[str]):
    """``(model, tokenizer, prompt format, cfg)``: the model to train (with a fresh LoRA adapter
    with ``--lora``), and ``cfg`` with the prompt format it uses written in, so it is saved."""
    distributed.check_optim(cfg.optim)
    model, tokenizer = models.load_model(
        cfg.model,
        dtype=distributed.training_dtype(cfg.dtype),
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
        texts=texts,
    )
    fmt = prompt_format_for(tokenizer, cfg)
    cfg = dataclasses.replace(cfg, prompt_format=prompt_format_spec(fmt))
    if cfg.lora:
        model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.gradient_checkpointing, cfg.seed)
    return model, tokenizer, fmt, cfg


def validate_model_settings(cfg: Config) -> None:
    """Model settings checked before anything is written: dtype, attention kernel, prompt format, and
    the learning-rate schedule."""
    resolve_dtype(cfg.dtype)
    check_lr_schedule(cfg.lr_schedule)
    if cfg.attn_implementation is not None and cfg.attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(
            f"unknown --attn-implementation {cfg.attn_implementation!r} (valid: {', '.join(ATTN_IMPLEMENTATIONS)})"
        )
    check_prompt_format(cfg.prompt_format)
