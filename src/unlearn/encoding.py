"""Turning a (question, answer) pair into model inputs, as the official code and TOFU do.

Every labelled sequence is ``prompt(question) + answer`` encoded **as one string**, followed by one
EOS; the labels are the input ids with the first ``len(encode(prompt))`` positions set to -100 when
``mask_question`` is true (docs/methods.md §2: every sequence masks the question except ME's forget
sequences). Encoding the two together matters: a SentencePiece tokenizer encodes an answer that
follows ``[/INST]`` as ``The`` where the answer alone would give ``▁The``; and when the prompt ends
in a space, a byte-level BPE tokenizer merges that space into the first answer token, which then
falls inside the masked prompt length and carries no loss (as officially; see docs/parity.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
"""Label of a position that carries no loss (question tokens, padding), as in transformers."""


def pad_id(tokenizer) -> int:
    """The id padding uses: the tokenizer's pad token, else its EOS."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_prompt(tokenizer, prompt: str, add_special_tokens: bool = True) -> list[int]:
    """Token ids of a prompt; a BOS token is added when the tokenizer adds one by default."""
    return list(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])


def encode_qa(
    tokenizer,
    prompt: str,
    answer: str,
    max_length: int | None = None,
    mask_question: bool = True,
    add_special_tokens: bool = True,
) -> Encoded:
    """Encode ``prompt + answer`` (one string) and an EOS.

    ``prompt`` is the already formatted question (see :mod:`unlearn.prompts`). As officially, a
    sequence is cut at ``max_length`` tokens; one that reaches it keeps no EOS (nor its label).
    ``truncated`` flags a sequence that lost tokens, so callers can count them in a warning.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; unlearning needs one to end every answer")
    ids = list(tokenizer(prompt + answer, add_special_tokens=add_special_tokens)["input_ids"])
    n_prompt = len(encode_prompt(tokenizer, prompt, add_special_tokens))
    truncated = max_length is not None and len(ids) > max_length
    if max_length is not None and len(ids) >= max_length:
        ids = ids[:max_length]
    else:
        ids.append(tokenizer.eos_token_id)
    labels = [IGNORE_INDEX] * min(n_prompt, len(ids)) + ids[n_prompt:] if mask_question else list(ids)
    return Encoded(ids, labels, truncated)


def encode_question(tokenizer, fmt, question: str) -> list[int]:
    """A question's prompt ids in the prompt format ``fmt`` (the TOFU standard's template encodes its own)."""
    own = getattr(fmt, "encode_prompt_ids", None)
    if own is not None:
        return own(tokenizer, question)
    return encode_prompt(tokenizer, fmt.prompt(question), fmt.add_special_tokens)


def encode_pair(
    tokenizer, fmt, question: str, answer: str, max_length: int | None = None, mask_question: bool = True
) -> Encoded:
    """``question`` and ``answer`` encoded in the prompt format ``fmt`` (:func:`encode_qa`, or the TOFU
    standard's template's own encoding)."""
    own = getattr(fmt, "encode_pair", None)
    if own is not None:
        return own(tokenizer, question, answer, max_length, mask_question)
    return encode_qa(
        tokenizer, fmt.prompt(question), fmt.answer_prefix + answer, max_length, mask_question, fmt.add_special_tokens
    )


def chunk_texts(tokenizer, texts: list[str], max_length: int) -> list[Encoded]:
    """Raw text as MUSE trains on it: the texts joined by a blank line, tokenised without special
    tokens and cut into pieces of ``max_length - 1`` tokens, each preceded by BOS (``max_length``
    tokens, no BOS, for a tokenizer without one); the last piece is filled up with the first tokens
    (MUSE's rotation), so every piece has ``max_length`` tokens when the text is long enough. Every
    token is a label (no question to mask, no EOS)."""
    if max_length < 2:
        raise ValueError("--max-length must be at least 2 tokens for raw text")
    ids = list(tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"])
    if not ids:
        return []
    bos = tokenizer.bos_token_id
    step = max_length - 1 if bos is not None else max_length
    pieces = [ids[i : i + step] for i in range(0, len(ids), step)]
    if len(pieces[-1]) < step:
        pieces[-1] = (pieces[-1] + ids)[:step]
    head = [bos] if bos is not None else []
    return [Encoded(head + p, head + p, False) for p in pieces]


def pack_texts(tokenizer, texts: list[str], max_length: int) -> list[Encoded]:
    """Raw text as RWKU trains on it (LLaMA-Factory's pre-training stage, packed): each text followed by
    EOS, tokenised without special tokens, all concatenated and cut into blocks of ``max_length``
    tokens, the incomplete last block dropped. The EOS tokens carry no label (its collator masks the
    pad token, which RWKU sets to the EOS)."""
    eos = tokenizer.eos_token_id
    ids = [t for text in texts for t in list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [eos]]
    blocks = [ids[i : i + max_length] for i in range(0, len(ids) // max_length * max_length, max_length)]
    return [Encoded(b, [IGNORE_INDEX if t == eos else t for t in b], False) for b in blocks]


PACKINGS = {"muse": chunk_texts, "rwku": pack_texts}
"""How raw text is cut into training sequences, by the benchmark whose recipe it follows."""


def pad_batch(seqs: list[Encoded], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of the batch (dynamic padding, never a fixed length)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        n = len(s)
        sl = slice(0, n) if side == "right" else slice(width - n, width)
        ids[row, sl] = torch.tensor(s.input_ids)
        labels[row, sl] = torch.tensor(s.labels)
        mask[row, sl] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def make_collate(pad: int) -> Callable[[list[dict]], dict]:
    """Collate items into ``{"index": (B,), part: {input_ids, attention_mask, labels}}``."""

    def collate(items: list[dict]) -> dict:
        batch: dict = {"index": torch.tensor([it["index"] for it in items])}
        for part in items[0]:
            if part != "index":
                batch[part] = pad_batch([it[part] for it in items], pad)
        return batch

    return collate
