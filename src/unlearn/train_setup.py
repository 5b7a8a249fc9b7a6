"""The setup of a training run (:func:`prepare_training`): the data order, the optimiser and its
schedule, the reference, and the state a resumed run starts from, handed to the loop of
:mod:`unlearn.train` as one :class:`Session`."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from unlearn import checkpoint, distributed, reference
from unlearn.chunked import chunk_rows
from unlearn.config import Config, default, trajectory_fields
from unlearn.encoding import make_collate, pad_id
from unlearn.errors import ConfigError, DataError, DivergenceError
from unlearn.io import append_jsonl, atomic_write_jsonl
from unlearn.methods import Objective
from unlearn.rundir import TRAIN_LOG

log = logging.getLogger("unlearn")
LR_SCHEDULES = ("linear", "constant", "cosine")  # after the warm-up: to 0 linearly, held, or to 0 on a half cosine


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


@dataclass
class TrainState:
    """Where a run is: saved in every checkpoint and restored from it as a whole."""

    step: int = 0  # optimiser steps done
    epoch: int = 0
    batches_done: int = 0  # batches of this epoch consumed
    micro_steps: int = 0  # batches consumed since the start, over every epoch
    history: list[dict] = field(default_factory=list)  # the rows of train_log.jsonl so far

    def next_epoch(self) -> None:
        self.epoch, self.batches_done = self.epoch + 1, 0

    @classmethod
    def from_checkpoint(cls, saved: dict) -> TrainState:
        return cls(saved["step"], saved["epoch"], saved["batches_done"], saved["micro_steps"], saved["history"])


@dataclass(frozen=True)
class Schedule:
    """The official step arithmetic (the closer-look code's ``forget.py``, TOFU's ``finetune.py``).

    ``total = floor(epochs * N / (batch * accum * processes))`` optimiser steps (at least one);
    warm-up: unlearning one epoch of steps, ``floor(N / (batch * accum * processes))``, when that is
    above 1, else none; fine-tuning ``max(1, total // epochs)``. A step ends every ``accum``
    micro-batches counted across epoch boundaries, and at the end of an epoch that has no more
    batches than ``accum`` (the HF Trainer's rule).
    """

    total: int
    warmup: int
    accum: int
    effective_batch: int

    @classmethod
    def of(cls, cfg: Config, n_items: int, accum: int, processes: int, finetune: bool = False) -> Schedule:
        effective = cfg.batch_size * accum * processes
        total = max(1, int(cfg.epochs * n_items) // effective)
        if cfg.warmup is not None:
            warmup = int(cfg.warmup)
        elif finetune:
            warmup = max(1, int(total // cfg.epochs))
        else:
            per_epoch = n_items // effective
            warmup = per_epoch if per_epoch > 1 else 0
        return cls(total, warmup, accum, effective)

    def ends_step(self, micro_steps: int, batches_done: int, epoch_batches: int) -> bool:
        """Whether the micro-batch just consumed ends an optimiser step."""
        short_epoch_end = epoch_batches <= self.accum and batches_done == epoch_batches
        return micro_steps % self.accum == 0 or short_epoch_end


@dataclass
class Session:
    """Everything the loop needs, set up by :func:`prepare_training`."""

    accelerator: Accelerator
    model: torch.nn.Module  # as prepared
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    sampler: EpochShuffle
    scheduler: object
    reference: reference.Reference
    state: TrainState
    settings: dict
    out_dir: Path
    schedule: Schedule
    save_every: int | None = None
    desc: str = "unlearning"
    resumed_from: int | None = None
    chunk: int | None = None  # rows per chunk of the logits (unlearn.chunked), or None: whole logits
    evaluator: object | None = None  # --eval-every (unlearn.evaluation.during.TrainingEval)

    def goal_met(self) -> bool:
        """The evaluation while training met the run's goal: training stops here."""
        return getattr(self.evaluator, "met", None) is not None

    def evaluate_if_due(self) -> None:
        """``--eval-every``: evaluate the model at this step (before the first, and every N steps)."""
        ev, st = self.evaluator, self.state
        if ev is not None and ev.due(st.step):
            ev(st.step, round(st.micro_steps / len(self.loader), 4), self.accelerator.unwrap_model(self.model))

    def log_step(self, micro_parts: list[dict], lr: float) -> dict:
        """One row of ``train_log.jsonl``: the step's mean losses over its micro-steps and processes."""
        means = {k: sum(m[k] for m in micro_parts) / len(micro_parts) for k in micro_parts[0]}
        st = self.state
        row = {
            "step": st.step,
            "epoch": round(st.micro_steps / len(self.loader), 4),
            **distributed.mean_over_processes(means, self.accelerator),
            "lr": lr,
        }
        st.history.append(row)
        if self.accelerator.is_main_process:
            append_jsonl(self.out_dir / TRAIN_LOG, row)
        return row

    def save_checkpoint(self, name: str) -> None:
        _check_finite_weights(self.model, self.state.step, name)  # never checkpoint a diverged model
        checkpoint.save(
            self.out_dir,
            self.accelerator,
            {
                **asdict(self.state),
                "total_steps": self.schedule.total,
                "scheduler": self.scheduler.state_dict(),
                "settings": self.settings,
            },
            self.reference.stats,
        )
        if self.evaluator is not None:
            self.evaluator.prune()  # a resume from here needs the current best only


def run_settings(cfg: Config, objective: Objective, n_items: int, accelerator: Accelerator, tokenizer=None) -> dict:
    """What a run's trajectory depends on; a checkpoint is resumed only under the same settings.

    The tokenizer enters as a hash of its vocabulary: the ``tiny`` preset trains one from the
    data, and a resumed run must encode the data exactly as the interrupted one did.
    """
    settings = {k: getattr(cfg, k) for k in trajectory_fields()}
    settings.update(method=objective.name, items=n_items, processes=accelerator.num_processes)
    if tokenizer is not None:
        vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode("utf-8")
        settings["tokenizer"] = hashlib.sha256(vocab).hexdigest()[:16]
    return json.loads(json.dumps(settings, default=str))  # as it reads back from the checkpoint


def check_lr_schedule(name: str) -> None:
    if name not in LR_SCHEDULES:
        raise ConfigError(f"unknown --lr-schedule {name!r} (valid: {', '.join(LR_SCHEDULES)})")


def _check_settings(saved: dict, current: dict, where: Path) -> None:
    # A setting added since the checkpoint was written had one behaviour then: its default's.
    known = {f.name for f in fields(Config)}
    saved = {**{k: default(k) for k in current if k in known and k not in saved}, **saved}
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise DataError(
                f"{where}: the checkpoint was written with {key} = {saved.get(key)!r}, this run has "
                f"{key} = {current.get(key)!r}; resume with the same settings, or start again "
                "with --overwrite"
            )


def _check_finite_weights(model, step: int, name: str) -> None:
    for pname, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise DivergenceError(f"non-finite weights after step {step}: {name}: {pname}")


def prepare_training(
    model,
    tokenizer,
    dataset,
    objective: Objective,
    cfg: Config,
    out_dir: str | Path,
    *,
    accelerator: Accelerator | None = None,
    ref_stats: dict | None = None,
    texts=None,
    desc: str = "unlearning",
    save_every: int | None = None,
    resume: bool | None = None,
    finetune: bool = False,
    evaluator=None,
) -> Session:
    """Set up a run of :func:`train`: data order, optimiser, reference, scheduler, resume state.

    ``save_every`` and ``resume`` default to ``cfg``'s. On resume, ``model`` must be the model the
    run started from (a KL reference is copied from it); the checkpoint's weights replace its own.
    ``ref_stats``: reference NLLs known already (continual runs with ``--fix-ref-model``);
    ``finetune``: TOFU's fine-tuning warm-up instead of the unlearning one (:class:`Schedule`).
    """
    out_dir = Path(out_dir)
    save_every = cfg.save_every if save_every is None else save_every
    resume = cfg.resume if resume is None else resume
    accelerator = accelerator or distributed.make_accelerator(cfg)
    settings = run_settings(cfg, objective, len(dataset), accelerator, tokenizer)
    saved = None
    if resume:
        if accelerator.is_main_process:
            checkpoint.recover(out_dir)
        accelerator.wait_for_everyone()
        saved, saved_stats = checkpoint.load(out_dir)
        _check_settings(saved["settings"], settings, checkpoint.path(out_dir))
        if saved_stats is not None:  # the original model's NLLs (the model in hand is not the reference any
            ref_stats = saved_stats  # more), RMU's control vector
    if cfg.gradient_checkpointing:
        # transformers 5 renamed it; older releases only have the first name.
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
        model.config.use_cache = False
    sampler = EpochShuffle(len(dataset), cfg.seed)
    # The loader's own generator (unused without workers) keeps iteration off the global RNG.
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=make_collate(pad_id(tokenizer)),
    )
    _train_only(model, objective.trainable_patterns)
    optimizer = distributed.build_optimizer(model, cfg)
    model, optimizer, loader, ref = reference.prepare(
        accelerator,
        model,
        optimizer,
        loader,
        objective=objective,
        cfg=cfg,
        dataset=dataset,
        tokenizer=tokenizer,
        stats=ref_stats,
        texts=texts,
    )
    set_seed(cfg.seed)  # nothing above draws from the global generators
    schedule = Schedule.of(
        cfg, len(dataset), accelerator.gradient_accumulation_steps, accelerator.num_processes, finetune
    )
    if cfg.lr_schedule == "constant":
        scheduler = get_constant_schedule_with_warmup(optimizer, schedule.warmup)
    else:
        make = get_cosine_schedule_with_warmup if cfg.lr_schedule == "cosine" else get_linear_schedule_with_warmup
        scheduler = make(optimizer, schedule.warmup, schedule.total)
    state = TrainState()
    if saved is not None:
        checkpoint.restore(out_dir, accelerator)  # weights, optimiser, RNG states
        scheduler.load_state_dict(saved["scheduler"])
        state = TrainState.from_checkpoint(saved)
        if accelerator.is_main_process:
            atomic_write_jsonl(out_dir / TRAIN_LOG, state.history)  # drop the rows logged after it
        log.info(
            "resuming from the checkpoint of step %d of %d in %s", state.step, schedule.total, checkpoint.path(out_dir)
        )
        if evaluator is not None:
            evaluator.resume(state.step)
    chunk = chunk_rows(model, cfg.chunked_logits, distributed.is_sharded(accelerator))
    return Session(
        accelerator,
        model,
        optimizer,
        loader,
        sampler,
        scheduler,
        ref,
        state,
        settings,
        out_dir,
        schedule,
        save_every,
        desc,
        state.step if saved is not None else None,
        chunk,
        evaluator,
    )


def _train_only(model, patterns: list[str] | None) -> None:
    """Freeze every weight but those the objective trains (RMU: some MLPs); the others stay as they
    are (under LoRA only the adapters of those modules train)."""
    if patterns is None:
        return
    chosen = [n for n, p in model.named_parameters() if p.requires_grad and any(re.search(x, n) for x in patterns)]
    if not chosen:
        raise DataError(f"no trainable parameter of the model matches {patterns}; check the method's layers")
    keep = set(chosen)
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
    log.info(
        "training only %d parameter tensors: %s",
        len(chosen),
        ", ".join(chosen[:6]) + (" ..." if len(chosen) > 6 else ""),
    )
