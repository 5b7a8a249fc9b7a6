"""LoRA adapters (peft): which layers, the frozen reference, saving the adapter and the merged model.

As in the paper's code, the adapter goes on every linear layer but the output head, with
``r=8, alpha=32, dropout=0.05`` by default. Only the adapter trains; the base weights stay as
loaded. That gives two things for free:

* the reference model of KL is the base model with the adapter switched off
  (:class:`unlearn.reference.AdapterOff`), so no frozen copy of the model is kept in memory;
* the reference NLLs of NPO/DPO, computed before the first step, are the base model's (a new
  adapter starts as the identity: ``B = 0``).

A run saves the adapter in ``OUT/adapter`` and the merged weights ``W + (alpha / r) B A`` as an
ordinary model in ``OUT/model``, so evaluation, continual unlearning and other tools load it as
any model. Continual unlearning with LoRA therefore starts each task from the previous task's
merged model with a fresh adapter, like the paper's code; see ``docs/distributed.md``.

Merging is done on a state dict (:func:`merge_state_dict`) rather than in the modules, so that
it also works where the weights only exist gathered on one process (DeepSpeed ZeRO-3, FSDP).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import torch

from unlearn.errors import ConfigError, ModelError
from unlearn.io import publish_dir, temp_dir_next_to

log = logging.getLogger("unlearn")

ADAPTER = "default"  # peft's name of the one adapter we train


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def target_modules(model) -> list[str]:
    """Names (last component) of every ``nn.Linear`` except the output head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if head is not None and m is head}
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    names -= head_names | {"lm_head"}
    if not names:
        raise ModelError(f"{type(model).__name__} has no linear layer besides the output head to put LoRA on")
    return sorted(names)


def apply_lora(
    model, r: int = 8, alpha: int = 32, dropout: float = 0.05, gradient_checkpointing: bool = False, seed: int = 0
):
    """``model`` wrapped in a fresh LoRA adapter; only the adapter's weights require gradients.

    The adapter's random start (``A``; ``B`` is zero) is drawn from ``seed``: the same on every
    process, which ZeRO-3 and FSDP need (they shard each process's own copy, broadcasting nothing),
    and the same from run to run. The caller's random stream is left untouched.
    """
    from peft import LoraConfig, get_peft_model  # a quarter of a second of every command without LoRA

    if r < 1:
        raise ConfigError(f"--lora-r must be at least 1, got {r}")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules(model),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(model, config)
    if gradient_checkpointing:
        # With the embeddings frozen, a checkpointed block would get inputs that need no gradient
        # and (with reentrant checkpointing) pass none back to the adapters inside it.
        model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "LoRA r=%d alpha=%d on %s: %d of %d parameters train (%.2f%%)",
        r,
        alpha,
        ",".join(sorted(config.target_modules)),
        trainable,
        total,
        100 * trainable / max(total, 1),
    )
    return model


@contextlib.contextmanager
def adapter_disabled(model):
    """The base model for the duration (a no-op for a model without adapter)."""
    if is_peft(model):
        with model.disable_adapter():
            yield
    else:
        yield


# ---------------------------------------------------------------------------------- saving

_PREFIX = "base_model.model."
_A, _B = f".lora_A.{ADAPTER}.weight", f".lora_B.{ADAPTER}.weight"


def merge_state_dict(state_dict: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """The base model's state dict with every adapter merged in: ``W + scaling * B @ A``.

    ``state_dict`` is the LoRA model's (``base_model.model.`` prefixes, ``.base_layer`` infixes,
    ``lora_A``/``lora_B`` weights); ``model`` gives the scaling (``alpha / r``, or ``alpha / sqrt(r)``
    with rsLoRA). The delta is computed in float32 on the CPU and cast to the weight's dtype.
    """
    config = model.peft_config[ADAPTER]
    if getattr(config, "use_dora", False):
        raise ValueError("merging DoRA adapters is not supported")
    scaling = config.lora_alpha / (config.r**0.5 if getattr(config, "use_rslora", False) else config.r)
    merged: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if ".lora_" in key:
            continue
        name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
        name = name.replace(".base_layer.", ".")
        if key.endswith(".base_layer.weight"):
            stem = key[: -len(".base_layer.weight")]
            if stem + _A in state_dict:
                a = state_dict[stem + _A].detach().to("cpu", torch.float32)
                b = state_dict[stem + _B].detach().to("cpu", torch.float32)
                if getattr(config, "fan_in_fan_out", False):
                    raise ValueError("merging fan_in_fan_out (Conv1D) adapters is not supported")
                value = (value.detach().to("cpu", torch.float32) + (b @ a) * scaling).to(value.dtype)
        merged[name] = value
    return merged


def save_adapter(model, state_dict: dict[str, torch.Tensor] | None, out: str | Path) -> Path:
    """Write the adapter (``adapter_config.json``, ``adapter_model.safetensors``) to ``out``.

    ``state_dict``: the full LoRA model's weights when they had to be gathered (ZeRO-3, FSDP);
    None reads them from ``model``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_next_to(out)
    try:
        kwargs = {} if state_dict is None else {"state_dict": state_dict}
        model.save_pretrained(tmp, save_embedding_layers=False, **kwargs)
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
