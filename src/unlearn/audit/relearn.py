"""The relearning attack: a few fine-tuning steps on part of the forget set bring the rest back?

Hu et al. 2024 ("Jogging the memory of unlearned LLMs through targeted relearning attacks") and
Lynch et al. 2024 ("Eight methods to evaluate robust unlearning in LLMs") show that knowledge only
hidden by unlearning returns after a few steps of fine-tuning on related data. Here: the forget
rows are split by the seed into a relearned part (``--relearn-fraction``) and a measured part; a
copy of the model, loaded anew from its files, is fine-tuned by the one training loop (under
several processes, data-parallel like any run)
(:func:`unlearn.train.fit`, plain NLL, AdamW at ``--relearn-lr`` decaying linearly, no warm-up)
for ``--relearn-steps`` steps of ``--relearn-batch-size`` rows, and the measured part is scored
before and after. The audited model's files are never written; the copy is saved only with
``--save-relearned``.

Recovery, per metric: ``(after − before) / (target − before)`` with the target model's value on
the measured part: 0 when nothing came back, 1 when the model knows it as well as before unlearning.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from unlearn import distributed, methods, train
from unlearn.data import DEFAULT_MAX_LENGTH
from unlearn.datasets import QADataset
from unlearn.distributed import state
from unlearn.loading import load_for_training
from unlearn.models import save_model


def split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(relearned, measured)`` row indices: a seeded draw of ``round(fraction × n)`` rows (at least
    one, and at least one left to measure), each part in file order."""
    if n < 2:
        raise ValueError("the relearning attack needs at least two forget rows")
    order = list(range(n))
    random.Random(f"relearn:{seed}").shuffle(order)
    k = min(max(1, round(fraction * n)), n - 1)
    return sorted(order[:k]), sorted(order[k:])


def epochs_for(steps: int, batch_size: int, n: int) -> float:
    """The ``epochs`` that make :class:`unlearn.train.Schedule` take exactly ``steps`` steps of
    ``batch_size`` rows over ``n`` rows (``floor(epochs × n) // batch_size == steps``)."""
    return (steps * batch_size + 0.5) / n


def relearn_config(cfg, model_path: str, n_rows: int):
    """The settings of the relearning fine-tune, from the audit's."""
    per_step = cfg.relearn_batch_size * state().num_processes  # each process its batch (data-parallel)
    return dataclasses.replace(
        cfg,
        model=str(model_path),
        method="finetune",
        lr=cfg.relearn_lr,
        batch_size=cfg.relearn_batch_size,
        grad_accum=1,
        effective_batch=cfg.relearn_batch_size,
        warmup=0,
        epochs=epochs_for(cfg.relearn_steps, per_step, n_rows),
        lora=False,
        save_every=None,
        resume=False,
        max_length=cfg.max_length or DEFAULT_MAX_LENGTH,
        gradient_checkpointing=False,
    )


def relearn(cfg, model_path: str, rows: list[dict], answer_key: str, out_dir: Path, measure):
    """Fine-tune a fresh copy of ``model_path`` on ``rows``; returns ``(before, after)``, what
    ``measure(model, tokenizer, fmt)`` gives on the copy before and after (the copy stays in
    memory only, unless ``cfg.save_relearned``)."""
    rcfg = relearn_config(cfg, model_path, len(rows))
    pairs = [{"question": r["question"], "answer": r[answer_key]} for r in rows]
    model, tokenizer, fmt, rcfg = load_for_training(rcfg, [p["question"] + " " + p["answer"] for p in pairs])
    model.to(state().device)
    before = measure(model, tokenizer, fmt)
    dataset = QADataset(pairs, tokenizer, fmt, rcfg.max_length)
    trained = train.fit(model, tokenizer, dataset, methods.FINETUNE, rcfg, out_dir, desc="relearning")
    after = measure(trained.model, tokenizer, fmt)
    if cfg.save_relearned and distributed.is_main_process():
        save_model(trained.model, tokenizer, out_dir / "model")
    return before, after
