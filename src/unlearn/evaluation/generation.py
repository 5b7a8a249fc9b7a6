"""Greedy generation for evaluation: batched, sorted by prompt length, left-padded, on the KV cache,
stopping at EOS; each answer independent of its batch. :mod:`unlearn.evaluation.scoring` scores text."""

from __future__ import annotations

import contextlib
import inspect

import torch
import torch.nn.functional as F
from transformers import cache_utils

from unlearn.config import EVAL_BATCH_SIZE
from unlearn.distributed import progress
from unlearn.encoding import encode_question, pad_id

MAX_LENGTH = 200
"""Longest prompt + generation, and prompt + answer scored, in tokens (docs/methods.md §4)."""


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


def eos_ids(model, tokenizer) -> list[int]:
    """The tokenizer's EOS plus any end token the model's generation config names (e.g. Llama 3)."""
    ids = [tokenizer.eos_token_id]
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += extra if isinstance(extra, (list, tuple)) else [extra]
    return list(dict.fromkeys(i for i in ids if i is not None))


GENERATION_ROWS = 4
"""Answers decoded together per scoring batch, by default: a row leaves its batch as it ends, so a
larger batch costs little more memory and makes fewer, fuller decoding steps."""

CPU_GENERATION_ROWS = 16
"""The same on a CPU, where memory is not the limit and a decoding step of 64 rows runs its
matrices well below the CPU's speed: 128 rows generated SmolLM2-135M's 220 TOFU answers in 227-232 s
against 251-260 s for 64, and all 220 at once decoded in 220 s against 243 s for batches of 128
(2 cores, one thread; docs/performance.md)."""


def generation_batch(batch_size: int, gen_batch_size: int | None = None, model=None) -> int:
    """Prompts decoded together: ``gen_batch_size``, else ``GENERATION_ROWS x batch_size``
    (``CPU_GENERATION_ROWS x`` for a ``model`` on a CPU)."""
    if gen_batch_size:
        return gen_batch_size
    on_cpu = model is not None and model_device(model).type == "cpu"
    return (CPU_GENERATION_ROWS if on_cpu else GENERATION_ROWS) * batch_size


def _batches(order: list[int], batch_size: int):
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def generate(
    model,
    tokenizer,
    fmt,
    questions: list[str],
    max_length: int = MAX_LENGTH,
    batch_size: int = EVAL_BATCH_SIZE,
    desc: str | None = None,
    max_new_tokens: int | None = None,
    stop: list[int] | None = None,
    mask_pad: bool = False,
    decode: dict | None = None,
) -> list[str]:
    """Greedy answers to ``questions``, in their order (new tokens only, specials skipped, stripped).

    Each answer may grow to ``max_length`` tokens in total, prompt included (the paper's 200-token
    limit), at least 1 new token, and is cut to its own budget, so an answer never depends on which
    prompts share its batch (or on ``batch_size``), even when it runs to the limit.

    Prompts are sorted by length and decoded in left-padded batches with the KV cache (see
    :func:`decode_greedy`): an answer that ends (EOS or its budget) leaves its batch at once, so a
    batch costs the tokens its answers have, not ``batch size x its longest answer``.

    The TOFU standard (open-unlearning) instead gives every answer ``max_new_tokens`` new tokens
    whatever its prompt's length, stops at the model's generation-config EOS only (``stop``),
    masks every pad-token id out of the attention (``mask_pad``: its collator's
    ``input_ids != pad``, which also hides a pad id inside a prompt) and decodes with ``decode``.
    """
    prompts = [encode_question(tokenizer, fmt, q) for q in questions]
    pad = pad_id(tokenizer)
    eos = eos_ids(model, tokenizer) if stop is None else list(stop)
    budget = (
        [max_new_tokens] * len(prompts)
        if max_new_tokens is not None
        else [max(max_length - len(p), 1) for p in prompts]
    )
    new: list[list[int]] = [[] for _ in prompts]
    keep = supports_logits_to_keep(model)
    bar = progress(total=len(prompts), desc=desc or "generating", unit="q")  # one bar for all processes
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    with inference(model):
        for idx in _batches(order, batch_size):
            rows = decode_greedy(
                model,
                [prompts[i] for i in idx],
                [budget[i] for i in idx],
                pad,
                eos,
                mask_pad=mask_pad,
                keep_logits=keep,
                on_done=lambda: bar.update(1),
            )
            for i, row in zip(idx, rows, strict=False):
                new[i] = row
    bar.close()
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True, **(decode or {}))]


def decode_greedy(
    model,
    seqs: list[list[int]],
    budgets: list[int],
    pad: int,
    eos: list[int],
    mask_pad: bool = False,
    keep_logits: bool = True,
    on_done=None,
) -> list[list[int]]:
    """Greedy continuations of ``seqs`` (token ids), each up to its budget of new tokens and ending
    with its first EOS (included), as ``model.generate(do_sample=False)`` gives them for the same
    left-padded batch: the same attention mask (``input_ids != pad`` with ``mask_pad``), position
    ids (the mask's running count, then one more per step), KV cache and float32 argmax.

    Unlike ``model.generate``, rows that have ended leave the batch (their rows of the KV cache are
    dropped) once they are more than ``DROP_ENDED`` of it, so the next steps run on the answers still
    going only; until then an ended row runs on, its tokens ignored. Without ``mask_pad`` pads sit on
    the left only, and the rows left keep their own padding. ``on_done()`` is called as each row
    ends. Caches that cannot drop rows keep every row to the end (the answers are the same). The
    prompts' pass runs in groups of rows (:func:`prefill`); the cache then has room for every new
    token (:func:`reserve`)."""
    device = model_device(model)
    eos_set = set(eos)
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, x in enumerate(seqs):  # left padding: every prompt ends at the last column
        ids[row, width - len(x) :] = torch.tensor(x, dtype=torch.long)
        mask[row, width - len(x) :] = 1
    if mask_pad:
        mask = (ids != pad).long()
    ids, mask = ids.to(device), mask.to(device)
    position = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    out: list[list[int]] = [[] for _ in seqs]
    live = list(range(len(seqs)))  # live[r]: the sequence in row r of the batch (None: ended, kept)
    extra = {"logits_to_keep": 1} if keep_logits else {}
    last, cache, cache_arg = prefill(model, ids, mask, position, [len(x) for x in seqs], extra)
    reserve(cache, width + max(budgets))
    while True:
        tokens = last.float().argmax(-1).tolist()
        going = []
        for r, (i, t) in enumerate(zip(live, tokens, strict=False)):
            if i is None:
                continue
            out[i].append(t)
            if t in eos_set or len(out[i]) >= budgets[i]:
                live[r] = None
                if on_done is not None:
                    on_done()
            else:
                going.append(r)
        if not going:
            return out
        if len(live) - len(going) > len(live) * DROP_ENDED and hasattr(cache, "batch_select_indices"):
            keep = torch.tensor(going, device=device)
            cache.batch_select_indices(keep)
            mask, position = mask[keep], position[keep]
            tokens = [tokens[r] for r in going]
            live = [live[r] for r in going]
        ids = torch.tensor(tokens, dtype=torch.long, device=device)[:, None]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        position = position[:, -1:] + 1
        result = model(
            input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, **extra, **{cache_arg: cache}
        )
        cache, last = getattr(result, cache_arg), result.logits[:, -1, :]


PREFILL_ROWS = 32
"""Prompts run together in a batch's first forward pass: the batch's prompts in groups of this many
rows, each group padded to its own longest prompt, their caches then joined (left-padded with zeros
that the mask hides). SmolLM2-135M's 220 TOFU prompts took 60 s in one pass of 220 rows padded to
the longest, 45 s in passes of 128 and 32 s in passes of 32 (one thread; docs/performance.md)."""


def prefill(model, ids, mask, position, widths: list[int], extra: dict, rows: int | None = None):
    """``(last logits (B, V), cache, its argument name)`` of the first forward pass over left-padded
    prompts (``widths``: each row's prompt length), in groups of ``rows`` rows each cut to its own
    longest prompt, where the cache is transformers' plain dynamic cache (one pass otherwise)."""
    parts, logits = [], []
    rows = rows or PREFILL_ROWS
    for start in range(0, ids.shape[0], rows):
        part = slice(start, start + rows)
        cut = slice(ids.shape[1] - max(widths[part]), None)
        result = model(
            input_ids=ids[part, cut],
            attention_mask=mask[part, cut],
            position_ids=position[part, cut],
            use_cache=True,
            **extra,
        )
        cache_arg = "cache" if getattr(result, "cache", None) is not None else "past_key_values"  # transformers 5 / 4
        cache = getattr(result, cache_arg)
        if not parts and start + rows < ids.shape[0] and not _joinable(cache):  # one pass over every row
            result = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, **extra)
            return result.logits[:, -1, :], getattr(result, cache_arg), cache_arg
        parts.append(cache)
        logits.append(result.logits[:, -1, :])
    cache = parts[0]
    if len(parts) > 1:
        for i, layer in enumerate(cache.layers):
            for name in ("keys", "values"):
                tensors = [getattr(p.layers[i], name) for p in parts]
                width = ids.shape[1]
                setattr(layer, name, torch.cat([F.pad(t, (0, 0, width - t.shape[-2], 0)) for t in tensors]))
    return torch.cat(logits), cache, cache_arg


DROP_ENDED = 0.25
"""Ended rows leave a decoding batch once they are more than this share of its rows: dropping rows
copies the whole KV cache, so dropping them one at a time made the tiny model's 657 TOFU answers take
5.17 s against 4.47 s (perf/decode_cache.py, best of 3)."""


class ReservedLayer(cache_utils.DynamicLayer):
    """transformers' dynamic cache layer, its keys and values kept in buffers with room for
    ``capacity`` positions: a decoding step writes its position in place, where the dynamic layer
    copies the whole cache into a new tensor (``torch.cat``) at every step. ``keys`` and ``values``
    are views of the positions written. For :func:`decode_greedy`'s own loop (new positions, rows
    dropped); the buffers grow (doubling) if ever full."""

    def __init__(self, layer: cache_utils.DynamicLayer, capacity: int):
        super().__init__()
        self.device, self.is_initialized = layer.keys.device, True
        self._store(layer.keys, layer.values, max(capacity, layer.keys.shape[-2]))

    def _store(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        """Fresh buffers of ``capacity`` positions holding ``keys`` and ``values`` (rows, heads, length, dim)."""
        self.length = keys.shape[-2]
        self._keys = keys.new_empty((*keys.shape[:2], capacity, keys.shape[-1]))
        self._values = values.new_empty((*values.shape[:2], capacity, values.shape[-1]))
        self._keys[:, :, : self.length] = keys
        self._values[:, :, : self.length] = values
        self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            self._store(self.keys, self.values, max(end, 2 * self._keys.shape[-2]))
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._store(self.keys.index_select(0, indices), self.values.index_select(0, indices), self._keys.shape[-2])


def reserve(cache, capacity: int) -> None:
    """Give each layer of transformers' plain dynamic cache room for ``capacity`` positions
    (:class:`ReservedLayer`); any other cache is left as it is."""
    if _joinable(cache):
        cache.layers = [ReservedLayer(layer, capacity) for layer in cache.layers]


def _joinable(cache) -> bool:
    """Whether ``cache`` is transformers' dynamic cache of full-attention layers (joined by rows here)."""
    layers = getattr(cache, "layers", None)
    plain = getattr(cache_utils, "DynamicLayer", None)  # transformers >= 4.56
    return plain is not None and bool(layers) and all(type(layer) is plain for layer in layers)


def wrapped(model):
    """``model``, then the model each DDP / PEFT wrapper holds, outermost first."""
    seen = set()
    while model is not None and id(model) not in seen:
        seen.add(id(model))
        yield model
        model = next((getattr(model, a) for a in ("module", "base_model", "model") if hasattr(model, a)), None)


def supports_logits_to_keep(model) -> bool:
    """Whether ``model`` (or the model a DDP / PEFT wrapper holds) takes ``logits_to_keep``."""
    return any(
        getattr(m, "forward", None) is not None and "logits_to_keep" in inspect.signature(m.forward).parameters
        for m in wrapped(model)
    )
