"""The training datasets: a forget set paired with its retain set, refusals and mismatched answers,
tokenised once into the named batch parts each loss term reads (and plain question/answer sequences
for fine-tuning)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from unlearn.data import DEFAULT_MAX_LENGTH, TEXT_METHODS, TEXT_PARTS, is_text_rows
from unlearn.encoding import IGNORE_INDEX, PACKINGS, Encoded, encode_pair
from unlearn.errors import DataError

log = logging.getLogger("unlearn")

PART_NAMES = ("forget", "forget_idk", "forget_alt", "forget_mismatch", "retain", "retain_idk")
ALTERNATE = "alternate"  # the forget row's field with its alternate answer (AltPO)


def check_alternates(forget: list[dict]) -> None:
    """Every forget row holds a non-empty string ``alternate`` (its alternate answer); else one line
    naming the row (``file:line``)."""
    for row in forget:
        value = row.get(ALTERNATE)
        if not isinstance(value, str) or not value.strip():
            got = "missing" if value is None else f"{type(value).__name__} {value!r}"[:80]
            raise DataError(
                f"{row.get('_source', 'a forget row')}: field '{ALTERNATE}' must be the question's alternate answer "
                f"(a non-empty string; AltPO prefers it over the true answer), got {got}"
            )


def check_method_rows(objective, data) -> None:
    """The rows ``objective`` reads, checked before any model loads: raw text has forget and retain
    pieces only (no refusals or mismatched answers), a retain term needs retain rows, AltPO's
    alternate answers (:func:`check_alternates`), and RT's refusals (its rows' own answers: RWKU's
    refusal set or your own file, never a folder whose answers are the facts to forget)."""
    other = [p for p in objective.parts if p not in TEXT_PARTS]
    if data.is_text and other:
        raise DataError(
            f"raw text has no questions, and {objective.name} needs {', '.join(other)} (refusals or "
            f"mismatched answers): on text use {TEXT_METHODS}"
        )
    if any(p in objective.parts for p in ("retain", "retain_idk", "forget_mismatch")) and not data.retain:
        raise DataError(f"{objective.name} needs a retain set: give --retain FILE or a data folder")
    if "forget_alt" in objective.parts:
        check_alternates(data.forget)
    if objective.forget.own_refusals and data.layout not in ("rwku", "files"):
        raise DataError(
            f"{objective.name} fine-tunes on the forget rows' own answers, which must be refusals (RWKU's refusal "
            f"set with --benchmark rwku, or a --forget file of questions answered with refusals); the answers of "
            f"this {data.layout} data are the facts to forget: use IDK, which pairs the questions with refusals"
        )


class UnlearningDataset(torch.utils.data.Dataset):
    """One item per forget example, with the sequences each loss term needs, by name.

    Pairing is the official code's, draw for draw: item ``i`` seeds a torch generator with ``i``,
    draws its retain partner ``(i + randint(0, len(retain))) % len(retain)``, then its refusal
    ``randint(0, len(refusals))``; LLMU's mismatched answer is the partner's. The same item always
    gets the same partners, and the refusal draw does not depend on the retain set (a draw takes
    the same random bits whatever its range), so forget-side sequences, and the reference
    statistics cached from them, stay valid when the retain set changes (continual tasks).
    Sequences are tokenised once, here.
    """

    def __init__(
        self,
        forget: list[dict],
        retain: list[dict],
        tokenizer,
        prompt_format,
        parts: Sequence[str],
        refusals: Sequence[str],
        max_length: int = DEFAULT_MAX_LENGTH,
        mask_forget: bool = True,
        packing: str = "muse",
    ):
        unknown = set(parts) - set(PART_NAMES)
        if unknown:
            raise ValueError(f"unknown batch parts {sorted(unknown)}")
        needs_retain = any(p in parts for p in ("retain", "retain_idk", "forget_mismatch"))
        if needs_retain and not retain:
            raise DataError("this method needs a retain set: give --retain FILE or a data folder")
        self.parts = tuple(parts)
        self.truncated = 0
        if is_text_rows(forget):
            self._text(forget, retain, tokenizer, max_length, PACKINGS[packing])
            return
        enc = _Encoder(tokenizer, prompt_format, max_length)
        self.items: list[dict[str, Encoded]] = []
        for i, row in enumerate(forget):
            g = torch.Generator().manual_seed(i)
            partner_idx = (i + int(torch.randint(0, max(1, len(retain)), (1,), generator=g))) % max(1, len(retain))
            refusal = refusals[int(torch.randint(0, len(refusals), (1,), generator=g))]
            partner = retain[partner_idx] if retain else None
            item = {}
            if "forget" in parts:
                item["forget"] = enc(row["question"], row["answer"], mask_forget)
            if "forget_idk" in parts:
                item["forget_idk"] = enc(row["question"], refusal)
            if "forget_alt" in parts:
                item["forget_alt"] = enc(row["question"], row[ALTERNATE])
            if "forget_mismatch" in parts:
                item["forget_mismatch"] = enc(row["question"], partner["answer"])
            if "retain" in parts:
                item["retain"] = enc(partner["question"], partner["answer"])
            if "retain_idk" in parts:
                item["retain_idk"] = enc(partner["question"], refusal)
            self.items.append(item)
        self.truncated = enc.truncated
        _warn_truncated(self.truncated, max_length)

    def _text(self, forget, retain, tokenizer, max_length, cut) -> None:
        """Raw text: one item per forget piece (``cut``: :func:`unlearn.encoding.chunk_texts`, MUSE's,
        or :func:`~unlearn.encoding.pack_texts`, RWKU's), its retain partner drawn as for
        question/answer pairs."""
        other = [p for p in self.parts if p not in TEXT_PARTS]
        if other:
            raise DataError(
                f"raw text has no questions, and this method needs {', '.join(other)} (refusals or "
                f"mismatched answers): on text use {TEXT_METHODS}"
            )
        f_chunks = cut(tokenizer, [r["text"] for r in forget], max_length)
        r_chunks = cut(tokenizer, [r["text"] for r in retain], max_length) if retain else []
        if not f_chunks:
            raise DataError(
                f"{forget[0].get('_source', 'the forget set')}: the forget text is empty (or, packed as RWKU "
                f"packs it, shorter than one block of --max-length {max_length} tokens)"
            )
        self.items = []
        for i, chunk in enumerate(f_chunks):
            g = torch.Generator().manual_seed(i)
            partner = (i + int(torch.randint(0, max(1, len(r_chunks)), (1,), generator=g))) % max(1, len(r_chunks))
            item = {"forget": chunk}
            if "retain" in self.parts:
                item["retain"] = r_chunks[partner]
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, **self.items[i]}


class QADataset(torch.utils.data.Dataset):
    """Plain question/answer sequences (fine-tuning): part ``qa``, question masked."""

    def __init__(self, rows: list[dict], tokenizer, prompt_format, max_length: int = DEFAULT_MAX_LENGTH):
        enc = _Encoder(tokenizer, prompt_format, max_length)
        self.items = [{"qa": enc(r["question"], r["answer"])} for r in rows]
        self.parts = ("qa",)
        self.truncated = enc.truncated
        _warn_truncated(self.truncated, max_length)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, **self.items[i]}


class _Encoder:
    def __init__(self, tokenizer, prompt_format, max_length):
        self.tok, self.fmt, self.max_length, self.truncated = tokenizer, prompt_format, max_length, 0

    def __call__(self, question: str, answer: str, mask_question: bool = True) -> Encoded:
        e = encode_pair(self.tok, self.fmt, question, answer, self.max_length, mask_question)
        if all(t == IGNORE_INDEX for t in e.labels[1:]):  # nothing to learn or unlearn: every loss would be 0
            raise DataError(
                f"--max-length {self.max_length} leaves no answer token after the question "
                f"{question[:60]!r}; raise --max-length"
            )
        self.truncated += e.truncated
        return e


def _warn_truncated(n: int, max_length: int) -> None:
    if n:
        log.warning("%d sequences were longer than --max-length %d and were truncated", n, max_length)
