"""The only code that runs the model during evaluation: greedy generation and answer NLLs.

Both functions sort their inputs by token length, so each batch pads to a similar length, and
return results in the caller's order. Generation pads on the left (every prompt ends where the
new tokens start), keeps the KV cache and stops at EOS; NLL batches pad on the right, to the
longest sequence of the batch only.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from tqdm.auto import tqdm

from ..encoding import encode_prompt, encode_qa, pad_batch
from ..losses import sequence_nll, token_counts

MAX_LENGTH = 200
"""Longest prompt + generation in tokens (PAPER.md §4)."""


@contextlib.contextmanager
def inference(model):
    """``model.eval()`` under ``torch.inference_mode()``; the training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def _eos_ids(model, tokenizer) -> list[int]:
    """The tokenizer's EOS plus any end token the model's generation config names (e.g. Llama 3)."""
    ids = [tokenizer.eos_token_id]
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += extra if isinstance(extra, (list, tuple)) else [extra]
    return list(dict.fromkeys(i for i in ids if i is not None))


def _batches(order: list[int], batch_size: int):
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def generate(model, tokenizer, fmt, questions: list[str], max_length: int = MAX_LENGTH,
             batch_size: int = 16, desc: str | None = None) -> list[str]:
    """Greedy answers to ``questions``, in their order (new tokens only, specials skipped, stripped).

    Each answer may grow to ``max_length`` tokens in total, prompt included (the paper's 200-token
    limit), at least 1 new token: the batch generates up to the budget of its shortest prompt and
    each answer is cut to its own budget, so an answer never depends on which prompts share its
    batch (or on ``batch_size``), even when it runs to the limit.
    """
    from transformers import GenerationConfig

    prompts = [encode_prompt(tokenizer, fmt.prompt(q), fmt.add_special_tokens) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    device = model_device(model)
    out: list[str] = [""] * len(prompts)
    from ..distributed import is_main_process

    bar = tqdm(total=len(prompts), desc=desc or "generating", unit="q", leave=False,
               disable=None if is_main_process() else True)  # one bar when several processes share the work
    with inference(model):
        for idx in _batches(order, batch_size):
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: the prompt ends at the last column
                n = len(prompts[i])
                ids[row, width - n :] = torch.tensor(prompts[i])
                mask[row, width - n :] = 1
            # Explicit greedy settings: a model's own generation config may ask for sampling or a
            # repetition penalty, which would change the answers.
            budget = [max(max_length - len(prompts[i]), 1) for i in idx]
            config = GenerationConfig(
                max_new_tokens=max(budget), do_sample=False, num_beams=1,
                repetition_penalty=1.0, temperature=1.0, top_p=1.0, top_k=50, use_cache=True,
                eos_token_id=eos, pad_token_id=pad_id)
            seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  generation_config=config)
            new = seqs[:, width:].tolist()
            texts = tokenizer.batch_decode([row[:n] for row, n in zip(new, budget)], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                out[i] = text.strip()
            bar.update(len(idx))
    bar.close()
    return out


def answer_nlls(model, tokenizer, fmt, questions: list[str], answers: list[str],
                batch_size: int = 16) -> np.ndarray:
    """Per-item mean token NLL of ``answer + EOS`` after ``fmt.prompt(question)``, shape ``(N,)``.

    Pass every (question, answer) pair of a set at once (answers, paraphrases and perturbed
    answers together): they are sorted by length over the whole list, so batches pad little.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    seqs = [encode_qa(tokenizer, fmt.prompt(q), a, limit, True, fmt.add_special_tokens)
            for q, a in zip(questions, answers)]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model_device(model)
    out = np.zeros(len(seqs), dtype=np.float64)
    with inference(model):
        for idx in _batches(order, batch_size):
            batch = {k: v.to(device) for k, v in pad_batch([seqs[i] for i in idx], pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            nll = sequence_nll(logits, batch["labels"]) / token_counts(batch["labels"]).clamp(min=1)
            out[idx] = nll.double().cpu().numpy()
    return out
