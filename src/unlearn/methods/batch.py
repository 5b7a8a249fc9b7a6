"""The batch view every term reads: model outputs computed once per batch part and shared, and the
hidden states of one decoder layer (RMU). Kept apart from the method registry (:mod:`unlearn.methods`)."""

from __future__ import annotations

import contextlib
import re

import torch

from unlearn import chunked, losses
from unlearn.errors import ConfigError


class BatchView:
    """Model outputs for one batch, computed once per part and shared by every term.

    ``chunk``: rows per chunk when the logits are chunked (:mod:`unlearn.chunked`): the terms then
    get per-position values from :meth:`rows` and never a (B, T, V) tensor; ``autocast``: the
    mixed-precision context the head runs under then (the model's own forward has it already)."""

    def __init__(
        self,
        model,
        batch: dict,
        reference=None,
        seed: int = 0,
        chunk: int | None = None,
        autocast=contextlib.nullcontext,
    ):
        self.model, self.batch, self.reference, self.seed = model, batch, reference, seed
        self.chunk, self.autocast = chunk, autocast
        self._logits: dict[str, torch.Tensor] = {}
        self._hidden: dict[tuple, tuple] = {}
        self.notes: dict[str, float] = {}  # parts of a term's value that the training log shows beside it
        self.epoch = 0  # the epoch this batch belongs to (PDU's dual warm-up)

    def note(self, name: str, value: torch.Tensor) -> None:
        """Show ``value`` (a part of a term) in the training log under ``name``."""
        self.notes[name] = value.detach().float().item()

    def labels(self, part: str) -> torch.Tensor:
        return self.batch[part]["labels"]

    def logits(self, part: str) -> torch.Tensor:
        if part not in self._logits:
            p = self.batch[part]
            self._logits[part] = self.model(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).logits
        return self._logits[part]

    def _final_hidden(self, part: str, frozen: bool = False):
        if (part, frozen) not in self._hidden:
            if frozen:
                model = getattr(self.reference, "model", None)
                if model is None:
                    raise RuntimeError("this method needs a reference model but none was loaded")
                with torch.no_grad():
                    self._hidden[part, frozen] = chunked.final_hidden(model, self.batch[part])
            else:
                self._hidden[part, frozen] = chunked.final_hidden(self.model, self.batch[part])
        return self._hidden[part, frozen]

    def rows(
        self, part: str, fn, select: str = "labels", ref: bool = False, labels: torch.Tensor | None = None, **args
    ) -> torch.Tensor:
        """``fn(logits, target[, ref_logits], **args)`` at the counted positions of ``part``, chunked, (N,)."""
        mask, target = chunked.positions(self.batch[part], select, labels)
        hidden, head = self._final_hidden(part)
        frozen = self._final_hidden(part, frozen=True) if ref else None
        row_fn = (lambda z, y, *r: fn(z, y, *r, **args)) if args else fn
        with self.autocast():
            return chunked.rows(hidden, head, mask, target, row_fn, self.chunk, frozen)

    def rows_mean(self, part: str, fn, select: str = "labels", ref: bool = False, labels=None, **args):
        """The mean of :meth:`rows` (0, still connected to the graph, when no position counts)."""
        values = self.rows(part, fn, select, ref, labels, **args)
        return values.mean() if values.numel() else self._final_hidden(part)[0].float().sum() * 0.0

    def nll(self, part: str) -> torch.Tensor:
        """Summed answer NLL per sequence, (B,)."""
        if not self.chunk:
            return losses.sequence_nll(self.logits(part), self.labels(part))
        mask, _ = chunked.positions(self.batch[part], "labels")
        values = self.rows(part, chunked.nll_rows)
        return values.new_zeros(mask.shape[0]).index_add(0, mask.nonzero()[:, 0], values)

    def mean_nll(self, part: str) -> torch.Tensor:
        if not self.chunk:
            return losses.mean_nll(self.logits(part), self.labels(part))
        return self.nll(part).sum() / losses.token_counts(self.labels(part)).sum().clamp(min=1)

    def ref_nll(self, part: str) -> torch.Tensor:
        """Cached reference NLLs of this batch's items (:class:`unlearn.reference.Reference`)."""
        stats = getattr(self.reference, "stats", None)
        if stats is None or part not in stats:
            raise RuntimeError(f"reference NLLs of '{part}' were not computed before training")
        idx = self.batch["index"].to(stats[part].device)
        return stats[part][idx].to(self.labels(part).device)

    def ref_logits(self, part: str) -> torch.Tensor:
        return self._ref_logits(self.batch[part])

    def _ref_logits(self, p: dict) -> torch.Tensor:
        model = getattr(self.reference, "model", None)
        if model is None:
            raise RuntimeError("this method needs a reference model but none was loaded")
        with torch.no_grad():
            return model(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).logits

    def hidden(self, part: str, layer: int, frozen: bool = False) -> torch.Tensor:
        """``(B, T, H)`` output of decoder layer ``layer`` (0-based) for ``part``: one forward hook on
        that layer only (no ``output_hidden_states`` over every layer); ``frozen``: the reference
        model's, without gradient."""
        model = getattr(self.reference, "model", None) if frozen else self.model
        if model is None:
            raise RuntimeError("this method needs a reference model but none was loaded")
        p = self.batch[part]
        with torch.no_grad() if frozen else contextlib.nullcontext():
            return hidden_states(model, p["input_ids"], p["attention_mask"], layer)

    def padded(self, part: str, length: int) -> dict:
        """``part`` as the official data module builds it: the tokenised text (question and answer,
        no EOS) with attention 1, then EOS padding up to ``length`` with attention 0, and every
        position labelled (its ``mask: false`` labels are the padded input ids). The EOS our encoding
        appends after the answer is that first padding position: attention 0 (a sequence cut at
        ``length`` has none)."""
        p = self.batch[part]
        ids, mask = p["input_ids"][:, :length], p["attention_mask"][:, :length].clone()
        at = (mask.sum(dim=1, keepdim=True) - 1).clamp(min=0)
        last = ids.gather(1, at)
        config = getattr(getattr(self.model, "module", self.model), "config", None)  # (through DDP)
        eos = getattr(config, "eos_token_id", None)
        eos = [e for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if isinstance(e, int)]
        if eos:  # the appended EOS: the official text has none, its EOS is the first padding
            ended = torch.isin(last, torch.tensor(eos, device=last.device))
            mask.scatter_(1, at, torch.where(ended, torch.zeros_like(at), mask.gather(1, at)))
        fill = length - ids.shape[1]
        if fill > 0:
            ids = torch.cat([ids, last.expand(-1, fill)], dim=1)
            mask = torch.cat([mask, mask.new_zeros(mask.shape[0], fill)], dim=1)
        ids = torch.where(mask.bool(), ids, last)  # padding inside the batch too
        return {"input_ids": ids, "attention_mask": mask, "labels": ids}

    def padded_logits(self, part: str, length: int) -> tuple[torch.Tensor, dict]:
        p = self.padded(part, length)
        return self.model(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).logits, p


def decoder_layer(model, layer: int) -> torch.nn.Module:
    """Decoder layer ``layer`` of a causal LM, found through DDP / DeepSpeed / PEFT wrappers: the
    module named ``...layers.<layer>`` (the transformers naming of every decoder-only family)."""
    found = [m for name, m in model.named_modules() if re.search(rf"(^|\.)(layers|h)\.{layer}$", name)]
    if not found:
        raise ConfigError(f"the model has no decoder layer {layer}")
    return found[0]


def hidden_states(model, input_ids, attention_mask, layer: int) -> torch.Tensor:
    """The output of decoder layer ``layer`` on these inputs (a forward hook; the pass itself runs
    through the model so that DDP, DeepSpeed and FSDP do their part)."""
    cache: list[torch.Tensor] = []

    def keep(module, args, output):
        cache.append(output[0] if isinstance(output, tuple) else output)

    # A LoRA model's reference (AdapterOff) is a callable over the model itself: hook that model.
    owner = model if isinstance(model, torch.nn.Module) else model.model
    handle = decoder_layer(owner, layer).register_forward_hook(keep)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        handle.remove()
    return cache[0]
