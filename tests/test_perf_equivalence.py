"""Every speed or memory optimisation keeps its numbers (issue: performance).

* NPO/DPO's reference NLLs, cached once before training, give the same training run (every
  step's loss, the final weights) as a live frozen copy of the model scoring each batch.
* Continual runs with ``--fix-ref-model`` take the original model's statistics, computed in one
  pass before the first task, without loading the original model again.
* The ME loss's hand-written backward equals autograd's on the plain formula.
* Attention kernels: eager and sdpa give the same losses on CPU.

Timings live in ``perf/``; nothing here is timed.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unlearn import losses
from unlearn.config import Config
from unlearn.datasets import UnlearningDataset
from unlearn.distributed import build_optimizer
from unlearn.methods import REGULARIZERS, Objective, Term, build_objective
from unlearn.methods.terms import BETA
from unlearn.reference import reference_nlls
from unlearn.train import fit

FORGET = [{"question": f"Who wrote book {i}?", "answer": f"Author {i} wrote book {i} in {1900 + i}."} for i in range(6)]
RETAIN = [{"question": f"Where is city {i}?", "answer": f"City {i} is in country {i}."} for i in range(8)]
REFUSALS = ["I don't know.", "No idea, sorry."]


@pytest.fixture(scope="module")
def tiny():
    from unlearn.models import build_tiny_model, build_tiny_tokenizer
    from unlearn.prompts import detect_prompt_format

    texts = [r["question"] + " " + r["answer"] for r in FORGET + RETAIN] + REFUSALS
    tok = build_tiny_tokenizer(texts, vocab_size=300)
    return (
        tok,
        detect_prompt_format(tok, "tiny"),
        lambda: build_tiny_model(tok, hidden_size=32, num_layers=2, num_heads=2, seed=0),
    )


# --------------------------------------------------------------------------- cached reference statistics


def _live_ref_nll(view, part: str) -> torch.Tensor:
    """The official way: run the frozen reference model on this very batch."""
    return losses.sequence_nll(view.ref_logits(part), view.labels(part))


LIVE = {
    "NPO": Term(
        "NPO",
        lambda v, beta: losses.npo(v.nll("forget"), _live_ref_nll(v, "forget"), beta),
        ("forget",),
        ref="logits",
        args=BETA,
    ),
    "DPO": Term(
        "DPO",
        lambda v, beta: losses.dpo(
            v.nll("forget_idk"), v.nll("forget"), _live_ref_nll(v, "forget_idk"), _live_ref_nll(v, "forget"), beta
        ),
        ("forget", "forget_idk"),
        ref="logits",
        args=BETA,
    ),
}


@pytest.mark.parametrize("method", ["NPO+GD", "DPO+GD"])
def test_cached_reference_statistics_equal_a_live_reference_over_training(tmp_path, tiny, method):
    tok, fmt, make = tiny
    cfg = Config(
        method=method,
        epochs=3,
        lr=5e-3,
        batch_size=2,
        grad_accum=1,
        warmup=0,
        seed=0,
        forget_coeff=1.0,
        mask=True,
        out=str(tmp_path),
    )
    cached = build_objective(method)
    assert cached.ref_nll_parts and not cached.needs_ref_model  # one model in memory while training
    live = Objective(LIVE[method.split("+")[0]], REGULARIZERS["GD"], forget_args={"beta": 0.1})
    assert live.needs_ref_model and not live.ref_nll_parts  # a deep copy of the model scores every batch
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, cached.parts, REFUSALS)

    a = fit(make(), tok, ds, cached, cfg, tmp_path / "cached")
    b = fit(make(), tok, ds, live, cfg, tmp_path / "live")

    assert a.steps == b.steps == 9
    loss_a = [row["loss"] for row in a.history]
    loss_b = [row["loss"] for row in b.history]
    torch.testing.assert_close(torch.tensor(loss_a), torch.tensor(loss_b), rtol=1e-4, atol=1e-4)
    # The run moved far from the reference: later steps are not the step-0 value (2/β) log 2.
    assert abs(loss_a[-1] - loss_a[0]) > 0.5
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters(), strict=False):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)


def _save_tiny(path, texts):
    from unlearn.models import build_tiny_model, build_tiny_tokenizer, save_model

    tok = build_tiny_tokenizer(texts, vocab_size=400)
    return save_model(build_tiny_model(tok, hidden_size=32, num_layers=2, num_heads=2, seed=0), tok, path)


def test_continual_fix_ref_model_reuses_the_original_models_statistics(tmp_path, monkeypatch):
    import unlearn.models
    import unlearn.train
    from unlearn.continual import continual
    from unlearn.io import read_jsonl_log
    from unlearn.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "data", n_authors=20, qa_per_author=2)
    texts = [r["question"] + " " + r["answer"] for r in read_jsonl_log(data / "full.json")]
    original = str(_save_tiny(tmp_path / "original", texts))

    seen, loads = [], []
    real_fit, real_load = unlearn.train.fit, unlearn.models.load_model

    def spy_fit(model, tokenizer, dataset, objective, cfg, out_dir, **kw):
        seen.append((cfg.task_id, dataset, kw.get("ref_stats")))
        return real_fit(model, tokenizer, dataset, objective, cfg, out_dir, **kw)

    def spy_load(name, **kw):
        loads.append(str(name))
        return real_load(name, **kw)

    monkeypatch.setattr(unlearn.train, "fit", spy_fit)
    monkeypatch.setattr(unlearn.models, "load_model", spy_load)
    cfg = Config(
        model=original,
        data=str(data),
        split="forget01",
        method="NPO+GD",
        fix_ref_model=True,
        eval=False,
        epochs=2,
        lr=1e-2,
        batch_size=1,
        grad_accum=1,
        warmup=0,
        seed=0,
        max_length=128,
        out=str(tmp_path / "continual"),
    )
    continual(cfg, "1,2,3")

    assert [task for task, _, _ in seen] == [1, 2, 3]
    # Loaded once up front for the statistics, once as the model task 1 trains; never per task.
    assert loads.count(original) == 2, loads
    ref, tok = real_load(original)
    previous, _ = real_load(tmp_path / "continual" / "task_3" / "model")
    for _task, dataset, stats in seen:
        want = reference_nlls(ref, dataset, ("forget",), tok, batch_size=3)
        torch.testing.assert_close(stats["forget"], want["forget"], rtol=1e-5, atol=1e-5)
    # ... and they are the original's, not those of a model unlearned since.
    unlearned = reference_nlls(previous, seen[-1][1], ("forget",), tok, batch_size=3)["forget"]
    assert (unlearned - seen[-1][2]["forget"]).abs().max() > 1e-2


# --------------------------------------------------------------------------- ME without a uniform tensor


def plain_max_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """docs/methods.md §2 written out: Σ_v (1/V)(log(1/V) − log p_v), averaged over label positions."""
    v = logits.shape[-1]
    log_p = F.log_softmax(logits.double(), dim=-1)
    uniform = torch.full_like(log_p, 1.0 / v)
    per_position = (uniform * (math.log(1.0 / v) - log_p)).sum(-1)
    keep = F.pad(labels[:, 1:], (0, 1), value=losses.IGNORE_INDEX) != losses.IGNORE_INDEX
    return per_position[keep].mean()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_max_entropy_value_and_gradient_equal_the_plain_formula(dtype, tol):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 7, 50, generator=g)).to(dtype)
    labels = torch.randint(0, 50, (3, 7), generator=g)
    labels[:, :3] = losses.IGNORE_INDEX
    x = logits.clone().requires_grad_(True)
    y = logits.clone().double().requires_grad_(True)
    ours, ref = losses.max_entropy(x, labels), plain_max_entropy(y, labels)
    ours.backward()
    ref.backward()
    assert ours.dtype == torch.float32 and x.grad.dtype == dtype
    torch.testing.assert_close(ours.double(), ref.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(x.grad.double(), y.grad, rtol=tol, atol=tol * 0.1)


def test_max_entropy_gradcheck():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1, 2, -100, 3], [-100, -100, 4, 5]])
    assert torch.autograd.gradcheck(lambda z: losses.max_entropy(z, labels), (logits,))


def test_max_entropy_gradient_flows_through_a_model(tiny):
    """ME+GD trains through the custom backward exactly as through autograd's own graph."""
    tok, fmt, make = tiny
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, ("forget",), REFUSALS, mask_forget=False)
    from unlearn.data import make_collate

    batch = make_collate(tok.pad_token_id)([ds[i] for i in range(4)])["forget"]
    grads = []
    for fn in (losses.max_entropy, lambda z, lab: plain_max_entropy(z, lab).float()):
        model = make()
        fn(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
        ).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- evaluation


def test_generation_cut_at_the_length_limit_does_not_depend_on_the_batch(tiny):
    """A model with random weights rarely says EOS: answers run to their own 40-token budget
    (prompt included), whatever prompts share their batch and whatever the batch size."""
    from unlearn.evaluation.generation import generate

    tok, fmt, make = tiny
    model = make()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    questions = [r["question"] + " and more" * k for k, r in enumerate(FORGET + RETAIN[:3])]
    single = [generate(model, tok, fmt, [q], max_length=40, batch_size=1)[0] for q in questions]
    for batch_size in (2, 4, len(questions)):
        assert generate(model, tok, fmt, questions, max_length=40, batch_size=batch_size) == single
    # The limit did bite: with a larger one, answers grow.
    longer = generate(model, tok, fmt, questions, max_length=80, batch_size=4)
    assert sum(len(a) > len(b) for a, b in zip(longer, single, strict=False)) >= len(questions) // 2


# --------------------------------------------------------------------------- attention kernels


def test_eager_and_sdpa_attention_give_the_same_losses(tiny):
    """``--attn-implementation sdpa`` on CPU: same per-sequence NLLs as eager, padding included."""
    tok, fmt, make = tiny
    obj = build_objective("GA+GD")
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, REFUSALS)
    out = {}
    for impl in ("eager", "sdpa"):
        model = make()
        model.set_attn_implementation(impl)
        assert model.config._attn_implementation == impl
        out[impl] = reference_nlls(model, ds, obj.parts, tok, batch_size=4)
    for part in obj.parts:
        torch.testing.assert_close(out["eager"][part], out["sdpa"][part], rtol=1e-5, atol=1e-5)


def test_attn_implementation_reaches_a_saved_model(tmp_path):
    from unlearn.models import load_model

    path = _save_tiny(tmp_path / "m", [r["question"] + " " + r["answer"] for r in FORGET + RETAIN])
    for impl in ("eager", "sdpa"):
        model, _ = load_model(path, attn_implementation=impl)
        assert model.config._attn_implementation == impl


# --------------------------------------------------------------------------- the fused AdamW step


def test_fused_adamw_trains_as_the_default_one(tmp_path, tiny):
    """``--optim adamw_fused`` is torch's one-pass kernel of the same update: over a run its losses and
    weights equal the default AdamW's up to float rounding (it is not bit-identical, so not the default)."""
    tok, fmt, make = tiny
    objective = build_objective("ME+GD")
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, objective.parts, REFUSALS)
    runs = {}
    for optim in ("adamw", "adamw_fused"):
        cfg = Config(
            method="ME+GD", epochs=3, lr=5e-3, batch_size=2, grad_accum=1, warmup=0, seed=0, optim=optim,
            out=str(tmp_path / optim),
        )  # fmt: skip
        runs[optim] = fit(make(), tok, ds, objective, cfg, tmp_path / optim)
    fused = runs["adamw_fused"]
    assert fused.steps == runs["adamw"].steps == 9
    for optim, kernel in (("adamw", None), ("adamw_fused", True)):  # what each setting builds
        built = build_optimizer(make(), Config(optim=optim))
        assert [g["fused"] for g in built.param_groups] == [kernel, kernel]
    loss_a, loss_b = ([row["loss"] for row in r.history] for r in runs.values())
    torch.testing.assert_close(torch.tensor(loss_b), torch.tensor(loss_a), rtol=1e-4, atol=1e-5)
    assert abs(loss_a[-1] - loss_a[0]) > 0.1  # the run moved
    for (name, pa), pb in zip(runs["adamw"].model.named_parameters(), fused.model.parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-5, msg=name)
