"""The reference of an unlearning run, decided in one place.

NPO and DPO compare each forget sequence's NLL with the reference model's (``ref="nll"``); KL
compares full next-token distributions at every step (``ref="logits"``). Where the reference
comes from depends on the run, and every case is here:

==========================================  ===============================================
case                                        reference
==========================================  ===============================================
NLL statistics, fresh run                   the model itself before its first step (it *is*
                                            the reference then): computed once, cached, no
                                            second model in memory; under ZeRO-3/FSDP from
                                            the prepared (sharded) model
NLL statistics, ``--ref-model DIR``         that model, loaded for one pass and freed
NLL statistics, resumed run                 the statistics saved in the checkpoint (the
                                            model in hand is half-trained)
NLL statistics, continual with              the original model's, computed for every task
``--fix-ref-model``                         in one pass before training (:func:`pinned_stats`)
frozen model, ``--ref-model DIR``           that model, frozen
frozen model, LoRA                          the trained model with its adapter off
                                            (:class:`AdapterOff`): no copy
frozen model, DeepSpeed ZeRO-3              the model loaded again, partitioned like the
                                            trained one (an inference-only engine)
frozen model, otherwise                     a copy of the model made before training
==========================================  ===============================================

:func:`prepare` is the one entry point: it prepares the model, optimiser and loader for the
accelerator and returns them with a ready :class:`Reference`, because some references must be
taken before preparation (a copy of the unprepared weights) and others after it (a sharded
model runs only once prepared).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from accelerate.utils import DistributedType

from unlearn import distributed, lora, losses, models
from unlearn.data import read_refusals
from unlearn.datasets import UnlearningDataset
from unlearn.encoding import make_collate, pad_id
from unlearn.methods import resolve
from unlearn.prompts import detect_prompt_format

log = logging.getLogger("unlearn")


@dataclass
class Reference:
    """What the loss terms read of the reference: cached per-item NLLs and/or a frozen model."""

    stats: dict[str, torch.Tensor] | None = None  # part -> (N,) summed answer NLL per item; RMU's control vector
    model: object | None = None  # frozen; called under no_grad
    source: str = "none"  # where it came from, for logs


class AdapterOff:
    """The frozen reference of a LoRA model: the same model called with its adapter disabled.

    Stands in for a copy of the base model (the KL regulariser calls it under ``no_grad``); it
    holds no weights of its own. The model is put in eval mode for the call, like a frozen copy.
    """

    def __init__(self, model):
        self.model = model
        self.runner = model  # under FSDP, the wrapped model: only the wrapper can run sharded weights

    def __call__(self, *args, **kwargs):
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                return self.runner(*args, **kwargs)
        finally:
            self.model.train(was_training)


@torch.no_grad()  # not inference_mode: ZeRO-3 gathers weights into tensors it reuses outside it
def reference_nlls(
    model, dataset, parts, tokenizer, batch_size: int = 8, accelerator=None, desc: str = "reference NLLs"
) -> dict[str, torch.Tensor]:
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
    collate = make_collate(pad_id(tokenizer))
    out = {p: torch.zeros(len(dataset), dtype=torch.float32) for p in parts}
    show = accelerator is None or accelerator.is_main_process
    base = accelerator.unwrap_model(model) if accelerator is not None else model
    with lora.adapter_disabled(base):
        for idx in distributed.progress(
            distributed.index_batches(len(dataset), batch_size, rank, world), desc=desc, disable=not show
        ):
            batch = collate([dataset[i] for i in idx])
            for p in parts:
                b = batch[p]
                logits = model(
                    input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)
                ).logits
                out[p][batch["index"]] = losses.sequence_nll(logits, b["labels"].to(device)).float().cpu()
    model.train(was_training)
    if world > 1:
        mine = list(range(rank, len(dataset), world))
        rows = distributed.gather_in_order(mine, [[out[p][i].item() for p in parts] for i in mine], len(dataset))
        out = {p: torch.tensor([r[j] for r in rows], dtype=torch.float32) for j, p in enumerate(parts)}
    return out


def _drop_auto(config: dict) -> dict:
    """A DeepSpeed config without its ``"auto"`` entries (only ``prepare`` knows how to fill them)."""
    return {k: _drop_auto(v) if isinstance(v, dict) else v for k, v in config.items() if v != "auto"}


def freeze(ref, accelerator, prepared=None):
    """A frozen reference model ready for this engine: eval mode, no gradients, no optimiser.

    Under ZeRO-3 it is partitioned like the trained model (an inference-only DeepSpeed engine:
    same ZeRO-3 and parameter-offload settings, no optimiser, no optimiser offload), so it costs
    1/N of its weights per GPU. Elsewhere (one process, DDP, FSDP) it is placed whole on this
    process's device. A LoRA model's reference (:class:`AdapterOff`) is the trained model itself,
    run through ``prepared`` (the trained model as prepared) when its weights are sharded.
    """
    if isinstance(ref, AdapterOff):
        if prepared is not None and accelerator.distributed_type == DistributedType.FSDP:
            ref.runner = prepared  # (ZeRO-3 hooks every layer: the model itself gathers its weights)
        return ref
    ref.eval().requires_grad_(False)
    if distributed.zero_stage(accelerator) == 3:
        import deepspeed  # optional (a GPU extra): only ZeRO-3 runs need it

        config = _drop_auto(copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config))
        for key in ("optimizer", "scheduler", "gradient_clipping"):
            config.pop(key, None)
        config.get("zero_optimization", {}).pop("offload_optimizer", None)
        config.update(
            train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1, train_batch_size=accelerator.num_processes
        )
        engine, *_ = deepspeed.initialize(model=ref, config=config)
        engine.eval()
        return engine
    return ref.to(accelerator.device)


def _load(cfg, name: str, texts=None):
    return models.load_model(name, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code, texts=texts)[0]


def prepare(
    accelerator, model, optimizer, loader, *, objective, cfg, dataset, tokenizer, stats: dict | None = None, texts=None
):
    """``(model, optimizer, loader, reference)``: the training objects prepared for ``accelerator``
    and the reference of ``objective``, ready to use.

    ``stats``: reference NLLs known already (the checkpoint's on resume, the original model's in a
    continual run with ``--fix-ref-model``); ``texts`` train the ``tiny`` preset's tokenizer when
    the model must be loaded again (ZeRO-3).
    """
    ref = Reference(stats=stats, source="given" if stats is not None else "none")
    needs_stats = bool(objective.ref_nll_parts) and stats is None
    sharded = distributed.is_sharded(accelerator)  # ZeRO-3 / FSDP: the model runs only once prepared
    frozen = None
    if objective.needs_ref_model:
        if cfg.ref_model:
            frozen, ref.source = _load(cfg, cfg.ref_model), f"frozen {cfg.ref_model}"
        elif lora.is_peft(model):
            frozen, ref.source = AdapterOff(model), "the LoRA model with its adapter off"
        elif distributed.zero_stage(accelerator) == 3:
            # A partitioned model cannot be copied: the reference is loaded again, partitioned too.
            frozen, ref.source = _load(cfg, cfg.model, texts), f"frozen {cfg.model}, partitioned"
    if needs_stats and cfg.ref_model and not cfg.resume:
        other = freeze(_load(cfg, cfg.ref_model), accelerator)
        ref.stats = reference_nlls(other, dataset, objective.ref_nll_parts, tokenizer, cfg.batch_size, accelerator)
        ref.source = f"NLLs of {cfg.ref_model}"
        del other
    elif needs_stats and not sharded:
        # Before the first step the model is the reference: no second copy needed.
        model.to(accelerator.device)
        ref.stats = reference_nlls(model, dataset, objective.ref_nll_parts, tokenizer, cfg.batch_size, accelerator)
        ref.source = "NLLs of the model before training"
    if objective.needs_ref_model and frozen is None:
        frozen, ref.source = copy.deepcopy(model), "a frozen copy of the model before training"
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if frozen is not None:
        ref.model = freeze(frozen, accelerator, model)
    if objective.ref_nll_parts and ref.stats is None:  # sharded: every process runs the prepared model
        ref.stats = reference_nlls(model, dataset, objective.ref_nll_parts, tokenizer, cfg.batch_size, accelerator)
        ref.source = "NLLs of the model before training"
    if objective.ref_nll_parts or objective.needs_ref_model:
        log.info("reference: %s", ref.source)
    return model, optimizer, loader, ref


def pinned_stats(cfg, task_data: dict, template=None) -> dict[int, dict]:
    """``{task: reference NLLs}`` of the original model ``cfg.model`` for NPO/DPO (continual runs
    with ``--fix-ref-model``); ``{}`` for other methods.

    Reference statistics exist only for forget-side sequences (the forget answer and its
    refusal), which do not depend on the retain set (a refusal is drawn before the retain
    partner), so each task's are those a run of the task with the original model as
    ``--ref-model`` would compute. The original model is loaded once, never per task, and never
    beside a model being trained. ``template``: the protocol's prompt format from the model's own
    (:meth:`unlearn.protocols.base.Protocol.template`).
    """
    objective, c = resolve(cfg)
    if not objective.ref_nll_parts or not task_data:
        return {}
    refusals = read_refusals(c.idk)
    accelerator = distributed.make_accelerator(c)
    model, tokenizer = models.load_model(
        c.model, dtype=c.dtype, trust_remote_code=c.trust_remote_code, attn_implementation=c.attn_implementation
    )
    fmt = detect_prompt_format(tokenizer, c.model, c.prompt_format)
    fmt = template(fmt) if template is not None else fmt
    model = freeze(model, accelerator)
    stats = {}
    for task, data in task_data.items():
        dataset = UnlearningDataset(
            data.forget,
            data.retain,
            tokenizer,
            fmt,
            objective.ref_nll_parts,
            refusals,
            c.max_length,
            mask_forget=c.mask,
        )
        stats[task] = reference_nlls(
            model,
            dataset,
            objective.ref_nll_parts,
            tokenizer,
            c.batch_size,
            accelerator,
            desc=f"reference NLLs of task {task}",
        )
    del model
    return stats
