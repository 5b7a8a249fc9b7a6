"""Every forget term x regulariser trains a tiny model: parameters change, losses stay finite."""

import itertools

import pytest
import torch

from unlearn.config import Config
from unlearn.datasets import UnlearningDataset
from unlearn.errors import ConfigError
from unlearn.methods import FORGET_TERMS, REGULARIZERS, build_objective, parse_method, resolve, valid_method_names
from unlearn.reference import reference_nlls
from unlearn.train import fit

FORGET = [{"question": f"Who wrote book {i}?", "answer": f"Author {i} wrote book {i}."} for i in range(6)]
RETAIN = [{"question": f"Where is city {i}?", "answer": f"City {i} is in country {i}."} for i in range(8)]


@pytest.fixture(scope="module")
def tiny():
    from unlearn.models import build_tiny_model, build_tiny_tokenizer
    from unlearn.prompts import detect_prompt_format

    texts = [r["question"] + " " + r["answer"] for r in FORGET + RETAIN] + ["I don't know."]
    tok = build_tiny_tokenizer(texts, vocab_size=300)
    return (
        tok,
        detect_prompt_format(tok, "tiny"),
        lambda: build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2),
    )


def _cfg(tmp_path, method, **kw):
    base = dict(method=method, epochs=1, lr=1e-3, batch_size=3, grad_accum=1, warmup=0, seed=0, out=str(tmp_path))
    base.update(kw)
    return resolve(Config(**base))[1]


COMBOS = [f for f, t in FORGET_TERMS.items() if not t.in_context] + [
    f"{f}+{r}"
    for f, r in itertools.product(FORGET_TERMS, REGULARIZERS)
    if f != "LLMU" and not (lambda t: t.task_vector or t.in_context or t.own_retain)(FORGET_TERMS[f])
]
ARGS = {"RMU": {"layer": 0, "layers": "0"}}  # the tiny model has one layer


@pytest.mark.parametrize("method", COMBOS)
def test_every_combination_trains(tmp_path, tiny, method):
    tok, fmt, make = tiny
    model = make()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = _cfg(tmp_path, method, method_args=ARGS.get(method.split("+")[0]))
    obj = build_objective(method, cfg.method_args, cfg.forget_coeff, cfg.reg_coeff)
    rows = [{**r, "alternate": f"Someone wrote poem {i}."} for i, r in enumerate(FORGET)]  # (AltPO's)
    ds = UnlearningDataset(rows, RETAIN, tok, fmt, obj.parts, ["I don't know."], mask_forget=cfg.mask)
    result = fit(model, tok, ds, obj, cfg, tmp_path)
    assert result.steps == 2
    for row in result.history:
        assert all(torch.isfinite(torch.tensor(v)) for k, v in row.items() if isinstance(v, float))
    changed = [n for n, p in result.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, f"{method} changed no parameter"
    assert (tmp_path / "train_log.jsonl").read_text().count("\n") == 2


def test_parse_and_defaults():
    assert [t.name if t else None for t in parse_method("me+gd")] == ["ME", "GD"]
    assert parse_method("GA")[1] is None
    assert [t.name for t in parse_method("LLMU")] == ["LLMU", "LLMU"]  # GA, then mismatch NLL + KL
    assert build_objective("LLMU").name == "LLMU" and build_objective("LLMU").needs_ref_model
    me, idk = build_objective("ME+GD"), build_objective("IDK+AP")
    assert (me.forget_coeff, me.forget.mask_question, me.reg_coeff) == (0.1, False, 1.0)
    assert (idk.forget_coeff, idk.forget.mask_question, idk.reg_args) == (1.0, True, {"beta": 0.1})
    for bad in ("XX+GD", "GA+YY", "GA+GD+KL"):
        with pytest.raises(ConfigError) as e:
            parse_method(bad)
        assert "ME" in str(e.value) and "AP" in str(e.value)
    assert "IDK+AP" in valid_method_names() and "ME+GD" in valid_method_names()


def test_objective_declares_its_needs():
    assert build_objective("NPO+GD").ref_nll_parts == ("forget",)
    assert set(build_objective("DPO+KL").ref_nll_parts) == {"forget", "forget_idk"}
    assert build_objective("DPO+KL").needs_ref_model and not build_objective("NPO+GD").needs_ref_model
    assert not build_objective("ME+GD").ref_nll_parts and not build_objective("ME+GD").needs_ref_model
    assert set(build_objective("IDK+AP").parts) == {"forget_idk", "retain", "retain_idk"}


def test_altpo_prefers_the_alternate_answer_as_open_unlearnings_dpo(tiny):
    """AltPO = open-unlearning's DPO trainer on QAwithAlternateDataset: win = the question with its
    ``alternate`` answer, lose = with its true answer, per-sequence summed NLLs against the reference's:
    -(2/beta) mean log sigmoid(beta ((ref_w - nll_w) - (ref_l - nll_l))), written out here from the model's
    logits. The alternate is encoded exactly as a forget answer is."""
    from unlearn.data import make_collate
    from unlearn.datasets import check_alternates
    from unlearn.errors import DataError
    from unlearn.methods import BatchView
    from unlearn.reference import Reference

    tok, fmt, make = tiny
    model = make()
    rows = [{**r, "alternate": f"Someone {i} wrote a poem."} for i, r in enumerate(FORGET)]
    obj = build_objective("AltPO+GD")
    assert obj.parts == ("forget", "forget_alt", "retain") or set(obj.parts) == {"forget", "forget_alt", "retain"}
    ds = UnlearningDataset(rows, RETAIN, tok, fmt, obj.parts, ["I don't know."])
    as_forget = UnlearningDataset([{**r, "answer": r["alternate"]} for r in rows], RETAIN, tok, fmt, ("forget",), ["x"])
    for i in range(len(rows)):
        assert ds[i]["forget_alt"] == as_forget[i]["forget"]
    batch = make_collate(tok.pad_token_id)([ds[i] for i in (0, 3, 5)])
    stats = reference_nlls(model, ds, obj.ref_nll_parts, tok, batch_size=4)
    with torch.no_grad():
        for p in model.parameters():  # the model moves away from its reference
            p.add_(0.01 * torch.randn_like(p))

    def summed(part):
        logits = model(input_ids=batch[part]["input_ids"], attention_mask=batch[part]["attention_mask"]).logits
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), batch[part]["labels"][:, 1:], ignore_index=-100, reduction="none"
        )
        return ce.sum(-1)

    view = BatchView(model, batch, Reference(stats=stats))
    with torch.no_grad():
        term = FORGET_TERMS["AltPO"].fn(view, beta=0.1)
        ref = {part: view.ref_nll(part) for part in ("forget", "forget_alt")}
        margin = (ref["forget_alt"] - summed("forget_alt")) - (ref["forget"] - summed("forget"))
        expected = -(2 / 0.1) * torch.nn.functional.logsigmoid(0.1 * margin).mean()
    torch.testing.assert_close(term, expected, rtol=1e-5, atol=1e-5)
    assert "an alternate answer per forget question (field 'alternate')" in FORGET_TERMS["AltPO"].needs
    bad = [{**rows[0]}, {**rows[1], "_source": "f.jsonl:2"}]
    del bad[1]["alternate"]
    with pytest.raises(DataError, match=r"^f\.jsonl:2: field 'alternate' must be .* got missing$"):
        check_alternates(bad)


def test_rt_is_the_mean_nll_of_the_rows_own_refusal_answers(tiny):
    """RT (RWKU's rejection tuning): the mean token NLL of each forget row's own answer, written out
    with cross-entropy over the answer tokens only."""
    from unlearn.methods import BatchView
    from unlearn.train_setup import make_collate

    tok, fmt, make = tiny
    model = make()
    rows = [{"question": r["question"], "answer": "I don't know."} for r in FORGET[:3]]
    ds = UnlearningDataset(rows, [], tok, fmt, ("forget",), ["unused"])
    batch = make_collate(tok.pad_token_id)([ds[i] for i in range(3)])
    with torch.no_grad():
        term = FORGET_TERMS["RT"].fn(BatchView(model, batch))
        p = batch["forget"]
        logits = model(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).logits
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), p["labels"][:, 1:], ignore_index=-100, reduction="sum"
        )
        expected = ce / (p["labels"][:, 1:] != -100).sum()
    torch.testing.assert_close(term, expected, rtol=1e-5, atol=1e-6)
    assert "forget rows answered with refusals (RWKU's refusal set)" in FORGET_TERMS["RT"].needs


def test_pdu_flattening_and_dual_variable_by_hand():
    from unlearn.losses import logit_margin_flattening
    from unlearn.methods.terms import PDU_DUAL
    from unlearn.reference import Reference

    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [4.0, 0.0, 2.0]]])
    labels = torch.tensor([[-100, 5, 7]])  # unshifted, as open-unlearning masks: positions 1 and 2 count
    # position 1: (0 - 0)^2 = 0; position 2: (4 - 2)^2 = 4 -> mean 2
    assert logit_margin_flattening(logits, labels).item() == pytest.approx(2.0)

    class View:  # the model's outputs stubbed: flattening 2.0 on the forget part, retain NLL 0.5
        def __init__(self, epoch, ref):
            self.epoch, self.reference, self.notes = epoch, ref, {}

        def logits(self, part):
            return logits

        def labels(self, part):
            return labels

        def mean_nll(self, part):
            return torch.tensor(0.5)

        def note(self, name, value):
            self.notes[name] = float(value)

    ref = Reference()
    args = {"retain_loss_eps": 0.3, "dual_step_size": 5.0, "dual_warmup_epochs": 1, "gamma": 1.0, "alpha": 100.0}
    pdu = FORGET_TERMS["PDU"].fn
    # warm-up epoch: lambda stays 100; loss = 2 + 100 x (0.5 - 0.3) = 22
    assert pdu(View(0, ref), **args).item() == pytest.approx(22.0)
    assert ref.stats[PDU_DUAL].item() == pytest.approx(100.0)
    # after it: the loss uses lambda before the update (22), then lambda = 100 + 5 x 0.2 = 101
    assert pdu(View(1, ref), **args).item() == pytest.approx(22.0)
    assert ref.stats[PDU_DUAL].item() == pytest.approx(101.0)
    assert pdu(View(1, ref), **args).item() == pytest.approx(2 + 101 * 0.2)
    assert ref.stats[PDU_DUAL].item() == pytest.approx(102.0)
    low = Reference(stats={PDU_DUAL: torch.tensor([0.5], dtype=torch.float64)})
    pdu(View(1, low), **{**args, "retain_loss_eps": 1.0})  # 0.5 + 5 x (0.5 - 1.0) < 0: held at 0
    assert low.stats[PDU_DUAL].item() == 0.0
    with pytest.raises(ConfigError, match="PDU takes no regulariser: its retain term is part of it"):
        parse_method("PDU+GD")


def test_pdu_trains_and_its_dual_follows_the_logged_retain_nll(tmp_path, tiny):
    import json

    tok, fmt, make = tiny
    args = {"dual_warmup_epochs": 1, "dual_step_size": 2.0, "retain_loss_eps": 0.1, "alpha": 3.0}
    cfg = _cfg(tmp_path, "PDU", epochs=3, method_args=args)
    obj = build_objective("PDU", cfg.method_args)
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["no"])
    fit(make(), tok, ds, obj, cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]  # epochs done: two steps an epoch
    # one batch per step: each step logs the lambda its loss used and the retain NLL that moves it next
    dual = [r["PDU dual"] for r in rows]
    assert dual[:3] == pytest.approx([3.0, 3.0, 3.0])  # epoch 0 is the warm-up: updates start in epoch 1
    for k in (2, 3, 4):
        assert dual[k + 1] == pytest.approx(max(0.0, dual[k] + 2.0 * (rows[k]["PDU retain NLL"] - 0.1)), rel=1e-5)


def test_cached_reference_equals_live_reference(tmp_path, tiny):
    """NPO with cached reference NLLs gives the same loss as with a live copy of the reference."""
    from unlearn import losses
    from unlearn.data import make_collate
    from unlearn.methods import BatchView
    from unlearn.reference import Reference

    tok, fmt, make = tiny
    model = make()
    obj = build_objective("DPO+GD")
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["I don't know."])
    stats = reference_nlls(model, ds, obj.ref_nll_parts, tok, batch_size=4)
    batch = make_collate(tok.pad_token_id)([ds[i] for i in (4, 1, 3)])
    view = BatchView(model, batch, Reference(stats=stats))
    with torch.no_grad():
        for part in ("forget", "forget_idk"):
            live = losses.sequence_nll(
                model(input_ids=batch[part]["input_ids"], attention_mask=batch[part]["attention_mask"]).logits,
                batch[part]["labels"],
            )
            torch.testing.assert_close(view.ref_nll(part), live, rtol=1e-5, atol=1e-5)
        # at step 0 the model is its own reference: NPO = -(2/beta) log sigmoid(0) = (2/beta) log 2
        npo = losses.npo(view.nll("forget"), view.ref_nll("forget"), 0.1)
        torch.testing.assert_close(npo, torch.tensor(20 * 0.6931471805599453), rtol=1e-4, atol=1e-4)


def test_divergence_stops_with_a_named_message(tmp_path, tiny):
    from unlearn.errors import DivergenceError
    from unlearn.methods import Objective, Term

    tok, fmt, make = tiny
    nan_term = Term("GA", lambda v: v.mean_nll("forget") * float("nan"), ("forget",))
    obj = Objective(nan_term, None)
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["no"])
    with pytest.raises(DivergenceError, match=r"non-finite loss at step 1: GA: GA forget term = nan"):
        fit(make(), tok, ds, obj, _cfg(tmp_path, "GA"), tmp_path)


def test_resolve_writes_the_methods_defaults_into_a_copy():
    cfg = Config(method="ME+GD")
    objective, resolved = resolve(cfg)
    assert (cfg.forget_coeff, cfg.mask, cfg.method_args) == (None, None, None)  # the given config is untouched
    assert (resolved.forget_coeff, resolved.reg_coeff, resolved.mask, resolved.method_args) == (
        0.1,
        1.0,
        False,
        {"ME.pad_to": 0},
    )
    _, dpo_ap = resolve(Config(method="DPO+AP", method_args={"AP.beta": "0.5"}, mask=False))
    assert dpo_ap.method_args == {"DPO.beta": 0.1, "AP.beta": 0.5} and dpo_ap.mask is False


def test_method_args_belong_to_one_term():
    npo = build_objective("NPO+AP", {"NPO.beta": 0.3})
    assert (npo.forget_args, npo.reg_args) == ({"beta": 0.3}, {"beta": 0.1})  # AP's beta is not NPO's
    assert build_objective("IDK+AP", {"beta": 2}).reg_args == {"beta": 2.0}  # a bare name that one term takes
    with pytest.raises(ConfigError, match=r"belongs to NPO and AP: write NPO.beta or AP.beta"):
        build_objective("NPO+AP", {"beta": 0.3})
    with pytest.raises(ConfigError, match=r"unknown method argument 'gamma' for NPO\+GD \(its arguments: NPO.beta"):
        build_objective("NPO+GD", {"gamma": 1})
    with pytest.raises(ConfigError, match=r"unknown method argument 'beta' for ME\+GD \(its arguments: ME.pad_to"):
        build_objective("ME+GD", {"beta": 1})
    with pytest.raises(ConfigError, match=r"unknown method argument 'beta' for GA\+GD \(its arguments: none\)"):
        build_objective("GA+GD", {"beta": 1})
    with pytest.raises(ConfigError, match=r"NPO\+GD has no term KL"):
        build_objective("NPO+GD", {"KL.beta": 1})
    with pytest.raises(ConfigError, match=r"NPO.beta must be float, got 'x'"):
        build_objective("NPO+GD", {"beta": "x"})


def test_a_method_argument_reaches_the_loss(tmp_path, tiny, monkeypatch):
    """A term declared with an argument receives it by name: its loss scales with it."""
    from unlearn.methods import Term

    scaled = Term("SCALED", lambda v, scale: scale * v.mean_nll("forget"), ("forget",), args={"scale": 1.0})
    monkeypatch.setitem(FORGET_TERMS, "SCALED", scaled)
    tok, fmt, make = tiny
    losses = {}
    for scale in (1.0, 3.0):
        cfg = _cfg(tmp_path / str(scale), "SCALED", method_args={"scale": scale}, lr=0.0)
        obj = build_objective(cfg.method, cfg.method_args)
        ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["no"])
        losses[scale] = fit(make(), tok, ds, obj, cfg, tmp_path / str(scale)).history[0]["loss"]
    assert losses[3.0] == pytest.approx(3 * losses[1.0], rel=1e-5)


def test_the_log_records_the_learning_rate_each_step_used(tmp_path, tiny):
    tok, fmt, make = tiny
    cfg = _cfg(tmp_path, "GA", epochs=2, warmup=2, lr=1e-3)
    obj = build_objective("GA")
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["no"])
    history = fit(make(), tok, ds, obj, cfg, tmp_path).history
    # warm-up over 2 of 4 steps: step 1 trains at 0, step 2 at lr/2, step 3 at the peak, step 4 halfway down
    assert [row["lr"] for row in history] == pytest.approx([0.0, 5e-4, 1e-3, 5e-4])


def test_the_methods_table_is_the_registry():
    """docs/methods.md's table is generated from the registry: a method added or changed shows there."""
    from pathlib import Path

    from unlearn.methods import methods_table

    readme = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text(encoding="utf-8")
    start = readme.index("<!-- methods-table")
    body = readme[readme.index("\n", start) + 1 : readme.index("<!-- /methods-table -->")].strip()
    assert body == methods_table(), "regenerate docs/methods.md's table: unlearn methods --markdown"


def test_unlearn_methods_lists_every_term(capsys):
    from unlearn.__main__ import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in list(FORGET_TERMS) + list(REGULARIZERS):
        assert name in out


def test_rmu_trains_only_the_chosen_layers_and_its_vector_is_the_seeds(tmp_path, tiny):
    from unlearn.methods import BatchView
    from unlearn.methods.terms import _rmu_vector

    tok, fmt, _ = tiny
    from unlearn.models import build_tiny_model

    model = build_tiny_model(tok, hidden_size=32, num_layers=3, num_heads=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = _cfg(tmp_path, "RMU", method_args={"layer": 1, "layers": "0,1", "steering_coeff": 20}, epochs=2)
    obj = build_objective("RMU", cfg.method_args)
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["no"])
    trained = fit(model, tok, ds, obj, cfg, tmp_path).model
    changed = sorted(n for n, p in trained.named_parameters() if not torch.equal(p.detach(), before[n]))
    assert changed == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    like = torch.zeros(1)
    a, b = (_rmu_vector(BatchView(None, {}, None, seed), 32, 20.0, like) for seed in (5, 5))
    assert torch.equal(a, b) and a.norm().item() == pytest.approx(20.0) and (a >= 0).all()
    assert not torch.equal(a, _rmu_vector(BatchView(None, {}, None, 6), 32, 20.0, like))


def test_rmu_logs_its_two_distances_beside_its_objective(tmp_path, tiny):
    """RMU's one term is forget distance + alpha x retain distance; the log shows both parts."""
    import json

    tok, fmt, make = tiny
    cfg = _cfg(tmp_path, "RMU", method_args={"layer": 0, "layers": "0", "steering_coeff": 20, "alpha": 7.0})
    obj = build_objective("RMU", cfg.method_args)
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["no"])
    fit(make(), tok, ds, obj, cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        forget, retain = row["RMU forget distance"], row["RMU retain distance"]
        assert forget > 0 and retain >= 0
        assert row["RMU forget term"] == pytest.approx(forget + 7.0 * retain, rel=1e-5)
    assert rows[0]["RMU retain distance"] == pytest.approx(0.0, abs=1e-6)  # the model is the frozen copy at step 1
    assert rows[1]["RMU retain distance"] > 0


@pytest.mark.parametrize("schedule", ["linear", "constant", "cosine"])
def test_lr_schedule_decays_or_holds_the_rate(tmp_path, tiny, schedule):
    """After a warm-up of 1 step: linear decays to 0 at the last step; constant (WMDP's RMU) holds lr;
    cosine (RWKU's) follows lr x (1 + cos(pi (s - 1) / 3)) / 2 at steps s = 1..3."""
    import json

    tok, fmt, make = tiny
    cfg = _cfg(tmp_path, "GA+GD", epochs=2, warmup=1, lr=1e-3, lr_schedule=schedule)
    obj = build_objective("GA+GD")
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["no"])
    fit(make(), tok, ds, obj, cfg, tmp_path)
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    # 4 steps; the rate each step used: 0 (warm-up), then 1e-3 x (4 - s) / 3 or 1e-3
    want = {
        "linear": [0.0, 1e-3, 2e-3 / 3, 1e-3 / 3],
        "constant": [0.0, 1e-3, 1e-3, 1e-3],
        "cosine": [0.0, 1e-3, 0.75e-3, 0.25e-3],  # cos(pi/3) = 1/2, cos(2 pi/3) = -1/2
    }[schedule]
    assert lrs == pytest.approx(want)


def test_an_unknown_lr_schedule_is_one_line_before_any_model_loads(tmp_path, capsys):
    from unlearn.__main__ import main
    from unlearn.loading import validate_model_settings

    with pytest.raises(ConfigError, match="unknown --lr-schedule 'cyclic' \\(valid: linear, constant, cosine\\)"):
        validate_model_settings(Config(lr_schedule="cyclic"))
    # a sweep checks every run's settings before the first one starts
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"base: {{method: GA+GD, epochs: 1}}\ngrid: {{lr_schedule: [linear, cyclic]}}\nout: {tmp_path / 'o'}\n"
    )
    assert main(["sweep", "--config", str(sweep), "--dry-run"]) == 2
    assert "unknown --lr-schedule 'cyclic'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_checkpoint_older_than_a_setting_resumes_under_its_default(tmp_path):
    """A checkpoint written before ``lr_schedule`` existed ran with the linear schedule."""
    from unlearn.errors import DataError
    from unlearn.train import _check_settings

    old = {"lr": 1e-5, "method": "GA"}
    _check_settings(old, {**old, "lr_schedule": "linear"}, tmp_path)
    with pytest.raises(DataError, match="lr_schedule = 'linear', this run has lr_schedule = 'constant'"):
        _check_settings(old, {**old, "lr_schedule": "constant"}, tmp_path)


def test_task_vector_negation_is_exact(tiny):
    from unlearn.methods import negate_task_vector

    _, _, make = tiny
    model = make()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # the fine-tuned weights: theta + 0.5
    negate_task_vector(model, original, alpha=2.0)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, original[n] - 2.0 * 0.5)  # theta - alpha (theta_ft - theta)
    with pytest.raises(ConfigError, match="TV takes no regulariser"):
        parse_method("TV+GD")


def test_unlearn_methods_markdown_prints_the_readme_table(capsys):
    from unlearn.__main__ import main
    from unlearn.methods import methods_table

    assert main(["methods", "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == methods_table()
