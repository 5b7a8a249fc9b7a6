"""Chunked logits give the values and gradients of whole logits, on every term and regulariser."""

import copy
import itertools

import pytest
import torch

from unlearn import chunked
from unlearn.data import make_collate
from unlearn.datasets import UnlearningDataset
from unlearn.errors import ConfigError
from unlearn.methods import FORGET_TERMS, REGULARIZERS, BatchView, build_objective
from unlearn.reference import Reference, reference_nlls

FORGET = [
    {
        "question": f"Who wrote book {i}?",
        "answer": f"Author {i} wrote the book number {i} in {1900 + i}.",
        "alternate": f"Writer {i} made it in {1800 + i}.",  # AltPO's
    }
    for i in range(5)
]
RETAIN = [{"question": f"Where is city {i}?", "answer": f"City {i} is in country {i}."} for i in range(5)]
COMBOS = [f for f, t in FORGET_TERMS.items() if not t.in_context] + [
    f"{f}+{r}"
    for f, r in itertools.product(FORGET_TERMS, REGULARIZERS)
    if f not in ("LLMU", "RMU", "RT")
    and not (FORGET_TERMS[f].task_vector or FORGET_TERMS[f].in_context or FORGET_TERMS[f].own_retain)
]
ARGS = {
    "RMU": {"layer": 0, "layers": "0"},
    "PDU": {"alpha": 1.0},
}  # (PDU: its default weight 100 scales the float error)


@pytest.fixture(scope="module")
def tiny():
    from unlearn.models import build_tiny_model, build_tiny_tokenizer
    from unlearn.prompts import detect_prompt_format

    texts = [r["question"] + " " + r["answer"] for r in FORGET + RETAIN] + ["I don't know."]
    tok = build_tiny_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2)
    return tok, detect_prompt_format(tok, "tiny"), model


def _loss_and_grads(model, objective, batch, ref, chunk):
    model.zero_grad()
    loss, _ = objective(BatchView(model, batch, ref, 0, chunk))
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", COMBOS)
def test_every_term_same_values_and_gradients(tiny, method):
    tok, fmt, base = tiny
    objective = build_objective(method, ARGS.get(method.split("+")[0]))
    ds = UnlearningDataset(
        FORGET, RETAIN, tok, fmt, objective.parts, ["I don't know."], mask_forget=objective.forget.mask_question
    )
    batch = make_collate(tok.pad_token_id)([ds[i] for i in (3, 0, 4)])
    frozen = copy.deepcopy(base).eval().requires_grad_(False)
    model = copy.deepcopy(base)
    with torch.no_grad():  # the model has moved away from its reference
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    stats = reference_nlls(frozen, ds, objective.ref_nll_parts, tok, batch_size=4) if objective.ref_nll_parts else None
    ref = Reference(stats=stats, model=frozen if objective.needs_ref_model else None)
    whole, g_whole = _loss_and_grads(model, objective, batch, ref, None)
    for chunk in (1, 3, 1000):  # one row a chunk, several, all rows in one
        part, g_part = _loss_and_grads(model, objective, batch, ref, chunk)
        torch.testing.assert_close(part, whole, rtol=1e-5, atol=1e-6, msg=f"{method}: loss, chunk {chunk}")
        assert g_part.keys() == g_whole.keys()
        for name in g_whole:
            torch.testing.assert_close(
                g_part[name], g_whole[name], rtol=1e-5, atol=1e-6, msg=f"{method}: gradient of {name}, chunk {chunk}"
            )
    assert "forward" not in vars(model.get_output_embeddings())  # the head bypass is undone


def test_lora_reference_and_kl_chunked(tiny):
    """A LoRA model's reference is the same model with its adapter off: the head bypass reaches it."""
    from unlearn.lora import apply_lora
    from unlearn.reference import AdapterOff

    tok, fmt, base = tiny
    model = apply_lora(copy.deepcopy(base), 4, 8, 0.0, False, 0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    objective = build_objective("UNDIAL+KL")
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, objective.parts, ["I don't know."])
    batch = make_collate(tok.pad_token_id)([ds[i] for i in (1, 2)])
    ref = Reference(model=AdapterOff(model))
    whole, g_whole = _loss_and_grads(model, objective, batch, ref, None)
    part, g_part = _loss_and_grads(model, objective, batch, ref, 2)
    torch.testing.assert_close(part, whole, rtol=1e-5, atol=1e-6)
    for name in g_whole:
        torch.testing.assert_close(g_part[name], g_whole[name], rtol=1e-5, atol=1e-6)


def test_when_the_logits_are_chunked(tiny):
    _, _, model = tiny
    vocab = model.get_output_embeddings().out_features
    assert chunked.chunk_rows(model, None, sharded=False) is None  # a small vocabulary: whole logits
    assert chunked.chunk_rows(model, False, sharded=False) is None
    assert chunked.chunk_rows(model, True, sharded=False) == chunked.CHUNK_ELEMENTS // vocab
    assert chunked.chunk_rows(model, None, sharded=True) is None
    with pytest.raises(ConfigError, match="shard"):
        chunked.chunk_rows(model, True, sharded=True)
    capped = copy.deepcopy(model)
    capped.config.final_logit_softcapping = 30.0
    assert chunked.chunk_rows(capped, None, sharded=False) is None
    with pytest.raises(ConfigError, match="final_logit_softcapping"):
        chunked.chunk_rows(capped, True, sharded=False)
    big = copy.deepcopy(model)
    big.resize_token_embeddings(40_000)
    assert chunked.chunk_rows(big, None, sharded=False) == chunked.CHUNK_ELEMENTS // 40_000


def test_head_bypass_gives_the_final_hidden_states_and_is_undone(tiny):
    tok, _, model = tiny
    ids = torch.tensor([tok("Who wrote book 1?")["input_ids"]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        hidden, head = chunked.final_hidden(model, batch)
        logits = model(**batch).logits
    assert "forward" not in vars(head)
    torch.testing.assert_close(head(hidden), logits)
