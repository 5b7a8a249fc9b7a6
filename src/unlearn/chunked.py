"""Chunked logits: the loss terms never hold a (batch × length × vocabulary) tensor.

With Llama-3's 128,256-token vocabulary the logits of one 4 × 512 batch are 1 GB in float32, and
a loss keeps them (and their log-softmax) for backward, once per batch part. Here the model runs
with its output head bypassed (the head module's forward returns its input, so the pass still
goes through DDP, its hooks and autocast, and returns the final hidden states); then only the
positions a term counts are taken, and the head and the term's per-row function
(:mod:`unlearn.losses`, ``*_rows``) run ``chunk`` rows at a time under activation checkpointing:
each chunk's logits exist during its forward and again during its backward, never all at once.
The values and gradients are those of the full computation (tests/test_chunked.py, 1e-5 in float32).

``--chunked-logits`` (default: on when the vocabulary has at least :data:`MIN_VOCAB` tokens and
the head can be bypassed) / ``--no-chunked-logits``. It needs the whole output head on each
process: under ZeRO-3 or FSDP, where the head is sharded, the logits are computed whole, and a
model whose logits are more than its head's output (Gemma-2's soft-capping, Cohere's scale) is
never chunked.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from unlearn import losses
from unlearn.encoding import IGNORE_INDEX
from unlearn.errors import ConfigError

log = logging.getLogger("unlearn")

MIN_VOCAB = 32_000
CHUNK_ELEMENTS = 2**25  # logits per chunk: 128 MB in float32 (261 rows of a 128,256-token vocabulary)


def _unwrapped(model):
    """The transformers model inside DDP / DeepSpeed / PEFT wrappers (and a LoRA reference)."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if hasattr(model, "get_output_embeddings") and not hasattr(model, "get_base_model"):
            return model
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "model"):  # AdapterOff
            model = model.model
        else:
            break
    return model


def output_head(model) -> tuple[torch.nn.Linear | None, str | None]:
    """``(head, None)`` when ``model``'s logits are exactly its head's output, else ``(None, why)``."""
    inner = _unwrapped(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        return None, "the model's output head is not a linear layer"
    config = getattr(inner, "config", None)
    for attr in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling"):
        if getattr(config, attr, None) not in (None, 1, 1.0):
            return None, f"the model's logits are more than its head's output ({attr})"
    return head, None


def chunk_rows(model, setting: bool | None, sharded: bool) -> int | None:
    """Rows per chunk for ``model`` under ``--chunked-logits setting`` (None: whole logits)."""
    if setting is False:
        return None
    head, why = output_head(model)
    if why is None and sharded:
        why = "ZeRO-3 / FSDP shard the output head"
    if why is not None:
        if setting:
            raise ConfigError(f"--chunked-logits: {why}; pass --no-chunked-logits")
        return None
    vocab = head.out_features
    if setting is None and vocab < MIN_VOCAB:
        return None
    rows = max(1, CHUNK_ELEMENTS // vocab)
    log.info("chunked logits: %d positions at a time (vocabulary %d)", rows, vocab)
    return rows


@contextlib.contextmanager
def head_bypassed(model):
    """The model's output head returns its input: a forward pass gives the final hidden states."""
    head, why = output_head(model)
    if head is None:
        raise ConfigError(f"chunked logits: {why}")
    head.forward = lambda x: x  # an instance attribute: the module's hooks still run
    try:
        yield head
    finally:
        del head.forward


def final_hidden(model, batch: dict) -> tuple[torch.Tensor, torch.nn.Linear]:
    """``((B, T, H) final hidden states, head)`` of ``model`` on ``batch`` (input_ids, attention_mask)."""
    with head_bypassed(model) as head:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits, head


def positions(batch: dict, select: str, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask (B, T), target (B, T))``: the positions a term counts and each one's next token.
    ``labels``: the counted positions predict a label (``labels[:, t + 1]`` not ignored);
    ``attention``: every real token counts (KL)."""
    labels = batch["labels"] if labels is None else labels
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    if select == "labels":
        return target != IGNORE_INDEX, target.clamp(min=0)
    if select == "attention":
        return batch["attention_mask"].bool(), target.clamp(min=0)
    raise ValueError(f"unknown selection {select!r}")


def rows(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    mask: torch.Tensor,
    target: torch.Tensor,
    fn,
    chunk: int,
    ref: tuple[torch.Tensor, torch.nn.Linear] | None = None,
) -> torch.Tensor:
    """``fn(logits, target[, ref_logits])`` over the rows of ``mask``, ``chunk`` rows at a time, (N,).

    ``hidden``: the model's final hidden states (B, T, H); ``ref``: the frozen reference's and its
    head (no gradient). Each chunk runs under checkpointing: its logits are recomputed in backward."""
    h, y = hidden[mask], target[mask]
    r = ref[0][mask] if ref is not None else None
    out = []
    for start in range(0, h.shape[0], chunk):
        end = start + chunk
        if ref is None:
            out.append(checkpoint(_chunk, fn, head, h[start:end], y[start:end], use_reentrant=False))
        else:
            out.append(
                checkpoint(_chunk_ref, fn, head, ref[1], h[start:end], y[start:end], r[start:end], use_reentrant=False)
            )
    return torch.cat(out) if out else hidden.float().sum() * 0.0 + torch.zeros(0, device=hidden.device)


def _chunk(fn, head, h, y):
    return fn(F.linear(h, head.weight, head.bias), y)


def _chunk_ref(fn, head, ref_head, h, y, r):
    with torch.no_grad():
        ref_logits = F.linear(r, ref_head.weight, ref_head.bias)
    return fn(F.linear(h, head.weight, head.bias), y, ref_logits)


# --------------------------------------------------------------------------- row-wise forms (chunked logits)
#
# With chunked logits (:mod:`unlearn.chunked`) a term never sees a (B, T, V) tensor: it is given
# the counted positions as rows, a chunk at a time, ``logits`` ``(N, V)``, ``target`` ``(N,)`` (the
# next token) and, for the terms with a frozen reference, ``ref_logits`` ``(N, V)``, and returns
# one value per row. The (B, T) functions above are these values reduced (summed per sequence, or
# averaged over the counted positions); tests/test_chunked.py checks both forms agree.


def nll_rows(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``−log softmax(z)[y]`` per row."""
    return F.cross_entropy(logits.float(), target, reduction="none")


def uniform_kl_rows(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ME's ``KL(U ‖ softmax(z))`` per row (:class:`unlearn.losses._UniformKL`)."""
    return losses._UniformKL.apply(logits)


def kl_rows(logits: torch.Tensor, target: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p_ref ‖ p_θ)`` per row."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_ref = F.log_softmax(ref_logits.float(), dim=-1)
    return F.kl_div(log_p, log_ref, reduction="none", log_target=True).sum(dim=-1)


def wga_rows(logits: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """:func:`unlearn.losses.wga`'s ``−w_t · CE_t`` per row."""
    ce = nll_rows(logits, target)
    return -(torch.exp(-ce).detach() ** beta * ce)


def satimp_rows(logits: torch.Tensor, target: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """:func:`satimp`'s ``−w_t · CE_t`` per row."""
    ce = nll_rows(logits, target)
    p = torch.exp(-ce).detach()
    return -(p**beta1 * (1 - p) ** beta2 * ce)


def undial_rows(logits: torch.Tensor, target: torch.Tensor, ref_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """:func:`undial`'s cross-entropy per row."""
    teacher = ref_logits.float().detach()
    teacher = teacher.scatter_add(-1, target.unsqueeze(-1), torch.full_like(teacher[:, :1], -beta))
    return F.cross_entropy(logits.float(), F.softmax(teacher, dim=-1), reduction="none")


def ce_u_rows(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`ce_u`'s cross-entropy per row (the caller drops the first answer tokens)."""
    counted = logits.float()
    removed = counted.detach().scatter(-1, target.unsqueeze(-1), float("-inf"))
    return F.cross_entropy(counted, F.softmax(removed, dim=-1), reduction="none")


def ce_u_labels(labels: torch.Tensor, ignore_first: int) -> torch.Tensor:
    """``labels`` without the first ``ignore_first`` answer tokens of each sequence (:func:`ce_u`)."""
    answer = labels != IGNORE_INDEX
    return labels.masked_fill(answer & (answer.cumsum(dim=1) <= ignore_first), IGNORE_INDEX)
