"""Packed scoring rows (unlearn.evaluation.packing): the layout and mask by hand, and the values
against each sequence run alone through the model, with SDPA and eager attention."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unlearn.encoding import IGNORE_INDEX, Encoded
from unlearn.evaluation import packing
from unlearn.evaluation.scoring import score_sequences
from unlearn.models import build_tiny_model, build_tiny_tokenizer

X = IGNORE_INDEX


def hand_seqs():
    return [
        Encoded([1, 2, 3, 4, 5], [X, X, X, 4, 5]),  # prompt [1, 2, 3], answer [4, 5]: cut before 3
        Encoded([1, 2, 3, 7], [X, X, X, 7]),  # the same prompt
        Encoded([9, 8], [9, 8]),  # every token a label: nothing to share
    ]


def test_rows_mask_and_targets_by_hand():
    seqs = hand_seqs()
    assert [packing.cut_point(s) for s in seqs] == [2, 2, 0]
    rows = packing.pack_rows(seqs, row_tokens=9)
    assert len(rows) == 1
    row = rows[0]
    assert row.ids == [1, 2, 3, 4, 5, 3, 7, 9, 8]  # the prompt once, its answers, then the lone sequence
    assert row.group == [0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert row.member == [0, 0, 1, 1, 1, 2, 2, 1, 1]
    assert row.position == [0, 1, 2, 3, 4, 2, 3, 0, 1]
    assert row.tails == {0: (2, 2), 1: (5, 2), 2: (7, 0)}
    seen = {0: [0], 1: [0, 1], 2: [0, 1, 2], 3: [0, 1, 2, 3], 4: [0, 1, 2, 3, 4], 5: [0, 1, 5], 6: [0, 1, 5, 6]}
    seen |= {7: [7], 8: [7, 8], 9: [9]}  # 9: a padding column (a second, shorter row pads to 10)
    other = packing.Row()
    other.add(0, [], [(3, list(range(10)), 0)])
    ids, mask, position = packing.attention_mask([row, other], pad=0, mask_pad=False, kind="bool", dtype=None)
    want = torch.zeros(10, 10, dtype=torch.bool)
    for q, ks in seen.items():
        want[q, ks] = True
    assert mask.shape == (2, 1, 10, 10)
    assert torch.equal(mask[0, 0], want)
    assert torch.equal(mask[1, 0], torch.ones(10, 10, dtype=torch.bool).tril())
    assert ids[0].tolist() == row.ids + [0] and position[0].tolist() == row.position + [0]
    # with the pad mask, a key whose id is the pad id is hidden (token 3 here), and a float mask for eager
    _, fmask, _ = packing.attention_mask([row], pad=3, mask_pad=True, kind="float", dtype=torch.float32)
    hidden = want[:9, :9].clone()
    hidden[:, [2, 5]] = False
    hidden[5, 5] = False
    assert torch.equal(fmask[0, 0] == 0, hidden)
    assert (fmask[0, 0][~hidden] == torch.finfo(torch.float32).min).all()
    flat, target, owner = packing.label_positions([row], seqs, 9)
    assert flat == [2, 3, 4, 5, 6, 7, 8]
    assert target == [4, 5, X, 7, X, 8, X]
    assert owner == [0, 0, 0, 1, 1, 2, 2]


def test_groups_split_at_the_row_length_and_every_sequence_lands_once():
    rng = np.random.default_rng(0)
    seqs = []
    for q in range(12):
        prompt = [1] + [int(t) for t in rng.integers(10, 90, 5 + q % 4)]
        for _ in range(1 + q % 5):
            answer = [int(t) for t in rng.integers(10, 90, int(rng.integers(2, 30)))]
            seqs.append(Encoded(prompt + answer, [X] * len(prompt) + answer))
    rows = packing.pack_rows(seqs, row_tokens=48)
    placed = [i for r in rows for i in r.tails]
    assert sorted(placed) == list(range(len(seqs)))
    assert all(len(r.ids) <= max(48, max(map(len, seqs))) for r in rows)
    assert [len(r.ids) for r in rows] == sorted((len(r.ids) for r in rows), reverse=True)
    for r in rows:  # each tail is its sequence's tokens after its cut, after a copy of its prompt
        for i, (start, cut) in r.tails.items():
            n = len(seqs[i]) - cut
            assert r.ids[start : start + n] == seqs[i].input_ids[cut:]
            g = r.group[start]
            prompt = [t for t, gg, m in zip(r.ids, r.group, r.member, strict=True) if gg == g and m == 0]
            assert prompt == seqs[i].input_ids[:cut]
    batches = packing.row_batches(rows, budget=100)
    assert [r for b in batches for r in b] == rows
    assert all(len(b) == 1 or len(b) * len(b[0].ids) <= 100 for b in batches)


@pytest.fixture(scope="module")
def model_and_tok():
    texts = ["the cat sat on the mat", "who wrote the book about rivers", "a quiet town by the sea"] * 5
    tok = build_tiny_tokenizer(texts, vocab_size=300)
    return build_tiny_model(tok, hidden_size=32, num_layers=2, seed=3).eval(), tok


def alone(model, seq: Encoded, pad: int, mask_pad: bool) -> float:
    """Mean label NLL of one sequence run by itself (no padding, no packing)."""
    ids = torch.tensor([seq.input_ids])
    mask = (ids != pad).long() if mask_pad else torch.ones_like(ids)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[0, :-1].float()
    target = torch.tensor(seq.labels[1:])
    keep = target != X
    if not keep.any():
        return 0.0
    return float(F.cross_entropy(logits[keep], target[keep]))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("mask_pad", [False, True])
def test_packed_scores_equal_each_sequence_alone(model_and_tok, attention, mask_pad):
    model, tok = model_and_tok
    model.set_attn_implementation(attention)
    rng = np.random.default_rng(1)
    seqs = []
    for q in range(7):
        prompt = [tok.bos_token_id or 1] + [int(t) for t in rng.integers(5, 290, 4 + q)]
        for _ in range(q % 4 + 1):
            answer = [int(t) for t in rng.integers(5, 290, int(rng.integers(1, 20)))]
            seqs.append(Encoded(prompt + answer, [X] * len(prompt) + answer))
    seqs.append(Encoded([5, 6, 7], [5, 6, 7]))
    seqs.append(Encoded([5, 6, 7, 8], [X] * 4))  # no label: 0
    seqs.append(Encoded(seqs[0].input_ids[:2] + [tok.pad_token_id] + seqs[0].input_ids[2:], [X] + seqs[0].labels))
    head_rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, o: head_rows.append(a[0].shape[-2]))
    try:
        assert packing.packable(model, 64)
        got, _ = score_sequences(model, tok, seqs, batch_size=2, mask_pad=mask_pad, share_prompts=True)
    finally:
        hook.remove()
        model.set_attn_implementation("sdpa")
    want = [alone(model, s, tok.pad_token_id, mask_pad) for s in seqs]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
    assert sum(head_rows) == sum(len(s) - packing.cut_point(s) for s in seqs)  # the head ran on tails only


def test_token_statistics_of_packed_rows_equal_whole_sequences(model_and_tok):
    model, tok = model_and_tok
    prompt = [1, 20, 21, 22]
    seqs = [Encoded(prompt + a, [X] * 4 + a) for a in ([30, 31, 32], [40, 41], [50, 51, 52, 53])]
    texts = ["a", "b", "c"]
    packed, p_stats = score_sequences(model, tok, seqs, 4, stats_for=[0, 2], texts=texts, share_prompts=True)
    whole, w_stats = score_sequences(model, tok, seqs, 4, stats_for=[0, 2], texts=texts)
    np.testing.assert_allclose(packed, whole, atol=2e-6)
    assert sorted(p_stats) == [0, 2]
    for i in (0, 2):
        assert p_stats[i].text == texts[i] and len(p_stats[i].logp) == len(seqs[i]) - 4
        np.testing.assert_allclose(p_stats[i].logp, w_stats[i].logp, atol=2e-6)
        np.testing.assert_allclose(p_stats[i].mu, w_stats[i].mu, atol=2e-6)
        np.testing.assert_allclose(p_stats[i].sigma, w_stats[i].sigma, atol=1e-4)  # a difference of squares in float32


def test_models_whose_attention_cannot_be_packed(model_and_tok):
    model, _ = model_and_tok
    assert packing.packable(model, 100)

    def like(**cfg):
        config = SimpleNamespace(**{"model_type": "llama", "_attn_implementation": "sdpa", **cfg})
        return SimpleNamespace(config=config, forward=model.forward)

    assert packing.packable(like(), 100)
    assert not packing.packable(like(_attn_implementation="flash_attention_2"), 100)
    assert not packing.packable(like(sliding_window=64), 100)  # a window shorter than a sequence
    assert packing.packable(like(sliding_window=4096), 100)
    assert not packing.packable(like(model_type="bloom"), 100)  # ALiBi by key index
    assert not packing.packable(SimpleNamespace(config=None, forward=model.forward), 100)
