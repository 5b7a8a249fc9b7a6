"""Several processes (``accelerate launch``, ``torchrun``): what differs from one process, in one place.

Every process runs the same command on its own share of the data; accelerate's engines (DDP,
DeepSpeed, FSDP) keep the weights in step. The rules the rest of the package follows:

* **one writer**: only the main process writes files; the others wait (:func:`wait_for_everyone`)
  where they would read what it wrote;
* **same number of forward passes everywhere** when the weights are sharded (ZeRO-3, FSDP):
  every process takes part in gathering each layer, so work is split into equal shares
  (:func:`index_batches` pads the last share with repeats);
* **the whole table on every process**: per-item results (reference NLLs, evaluation records)
  are computed on shares and gathered back in the original order (:func:`gather_in_order`).

Nothing here needs a GPU: on CPU the processes talk over gloo, which is how the tests run it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os

import torch
import torch.distributed as dist
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, GradientAccumulationPlugin
from torch import nn
from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config
from transformers.trainer_pt_utils import get_parameter_names

from unlearn import progress as progress_bar
from unlearn.errors import ConfigError, DependencyError

OPTIMIZERS = ("adamw", "adamw_fused", "adamw_8bit")
BNB_INSTALL = "--optim adamw_8bit needs bitsandbytes and a CUDA GPU: pip install bitsandbytes (or use --optim adamw)"


# ------------------------------------------------------------------------------- processes


def _cpu_processes() -> bool:
    """Several processes (``torchrun``) on a machine without GPUs: accelerate forms a process group
    over gloo only when told to use the CPU; otherwise every process would run alone."""
    has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"  # it forms its own group
    return not has_gpu and not deepspeed and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def state():
    """accelerate's process state (created from the launcher's environment on first use)."""
    return PartialState(cpu=True) if _cpu_processes() else PartialState()


def is_main_process() -> bool:
    return state().is_main_process


def progress(iterable=None, **kw):
    """A tqdm bar on the main process only, shown wherever the training bar is (a log file too, so a
    long evaluation under ``nohup`` is not silent); ``leave=False`` unless told."""
    kw.setdefault("leave", False)
    kw["disable"] = kw.get("disable") or not is_main_process()
    return progress_bar.bar(iterable, **kw)


def wait_for_everyone() -> None:
    state().wait_for_everyone()


def training_dtype(dtype: str) -> str:
    """Weights dtype for training: ``auto`` keeps float32 master weights (bf16 maths comes from
    autocast, see :func:`training_mixed_precision`). Pure bf16 weights would round away AdamW
    updates of the size the paper uses (lr 1e-5); ask for ``--dtype bfloat16`` to trade that for memory."""
    return "float32" if dtype in (None, "auto") else dtype


def training_mixed_precision(dtype: str) -> str:
    """``auto``: bf16 autocast over float32 weights on a GPU that supports it, none otherwise."""
    if training_dtype(dtype) == "float32" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(cfg):
    """The run's ``Accelerator``: gradient accumulation from ``--grad-accum``; mixed precision from
    ``--mixed-precision`` when given, else from the launcher's config (``accelerate launch``).

    Created before the model is loaded, so that a DeepSpeed ZeRO-3 config with ``zero3_init_flag``
    loads the weights already partitioned. Under ZeRO-3 the 16-bit weights are gathered when the
    final model is saved (``stage3_gather_16bit_weights_on_model_save``), whatever the config says.
    DeepSpeed clips gradients only when its config asks for it (as without DeepSpeed).
    """
    mixed = cfg.mixed_precision
    if mixed in (None, "", "no", "auto") and os.environ.get("ACCELERATE_MIXED_PRECISION"):
        mixed = None  # the launcher's config decides
    elif mixed == "auto":
        mixed = training_mixed_precision(cfg.dtype)
    processes = state().num_processes  # first, so that CPU processes join one group
    # Accumulation runs across epoch boundaries, as in the HF Trainer of the official code; the
    # loop decides which micro-steps end an optimiser step (unlearn.train).
    plugin = GradientAccumulationPlugin(num_steps=accumulation(cfg, processes), sync_with_dataloader=False)
    accelerator = Accelerator(gradient_accumulation_plugin=plugin, mixed_precision=mixed, cpu=_cpu_processes())
    if zero_stage(accelerator) is not None:
        ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
        # unlearn's loop does not clip gradients. accelerate turns "auto" into 1.0, drops a 0.0, and
        # recent DeepSpeed clips at 1.0 when the key is missing: the engines would train differently.
        if ds_config.get("gradient_clipping", "auto") == "auto":
            ds_config["gradient_clipping"] = 0.0
        if zero_stage(accelerator) == 3:
            ds_config.setdefault("zero_optimization", {})["stage3_gather_16bit_weights_on_model_save"] = True
            partitioned_loading(accelerator, True)  # (a previous run in this process turned it off)
    return accelerator


def accumulation(cfg, processes: int) -> int:
    """Micro-steps per optimiser step: ``--grad-accum``, else ``effective_batch / (batch_size x processes)``.

    The default keeps the paper's effective batch of 32 whatever the number of processes: 4 per
    device x 8 on one process, x 4 on two (the paper's 2 GPUs), x 1 on eight.
    """
    if cfg.grad_accum is not None:
        return int(cfg.grad_accum)
    per_micro_step = cfg.batch_size * processes
    accum = max(1, cfg.effective_batch // per_micro_step)
    if accum * per_micro_step != cfg.effective_batch:
        logging.getLogger("unlearn").warning(
            "--effective-batch %d is not a multiple of --batch-size %d x %d process(es): optimiser steps take %d "
            "examples",
            cfg.effective_batch,
            cfg.batch_size,
            processes,
            accum * per_micro_step,
        )
    return accum


def zero_stage(accelerator) -> int | None:
    """The DeepSpeed ZeRO stage, or None when DeepSpeed is not in use."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    return int(accelerator.state.deepspeed_plugin.zero_stage)


def is_sharded(accelerator) -> bool:
    """True when no process holds all the weights (ZeRO-3 or FSDP): forward passes are collective."""
    return accelerator.distributed_type == DistributedType.FSDP or zero_stage(accelerator) == 3


# ---------------------------------------------------------------------------- shares of work


def index_batches(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's batches of item indices: items ``rank, rank + world, ...`` in batches.

    Every process gets the same number of batches (a sharded model needs all of them in every
    forward pass): a process with fewer adds batches that repeat one item, to be ignored.
    """
    mine = list(range(rank, n, world))
    batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    n_batches = math.ceil(math.ceil(n / world) / batch_size)
    return batches + [[mine[-1] if mine else 0]] * (n_batches - len(batches)) if n else []


def all_gather_objects(obj) -> list:
    """``[obj of process 0, obj of process 1, ...]`` (``[obj]`` with one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_in_order(indices: list[int], values: list, n: int) -> list:
    """Every process's ``(indices, values)`` put back into one list of length ``n``, on every process."""
    out: list = [None] * n
    for idx, vals in all_gather_objects((list(indices), list(values))):
        for i, v in zip(idx, vals, strict=False):
            out[i] = v
    missing = [i for i, v in enumerate(out) if v is None]
    if missing:
        raise RuntimeError(f"no process computed items {missing[:10]}")
    return out


def sharded_map(fn, items: list) -> list:
    """``fn(items)`` computed by every process on its share and gathered back in order.

    ``fn`` maps a list to a list of the same length, item by item (it may batch inside). Every
    process must call this with the same ``items``. One process: just ``fn(items)``.
    """
    st = state()
    if st.num_processes == 1:
        return fn(items)
    idx = list(range(st.process_index, len(items), st.num_processes))
    local = fn([items[i] for i in idx]) if idx else []
    if len(local) != len(idx):
        raise RuntimeError(f"sharded_map: {len(local)} results for {len(idx)} items")
    return gather_in_order(idx, local, len(items))


def mean_over_processes(values: dict[str, float], accelerator) -> dict[str, float]:
    """Per-process numbers (each process saw its own share of a batch) averaged over processes."""
    if accelerator.num_processes == 1 or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=accelerator.device)
    return dict(zip(values, accelerator.reduce(t, reduction="mean").tolist(), strict=False))


# ------------------------------------------------------------------------------- saving


def partitioned_loading(accelerator, on: bool) -> None:
    """Whether transformers partitions the models it loads from now on (ZeRO-3).

    On while a run loads the model it trains; off once it is trained, so that the models loaded
    for evaluation (the saved model, the judges) are whole, as evaluation runs a plain model per
    process. No-op without ZeRO-3. (accelerate registers its ZeRO-3 config with transformers
    whatever ``zero3_init_flag`` says, and transformers partitions whenever one is registered.)
    """
    plugin = accelerator.state.deepspeed_plugin if zero_stage(accelerator) == 3 else None
    hf_config = getattr(plugin, "dschf", None)
    if hf_config is None:
        return
    if on:
        set_hf_deepspeed_config(hf_config)
    else:
        unset_hf_deepspeed_config()


def full_state_dict(accelerator, prepared, model=None) -> dict | None:
    """The whole weights of a model whose weights are sharded, on the main process (None elsewhere);
    None without sharding (the model in hand holds them). Every process must call it.

    ``model`` (the unwrapped model) names the weights it shares (tied input and output
    embeddings): gathered, they come back as separate tensors, and only one name is kept.
    """
    if not is_sharded(accelerator):
        return None
    state_dict = accelerator.get_state_dict(prepared)  # ZeRO-3: the 16-bit weights, gathered
    if not accelerator.is_main_process:
        return None
    if model is not None:
        first: dict[int, str] = {}
        shared = [n for n, p in model.named_parameters(remove_duplicate=False) if first.setdefault(id(p), n) != n]
        state_dict = {k: v for k, v in state_dict.items() if k not in shared}
    return state_dict


# ------------------------------------------------------------------------------- optimiser


def check_optim(name: str) -> None:
    """A clear error before any model is loaded: unknown optimiser, or bitsandbytes missing."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown --optim {name!r} (valid: {', '.join(OPTIMIZERS)})")
    if name == "adamw_8bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise DependencyError(BNB_INSTALL)


def decay_groups(model, weight_decay: float) -> list[dict]:
    """The weights that train, in two AdamW groups as the HF Trainer of the official code makes them:
    weight decay on all but biases and normalisation weights (transformers' own name rules)."""
    # (the patterns of transformers.Trainer.get_decay_parameter_names)
    no_decay_names = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    decay = set(get_parameter_names(model, [nn.LayerNorm], no_decay_names))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]


def build_optimizer(model, cfg):
    """AdamW over the weights that train (all of them, or a LoRA adapter's); no weight decay on
    biases and normalisation weights (:func:`decay_groups`)."""
    name = getattr(cfg, "optim", "adamw")
    check_optim(name)
    groups = decay_groups(model, cfg.weight_decay)
    if name == "adamw_8bit":
        import bitsandbytes as bnb  # optional (a GPU extra): only --optim adamw_8bit needs it

        return bnb.optim.AdamW8bit(groups, lr=cfg.lr)
    # adamw_fused: torch's one-pass kernel (on a 2-core CPU 0.11 s a step against the default's 0.66 s
    # over SmolLM2-135M's weights, perf/optimizer_step.py); its rounding differs in the last bit.
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True if name == "adamw_fused" else None)
