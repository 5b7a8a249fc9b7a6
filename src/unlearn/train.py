"""The one training loop, on accelerate, used for fine-tuning and for unlearning.

``accelerate launch`` (DDP, DeepSpeed, FSDP) works unchanged: the loop only talks to the
``Accelerator``. Batches are padded to their longest sequence. Reference statistics of NPO/DPO
are computed once, before the first step, from the model itself (it *is* the reference before
training starts), so those methods train with a single model in memory.

Resuming (``--save-every N`` then ``--resume``) is exact: a checkpoint (:mod:`unlearn.checkpoint`)
holds the weights, the optimiser, the scheduler, every random generator, the cached reference
statistics and the data position; the order of each epoch is a function of the seed and the
epoch (:class:`EpochShuffle`), so the resumed run skips the batches already consumed and sees the
very batches the interrupted run would have seen. On CPU the final weights are identical bit for bit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import random
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import checkpoint, distributed, lora, losses
from .config import Config
from .data import DataError, make_collate
from .io import append_jsonl, atomic_write_jsonl
from .methods import BatchView, Objective

log = logging.getLogger("unlearn")


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite; no final model is written, the last checkpoint is kept."""


class EpochShuffle(torch.utils.data.Sampler):
    """A fresh random order every epoch, drawn from a generator seeded with ``(seed, epoch)``.

    Any epoch's order is rebuilt from two numbers, which is what makes resuming exact; the
    loop sets :attr:`epoch` (not ``set_epoch``, which accelerate would call with its own count).
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(random.Random(f"{self.seed}:{self.epoch}").getrandbits(63))
        return iter(torch.randperm(self.n, generator=g).tolist())


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@torch.no_grad()  # not inference_mode: ZeRO-3 gathers weights into tensors it reuses outside it
def reference_nlls(model, dataset, parts, tokenizer, batch_size: int = 8, accelerator=None,
                   desc: str = "reference NLLs") -> dict[str, torch.Tensor]:
    """Per-item summed NLL of each part under ``model``, shape (len(dataset),) per part.

    Computed once over the whole data set; the training loop looks items up by index. With
    several processes each computes its share (the same number of batches everywhere, as a
    sharded model needs) and the shares are gathered: every process holds the whole table.
    A LoRA model is evaluated with its adapter off: the base model is the reference.
    """
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    was_training = model.training
    model.eval()
    collate = make_collate(_pad_id(tokenizer))
    out = {p: torch.zeros(len(dataset), dtype=torch.float32) for p in parts}
    show = accelerator is None or accelerator.is_main_process
    base = accelerator.unwrap_model(model) if accelerator is not None else model
    with lora.adapter_disabled(base):
        for idx in tqdm(distributed.index_batches(len(dataset), batch_size, rank, world), desc=desc,
                        disable=not show, leave=False):
            batch = collate([dataset[i] for i in idx])
            for p in parts:
                b = batch[p]
                logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
                out[p][batch["index"]] = losses.sequence_nll(logits, b["labels"].to(device)).float().cpu()
    model.train(was_training)
    if world > 1:
        mine = list(range(rank, len(dataset), world))
        rows = distributed.gather_in_order(mine, [[out[p][i].item() for p in parts] for i in mine], len(dataset))
        out = {p: torch.tensor([r[j] for r in rows], dtype=torch.float32) for j, p in enumerate(parts)}
    return out


def warmup_steps(cfg: Config, steps_per_epoch: int) -> int:
    """PAPER: one epoch of warm-up steps when an epoch has more than one step, else none."""
    if cfg.warmup is not None:
        return int(cfg.warmup)
    return steps_per_epoch if steps_per_epoch > 1 else 0


def run_settings(cfg: Config, objective: Objective, n_items: int, accelerator: Accelerator, tokenizer=None) -> dict:
    """What a run's trajectory depends on; a checkpoint is resumed only under the same settings.

    The tokenizer enters as a hash of its vocabulary: the ``tiny`` preset trains one from the
    data, and a resumed run must encode the data exactly as the interrupted one did.
    """
    keys = ("model", "dtype", "prompt_format", "lora", "lora_r", "lora_alpha", "lora_dropout", "data", "split",
            "task_id", "forget", "retain", "idk", "ref_model", "max_length", "forget_coeff", "reg_coeff", "beta",
            "mask", "epochs", "lr", "batch_size", "grad_accum", "weight_decay", "optim", "warmup", "seed",
            "mixed_precision")
    settings = {k: getattr(cfg, k, None) for k in keys}
    settings.update(method=objective.name, items=n_items, processes=accelerator.num_processes)
    if tokenizer is not None:
        vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode("utf-8")
        settings["tokenizer"] = hashlib.sha256(vocab).hexdigest()[:16]
    return json.loads(json.dumps(settings, default=str))  # as it reads back from the checkpoint


def _check_settings(saved: dict, current: dict, where: Path) -> None:
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise DataError(f"{where}: the checkpoint was written with {key} = {saved.get(key)!r}, this run has "
                            f"{key} = {current.get(key)!r}; resume with the same settings, or start again "
                            "with --overwrite")


def _check_finite_weights(model, step: int, name: str) -> None:
    for pname, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise DivergenceError(f"non-finite weights after step {step}: {name}: {pname}")


def train(model, tokenizer, dataset, objective: Objective, cfg: Config, out_dir: str | Path,
          ref_model=None, ref_stats: dict | None = None, accelerator: Accelerator | None = None,
          desc: str = "unlearning", save_every: int | None = None, resume: bool | None = None) -> dict:
    """Optimise ``objective`` over ``dataset``; returns a summary of the run (losses per step).

    The trained weights stay in ``model`` (callers save them). ``train_log.jsonl`` in ``out_dir``
    gets one line per optimiser step: step, epoch, loss, each loss part and the learning rate.
    Every ``save_every`` steps (default ``cfg.save_every``) the state goes to ``out_dir/checkpoint``;
    ``resume`` (default ``cfg.resume``) continues from it. ``model`` must then be the model the run
    started from (a KL reference is copied from it); the checkpoint's weights replace its own.
    """
    out_dir = Path(out_dir)
    save_every = getattr(cfg, "save_every", None) if save_every is None else save_every
    resume = bool(getattr(cfg, "resume", False)) if resume is None else resume
    accelerator = accelerator or distributed.make_accelerator(cfg)
    set_seed(cfg.seed)
    settings = run_settings(cfg, objective, len(dataset), accelerator, tokenizer)
    saved = None
    if resume:
        if accelerator.is_main_process:
            checkpoint.recover(out_dir)
        accelerator.wait_for_everyone()
        saved, saved_ref_stats = checkpoint.load(out_dir)
        _check_settings(saved["settings"], settings, checkpoint.path(out_dir))
        if objective.ref_nll_parts:
            # The original model's statistics: the model in hand is not the reference any more.
            ref_stats = saved_ref_stats
    if cfg.gradient_checkpointing:
        # transformers 5 renamed it; older releases only have the first name.
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
        model.config.use_cache = False
    sharded = distributed.is_sharded(accelerator)  # ZeRO-3 / FSDP: the model runs only once prepared
    if objective.ref_nll_parts and ref_stats is None and not sharded:
        # Before the first step the model is the reference: no second copy needed.
        model.to(accelerator.device)
        ref_stats = reference_nlls(model, dataset, objective.ref_nll_parts, tokenizer, cfg.batch_size, accelerator)
    if objective.needs_ref_model and ref_model is None:
        # LoRA: the model with its adapter off; else a copy, made before any checkpoint is loaded.
        ref_model = lora.reference_view(model) or copy.deepcopy(model)

    sampler = EpochShuffle(len(dataset), cfg.seed)
    # The loader's own generator (unused without workers) keeps iteration off the global RNG.
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                        generator=torch.Generator().manual_seed(cfg.seed),
                        collate_fn=make_collate(_pad_id(tokenizer)))
    optimizer = distributed.build_optimizer(model, cfg)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if ref_model is not None:
        ref_model = distributed.prepare_reference(ref_model, accelerator, model)  # frozen; sharded under ZeRO-3
    if objective.ref_nll_parts and ref_stats is None:  # sharded: every process runs the prepared model
        ref_stats = reference_nlls(model, dataset, objective.ref_nll_parts, tokenizer, cfg.batch_size, accelerator)
    steps_per_epoch = max(1, math.ceil(len(loader) / cfg.grad_accum))
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps(cfg, steps_per_epoch), total_steps)

    log_path = out_dir / "train_log.jsonl"
    step, epoch, batches_done, history = 0, 0, 0, []
    if saved is not None:
        checkpoint.restore(out_dir, accelerator)  # weights, optimiser, RNG states
        scheduler.load_state_dict(saved["scheduler"])
        step, epoch, batches_done, history = saved["step"], saved["epoch"], saved["batches_done"], saved["history"]
        accelerator.step = 0  # the accumulation counter: the checkpoint is at an optimiser step
        if accelerator.is_main_process:
            atomic_write_jsonl(log_path, history)  # drop the rows logged after the checkpoint
        log.info("resuming from the checkpoint of step %d of %d in %s", step, total_steps, checkpoint.path(out_dir))
    last_saved = step if saved is not None else None

    model.train()
    bar = tqdm(total=total_steps, initial=step, desc=desc, disable=not accelerator.is_main_process)
    try:
        micro_parts: list[dict] = []
        while step < total_steps:
            if batches_done >= len(loader):
                epoch, batches_done = epoch + 1, 0
            sampler.epoch = epoch
            epoch_loader = accelerator.skip_first_batches(loader, batches_done) if batches_done else loader
            for batch in epoch_loader:
                batches_done += 1
                with accelerator.accumulate(model):
                    view = BatchView(model, batch, ref_model, ref_stats)
                    loss, parts = objective(view)
                    if not _all_finite(loss, accelerator):
                        detail = ", ".join(f"{k} = {v:.4g}" for k, v in parts.items())
                        kept = (f"; the checkpoint of step {last_saved} is kept in {checkpoint.path(out_dir)}"
                                if last_saved else "")
                        raise DivergenceError(f"non-finite loss at step {step + 1}: {objective.name}: {detail}{kept}")
                    accelerator.backward(loss)
                    optimizer.step()
                    optimizer.zero_grad()
                    micro_parts.append({"loss": loss.detach().float().item(), **parts})
                # The scheduler advances once per optimiser step, i.e. when gradients were synced.
                if accelerator.sync_gradients:
                    scheduler.step()
                    step += 1
                    means = {k: sum(m[k] for m in micro_parts) / len(micro_parts) for k in micro_parts[0]}
                    row = {"step": step, "epoch": round(step / steps_per_epoch, 4),
                           **distributed.mean_over_processes(means, accelerator),  # each saw its own share
                           "lr": scheduler.get_last_lr()[0]}
                    micro_parts = []
                    history.append(row)
                    if accelerator.is_main_process:
                        append_jsonl(log_path, row)
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k not in ("step", "epoch", "lr", "loss")})
                    if save_every and step % save_every == 0 and step < total_steps:
                        _check_finite_weights(model, step, objective.name)  # never checkpoint a diverged model
                        checkpoint.save(out_dir, accelerator, {
                            "step": step, "epoch": epoch, "batches_done": batches_done, "total_steps": total_steps,
                            "scheduler": scheduler.state_dict(), "settings": settings, "history": history,
                        }, ref_stats)
                        last_saved = step
                    if step >= total_steps:
                        break
            else:
                epoch, batches_done = epoch + 1, 0
    finally:
        bar.close()  # also on an error, so the message starts on a line of its own
    accelerator.wait_for_everyone()
    return {"steps": step, "history": history, "ref_stats": ref_stats, "accelerator": accelerator,
            "model": accelerator.unwrap_model(model), "prepared_model": model,
            "resumed_from": saved["step"] if saved else None}


def _all_finite(loss: torch.Tensor, accelerator: Accelerator) -> bool:
    finite = torch.isfinite(loss.detach()).reshape(1)
    if accelerator.num_processes > 1:  # every rank stops together, or the others would hang
        finite = accelerator.gather(finite)
    return bool(finite.all())
