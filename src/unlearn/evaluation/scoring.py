"""The model passes of an evaluation that score text: answer NLLs and token statistics (greedy
generation is :mod:`unlearn.evaluation.generation`).

Both sort their inputs by token length, so each batch pads to a similar length, and
return results in the caller's order. Generation pads on the left (every prompt ends where the
new tokens start), keeps the KV cache and stops at EOS; NLL batches pad on the right, to the
longest sequence of the batch only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from unlearn.config import EVAL_BATCH_SIZE
from unlearn.distributed import progress
from unlearn.encoding import IGNORE_INDEX, Encoded, encode_pair, pad_batch, pad_id
from unlearn.evaluation import packing
from unlearn.evaluation.generation import (  # noqa: F401 (MAX_LENGTH: part of its API)
    MAX_LENGTH,
    inference,
    model_device,
    supports_logits_to_keep,
)
from unlearn.evaluation.mia import TokenStats
from unlearn.losses import sequence_nll, token_counts


def answer_nlls(
    model,
    tokenizer,
    fmt,
    questions: list[str],
    answers: list[str],
    batch_size: int = EVAL_BATCH_SIZE,
    max_length: int = MAX_LENGTH,
    desc: str = "answer NLLs",
) -> np.ndarray:
    """Per-item mean token NLL of ``answer + EOS`` after ``fmt.prompt(question)``, shape ``(N,)``.

    As officially, prompt + answer are cut at ``max_length`` tokens (the generation limit), and a
    sequence cut there has no EOS label. Pass every (question, answer) pair of a set at once
    (answers, paraphrases and perturbed answers together): they are sorted by length over the whole
    list, so batches pad little.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    seqs = [encode_pair(tokenizer, fmt, q, a, max_length) for q, a in zip(questions, answers, strict=False)]
    return score_sequences(model, tokenizer, seqs, batch_size, desc=desc, share_prompts=shares_prompts(model))[0]


SHARE_PROMPTS_FROM = 20_000_000
"""Parameters from which a question's answers are scored on its prompt's KV cache: where the saved
compute outweighs one more forward call per batch (measured on SmolLM2-135M: faster; on a
0.2M-parameter Llama: slower; perf/tofu_parity.py)."""


def shares_prompts(model) -> bool:
    return sum(p.numel() for p in model.parameters()) >= SHARE_PROMPTS_FROM


def score_sequences(
    model,
    tokenizer,
    seqs: list,
    batch_size: int = EVAL_BATCH_SIZE,
    mask_pad: bool = False,
    stats_for=(),
    texts: list[str] | None = None,
    desc: str = "scoring",
    share_prompts: bool = False,
) -> tuple[np.ndarray, dict]:
    """``(avg_loss (N,), {i: TokenStats})`` of encoded sequences in ONE length-sorted pass: every
    sequence's mean label NLL, and for the indices in ``stats_for`` the per-token statistics of
    :func:`token_stats` (``texts[i]`` their text). ``mask_pad``: attention ``input_ids != pad``, as
    open-unlearning's collator.

    ``share_prompts``: sequences whose tokens before their answer are the same (a question's answer,
    paraphrase and perturbed answers) run that prompt once per batch and their answers on its KV
    cache (:func:`_prompt_shared_batches`): the same values up to float rounding, with the prompts'
    share of the work done once instead of once per answer."""

    want = set(stats_for)
    pad = pad_id(tokenizer)
    device = model_device(model)
    keep = supports_logits_to_keep(model)
    losses = np.zeros(len(seqs), dtype=np.float64)
    stats: dict = {}
    lengths = [len(s) for s in seqs]
    if share_prompts and seqs and packing.packable(model, max(lengths)):
        return _score_packed(model, seqs, batch_size * max(lengths), pad, mask_pad, want, texts, desc)
    if share_prompts:
        batches = _prompt_shared_batches(seqs, batch_size)
    else:
        order = sorted(range(len(seqs)), key=lambda i: -lengths[i])
        batches = [(idx, None) for idx in _length_batches(order, lengths, batch_size)]
    with inference(model), progress(total=len(seqs), desc=desc, unit="seq") as bar:
        for idx, cut in batches:
            out = (
                _prompt_cached_logits(model, [seqs[i] for i in idx], cut, pad, mask_pad, device, keep) if cut else None
            )
            parts = [(idx, out)]
            if cut and out is None:  # whole sequences: a batch sized by its answers is cut by their own lengths
                parts = [
                    (sub, None) for sub in _length_batches(sorted(idx, key=lambda i: -lengths[i]), lengths, batch_size)
                ]
            for sub, got in parts:
                if got is None:
                    batch = {k: v.to(device) for k, v in pad_batch([seqs[i] for i in sub], pad).items()}
                    if mask_pad:
                        batch["attention_mask"] = (batch["input_ids"] != pad).long()
                    got = answer_logits(model, batch, keep)
                logits, labels = got
                nll = sequence_nll(logits, labels) / token_counts(labels).clamp(min=1)
                losses[sub] = nll.double().cpu().numpy()
                rows = [r for r, i in enumerate(sub) if i in want]
                if rows:
                    names = [texts[sub[r]] if texts else "" for r in rows]
                    for r, st in zip(rows, _token_stats_rows(logits[rows], labels[rows], names), strict=False):
                        stats[sub[r]] = st
                bar.update(len(sub))
    return losses, stats


def _score_packed(model, seqs: list, budget: int, pad: int, mask_pad: bool, want: set, texts, desc: str):
    """:func:`score_sequences` on packed rows (:mod:`unlearn.evaluation.packing`), batches of at most
    ``budget`` padded tokens."""
    device = model_device(model)
    losses = np.zeros(len(seqs), dtype=np.float64)
    stats: dict = {}
    rows = packing.pack_rows(seqs)
    with inference(model), progress(total=len(seqs), desc=desc, unit="seq") as bar:
        for batch in packing.row_batches(rows, budget):
            logits, target, owner = packing.packed_logits(model, batch, seqs, pad, mask_pad, device)
            members = list(dict.fromkeys(owner))  # each sequence's positions are consecutive
            local = {i: k for k, i in enumerate(members)}
            at = torch.tensor([local[i] for i in owner], device=logits.device)
            sums = packing.nll_sums(logits, target, at, len(members))
            counts = torch.zeros_like(sums).index_add_(0, at, (target != IGNORE_INDEX).to(sums.dtype))
            losses[members] = (sums / counts.clamp(min=1)).double().cpu().numpy()
            start = {i: k for k, i in reversed(list(enumerate(owner)))}
            for i in (i for i in members if i in want):
                n = len(seqs[i]) - packing.cut_point(seqs[i])
                labels = torch.tensor(seqs[i].labels[-n:], device=logits.device)[None]
                text = [texts[i] if texts else ""]
                stats[i] = _token_stats_rows(logits[start[i] : start[i] + n][None], labels, text)[0]
            bar.update(len(members))
    return losses, stats


def _token_stats_rows(logits: torch.Tensor, labels: torch.Tensor, texts: list[str]) -> list:
    """Per row a :class:`~unlearn.evaluation.mia.TokenStats`: the label tokens' log p, the mean and spread
    of log p under each position's own distribution, whether the greedy token was the label."""
    logp_all = F.log_softmax(logits.float(), dim=-1)
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    p = logp_all.exp()
    mu = (p * logp_all).sum(-1)
    sigma = ((p * logp_all**2).sum(-1) - mu**2).clamp(min=0).sqrt()
    best = logits.argmax(-1)
    out = []
    for j in range(logits.shape[0]):
        pos = (target[j] != IGNORE_INDEX).nonzero().squeeze(-1)
        tok = target[j, pos]
        out.append(
            TokenStats(
                logp_all[j, pos, tok].double().cpu().numpy(),
                mu[j, pos].double().cpu().numpy(),
                sigma[j, pos].double().cpu().numpy(),
                texts[j],
                (best[j, pos] == tok).cpu().numpy(),
            )
        )
    return out


def _prompt_shared_batches(seqs: list, batch_size: int) -> list[tuple[list[int], list[int] | None]]:
    """Batches of ``(indices, cuts)``: each sequence is cut before the last token of its prompt
    (the position that predicts its first answer token); sequences with the same tokens before the
    cut share that prefix. Each prefix's sequences are kept together, the groups ordered by their
    longest sequence (longest first: the answers, padded to the longest of their batch, are most of
    the work, so similar lengths share a batch); batches by :func:`_length_batches` over the parts
    after the cuts. Sequences without an answer token or without a prompt to share go in batches of their own
    (``cuts`` None)."""
    groups: dict[tuple, list[int]] = {}
    plain = []
    cut: dict[int, int] = {}
    for i, s in enumerate(seqs):
        c = packing.cut_point(s)  # the position that predicts the first answer token
        if not c:
            plain.append(i)
        else:
            cut[i] = c
            groups.setdefault(tuple(s.input_ids[:c]), []).append(i)
    order = []
    for prefix in sorted(groups, key=lambda k: -max(len(seqs[i]) for i in groups[k])):
        order += sorted(groups[prefix], key=lambda i: -len(seqs[i]))
    tails = {i: len(seqs[i]) - c for i, c in cut.items()}
    out = [(b, [cut[i] for i in b]) for b in _length_batches(order, tails, batch_size)]
    plain.sort(key=lambda i: -len(seqs[i]))
    return out + [(b, None) for b in _length_batches(plain, [len(s) for s in seqs], batch_size)]


MAX_ROWS = 8
"""A batch of short sequences holds at most this many times ``batch_size`` rows."""


def _length_batches(order: list[int], lengths, batch_size: int) -> list[list[int]]:
    """``order`` cut into consecutive batches of at most ``batch_size`` x its longest length padded
    tokens (``lengths[i]`` each; the size of a batch of the longest sequences, which sets the peak
    memory), so shorter sequences go more to a batch (up to ``MAX_ROWS x batch_size``): fewer,
    fuller forward passes for the same work."""
    if not order:
        return []
    budget = batch_size * max(lengths[i] for i in order)
    out: list[list[int]] = []
    batch: list[int] = []
    widest = 0
    for i in order:
        wide = max(widest, lengths[i])
        if batch and ((len(batch) + 1) * wide > budget or len(batch) >= MAX_ROWS * batch_size):
            out.append(batch)
            batch, wide = [], lengths[i]
        batch.append(i)
        widest = wide
    out.append(batch)
    return out


def _prompt_cached_logits(model, seqs: list, cuts: list[int], pad: int, mask_pad: bool, device, keep: bool):
    """``(logits, labels)`` of ``seqs`` from their parts after ``cuts``, run on the KV cache of their
    (deduplicated) parts before: what one forward over the whole right-padded batch gives, at the
    positions after the cuts. Positions count from each sequence's first token, as in a right-padded
    forward; the mask is ``input_ids != pad`` with ``mask_pad``, else the real tokens. None when the
    model's cache cannot select rows (the caller then runs the whole sequences)."""
    prefixes = list(dict.fromkeys(tuple(s.input_ids[:c]) for s, c in zip(seqs, cuts, strict=False)))
    which = {p: u for u, p in enumerate(prefixes)}
    rows = [which[tuple(s.input_ids[:c])] for s, c in zip(seqs, cuts, strict=False)]
    width = max(map(len, prefixes))
    ids = torch.full((len(prefixes), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    position = torch.zeros((len(prefixes), width), dtype=torch.long)
    for u, p in enumerate(prefixes):  # left padding: every prefix ends at the last column
        ids[u, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[u, width - len(p) :] = 1
        position[u, width - len(p) :] = torch.arange(len(p))
    if mask_pad:
        mask = mask * (ids != pad).long()
    ids, mask, position = ids.to(device), mask.to(device), position.to(device)
    extra = {"logits_to_keep": 1} if keep else {}
    result = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, **extra)
    cache_arg = "cache" if getattr(result, "cache", None) is not None else "past_key_values"
    cache = getattr(result, cache_arg, None)
    if cache is None or not hasattr(cache, "batch_select_indices"):
        return None
    select = torch.tensor(rows, device=device)
    cache.batch_select_indices(select)
    tails = [Encoded(s.input_ids[c:], s.labels[c:]) for s, c in zip(seqs, cuts, strict=False)]
    batch = pad_batch(tails, pad)
    tail_mask = batch["attention_mask"] * (batch["input_ids"] != pad).long() if mask_pad else batch["attention_mask"]
    lengths = torch.tensor([len(prefixes[u]) for u in rows])
    tail_position = lengths[:, None] + torch.arange(batch["input_ids"].shape[1])[None, :]
    out = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=torch.cat([mask[select], tail_mask.to(device)], dim=-1),
        position_ids=tail_position.to(device),
        use_cache=True,
        **{cache_arg: cache},
    )
    return out.logits, batch["labels"].to(device)


def answer_logits(model, batch: dict, keep: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, labels)`` over the positions that predict an answer token only.

    The prompt's positions need no logits: where the model supports ``logits_to_keep``, the
    language-model head runs over the last ``T - first answer position + 1`` positions of the
    batch (a (B, T, V) tensor shrinks to the answers' share of it), and ``labels`` is cut to match,
    so :func:`unlearn.losses.sequence_nll` gives the same NLLs as over the whole sequence.
    ``keep``: whether the model supports it (found out here when not given).
    """
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    t = labels.shape[1]
    answer = labels != IGNORE_INDEX
    if keep is None:
        keep = supports_logits_to_keep(model)
    if not keep or not answer.any():
        return model(input_ids=ids, attention_mask=mask).logits, labels
    first = int(answer.float().argmax(dim=1)[answer.any(dim=1)].min())  # earliest answer token
    n = min(t, t - first + 1)  # position first - 1 predicts it
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=n).logits
    return logits, labels[:, t - n :]


def token_stats(
    model,
    tokenizer,
    fmt,
    questions: list[str],
    answers: list[str],
    batch_size: int = EVAL_BATCH_SIZE,
    max_length: int = MAX_LENGTH,
) -> list:
    """Per item, for membership inference and memorisation (:mod:`unlearn.evaluation.mia`): the answer
    tokens' log p, the mean and spread of log p under each position's own next-token distribution,
    and whether the greedy next token was the answer's."""
    seqs = [encode_pair(tokenizer, fmt, q, a, max_length) for q, a in zip(questions, answers, strict=False)]
    _, stats = score_sequences(
        model, tokenizer, seqs, batch_size, stats_for=range(len(seqs)), texts=answers, desc="token statistics"
    )
    return [stats[i] for i in range(len(seqs))]


def grad_norms(
    model,
    tokenizer,
    fmt,
    questions: list[str],
    answers: list[str],
    p: float = 2,
    max_length: int = MAX_LENGTH,
    desc: str = "gradient norms",
) -> list[float]:
    """Per item, for the GradNorm attack: the mean over the model's parameter tensors of the
    ``p``-norm of the gradient of the answer's mean token NLL (every answer token but the last,
    as open-unlearning's attack). The model stays in eval mode (no dropout) and its ``.grad``
    fields are not touched: the gradients are returned by ``torch.autograd.grad``."""
    params = [q for q in model.parameters() if q.requires_grad] or list(model.parameters())
    flags = [q.requires_grad for q in params]
    device = model_device(model)
    out = []
    was_training = model.training
    model.eval()
    try:
        for q in params:
            q.requires_grad_(True)
        for question, answer in progress(list(zip(questions, answers, strict=False)), desc=desc, unit="seq"):
            enc = encode_pair(tokenizer, fmt, question, answer, max_length)
            ids = torch.tensor([enc.input_ids], device=device)
            labels = torch.tensor(enc.labels, device=device)
            with torch.enable_grad():
                logits = model(input_ids=ids).logits[0, :-1].float()
                target = labels[1:]
                pos = (target != IGNORE_INDEX).nonzero().squeeze(-1)[:-1]  # the last label (EOS) left out
                if not len(pos):
                    out.append(0.0)
                    continue
                loss = -F.log_softmax(logits[pos], dim=-1).gather(1, target[pos, None]).mean()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            norms = [g.detach().float().norm(p=p) for g in grads if g is not None]
            out.append(float(torch.stack(norms).mean()))
    finally:
        for q, f in zip(params, flags, strict=False):
            q.requires_grad_(f)
        model.train(was_training)
    return out
