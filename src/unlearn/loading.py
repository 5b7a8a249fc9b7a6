"""Loading a model for a run: the weights, the protocol's prompt format, a fresh LoRA adapter, and the
model settings checked before anything is written. Shared by the run path and the audit's relearning."""

from __future__ import annotations

import dataclasses
import importlib.util

import torch

from unlearn import distributed, memory, methods, models
from unlearn.config import Config
from unlearn.errors import ConfigError, DependencyError
from unlearn.lora import apply_lora
from unlearn.models import ATTN_IMPLEMENTATIONS, resolve_dtype
from unlearn.prompts import check_prompt_format, prompt_format_spec
from unlearn.protocols import prompt_format_for
from unlearn.train import check_lr_schedule


def load_for_training(cfg: Config, texts: list[str], before_weights=None):
    """``(model, tokenizer, prompt format, cfg)``: the model to train (with a fresh LoRA adapter
    with ``--lora``), and ``cfg`` with the prompt format it uses written in, so it is saved.
    ``before_weights(tokenizer, prompt format)`` runs before the weights are read (the data encoded
    and checked: a --max-length that leaves no answer token is refused before a 7B model loads)."""
    distributed.check_optim(cfg.optim)
    found = {}

    def with_tokenizer(tokenizer):
        found["fmt"] = prompt_format_for(tokenizer, cfg)
        if before_weights is not None:
            before_weights(tokenizer, found["fmt"])

    model, tokenizer = models.load_model(
        cfg.model,
        dtype=distributed.training_dtype(cfg.dtype),
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
        texts=texts,
        before_weights=with_tokenizer,
    )
    fmt = found.get("fmt") or prompt_format_for(tokenizer, cfg)
    cfg = dataclasses.replace(cfg, prompt_format=prompt_format_spec(fmt))
    if cfg.lora:
        model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.gradient_checkpointing, cfg.seed)
    return model, tokenizer, fmt, cfg


MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
FLASH_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


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
    if cfg.mixed_precision not in MIXED_PRECISIONS:
        raise ConfigError(
            f"unknown --mixed-precision {cfg.mixed_precision!r} (valid: {', '.join(MIXED_PRECISIONS)}; fp8 is not "
            "supported)"
        )
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("--mixed-precision fp16 needs a CUDA GPU; on CPU use bf16 or no")
    kernel = FLASH_PACKAGES.get(cfg.attn_implementation or "")
    if kernel and importlib.util.find_spec(kernel) is None:
        raise DependencyError(
            f"--attn-implementation {cfg.attn_implementation} needs the {kernel} package (a CUDA build), which is "
            "not installed; use sdpa or eager"
        )


def check_run_inputs(cfg: Config, objective) -> None:
    """What a run's model and method settings need, checked before any weights load: the model
    settings (:func:`validate_model_settings`), a ``--ref-model`` that can be found (when the method
    uses a reference), and layer numbers the model has (RMU's ``layer``/``layers``, from its config)."""
    validate_model_settings(cfg)
    if objective.forget.in_context:
        raise ConfigError(
            f"{objective.name} (in-context unlearning) trains nothing: evaluate it with unlearn eval --benchmark rwku "
            f"--method {objective.name} --model MODEL --data DATA --split N --out DIR"
        )
    if cfg.ref_model and (objective.needs_ref_model or objective.ref_nll_parts):
        models.check_source(cfg.ref_model, "--ref-model")
    layers = methods.layer_args(objective.forget_args)
    if layers:
        config = memory.model_config(cfg.model, cfg.trust_remote_code)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        depth = getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None)
        if isinstance(depth, int) and max(layers) >= depth:
            raise ConfigError(
                f"method arguments of {objective.name}: layer {max(layers)} does not exist in {cfg.model}, which "
                f"has {depth} layers (0 to {depth - 1}); set --method-arg layer=... and layers=..."
            )
