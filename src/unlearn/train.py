"""The one training loop, on accelerate, used for fine-tuning and for unlearning.

:func:`prepare_training` sets everything up (accelerator, data order, optimiser, the reference of
:mod:`unlearn.reference`, scheduler, resume state); :func:`train` is only the loop. ``accelerate
launch`` (DDP, DeepSpeed, FSDP) works unchanged: the loop only talks to the ``Accelerator``.

Resuming (``--save-every N`` then ``--resume``) is exact: a checkpoint (:mod:`unlearn.checkpoint`)
holds the weights, the optimiser, every random generator, the scheduler, the cached reference
statistics and the :class:`TrainState`; the order of each epoch is a function of the seed and the
epoch (:class:`EpochShuffle`), so the resumed run skips the batches already consumed and sees the
very batches the interrupted run would have seen. On CPU the final weights are identical bit for bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from unlearn import checkpoint, progress, reference
from unlearn.config import Config
from unlearn.errors import DivergenceError
from unlearn.methods import BatchView, Objective
from unlearn.train_setup import (  # noqa: F401 (the loop's setup, part of its API)
    LR_SCHEDULES,
    EpochShuffle,
    Schedule,
    Session,
    TrainState,
    _check_finite_weights,
    _check_settings,
    check_lr_schedule,
    prepare_training,
    run_settings,
)

log = logging.getLogger("unlearn")


@dataclass
class TrainResult:
    steps: int
    history: list[dict]
    reference: reference.Reference
    accelerator: Accelerator
    model: torch.nn.Module  # unwrapped
    prepared_model: torch.nn.Module
    resumed_from: int | None = None


def train(run: Session, objective: Objective) -> TrainResult:
    """Optimise ``objective``: batches in, objective, backward, step, log, checkpoint.

    The trained weights stay in the model (callers save them). ``train_log.jsonl`` gets one line
    per optimiser step: step, epoch, loss, each loss part and the learning rate that step used.
    """
    acc, st, model, optimizer, scheduler = run.accelerator, run.state, run.model, run.optimizer, run.scheduler
    last_saved, total = run.resumed_from, run.schedule.total
    model.train()
    bar = progress.bar(total=total, initial=st.step, desc=run.desc, disable=not acc.is_main_process)
    run.evaluate_if_due()  # --eval-every: the model before the first step
    stop = run.goal_met()  # (unlearn forget: the records may look unseen already)
    try:
        micro_parts: list[dict] = []
        while st.step < total and not stop:
            run.sampler.epoch = st.epoch
            batches = acc.skip_first_batches(run.loader, st.batches_done) if st.batches_done else run.loader
            for batch in batches:
                st.batches_done, st.micro_steps = st.batches_done + 1, st.micro_steps + 1
                # accumulate() syncs when its counter reaches the accumulation: set it to what the schedule says
                acc.step = (
                    run.schedule.accum - 1
                    if run.schedule.ends_step(st.micro_steps, st.batches_done, len(run.loader))
                    else 0
                )
                with acc.accumulate(model):
                    view = BatchView(model, batch, run.reference, run.settings["seed"], run.chunk, acc.autocast)
                    view.epoch = st.epoch
                    loss, parts = objective(view)
                    if not _all_finite(loss, acc):
                        kept = f"; the checkpoint of step {last_saved} is kept in {checkpoint.path(run.out_dir)}"
                        raise DivergenceError(
                            f"non-finite loss at step {st.step + 1}: {objective.name}: "
                            + ", ".join(f"{k} = {v:.4g}" for k, v in parts.items())
                            + (kept if last_saved else "")
                        )
                    acc.backward(loss)
                    optimizer.step()
                    optimizer.zero_grad()
                    micro_parts.append({"loss": loss.detach().float().item(), **parts})
                if acc.sync_gradients:  # an optimiser step happened: gradients were synced
                    lr = scheduler.get_last_lr()[0]  # the rate this step used
                    scheduler.step()
                    st.step += 1
                    row = run.log_step(micro_parts, lr)
                    micro_parts = []
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k not in ("step", "epoch", "lr", "loss")})
                    run.evaluate_if_due()
                    stop = run.goal_met()
                    if run.save_every and st.step % run.save_every == 0 and st.step < total and not stop:
                        run.save_checkpoint(objective.name)
                        last_saved = st.step
                    if st.step >= total or stop:
                        break
            if st.batches_done >= len(run.loader):
                st.next_epoch()
    finally:
        bar.close()  # also on an error, so the message starts on a line of its own
    acc.wait_for_everyone()
    return TrainResult(st.step, st.history, run.reference, acc, acc.unwrap_model(model), model, run.resumed_from)


def fit(model, tokenizer, dataset, objective: Objective, cfg: Config, out_dir: str | Path, **setup) -> TrainResult:
    """:func:`prepare_training` then :func:`train`."""
    return train(prepare_training(model, tokenizer, dataset, objective, cfg, out_dir, **setup), objective)


def _all_finite(loss: torch.Tensor, accelerator: Accelerator) -> bool:
    finite = torch.isfinite(loss.detach()).reshape(1)
    if accelerator.num_processes > 1:  # every rank stops together, or the others would hang
        finite = accelerator.gather(finite)
    return bool(finite.all())
