"""The one training loop, on accelerate, used for fine-tuning and for unlearning.

``accelerate launch`` (DDP, DeepSpeed, FSDP) works unchanged: the loop only talks to the
``Accelerator``. Batches are padded to their longest sequence. Reference statistics of NPO/DPO
are computed once, before the first step, from the model itself (it *is* the reference before
training starts), so those methods train with a single model in memory.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import losses
from .config import Config
from .data import make_collate
from .io import append_jsonl
from .methods import BatchView, Objective

log = logging.getLogger("unlearn")


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite; no final model is written."""


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@torch.inference_mode()
def reference_nlls(model, dataset, parts, tokenizer, batch_size: int = 8, accelerator=None,
                   desc: str = "reference NLLs") -> dict[str, torch.Tensor]:
    """Per-item summed NLL of each part under ``model``, shape (len(dataset),) per part.

    Computed in order over the whole data set once; the training loop looks items up by index.
    """
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=make_collate(_pad_id(tokenizer)))
    out = {p: torch.zeros(len(dataset), dtype=torch.float32) for p in parts}
    show = accelerator is None or accelerator.is_main_process
    for batch in tqdm(loader, desc=desc, disable=not show, leave=False):
        for p in parts:
            b = batch[p]
            logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
            out[p][batch["index"]] = losses.sequence_nll(logits, b["labels"].to(device)).float().cpu()
    model.train(was_training)
    return out


def warmup_steps(cfg: Config, steps_per_epoch: int) -> int:
    """PAPER: one epoch of warm-up steps when an epoch has more than one step, else none."""
    if cfg.warmup is not None:
        return int(cfg.warmup)
    return steps_per_epoch if steps_per_epoch > 1 else 0


def train(model, tokenizer, dataset, objective: Objective, cfg: Config, out_dir: str | Path,
          ref_model=None, ref_stats: dict | None = None, accelerator: Accelerator | None = None,
          desc: str = "unlearning") -> dict:
    """Optimise ``objective`` over ``dataset``; returns a summary of the run (losses per step).

    The trained weights stay in ``model`` (callers save them). ``train_log.jsonl`` in ``out_dir``
    gets one line per optimiser step: step, epoch, loss, each loss part and the learning rate.
    """
    out_dir = Path(out_dir)
    accelerator = accelerator or Accelerator(gradient_accumulation_steps=cfg.grad_accum,
                                             mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if objective.ref_nll_parts and ref_stats is None:
        # Before the first step the model is the reference: no second copy needed.
        model.to(accelerator.device)
        ref_stats = reference_nlls(model, dataset, objective.ref_nll_parts, tokenizer, cfg.batch_size, accelerator)
    if objective.needs_ref_model and ref_model is None:
        ref_model = copy.deepcopy(model)
    if ref_model is not None:
        ref_model.eval().requires_grad_(False)
        ref_model = ref_model.to(accelerator.device)

    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                        collate_fn=make_collate(_pad_id(tokenizer)))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = max(1, math.ceil(len(loader) / cfg.grad_accum))
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps(cfg, steps_per_epoch), total_steps)

    model.train()
    step, history = 0, []
    log_path = out_dir / "train_log.jsonl"
    bar = tqdm(total=total_steps, desc=desc, disable=not accelerator.is_main_process)
    micro_parts: list[dict] = []
    epoch = 0
    while step < total_steps:
        for batch in loader:
            with accelerator.accumulate(model):
                view = BatchView(model, batch, ref_model, ref_stats)
                loss, parts = objective(view)
                if not torch.isfinite(loss):
                    detail = ", ".join(f"{k} = {v:.4g}" for k, v in parts.items())
                    raise DivergenceError(f"non-finite loss at step {step + 1}: {objective.name}: {detail}")
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
                micro_parts.append({"loss": loss.detach().float().item(), **parts})
            # The scheduler advances once per optimiser step, i.e. when gradients were synced.
            if accelerator.sync_gradients:
                scheduler.step()
                step += 1
                row = {"step": step, "epoch": round(step / steps_per_epoch, 4),
                       **{k: sum(m[k] for m in micro_parts) / len(micro_parts) for k in micro_parts[0]},
                       "lr": scheduler.get_last_lr()[0]}
                micro_parts = []
                history.append(row)
                if accelerator.is_main_process:
                    append_jsonl(log_path, row)
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k not in ("step", "epoch", "lr")})
                if step >= total_steps:
                    break
        epoch += 1
    bar.close()
    accelerator.wait_for_everyone()
    return {"steps": step, "history": history, "ref_stats": ref_stats, "accelerator": accelerator,
            "model": accelerator.unwrap_model(model)}
