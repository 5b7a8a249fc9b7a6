"""Scoring packed rows: a question's answers one after another in one row, after one copy of its
prompt, several questions to a row, each token attending only to what it would see in its own
sequence (a 4D attention mask and each sequence's own position ids).

A sequence is cut before the position that predicts its first answer token: sequences with the same
tokens before their cuts (a question's answer, paraphrase and perturbed answers) form a *group*; a
group's row segment is its prompt once, then each member's part after the cut (its *tail*). The
prompt attends causally to itself, each tail to the prompt and causally to itself, nothing across
members or groups; positions count from the start of each sequence, as in a forward of the sequence
alone. The language-model head runs on the tails' positions only (a hook on the output embeddings
gives it those hidden states), so neither padding nor a prompt gets logits.

Against a right-padded batch of whole sequences this does the prompt's work once per group instead
of once per answer and almost no padding (groups fill rows of about the same length), in one forward
per batch: the same values up to float rounding (tests/test_packing.py). Models whose attention cannot
take such a mask (flash attention, position biases by key index, a sliding window shorter than a
sequence) are not packed (:func:`packable`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from unlearn.encoding import IGNORE_INDEX
from unlearn.evaluation.generation import wrapped

ROW_TOKENS = 256
"""Row length packed to (or the longest sequence, if longer): long enough to hold most groups
whole, short enough that the masked attention (quadratic in the row) stays a small share of the work."""

MASKS = {"sdpa": "bool", "eager": "float"}
"""Attention implementations that take a custom 4D mask, and the mask each expects (transformers:
boolean for SDPA, additive for eager)."""

KEY_INDEX_BIASES = ("bloom", "mpt")
"""Model types whose position bias (ALiBi) counts keys by their index in the row, not by position id."""


def unwrapped_config(model):
    """The config of ``model`` or of the model a DDP / PEFT wrapper holds."""
    return next((m.config for m in wrapped(model) if hasattr(getattr(m, "config", None), "model_type")), None)


def packable(model, longest: int) -> bool:
    """Whether ``model`` gives the same values on packed rows as on sequences of up to ``longest`` tokens."""
    cfg = unwrapped_config(model)
    if cfg is None or getattr(cfg, "_attn_implementation", None) not in MASKS:
        return False
    if getattr(cfg, "model_type", "") in KEY_INDEX_BIASES or getattr(cfg, "alibi", False):
        return False
    for name in ("sliding_window", "attention_chunk_size"):
        window = getattr(cfg, name, None)
        if isinstance(window, int) and window < longest:
            return False
    return "position_ids" in inspect.signature(model.forward).parameters


@dataclass
class Row:
    """One packed row: its tokens, and for each token its group (-1: padding) and member (0: the
    group's prompt); ``tails[i] = (start, cut)``: where sequence ``i``'s tail starts in the row and
    where it was cut."""

    ids: list[int] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    member: list[int] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    tails: dict[int, tuple[int, int]] = field(default_factory=dict)

    def add(self, g: int, prefix: list[int], members: list[tuple[int, list[int], int]]) -> None:
        """Group ``g``: its ``prefix`` once, then each ``(index, tail ids, cut)``."""
        self.ids += prefix
        self.group += [g] * len(prefix)
        self.member += [0] * len(prefix)
        self.position += list(range(len(prefix)))
        for m, (i, tail, cut) in enumerate(members, start=1):
            self.tails[i] = (len(self.ids), cut)
            self.ids += tail
            self.group += [g] * len(tail)
            self.member += [m] * len(tail)
            self.position += list(range(len(prefix), len(prefix) + len(tail)))


def cut_point(seq) -> int:
    """Where ``seq`` is cut: before the position that predicts its first label (0: nothing to share)."""
    first = next((j for j, t in enumerate(seq.labels) if t != IGNORE_INDEX), None)
    return 0 if first is None or first < 2 else first - 1


def pack_rows(seqs: list, row_tokens: int = ROW_TOKENS) -> list[Row]:
    """Every sequence in a row: groups by prompt, each split into segments of at most ``row_tokens``
    (its prompt repeated in each), placed longest first into the first row with room (first-fit
    decreasing), rows of at most ``max(row_tokens, longest sequence)`` tokens, longest rows first."""
    cap = max(row_tokens, max(len(s) for s in seqs))
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(seqs):
        c = cut_point(s)
        groups.setdefault((c, tuple(s.input_ids[:c])) if c else ("alone", i), []).append(i)
    segments = []  # (length, prefix, members)
    for key, idx in groups.items():
        c = key[0] if key[0] != "alone" else 0
        prefix = list(seqs[idx[0]].input_ids[:c])
        part: list = []
        size = len(prefix)
        for i in sorted(idx, key=lambda i: -len(seqs[i])):
            tail = (i, list(seqs[i].input_ids[c:]), c)
            if part and size + len(tail[1]) > cap:
                segments.append((size, prefix, part))
                part, size = [], len(prefix)
            part.append(tail)
            size += len(tail[1])
        segments.append((size, prefix, part))
    rows: list[Row] = []
    for g, (size, prefix, members) in enumerate(sorted(segments, key=lambda x: -x[0])):
        row = next((r for r in rows if len(r.ids) + size <= cap), None)
        if row is None:
            row = Row()
            rows.append(row)
        row.add(g, prefix, members)
    return sorted(rows, key=lambda r: -len(r.ids))


def row_batches(rows: list[Row], budget: int) -> list[list[Row]]:
    """Consecutive rows (longest first) in batches of at most ``budget`` padded tokens (one row at least)."""
    out: list[list[Row]] = []
    for row in rows:
        if out and (len(out[-1]) + 1) * len(out[-1][0].ids) <= budget:
            out[-1].append(row)
        else:
            out.append([row])
    return out


def attention_mask(rows: list[Row], pad: int, mask_pad: bool, kind: str, dtype) -> tuple:
    """``(input_ids, mask (B, 1, T, T), position_ids)`` of right-padded ``rows``: a token sees the
    tokens before it in its own group's prompt and its own tail (not a pad id's, with ``mask_pad``);
    a padding position sees itself only."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    group = torch.full((len(rows), width), -1, dtype=torch.long)
    member = torch.zeros((len(rows), width), dtype=torch.long)
    position = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.ids)
        ids[b, :n] = torch.tensor(r.ids)
        group[b, :n] = torch.tensor(r.group)
        member[b, :n] = torch.tensor(r.member)
        position[b, :n] = torch.tensor(r.position)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same = group[:, :, None] == group[:, None, :]
    seen = (member[:, None, :] == 0) | (member[:, None, :] == member[:, :, None])
    allowed = causal & same & seen & (group[:, None, :] >= 0)
    if mask_pad:
        allowed &= (ids != pad)[:, None, :]
    lonely = ~allowed.any(-1)  # padding (and a query with nothing to see) attends to itself
    allowed |= torch.eye(width, dtype=torch.bool) & lonely[:, :, None]
    mask = allowed[:, None]
    if kind == "float":
        mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    return ids, mask, position


def label_positions(rows: list[Row], seqs: list, width: int) -> tuple[list[int], list[int], list[int]]:
    """``(flat positions, their targets, their sequence)``: every tail position of ``rows`` (flattened
    row-major over ``width`` columns) but the last of each tail, with the label it predicts, tail by
    tail in order."""
    flat, target, owner = [], [], []
    for b, r in enumerate(rows):
        for i, (start, cut) in r.tails.items():
            labels = seqs[i].labels
            n = len(labels) - cut
            flat += range(b * width + start, b * width + start + n)
            target += list(labels[cut + 1 :]) + [IGNORE_INDEX]
            owner += [i] * n
    return flat, target, owner


def packed_logits(model, rows: list[Row], seqs: list, pad: int, mask_pad: bool, device):
    """``(logits (N, V), targets (N,), owners)``: the logits at every tail position of ``rows``
    (see :func:`label_positions`), from one forward of the packed batch."""
    kind = MASKS[unwrapped_config(model)._attn_implementation]
    dtype = next(model.parameters()).dtype
    ids, mask, position = attention_mask(rows, pad, mask_pad, kind, dtype)
    flat, target, owner = label_positions(rows, seqs, ids.shape[1])
    index = torch.tensor(flat, device=device)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    gathered = []

    def gather(_module, args):  # the head's input: only the positions that predict a label
        hidden = args[0]
        gathered.append(True)
        return (hidden.reshape(-1, hidden.shape[-1])[index][None], *args[1:])

    hook = head.register_forward_pre_hook(gather) if head is not None else None
    try:
        out = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position.to(device), use_cache=False
        )
    finally:
        if hook is not None:
            hook.remove()
    logits = out.logits[0] if gathered else out.logits.reshape(-1, out.logits.shape[-1])[index]
    return logits, torch.tensor(target, device=device), owner


def nll_sums(logits: torch.Tensor, target: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Per sequence (``n`` of them; ``owner[k]``: the one position ``k`` belongs to) the summed label
    NLL of its positions."""
    per = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")
    return torch.zeros(n, dtype=per.dtype, device=per.device).index_add_(0, owner, per)
